#!/usr/bin/env bash
# Windows interop checks under Wine 8.0 on Debian 12:
#  a. pipesvc.exe serve  <-> interop/psvc_client.c (a C client written from
#     PROTOCOL.md alone, raw Win32 API);
#  b. interop/seed_server.c (the seed's C++ server, in C) <-> examples/hello_client.rs;
#  c. examples/hello_server.rs <-> interop/seed_client.c (the seed's C++ client, in C).
# Builds the C programs with mingw into target/windows/interop/ and pipesvc.exe
# + the examples with Debian's Rust (scripts/windows-env.sh), then runs each
# pair under Wine (scripts/wine-env.sh) on a pipe name unique to the run.
# Prints PASS/FAIL per check (with the programs' output on failure), then
# `interop: N passed, M failed`; exits non-zero if anything failed.
# Installs what it needs on first run (as root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh

# shellcheck source=scripts/windows-env.sh
step "environment (windows-env.sh)" source scripts/windows-env.sh
# shellcheck source=scripts/wine-env.sh
step "environment (wine-env.sh)" source scripts/wine-env.sh

OUT=$CARGO_TARGET_DIR/interop
BIN=$CARGO_TARGET_DIR/$WIN_TARGET/debug
LOGS=$OUT/logs
CC=x86_64-w64-mingw32-gcc
# Plain logs from pipesvc's tracing output (no ANSI colours in the log files).
export NO_COLOR=1
mkdir -p "$OUT"
rm -rf "$LOGS"
mkdir -p "$LOGS"

# Wine processes started in the background; killed on exit if still running.
# (wine_stop is not called: the Wine prefix may be shared with other jobs
# running Windows tests, and `wineserver -k` would kill theirs too. Once our
# processes are gone, the wineserver exits by itself.)
BG_PIDS=()
cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}
DONE=0
on_exit() {
    local rc=$?
    cleanup
    if [[ $DONE == 0 ]]; then
        print_step_times
        echo "interop-windows: FAILED (exit status $rc) before the checks finished" >&2
    fi
}
trap on_exit EXIT

build_c() {
    local p
    for p in psvc_client seed_server seed_client; do
        "$CC" -std=c99 -O2 -Wall -Wextra -Werror -municode -o "$OUT/$p.exe" "interop/$p.c"
    done
}
step "build C programs (mingw)" build_c
step "cargo build pipesvc + examples" "$WIN_CARGO" build --target "$WIN_TARGET" --bin pipesvc --examples

RUN_ID="$$-$(date +%s%N)"
PASSED=0
FAILED=0

# start_bg LOG EXE ARGS...: start EXE under Wine in the background; sets BG_PID.
start_bg() {
    local log=$1
    shift
    wine "$@" >"$log.out" 2>"$log.err" </dev/null &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# wait_for_line FILE TEXT PID SECS: wait until FILE has a line containing TEXT.
# Fails if PID exits first or SECS pass. Polls the file (no fixed sleeps).
wait_for_line() {
    timeout "$4" bash -c '
        until grep -qF -- "$2" "$1" 2>/dev/null; do
            kill -0 "$3" 2>/dev/null || { grep -qF -- "$2" "$1" 2>/dev/null; exit; }
            sleep 0.05
        done' _ "$1" "$2" "$3"
}

# wait_exit PID SECS: wait for a background PID to exit; returns its status,
# or 124 after killing it if it is still running after SECS.
wait_exit() {
    local pid=$1 rc=0
    if ! timeout "$2" tail -s 0.05 --pid="$pid" -f /dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid" || rc=$?
    return "$rc"
}

# stop_bg PID: kill a background Wine process and reap it (bounded).
stop_bg() {
    kill -TERM "$1" 2>/dev/null || true
    wait_exit "$1" 10 >/dev/null 2>&1 || true
}

# run_fg LOG SECS EXE ARGS...: run EXE under Wine, bounded; sets FG_RC.
run_fg() {
    local log=$1 secs=$2
    shift 2
    FG_RC=0
    timeout -k 5 "$secs" wine "$@" >"$log.out" 2>"$log.err" </dev/null || FG_RC=$?
}

# has_line LOG.out LINE: the program printed exactly LINE (CRLF or LF).
has_line() {
    tr -d '\r' <"$1" | grep -qxF -- "$2"
}

# verdict NAME OK LOG...: print PASS/FAIL; on failure, every log's output.
verdict() {
    local name=$1 ok=$2 log f
    shift 2
    if [[ $ok == 1 ]]; then
        echo "PASS $name"
        PASSED=$((PASSED + 1))
        return
    fi
    echo "FAIL $name"
    FAILED=$((FAILED + 1))
    for log in "$@"; do
        for f in "$log.out" "$log.err"; do
            [[ -s $f ]] || continue
            echo "--- $f"
            tr -d '\r' <"$f" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /'
        done
    done
}

# a. pipesvc serve <-> the C client written from PROTOCOL.md.
check_a() {
    local name="interop-a-$RUN_ID" pipe srv=$LOGS/a-pipesvc-serve cli=$LOGS/a-psvc_client ok=0
    pipe="\\\\.\\pipe\\$name"
    start_bg "$srv" "$BIN/pipesvc.exe" serve --name "$name"
    local spid=$BG_PID
    if wait_for_line "$srv.out" "pipesvc listening on" "$spid" 60; then
        run_fg "$cli" 30 "$OUT/psvc_client.exe" "$pipe" "hello from C"
        echo "psvc_client exit status: $FG_RC" >>"$cli.err"
        if [[ $FG_RC == 0 ]] && has_line "$cli.out" "response: hello from C" &&
            has_line "$cli.out" "notify: Hello Pipe World"; then
            ok=1
        fi
    else
        echo "pipesvc serve did not print 'pipesvc listening on' (exited or timed out)" >>"$srv.err"
    fi
    stop_bg "$spid"
    verdict "a: pipesvc.exe serve <-> psvc_client.exe (C, from PROTOCOL.md)" "$ok" "$srv" "$cli"
}

# b and c: a seed-like hello server and client, one side C and the other Rust.
# Both programs of either pair print what they sent or read: all is checked.
# check_hello_pair LETTER SERVER_EXE CLIENT_EXE
check_hello_pair() {
    local letter=$1 server_exe=$2 client_exe=$3
    local server client name pipe srv cli ok=0 src=0
    server=$(basename "$server_exe" .exe)
    client=$(basename "$client_exe" .exe)
    name="interop-$letter-$RUN_ID"
    pipe="\\\\.\\pipe\\$name"
    srv=$LOGS/$letter-$server
    cli=$LOGS/$letter-$client
    start_bg "$srv" "$server_exe" "$pipe"
    local spid=$BG_PID
    if wait_for_line "$srv.out" "Waiting for a client to connect to the pipe..." "$spid" 60; then
        run_fg "$cli" 30 "$client_exe" "$pipe"
        wait_exit "$spid" 15 || src=$?
        echo "$client exit status: $FG_RC" >>"$cli.err"
        echo "$server exit status: $src" >>"$srv.err"
        if [[ $FG_RC == 0 && $src == 0 ]] && has_line "$cli.out" "Message:  ***Hello Pipe World***" &&
            has_line "$srv.out" "Number of bytes sent: 46" &&
            has_line "$cli.out" "Number of bytes read: 46"; then
            ok=1
        fi
    else
        echo "$server did not start listening (exited or timed out)" >>"$srv.err"
    fi
    stop_bg "$spid"
    verdict "$letter: $server.exe <-> $client.exe" "$ok" "$srv" "$cli"
}
check_b() { check_hello_pair b "$OUT/seed_server.exe" "$BIN/examples/hello_client.exe"; }
check_c() { check_hello_pair c "$BIN/examples/hello_server.exe" "$OUT/seed_client.exe"; }

step "check a (pipesvc <-> C client)" check_a
step "check b (seed server <-> Rust)" check_b
step "check c (Rust <-> seed client)" check_c

DONE=1
print_step_times
echo "logs: $LOGS"
echo "interop: $PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
