#!/usr/bin/env bash
# The whole real-GPU run of examples/gpu-transformers.toml in one go, on a machine with NVIDIA
# GPUs, PyTorch and transformers but no Docker and no network (see docs/gpu.md):
#
#   scripts/gpu/run.sh                      # parallel phase: apply, kill -9 mid-way, resume, report
#   scripts/gpu/run.sh --phase serial       # the same campaign with --max-parallel 1 (serial makespan)
#   scripts/gpu/run.sh --phase both         # both, one after the other, within the time budget
#
# Phases: preflight (binary, Python, GPUs) → wheels into /tmp/site → model → plan → apply in the
# background while a sampler records nvidia-smi every second → kill -9 once N measurements are
# done → plan (shows what is incomplete) → apply again (resume) → report → summary → archive.
# Every phase is timed. Everything lands under $OUT (default /tmp/isobench-gpu-out), at most 3 files:
#   summary.txt                   the compact summary printed at the end
#   run.log                       everything this script printed
#   isobench-gpu-<phase>.tar.gz   manifest, apply/plan logs, sampler CSVs, state directory
#                                 (journal, server logs, result.json), report (md/json/csv/html,
#                                 seed-compatible files), environment
# The script never stops at a failed step: it records it, goes on, and always writes the archive.
#
# Inputs (all optional; defaults fit the GPU machine):
#   ISOBENCH_BIN                  isobench binary (default .carry/isobench, else target/release/isobench)
#   ISOBENCH_GPU_PYTHON_PREFIX    installation with torch + transformers (default /opt/torch/.venv
#                                 if it has bin/python3, else the prefix of `python3`)
#   ISOBENCH_GPU_WHEELS           wheel folder (default .whl, from scripts/gpu/fetch-wheels.sh)
#   ISOBENCH_GPU_BUDGET_S         wall-clock budget of the whole script (default 540 s)
#   ISOBENCH_GPU_KILL_AFTER       kill -9 the first apply after this many measurements (default 3; 0: no kill)
#   ISOBENCH_GPU_DECLARE          declare GPUs (`0,1`) instead of detecting them (CPU dry runs)
#   ISOBENCH_GPU_MODEL_ARGS       extra build-model.py arguments (CPU dry runs: smaller sizes)
#   ISOBENCH_GPU_SERVE_ARGS       extra server options, read by the manifest (default caps the KV cache)
#   ISOBENCH_GPU_AGENT_ARGS       TOML array replacing the agent arm's args
#   ISOBENCH_GPU_NUM_PROMPTS ISOBENCH_GPU_CONCURRENCY ISOBENCH_GPU_INPUT_LEN ISOBENCH_GPU_OUTPUT_LEN
#   ISOBENCH_GPU_WARMUP ISOBENCH_GPU_REPEATS ISOBENCH_GPU_TIMEOUT      load overrides
set -uo pipefail

PHASE=parallel
while [ $# -gt 0 ]; do
  case "$1" in
    --phase) PHASE=${2:-}; shift 2 ;;
    --phase=*) PHASE=${1#--phase=}; shift ;;
    --serial) PHASE=both; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PHASE" in parallel|serial|both) ;; *) echo "--phase must be parallel, serial or both" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
START=$(date +%s)
BUDGET=${ISOBENCH_GPU_BUDGET_S:-540}
OUT=${OUT:-/tmp/isobench-gpu-out}
WORK=/tmp/isobench-gpu            # the manifest's model path lives here too
MODEL=$WORK/model
SITE=/tmp/site                    # the manifest's PYTHONPATH
KILL_AFTER=${ISOBENCH_GPU_KILL_AFTER:-3}
WHEELS=${ISOBENCH_GPU_WHEELS:-$ROOT/.whl}
RESERVE=45                        # seconds kept for report, summary and archive
mkdir -p "$OUT" "$WORK"
# A fresh work directory for every call (the model is kept when its arguments match).
find "$WORK" -mindepth 1 -maxdepth 1 ! -name model -exec rm -rf {} +
exec 3>&1 4>&2
exec > >(tee -a "$OUT/run.log") 2>&1
TEE_PID=$!

log() { printf '[gpu-run %s +%3ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - START ))" "$*"; }
remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }
TIMINGS=$WORK/timings.tsv
: > "$TIMINGS"
phase_begin() { PHASE_NAME=$1; PHASE_T0=$(date +%s.%N); log "== $1"; }
phase_end() {   # phase_end STATUS
  local dt; dt=$(awk -v a="$PHASE_T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  printf '%s\t%s\t%s\n' "$PHASE_NAME" "$dt" "${1:-ok}" >> "$TIMINGS"
  log "-- $PHASE_NAME: ${1:-ok} in ${dt}s"
}
PROBLEMS=$WORK/problems.txt
: > "$PROBLEMS"
problem() { log "PROBLEM: $*"; echo "$*" >> "$PROBLEMS"; }

SAMPLER_PID=""
stop_sampler() { [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=""; }
trap 'stop_sampler' EXIT

# ---------------------------------------------------------------------------------------------
phase_begin preflight
BIN_SRC=${ISOBENCH_BIN:-}
[ -z "$BIN_SRC" ] && for c in "$ROOT/.carry/isobench" "$ROOT/target/release/isobench"; do
  [ -f "$c" ] && { BIN_SRC=$c; break; }
done
if [ -z "$BIN_SRC" ] || [ ! -f "$BIN_SRC" ]; then
  problem "no isobench binary (.carry/isobench or ISOBENCH_BIN)"; phase_end failed; exit 1
fi
mkdir -p "$WORK/bin"
cp -f "$BIN_SRC" "$WORK/bin/isobench" && chmod +x "$WORK/bin/isobench"
BIN=$WORK/bin/isobench
if ! "$BIN" --version > "$WORK/isobench-version.txt" 2>&1; then
  cat "$WORK/isobench-version.txt"
  problem "isobench does not run here (wrong architecture or glibc?)"; phase_end failed; exit 1
fi
if [ -z "${ISOBENCH_GPU_PYTHON_PREFIX:-}" ]; then
  for prefix in /opt/torch/.venv "$(python3 -c 'import sys; print(sys.prefix)' 2>/dev/null)"; do
    if [ -n "$prefix" ] && "$prefix/bin/python3" -c 'import torch, transformers' 2>/dev/null; then
      ISOBENCH_GPU_PYTHON_PREFIX=$prefix; break
    fi
  done
  ISOBENCH_GPU_PYTHON_PREFIX=${ISOBENCH_GPU_PYTHON_PREFIX:-/opt/torch/.venv}
fi
export ISOBENCH_GPU_PYTHON_PREFIX
PY=$ISOBENCH_GPU_PYTHON_PREFIX/bin/python3
if [ ! -x "$PY" ]; then problem "no Python at $PY"; phase_end failed; exit 1; fi
GPUS_ARG=()
[ -n "${ISOBENCH_GPU_DECLARE:-}" ] && GPUS_ARG=(--gpus "$ISOBENCH_GPU_DECLARE")
HAVE_SMI=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && HAVE_SMI=1
{
  echo "date: $(date -Is)"; echo "host: $(hostname) $(uname -srm)"; echo "cpus: $(nproc)"
  echo "isobench: $(cat "$WORK/isobench-version.txt") ($BIN_SRC)"
  echo "python prefix: $ISOBENCH_GPU_PYTHON_PREFIX"
  "$PY" -c 'import sys, torch, transformers, tokenizers
print("python", sys.version.split()[0], "| torch", torch.__version__, "| transformers", transformers.__version__, "| tokenizers", tokenizers.__version__)
print("cuda available", torch.cuda.is_available(), "| devices", torch.cuda.device_count())' 2>&1
  if [ $HAVE_SMI = 1 ]; then
    nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total,driver_version --format=csv
    nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv
  else
    echo "nvidia-smi: not available"
  fi
  echo "phase: $PHASE | budget: ${BUDGET}s | kill after: $KILL_AFTER | declared GPUs: ${ISOBENCH_GPU_DECLARE:-none}"
} > "$WORK/env.txt" 2>&1
cat "$WORK/env.txt"
if [ $HAVE_SMI = 0 ] && [ ${#GPUS_ARG[@]} = 0 ]; then
  problem "no nvidia-smi and no ISOBENCH_GPU_DECLARE: every session would fail for want of a GPU"
fi
phase_end ok

# ---------------------------------------------------------------------------------------------
# Wheels: FastAPI, uvicorn, pydantic, openai... into /tmp/site. A wheel whose package is already
# installed at the same or a newer version is left out, so /tmp/site (first on PYTHONPATH) never
# shadows a newer copy that other installed packages rely on (an old typing_extensions breaks a
# newer anyio). If the result cannot serve, everything is installed.
phase_begin wheels
serve_check() {
  PYTHONPATH=$SITE "$PY" -c '
from transformers.utils.import_utils import is_serve_available
assert is_serve_available(), "fastapi, uvicorn, pydantic or openai missing"
import transformers.cli.serve, transformers.cli.serving.server, transformers.cli.serving.chat_completion
import fastapi, uvicorn, openai, pydantic
print("serve stack: fastapi", fastapi.__version__, "| uvicorn", uvicorn.__version__, "| pydantic", pydantic.VERSION, "| openai", openai.__version__)'
}
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  problem "no wheels in $WHEELS (run scripts/gpu/fetch-wheels.sh and carry .whl)"
fi
mapfile -t NEEDED < <("$PY" - "$WHEELS" <<'PYEOF'
import importlib.metadata as md, pathlib, re, sys
def key(v):  # numeric release tuple; enough for these packages' plain versions
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:4])
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    try:
        have = md.version(name.replace("_", "-"))
    except md.PackageNotFoundError:
        have = None
    if have is not None and key(have) >= key(version):
        print(f"skip {whl.name} (installed {have})", file=sys.stderr)
    else:
        print(whl)
PYEOF
)
rm -rf "$SITE"; mkdir -p "$SITE"
install_wheels() {
  [ $# -eq 0 ] && return 0
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@" && return 0
  # No pip there: these wheels are pure archives, unpacking them is an install.
  log "pip failed; unpacking the wheels instead"
  "$PY" -c 'import sys, zipfile
for w in sys.argv[2:]: zipfile.ZipFile(w).extractall(sys.argv[1])' "$SITE" "$@"
}
if install_wheels "${NEEDED[@]}" && serve_check; then
  phase_end ok
else
  log "retrying with every wheel"
  rm -rf "$SITE"; mkdir -p "$SITE"
  if install_wheels "$WHEELS"/*.whl && serve_check; then phase_end ok; else
    problem "transformers serve cannot import its server stack"; phase_end failed
  fi
fi

# ---------------------------------------------------------------------------------------------
phase_begin model
# shellcheck disable=SC2086 # word splitting of the extra arguments is intended
MODEL_ARGS=${ISOBENCH_GPU_MODEL_ARGS:-}
if [ -f "$MODEL/.complete" ] && [ "$(cat "$MODEL/.complete")" = "$MODEL_ARGS" ]; then
  log "model already built at $MODEL (same arguments)"
  cp "$MODEL/.info.json" "$WORK/model-info.json" 2>/dev/null; phase_end cached
else
  rm -rf "$MODEL"
  # shellcheck disable=SC2086
  if "$PY" "$ROOT/scripts/gpu/build-model.py" "$MODEL" $MODEL_ARGS > "$WORK/model-info.json" 2> "$WORK/model-build.log"; then
    printf '%s' "$MODEL_ARGS" > "$MODEL/.complete"
    cp "$WORK/model-info.json" "$MODEL/.info.json"
    cat "$WORK/model-info.json"; phase_end ok
  else
    tail -20 "$WORK/model-build.log"; problem "model build failed"; phase_end failed
  fi
fi

# ---------------------------------------------------------------------------------------------
# The manifest, with the load overrides applied, next to its results and state.
MANIFEST=$WORK/gpu-transformers.toml
"$PY" - "$ROOT/examples/gpu-transformers.toml" "$MANIFEST" <<'PYEOF'
import os, re, sys
text = open(sys.argv[1]).read()
def setting(key, env, quote=False, section=None):
    value = os.environ.get(env)
    if not value:
        return
    global text
    value = f'"{value}"' if quote else value
    pattern = re.compile(rf"^({re.escape(key)}\s*=\s*)[^#\n]*?(\s*(#.*)?)$", re.M)
    if section:  # replace inside one inline table value, e.g. dataset = { ..., input_len = 128 }
        pattern = re.compile(rf"({re.escape(key)}\s*=\s*)\d+")
    text, n = pattern.subn(lambda m: m.group(1) + value + (m.group(2) if not section else ""), text, count=1)
    if n != 1:
        sys.exit(f"cannot override `{key}` in the manifest")
    print(f"override {key} = {value}")
setting("num_prompts", "ISOBENCH_GPU_NUM_PROMPTS")
setting("concurrency", "ISOBENCH_GPU_CONCURRENCY")
setting("warmup", "ISOBENCH_GPU_WARMUP")
setting("repeats", "ISOBENCH_GPU_REPEATS")
setting("timeout", "ISOBENCH_GPU_TIMEOUT", quote=True)
setting("input_len", "ISOBENCH_GPU_INPUT_LEN", section="dataset")
setting("output_len", "ISOBENCH_GPU_OUTPUT_LEN", section="dataset")
agent = os.environ.get("ISOBENCH_GPU_AGENT_ARGS")
if agent:
    text, n = re.subn(r'(name = "agent-[^"]*"\n(?:[^\[\n][^\n]*\n)*?)args = \[[^\]]*\]',
                      lambda m: m.group(1) + "args = " + agent, text, count=1)
    if n != 1:
        sys.exit("cannot override the agent arm's args")
    print(f"override agent args = {agent}")
open(sys.argv[2], "w").write(text)
PYEOF
[ -f "$MANIFEST" ] || { problem "could not write the manifest"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Sampler: every second, which processes use which GPU, each GPU's memory, and the server pids the
# state directory records (evidence of pinning, of parallel servers, and of orphans after kill -9).
start_sampler() {   # start_sampler TAG STATE_DIR
  local tag=$1 state=$2 dir=$WORK/samples-$1
  mkdir -p "$dir"
  echo "time,gpu_uuid,pid,process_name,used_memory" > "$dir/compute-apps.csv"
  echo "time,index,uuid,name,memory.used" > "$dir/gpus.csv"
  echo "time,pid,record" > "$dir/server-pids.csv"
  (
    while :; do
      ts=$(date +%s.%N)
      if [ $HAVE_SMI = 1 ]; then
        nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader 2>/dev/null \
          | sed "s/^/$ts, /" >> "$dir/compute-apps.csv"
        nvidia-smi --query-gpu=index,uuid,name,memory.used --format=csv,noheader 2>/dev/null \
          | sed "s/^/$ts, /" >> "$dir/gpus.csv"
      fi
      for rec in "$state"/processes/*.json; do
        [ -e "$rec" ] && echo "$ts, $(basename "$rec" .json | cut -d- -f1), $(basename "$rec")" >> "$dir/server-pids.csv"
      done
      sleep 1
    done
  ) > /dev/null 2>&1 &
  SAMPLER_PID=$!
  log "sampler ($tag) running as pid $SAMPLER_PID"
}

measures_done() {   # measures_done STATE_DIR
  grep -F '"addr":"measure[' "$1/journal.jsonl" 2>/dev/null | grep -cF '"event":"done"'
}
measures_in_flight() {   # measures_in_flight STATE_DIR: started and not yet done or failed
  local started ended
  started=$(grep -F '"addr":"measure[' "$1/journal.jsonl" 2>/dev/null | grep -cF '"event":"started"')
  ended=$(grep -F '"addr":"measure[' "$1/journal.jsonl" 2>/dev/null | grep -cE '"event":"(done|failed)"')
  echo $(( started - ended ))
}

run_apply() {   # run_apply LOG STATE [extra apply args...]: apply under the remaining budget
  local logf=$1 state=$2; shift 2
  local left=$(( $(remaining) - RESERVE ))
  if [ $left -lt 30 ]; then problem "no time left for apply ($logf)"; return 124; fi
  log "isobench apply $* (at most ${left}s) → $(basename "$logf")"
  timeout -k 30 -s INT "$left" "$BIN" apply --plain --state "$state" "${GPUS_ARG[@]}" "$@" "$MANIFEST" > "$logf" 2>&1 &
  local tpid=$! last
  last=$(date +%s)
  while kill -0 "$tpid" 2>/dev/null; do
    sleep 1
    if [ $(( $(date +%s) - last )) -ge 30 ]; then last=$(date +%s); progress "$state"; fi
  done
  wait "$tpid"
}

progress() {   # progress STATE: one line on how far the campaign is
  log "   $(measures_done "$1") measurements done, $(measures_in_flight "$1") running; last: $(tail -n 1 "$(ls -t "$WORK"/apply-*.log 2>/dev/null | head -1)" 2>/dev/null | cut -c1-100)"
}

report() {   # report TAG STATE
  local tag=$1 state=$2 dir=$WORK/report-$1
  rm -rf "$dir"; mkdir -p "$dir"
  "$BIN" report "$MANIFEST" --state "$state" --out "$dir" --seed-results "$dir" --color never \
    > "$dir/report.txt" 2> "$dir/report.err" || problem "isobench report ($tag) failed: $(tail -3 "$dir/report.err")"
}

phase_parallel() {
  local state=$WORK/state-parallel
  rm -rf "$state" "$WORK/samples-parallel"
  phase_begin plan
  "$BIN" plan --detailed-exitcode "$MANIFEST" --state "$state" > "$WORK/plan-parallel.txt" 2>&1
  local rc=$?
  tail -3 "$WORK/plan-parallel.txt"
  # 2 = changes pending, the expected answer for a fresh state directory.
  if [ $rc = 2 ]; then phase_end ok; else problem "plan exited with $rc"; phase_end "failed ($rc)"; fi

  phase_begin apply-parallel
  start_sampler parallel "$state"
  local t0; t0=$(date +%s.%N)
  echo "apply_start $t0" > "$WORK/parallel-times.txt"
  local left=$(( $(remaining) - RESERVE ))
  "$BIN" apply --plain --state "$state" "${GPUS_ARG[@]}" "$MANIFEST" > "$WORK/apply-parallel-1.log" 2>&1 &
  local apid=$! killed=0
  log "isobench apply running as pid $apid (at most ${left}s)"
  # Budget watchdog: Ctrl-C (isobench stops its servers), then SIGKILL if that hangs. It polls
  # rather than sleeping once, so it ends with apply and leaves no process behind.
  (
    deadline=$(( $(date +%s) + left ))
    while kill -0 "$apid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 1; done
    if kill -0 "$apid" 2>/dev/null; then
      kill -INT "$apid"
      for _ in $(seq 1 30); do kill -0 "$apid" 2>/dev/null || exit 0; sleep 1; done
      kill -KILL "$apid" 2>/dev/null
    fi
  ) > /dev/null 2>&1 &
  local watchdog=$!
  # Kill once KILL_AFTER measurements are done, preferably while another one is running (so the
  # resume must redo an interrupted measurement), but no later than 60 s after that.
  local reached="" last
  last=$(date +%s)
  while kill -0 "$apid" 2>/dev/null; do
    if [ $(( $(date +%s) - last )) -ge 30 ]; then last=$(date +%s); progress "$state"; fi
    if [ "$KILL_AFTER" -gt 0 ] && [ "$(measures_done "$state")" -ge "$KILL_AFTER" ]; then
      [ -z "$reached" ] && reached=$(date +%s)
      if [ "$(measures_in_flight "$state")" -gt 0 ] || [ $(( $(date +%s) - reached )) -ge 60 ]; then
        kill -9 "$apid"; killed=1
        echo "kill $(date +%s.%N)" >> "$WORK/parallel-times.txt"
        log "kill -9 isobench apply (pid $apid): $(measures_done "$state") measurements done, $(measures_in_flight "$state") in flight"
        break
      fi
    fi
    sleep 0.3
  done
  wait "$apid" 2>/dev/null; local rc1=$?
  kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
  log "first apply exited with $rc1 (137 = killed)"
  if [ $killed = 1 ]; then
    # Evidence: the killed run's servers are still running, recorded in the state directory.
    sleep 2
    {
      echo "# after kill -9: server pid records in the state directory"
      ls "$state/processes" 2>/dev/null
      echo "# their process groups"
      for rec in "$state"/processes/*.json; do
        [ -e "$rec" ] || continue
        pid=$(basename "$rec" .json | cut -d- -f1)
        ps -e -o pid=,pgid=,etimes=,cmd= 2>/dev/null | awk -v g="$pid" '$2 == g' | cut -c1-160
      done
      if [ $HAVE_SMI = 1 ]; then
        echo "# nvidia-smi"; nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv
      fi
    } > "$WORK/after-kill.txt" 2>&1
    cat "$WORK/after-kill.txt"
    "$BIN" plan "$MANIFEST" --state "$state" > "$WORK/plan-after-kill.txt" 2>&1
    tail -4 "$WORK/plan-after-kill.txt"
    echo "resume_start $(date +%s.%N)" >> "$WORK/parallel-times.txt"
    run_apply "$WORK/apply-parallel-2.log" "$state"
    local rc2=$?
    log "resumed apply exited with $rc2"
    [ $rc2 = 0 ] || problem "resumed apply exited with $rc2 (see apply-parallel-2.log)"
  else
    [ "$KILL_AFTER" -gt 0 ] && problem "apply finished before $KILL_AFTER measurements were done: no kill/resume"
    [ $rc1 = 0 ] || problem "apply exited with $rc1 (see apply-parallel-1.log)"
  fi
  echo "apply_end $(date +%s.%N)" >> "$WORK/parallel-times.txt"
  sleep 1; stop_sampler
  phase_end ok
  phase_begin report-parallel
  report parallel "$state"
  phase_end ok
}

phase_serial() {
  local state=$WORK/state-serial
  rm -rf "$state" "$WORK/samples-serial"
  phase_begin apply-serial
  start_sampler serial "$state"
  echo "apply_start $(date +%s.%N)" > "$WORK/serial-times.txt"
  run_apply "$WORK/apply-serial.log" "$state" --max-parallel 1
  local rc=$?
  echo "apply_end $(date +%s.%N)" >> "$WORK/serial-times.txt"
  echo "apply_rc $rc" >> "$WORK/serial-times.txt"
  [ $rc = 0 ] || problem "serial apply exited with $rc (124/130: cut by the time budget)"
  sleep 1; stop_sampler
  phase_end "$([ $rc = 0 ] && echo ok || echo "exit $rc")"
  phase_begin report-serial
  report serial "$state"
  phase_end ok
}

case "$PHASE" in
  parallel) phase_parallel ;;
  serial) phase_serial ;;
  both) phase_parallel; phase_serial ;;
esac

# ---------------------------------------------------------------------------------------------
phase_begin teardown-check
# No server may outlive apply; GPUs should read idle again.
for rec in "$WORK"/state-*/processes/*.json; do
  [ -e "$rec" ] || continue
  pid=$(basename "$rec" .json | cut -d- -f1)
  if kill -0 "$pid" 2>/dev/null; then
    problem "server pid $pid ($rec) still running after apply; stopping its group"
    kill -TERM -- "-$pid" 2>/dev/null; sleep 3; kill -KILL -- "-$pid" 2>/dev/null
  fi
done
if [ $HAVE_SMI = 1 ]; then
  nvidia-smi --query-gpu=index,memory.used --format=csv > "$WORK/gpus-at-end.csv" 2>&1
  cat "$WORK/gpus-at-end.csv"
fi
phase_end ok

phase_begin summary
"$PY" "$ROOT/scripts/gpu/summarize.py" "$WORK" --phase "$PHASE" > "$OUT/summary.txt" 2> "$WORK/summarize.err" \
  || problem "summarize.py failed: $(tail -3 "$WORK/summarize.err")"
cp "$OUT/summary.txt" "$WORK/summary.txt" 2>/dev/null
phase_end ok

# ---------------------------------------------------------------------------------------------
# One archive per call: everything but the model weights, the binary and the wheels.
ARCHIVE=$OUT/isobench-gpu-$PHASE.tar.gz
tar -czf "$ARCHIVE" -C "$(dirname "$WORK")" --exclude='*.safetensors' --exclude="$(basename "$WORK")/bin" \
  "$(basename "$WORK")" 2>/dev/null || problem "tar failed"
log "archive: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
echo
cat "$OUT/summary.txt" 2>/dev/null
if [ -s "$PROBLEMS" ]; then
  echo; echo "PROBLEMS:"; sed 's/^/  /' "$PROBLEMS"
fi
log "done in $(( $(date +%s) - START ))s"
# Let tee write the last lines before the caller collects $OUT.
exec 1>&3 2>&4 3>&- 4>&-
for _ in $(seq 1 50); do kill -0 "$TEE_PID" 2>/dev/null || break; sleep 0.1; done
[ -s "$PROBLEMS" ] && exit 1
exit 0
