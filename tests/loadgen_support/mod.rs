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
            line.push(if (state >> 20).is_multiple_of(7) {
                ','
            } else {
                ' '
            });
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

use isobench::loadgen::{
    BenchResult, ClientConfig, Dataset, DatasetConfig, LoadClient, RunConfig, build_dataset,
};
use isobench::sim::{self, SimConfig, SimHandle};
use std::time::Duration;

/// Timing tests run one at a time: each measures wall-clock behaviour on a 2-core machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn dataset(
    input_len: u32,
    output_len: u32,
    num_prompts: usize,
    tokenizer: Option<&Path>,
) -> Dataset {
    let cfg = DatasetConfig {
        input_len,
        output_len,
        num_prompts,
        seed: 0,
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, tokenizer).unwrap()
}

pub fn client_for(sim: &SimHandle, pool_size: usize) -> LoadClient {
    LoadClient::new(ClientConfig {
        base_url: sim.base_url(),
        pool_size,
        request_timeout: Duration::from_secs(60),
    })
    .unwrap()
}

pub fn run_config(concurrency: Option<usize>) -> RunConfig {
    RunConfig {
        model: "sim".into(),
        max_concurrency: concurrency,
        percentiles: vec![10.0, 50.0, 90.0, 99.0],
        run_timeout: Duration::from_secs(120),
        ..RunConfig::default()
    }
}

/// Starts a simulator, warms up, runs, and stops it; returns the result and the sim's counters.
pub async fn measure(
    sim_config: SimConfig,
    ds: &Dataset,
    run: &RunConfig,
    warmups: usize,
) -> (BenchResult, sim::SimStats) {
    let sim = sim::spawn(sim_config).await.unwrap();
    let client = client_for(&sim, run.max_concurrency.unwrap_or(ds.requests.len()));
    if warmups > 0 {
        client.warmup(ds, warmups, run).await.unwrap();
    }
    let result = client.run(ds, run, None).await.unwrap();
    let stats = sim.stats();
    sim.shutdown().await;
    (result, stats)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    isobench::loadgen::stats::percentile_sorted(values, 50.0)
}

/// Measures how long an ordinary OS thread of this process oversleeps 1 ms naps: evidence,
/// independent of the code under test, that the machine did not let the process run (other
/// engineers compile on the same 2 cores).
pub struct OsStallProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl OsStallProbe {
    pub fn start() -> OsStallProbe {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut worst = 0.0f64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let before = std::time::Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                worst = worst.max(before.elapsed().as_secs_f64() * 1000.0 - 1.0);
            }
            worst
        });
        OsStallProbe { stop, thread }
    }

    /// The longest oversleep seen, in ms.
    pub fn finish(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(f64::INFINITY)
    }
}

/// An OS stall above this (ms) makes a run "disturbed".
const STALL_LIMIT_MS: f64 = 5.0;

/// Runs a timing measurement and checks it. `check` gets the slack (ms) it may add to its
/// upper bounds: 0 on an undisturbed run. A failure on an undisturbed run fails at once. A
/// disturbed run is measured again (up to 4 times) hoping for an undisturbed one; if none comes,
/// the test passes only if one disturbed run met its bounds widened by that run's own measured
/// OS stall.
pub async fn checked<T, Fut>(
    mut measure_once: impl FnMut() -> Fut,
    check: impl Fn(&T, f64) -> Result<(), String>,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let mut best: Option<(T, f64)> = None;
    let mut problems = Vec::new();
    for attempt in 1..=4 {
        let probe = OsStallProbe::start();
        let outcome = measure_once().await;
        let stall_ms = probe.finish();
        let problem = match check(&outcome, 0.0) {
            Ok(()) => return outcome,
            Err(problem) => problem,
        };
        if stall_ms <= STALL_LIMIT_MS {
            panic!("{problem} (an undisturbed run: longest OS stall {stall_ms:.2} ms)");
        }
        eprintln!(
            "attempt {attempt}: {problem}; disturbed (OS stalled the process up to {stall_ms:.1} ms)"
        );
        problems.push(format!("{problem} [stall {stall_ms:.1} ms]"));
        if best.is_none() && check(&outcome, stall_ms).is_ok() {
            best = Some((outcome, stall_ms));
        }
    }
    match best {
        Some((outcome, stall_ms)) => {
            eprintln!(
                "no undisturbed run; accepted a run within its bounds + its own {stall_ms:.1} ms OS stall"
            );
            outcome
        }
        None => panic!("failed even with each run's OS stall as slack: {problems:?}"),
    }
}

/// [`checked`] for a simulator run: starts the sim, warms up, runs, stops.
pub async fn measure_checked(
    sim_config: SimConfig,
    ds: &Dataset,
    run: &RunConfig,
    warmups: usize,
    check: impl Fn(&BenchResult, &sim::SimStats, f64) -> Result<(), String>,
) -> (BenchResult, sim::SimStats) {
    checked(
        || measure(sim_config.clone(), ds, run, warmups),
        |(result, stats), slack| check(result, stats, slack),
    )
    .await
}

/// `Err` with a message unless `value` lies within [low, high].
pub fn within(what: &str, value: f64, low: f64, high: f64) -> Result<(), String> {
    if low <= value && value <= high {
        Ok(())
    } else {
        Err(format!(
            "{what} = {value:.3} not within [{low:.3}, {high:.3}]"
        ))
    }
}
