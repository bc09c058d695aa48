#!/usr/bin/env python3
"""Compact summary of a scripts/gpu/run.sh work directory: machine, phase timings, makespans,
per-arm throughput with intervals, and the evidence that servers ran pinned and in parallel,
that kill -9 left them running and the resume cleaned them up.

    python3 scripts/gpu/summarize.py /tmp/isobench-gpu [--phase parallel|serial|both]

Standard library only (it runs with the GPU machine's Python).
"""
import argparse
import csv
import json
import os
import re
import sys
from collections import defaultdict
from datetime import datetime

HEADLINE = "output_throughput"


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def epoch(rfc3339):
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def times_file(path):
    """`name epoch` lines written by run.sh."""
    out = {}
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def journal(state):
    entries = []
    for line in read(os.path.join(state, "journal.jsonl")).splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line after kill -9
    return entries


def csv_rows(path):
    """Rows of a sampler CSV: header line, then `epoch, field, field, ...` rows."""
    text = read(path)
    if not text:
        return []
    rows = []
    for row in csv.reader(text.splitlines()[1:], skipinitialspace=True):
        if not row:
            continue
        try:
            row[0] = float(row[0])
        except ValueError:
            continue
        rows.append([c.strip() if isinstance(c, str) else c for c in row])
    return rows


def mib(text):
    m = re.match(r"\s*(\d+)", text or "")
    return int(m.group(1)) if m else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def sessions_of(entries):
    """Server sessions from start/stop events: pid, GPUs, start and stop times, run id."""
    sessions = {}
    for e in entries:
        addr = e.get("addr", "")
        m = re.match(r"(start|stop)\[(.*)\]$", addr)
        if not m:
            continue
        key = (m.group(2), e.get("run"))
        s = sessions.setdefault(key, {"session": m.group(2), "run": e.get("run")})
        if m.group(1) == "start" and e["event"] == "started":
            s["t_start"] = epoch(e["t"])
        elif m.group(1) == "start" and e["event"] == "done":
            info = e.get("info") or {}
            s["pid"] = str(info.get("id"))
            s["gpus"] = info.get("gpus", [])
            s["t_up"] = epoch(e["t"])
        elif m.group(1) == "stop" and e["event"] in ("done", "failed"):
            s["t_stop"] = epoch(e["t"])
    return [s for s in sessions.values() if "pid" in s]


def content_ttft_ms(trials):
    """Median over trials of each trial's median time to the first chunk with text.

    `transformers serve` sends its role-only first chunk before it generates anything, so the
    vLLM-definition TTFT (first chunk with choices) measures only the HTTP round trip there; the
    load generator also records the time to the first content, in the result's `isobench` part.
    """
    values = []
    for t in trials:
        try:
            r = json.load(open(t.get("result_path") or ""))
            values.append(r["isobench"]["ttft_first_content_ms"]["median"])
        except (OSError, KeyError, TypeError, json.JSONDecodeError):
            pass
    values.sort()
    return values[len(values) // 2] if values else None


def report_lines(report_path):
    """Per-arm headline metric with intervals and the comparisons, from report.json."""
    try:
        report = json.load(open(report_path))
    except (OSError, json.JSONDecodeError) as e:
        return [f"  (no report: {e})"], None
    lines = []
    arms_out = {}
    for commit in report.get("commits", []):
        for point in commit.get("points", []):
            lines.append(f"  commit {commit['short']} · {point['point']} · median over trials [95 % CI]")
            lines.append(f"  {'arm':<20} {'tok/s':>9} {'CI':>21} {'TTFT p50':>9} {'content':>9} "
                         f"{'TPOT p50':>9}  tok/s per trial")
            for arm in point.get("arms", []):
                m = arm.get("metrics", {})
                tp = m.get(HEADLINE, {})
                ttft = m.get("median_ttft_ms", {})
                tpot = m.get("median_tpot_ms", {})
                values = " ".join(fmt(v["value"]) for v in tp.get("values", []))
                failed = [t for t in arm.get("trials", []) if t.get("status") != "ok"]
                extra = f"  ({len(failed)} failed: {failed[0].get('failure')})" if failed else ""
                ci = f"[{fmt(tp.get('ci_low'))}, {fmt(tp.get('ci_high'))}]" if tp else ""
                content = content_ttft_ms(arm.get("trials", []))
                lines.append(
                    f"  {arm['arm']:<20} {fmt(tp.get('median')):>9} {ci:>21} {fmt(ttft.get('median')):>9} "
                    f"{fmt(content):>9} {fmt(tpot.get('median'), 2):>9}  {values}{extra}"
                )
                arms_out[arm["arm"]] = tp.get("median")
            for c in point.get("comparisons", []):
                d = c.get("metrics", {}).get(HEADLINE) or {}
                pct = lambda v: "?" if v is None else f"{v:+.1f}"  # noqa: E731
                lines.append(
                    f"  {c['candidate']} vs {c['reference']}: {pct(d.get('diff_pct'))} % "
                    f"[{pct(d.get('ci_low_pct'))}, {pct(d.get('ci_high_pct'))}] → {d.get('verdict', 'not comparable')}"
                )
    lines.append("  (ms; TTFT p50 = first chunk, vLLM's definition; content = first chunk with text)")
    trials = report.get("summary", {}).get("trials", {})
    lines.append(f"  trials: {trials.get('ok', 0)} ok, {trials.get('failed', 0)} failed")
    for f in report.get("summary", {}).get("failure_breakdown", []):
        lines.append(f"  failure {f['category']} ×{f['count']}: {f.get('sample_message')}")
    return lines, arms_out


def evidence(work, tag, entries, times):
    """Pinning, parallelism, orphans after kill -9, and idle GPUs at each start."""
    lines = []
    samples = os.path.join(work, f"samples-{tag}")
    gpus_rows = csv_rows(os.path.join(samples, "gpus.csv"))
    apps_rows = csv_rows(os.path.join(samples, "compute-apps.csv"))
    pid_rows = csv_rows(os.path.join(samples, "server-pids.csv"))
    sessions = sessions_of(entries)
    for name in sorted(os.listdir(work)):
        if name.startswith(f"apply-{tag}") and name.endswith(".log"):
            m = re.search(r"· GPUs: (.*)$", read(os.path.join(work, name)), re.M)
            if m:
                lines.append(f"  isobench GPU inventory ({name}): {m.group(1)}")
                break
    runs = []
    for e in entries:
        if e.get("run") and e["run"] not in runs:
            runs.append(e["run"])
    lines.append(f"  servers started: {len(sessions)} in {len(runs)} apply run(s); "
                 f"GPUs used: {sorted({g for s in sessions for g in s.get('gpus', [])})}")

    # Overlap from the journal: the most servers up at the same time, each on its own GPUs.
    events = []
    for s in sessions:
        end = s.get("t_stop") or times.get("kill") or s["t_up"]
        events += [(s["t_up"], 1, s), (end, -1, s)]
    peak, up, peak_gpus = 0, {}, []
    for t, step, s in sorted(events, key=lambda x: (x[0], x[1])):
        if step > 0:
            up[id(s)] = s
        else:
            up.pop(id(s), None)
        if len(up) > peak:
            peak = len(up)
            peak_gpus = [tuple(x.get("gpus", [])) for x in up.values()]
    disjoint = len({g for gs in peak_gpus for g in gs}) == sum(len(gs) for gs in peak_gpus)
    lines.append(f"  journal: at most {peak} servers up at once, on GPUs {peak_gpus} "
                 f"({'disjoint' if disjoint else 'OVERLAPPING'})")

    if not gpus_rows:
        lines.append("  nvidia-smi: no samples (no GPU on this machine)")
    else:
        uuid_of = {}
        for r in gpus_rows:
            if len(r) >= 3:
                uuid_of.setdefault(int(r[1]), r[2])
        names = sorted({r[3] for r in gpus_rows if len(r) >= 4})
        lines.append(f"  nvidia-smi: {len(set(r[0] for r in gpus_rows))} samples of {len(uuid_of)} GPU(s) {names}")
        seen = defaultdict(set)
        by_time = defaultdict(dict)
        for r in apps_rows:
            if len(r) >= 3:
                seen[r[2]].add(r[1])
                by_time[r[0]][r[2]] = r[1]
        ok, wrong, unseen = 0, [], []
        for s in sessions:
            want = {uuid_of.get(g) for g in s.get("gpus", [])}
            got = seen.get(s["pid"], set())
            if not got:
                unseen.append(s["pid"])
            elif got <= want:
                ok += 1
            else:
                wrong.append(f"pid {s['pid']} assigned GPUs {s.get('gpus')} seen on {sorted(got)}")
        lines.append(f"  pinning: {ok}/{len(sessions)} server pids seen by nvidia-smi only on their "
                     f"assigned GPU's UUID" + (f"; never seen: {unseen}" if unseen else ""))
        for w in wrong:
            lines.append(f"  PINNING VIOLATION: {w}")
        server_pids = {s["pid"] for s in sessions}
        both = 0
        best = None
        for t, apps in sorted(by_time.items()):
            on = {pid: uuid for pid, uuid in apps.items() if pid in server_pids}
            if len(set(on.values())) >= 2:
                both += 1
                if best is None or len(on) > len(best[1]):
                    best = (t, on)
        lines.append(f"  parallel: {both} of {len(by_time)} nvidia-smi samples show ≥ 2 servers, each on its own GPU")
        if best:
            t, on = best
            stamp = datetime.fromtimestamp(t).strftime("%H:%M:%S")
            lines.append("    e.g. " + stamp + ": " + ", ".join(f"pid {p} on {u}" for p, u in sorted(on.items())))
        # Idle check: memory in use on a GPU between the stop of the server before and the start
        # of the next one there (the scheduler hands a GPU out only below the idle threshold).
        mem = defaultdict(list)
        for r in gpus_rows:
            if len(r) >= 5:
                mem[int(r[1])].append((r[0], mib(r[4])))
        at_start, unsampled = [], 0
        # Servers orphaned by kill -9 have no stop event: the resumed apply removes them before it
        # starts anything, so they are gone by its first start.
        later = [o.get("t_start", o["t_up"]) for o in sessions if runs and o["run"] != runs[0]]
        gone = min(later, default=1e18)
        for s in sessions:
            t_start = s.get("t_start", s["t_up"])
            for g in s.get("gpus", []):
                stops = [o.get("t_stop", gone) for o in sessions
                         if o is not s and g in o.get("gpus", []) and o.get("t_stop", gone) <= t_start]
                since = max(stops, default=0.0)
                between = [m for t, m in mem.get(g, []) if since < t <= t_start and m is not None]
                if between:
                    at_start.append(between[-1])
                elif stops:
                    unsampled += 1
        if at_start:
            lines.append(f"  idle at start: GPU memory in use just before a server was started on a GPU: max "
                         f"{max(at_start)} MiB over {len(at_start)} starts"
                         + (f" ({unsampled} restarts too quick to sample)" if unsampled else ""))
        peak_mem = {g: max((m for _, m in v if m is not None), default=0) for g, v in mem.items()}
        lines.append("  peak memory per GPU: " + ", ".join(f"GPU {g}: {m} MiB" for g, m in sorted(peak_mem.items())))

    if "kill" in times:
        k, r = times["kill"], times.get("resume_start", times["kill"])
        orphans = sorted({row[1] for row in pid_rows if k <= row[0] <= r})
        on_gpu = sorted({row[2] for row in apps_rows if k <= row[0] <= r and len(row) >= 3})
        first_run = runs[0] if runs else None
        done_first = sum(1 for e in entries if e.get("run") == first_run and e["event"] == "done"
                         and e["addr"].startswith("measure["))
        alive = sorted(set(re.findall(r"^\s*(\d+)\s+\1\s", read(os.path.join(work, "after-kill.txt")), re.M)))
        lines.append(f"  kill -9 after {done_first} measurements: server pid records left: {orphans or 'none'}; "
                     f"alive 2 s later: {alive or 'none'}"
                     + (f"; on GPUs per nvidia-smi: {on_gpu}" if gpus_rows else ""))
        if len(runs) > 1:
            later = [e for e in entries if e.get("run") != first_run]
            redone = sorted({e["addr"] for e in later if e["event"] == "done" and e["addr"].startswith("measure[")})
            stopped_after = [p for p in orphans
                             if not any(row[1] == p and row[0] > r + 15 for row in pid_rows)]
            lines.append(f"  resume: {len(redone)} measurements done by the resumed run; "
                         f"leftover servers gone within 15 s of the resume: {len(stopped_after)}/{len(orphans)}")
        plan_after = read(os.path.join(work, "plan-after-kill.txt"))
        m = re.search(r"^Plan: .*$", plan_after, re.M)
        if m:
            lines.append(f"  plan after the kill: {m.group(0)}")
    return lines


def makespan_lines(work, phase, entries_by_tag):
    lines = []
    p = times_file(os.path.join(work, "parallel-times.txt"))
    if p and phase in ("parallel", "both"):
        total = p.get("apply_end", 0) - p.get("apply_start", 0)
        if "kill" in p:
            first = p["kill"] - p["apply_start"]
            resume = p.get("apply_end", 0) - p.get("resume_start", 0)
            pause = p.get("resume_start", 0) - p["kill"]
            lines.append(f"  parallel: {total:.1f} s wall = {first:.1f} s until kill -9 + {pause:.1f} s evidence pause "
                         f"+ {resume:.1f} s resumed run")
            lines.append(f"            without the pause: {total - pause:.1f} s")
        else:
            lines.append(f"  parallel: {total:.1f} s")
    s = times_file(os.path.join(work, "serial-times.txt"))
    if s and phase in ("serial", "both"):
        total = s.get("apply_end", 0) - s.get("apply_start", 0)
        entries = entries_by_tag.get("serial", [])
        done = sum(1 for e in entries if e["event"] == "done" and e["addr"].startswith("measure["))
        planned = len({e["addr"] for e in entries if e["addr"].startswith("measure[")})
        rc = int(s.get("apply_rc", 0))
        note = "" if rc == 0 else f" (cut by the budget after {done}/{planned} measurements, exit {rc})"
        lines.append(f"  serial (--max-parallel 1): {total:.1f} s{note}")
        if p and "apply_end" in p and rc == 0:
            par = p["apply_end"] - p["apply_start"] - (p.get("resume_start", 0) - p.get("kill", 0))
            if par > 0:
                lines.append(f"  serial / parallel: {total / par:.2f}x")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--phase", default="parallel", choices=["parallel", "serial", "both"])
    a = ap.parse_args()
    w = a.work
    out = []
    env = read(os.path.join(w, "env.txt"))
    gpu_lines = [line for line in env.splitlines() if re.match(r"^\d+, GPU-", line)]
    out.append("== isobench on real GPUs: summary")
    for line in env.splitlines():
        if line.startswith(("host:", "isobench:", "python ", "cuda available")):
            out.append("  " + line)
    for line in gpu_lines:
        out.append("  GPU " + line)
    model = read(os.path.join(w, "model-info.json")).strip()
    if model:
        try:
            m = json.loads(model)
            out.append(f"  model: random Llama, {m['params'] / 1e6:.0f} M params, {m['dtype']}, hidden {m['hidden']}, "
                       f"{m['layers']} layers, vocab {m['vocab_size']}")
        except (json.JSONDecodeError, KeyError):
            pass
    try:
        import tomllib
        manifest = tomllib.loads(read(os.path.join(w, "gpu-transformers.toml")))
        load = manifest.get("load", {})
        ds = load.get("dataset", {})
        out.append(f"  load: {load.get('num_prompts')} prompts × {ds.get('input_len')} in / {ds.get('output_len')} out, "
                   f"concurrency {load.get('concurrency')}, warm-up {load.get('warmup')}, "
                   f"{manifest.get('repeats')} trials × {len(manifest.get('arms', []))} arms")
        for arm in manifest.get("arms", []):
            out.append(f"    arm {arm['name']:<20} args {arm.get('args', [])}")
    except Exception as e:  # noqa: BLE001 - the summary must not fail on a missing manifest
        out.append(f"  (manifest unreadable: {e})")

    out.append("")
    out.append("== phases (wall seconds)")
    for line in read(os.path.join(w, "timings.tsv")).splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out.append(f"  {parts[0]:<18} {float(parts[1]):8.1f}  {parts[2]}")

    tags = {"parallel": ["parallel"], "serial": ["serial"], "both": ["parallel", "serial"]}[a.phase]
    entries_by_tag = {t: journal(os.path.join(w, f"state-{t}")) for t in tags}
    out.append("")
    out.append("== makespan")
    out += makespan_lines(w, a.phase, entries_by_tag) or ["  (no apply ran)"]

    for tag in tags:
        out.append("")
        out.append(f"== {tag} phase: {HEADLINE} per arm")
        lines, _ = report_lines(os.path.join(w, f"report-{tag}", "report.json"))
        out += lines
        out.append("")
        out.append(f"== {tag} phase: evidence")
        times = times_file(os.path.join(w, f"{tag}-times.txt"))
        out += evidence(w, tag, entries_by_tag[tag], times)

    problems = read(os.path.join(w, "problems.txt")).strip()
    out.append("")
    out.append("== problems: " + ("none" if not problems else ""))
    out += ["  " + p for p in problems.splitlines()]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
