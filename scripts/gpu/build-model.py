#!/usr/bin/env python3
"""Builds a small random-weight Llama and a byte-level BPE tokenizer for `transformers serve`,
entirely offline and deterministically (same seed and sizes -> byte-identical files).

    python3 scripts/gpu/build-model.py OUT [--hidden 1024] [--layers 8] [--dtype bfloat16] ...

Needs only what the GPU machine has: torch, transformers (5.x), tokenizers, safetensors.
The defaults give ~120 M parameters in bf16 (~240 MB): real work for a GPU, loaded in seconds.

Two choices make benchmark traffic well defined with a random model:
- The vocabulary holds only bytes that occur in the ASCII training text, so every token decodes
  to valid UTF-8 on its own (a random model never emits half a character, which would make a
  streaming detokenizer hold text back and merge chunks).
- The output-projection rows of the special tokens (EOS included) are zero. Their logits are then
  0 while thousands of others are random with both signs, so greedy decoding (temperature 0, what
  isobench sends) never picks them: every request runs to `max_tokens`. `transformers serve`
  rejects vLLM's `ignore_eos` field (HTTP 422), so this is how output lengths stay fixed.
"""
import argparse
import hashlib
import json
import os
import random
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus(rng: random.Random, n_sentences: int):
    """English-ish text: common words plus pseudo-words from syllables, some numbers."""
    common = (
        "the of and to in is that for it as was with be by on not he i this are or his from at "
        "which but have an they you were her she there been one all we their can has more if "
        "will would about so what up out them into time could some model server token request "
        "latency benchmark engine stream cache memory first second third run test result number "
        "value data input output"
    ).split()
    syllables = ["ba", "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe", "qui",
                 "ra", "se", "ti", "vo", "wa", "xe", "yo", "zu", "an", "er", "in", "on", "ul",
                 "st", "tr", "ch", "sh", "th", "ing", "ed", "ly", "ion"]
    pseudo = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
              for _ in range(4000)]
    words = common * 20 + pseudo
    for _ in range(n_sentences):
        s = " ".join(rng.choice(words) for _ in range(rng.randint(4, 18)))
        if rng.random() < 0.2:
            s += " " + str(rng.randint(0, 99999))
        yield s[0].upper() + s[1:] + rng.choice(".,.?!.") + ("\n" if rng.random() < 0.3 else "")


def build_tokenizer(rng: random.Random, vocab: int, max_pos: int, sentences: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # No initial_alphabet: only bytes of the (ASCII) corpus become tokens (see the module doc).
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(corpus(rng, sentences), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        model_max_length=max_pos,
        additional_special_tokens=["<|eos|>", "<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="directory to write (created; existing files are overwritten)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=0, help="default: 2.75 x hidden")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--max-pos", type=int, default=4096)
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-sentences", type=int, default=40000, help="tokenizer training text")
    a = ap.parse_args()
    if a.hidden % a.heads or a.heads % a.kv_heads:
        ap.error("--hidden must be a multiple of --heads, and --heads of --kv-heads")

    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    torch.manual_seed(a.seed)

    fast = build_tokenizer(rng, a.vocab, a.max_pos, a.corpus_sentences)
    fast.save_pretrained(a.out)
    vocab_size = len(fast)  # may be below --vocab if the corpus had too few merges

    intermediate = a.intermediate or (a.hidden * 11 // 4 + 63) // 64 * 64
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=a.hidden,
        intermediate_size=intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        head_dim=a.hidden // a.heads,
        max_position_embeddings=a.max_pos,
        rms_norm_eps=1e-6,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    cfg.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(cfg)  # random init on CPU: deterministic for the seed
    special_ids = sorted(fast.convert_tokens_to_ids(SPECIALS))
    with torch.no_grad():
        model.lm_head.weight[special_ids] = 0.0
    model = model.to(getattr(torch, a.dtype))
    model.generation_config.bos_token_id = fast.bos_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(a.out, safe_serialization=True)

    digest = hashlib.sha256()
    for name in sorted(os.listdir(a.out)):
        path = os.path.join(a.out, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    print(json.dumps({
        "out": os.path.abspath(a.out),
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": a.dtype,
        "hidden": a.hidden,
        "layers": a.layers,
        "vocab_size": vocab_size,
        "eos": fast.eos_token_id,
        "sha256": digest.hexdigest(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
