#!/usr/bin/env python3
"""Writes manifests/3way.toml from the ISO-Bench commit table (../shared/data/iso-bench-vllm-commits.csv).

    python3 scripts/gen-3way-manifest.py ../shared/data/iso-bench-vllm-commits.csv > manifests/3way.toml

The header (arms, server, load) is fixed below; one [[commits]] entry per row. Two rows give
only a 12-character parent in the source (015069b0, 296f927f); isobench accepts short parents.
Commits whose model needs more than one GPU get `server = { gpus = N }` (see MODEL_GPUS); the
server command passes `--tensor-parallel-size {{ server.gpus }}`. The first line is the schema
directive TOML editors (taplo, Even Better TOML) read for completion and validation.
"""
import csv, re, sys

SHORT_PARENTS = {"015069b0": "fbefc8a78d22", "296f927f": "0032903a5bb7"}
# Models that do not fit one GPU: the GPUs each server gets (the command passes them to vLLM as
# --tensor-parallel-size), with the reason (kept in the manifest as a comment).
MODEL_GPUS = {
    "meta-llama/Llama-2-70b-hf": (4, "70B in bf16 is ~140 GB of weights: more than one or two 80 GB GPUs hold with a KV cache"),
}

def model_key(hf):
    return re.sub(r"[^a-z0-9_-]", "_", hf.split("/")[-1].lower())

def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if not l.startswith("#"))]
models = {}
for r in rows:
    models.setdefault(model_key(r["model"]), r["model"])

print('''#:schema ../schemas/manifest.schema.json
# The seed's 3-way campaign: for each vLLM optimisation commit, the baseline (its parent), the
# human commit, and the Claude Code agent's patch over the baseline, on the commit's model.
# Generated from the ISO-Bench commit table by scripts/gen-3way-manifest.py; edit freely:
# add a [[commits]] entry and `isobench plan` shows exactly its nodes as "+ run".
version = 1
name = "iso-bench-3way"
description = "vLLM optimisation commits: baseline vs human vs agent (ISO-Bench, Jan 2026)"
pipeline = "serve-bench"
results = "iso_bench_results_3way_claude_code"   # the seed's layout: baseline_benchmark_results/, agent_benchmark_results/, docker_benchmark_results/
repeats = 3                          # trials per arm, interleaved A B C A B C

[images]
repo = "anonymous/vllm-baseline"

[[arms]]
name = "baseline"
image = "{{ images.repo }}:baseline-{{ commit.parent[:12] }}"

[[arms]]
name = "human"
image = "{{ images.repo }}:{{ commit.human }}"

[[arms]]
name = "claude-code"                 # an agent: the baseline image + its patch
base = "baseline"
patch = "patches/claude-code/{{ commit.short }}.diff"   # absent file = no agent arm for that commit

[server]
runtime = "docker"
command = "python3 -m vllm.entrypoints.openai.api_server --model {{ model.hf }} --host 0.0.0.0 --port {{ port }} --max-model-len {{ server.max_model_len }} --tensor-parallel-size {{ server.gpus }} --disable-log-requests"
max_model_len = 4096
gpus = 1                             # per commit: `server = { gpus = 4 }` (tensor parallel)
shm_size = "16g"
ipc = "host"
env = { HF_HUB_OFFLINE = "1" }
volumes = ["~/.cache/huggingface:/root/.cache/huggingface:ro"]
ready = { path = "/health", timeout = "600s" }

[load]                               # the seed's settings (also isobench's defaults)
backend = "openai-chat"
endpoint = "/v1/chat/completions"
dataset = { name = "random", input_len = 512, output_len = 64 }
num_prompts = 100
concurrency = 16
request_rate = "inf"
warmup = 10
timeout = "600s"
''')
print("[models]")
for key, hf in sorted(models.items()):
    print(f"{key} = {{ hf = {toml_str(hf)} }}")
for r in rows:
    short = r["commit_short"]
    parent = r["parent_full"] or SHORT_PARENTS[short]
    print()
    print("[[commits]]")
    print(f'human = "{r["commit_full"]}"')
    print(f'parent = "{parent}"')
    print(f'model = "{model_key(r["model"])}"')
    if r["subject"]:
        print(f"subject = {toml_str(r['subject'])}")
    if r["model"] in MODEL_GPUS:
        gpus, why = MODEL_GPUS[r["model"]]
        print(f"server = {{ gpus = {gpus} }}   # {why}")
