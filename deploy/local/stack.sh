#!/usr/bin/env bash
# The local stack: redis-server and a Kafka-protocol broker (nisshi 0.8.1, on
# durable SQLite storage in $STACK_DIR/broker, so a broker restart keeps what it
# acknowledged) on loopback, with trackstream's topics created (`trackstream
# topics create`, the operator CLI) before any service connects: nisshi creates
# topics a client merely names with 4 partitions.
#
#   deploy/local/stack.sh up      install what is missing, start both, create topics
#   deploy/local/stack.sh down    stop both cleanly
#   deploy/local/stack.sh status
#
# Environment (defaults):
#   REDIS_PORT=6390  KAFKA_PORT=19092  PARTITIONS=8
#   STACK_DIR=${TMPDIR:-/tmp}/trackstream-stack   (pids, logs, data)
#   KAFKA_BROKERS=   use this broker instead of starting one (e.g. Apache Kafka)
#   BROKER=nisshi    or tansu (0.6.0, memory storage: its SQLite engine does not
#                    survive client reconnects after a restart)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
REDIS_PORT="${REDIS_PORT:-6390}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
PARTITIONS="${PARTITIONS:-8}"
STACK_DIR="${STACK_DIR:-${TMPDIR:-/tmp}/trackstream-stack}"
log() { printf '[stack] %s\n' "$*" >&2; }

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not open port $port"; return 1
}

up() {
  broker="$("$here/install-deps.sh" | tail -n 1)"
  mkdir -p "$STACK_DIR"
  if running "$STACK_DIR/redis.pid"; then
    log "redis already running"
  else
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$STACK_DIR" --daemonize yes --pidfile "$STACK_DIR/redis.pid" \
      --logfile "$STACK_DIR/redis.log"
    wait_port "$REDIS_PORT" redis
    log "redis on 127.0.0.1:$REDIS_PORT"
  fi
  local brokers="${KAFKA_BROKERS:-127.0.0.1:$KAFKA_PORT}"
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    log "using external broker $KAFKA_BROKERS"
  elif running "$STACK_DIR/broker.pid"; then
    log "broker already running"
  else
    local url="tcp://127.0.0.1:$KAFKA_PORT" storage="sqlite://broker.db"
    case "$(basename "$broker")" in tansu*) storage="memory://tansu/" ;; esac
    mkdir -p "$STACK_DIR/broker"
    # The SQLite path is relative to the broker's working directory; `exec` makes
    # the background subshell the broker itself, so $! is the broker's pid.
    (cd "$STACK_DIR/broker" && RUST_LOG=warn exec nohup "$broker" broker --listener-url "$url" \
      --advertised-listener-url "$url" --storage-engine "$storage") >"$STACK_DIR/broker.log" 2>&1 &
    echo $! >"$STACK_DIR/broker.pid"
    wait_port "$KAFKA_PORT" broker
    # Someone else on the port (a stray broker) would pass wait_port: ours must live.
    running "$STACK_DIR/broker.pid" || { log "broker exited; see $STACK_DIR/broker.log"; return 1; }
    log "$(basename "$broker") on $url, storage $storage"
  fi
  # One broker, so replication 1 (the CLI's defaults are for production clusters).
  (cd "$root" && cargo run -q -p trackstream-cli -- topics create \
    --brokers "$brokers" --partitions "$PARTITIONS" --replication-factor 1 >/dev/null)
}

stop_pid() {
  local file=$1 name=$2
  if running "$file"; then
    kill -TERM "$(cat "$file")"
    for _ in $(seq 1 100); do running "$file" || break; sleep 0.1; done
    running "$file" && kill -KILL "$(cat "$file")"
    log "$name stopped"
  fi
  rm -f "$file"
}

down() {
  stop_pid "$STACK_DIR/broker.pid" broker
  stop_pid "$STACK_DIR/redis.pid" redis
}

status() {
  running "$STACK_DIR/redis.pid" && log "redis running (pid $(cat "$STACK_DIR/redis.pid"))" || log "redis stopped"
  running "$STACK_DIR/broker.pid" && log "broker running (pid $(cat "$STACK_DIR/broker.pid"))" || log "broker stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
