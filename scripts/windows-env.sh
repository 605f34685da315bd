# shellcheck shell=bash
# Environment for building pipesvc for x86_64-pc-windows-gnu on Debian 12.
#
#   source scripts/windows-env.sh      # from bash; then:
#   "$WIN_CARGO" check --all-targets --target "$WIN_TARGET"
#
# Idempotent, and fast once done:
#  1. apt-get installs Debian's Rust 1.96 (rustc-web, cargo-web, rust-web-src),
#     the mingw-w64 linker and Wine, only if one of them is missing (as root),
#     and clippy for that toolchain (rust-web-clippy) if it can be had.
#  2. Builds a Windows std sysroot once per rustc version (-Zbuild-std on a
#     throwaway crate) into ${PIPESVC_WINDOWS_CACHE:-/var/cache/pipesvc-windows};
#     a stamp file marks it complete, so a half-built one is rebuilt.
#  3. Exports the variables below. rustup's tools come first in PATH and have
#     no Windows std, so Debian's tools are always named by absolute path.
#
# Exports: WIN_TARGET, WIN_CARGO, RUSTC, RUSTDOC, CARGO (for cargo-clippy),
#   CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER, ..._RUSTFLAGS (--sysroot; a
#   RUSTFLAGS from the caller is folded in, since it would override it),
#   RUSTDOCFLAGS, CARGO_TARGET_DIR (default <repo>/target/windows, so host
#   build scripts built by Debian's rustc don't thrash rustup's in target/),
#   PIPESVC_WINDOWS_SYSROOT, WIN_CLIPPY (1 if clippy works for this
#   toolchain, else 0) and WIN_CARGO_CLIPPY (/usr/bin/cargo-clippy; run it as
#   `"$WIN_CARGO_CLIPPY" clippy ARGS`: `/usr/bin/cargo clippy` would pick
#   rustup's 1.95 cargo-clippy from ~/.cargo/bin, which cannot read 1.96 libs).
#
# Knobs: PIPESVC_WINDOWS_CACHE, PIPESVC_WINDOWS_TARGET_DIR.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "usage: source ${BASH_SOURCE[0]}  (this file sets variables in your shell)" >&2
    exit 2
fi

_pipesvc_win_log() { echo "windows-env: $*" >&2; }

_pipesvc_win_installed() { # PKG...: true if every PKG is installed
    local p
    for p in "$@"; do
        [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" == installed ]] || return 1
    done
}

# The Debian packages the Windows build and the Wine runs need.
_PIPESVC_WIN_REQUIRED=(rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine64 wine ca-certificates)
_PIPESVC_WIN_OPTIONAL=(rust-web-clippy)

_pipesvc_win_apt() {
    local required=("${_PIPESVC_WIN_REQUIRED[@]}") optional=("${_PIPESVC_WIN_OPTIONAL[@]}")
    _pipesvc_win_installed "${required[@]}" "${optional[@]}" && return 0
    if [[ $(id -u) -ne 0 ]]; then
        _pipesvc_win_installed "${required[@]}" && return 0
        _pipesvc_win_log "missing Debian packages; run as root to install: ${required[*]}"
        return 1
    fi
    local t0=$SECONDS lockfd
    export DEBIAN_FRONTEND=noninteractive
    # One apt-get at a time: .ci/run's other steps may install theirs
    # (scripts/perf-guard.sh takes the same lock).
    exec {lockfd}>/var/lock/pipesvc-apt.lock || return 1
    flock "$lockfd" || { exec {lockfd}>&-; return 1; }
    _pipesvc_win_apt_locked
    local rc=$?
    exec {lockfd}>&-
    [[ $rc -eq 0 ]] || return 1
    _pipesvc_win_log "apt-get took $((SECONDS - t0)) s"
}

_pipesvc_win_apt_locked() { # the installs, under the lock
    local required=("${_PIPESVC_WIN_REQUIRED[@]}") optional=("${_PIPESVC_WIN_OPTIONAL[@]}")
    _pipesvc_win_installed "${required[@]}" "${optional[@]}" && return 0
    _pipesvc_win_log "installing Debian packages"
    apt-get update -qq || return 1
    if ! _pipesvc_win_installed "${required[@]}"; then
        apt-get install -y -qq --no-install-recommends "${required[@]}" || return 1
    fi
    if ! _pipesvc_win_installed "${optional[@]}"; then
        apt-get install -y -qq --no-install-recommends "${optional[@]}" ||
            _pipesvc_win_log "WARNING: cannot install ${optional[*]}: no clippy for Debian's toolchain"
    fi
}

_pipesvc_win_sysroot() { # SR: build the Windows std sysroot SR unless stamped
    local sr=$1 target=$WIN_TARGET
    local stamp=$sr/.complete build=$sr.build lock lockfd
    [[ -f $stamp ]] && return 0
    mkdir -p "$(dirname "$sr")" || return 1
    lock=$sr.lock
    exec {lockfd}>"$lock" || return 1
    flock "$lockfd" || { exec {lockfd}>&-; return 1; }
    if [[ ! -f $stamp ]]; then # another job may have built it while we waited
        local t0=$SECONDS rc=0
        _pipesvc_win_log "building the Windows std sysroot (once per rustc version) in $sr"
        rm -rf "$sr" "$build"
        mkdir -p "$build/src" "$sr/lib/rustlib/$target/lib"
        printf '[package]\nname = "sysroot-build"\nversion = "0.0.0"\nedition = "2021"\n\n[workspace]\n' \
            >"$build/Cargo.toml"
        echo 'fn main() {}' >"$build/src/main.rs"
        (
            cd "$build" || exit 1
            unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTDOCFLAGS CARGO_BUILD_TARGET \
                CARGO_BUILD_TARGET_DIR CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS \
                RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_RUSTC_WRAPPER
            export CARGO_TARGET_DIR=$build/target RUSTC_BOOTSTRAP=1
            "$WIN_CARGO" build --release --target "$target" \
                -Zbuild-std=std,panic_unwind,panic_abort,test,proc_macro
        ) && cp "$build/target/$target/release/deps/"lib*.rlib "$sr/lib/rustlib/$target/lib/" ||
            rc=1
        if [[ $rc -eq 0 ]]; then
            /usr/bin/rustc -vV >"$stamp"
            rm -rf "$build"
            _pipesvc_win_log "sysroot built in $((SECONDS - t0)) s"
        else
            _pipesvc_win_log "sysroot build FAILED (left in $build)"
        fi
    fi
    flock -u "$lockfd"
    exec {lockfd}>&-
    [[ -f $stamp ]]
}

_pipesvc_win_strip_sysroot() { # FLAGS: FLAGS without --sysroot=... words
    local w out=()
    for w in $1; do
        [[ $w == --sysroot=* ]] || out+=("$w")
    done
    echo "${out[*]}"
}

_pipesvc_win_env() {
    local repo cache ver sr linker c flags
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    export WIN_TARGET=x86_64-pc-windows-gnu
    export WIN_CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    # cargo-clippy runs $CARGO (else whatever `cargo` PATH finds: rustup's).
    export CARGO=$WIN_CARGO

    _pipesvc_win_apt || return 1

    linker=${CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER:-}
    if [[ -z $linker ]] || ! command -v "$linker" >/dev/null; then
        linker=
        for c in x86_64-w64-mingw32-gcc-posix x86_64-w64-mingw32-gcc x86_64-w64-mingw32-gcc-win32; do
            if command -v "$c" >/dev/null; then linker=$(command -v "$c"); break; fi
        done
        [[ -n $linker ]] || { _pipesvc_win_log "no mingw-w64 gcc found"; return 1; }
    fi
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=$linker

    ver=$("$RUSTC" -vV | awk '/^release:/ { r = $2 } /^commit-hash:/ { c = substr($2, 1, 9) }
                               END { print r "-" c }') || return 1
    cache=${PIPESVC_WINDOWS_CACHE:-/var/cache/pipesvc-windows}
    sr=$cache/sysroot-$ver
    _pipesvc_win_sysroot "$sr" || return 1
    export PIPESVC_WINDOWS_SYSROOT=$sr

    # RUSTFLAGS would override the target-specific variable: fold it in.
    flags=$(_pipesvc_win_strip_sysroot "${CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS:-} ${RUSTFLAGS:-}")
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS="--sysroot=$sr${flags:+ $flags}"
    unset RUSTFLAGS
    if [[ -n ${CARGO_ENCODED_RUSTFLAGS:-} ]]; then
        _pipesvc_win_log "WARNING: ignoring CARGO_ENCODED_RUSTFLAGS (it would drop --sysroot)"
        unset CARGO_ENCODED_RUSTFLAGS
    fi
    flags=$(_pipesvc_win_strip_sysroot "${RUSTDOCFLAGS:-}")
    export RUSTDOCFLAGS="--sysroot=$sr${flags:+ $flags}"
    export CARGO_TARGET_DIR=${PIPESVC_WINDOWS_TARGET_DIR:-$repo/target/windows}

    export WIN_CARGO_CLIPPY=/usr/bin/cargo-clippy WIN_CLIPPY=0
    if [[ -x $WIN_CARGO_CLIPPY && -x /usr/bin/clippy-driver ]] &&
        [[ "$(/usr/bin/clippy-driver --rustc -V 2>/dev/null)" == "$("$RUSTC" -V)" ]]; then
        WIN_CLIPPY=1
    fi
}

if ! _pipesvc_win_env; then
    _pipesvc_win_log "FAILED to set up the Windows build environment"
    return 1
fi
