#!/usr/bin/env bash
# Downloads the wheels `transformers serve` needs on the GPU machine (which has torch,
# transformers, tokenizers, typer, httpx, anyio, click and h11, but no FastAPI stack and no network)
# into a git-ignored folder, ~6 MB. scripts/gpu/run.sh installs them there with
# `pip install --no-index --no-deps --target /tmp/site`.
#
#   scripts/gpu/fetch-wheels.sh              # -> .whl/ for CPython 3.12 (the GPU machine)
#   ISOBENCH_WHEELS_PYTHON=3.11 scripts/gpu/fetch-wheels.sh /tmp/whl-311   # for a local dry run
#
# Versions are pinned: newer FastAPI wants opentelemetry and openai 2.x+ wants httpx2, neither of
# which is on the GPU machine; pydantic and pydantic-core must be an exact pair. typing-extensions
# is not among them: the GPU machine has its own, and its anyio (updated since) needs a newer one
# than any pin here (a pinned 4.15.0 shadowed it: every request failed with HTTP 500). Wheels of these
# packages in other versions are removed from the folder, because two versions of one package
# make the `--no-deps` install fail.
set -euo pipefail
DEST=${1:-.whl}
PY_VERSION=${ISOBENCH_WHEELS_PYTHON:-3.12}
PIP=${PIP:-python3 -m pip}
WHEELS=(
  fastapi==0.115.12 starlette==0.46.2 uvicorn==0.34.3
  pydantic==2.11.7 pydantic-core==2.33.2 annotated-types==0.7.0 typing-inspection==0.4.1
  openai==1.109.1 jiter==0.10.0 distro==1.9.0 sniffio==1.3.1
)
log() { printf '[fetch-wheels %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "downloading ${#WHEELS[@]} wheels for CPython $PY_VERSION into $DEST"
# shellcheck disable=SC2086 # PIP may be a command with arguments
$PIP download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any \
  -d "$tmp" "${WHEELS[@]}"

mkdir -p "$DEST"
# Wheel file names start with the distribution name in lower case with `_` for `-`.
for whl in "$tmp"/*.whl; do
  dist=$(basename "$whl" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
  for old in "$DEST"/*.whl; do
    [ -e "$old" ] || continue
    old_dist=$(basename "$old" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
    if [ "$old_dist" = "$dist" ] && [ "$(basename "$old")" != "$(basename "$whl")" ]; then
      log "removing $(basename "$old") (another version)"
      rm -f "$old"
    fi
  done
  mv -f "$whl" "$DEST/"
done
count=$(find "$DEST" -maxdepth 1 -type f -name "*.whl" | wc -l)
log "$count wheels in $DEST, $(du -sh "$DEST" | cut -f1) together"
