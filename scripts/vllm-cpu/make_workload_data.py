#!/usr/bin/env python3
"""Writes the workload files of examples/vllm-cpu-workloads.toml and examples/sharegpt.toml,
deterministically (standard library only):

  OUT/sharegpt.json   ShareGPT format: a JSON list of {"id", "conversations": [{"from", "value"}]}
                      with 1-3 turn pairs, prompts and replies of varied lengths, a few entries
                      vLLM's sampler must skip (no reply, too short, no conversations)
  OUT/prompts.jsonl   `custom`: one {"prompt": text | [messages], "output_tokens": n} per line

    python3 scripts/vllm-cpu/make_workload_data.py OUT_DIR [--conversations N]
"""
import argparse
import json
import os
import random

WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an which "
    "cache tensor kernel batch token prefix model layer attention decode prefill sampler "
    "river mountain garden lantern harbor meadow copper violet window silver quiet rapid "
    "explain describe compare summarise translate list write why how what when where"
).split()


def text(rng, n):
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--conversations", type=int, default=240)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(20261201)
    entries = []
    for i in range(a.conversations):
        if i % 37 == 5:
            entries.append({"id": f"empty-{i}"})  # no conversations: skipped
            continue
        turns = []
        for t in range(rng.choice((1, 1, 1, 2, 3))):
            turns.append({"from": "human", "value": text(rng, rng.randint(3, 120))})
            if i % 23 == 7 and t == 0:
                break  # no reply: skipped by vLLM's sampler
            turns.append({"from": "gpt", "value": text(rng, rng.choice((2, 8, 20, 40, 60)))})
        entries.append({"id": f"conv-{i}", "conversations": turns})
    with open(os.path.join(a.out, "sharegpt.json"), "w") as f:
        json.dump(entries, f, indent=None)
    with open(os.path.join(a.out, "prompts.jsonl"), "w") as f:
        for i in range(60):
            n = rng.choice((4, 8, 16, 24, 32))
            if i % 3 == 0:
                prompt = [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": text(rng, rng.randint(5, 60))},
                ]
            else:
                prompt = text(rng, rng.randint(5, 150))
            f.write(json.dumps({"prompt": prompt, "output_tokens": n}) + "\n")


if __name__ == "__main__":
    main()
