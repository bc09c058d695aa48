//! Datasets: the [`Workload`]s and what they produce ([`Dataset`]); here the `random` one, random
//! prompts of exact token lengths from the model's tokenizer (`files.rs`: `sharegpt` and
//! `custom`; `prefix.rs`: `prefix_repetition`).
//!
//! Follows vLLM's `RandomDataset` (0.31/0.32): input lengths are drawn uniformly from
//! `[⌊L'·(1−r)⌋, ⌈L'·(1+r)⌉]` where L' = L minus the special tokens the tokenizer's post-processor
//! adds (the server adds them), output lengths from `[max(1, ⌊O·(1−r)⌋), ⌈O·(1+r)⌉]`; a prompt is
//! the run `allowed[(offset + i + j) mod |allowed|]` of non-special token ids after an optional
//! shared random prefix, decoded, re-encoded and padded or truncated until its encoded length is
//! the target (10 rounds, as vLLM; what remains is reported as residual mismatch). Unlike vLLM,
//! ids that do not decode to valid text on their own are not sampled (see below). The random
//! generator differs from numpy's, so prompts differ from vLLM's text, not in distribution.
//! Same seed → same dataset, in every arm.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::Tokenizer;

use super::LoadgenError;

/// Rounds of decode → encode → pad/truncate before giving up (vLLM's `max_retry`).
const MAX_ADJUST_ROUNDS: usize = 10;

/// The workload, named as `vllm bench serve --dataset-name` names it. `random` uses all of
/// [`DatasetConfig`]'s lengths; `prefix_repetition` its `prefix_len` and `output_len`; the file
/// datasets none of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Workload {
    #[default]
    Random,
    /// A ShareGPT JSON file; `output_len` overrides the recorded replies' lengths.
    Sharegpt {
        path: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_len: Option<u32>,
        multi_turn: bool,
    },
    /// A JSONL file of prompts or message lists; `output_len` overrides `output_tokens`.
    Custom {
        path: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_len: Option<u32>,
        multi_turn: bool,
    },
    /// `num_prefixes` random prefixes of `prefix_len` tokens, each followed by random suffixes.
    PrefixRepetition { suffix_len: u32, num_prefixes: u32 },
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Random => "random",
            Workload::Sharegpt { .. } => "sharegpt",
            Workload::Custom { .. } => "custom",
            Workload::PrefixRepetition { .. } => "prefix_repetition",
        }
    }

    /// The dataset file, for the file workloads.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Workload::Sharegpt { path, .. } | Workload::Custom { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetConfig {
    pub input_len: u32,
    pub output_len: u32,
    pub range_ratio: f64,
    pub prefix_len: u32,
    pub num_prompts: usize,
    pub seed: u64,
    pub workload: Workload,
}

impl Default for DatasetConfig {
    /// The seed's load: random 512 in / 64 out, 100 prompts.
    fn default() -> DatasetConfig {
        DatasetConfig {
            input_len: 512,
            output_len: 64,
            range_ratio: 0.0,
            prefix_len: 0,
            num_prompts: 100,
            seed: 0,
            workload: Workload::Random,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleRequest {
    pub prompt: String,
    /// Prompt tokens by the client's tokenizer (None for synthetic text).
    pub prompt_len: Option<u32>,
    /// The length this prompt was built for.
    pub target_prompt_len: u32,
    pub output_len: u32,
    /// A chat message list sent as is (chat backends only); `prompt` then holds the last
    /// user message, for display.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
}

impl SampleRequest {
    /// A single-prompt request.
    pub fn text(prompt: String, prompt_len: Option<u32>, target: u32, output_len: u32) -> Self {
        SampleRequest {
            prompt,
            prompt_len,
            target_prompt_len: target,
            output_len,
            messages: None,
        }
    }
}

/// One chat message of a `custom` record or a multi-turn conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizerInfo {
    /// The `tokenizer.json` used.
    pub path: PathBuf,
    pub vocab_size: usize,
    /// Ids excluded from sampling: special tokens and fragments that decode to no valid text.
    pub ids_excluded: usize,
    /// Special tokens the post-processor adds to a prompt (subtracted from the input length).
    pub num_special_tokens_to_add: u32,
}

#[derive(Clone)]
pub struct Dataset {
    pub config: DatasetConfig,
    pub requests: Vec<SampleRequest>,
    pub tokenizer: Option<TokenizerInfo>,
    /// No tokenizer: synthetic words, and token counts must come from the server.
    pub synthetic: bool,
    /// Σ (encoded length − target) over prompts that missed their target.
    pub residual_mismatch: i64,
    pub mismatched_prompts: usize,
    pub(crate) tokenizer_handle: Option<Arc<Tokenizer>>,
    /// Fields merged into every request body (`load.extra_body`): per-request options such as
    /// `response_format`, the same in every arm.
    pub extra_body: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("config", &self.config)
            .field("requests", &self.requests.len())
            .field("tokenizer", &self.tokenizer)
            .field("synthetic", &self.synthetic)
            .field("residual_mismatch", &self.residual_mismatch)
            .finish()
    }
}

impl Dataset {
    /// The first `n` prompts (a search's probes send the same ones every time).
    pub fn first(&self, n: usize) -> Dataset {
        let mut d = self.clone_without_requests();
        d.requests = self.requests.iter().take(n).cloned().collect();
        d
    }

    fn clone_without_requests(&self) -> Dataset {
        Dataset {
            config: self.config.clone(),
            requests: Vec::new(),
            tokenizer: self.tokenizer.clone(),
            synthetic: self.synthetic,
            residual_mismatch: self.residual_mismatch,
            mismatched_prompts: self.mismatched_prompts,
            tokenizer_handle: self.tokenizer_handle.clone(),
            extra_body: self.extra_body.clone(),
        }
    }

    /// Counts tokens of generated text with the client's tokenizer (when there is one).
    pub fn count_tokens(&self, text: &str) -> Option<u32> {
        let tokenizer = self.tokenizer_handle.as_ref()?;
        tokenizer
            .encode_fast(text, false)
            .ok()
            .map(|enc| enc.len() as u32)
    }

    /// Σ client-side prompt tokens (None for synthetic text).
    pub fn total_prompt_tokens(&self) -> Option<u64> {
        self.requests
            .iter()
            .map(|r| r.prompt_len.map(u64::from))
            .sum()
    }
}

/// `tokenizer.json` itself, or the one inside a model directory.
pub fn resolve_tokenizer_file(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    let inside = path.join("tokenizer.json");
    inside.is_file().then_some(inside)
}

/// Finds a model's `tokenizer.json`: a local path, or the Hugging Face cache
/// (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`; the `main` snapshot first).
pub fn find_tokenizer(model: &str) -> Option<PathBuf> {
    if let Some(file) = resolve_tokenizer_file(Path::new(model)) {
        return Some(file);
    }
    if !model.contains('/') || model.starts_with('/') || model.starts_with('.') {
        return None;
    }
    let mut caches = Vec::new();
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        caches.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("HF_HOME") {
        caches.push(PathBuf::from(dir).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        caches.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    let repo_dir = format!("models--{}", model.replace('/', "--"));
    for cache in caches {
        let repo = cache.join(&repo_dir);
        if let Ok(main) = std::fs::read_to_string(repo.join("refs/main")) {
            let file = repo
                .join("snapshots")
                .join(main.trim())
                .join("tokenizer.json");
            if file.is_file() {
                return Some(file);
            }
        }
        let Ok(entries) = std::fs::read_dir(repo.join("snapshots")) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("tokenizer.json"))
            .filter(|p| p.is_file())
            .collect();
        candidates.sort();
        if let Some(file) = candidates.pop() {
            return Some(file);
        }
    }
    None
}

/// Builds the random dataset; with no tokenizer, synthetic text (flagged) instead.
pub fn build_dataset(
    cfg: &DatasetConfig,
    tokenizer: Option<&Path>,
) -> Result<Dataset, LoadgenError> {
    if cfg.num_prompts == 0 {
        return Err(LoadgenError::Config(
            "num_prompts must be at least 1".into(),
        ));
    }
    if !(0.0..1.0).contains(&cfg.range_ratio) {
        return Err(LoadgenError::Config(format!(
            "random range ratio must be in [0, 1) (got {})",
            cfg.range_ratio
        )));
    }
    let tokenizer = tokenizer.map(load_tokenizer).transpose()?;
    match (&cfg.workload, tokenizer) {
        (Workload::Random, Some((file, tokenizer))) => build_from_tokenizer(cfg, file, tokenizer),
        (Workload::Random, None) => Ok(build_synthetic(cfg)),
        (Workload::PrefixRepetition { .. }, tokenizer) => {
            super::prefix::build_prefix_repetition(cfg, tokenizer)
        }
        (Workload::Sharegpt { .. } | Workload::Custom { .. }, tokenizer) => {
            super::files::build_file_dataset(cfg, tokenizer)
        }
    }
}

/// Reads `tokenizer.json` (or the one in a model directory).
pub(crate) fn load_tokenizer(path: &Path) -> Result<(PathBuf, Tokenizer), LoadgenError> {
    let file = resolve_tokenizer_file(path).ok_or_else(|| {
        LoadgenError::Tokenizer(format!("no tokenizer.json at {}", path.display()))
    })?;
    let tokenizer = Tokenizer::from_file(&file)
        .map_err(|err| LoadgenError::Tokenizer(format!("{}: {err}", file.display())))?;
    Ok((file, tokenizer))
}

/// Special tokens the tokenizer's post-processor adds to an encoded prompt.
pub(crate) fn num_special_tokens(tokenizer: &Tokenizer) -> u32 {
    use tokenizers::PostProcessor;
    tokenizer
        .get_post_processor()
        .map(|pp| pp.added_tokens(false) as u32)
        .unwrap_or(0)
}

/// Token ids prompts are sampled from: not special, and decoding to valid text on their own.
pub(crate) fn allowed_ids(tokenizer: &Tokenizer, path: &Path) -> Result<Vec<u32>, LoadgenError> {
    let vocab_size = tokenizer.get_vocab_size(false);
    let special: std::collections::HashSet<u32> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    // Beyond vLLM: ids that decode to no valid text on their own (byte-level fragments of a
    // multi-byte character) are left out too. Sent as text they arrive as U+FFFD and re-encode
    // into other tokens, which is why vLLM's prompts often miss their length on real vocabularies.
    let allowed: Vec<u32> = (0..vocab_size as u32)
        .filter(|id| !special.contains(id))
        .filter(|&id| {
            tokenizer
                .decode(&[id], false)
                .is_ok_and(|text| !text.is_empty() && !text.contains('\u{FFFD}'))
        })
        .collect();
    if allowed.is_empty() {
        return Err(LoadgenError::Tokenizer(format!(
            "{}: no non-special token ids",
            path.display()
        )));
    }
    Ok(allowed)
}

/// Inclusive (low, high) bounds of input and output lengths.
type LengthRanges = ((u32, u32), (u32, u32));

fn length_ranges(cfg: &DatasetConfig, num_special: u32) -> Result<LengthRanges, LoadgenError> {
    let r = cfg.range_ratio;
    let real_input = cfg.input_len.saturating_sub(num_special) as f64;
    let input = (
        (real_input * (1.0 - r)).floor() as u32,
        (real_input * (1.0 + r)).ceil() as u32,
    );
    let output_len = cfg.output_len as f64;
    let output = (
        ((output_len * (1.0 - r)).floor() as u32).max(1),
        ((output_len * (1.0 + r)).ceil() as u32).max(1),
    );
    if cfg.prefix_len + input.0 < 1 {
        return Err(LoadgenError::Config(format!(
            "input length {} is too small: with {num_special} special token(s) and range ratio {r} a prompt \
             could have no tokens; raise --random-input-len or --random-prefix-len",
            cfg.input_len
        )));
    }
    Ok((input, output))
}

fn build_from_tokenizer(
    cfg: &DatasetConfig,
    path: PathBuf,
    tokenizer: Tokenizer,
) -> Result<Dataset, LoadgenError> {
    let num_special = num_special_tokens(&tokenizer);
    let ((in_lo, in_hi), (out_lo, out_hi)) = length_ranges(cfg, num_special)?;
    let vocab_size = tokenizer.get_vocab_size(false);
    let allowed = allowed_ids(&tokenizer, &path)?;

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = cfg.num_prompts;
    let input_lens: Vec<u32> = (0..n).map(|_| rng.random_range(in_lo..=in_hi)).collect();
    let output_lens: Vec<u32> = (0..n).map(|_| rng.random_range(out_lo..=out_hi)).collect();
    let offsets: Vec<usize> = (0..n)
        .map(|_| rng.random_range(0..vocab_size.max(1)))
        .collect();

    let mut mismatch_total = 0i64;
    let mut mismatched = 0usize;
    let prefix: Vec<u32> = if cfg.prefix_len > 0 {
        let ids: Vec<u32> = (0..cfg.prefix_len)
            .map(|_| allowed[rng.random_range(0..allowed.len())])
            .collect();
        let (_, adjusted, mismatch) =
            fit_to_length(&tokenizer, ids, cfg.prefix_len, &allowed, &mut rng)?;
        if mismatch != 0 {
            mismatch_total += mismatch;
            mismatched += 1;
        }
        adjusted
    } else {
        Vec::new()
    };

    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let len = input_lens[i] as usize;
        let mut ids = prefix.clone();
        ids.extend((0..len).map(|j| allowed[(offsets[i] + i + j) % allowed.len()]));
        let target = cfg.prefix_len + input_lens[i];
        let (prompt, adjusted, mismatch) =
            fit_to_length(&tokenizer, ids, target, &allowed, &mut rng)?;
        if mismatch != 0 {
            mismatch_total += mismatch;
            mismatched += 1;
        }
        requests.push(SampleRequest::text(
            prompt,
            Some(adjusted.len() as u32),
            target,
            output_lens[i],
        ));
    }
    Ok(Dataset {
        config: cfg.clone(),
        requests,
        tokenizer: Some(TokenizerInfo {
            path,
            vocab_size,
            ids_excluded: vocab_size - allowed.len(),
            num_special_tokens_to_add: num_special,
        }),
        synthetic: false,
        residual_mismatch: mismatch_total,
        mismatched_prompts: mismatched,
        tokenizer_handle: Some(Arc::new(tokenizer)),
        extra_body: None,
    })
}

/// Decode → encode → pad (random allowed ids) or truncate until the encoded length is `target`.
/// Returns the prompt, its encoding, and the residual (encoded − target) if rounds ran out.
pub(crate) fn fit_to_length(
    tokenizer: &Tokenizer,
    mut ids: Vec<u32>,
    target: u32,
    allowed: &[u32],
    rng: &mut StdRng,
) -> Result<(String, Vec<u32>, i64), LoadgenError> {
    let target = target as usize;
    let err = |e: tokenizers::Error| LoadgenError::Tokenizer(e.to_string());
    let mut round = 0;
    loop {
        let prompt = tokenizer.decode(&ids, false).map_err(err)?;
        let encoded = tokenizer
            .encode_fast(prompt.as_str(), false)
            .map_err(err)?
            .get_ids()
            .to_vec();
        if encoded.len() == target {
            return Ok((prompt, encoded, 0));
        }
        if round == MAX_ADJUST_ROUNDS {
            let mismatch = encoded.len() as i64 - target as i64;
            return Ok((prompt, encoded, mismatch));
        }
        ids = encoded;
        if ids.len() < target {
            let missing = target - ids.len();
            ids.extend((0..missing).map(|_| allowed[rng.random_range(0..allowed.len())]));
        } else {
            ids.truncate(target);
        }
        round += 1;
    }
}

/// Plain words most tokenizers encode as one token each (with their leading space).
pub(crate) const SYNTHETIC_WORDS: [&str; 32] = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their",
];

fn build_synthetic(cfg: &DatasetConfig) -> Dataset {
    let ((in_lo, in_hi), (out_lo, out_hi)) = match length_ranges(cfg, 0) {
        Ok(ranges) => ranges,
        // Only an input length of 0 with no prefix gets here: make it one word.
        Err(_) => ((1, 1), (cfg.output_len.max(1), cfg.output_len.max(1))),
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let word = |rng: &mut StdRng| SYNTHETIC_WORDS[rng.random_range(0..SYNTHETIC_WORDS.len())];
    let prefix: Vec<&str> = (0..cfg.prefix_len).map(|_| word(&mut rng)).collect();
    let requests = (0..cfg.num_prompts)
        .map(|_| {
            let input = rng.random_range(in_lo..=in_hi);
            let output = rng.random_range(out_lo..=out_hi);
            let mut words = prefix.clone();
            words.extend((0..input).map(|_| word(&mut rng)));
            SampleRequest::text(words.join(" "), None, cfg.prefix_len + input, output)
        })
        .collect();
    Dataset {
        config: cfg.clone(),
        requests,
        tokenizer: None,
        synthetic: true,
        residual_mismatch: 0,
        mismatched_prompts: 0,
        tokenizer_handle: None,
        extra_body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_dataset_is_flagged_deterministic_and_sized() {
        let cfg = DatasetConfig {
            input_len: 20,
            output_len: 8,
            num_prompts: 5,
            seed: 3,
            ..DatasetConfig::default()
        };
        let a = build_dataset(&cfg, None).unwrap();
        let b = build_dataset(&cfg, None).unwrap();
        assert!(a.synthetic && a.tokenizer.is_none());
        assert_eq!(a.requests, b.requests, "same seed, same prompts");
        assert_eq!(a.requests.len(), 5);
        for r in &a.requests {
            assert_eq!(r.prompt.split(' ').count(), 20);
            assert_eq!((r.prompt_len, r.output_len), (None, 8));
        }
        let c = build_dataset(&DatasetConfig { seed: 4, ..cfg }, None).unwrap();
        assert_ne!(a.requests, c.requests, "another seed, other prompts");
    }

    #[test]
    fn length_ranges_follow_vllm() {
        let cfg = DatasetConfig {
            input_len: 100,
            output_len: 10,
            range_ratio: 0.25,
            ..DatasetConfig::default()
        };
        // One special token added by the post-processor: L' = 99 → [74, 124]; output [7, 13].
        assert_eq!(length_ranges(&cfg, 1).unwrap(), ((74, 124), (7, 13)));
        let tiny = DatasetConfig {
            input_len: 1,
            output_len: 0,
            ..DatasetConfig::default()
        };
        assert!(length_ranges(&tiny, 1).is_err(), "a prompt could be empty");
        assert_eq!(
            length_ranges(
                &DatasetConfig {
                    input_len: 5,
                    output_len: 0,
                    ..cfg
                },
                0
            )
            .unwrap()
            .1,
            (1, 1)
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        let cfg = DatasetConfig {
            num_prompts: 0,
            ..DatasetConfig::default()
        };
        assert!(matches!(
            build_dataset(&cfg, None),
            Err(LoadgenError::Config(_))
        ));
        let cfg = DatasetConfig {
            range_ratio: 1.0,
            ..DatasetConfig::default()
        };
        assert!(matches!(
            build_dataset(&cfg, None),
            Err(LoadgenError::Config(_))
        ));
        let missing = Path::new("/nonexistent/tokenizer.json");
        assert!(matches!(
            build_dataset(&DatasetConfig::default(), Some(missing)),
            Err(LoadgenError::Tokenizer(_))
        ));
    }
}
