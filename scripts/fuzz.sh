#!/usr/bin/env bash
# Fuzzes pipesvc for a bounded time; fails on any crash, hang or timeout.
#
#   scripts/fuzz.sh                      # each target for 30 s
#   PIPESVC_FUZZ_SECS=300 scripts/fuzz.sh decode
#
# Targets (fuzz/fuzz_targets/): `decode` (FrameCodec against a model of
# PROTOCOL.md), `server` (a live Server over the in-memory transport) and
# `stream_payloads` (revision 2.2's ITEM, CREDIT and SUBSCRIBE payloads and a
# stream's credit, against a model). Each runs
# from a scratch copy of its seed corpus, fuzz/corpus/<target>/, so the
# committed corpus never grows. A failing input is kept in
# fuzz/artifacts/<target>/ with the fuzzer's log; reproduce it with
#   cargo fuzz run --fuzz-dir fuzz --sanitizer none -a <target> <file>
#
# Toolchain: cargo-fuzz (installed here if missing) with the default, stable
# toolchain. With `--sanitizer none` cargo-fuzz passes only stable rustc
# flags (-Cpasses=sancov-module, -Cllvm-args=...), and libfuzzer-sys builds
# libFuzzer itself with the C++ compiler (g++), so no nightly is needed.
# (On Unix pipesvc's unsafe code is system calls for ids and socket options;
# panics, overflows and
# hangs are caught without AddressSanitizer.) PIPESVC_FUZZ_SANITIZER=address
# turns ASan on, which needs -Zsanitizer: the script then sets
# RUSTC_BOOTSTRAP=1 so that stable rustc accepts it.
#
# Environment: PIPESVC_FUZZ_SECS (per target, default 30),
# PIPESVC_FUZZ_SANITIZER (default none).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${PIPESVC_FUZZ_SECS:-30}
sanitizer=${PIPESVC_FUZZ_SANITIZER:-none}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(decode server stream_payloads)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    start=$SECONDS
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
    echo "fuzz: cargo-fuzz installed in $((SECONDS - start)) s"
fi
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
# Release build with debug assertions (so integer overflow panics).
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions)

start=$SECONDS
echo "fuzz: building the fuzz targets ($(cargo fuzz --version), $(rustc --version))"
cargo fuzz build "${flags[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/pipesvc-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

crashes=0
runs=0
for target in "${targets[@]}"; do
    corpus="$scratch/corpus-$target"
    log="$scratch/$target.log"
    mkdir -p "$corpus"
    cp fuzz/corpus/"$target"/* "$corpus"/
    start=$SECONDS
    # TMPDIR: whatever a target writes goes in the scratch dir.
    status=0
    TMPDIR="$scratch" cargo fuzz run "${flags[@]}" "$target" "$corpus" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    runs=$((runs + ${n:-0}))
    if [ "$status" -eq 0 ]; then
        echo "fuzz: $target: ok, ${n:-0} runs in $((SECONDS - start)) s (${rate:-0} exec/s)"
        continue
    fi
    crashes=$((crashes + 1))
    mkdir -p fuzz/artifacts/"$target"
    cp "$log" fuzz/artifacts/"$target"/last-failure.log
    echo "fuzz: $target: FAILED (exit $status) after ${n:-0} runs in $((SECONDS - start)) s"
    # The panic message (or libFuzzer's own error) and where the input went.
    grep -E -A4 "panicked at" "$log" | head -n 20 || true
    grep -E "ERROR: libFuzzer|^error|^Error" "$log" | head -n 5 || true
    artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
    if [ -n "$artifact" ]; then
        echo "fuzz: $target: crashing input: $artifact"
        echo "fuzz: $target: input (hex): $(od -An -tx1 -v "$artifact" | tr -d ' \n' | cut -c1-400)"
    else
        echo "fuzz: $target: no input was saved; see the log"
    fi
    echo "fuzz: $target: full log: fuzz/artifacts/$target/last-failure.log"
done

echo "fuzz: ${#targets[@]} targets, $crashes crashes, $runs runs"
[ "$crashes" -eq 0 ]
