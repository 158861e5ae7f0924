#!/usr/bin/env bash
# The end-to-end benchmark: builds the release binaries, then runs trackstream-bench,
# which starts its own Redis and broker, runs the four services as child processes,
# measures the machine's ceilings and offered-load steps, and rewrites the generated
# part of benches/RESULTS.md and benches/e2e-latency.svg.
#
#   benches/run.sh [--steps 100,200,400,800,1600,3200,6400,12800] [--step-secs 10]
#                  [--partitions 8] [--fetch-wait-ms N] [--batch-linger-ms N]
#                  [--concurrency 256] [--no-repeat] [--results FILE]
#
# After the steps it offers the first step again and re-measures the broker
# ceiling (tansu's memory storage slows as it fills; --no-repeat skips the step).
#
# Ctrl-C / SIGTERM stop the services, broker and Redis with it (SIGKILL cannot:
# leftovers are reported at the next start; they no longer take its ports).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
TANSU_BIN="$(deploy/local/install-deps.sh | tail -n 1)"
export TANSU_BIN
cargo build --release -q -p trackstream-ingest -p trackstream-normalize -p trackstream-detector \
  -p trackstream-notifier -p trackstream-benches --bins
exec target/release/trackstream-bench "$@"
