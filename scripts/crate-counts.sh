#!/usr/bin/env bash
# The crate counts README.md and ARCHITECTURE.md give, measured rather than
# typed: the crates in pipesvc's normal dependency tree (pipesvc itself
# included) on this platform, for each feature set the docs name. One line
# each: LABEL COUNT. `tests/docs_in_sync.rs` checks the docs against it.
#
#   bare     default-features = false: what a product that embeds the
#            library pulls in
#   rpc      the typed layer alone (--no-default-features --features rpc)
#   default  the default features (the `pipesvc` binary's)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}

count() {
    "$cargo" tree --quiet -e normal --prefix none "$@" | sed 's/ (\*)$//' | sort -u | wc -l | tr -d ' '
}

echo "bare $(count --no-default-features)"
echo "rpc $(count --no-default-features --features rpc)"
echo "default $(count)"
