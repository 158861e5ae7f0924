#!/usr/bin/env bash
# The test command: installs what the tests need (redis-server, the pinned broker),
# then checks formatting and lints and runs every test of the workspace against a
# real redis-server and a real Kafka-protocol broker started by the test kit.
#
#   deploy/local/test.sh              everything
#   deploy/local/test.sh -p trackstream-detector    extra args go to cargo test
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

BROKER_BIN="$("$here/install-deps.sh" | tail -n 1)"
export BROKER_BIN

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
if [ "$#" -gt 0 ]; then
  cargo test "$@"
else
  cargo test --workspace
fi
