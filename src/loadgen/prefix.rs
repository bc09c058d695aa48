//! `prefix_repetition`: vLLM's `PrefixRepetitionRandomDataset`. `num_prefixes` random prefixes
//! of `prefix_len` tokens; each is followed by `num_prompts / num_prefixes` random suffixes of
//! `suffix_len` tokens; the prompts are shuffled (Python's `random.shuffle`, seeded as vLLM
//! does). With prefix caching on, every prompt after the first of its group finds its prefix
//! cached: the workload for commits that touch the prefix cache. Token ids come from our own
//! generator (vLLM's from numpy), so the text differs from vLLM's, not the structure.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use tokenizers::Tokenizer;

use super::LoadgenError;
use super::dataset::{
    Dataset, DatasetConfig, SYNTHETIC_WORDS, SampleRequest, TokenizerInfo, Workload, allowed_ids,
    fit_to_length, num_special_tokens,
};
use super::pyrandom::PyRandom;

pub(crate) fn build_prefix_repetition(
    cfg: &DatasetConfig,
    tokenizer: Option<(PathBuf, Tokenizer)>,
) -> Result<Dataset, LoadgenError> {
    let Workload::PrefixRepetition {
        suffix_len,
        num_prefixes,
    } = cfg.workload
    else {
        unreachable!("called for prefix_repetition only")
    };
    let per_prefix = cfg.num_prompts / num_prefixes.max(1) as usize;
    if num_prefixes == 0 || per_prefix == 0 {
        return Err(LoadgenError::Config(format!(
            "num_prompts ({}) must be at least num_prefixes ({num_prefixes})",
            cfg.num_prompts
        )));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut requests = Vec::with_capacity(per_prefix * num_prefixes as usize);
    let (mut mismatch_total, mut mismatched) = (0i64, 0usize);
    let info = match &tokenizer {
        Some((path, tok)) => {
            let allowed = allowed_ids(tok, path)?;
            // One piece of exactly `len` tokens (decode → re-encode → adjust, as vLLM).
            let mut piece = |len: u32, rng: &mut StdRng| -> Result<Vec<u32>, LoadgenError> {
                let ids = (0..len)
                    .map(|_| allowed[rng.random_range(0..allowed.len())])
                    .collect();
                let (_, ids, mismatch) = fit_to_length(tok, ids, len, &allowed, rng)?;
                if mismatch != 0 {
                    mismatch_total += mismatch;
                    mismatched += 1;
                }
                Ok(ids)
            };
            for _ in 0..num_prefixes {
                let prefix = piece(cfg.prefix_len, &mut rng)?;
                for _ in 0..per_prefix {
                    let mut ids = prefix.clone();
                    ids.extend(piece(suffix_len, &mut rng)?);
                    let prompt = tok
                        .decode(&ids, false)
                        .map_err(|e| LoadgenError::Tokenizer(e.to_string()))?;
                    requests.push(SampleRequest::text(
                        prompt,
                        Some(ids.len() as u32),
                        cfg.prefix_len + suffix_len,
                        cfg.output_len,
                    ));
                }
            }
            Some(TokenizerInfo {
                path: path.clone(),
                vocab_size: tok.get_vocab_size(false),
                ids_excluded: tok.get_vocab_size(false) - allowed.len(),
                num_special_tokens_to_add: num_special_tokens(tok),
            })
        }
        None => {
            let words = |n: u32, rng: &mut StdRng| -> Vec<&str> {
                (0..n)
                    .map(|_| SYNTHETIC_WORDS[rng.random_range(0..SYNTHETIC_WORDS.len())])
                    .collect()
            };
            for _ in 0..num_prefixes {
                let prefix = words(cfg.prefix_len, &mut rng);
                for _ in 0..per_prefix {
                    let mut all = prefix.clone();
                    all.extend(words(suffix_len, &mut rng));
                    let target = cfg.prefix_len + suffix_len;
                    requests.push(SampleRequest::text(
                        all.join(" "),
                        None,
                        target,
                        cfg.output_len,
                    ));
                }
            }
            None
        }
    };
    PyRandom::new(cfg.seed).shuffle(&mut requests);
    Ok(Dataset {
        config: cfg.clone(),
        requests,
        synthetic: info.is_none(),
        tokenizer: info,
        residual_mismatch: mismatch_total,
        mismatched_prompts: mismatched,
        tokenizer_handle: tokenizer.map(|(_, t)| Arc::new(t)),
        extra_body: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_share_prefixes_and_are_shuffled() {
        let cfg = DatasetConfig {
            prefix_len: 6,
            output_len: 9,
            num_prompts: 13,
            seed: 5,
            workload: Workload::PrefixRepetition {
                suffix_len: 3,
                num_prefixes: 4,
            },
            ..DatasetConfig::default()
        };
        let ds = build_prefix_repetition(&cfg, None).unwrap();
        // 13 / 4 = 3 prompts per prefix: 12 prompts, as vLLM (the remainder is dropped).
        assert_eq!(ds.requests.len(), 12);
        let mut groups = std::collections::HashMap::<String, usize>::new();
        for r in &ds.requests {
            let words: Vec<&str> = r.prompt.split(' ').collect();
            assert_eq!(words.len(), 9);
            assert_eq!((r.output_len, r.target_prompt_len), (9, 9));
            *groups.entry(words[..6].join(" ")).or_default() += 1;
        }
        assert_eq!(groups.len(), 4, "{groups:?}");
        assert!(groups.values().all(|&n| n == 3), "{groups:?}");
        // Shuffled: the first three prompts are not all of one group.
        let head: std::collections::HashSet<_> = ds.requests[..3]
            .iter()
            .map(|r| r.prompt.split(' ').take(6).collect::<Vec<_>>())
            .collect();
        assert!(head.len() > 1, "groups were not shuffled");
        let again = build_prefix_repetition(&cfg, None).unwrap();
        assert_eq!(ds.requests, again.requests, "same seed, same prompts");
        let too_few = DatasetConfig {
            num_prompts: 3,
            ..cfg
        };
        assert!(matches!(
            build_prefix_repetition(&too_few, None),
            Err(LoadgenError::Config(_))
        ));
    }
}
