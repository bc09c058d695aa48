#!/usr/bin/env bash
# What telemetry costs the measurement (docs/telemetry.md, "Cost"): the same simulated server at
# high throughput, measured with telemetry on (Prometheus scrapes every second, NVML at
# TELEMETRY_HZ where there is a GPU, server CPU time) and off (`metrics_path = ""`,
# `telemetry_hz = 0`), alternating campaign by campaign so drifts in the host's load hit both.
#
#   scripts/bench-telemetry.sh                 # 5 rounds of on/off
#   ROUNDS=3 NUM_PROMPTS=2000 scripts/bench-telemetry.sh
#
# Settings (environment): ROUNDS (5), NUM_PROMPTS (30000: a window of ~20 s, twenty scrapes), CONCURRENCY (64), OUTPUT_LEN (64),
# TELEMETRY_HZ (10), GPUS (0: no GPU; e.g. 1 on a GPU host, so NVML samples it),
# ISOBENCH_BIN (default target/release/isobench, built if missing), OUT (/tmp/isobench-bench-telemetry).
# Output: one line per campaign, then per mode the mean output throughput (tok/s) with its
# standard deviation and the CPU seconds of the whole `apply` (isobench and the server it
# started: client and host side together), and the difference on - off.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${ISOBENCH_BIN:-$CARGO_TARGET_DIR/release/isobench}
OUT=${OUT:-/tmp/isobench-bench-telemetry}
ROUNDS=${ROUNDS:-5}
NUM_PROMPTS=${NUM_PROMPTS:-30000}
CONCURRENCY=${CONCURRENCY:-64}
OUTPUT_LEN=${OUTPUT_LEN:-64}
TELEMETRY_HZ=${TELEMETRY_HZ:-10}
GPUS=${GPUS:-0}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
rm -rf "$OUT"; mkdir -p "$OUT"

campaign() { # campaign DIR MODE
  local dir=$1 mode=$2 metrics hz
  if [ "$mode" = on ]; then metrics="/metrics"; hz=$TELEMETRY_HZ; else metrics=""; hz=0; fi
  mkdir -p "$dir/srv"
  # Fast enough that the load generator, not the server's latency model, sets the pace.
  printf 'ttft_ms = 2.0\nitl_ms = 0.5\n' > "$dir/srv/sim.toml"
  cat > "$dir/m.toml" <<EOF
version = 1
name = "telemetry-$mode"
[[arms]]
name = "baseline"
path = "srv"
[models.sim]
hf = "isobench/sim"
served_name = "sim"
[server]
runtime = "process"
command = "{{ isobench }} sim --config sim.toml --host 127.0.0.1 --port {{ port }} --model sim --chat-template-tokens 0"
gpus = $GPUS
metrics_path = "$metrics"
ready = { path = "/health", timeout = "30s", interval = "50ms" }
[load]
dataset = { input_len = 64, output_len = $OUTPUT_LEN }
num_prompts = $NUM_PROMPTS
concurrency = $CONCURRENCY
warmup = 16
timeout = "300s"
[resources]
telemetry_hz = $hz
[[commits]]
human = "1111111111111111111111111111111111111111"
parent = "1000000000000000000000000000000000000000"
model = "sim"
EOF
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in on off; do
    dir=$OUT/$mode-$round
    campaign "$dir" "$mode"
    # %U/%S include the reaped children: the sim server the process runtime started.
    /usr/bin/time -f "%U %S" -o "$dir/cpu" "$BIN" apply --plain "$dir/m.toml" > "$dir/apply.log" 2>&1
    python3 - "$dir" "$mode" <<'EOF' | tee -a "$OUT/lines.tsv"
import json, sys, glob
d, mode = sys.argv[1], sys.argv[2]
[path] = glob.glob(f"{d}/.isobench/attempts/measure*/*/result.json")
r = json.load(open(path))
user, sys_ = map(float, open(f"{d}/cpu").read().split()[-2:])
t = r["isobench"]["telemetry"]
print(f"{mode}\t{r['output_throughput']:.0f}\t{user + sys_:.2f}\t{r['duration']:.2f}\t"
      f"server={t['server']['available']} gpu={t['gpu']['available']} host={t['host']['available']}")
EOF
  done
done

python3 - "$OUT/lines.tsv" <<'EOF'
import statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {m: [(float(r[1]), float(r[2]), float(r[3])) for r in rows if r[0] == m] for m in ("on", "off")}
for m, v in by.items():
    tput = [x[0] for x in v]; cpu = [x[1] for x in v]; dur = [x[2] for x in v]
    print(f"{m:>3}: {st.mean(tput):9.0f} ± {st.stdev(tput) if len(v) > 1 else 0:6.0f} tok/s, "
          f"apply CPU {st.mean(cpu):6.2f} s for a {st.mean(dur):.2f} s window ({len(v)} campaigns)")
on, off = (st.mean(x[0] for x in by[m]) for m in ("on", "off"))
cpu_on, cpu_off = (st.mean(x[1] for x in by[m]) for m in ("on", "off"))
print(f"on - off: throughput {100 * (on - off) / off:+.2f} %, CPU {cpu_on - cpu_off:+.2f} s per campaign")
# Paired by round (on and off ran back to back): the host's drift cancels.
d_tput = [100 * (a[0] - b[0]) / b[0] for a, b in zip(by["on"], by["off"])]
d_cpu = [a[1] - b[1] for a, b in zip(by["on"], by["off"])]
sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
print(f"paired by round: throughput {st.mean(d_tput):+.2f} ± {sd(d_tput):.2f} %, "
      f"CPU {st.mean(d_cpu):+.2f} ± {sd(d_cpu):.2f} s ({len(d_tput)} rounds)")
EOF
