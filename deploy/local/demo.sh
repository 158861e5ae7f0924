#!/usr/bin/env bash
# The main job: bring up Redis and the broker, start the four services, drive a
# demo (a few hundred parcels of generated scans through real webhooks), print
# counts and samples of updates, alerts and buyer messages, then stop everything.
#
#   deploy/local/demo.sh              (PARCELS=300 by default)
#   deploy/local/demo.sh --keep-up    the same, then the stack stays up (Ctrl-C
#                                     stops it) to click through the printed
#                                     tracking page, lookup and console URLs
#
# Services log JSON to $STACK_DIR/<service>.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export STACK_DIR="${STACK_DIR:-${TMPDIR:-/tmp}/trackstream-stack}"
PARCELS="${PARCELS:-300}"
keep_up=0
for arg in "$@"; do
  case "$arg" in
    --keep-up) keep_up=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[demo] %s\n' "$*" >&2; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not open port $port; see $STACK_DIR/$name.log"; return 1
}

cd "$root"
log "building services and tools"
cargo build -q --bins -p trackstream-ingest -p trackstream-normalize -p trackstream-detector \
  -p trackstream-notifier -p trackstream-sandbox
bin="$root/target/debug"

# A fresh broker log for a fresh demo (Redis starts empty too); the stack keeps
# it across broker restarts within a run.
"$here/stack.sh" down 2>/dev/null || true
rm -rf "$STACK_DIR/broker"
"$here/stack.sh" up
pids=()
cleanup() {
  log "stopping services"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$here/stack.sh" down
}
trap cleanup EXIT

for service in ingest normalize detector notifier; do
  "$bin/trackstream-$service" --config "$here/config/$service.toml" >"$STACK_DIR/$service.log" 2>&1 &
  pids+=("$!")
  log "started $service (pid $!)"
done
wait_port 8080 ingest
wait_port 9102 normalize
wait_port 9103 detector
wait_port 50051 notifier
wait_port 8090 notifier

"$bin/trackstream-demo" --parcels "$PARCELS" \
  --ingest http://127.0.0.1:8080 --grpc http://127.0.0.1:50051 --brokers 127.0.0.1:19092 \
  --merchant-token demo-merchant-token --generic-secret demo-generic-secret \
  --kdniao-account 1234567 --kdniao-appkey demo-kdniao-appkey \
  --web http://127.0.0.1:8090

if [ "$keep_up" = 1 ]; then
  log "the stack stays up: open the URLs above (console token: demo-merchant-token); Ctrl-C stops it"
  trap 'exit 0' INT TERM
  while true; do sleep 3600 & wait $!; done
fi
