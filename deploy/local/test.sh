#!/usr/bin/env bash
# The test command: installs what the tests need (redis-server, the pinned broker),
# then checks formatting and lints and runs every test of the workspace against a
# real redis-server and a real Kafka-protocol broker started by the test kit.
#
#   deploy/local/test.sh              everything
#   deploy/local/test.sh -p trackstream-detector    extra args go to cargo nextest run
#                                                   (or cargo test)
#
# On a fresh machine the broker's one-time build (install-deps.sh, ~25 min on
# two cores) runs in the background while formatting, lints and the tests'
# build run; the tests start once both are done.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

deps_out="$(mktemp)"
trap 'rm -f "$deps_out"' EXIT
"$here/install-deps.sh" >"$deps_out" &
deps_pid=$!

# cargo-nextest (on the CI machines) runs each test in its own process with a
# time bound and one retry (settings: .config/nextest.toml); plain `cargo test`
# otherwise. There are no Rust doc tests (the doc examples are JSON/TOML).
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run)
else
  runner=(cargo test)
fi
[ "$#" -gt 0 ] || set -- --workspace

cargo fmt --all -- --check
# The Kubernetes manifests: strict schema validation and config-key consistency
# (offline once its validator is cached; deploy/k8s/validate.sh).
"$root/deploy/k8s/validate.sh"
cargo clippy --workspace --all-targets -q -- -D warnings
"${runner[@]}" --no-run "$@"

if ! wait "$deps_pid"; then
  echo "test.sh: installing the test dependencies failed (see above)" >&2
  exit 1
fi
BROKER_BIN="$(tail -n 1 "$deps_out")"
export BROKER_BIN
"${runner[@]}" "$@"
