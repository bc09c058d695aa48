#!/usr/bin/env bash
# Benchmark of the Slurm backend on the two-node test cluster (scripts/slurm-cluster.sh):
#   1. 24 simulated sessions (3 commits × 2 arms × 4 trials, 1 GPU each, ~SESSION_S each)
#      spread over both nodes vs the same campaign pinned to n1: makespans and their ratio;
#   2. the controller's overhead per session with no queueing (4 sessions on 4 GPUs):
#      submit → running → results collected, minus the session's own time on its node.
# Usage: scripts/bench-slurm.sh            (ISOBENCH=path/to/isobench to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
export SLURM_CONF=${SLURM_CONF:-/tmp/isobench-slurm/slurm.conf}
scripts/slurm-cluster.sh start >/dev/null
if [ -z "${ISOBENCH:-}" ]; then
  cargo build -q
  ISOBENCH=${CARGO_TARGET_DIR:-$PWD/target}/debug/isobench
fi
ITL_MS=${ITL_MS:-150}     # 16 output tokens × 150 ms ≈ 2.4 s per request; ~5 s per session
W=$(mktemp -d /tmp/isobench-bench-slurm.XXXXXX)
trap 'rm -rf "$W"' EXIT

manifest() { # name commits repeats extra-cluster-lines
  local d=$W/$1; mkdir -p "$d/srv/baseline" "$d/srv/human"
  printf 'ttft_ms = 5.0\nitl_ms = %s\n' "$ITL_MS" > "$d/srv/baseline/sim.toml"
  printf 'ttft_ms = 5.0\nitl_ms = %s\n' "$ITL_MS" > "$d/srv/human/sim.toml"
  cat > "$d/m.toml" <<TOML
version = 1
name = "bench-$1"
repeats = $3
[[arms]]
name = "baseline"
path = "srv/baseline"
[[arms]]
name = "human"
path = "srv/human"
[models.sim]
hf = "isobench/sim"
served_name = "sim"
[server]
runtime = "process"
command = "{{ isobench }} sim --config sim.toml --host 127.0.0.1 --port {{ port }} --model sim --chat-template-tokens 0"
gpus = 1
ready = { path = "/health", timeout = "20s", interval = "50ms" }
[load]
dataset = { input_len = 16, output_len = 16 }
num_prompts = 8
concurrency = 8
warmup = 1
timeout = "120s"
[resources]
gpu_kind = "bench"
[cluster]
backend = "slurm"
partition = "gpu"
$4
TOML
  for i in $(seq 1 "$2"); do
    printf '[[commits]]\nhuman = "%s"\nparent = "%s"\nmodel = "sim"\n' \
      "$(printf "$i%.0s" {1..40})" "$i$(printf '0%.0s' {1..39})" >> "$d/m.toml"
  done
  echo "$d/m.toml"
}

run() { # manifest → seconds
  local t0 t1; t0=$(date +%s.%N)
  "$ISOBENCH" apply --plain --no-report "$1" > "$(dirname "$1")/apply.log" 2>&1 \
    || { cat "$(dirname "$1")/apply.log"; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.1f}')"
}

overhead() { # state dir → per-session figures (python)
  python3 - "$1" <<'PY'
import json, sys, os, datetime, statistics
d = sys.argv[1] + "/cluster"
ts = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
recs = [json.loads(l) for l in open(d + "/jobs.jsonl")]
by = {}
for r in recs:
    by.setdefault(r["token"], {})[r["event"]] = r
rows = []
for tok, ev in by.items():
    o = json.load(open(f"{d}/{tok}/outcome.json"))
    sub, end = ts(ev["submitting"]["t"]), ts(ev["ended"]["t"])
    began, ended = o["began_ms"] / 1000, o["ended_ms"] / 1000
    rows.append((end - sub - (ended - began), began - sub, end - ended, ended - began))
med = lambda i: statistics.median(r[i] for r in rows)
print(f"  sessions {len(rows)}; median session on its node {med(3):.2f} s")
print(f"  controller overhead per session (submit → collected − session): median {med(0):.2f} s, max {max(r[0] for r in rows):.2f} s")
print(f"    of which submit → worker running on its node: median {med(1):.2f} s; worker done → collected: median {med(2):.2f} s")
PY
}

echo "== 24 sessions, 2 nodes (4 GPUs) vs 1 node (2 GPUs); ITL ${ITL_MS} ms"
two=$(run "$(manifest spread 3 4 '')")
one=$(run "$(manifest single 3 4 'sbatch_args = ["--nodelist=n1"]')")
python3 -c "print(f'  makespan: two nodes {$two} s, one node {$one} s, ratio {$two/$one:.2f}x')"
overhead "$W/spread/.isobench"
echo "== 4 sessions on 4 GPUs (no queueing)"
four=$(run "$(manifest four 1 2 '')")
echo "  makespan: $four s"
overhead "$W/four/.isobench"
