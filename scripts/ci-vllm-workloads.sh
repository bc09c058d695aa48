#!/usr/bin/env bash
# Workloads on real vLLM (CPU): examples/vllm-cpu-workloads.toml planned, applied, reported, then
# checked — a ShareGPT file and a custom JSONL made here, a 3-point sweep and a concurrency search
# on the ShareGPT prompts, and prefix-repetition groups that must move vLLM's prefix-cache hit
# counter.
#
#   scripts/ci-vllm-workloads.sh        # from the repository root; scripts/test.sh runs it
#
# Checks (the Python at the end):
#   - every measurement done, every request of it successful;
#   - sharegpt: 24 requests per point; the prompts are those of the file (lengths vary);
#   - custom: each request's output length is one the JSONL asked for, more than one distinct;
#   - sweep: three fixed points measured, throughput rising from concurrency 1 to 8;
#   - search: at most its stated probe budget, probes consistent with its answer (every probe at
#     or below `found` passed, the one at the bracket's top failed), the report's curve and its
#     `slo_max_concurrency` metric;
#   - prefix repetition: vLLM's prefix-cache hits counted in the window (> 50 % of queried tokens);
#   - goodput and the configured p90 in the report.
# Time on 2 cores: 3 server sessions of ~45 s plus the runs: ~3-4 min with cached venvs.
# Environment: ISOBENCH_CACHE_DIR, ISOBENCH (binary; default: cargo build --release), WORK.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export ISOBENCH_CACHE_DIR=${ISOBENCH_CACHE_DIR:-$HOME/.cache/isobench}
WORK=${WORK:-$(mktemp -d /tmp/isobench-vllm-workloads.XXXXXX)}
mkdir -p "$WORK"
T0=$(date +%s)
log() { printf '[ci-vllm-workloads %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

log "setup (cached under $ISOBENCH_CACHE_DIR)"
scripts/setup-vllm-cpu.sh
if [ -z "${ISOBENCH:-}" ]; then
  cargo build --release --quiet
  ISOBENCH=${CARGO_TARGET_DIR:-$REPO/target}/release/isobench
fi
cp examples/vllm-cpu-workloads.toml "$WORK/"
# The test makes its dataset files (the example's own copies are the same bytes).
python3 scripts/vllm-cpu/make_workload_data.py "$WORK/data"
MANIFEST=$WORK/vllm-cpu-workloads.toml

log "plan"
"$ISOBENCH" plan "$MANIFEST" | tee "$WORK/plan.txt"
grep -q "search=concurrency in \[1, 16\] in flight against TTFT ≤ 100 ms (99 % of requests): at most 6 probes of 24 requests" "$WORK/plan.txt" \
  || { log "plan does not state the search's probe budget"; exit 1; }

log "apply"
"$ISOBENCH" apply --plain "$MANIFEST" > "$WORK/apply.log" 2>&1 || { tail -40 "$WORK/apply.log"; exit 1; }

log "report"
"$ISOBENCH" report "$MANIFEST" --out "$WORK/report" > "$WORK/report.txt"
"$ISOBENCH" report "$MANIFEST" --format json > "$WORK/report.json"

log "checks"
python3 - "$WORK/.isobench" "$WORK/report.json" "$WORK/data" <<'EOF'
import json, sys
from pathlib import Path

state, report, data = Path(sys.argv[1]), json.load(open(sys.argv[2])), Path(sys.argv[3])
problems = []
latest = {}
for line in (state / "journal.jsonl").read_text().splitlines():
    try:
        e = json.loads(line)
    except ValueError:
        continue
    latest[e["addr"]] = e

def result(addr):
    e = latest[addr]
    path = next(p for p in e["outputs"] if p.endswith("result.json"))
    return json.loads((state / path).read_text())

measures = {a: e for a, e in latest.items() if a.startswith("measure[")}
if len(measures) != 6:
    problems.append(f"expected 6 measurements (3 sweep + search + custom + prefix), got {sorted(measures)}")
for a, e in sorted(measures.items()):
    if e["event"] != "done":
        problems.append(f"{a}: {e['event']} {e.get('failure')}")
        continue
    r = result(a)
    if r["failed"] != 0:
        problems.append(f"{a}: {r['failed']} failed requests: {r['errors'][:3]}")

def point(commit, label):
    return next((a for a in measures if f"commit={commit}" in a and a.endswith(f",{label}]")), None)

sg, cu, px = "d55a784c", "64115496", "6fe51ec9"
# ShareGPT sweep: three points, throughput rising with concurrency, the file's varied prompts.
tps = []
for c in (1, 4, 8):
    a = point(sg, f"conc={c}")
    if a is None or latest[a]["event"] != "done":
        problems.append(f"sharegpt conc={c} not measured")
        continue
    r = result(a)
    tps.append(r["output_throughput"])
    if r["completed"] != 24 or len(set(r["input_lens"])) < 5:
        problems.append(f"sharegpt conc={c}: {r['completed']} requests, input lengths {sorted(set(r['input_lens']))}")
if len(tps) == 3 and not tps[0] < tps[2]:
    problems.append(f"sharegpt: throughput does not rise from concurrency 1 to 8: {tps}")

# The search.
a = point(sg, "search=concurrency")
if a and latest[a]["event"] == "done":
    s = result(a)["isobench"]["search"]
    probes = s["probes"]
    print(f"search: {s['outcome']}, found {s['found']}, bracket {s['bracket']}, "
          f"{len(probes)} probes: " + ", ".join(f"{p['value']:.0f}{'+' if p['passed'] else '-'}"
                                                 f"(p99 TTFT {p['p99_ttft_ms']:.0f} ms)" for p in probes))
    if len(probes) > s["max_probes"] or s["max_probes"] != 6:
        problems.append(f"search took {len(probes)} probes, budget {s['max_probes']}")
    for p in probes:
        if s["found"] is not None and p["value"] <= s["found"] and not p["passed"]:
            problems.append(f"probe {p['value']} failed at or below the answer {s['found']}")
        if p["completed"] != 24:
            problems.append(f"probe {p['value']}: {p['completed']} completed")
    if s["outcome"] == "bracketed" and s["bracket"][1] - s["bracket"][0] != 1:
        problems.append(f"concurrency bracket not closed: {s['bracket']}")
else:
    problems.append("the search was not measured")

# Custom JSONL: every output length is one the file asked for.
a = point(cu, "conc=4")
if a and latest[a]["event"] == "done":
    asked = {json.loads(l)["output_tokens"] for l in (data / "prompts.jsonl").read_text().splitlines()}
    got = result(a)["output_lens"]
    if not set(got) <= asked or len(set(got)) < 2:
        problems.append(f"custom: output lengths {sorted(set(got))} vs asked {sorted(asked)}")

# Prefix repetition: vLLM's prefix cache answered most of the shared prefixes.
a = point(px, "conc=4")
if a and latest[a]["event"] == "done":
    t = result(a)["isobench"]["telemetry"]["server"]
    counters = t.get("counters", {})
    hits, queries = counters.get("prefix_cache_hits"), counters.get("prefix_cache_queries")
    print(f"prefix cache: {hits} hits of {queries} queried tokens")
    if not hits or not queries or hits / queries < 0.5:
        problems.append(f"prefix repetition: prefix-cache hits {hits} of {queries} queried tokens")

# The report: goodput, the configured p90, the search metric, the sweep's curve.
keys = {m["key"] for m in report["metrics"]}
for k in ("request_goodput", "p90_ttft_ms", "slo_max_concurrency"):
    if k not in keys:
        problems.append(f"report lacks metric {k}")
commit = next(c for c in report["commits"] if c["full"].startswith(sg))
curves = commit.get("curves") or []
if not curves or not any(len(c.get("points", [])) >= 3 for c in curves):
    problems.append(f"report: no curve of the sweep for {sg}: {curves}")

if problems:
    print("FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("workload checks passed")
EOF
log "done in $(( $(date +%s) - T0 )) s"
