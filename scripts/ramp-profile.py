#!/usr/bin/env python3
"""How long a server takes to reach its steady state: the evidence behind `load.ramp_up`.

Reads a result JSON written by `isobench bench --duration D --ramp-up 0s --save-result
--save-detailed` (or an attempt's result.json of a timed campaign with ramp_up = "0s"), rebuilds
the output-token arrivals of every request from `isobench.requests` (send time + event times) and
prints tokens per bucket from the run's start, the steady rate (median of the second half), and
the settling time: the start of the first bucket from which every bucket stays within ±TOL of
the steady rate, and what the window's throughput would have been with each ramp-up.

    scripts/ramp-profile.py result.json [--bucket 0.5] [--tol 0.05]
"""
import argparse, json, statistics, sys

ap = argparse.ArgumentParser()
ap.add_argument("result")
ap.add_argument("--bucket", type=float, default=0.5)
ap.add_argument("--tol", type=float, default=0.05)
a = ap.parse_args()
r = json.load(open(a.result))
reqs = r.get("isobench", {}).get("requests")
if not reqs:
    sys.exit("no isobench.requests: run with --save-detailed")
window = r["isobench"].get("window") or {}
end = window.get("ramp_up_s", 0) + window.get("duration_s", r.get("duration", 0))
arrivals = []  # (time from start, tokens)
for q in reqs:
    ev, sent = q.get("event_times_s") or [], q.get("sent_at_s")
    if q.get("error") or not ev or sent is None:
        continue
    tokens = q.get("completion_tokens_server") or len(ev)
    arrivals += [(sent + t, tokens / len(ev)) for t in ev]
n = int(end / a.bucket)
buckets = [0.0] * n
for t, k in arrivals:
    i = int(t / a.bucket)
    if 0 <= i < n:
        buckets[i] += k
rate = [b / a.bucket for b in buckets]
steady = statistics.median(rate[n // 2:])
settle = next((i for i in range(n) if all(abs(x - steady) <= a.tol * steady for x in rate[i:])), None)
print(f"buckets of {a.bucket} s over {end:.1f} s; steady rate (median of the second half) {steady:.1f} tok/s")
print("t (s)   tok/s   vs steady")
for i, x in enumerate(rate):
    print(f"{i * a.bucket:5.1f}  {x:8.1f}  {100 * (x / steady - 1):+6.1f} %")
if settle is None:
    print(f"never settles within ±{100 * a.tol:.0f} % (noisier than the tolerance: raise --tol or --bucket)")
else:
    print(f"settled within ±{100 * a.tol:.0f} % from {settle * a.bucket:.1f} s")
for ramp in [0, 1, 2, 5, 10]:
    i = int(ramp / a.bucket)
    if i < n:
        w = rate[i:]
        print(f"ramp-up {ramp:>2} s: window throughput {statistics.mean(w):.1f} tok/s ({100 * (statistics.mean(w) / steady - 1):+.2f} % vs steady)")
