#!/usr/bin/env bash
# Installs what the local stack needs and is not already on the machine:
#   * redis-server  — Debian package (apt-get), used by the stack and by tests;
#   * tansu         — a Kafka-protocol broker written in Rust, built once with
#                     `cargo install` at a pinned version and cached OUTSIDE the repo
#                     (default ~/.cache/trackstream/tansu-$TANSU_VERSION).
#   * protoc        — not needed: proto/ compiles .proto files with a vendored protoc.
#
# Idempotent: a second run finds everything in place and returns in milliseconds.
# Prints the broker binary path on its last line of stdout so callers can capture it.
#
# Environment (documented defaults):
#   TANSU_VERSION=0.6.0                      pinned broker version
#   TRACKSTREAM_CACHE=~/.cache/trackstream   where third-party binaries are cached
#   TANSU_BIN=                               use this broker binary instead (skips the build)
set -euo pipefail

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
CACHE="${TRACKSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trackstream}"
log() { printf '[install-deps] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  # The package starts a system-wide instance on :6379; the stack uses its own
  # instances on other ports, so the system one is stopped to stay out of the way.
  (as_root service redis-server stop >/dev/null 2>&1 || true)
fi

if [ -n "${TANSU_BIN:-}" ]; then
  [ -x "$TANSU_BIN" ] || { log "TANSU_BIN=$TANSU_BIN is not executable"; exit 1; }
  echo "$TANSU_BIN"
  exit 0
fi

root="$CACHE/tansu-$TANSU_VERSION"
bin="$root/bin/tansu"
if [ ! -x "$bin" ]; then
  log "building tansu $TANSU_VERSION into $root (one time, ~15 min on 2 cores)"
  mkdir -p "$CACHE"
  # A lock so concurrent callers (tests + stack) don't build it twice.
  exec 9>"$CACHE/tansu-$TANSU_VERSION.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    CARGO_TARGET_DIR="$CACHE/tansu-build" \
      cargo install tansu --locked --version "$TANSU_VERSION" \
      --features dynostore,libsql --root "$root" >&2
    rm -rf "$CACHE/tansu-build"
  fi
fi
echo "$bin"
