# shellcheck shell=bash
# Environment for running pipesvc's Windows executables under Wine 8.0 on
# Debian 12 (cargo test/run --target x86_64-pc-windows-gnu).
#
#   source scripts/wine-env.sh         # from bash; sources windows-env.sh if needed
#   "$WIN_CARGO" test --target "$WIN_TARGET"
#   wine_stop                          # wineserver -k, quietly
#
# Idempotent, and fast once done:
#  1. Sources scripts/windows-env.sh unless it was sourced already (apt-get,
#     Windows std sysroot, WIN_CARGO, WIN_TARGET, CARGO_TARGET_DIR, ...).
#  2. Initialises the Wine prefix once (wineboot --init, then wineserver -w).
#     A stamp file (holding `wine --version`) marks it complete: a prefix
#     without it (half made, or made by another Wine version) is redone.
#  3. Builds the bcryptprimitives.dll forwarder with mingw from
#     scripts/wine/bcryptprimitives.{c,def} and installs it into the prefix's
#     system32 if it is missing or older than its sources. Rust >= 1.78 exes
#     import ProcessPrng from it; Wine 8.0 has no such DLL, so without it
#     every exe exits with code 53 and (with WINEDEBUG=-all) prints nothing.
#
# Exports: WINEPREFIX, WINEDEBUG=-all, WINEDLLOVERRIDES="mscoree,mshtml="
#   (no Mono/Gecko install dialogs), CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine.
# Defines: wine_stop (stops this prefix's wineserver and its processes).
# Knobs: PIPESVC_WINEPREFIX (default ${PIPESVC_WINDOWS_CACHE:-/var/cache/pipesvc-windows}/wineprefix),
#   and windows-env.sh's knobs.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "usage: source ${BASH_SOURCE[0]}  (this file sets variables in your shell)" >&2
    exit 2
fi

_pipesvc_wine_log() { echo "wine-env: $*" >&2; }

_pipesvc_wine_now() { date +%s%N; }

_pipesvc_wine_took() { # T0: seconds since T0 (from _pipesvc_wine_now), one decimal
    awk -v t0="$1" -v t1="$(_pipesvc_wine_now)" 'BEGIN { printf "%.1f", (t1 - t0) / 1e9 }'
}

# Stops the prefix's wineserver and every Wine process in it; never fails.
wine_stop() {
    wineserver -k >/dev/null 2>&1 || true
}

_pipesvc_wine_prefix() { # init $WINEPREFIX unless stamped for this Wine version
    local stamp=$WINEPREFIX/.pipesvc-prefix-complete want t0
    want=$(wine --version 2>/dev/null) || { _pipesvc_wine_log "wine does not run"; return 1; }
    [[ -f $stamp && "$(<"$stamp")" == "$want" ]] && return 0
    _pipesvc_wine_log "initialising the Wine prefix $WINEPREFIX ($want)"
    t0=$(_pipesvc_wine_now)
    wine_stop # a server left over from a previous prefix at this path
    rm -rf "$WINEPREFIX" || return 1
    # Wine creates the directory itself (it must be owned by the caller).
    if ! WINEARCH=win64 wineboot --init >/dev/null 2>&1; then
        _pipesvc_wine_log "wineboot --init FAILED"
        return 1
    fi
    wineserver -w >/dev/null 2>&1 || true
    if [[ ! -f $WINEPREFIX/system.reg || ! -d $WINEPREFIX/drive_c/windows/system32 ]]; then
        _pipesvc_wine_log "wineboot --init left an incomplete prefix in $WINEPREFIX"
        return 1
    fi
    echo "$want" >"$stamp" || return 1
    _pipesvc_wine_log "wineboot --init took $(_pipesvc_wine_took "$t0") s"
}

_pipesvc_wine_bcrypt() { # build + install the ProcessPrng forwarder if needed
    local src=$1 dll=$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll
    local cc=${CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER:-x86_64-w64-mingw32-gcc} tmp t0 rc=0
    if [[ -f $dll && ! $src/bcryptprimitives.c -nt $dll && ! $src/bcryptprimitives.def -nt $dll ]]; then
        return 0
    fi
    t0=$(_pipesvc_wine_now)
    tmp=$(mktemp -d) || return 1
    "$cc" -O2 -shared -s -o "$tmp/bcryptprimitives.dll" \
        "$src/bcryptprimitives.c" "$src/bcryptprimitives.def" -ladvapi32 &&
        install -m 0644 "$tmp/bcryptprimitives.dll" "$dll" || rc=1
    rm -rf "$tmp"
    if [[ $rc -ne 0 ]]; then
        _pipesvc_wine_log "building bcryptprimitives.dll FAILED"
        return 1
    fi
    _pipesvc_wine_log "bcryptprimitives.dll built and installed in $(_pipesvc_wine_took "$t0") s"
}

_pipesvc_wine_env() {
    local here lock lockfd rc=0
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || return 1
    if [[ -z ${WIN_TARGET:-} || -z ${PIPESVC_WINDOWS_SYSROOT:-} ||
        -z ${CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER:-} ]]; then
        # shellcheck source=scripts/windows-env.sh
        source "$here/windows-env.sh" || return 1
    fi
    export WINEPREFIX=${PIPESVC_WINEPREFIX:-${PIPESVC_WINDOWS_CACHE:-/var/cache/pipesvc-windows}/wineprefix}
    export WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine

    # Fast path: nothing to do, no lock, no Wine process started.
    local dll=$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll
    if [[ -f $WINEPREFIX/.pipesvc-prefix-complete && -f $dll &&
        ! $here/wine/bcryptprimitives.c -nt $dll && ! $here/wine/bcryptprimitives.def -nt $dll ]] &&
        [[ "$(<"$WINEPREFIX/.pipesvc-prefix-complete")" == "$(wine --version 2>/dev/null)" ]]; then
        return 0
    fi

    mkdir -p "$(dirname "$WINEPREFIX")" || return 1
    lock=$WINEPREFIX.lock
    exec {lockfd}>"$lock" || return 1
    flock "$lockfd" || { exec {lockfd}>&-; return 1; }
    _pipesvc_wine_prefix && _pipesvc_wine_bcrypt "$here/wine" || rc=1
    flock -u "$lockfd"
    exec {lockfd}>&-
    return $rc
}

if ! _pipesvc_wine_env; then
    _pipesvc_wine_log "FAILED to set up Wine"
    return 1
fi
