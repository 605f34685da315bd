#!/usr/bin/env bash
# The TypeScript client's checks, as .ci/run runs them: install from the
# lock file, build, type-check the examples and the generated code, run the
# tests against a real `pipesvc serve` (PIPESVC_BIN, else the repository's
# target/debug or target/release pipesvc, built with cargo when missing),
# and check that the tests left nothing behind in their temporary directory.
set -euo pipefail
cd "$(dirname "$0")"

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( major < 20 )); then
    echo "the TypeScript client needs Node.js 20 or later (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi

npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
npx tsc -p examples/tsconfig.json --noEmit

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
TMPDIR=$tmp npm test
left=$(find "$tmp" -mindepth 1 -print)
[[ -z $left ]] || { echo "left behind by the TypeScript tests:"; echo "$left"; exit 1; }
