#!/usr/bin/env bash
# Copies a trimmed record of a GPU run into examples/results/gpu-h100/ (committed), from what
# scripts/gpu/run.sh sent back:
#
#   scripts/gpu/collect-results.sh OUT_PARALLEL [OUT_SERIAL]
#
# OUT_* are the folders that came back from the device calls (summary.txt, run.log,
# isobench-gpu-<phase>.tar.gz). Copied: the summaries, the parallel phase's report
# (report.md/json/html/csv and the seed-compatible result files), the environment, phase timings,
# nvidia-smi samples, the after-kill evidence, the apply logs and the journal(s). Not copied:
# server logs and per-request result.json files (in the archives). README.md is left alone:
# fill in its TODOs from summary.txt.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${ISOBENCH_RESULTS_DEST:-$ROOT/examples/results/gpu-h100}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

collect() {   # collect OUT_DIR PHASE
  local out=$1 phase=$2 archive
  archive=$(ls "$out"/isobench-gpu-*.tar.gz | head -1)
  mkdir -p "$tmp/$phase"
  tar -xzf "$archive" -C "$tmp/$phase"
  local w=$tmp/$phase/isobench-gpu
  cp "$out/summary.txt" "$DEST/summary-$phase.txt"
  mkdir -p "$DEST/$phase"
  for f in env.txt timings.tsv gpu-transformers.toml model-info.json plan-parallel.txt \
           plan-after-kill.txt after-kill.txt apply-parallel-1.log apply-parallel-2.log \
           apply-serial.log gpus-at-end.csv; do
    [ -f "$w/$f" ] && cp "$w/$f" "$DEST/$phase/"
  done
  for s in "$w"/samples-*; do
    [ -d "$s" ] && mkdir -p "$DEST/$phase/$(basename "$s")" && cp "$s"/*.csv "$DEST/$phase/$(basename "$s")/"
  done
  for st in "$w"/state-*; do
    [ -f "$st/journal.jsonl" ] && cp "$st/journal.jsonl" "$DEST/$phase/$(basename "$st")-journal.jsonl"
  done
  for r in "$w"/report-*; do
    [ -d "$r" ] || continue
    local to=$DEST/$(basename "$r")
    rm -rf "$to"; mkdir -p "$to"
    cp "$r"/report.md "$r"/report.json "$r"/report.html "$r"/report.csv "$to/" 2>/dev/null || true
    cp -r "$r"/baseline_benchmark_results "$r"/agent_benchmark_results "$to/" 2>/dev/null || true
  done
}

mkdir -p "$DEST"
collect "$1" parallel
[ $# -ge 2 ] && collect "$2" serial
du -sh "$DEST"
find "$DEST" -type f | sort
