#!/usr/bin/env bash
# The scaling benchmark: builds the release binaries, then runs trackstream-scale,
# which, for each Redis setup and instance count, starts its own Redis (or a
# three-master Redis Cluster) and broker, writes a generated backlog through
# ingest, and lets 1, 2, … instances of normalize, the detector and the
# notifier drain it stage by stage, measuring records/s and CPU per record.
#
#   benches/scale.sh [--instances 1,2] [--redis standalone,cluster]
#                    [--webhooks 40000] [--partitions 8]
#                    [--broker-storage memory|sqlite] [--results FILE]
#
# The broker is nisshi 0.8.1 (BROKER=tansu for tansu 0.6.0; BROKER_BIN=path);
# memory storage by default: the stages are measured, not the broker.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Memory storage needs nisshi's dynostore build.
if [ -z "${BROKER_BIN:-}" ] && [ "${BROKER:-nisshi}" = nisshi ]; then
  export NISSHI_FEATURES="${NISSHI_FEATURES:-libsql,dynostore}"
fi
BROKER_BIN="$(deploy/local/install-deps.sh | tail -n 1)"
export BROKER_BIN
cargo build --release -q -p trackstream-ingest -p trackstream-normalize -p trackstream-detector \
  -p trackstream-notifier -p trackstream-benches --bins
exec target/release/trackstream-scale "$@"
