#!/usr/bin/env bash
# Installs and starts what the test suite needs on a fresh Debian machine of this kind:
# Debian packages (a real container registry, headless Chromium for the HTML report test, python3
# for the seed-file compatibility test and the patch tests' Python base image, git for `git apply`
# of agent patches) and a
# local registry on 127.0.0.1:5000. Idempotent: a second run only checks.
set -euo pipefail
log() { printf '[ci-setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

PACKAGES="docker-registry chromium python3 python3-venv git"
missing=""
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Local registry for pull tests (no outside registry is reachable from these machines).
REGISTRY_ADDR=${ISOBENCH_TEST_REGISTRY:-127.0.0.1:5000}
if ! curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; then
  dir=${ISOBENCH_CACHE_DIR:-$HOME/.cache/isobench}/registry
  mkdir -p "$dir/data"
  cat > "$dir/config.yml" <<CFG
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
CFG
  log "starting docker-registry on $REGISTRY_ADDR"
  setsid nohup docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 < /dev/null &
  for _ in $(seq 1 50); do curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null || { cat "$dir/registry.log"; exit 1; }
fi
# Docker Engine: normally running already; on a machine where it is installed but stopped, start it.
if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && systemctl start docker >/dev/null 2>&1; then
    log "started docker.service"
  elif command -v dockerd >/dev/null 2>&1; then
    log "starting dockerd"
    setsid nohup dockerd > /var/log/isobench-dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
docker info >/dev/null 2>&1 || { log "Docker Engine is not reachable"; exit 1; }
# The Docker runtime runs docker-init (tini) as PID 1 of every server container.
[ "$(docker info --format '{{.InitBinary}}')" != "" ] || log "warning: the engine reports no init binary"
log "ready: registry at $REGISTRY_ADDR, docker $(docker version --format '{{.Server.Version}}')"
