# shellcheck shell=bash
# Timed steps for the project's scripts: `step LABEL CMD...` runs CMD and
# records its wall time; `print_step_times` lists them. Meant to be sourced.
# CMD runs as a plain command, so under `set -e` a failure stops the script
# (errexit stays on inside CMD); a caller that tolerates failure writes
# `step ... || true`, and then gets CMD's exit status back.

STEP_TIMES=()

step() { # step LABEL CMD...
    local label=$1 t0 rc
    shift
    echo "=== $label: $*"
    t0=$(date +%s%N)
    "$@"
    rc=$?
    STEP_TIMES+=("$(awk -v l="$label" -v t="$(($(date +%s%N) - t0))" \
        'BEGIN { printf "%-34s %7.1f s", l, t / 1e9 }')")
    return $rc
}

print_step_times() {
    if [[ ${#STEP_TIMES[@]} -gt 0 ]]; then
        echo "=== timings"
        printf '%s\n' "${STEP_TIMES[@]}"
    fi
}
