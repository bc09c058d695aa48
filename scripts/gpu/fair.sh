#!/usr/bin/env bash
# Fair comparisons on two GPUs, in one go (issue 14; see docs/report.md "Fair comparisons"):
#   1. balanced: baseline (sequential generate) vs human (continuous batching), 2 trials each,
#      placed as a Latin square so that every arm runs on both GPUs; nvidia-smi is sampled every
#      0.5 s and joined with the server pid records, so the samples show each arm on each GPU;
#   2. A/A under each isolation policy (exclusive, paired, none): the same server (continuous
#      batching) as both arms, 3 trials each.
# Trimmed results go to $OUT: summary.txt (placement from nvidia-smi and from the results, the
# verdicts, windows, overlaps, GPU effects, FDR), run.log, and fair.tar.gz (manifests, reports as
# JSON/Markdown, journals, sampler CSVs; no server logs beyond their last lines).
#
#   scripts/gpu/fair.sh                                  # on the two-GPU machine
#   ISOBENCH_FAIR_SIM=1 scripts/gpu/fair.sh              # CPU rehearsal: `isobench sim` servers
#                                                        # on two declared GPUs
# Inputs (optional): ISOBENCH_BIN (default .carry/isobench, else target/release/isobench,
# else target/debug/isobench), ISOBENCH_GPU_PYTHON_PREFIX (torch + transformers; default
# /opt/torch/.venv), ISOBENCH_GPU_WHEELS (default .whl), ISOBENCH_FAIR_BUDGET_S (default 450),
# ISOBENCH_FAIR_TRIALS (balanced campaign, default 2: enough for each arm to use both GPUs), ISOBENCH_FAIR_AA_TRIALS (default 3),
# ISOBENCH_FAIR_POLICIES (default "exclusive paired none"), ISOBENCH_GPU_DECLARE (e.g. 0,1),
# ISOBENCH_FAIR_DURATION (e.g. "20s": one more A/A campaign, `aa-timed`, under the default
# policy with time-based windows of that length and ISOBENCH_FAIR_RAMP_UP, default "5s"),
# ISOBENCH_FAIR_BALANCED (default 1; 0 skips the balanced campaign), ISOBENCH_FAIR_RAMP_PROFILE (e.g. "30s": first, one batched server on GPU 0, warmed up, then a
# timed bench run of that length with no ramp-up, profiled by scripts/ramp-profile.py: how long
# the server takes to reach its steady state, the evidence behind `load.ramp_up`'s default).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
START=$(date +%s)
BUDGET=${ISOBENCH_FAIR_BUDGET_S:-450}
OUT=${OUT:-/tmp/isobench-fair-out}
WORK=/tmp/isobench-fair
SIM=${ISOBENCH_FAIR_SIM:-0}
TRIALS=${ISOBENCH_FAIR_TRIALS:-2}
AA_TRIALS=${ISOBENCH_FAIR_AA_TRIALS:-3}
POLICIES=${ISOBENCH_FAIR_POLICIES:-"exclusive paired none"}
SITE=/tmp/site
MODEL=/tmp/isobench-gpu/model    # shared with scripts/gpu/run.sh: built once per machine
mkdir -p "$OUT" "$WORK"
find "$WORK" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
exec > >(tee -a "$OUT/run.log") 2>&1
log() { printf '[fair %s +%3ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - START ))" "$*"; }
remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }
PROBLEMS=$WORK/problems.txt; : > "$PROBLEMS"
problem() { log "PROBLEM: $*"; echo "$*" >> "$PROBLEMS"; }
SAMPLER_PID=""
stop_sampler() { [ -n "$SAMPLER_PID" ] && { kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; }; SAMPLER_PID=""; }
trap stop_sampler EXIT

# --- preflight --------------------------------------------------------------------------------
BIN_SRC=${ISOBENCH_BIN:-}
[ -z "$BIN_SRC" ] && for c in "$ROOT/.carry/isobench" "${CARGO_TARGET_DIR:-$ROOT/target}/release/isobench" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/isobench"; do
  [ -f "$c" ] && { BIN_SRC=$c; break; }
done
[ -n "$BIN_SRC" ] && [ -f "$BIN_SRC" ] || { problem "no isobench binary"; exit 1; }
mkdir -p "$WORK/bin"; cp -f "$BIN_SRC" "$WORK/bin/isobench"; chmod +x "$WORK/bin/isobench"
BIN=$WORK/bin/isobench
"$BIN" --version || { problem "isobench does not run here"; exit 1; }
HAVE_SMI=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && HAVE_SMI=1
GPUS_ARG=()
if [ -n "${ISOBENCH_GPU_DECLARE:-}" ]; then GPUS_ARG=(--gpus "$ISOBENCH_GPU_DECLARE")
elif [ "$SIM" = 1 ] || [ $HAVE_SMI = 0 ]; then GPUS_ARG=(--gpus 0,1); fi
log "mode: $([ "$SIM" = 1 ] && echo "simulator rehearsal" || echo "transformers serve") | nvidia-smi: $HAVE_SMI | GPUs: ${GPUS_ARG[*]:-detected} | budget ${BUDGET}s | cores $(nproc) | load $(cut -d' ' -f1-3 /proc/loadavg)"
[ $HAVE_SMI = 1 ] && nvidia-smi --query-gpu=index,uuid,name,memory.used --format=csv

# --- server: transformers serve (wheels + model as scripts/gpu/run.sh), or the simulator ------
if [ "$SIM" = 1 ]; then
  mkdir -p "$WORK/srv/seq" "$WORK/srv/cb"
  # Two servers that really differ (sequential vs batched, like the GPU arms), and one for A/A.
  printf 'ttft_ms = 20.0\nitl_ms = 6.0\nconcurrency_slowdown = 0.02\nmax_num_seqs = 2\nspeed_noise_pct = 1.5\n' > "$WORK/srv/seq/sim.toml"
  printf 'ttft_ms = 20.0\nitl_ms = 6.0\nconcurrency_slowdown = 0.02\nspeed_noise_pct = 1.5\n' > "$WORK/srv/cb/sim.toml"
  COMMAND='{{ isobench }} sim --config sim.toml --host 127.0.0.1 --port {{ port }} --model m'
  BASE_PATH=$WORK/srv/seq; HUMAN_PATH=$WORK/srv/cb; HUMAN_ARGS='[]'
  MODEL_TOML='[models.m]
hf = "isobench/sim"
served_name = "m"'
  SERVER_EXTRA='ready = { path = "/health", timeout = "30s", interval = "50ms" }'
  LOAD='dataset = { name = "random", input_len = 128, output_len = 32 }
num_prompts = 64
concurrency = 8
warmup = 4
timeout = "120s"'
else
  PREFIX=${ISOBENCH_GPU_PYTHON_PREFIX:-/opt/torch/.venv}
  PY=$PREFIX/bin/python3
  [ -x "$PY" ] || { problem "no Python at $PY"; exit 1; }
  WHEELS=${ISOBENCH_GPU_WHEELS:-$ROOT/.whl}
  rm -rf "$SITE"; mkdir -p "$SITE"
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
      || "$PY" -c 'import sys, zipfile
for w in sys.argv[2:]: zipfile.ZipFile(w).extractall(sys.argv[1])' "$SITE" "$WHEELS"/*.whl
  else
    problem "no wheels in $WHEELS (scripts/gpu/fetch-wheels.sh)"
  fi
  # The server stack must import and run an event loop with the machine's own packages (a
  # wheel that shadows one of them made every request fail with HTTP 500 after a 4-minute wait).
  PYTHONPATH=$SITE "$PY" -c 'import anyio, fastapi, uvicorn, openai, starlette.middleware.base; anyio.run(anyio.sleep, 0)' \
    || { problem "the server stack does not import with these wheels"; exit 1; }
  if [ ! -f "$MODEL/.complete" ]; then
    rm -rf "$MODEL"; mkdir -p "$(dirname "$MODEL")"
    "$PY" "$ROOT/scripts/gpu/build-model.py" "$MODEL" > "$WORK/model-info.json" 2> "$WORK/model-build.log" \
      && : > "$MODEL/.complete" || { tail -5 "$WORK/model-build.log"; problem "model build failed"; }
  fi
  COMMAND="{{ arm.path }}/bin/python3 -m transformers.cli.transformers serve --host 127.0.0.1 --port {{ port }} --log-level warning --cb-max-memory-percent 0.3 {{ model.path }}"
  BASE_PATH=$PREFIX; HUMAN_PATH=$PREFIX; HUMAN_ARGS='["--continuous-batching"]'
  MODEL_TOML="[models.m]
hf = \"isobench/tiny-llama-random\"
path = \"$MODEL\""
  SERVER_EXTRA='ready = { path = "/health", timeout = "240s", interval = "500ms" }
env = { PYTHONPATH = "/tmp/site", HF_HUB_OFFLINE = "1", TRANSFORMERS_OFFLINE = "1", HF_HUB_DISABLE_TELEMETRY = "1", HF_HUB_DISABLE_UPDATE_CHECK = "1", CUDA_DEVICE_ORDER = "PCI_BUS_ID", PYTHONUNBUFFERED = "1" }'
  LOAD='dataset = { name = "random", input_len = 128, output_len = 64 }
num_prompts = 32
concurrency = 8
warmup = 8
temperature = 0
ignore_eos = false
timeout = "150s"'
fi

manifest() { # manifest FILE NAME TRIALS ISOLATE HUMAN_PATH HUMAN_ARGS
  cat > "$1" <<EOF
version = 1
name = "$2"
repeats = $3
[[arms]]
name = "baseline"
path = "$BASE_PATH"
args = ${BASE_ARGS:-[]}
[[arms]]
name = "human"
path = "$5"
args = $6
$MODEL_TOML
[server]
runtime = "process"
command = "$COMMAND"
gpus = 1
$SERVER_EXTRA
[load]
$LOAD
[resources]
isolate = "$4"
[[commits]]
human = "fa00000000000000000000000000000000000001"
parent = "fa00000000000000000000000000000000000000"
model = "m"
EOF
}

# Every 0.5 s: nvidia-smi's compute apps (GPU UUID, pid) and the server pid records' addresses,
# so each GPU process can be named by its (commit, arm, trial).
start_sampler() { # start_sampler TAG STATE
  local dir=$WORK/samples-$1 state=$2
  mkdir -p "$dir"
  echo "time,gpu_uuid,pid,used_memory" > "$dir/compute-apps.csv"
  echo "time,pid,address" > "$dir/servers.csv"
  (
    while :; do
      ts=$(date +%s.%N)
      [ $HAVE_SMI = 1 ] && nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits 2>/dev/null | sed "s/^/$ts,/" >> "$dir/compute-apps.csv"
      for rec in "$state"/processes/*.json; do
        [ -e "$rec" ] && python3 -c 'import json,sys
r=json.load(open(sys.argv[1])); print(sys.argv[2]+","+str(r.get("pid",""))+","+r.get("labels",{}).get("isobench.address",""))' "$rec" "$ts" >> "$dir/servers.csv" 2>/dev/null
      done
      sleep 0.5
    done
  ) > /dev/null 2>&1 &
  SAMPLER_PID=$!
}

run_campaign() { # run_campaign TAG TRIALS ISOLATE HUMAN_PATH HUMAN_ARGS
  local tag=$1 dir=$WORK/$1 left
  left=$(( $(remaining) - 20 ))
  if [ $left -lt 40 ]; then problem "no time left for $tag"; return 1; fi
  mkdir -p "$dir"
  manifest "$dir/m.toml" "fair-$tag" "$2" "$3" "$4" "$5"
  start_sampler "$tag" "$dir/.isobench"
  log "$tag: isolate=$3, $2 trials per arm (at most ${left}s)"
  timeout -k 20 -s INT "$left" "$BIN" apply --plain --no-report "${GPUS_ARG[@]}" "$dir/m.toml" > "$dir/apply.log" 2>&1
  local rc=$?
  stop_sampler
  [ $rc = 0 ] || problem "$tag: apply exited with $rc: $(tail -2 "$dir/apply.log" | tr '\n' ' ')"
  "$BIN" report "$dir/m.toml" --format json > "$dir/report.json" 2> "$dir/report.err" || problem "$tag: report failed"
  "$BIN" report "$dir/m.toml" --format markdown --color never > "$dir/report.md" 2>/dev/null
  log "$tag: $(grep -c '"event":"done"' "$dir/.isobench/journal.jsonl" 2>/dev/null) steps done in $(( $(date +%s) - START ))s so far"
}

ramp_profile() { # one server, warmed up; a timed run from t = 0; tokens per 0.5 s
  local dir=$WORK/ramp port=18931 pid
  mkdir -p "$dir"
  if [ "$SIM" = 1 ]; then
    (cd "$HUMAN_PATH" && exec "$BIN" sim --config sim.toml --host 127.0.0.1 --port $port --model m) > "$dir/server.log" 2>&1 &
  else
    env CUDA_VISIBLE_DEVICES=0 PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
      "$PY" -m transformers.cli.transformers serve --host 127.0.0.1 --port $port --log-level warning \
      --cb-max-memory-percent 0.3 --continuous-batching "$MODEL" > "$dir/server.log" 2>&1 &
  fi
  pid=$!
  log "ramp profile: one batched server, then a ${ISOBENCH_FAIR_RAMP_PROFILE} run with no ramp-up"
  (cd "$dir" && timeout -k 10 300 "$BIN" bench --base-url http://127.0.0.1:$port --model "$(
      [ "$SIM" = 1 ] && echo m || echo "$MODEL")" --backend openai-chat --random-input-len 128 \
      --random-output-len 64 --num-prompts 4000 --max-concurrency 8 --num-warmups 8 --temperature 0 \
      --ready-check-timeout-sec 240 --duration "$ISOBENCH_FAIR_RAMP_PROFILE" --ramp-up 0s \
      --save-result --save-detailed --result-filename ramp.json --disable-tqdm > bench.log 2>&1) \
    || problem "ramp profile: bench failed: $(tail -2 "$dir/bench.log" | tr '\n' ' ')"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  [ -f "$dir/ramp.json" ] && python3 "$ROOT/scripts/ramp-profile.py" "$dir/ramp.json" > "$OUT/ramp-profile.txt" \
    && tail -8 "$OUT/ramp-profile.txt"
  rm -f "$dir/ramp.json.full"
}
[ -n "${ISOBENCH_FAIR_RAMP_PROFILE:-}" ] && ramp_profile

[ "${ISOBENCH_FAIR_BALANCED:-1}" = 1 ] && run_campaign balanced "$TRIALS" paired "$HUMAN_PATH" "$HUMAN_ARGS"
# A/A: the human arm is the very same server (path and args) as the baseline; the batched
# server, so that measurements are short and three policies fit the budget.
for p in $POLICIES; do
  AA_ARGS=$HUMAN_ARGS BASE_PATH_SAVED=$BASE_PATH
  BASE_PATH=$HUMAN_PATH BASE_ARGS=$AA_ARGS run_campaign "aa-$p" "$AA_TRIALS" "$p" "$HUMAN_PATH" "$AA_ARGS"
  BASE_PATH=$BASE_PATH_SAVED
done

if [ -n "${ISOBENCH_FAIR_DURATION:-}" ]; then
  LOAD_SAVED=$LOAD
  LOAD="$LOAD
duration = \"$ISOBENCH_FAIR_DURATION\"
ramp_up = \"${ISOBENCH_FAIR_RAMP_UP:-5s}\""
  BASE_PATH_SAVED=$BASE_PATH
  BASE_PATH=$HUMAN_PATH BASE_ARGS=$HUMAN_ARGS run_campaign aa-timed "$AA_TRIALS" exclusive "$HUMAN_PATH" "$HUMAN_ARGS"
  BASE_PATH=$BASE_PATH_SAVED LOAD=$LOAD_SAVED
fi

# --- summary ----------------------------------------------------------------------------------
python3 - "$WORK" > "$OUT/summary.txt" <<'PYEOF'
import csv, json, pathlib, re, sys
work = pathlib.Path(sys.argv[1])
for d in sorted(p for p in work.iterdir() if (p / "m.toml").exists()):
    print(f"== {d.name}")
    rep = d / "report.json"
    if not rep.exists():
        print("  no report"); continue
    r = json.loads(rep.read_text()); q = r["quality"]
    f2 = lambda v: "-" if v is None else f"{v:+.2f}"
    cv = lambda v: "-" if v is None else f"{100 * v:.2f} %"
    for c in r["commits"]:
        for p in c["points"]:
            for cmp in p["comparisons"]:
                m = cmp["metrics"].get("output_throughput")
                if m:
                    print(f"  {cmp['candidate']} vs {cmp['reference']}: {m['diff_pct']:+.2f} % [{f2(m['ci_low_pct'])}, {f2(m['ci_high_pct'])}] → {m['verdict']}")
    print("  placement from the results (arm: trials per GPU):")
    for a in q["arms"]:
        print(f"    {a['arm']}: {a['gpus']}  CV {cv(a['cv'])}")
    for t in q["trials"]:
        print(f"    {t['arm']}#{t['trial']} on {'+'.join(t['gpus'])}: window {t['window_s']:.2f} s, {t['completed']} completed, overlaps {t['overlaps']}, isolate {t['isolate']}")
    for g in q["gpu_effects"]:
        print(f"  GPU effect {g['gpu']}: {g['effect_pct']:+.2f} % [{f2(g['ci_low_pct'])}, {f2(g['ci_high_pct'])}] over {g['trials']} trials")
    f = r["summary"]["fdr"]
    print(f"  FDR ({f['method']}): {f['discoveries']} of {f['comparisons']}")
    for w in q["warnings"]:
        print(f"  warning: {w}")
    # nvidia-smi samples: GPU UUID per server pid, named by the pid records' addresses.
    s = work / f"samples-{d.name}"
    names = {}
    if (s / "servers.csv").exists():
        # The address has commas of its own: split off time and pid only.
        for line in open(s / "servers.csv").read().splitlines()[1:]:
            parts = line.split(",", 2)
            if len(parts) < 3: continue
            m = re.search(r"arm=([^,\]]+),trial=(\d+)", parts[2])
            if m and parts[1].strip():
                names[parts[1].strip()] = f"{m.group(1)}#{m.group(2)}"
    seen = {}
    if (s / "compute-apps.csv").exists():
        for row in csv.reader(open(s / "compute-apps.csv")):
            if len(row) < 3 or row[0] == "time": continue
            pid = row[2].strip(); arm = names.get(pid, f"pid {pid}")
            seen.setdefault(arm, set()).add(row[1].strip())
    if seen:
        print("  nvidia-smi samples (server: GPU UUIDs seen):")
        for k in sorted(seen):
            print(f"    {k}: {', '.join(sorted(seen[k]))}")
        per_arm = {}
        for k, g in seen.items():
            per_arm.setdefault(k.split("#")[0], set()).update(g)
        print("  per arm: " + "; ".join(f"{a} on {len(g)} GPU(s)" for a, g in sorted(per_arm.items())))
    else:
        print("  nvidia-smi samples: none (no nvidia-smi: simulator rehearsal)")
PYEOF
cat "$OUT/summary.txt"
[ -s "$PROBLEMS" ] && { echo "problems:"; cat "$PROBLEMS"; } | tee -a "$OUT/summary.txt"
# Trimmed archive: no per-request arrays, server logs cut to their last 20 lines.
for log_file in "$WORK"/*/.isobench/attempts/*/*/server.log; do
  [ -f "$log_file" ] && { tail -n 20 "$log_file" > "$log_file.tail"; rm -f "$log_file"; }
done
tar -czf "$OUT/fair.tar.gz" -C "$WORK" --exclude='bin' --exclude='srv' . 2>/dev/null
log "done in $(( $(date +%s) - START ))s; results in $OUT ($(du -sh "$OUT" | cut -f1))"
