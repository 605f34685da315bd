#!/usr/bin/env bash
# Run pipesvc's whole test suite for x86_64-pc-windows-gnu under Wine 8.0 on
# Debian 12: lib unit tests, every integration test and the doc tests (cargo
# passes the runner to rustdoc as --test-runtool wine), then the seed's hello
# examples as two Wine processes. Installs what it needs on first run (as
# root): see scripts/windows-env.sh and scripts/wine-env.sh.
#
#   scripts/test-windows.sh                  # everything
#   scripts/test-windows.sh --test cli       # extra args go to `cargo test`
#   scripts/test-windows.sh --build-only     # build the tests and examples, run nothing
#                                            # (.ci/run builds them while the Linux steps run)
#
# Ends with one line `windows: N passed, M failed, K skipped`: M is summed
# over every `test result:` line, K counts `pipesvc-skip:` lines (tests/common's
# skip()), and N is the `ok` tests of those lines less the K skipped ones. The examples check, a `cargo test` that times out
# and one that fails without any failed test (a build error) each add their
# own `test result:` line, so they are counted too. Exits non-zero if
# anything failed. The prefix's wineserver is always stopped at the end.
#
# Knobs: PIPESVC_WINE_TEST_TIMEOUT (seconds for running the suite, default
#   420; a hung test binary turns into a failure), and those of
#   windows-env.sh / wine-env.sh (PIPESVC_WINEPREFIX: use your own prefix if
#   another job may run Wine at the same time, since wine_stop kills every
#   Wine process in the prefix).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_ONLY=0
if [[ ${1:-} == --build-only ]]; then
    BUILD_ONLY=1
    shift
fi
TEST_TIMEOUT=${PIPESVC_WINE_TEST_TIMEOUT:-420}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pipesvc-test-windows.XXXXXX")
LOG=$WORK/results.log # every `test result:` and `pipesvc-skip:` line ends up here
: >"$LOG"

# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh
SUMMARY_DONE=0
SUITE_PID= # the running `timeout cargo test`
summary() { # prints the closing line from $LOG; false if anything failed
    local passed failed skipped
    read -r passed failed < <(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$LOG" |
        awk '{ n += $4; m += $6 } END { print n + 0, m + 0 }')
    skipped=$({ grep -o 'pipesvc-skip: ' "$LOG" || true; } | wc -l)
    # A skipped test returns early and so reports `ok`: it checked nothing,
    # so it is counted as skipped, not as passed.
    passed=$((passed - skipped))
    if [[ $skipped -gt 0 ]]; then
        echo "=== skipped under wine:"
        grep -oE 'pipesvc-skip: .*' "$LOG" | sort -u
    fi
    if grep -q 'pipesvc-report: ' "$LOG"; then
        echo "=== reported by the tests:"
        grep -oE 'pipesvc-report: .*' "$LOG"
    fi
    if [[ $failed -gt 0 ]]; then
        echo "=== failed:"
        grep -E '^test .* \.\.\. FAILED$|^test result: FAILED.*\(' "$LOG" | sort -u || true
    fi
    print_step_times
    SUMMARY_DONE=1
    echo "windows: $passed passed, $failed failed, $skipped skipped"
    [[ $failed -eq 0 ]]
}
finish() {
    local rc=$?
    trap - EXIT INT TERM
    # Interrupted: `timeout` runs in its own process group, so Ctrl+C did
    # not reach it; TERM makes it stop the whole group.
    if [[ -n $SUITE_PID ]]; then kill -TERM "$SUITE_PID" 2>/dev/null || true; fi
    if declare -F wine_stop >/dev/null; then wine_stop; fi
    if [[ $SUMMARY_DONE -eq 0 ]]; then
        echo "test result: FAILED. 0 passed; 1 failed; (test-windows.sh stopped early, exit $rc)" >>"$LOG"
        summary || true
        [[ $rc -ne 0 ]] || rc=1
    fi
    rm -rf "$WORK"
    exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=scripts/windows-env.sh
step "environment (windows-env.sh)" source scripts/windows-env.sh

# Arguments for `cargo test`; the test binaries always get --nocapture so
# that skip lines and the examples' output are seen.
CARGO_ARGS=("$@")
BUILD_ARGS=() # the ones before `--`: for the build step
for arg in "$@"; do
    [[ $arg == -- ]] && break
    BUILD_ARGS+=("$arg")
done
if [[ ${#BUILD_ARGS[@]} -lt $# ]]; then
    CARGO_ARGS+=(--nocapture)
else
    CARGO_ARGS+=(-- --nocapture)
fi

# Build first, outside the timeout (a cold build takes a few minutes). A
# build error is reported by the `cargo test` run below.
# The examples too: tests/own_service.rs runs one, and `cargo test --test
# NAME` alone does not build it.
build_tests() {
    "$WIN_CARGO" test --target "$WIN_TARGET" --no-run "${BUILD_ARGS[@]}" ||
        echo "=== build FAILED (cargo test below reports it)"
    "$WIN_CARGO" build --target "$WIN_TARGET" --examples ||
        echo "=== examples build FAILED (tests/own_service and the hello step report it)"
}
step "build tests (cargo test --no-run)" build_tests
if [[ $BUILD_ONLY -eq 1 ]]; then
    # Build errors are reported by the run that follows; nothing ran here.
    print_step_times
    SUMMARY_DONE=1
    exit 0
fi

# shellcheck source=scripts/wine-env.sh
step "wine prefix (wine-env.sh)" source scripts/wine-env.sh
"$RUSTC" -V
wine --version
echo "target dir: $CARGO_TARGET_DIR  wine prefix: $WINEPREFIX"
# A wineserver left over from an earlier run (say, killed by a timeout) would
# keep its stray processes: start from a clean one.
wine_stop
# One wineserver for the whole run (wine_stop ends it): by default it exits a
# few seconds after its last client, and a test binary starting at that
# moment saw "wine client error:0: recvmsg: Connection reset by peer".
wineserver -p

# --- the suite under Wine ---------------------------------------------------
# Output goes to a file, not a pipe: a hung Wine process holding a pipe open
# would keep a reader waiting even after `timeout` gave up.
run_suite() {
    local out=$WORK/cargo-test.log rc=0 tail_pid
    : >"$out"
    timeout -k 10 "$TEST_TIMEOUT" \
        "$WIN_CARGO" test --target "$WIN_TARGET" --no-fail-fast "${CARGO_ARGS[@]}" \
        >"$out" 2>&1 </dev/null &
    local pid=$!
    SUITE_PID=$pid
    tail -n +1 -f --pid="$pid" "$out" &
    tail_pid=$!
    wait "$pid" || rc=$?
    SUITE_PID=
    wait "$tail_pid" || true
    cat "$out" >>"$LOG"
    local failed
    failed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$out" |
        awk '{ m += $6 } END { print m + 0 }')
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        local running
        running=$(grep -E '^ +(Running|Doc-tests) ' "$out" | tail -n 1 | sed 's/^ *//')
        echo "=== cargo test TIMED OUT after $TEST_TIMEOUT s; last started: $running"
        grep -E 'has been running for over' "$out" | sed 's/^/=== still running: /' || true
        echo "test result: FAILED. 0 passed; 1 failed; (cargo test timed out in: $running)" |
            tee -a "$LOG"
        wine_stop # the hung test's Wine processes
    elif [[ $rc -ne 0 && $failed -eq 0 ]]; then
        echo "test result: FAILED. 0 passed; 1 failed; (cargo test exited $rc without a failed test)" |
            tee -a "$LOG"
    fi
    return $rc
}
step "cargo test under wine" run_suite || true

# --- the hello examples as two Wine processes ---------------------------------
run_examples() {
    local dir=$CARGO_TARGET_DIR/$WIN_TARGET/debug/examples
    local name="pipesvc-hello-$$-$(date +%s%N)" server_pid server_rc=0 client_rc=0 ok=1
    "$WIN_CARGO" build --target "$WIN_TARGET" --examples || ok=0
    if [[ $ok -eq 1 ]]; then
        timeout -k 5 60 wine "$dir/hello_server.exe" "$name" >"$WORK/server.out" 2>&1 </dev/null &
        server_pid=$!
        # The client retries (up to 5 s) until the server's pipe exists.
        timeout -k 5 60 wine "$dir/hello_client.exe" "$name" >"$WORK/client.out" 2>&1 </dev/null ||
            client_rc=$?
        # A client that gave up leaves the server waiting: stop it.
        [[ $client_rc -eq 0 ]] || kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" || server_rc=$?
        echo "--- hello_server $name (exit $server_rc):"
        cat "$WORK/server.out"
        echo "--- hello_client $name (exit $client_rc):"
        cat "$WORK/client.out"
        if [[ $server_rc -ne 0 || $client_rc -ne 0 ]] ||
            ! grep -qF 'Message:  ***Hello Pipe World***' "$WORK/client.out"; then
            ok=0
        fi
    fi
    if [[ $ok -eq 1 ]]; then
        echo "test result: ok. 1 passed; 0 failed; (hello_server.exe + hello_client.exe under wine)" |
            tee -a "$LOG"
    else
        echo "test result: FAILED. 0 passed; 1 failed; (hello_server.exe + hello_client.exe under wine)" |
            tee -a "$LOG"
        return 1
    fi
}
step "hello examples under wine" run_examples || true

# --- summary --------------------------------------------------------------------
rc=0
summary || rc=$?
exit $rc
