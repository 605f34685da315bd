#!/usr/bin/env bash
# The Python client's CI: a fresh venv (in target/, or $PIPESVC_PY_VENV),
# the package installed from this directory with pip (as a user would),
# the pinned test tools from PyPI, then the type check (mypy --strict over
# the package, the generated example code and the tests) and pytest
# against a real `pipesvc serve` (built with cargo unless PIPESVC_BIN is
# set). Leaves no socket, process or temporary file behind.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${PIPESVC_PY_VENV:-$repo/target/python-client-venv}
python=${PYTHON:-python3}

# Debian ships venv apart from Python; install it on demand (CI runs as root).
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # One apt-get at a time: .ci/run installs the Windows toolchain at the
    # same time (scripts/windows-env.sh takes the same lock).
    flock /var/lock/pipesvc-apt.lock sh -c \
        'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv'
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$here" -r "$here/requirements-test.txt"

cd "$here"
export PYTHONDONTWRITEBYTECODE=1
# Generated code must match what the generator makes today.
"$venv/bin/python" -m pipesvc_client.gen --check examples/serve_api.py --from-json examples/serve_description.json --class ServeClient
"$venv/bin/python" -m pipesvc_client.gen --check examples/jobs_api.py --from-json examples/jobs_description.json --class JobsClient
"$venv/bin/mypy" --strict --cache-dir "$venv/mypy-cache" src examples tests bench.py
# The binaries are built once, before pytest (its fixture would otherwise):
# pipesvc, and the job runner example that examples/watch_jobs.py talks to.
target=${CARGO_TARGET_DIR:-$repo/target}
if [[ -z ${PIPESVC_BIN:-} ]]; then
    (cd "$repo" && cargo build --quiet --bin pipesvc)
    export PIPESVC_BIN=$target/debug/pipesvc
fi
if [[ -z ${PIPESVC_JOBS_BIN:-} ]]; then
    (cd "$repo" && cargo build --quiet --example job_service)
    export PIPESVC_JOBS_BIN=$target/debug/examples/job_service
fi
"$venv/bin/pytest" -q -p no:cacheprovider tests
