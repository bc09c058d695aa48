#!/usr/bin/env bash
# A/A benchmark of the isolation policies: campaigns whose two arms are the very same simulated
# server (`isobench sim`, the quickstart's latency model), run under each `isolate` policy with
# the real scheduler, then reported. A correct design gives "faster"/"slower" in at most 5 % of
# comparisons (95 % intervals), with no direction favoured.
#
#   scripts/bench-aa.sh                                  # 3 policies × 5 campaigns × 20 commits
#   POLICIES="exclusive" CAMPAIGNS=1 COMMITS=10 scripts/bench-aa.sh
#
# Settings (environment): POLICIES, CAMPAIGNS, COMMITS, TRIALS (5), GPUS (declared, "0,1"),
# NUM_PROMPTS (48), CONCURRENCY (8), DURATION / RAMP_UP (e.g. "5s" / "1s": time-based windows
# instead of one pass over NUM_PROMPTS), SUMMARY_ONLY (1: summarise what is there), ISOBENCH_BIN (default: target/release/isobench, built if
# missing), OUT (default /tmp/isobench-bench-aa).
# Output: $OUT/<policy>-<n>/report.json per campaign and $OUT/summary.md: per policy the
# comparisons, faster/slower counts, the false-verdict rate with its 95 % binomial interval, the
# mean difference (bias) with its interval, verdicts after Benjamini–Hochberg, the order effect
# (human measured first vs second in its round), the GPU effect, overlapping trials, the host's
# load average and the wall time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${ISOBENCH_BIN:-$CARGO_TARGET_DIR/release/isobench}
OUT=${OUT:-/tmp/isobench-bench-aa}
POLICIES=${POLICIES:-"exclusive paired none"}
CAMPAIGNS=${CAMPAIGNS:-5}
COMMITS=${COMMITS:-20}
TRIALS=${TRIALS:-5}
GPUS=${GPUS:-0,1}
NUM_PROMPTS=${NUM_PROMPTS:-48}
CONCURRENCY=${CONCURRENCY:-8}
log() { printf '[bench-aa %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
mkdir -p "$OUT"

campaign() { # campaign DIR POLICY INDEX
  local dir=$1 policy=$2 n=$3
  rm -rf "$dir"; mkdir -p "$dir/srv"
  cp "$ROOT/examples/sim/aaaa1111/baseline/sim.toml" "$dir/srv/sim.toml"
  {
    cat <<EOF
version = 1
name = "aa-$policy-$n"
repeats = $TRIALS
[[arms]]
name = "baseline"
path = "srv"
[[arms]]
name = "human"
path = "srv"                          # the very same server: any verdict is a false one
[models.sim]
hf = "isobench/sim"
served_name = "sim"
[server]
runtime = "process"
command = "{{ isobench }} sim --config sim.toml --host 127.0.0.1 --port {{ port }} --model sim"
gpus = 1
ready = { path = "/health", timeout = "30s", interval = "50ms" }
[load]
dataset = { name = "random", input_len = 128, output_len = 32 }
num_prompts = $NUM_PROMPTS
concurrency = $CONCURRENCY
warmup = 4
timeout = "120s"
${DURATION:+duration = \"$DURATION\"}
${RAMP_UP:+ramp_up = \"$RAMP_UP\"}
[resources]
gpus = [$GPUS]
isolate = "$policy"
EOF
    for c in $(seq 0 $((COMMITS - 1))); do
      printf '[[commits]]\nhuman = "%08x%032x"\nparent = "%040x"\nmodel = "sim"\n' \
        $((0xa0000000 + n * 256 + c)) "$c" $((0xf0000 + n * 256 + c))
    done
  } > "$dir/m.toml"
}

# Policies alternate campaign by campaign, so a change in the host's load hits them alike.
# SUMMARY_ONLY=1 only summarises the campaigns already under $OUT.
[ -n "${SUMMARY_ONLY:-}" ] && CAMPAIGNS=0
for n in $(seq 1 "$CAMPAIGNS"); do
  for policy in $POLICIES; do
    dir=$OUT/$policy-$n
    campaign "$dir" "$policy" "$n"
    load0=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    log "$policy campaign $n/$CAMPAIGNS: $COMMITS commits × 2 arms × $TRIALS trials (load $load0)"
    "$BIN" apply --plain --no-report "$dir/m.toml" > "$dir/apply.log" 2>&1 \
      || { log "apply failed: $(tail -3 "$dir/apply.log")"; exit 1; }
    t1=$(date +%s.%N)
    "$BIN" report "$dir/m.toml" --format json > "$dir/report.json" 2> "$dir/report.err"
    printf '{"policy":"%s","wall_s":%s,"load_start":%s,"load_end":%s}\n' "$policy" \
      "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" \
      > "$dir/run.json"
  done
done

python3 - "$OUT" $POLICIES <<'PYEOF'
import json, math, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1]); policies = sys.argv[2:]

def wilson(k, n, z=1.96):
    if n == 0: return (float("nan"),) * 2
    p = k / n; d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d; h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (100 * (c - h), 100 * (c + h))

def mean_ci(xs):
    if len(xs) < 2: return (float("nan"),) * 3
    m = statistics.mean(xs); h = 1.96 * statistics.stdev(xs) / math.sqrt(len(xs))
    return (m, m - h, m + h)

rows = []
for policy in policies:
    diffs, faster, slower, bh, order, gpu, trials, overl, wall, loads = [], 0, 0, 0, {}, {}, 0, 0, 0.0, []
    for d in sorted(out.glob(f"{policy}-*")):
        if not (d / "report.json").exists(): continue
        r = json.loads((d / "report.json").read_text()); run = json.loads((d / "run.json").read_text())
        wall += run["wall_s"]; loads += [run["load_start"], run["load_end"]]
        bh += r["summary"]["fdr"]["discoveries"]
        q = r["quality"]; trials += len(q["trials"]); overl += q["overlapping_trials"]
        by = {}
        for t in q["trials"]:
            by.setdefault((t["commit"], t["trial"]), {})[t["arm"]] = t
        for c in r["commits"]:
            for p in c["points"]:
                vals = {a["arm"]: {v["trial"]: v["value"] for v in a["metrics"].get("output_throughput", {}).get("values", [])} for a in p["arms"]}
                for cmp in p["comparisons"]:
                    if cmp["kind"] != "human_vs_baseline": continue
                    m = cmp["metrics"]["output_throughput"]
                    diffs.append(m["diff_pct"])
                    faster += m["verdict"] == "faster"; slower += m["verdict"] == "slower"
                # Per round: log ratio by which arm measured first, and by the human arm's GPU.
                for trial, hv in vals.get("human", {}).items():
                    bv = vals.get("baseline", {}).get(trial)
                    tq = by.get((c["short"], trial), {})
                    if bv is None or "human" not in tq or "baseline" not in tq: continue
                    lr = 100 * math.log(hv / bv)
                    h, b = tq["human"], tq["baseline"]
                    if h["window_start"] is not None and b["window_start"] is not None:
                        key = "human first" if h["window_start"] < b["window_start"] else "baseline first"
                        order.setdefault(key, []).append(lr)
                    gpu.setdefault("human on " + "+".join(h["gpus"]), []).append(lr)
    n = len(diffs)
    if n == 0: continue
    lo, hi = wilson(faster + slower, n); m, mlo, mhi = mean_ci(diffs)
    rows.append(dict(policy=policy, n=n, faster=faster, slower=slower,
        rate=100 * (faster + slower) / n, lo=lo, hi=hi, bias=m, blo=mlo, bhi=mhi, bh=bh,
        order={k: mean_ci(v) + (len(v),) for k, v in sorted(order.items())},
        gpu={k: mean_ci(v) + (len(v),) for k, v in sorted(gpu.items())},
        overlap=100 * overl / max(trials, 1), wall=wall, load=(min(loads), max(loads))))

lines = ["| policy | comparisons | faster | slower | false verdicts | 95 % interval | mean difference (bias) | after BH | trials overlapping | wall | load avg |",
         "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
for r in rows:
    lines.append(f"| {r['policy']} | {r['n']} | {r['faster']} | {r['slower']} | {r['rate']:.1f} % | {r['lo']:.1f}–{r['hi']:.1f} % | {r['bias']:+.2f} % [{r['blo']:+.2f}, {r['bhi']:+.2f}] | {r['bh']} | {r['overlap']:.0f} % | {r['wall']:.0f} s | {r['load'][0]:.1f}–{r['load'][1]:.1f} |")
lines.append("")
lines.append("Per round, human ÷ baseline (log %, mean [95 % interval], rounds):")
lines.append("")
for r in rows:
    parts = [f"{k}: {v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}] ({v[3]})" for k, v in list(r["order"].items()) + list(r["gpu"].items())]
    lines.append(f"- {r['policy']}: " + "; ".join(parts))
text = "\n".join(lines) + "\n"
(out / "summary.md").write_text(text)
print(text)
PYEOF
