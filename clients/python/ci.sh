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
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$here" -r "$here/requirements-test.txt"

cd "$here"
# Generated code must match what the generator makes today.
"$venv/bin/python" -m pipesvc_client.gen --check examples/serve_api.py --from-json examples/serve_description.json --class ServeClient
"$venv/bin/python" -m pipesvc_client.gen --check examples/jobs_api.py --from-json examples/jobs_description.json --class JobsClient
"$venv/bin/mypy" --strict src examples tests
# The binary is built once, before pytest (its fixture would otherwise).
if [[ -z ${PIPESVC_BIN:-} ]]; then
    (cd "$repo" && cargo build --quiet --bin pipesvc)
    export PIPESVC_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/pipesvc
fi
"$venv/bin/pytest" -q -p no:cacheprovider tests
find "$here" -name __pycache__ -type d -prune -exec rm -rf {} +
