#!/usr/bin/env bash
# The local stack: redis-server and a Kafka-protocol broker (tansu) on loopback,
# with trackstream's topics created.
#
#   deploy/local/stack.sh up      install what is missing, start both, create topics
#   deploy/local/stack.sh down    stop both cleanly
#   deploy/local/stack.sh status
#
# Environment (defaults):
#   REDIS_PORT=6390  KAFKA_PORT=19092  PARTITIONS=8
#   STACK_DIR=${TMPDIR:-/tmp}/trackstream-stack   (pids, logs, data)
#   KAFKA_BROKERS=   use this broker instead of starting tansu (e.g. Apache Kafka)
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
  tansu="$("$here/install-deps.sh" | tail -n 1)"
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
  elif running "$STACK_DIR/tansu.pid"; then
    log "broker already running"
  else
    local url="tcp://127.0.0.1:$KAFKA_PORT"
    RUST_LOG=warn nohup "$tansu" broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine memory://tansu/ >"$STACK_DIR/tansu.log" 2>&1 &
    echo $! >"$STACK_DIR/tansu.pid"
    wait_port "$KAFKA_PORT" tansu
    log "tansu on $url"
  fi
  (cd "$root" && cargo run -q -p trackstream-sandbox --bin trackstream-stack -- \
    create-topics --brokers "$brokers" --partitions "$PARTITIONS")
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
  stop_pid "$STACK_DIR/tansu.pid" tansu
  stop_pid "$STACK_DIR/redis.pid" redis
}

status() {
  running "$STACK_DIR/redis.pid" && log "redis running (pid $(cat "$STACK_DIR/redis.pid"))" || log "redis stopped"
  running "$STACK_DIR/tansu.pid" && log "tansu running (pid $(cat "$STACK_DIR/tansu.pid"))" || log "tansu stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
