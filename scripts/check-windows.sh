#!/usr/bin/env bash
# Compile and lint pipesvc for x86_64-pc-windows-gnu on Debian 12 (no Wine):
#   clippy --all-targets -D warnings (also with --no-default-features: the
#   library alone); only `cargo check --all-targets` where Debian's clippy
#   is missing (clippy checks everything `cargo check` does).
# Installs what it needs on first run (as root): see scripts/windows-env.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh
trap print_step_times EXIT

# shellcheck source=scripts/windows-env.sh
step "environment (windows-env.sh)" source scripts/windows-env.sh
"$RUSTC" -V
echo "sysroot: $PIPESVC_WINDOWS_SYSROOT  target dir: $CARGO_TARGET_DIR"

if [[ $WIN_CLIPPY == 1 ]]; then
    # `/usr/bin/cargo clippy` would run rustup's cargo-clippy (1.95): call
    # Debian's directly; it runs $CARGO with its own clippy-driver.
    step "cargo clippy (windows)" "$WIN_CARGO_CLIPPY" clippy --all-targets --target "$WIN_TARGET" \
        -- -D warnings
    # The library as products use it (default-features = false).
    step "cargo clippy (windows, no default features)" "$WIN_CARGO_CLIPPY" clippy --all-targets \
        --no-default-features --target "$WIN_TARGET" -- -D warnings
else
    step "cargo check (windows)" "$WIN_CARGO" check --all-targets --target "$WIN_TARGET"
    echo "=== SKIPPED clippy: no clippy for Debian's Rust toolchain (rust-web-clippy) is installed;" \
        "only cargo check ran for $WIN_TARGET"
fi
echo "=== Windows check OK"
