#!/usr/bin/env bash
# Measures an agent patch by hand, the way isobench's process runtime runs it: the baseline
# venv's Python with PYTHONPATH pointing at a patched private copy of its `vllm` package.
# Servers alternate (baseline, patched, baseline, patched, ...); each gets RUNS runs of
# `isobench bench` with the example's load. Per run it prints the client's figures and the
# CPU seconds each server process used during that client's run (API server, engine core,
# worker; test and warm-up requests included).
#
#   examples/patches/vllm-cpu/measure.sh [PATCH]     # default: the example's patch
#   ROUNDS=3 RUNS=5 OUT=/tmp/measure examples/patches/vllm-cpu/measure.sh
#
# Needs scripts/setup-vllm-cpu.sh (cached venvs and model) and target/release/isobench.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
PATCH=$(realpath "${1:-$HERE/cpu-shm-reader-sleep.diff}")
CACHE=${ISOBENCH_CACHE_DIR:-$HOME/.cache/isobench}
VENV=${VENV:-$CACHE/vllm-cpu/venv-0.31.0}
MODEL=${MODEL:-$CACHE/models/tiny-llama}
ISOBENCH=${ISOBENCH:-$REPO/target/release/isobench}
ROUNDS=${ROUNDS:-3} RUNS=${RUNS:-5} PORT=${PORT:-8044}
OUT=${OUT:-$(mktemp -d /tmp/isobench-measure.XXXXXX)}
mkdir -p "$OUT"

# A private copy of the installed package, patched (what `image.patch` does for the process runtime).
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
COPY="$OUT/patched"
rm -rf "$COPY" && mkdir -p "$COPY"
cp -a "$SITE/vllm" "$COPY/"
git -C "$COPY" apply --verbose "$PATCH" 2>&1 | sed 's/^/[patch] /'

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1

# CPU seconds of the server's processes (API server, engine core, worker).
group_cpu() {
  python3 - "$1" <<'EOF'
import os, sys
# The API server leads the group; the engine core is its child and the worker the engine's
# (vLLM renames them VLLM::EngineCore / VLLM::Worker only once they are up, so go by parent).
# CPU time: the sum over each process's threads of schedstat's run time (ns; utime and stime
# in /proc/PID/stat count whole clock ticks).
pgid = int(sys.argv[1])
procs = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) != pgid or b"resource_tracker" in cmdline:
            continue
        ns = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            ns += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    except OSError:
        continue  # exited meanwhile
    procs[int(pid)] = (int(fields[1]), ns / 1e9)
used = {"api": procs.get(pgid, (0, 0.0))[1], "engine": 0.0, "worker": 0.0}
engines = {pid for pid, (ppid, _) in procs.items() if ppid == pgid}
for pid, (ppid, cpu) in procs.items():
    if pid in engines:
        used["engine"] += cpu
    elif ppid in engines:
        used["worker"] += cpu
print(" ".join(f"{k}={v:.2f}" for k, v in used.items()))
EOF
}

# Requests the server finished, from its own counter: proves a CPU window covered one client run.
finished_requests() {
  curl -fsS "http://127.0.0.1:$PORT/metrics" | awk '/^vllm:request_success_total/ {n += $2} END {print n + 0}'
}

SERVER=
stop_server() { [ -n "$SERVER" ] && kill -TERM -"$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; SERVER=; }
trap stop_server EXIT
trap "exit 130" INT TERM   # run the EXIT trap on Ctrl-C and kill too

printf '%-9s %-5s %9s %9s %9s  %s\n' arm run 'tok/s' 'TTFT ms' 'TPOT ms' 'server CPU s during the run'
for round in $(seq 1 "$ROUNDS"); do
  for arm in baseline agent; do
    pythonpath=; [ "$arm" = agent ] && pythonpath=$COPY
    PYTHONPATH=$pythonpath setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
      --model "$MODEL" --served-model-name tiny --host 127.0.0.1 --port "$PORT" \
      --dtype float32 --max-model-len 2048 --max-num-seqs 16 --enforce-eager \
      > "$OUT/server-$arm-$round.log" 2>&1 &
    SERVER=$!
    until curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; do
      kill -0 "$SERVER" 2>/dev/null || { tail -20 "$OUT/server-$arm-$round.log"; exit 1; }
      sleep 1
    done
    if [ "$arm" = agent ]; then
      grep -q "$COPY" <(PYTHONPATH=$COPY "$VENV/bin/python" -c 'import vllm; print(vllm.__file__)') \
        || { echo "the patched copy is not the one imported"; exit 1; }
    fi
    for run in $(seq 1 "$RUNS"); do
      name="$arm-$round-$run"
      before=$(group_cpu "$SERVER") served_before=$(finished_requests)
      "$ISOBENCH" bench --base-url "http://127.0.0.1:$PORT" --model "$MODEL" --served-model-name tiny \
        --random-input-len 128 --random-output-len 32 --num-prompts 50 --max-concurrency 8 \
        --ignore-eos --temperature 0 --seed 0 --num-warmups 10 --disable-tqdm \
        --save-result --result-dir "$OUT" --result-filename "$name.json" > "$OUT/$name.log" 2>&1
      after=$(group_cpu "$SERVER") served=$(( $(finished_requests) - served_before ))
      python3 - "$OUT/$name.json" "$arm" "$round.$run" "$before" "$after" "$served" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
b = dict(kv.split("=") for kv in sys.argv[4].split())
a = dict(kv.split("=") for kv in sys.argv[5].split())
cpu = " ".join(f"{k}={float(a[k]) - float(b[k]):.2f}" for k in ("api", "engine", "worker"))
# the client sends 1 test request, 10 warm-up requests and 50 measured ones
check = "" if sys.argv[6] == "61" else f"  (window saw {sys.argv[6]} requests, not 61)"
print(f"{sys.argv[2]:<9} {sys.argv[3]:<5} {d['output_throughput']:9.1f} {d['mean_ttft_ms']:9.1f} "
      f"{d['mean_tpot_ms']:9.2f}  {cpu}{check}")
EOF
    done
    stop_server
  done
done
echo "results in $OUT"
