#!/usr/bin/env bash
# The end-to-end benchmark: builds the release binaries, then runs trackstream-bench,
# which starts its own Redis and broker, runs the four services as child processes,
# measures the machine's ceilings and offered-load steps, and rewrites the generated
# part of benches/RESULTS.md and benches/e2e-latency.svg.
#
#   benches/run.sh [--steps 100,200,400,800,1600,3200,6400,12800] [--step-secs 10]
#                  [--partitions 8] [--fetch-wait-ms N] [--batch-linger-ms N]
#                  [--concurrency 256] [--no-repeat] [--results FILE]
#                  [--broker-storage sqlite|memory]
#
# The broker is nisshi 0.8.1 on durable SQLite storage by default, as the stack
# runs it; BROKER=tansu runs its predecessor tansu 0.6.0 (memory storage only is
# meaningful there: `--broker-storage memory`). BROKER_BIN=path uses that binary.
#
# After the steps it offers the first step again and re-measures the broker
# ceiling (a broker that slows as it fills shows here; --no-repeat skips the step).
#
# Ctrl-C / SIGTERM stop the services, broker and Redis with it (SIGKILL cannot:
# leftovers are reported at the next start; they no longer take its ports).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
BROKER_BIN="$(deploy/local/install-deps.sh | tail -n 1)"
export BROKER_BIN
cargo build --release -q -p trackstream-ingest -p trackstream-normalize -p trackstream-detector \
  -p trackstream-notifier -p trackstream-benches --bins
exec target/release/trackstream-bench "$@"
