//! Helpers shared by the load generator's integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// Trains a small byte-level BPE (like the tiny models' tokenizers) on generated text and saves
/// it as `DIR/tokenizer.json`. With `bos`, its post-processor adds `<|bos|>` to every
/// sequence, so datasets must subtract one token from the input length (as vLLM does).
pub fn train_tokenizer(dir: &Path, bos: bool) -> PathBuf {
    let words = [
        "the",
        "server",
        "token",
        "stream",
        "latency",
        "batch",
        "cache",
        "model",
        "kernel",
        "prefill",
        "decode",
        "attention",
        "vllm",
        "gpu",
        "memory",
        "request",
        "über",
        "naïve",
        "数据",
        "😀",
    ];
    let mut corpus = Vec::new();
    let mut state = 17u64;
    for _ in 0..400 {
        let mut line = String::new();
        for _ in 0..24 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            line.push_str(words[(state >> 33) as usize % words.len()]);
            line.push(if (state >> 20) % 7 == 0 { ',' } else { ' ' });
        }
        corpus.push(line);
    }
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(400)
        .min_frequency(1)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![
            AddedToken::from("<|bos|>", true),
            AddedToken::from("<|eos|>", true),
        ])
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default()));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer
        .train(&mut trainer, corpus.iter())
        .expect("training works");
    if bos {
        let bos_id = tokenizer.token_to_id("<|bos|>").expect("bos exists");
        let template = TemplateProcessing::builder()
            .try_single("<|bos|> $A")
            .unwrap()
            .special_tokens(vec![("<|bos|>", bos_id)])
            .build()
            .unwrap();
        tokenizer.with_post_processor(Some(template));
    }
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).expect("tokenizer saves");
    path
}

/// Counts tokens of `text` as the server would (no special tokens).
pub fn count_tokens(tokenizer: &Path, text: &str) -> usize {
    let tokenizer = Tokenizer::from_file(tokenizer).unwrap();
    tokenizer.encode(text, false).unwrap().len()
}
