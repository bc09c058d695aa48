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
