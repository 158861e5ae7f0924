#!/usr/bin/env bash
# Offline validation of deploy/k8s, run by deploy/local/test.sh:
#   1. every manifest (and the ConfigMaps and Secret the kustomization
#      generates) against the Kubernetes OpenAPI schemas of a pinned Kubernetes
#      version, in strict mode (unknown fields are errors), with
#      kubernetes-validate;
#   2. check.py: each service's config keys (ConfigMap merged with the Secret)
#      equal deploy/docker/config/<svc>.toml's and deploy/local/config/<svc>.toml's,
#      no credential in a ConfigMap, and the manifests agree with the configs
#      (ports, probes, mounts, grace period, HPA bounds, topics Job).
#
#   deploy/k8s/validate.sh
#
# The validator (pinned with its dependencies in requirements.txt) is installed
# once into a virtualenv cached OUTSIDE the repo; later runs need no network.
# If python3 cannot create a virtualenv (Debian without python3-venv), the
# script installs python3-venv with apt-get, as install-deps.sh installs its
# packages.
#
# Environment (documented defaults):
#   KUBERNETES_VERSION=1.33.0                the Kubernetes version validated against
#   TRACKSTREAM_CACHE=~/.cache/trackstream   where the virtualenv is cached
#                                            (${XDG_CACHE_HOME:-$HOME/.cache}/trackstream)
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33.0}"
CACHE="${TRACKSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trackstream}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$CACHE/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
log() { printf '[k8s-validate] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

grep -qx "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "$here/requirements.txt" || {
  log "requirements.txt does not pin kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; exit 2; }

# The install is complete when the stamp holds this requirements.txt's hash.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  mkdir -p "$CACHE"
  # A lock so concurrent callers don't build it twice.
  exec 9>"$venv.lock"
  flock 9
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      log "python3 cannot create a virtualenv; installing python3-venv from Debian packages"
      rm -rf "$venv"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
      python3 -m venv "$venv"
    fi
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv (one time)"
    # --no-deps: requirements.txt pins the whole tree, nothing floats.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      --require-virtualenv -r "$here/requirements.txt" >&2
    echo "$want" >"$stamp"
  fi
  exec 9>&-
fi

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
status=0

# 2. (first, because it also writes the generated objects for 1.)
if ! "$venv/bin/python" "$here/check.py" --render "$rendered"; then
  log "config or manifest check failed (above)"
  status=1
fi

# 1. Strict schema validation. kubernetes-validate only warns (exit 0) about a
#    kind it has no schema for (a typo in apiVersion or kind), so any line it
#    prints with --quiet is a failure.
manifests=()
while IFS= read -r file; do
  [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done < <(find "$here" -maxdepth 1 -name '*.yaml' | sort)
out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" \
  "${manifests[@]}" "$rendered"/*.yaml 2>&1)" || true
if [ -n "$out" ]; then
  printf '%s\n' "$out" | sed "s|$rendered/|<generated>/|; s|$root/||"
  log "schema validation against Kubernetes $KUBERNETES_VERSION failed (above)"
  status=1
fi

if [ "$status" -eq 0 ]; then
  log "ok: ${#manifests[@]} manifests + $(ls "$rendered" | wc -l) generated objects valid for Kubernetes $KUBERNETES_VERSION (strict, kubernetes-validate $KUBERNETES_VALIDATE_VERSION); config keys match deploy/docker and deploy/local"
fi
exit "$status"
