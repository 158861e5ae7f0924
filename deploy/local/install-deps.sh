#!/usr/bin/env bash
# Installs what the local stack needs and is not already on the machine:
#   * redis-server  — Debian package (apt-get), used by the stack and by tests;
#   * the broker    — a Kafka-protocol broker written in Rust, built once with
#                     `cargo install` at a pinned version and cached OUTSIDE the repo
#                     (default ~/.cache/trackstream/<broker>-<version>):
#                       nisshi 0.8.1 (default; durable `sqlite://` storage, Kafka's
#                       group protocol) or tansu 0.6.0 (its predecessor, kept for
#                       the side-by-side benchmark, docs/ARCHITECTURE.md "Broker");
#   * protoc        — not needed: proto/ compiles .proto files with a vendored protoc.
#   * the browser tests' parts — Debian's chromium (/usr/bin/chromium), a CJK
#                     font (so Chinese pages render in screenshots), Node.js with
#                     npm when missing, and web/browser's npm packages from its
#                     lockfile (`npm ci`, re-run only when the lockfile changed).
#
# nisshi needs rustc >= 1.96. The script picks the toolchain itself: the default
# one when it is new enough, else an installed nightly, else it stops and says
# what to install.
#
# Idempotent: a second run finds everything in place and returns in milliseconds.
# Prints the broker binary path on its last line of stdout so callers can capture it.
#
# Environment (documented defaults):
#   BROKER=nisshi                            which broker: nisshi | tansu
#   NISSHI_VERSION=0.8.1  TANSU_VERSION=0.6.0   pinned versions
#   NISSHI_FEATURES=libsql                   nisshi's storage engines; the benchmark's
#                                            `--broker-storage memory` needs
#                                            libsql,dynostore (cached separately)
#   TRACKSTREAM_CACHE=~/.cache/trackstream   where third-party binaries are cached
#   BROKER_BIN=                              use this broker binary instead (skips the build)
set -euo pipefail

BROKER="${BROKER:-nisshi}"
NISSHI_VERSION="${NISSHI_VERSION:-0.8.1}"
NISSHI_FEATURES="${NISSHI_FEATURES:-libsql}"
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

# Debian packages not on the machine yet, installed in one apt run.
apt_missing=()
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || apt_missing+=(fonts-wqy-microhei)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  log "installing ${apt_missing[*]} from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_missing[@]}" >&2
fi

# The browser tests' npm packages, exactly as locked; the lockfile's hash in
# node_modules says whether the installed set is current.
browser_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../web/browser" && pwd)"
lock_hash="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$browser_dir/node_modules/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
  log "installing the browser tests' npm packages (npm ci)"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_hash" >"$browser_dir/node_modules/.lock-hash"
fi

if [ -n "${BROKER_BIN:-}" ]; then
  [ -x "$BROKER_BIN" ] || { log "BROKER_BIN=$BROKER_BIN is not executable"; exit 1; }
  echo "$BROKER_BIN"
  exit 0
fi

# minor_of "rustc 1.96.0-nightly (...)" -> 96
minor_of() { sed -n 's/^rustc 1\.\([0-9][0-9]*\)\..*/\1/p'; }

# The `cargo` command line that can build a crate needing rustc >= $1.
toolchain_for() {
  local need=$1 minor
  minor="$(rustc --version 2>/dev/null | minor_of)"
  if [ -n "$minor" ] && [ "$minor" -ge "$need" ]; then
    echo "cargo"; return 0
  fi
  if command -v rustup >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    minor="$(rustup run nightly rustc --version 2>/dev/null | minor_of)"
    if [ -n "$minor" ] && [ "$minor" -ge "$need" ]; then
      echo "cargo +nightly"; return 0
    fi
  fi
  log "building $BROKER needs rustc >= 1.$need; found $(rustc --version 2>/dev/null || echo none)."
  log "install one: 'rustup toolchain install stable' (if stable is >= 1.$need) or 'rustup toolchain install nightly'"
  return 1
}

# install NAME VERSION VARIANT MIN_RUSTC_MINOR CARGO_ARGS...
install() {
  local name=$1 version=$2 variant=$3 need=$4
  shift 4
  local root="$CACHE/$name-$version$variant" bin="$CACHE/$name-$version$variant/bin/$name"
  if [ ! -x "$bin" ]; then
    mkdir -p "$CACHE"
    # A lock so concurrent callers (tests + stack) don't build it twice.
    exec 9>"$CACHE/$name-$version$variant.lock"
    flock 9
    if [ ! -x "$bin" ]; then
      local cargo
      cargo="$(toolchain_for "$need")"
      log "building $name $version with '$cargo' into $root (one time, ~15-25 min on 2 cores)"
      # A build directory in the cache, so an interrupted build resumes.
      CARGO_TARGET_DIR="$CACHE/$name-build$variant" \
        $cargo install "$name" --locked --version "$version" --root "$root" "$@" >&2
      rm -rf "$CACHE/$name-build$variant"
    fi
  fi
  echo "$bin"
}

case "$BROKER" in
  # Only the SQLite engine by default: the default features add PostgreSQL and
  # object stores (which `memory://` needs) the stack does not use, and double
  # the build.
  nisshi)
    variant=""
    [ "$NISSHI_FEATURES" = libsql ] || variant="-${NISSHI_FEATURES//,/-}"
    install nisshi "$NISSHI_VERSION" "$variant" 96 --no-default-features --features "$NISSHI_FEATURES" ;;
  tansu) install tansu "$TANSU_VERSION" "" 85 --features dynostore,libsql ;;
  *) log "BROKER=$BROKER: expected nisshi or tansu"; exit 2 ;;
esac
