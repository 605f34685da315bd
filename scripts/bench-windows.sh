#!/usr/bin/env bash
# The comparison benchmark (benches/compare/) for x86_64-pc-windows-gnu,
# over named pipes, under Wine: pipesvc vs raw tokio named pipes vs
# interprocess. Writes the `windows` section of BENCHMARKS.md and
# docs/bench-windows.svg. Under Wine only the ratios mean anything: Wine's
# absolute speed says nothing about Windows.
#
#   scripts/bench-windows.sh
#   PIPESVC_BENCH_ONLY=latency scripts/bench-windows.sh   # one workload
#
# Installs what it needs on first run (see windows-env.sh, wine-env.sh).
# Not part of .ci/run: a benchmark reports, it does not pass or fail.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/windows-env.sh
source scripts/windows-env.sh
# shellcheck source=scripts/wine-env.sh
source scripts/wine-env.sh
trap wine_stop EXIT
wine_stop

"$WIN_CARGO" bench --target "$WIN_TARGET" --bench compare "$@"
