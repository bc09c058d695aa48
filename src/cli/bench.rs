//! `isobench bench`: the load generator alone, with `vllm bench serve`'s flag names and output.
//! The benchmark itself is `loadgen::run_benchmark` (as in a campaign session); this file parses
//! the flags, prints vLLM's lines and names the result file.
use crate::loadgen::{
    self, Backend, BenchEvent, BenchPlan, BenchResult, BenchStage, ClientConfig, DatasetConfig,
    Goodput, LoadClient, RunConfig, RunOutcome, WarmupPlan, Workload,
};
use crate::util::term::printable;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags are named as in `vllm bench serve` where the concept is the same, and their defaults
/// are vLLM's (0.31: `--backend openai`, `--num-prompts 1000`, random 1024/128 tokens, no
/// concurrency limit, no warm-up, EOS respected), so it is a drop-in. Campaigns do not use these
/// defaults: a manifest's `[load]` defaults are the seed's (openai-chat, 512/64 tokens,
/// 100 prompts, concurrency 16, 10 warm-ups, ignore EOS).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000 (overrides --host/--port).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Server host (without --base-url).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port (without --base-url).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// API path [default: /v1/chat/completions for openai-chat, /v1/completions for openai].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// openai (completions; `vllm` is accepted as an alias) or openai-chat.
    #[arg(long, default_value = "openai", value_parser = Backend::parse)]
    pub backend: Backend,
    /// Model (also used to find the tokenizer); default: the first one on /v1/models.
    #[arg(long)]
    pub model: Option<String>,
    /// Name sent in requests, if it differs from --model.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// tokenizer.json or a model directory [default: --model as a path, then the HF cache].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// random, sharegpt (--dataset-path: a ShareGPT JSON file), custom (--dataset-path: JSONL
    /// of {"prompt", "output_tokens"}) or prefix_repetition.
    #[arg(long, default_value = "random", value_parser = ["random", "sharegpt", "custom", "prefix_repetition"])]
    pub dataset_name: String,
    /// The dataset file (sharegpt, custom).
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// sharegpt: output length of every request [default: the recorded reply's].
    #[arg(long)]
    pub sharegpt_output_len: Option<u32>,
    /// custom: output length of every request; -1: each record's `output_tokens`.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true)]
    pub custom_output_len: i64,
    /// prefix_repetition: tokens of each shared prefix.
    #[arg(long, default_value_t = 256)]
    pub prefix_repetition_prefix_len: u32,
    /// prefix_repetition: tokens after the prefix.
    #[arg(long, default_value_t = 256)]
    pub prefix_repetition_suffix_len: u32,
    /// prefix_repetition: distinct prefixes (num_prompts / num_prefixes prompts each).
    #[arg(long, default_value_t = 10)]
    pub prefix_repetition_num_prefixes: u32,
    /// prefix_repetition: output tokens per request.
    #[arg(long, default_value_t = 128)]
    pub prefix_repetition_output_len: u32,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: u32,
    /// Output length in tokens.
    #[arg(long, default_value_t = 128)]
    pub random_output_len: u32,
    /// Lengths are drawn from [L·(1−r), L·(1+r)].
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Tokens of a random prefix shared by every prompt.
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: u32,
    /// Measured requests.
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    /// Requests in flight at most (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_concurrency: usize,
    /// Requests per second, or inf (all released at once).
    #[arg(long, default_value = "inf")]
    pub request_rate: f64,
    /// Gamma shape of arrival gaps (1 = Poisson); only with a finite rate.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Warm-up requests before the measured run (not counted).
    #[arg(long, default_value_t = 0)]
    pub num_warmups: usize,
    /// Seed of the dataset and the arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ask the server to ignore EOS (fixed output length). Off by default, as in vLLM.
    #[arg(long, overrides_with = "no_ignore_eos")]
    pub ignore_eos: bool,
    /// Let the model stop at EOS (the default).
    #[arg(long, overrides_with = "ignore_eos")]
    pub no_ignore_eos: bool,
    /// Sampling temperature (0: greedy, vLLM's default).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Metrics printed with percentiles: ttft,tpot,itl,e2el,client_queue_time,e2el_including_client_queue.
    #[arg(long, default_value = "ttft,tpot,itl")]
    pub percentile_metrics: String,
    /// Percentiles, e.g. 50,90,99.
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// SLOs in ms for goodput: ttft:200 tpot:20 e2el:2000.
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    /// Write the result JSON.
    #[arg(long)]
    pub save_result: bool,
    /// Also write per-request data (lists like vLLM's, plus raw records under `isobench`).
    #[arg(long)]
    pub save_detailed: bool,
    /// Directory of the result JSON [default: the current directory].
    #[arg(long)]
    pub result_dir: Option<PathBuf>,
    /// File name of the result JSON [default: vLLM's `<backend>-<rate>qps[-concurrency<N>]-<model>-<date>.json`].
    #[arg(long)]
    pub result_filename: Option<String>,
    /// KEY=VALUE pairs stored in the result.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Limit per request (seconds or 90s / 10m) [default: the run timeout].
    #[arg(long, value_parser = parse_seconds_or_duration)]
    pub request_timeout: Option<Duration>,
    /// Time-based run (not in vLLM): send without pause for --ramp-up + DURATION and measure
    /// the window after the ramp-up; prompts are cycled (docs/loadgen.md, "Time-based runs").
    #[arg(long, value_parser = parse_seconds_or_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// A timed run's unmeasured start [default: 5s; only with --duration].
    #[arg(long, value_parser = parse_seconds_or_duration, requires = "duration")]
    pub ramp_up: Option<Duration>,
    /// Limit for the whole measured run; open requests are cut and counted as failed.
    #[arg(long, default_value = "600", value_parser = parse_seconds_or_duration)]
    pub timeout: Duration,
    /// Retry a first test request this long until the server answers (0, the default as in
    /// vLLM, skips the check).
    #[arg(long, default_value_t = 0, value_parser = parse_ready_seconds)]
    pub ready_check_timeout_sec: u64,
    /// No progress bar.
    #[arg(long)]
    pub disable_tqdm: bool,
    /// Send `Authorization: Bearer $VAR` (e.g. `--api-key-env OPENAI_API_KEY`). Unlike
    /// `vllm bench serve`, OPENAI_API_KEY is never read implicitly.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
}

/// Seconds (`90`, `0.5`) or humantime (`90s`, `10m`), at most `util::MAX_DURATION`: the run's
/// deadline is `Instant::now() + timeout`, which must not overflow.
fn parse_seconds_or_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        // vLLM's flags take plain seconds; the manifest's rules (`util::parse_duration`) apply
        // to everything else, so the two never disagree about what `90s` or a week means.
        Ok(seconds) => {
            let d = Duration::try_from_secs_f64(seconds).map_err(|err| {
                format!(
                    "`{text}`: {err}; at most {} s",
                    crate::util::MAX_DURATION.as_secs()
                )
            })?;
            crate::util::check_duration(text, d)
        }
        Err(_) => crate::util::parse_duration(text),
    }
}

/// `--ready-check-timeout-sec`: whole seconds, at most `util::MAX_DURATION`.
fn parse_ready_seconds(text: &str) -> Result<u64, String> {
    let secs: u64 = text
        .trim()
        .parse()
        .map_err(|e| format!("`{text}` is not a whole number of seconds: {e}"))?;
    crate::util::check_duration(text, Duration::from_secs(secs))?;
    Ok(secs)
}

fn parse_list(text: &str, what: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = text
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(items)
    }
}

/// Python's `str(float)`: `10.0`, `0.5`, `inf`.
fn python_float(value: f64) -> String {
    if value.is_infinite() {
        "inf".into()
    } else if value.fract() == 0.0 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

impl BenchArgs {
    fn metadata_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.metadata
            .iter()
            .map(|item| {
                item.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("metadata `{item}`: use KEY=VALUE"))
            })
            .collect()
    }

    fn run_config(&self, served_model: String) -> Result<RunConfig, String> {
        let percentiles = parse_list(&self.metric_percentiles, "--metric-percentiles")?
            .iter()
            .map(|p| {
                p.parse::<f64>()
                    .map_err(|_| format!("percentile `{p}` is not a number"))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        Ok(RunConfig {
            backend: self.backend,
            endpoint: self
                .endpoint
                .clone()
                .unwrap_or_else(|| self.backend.default_endpoint().to_string()),
            model: served_model,
            max_concurrency: (self.max_concurrency > 0).then_some(self.max_concurrency),
            request_rate: self.request_rate,
            burstiness: self.burstiness,
            ignore_eos: self.ignore_eos && !self.no_ignore_eos,
            temperature: self.temperature,
            run_timeout: self.timeout,
            seed: self.seed,
            percentiles,
            percentile_metrics: parse_list(&self.percentile_metrics, "--percentile-metrics")?,
            goodput: Goodput::parse(&self.goodput)?,
            timed: self.duration.map(|duration| crate::loadgen::TimedWindow {
                ramp_up: self.ramp_up.unwrap_or(Duration::from_secs(5)),
                duration,
            }),
        })
    }
}

/// Errors may quote the server (a not-ready or warm-up error): no control characters.
fn fail(message: String) -> miette::Report {
    miette::miette!("{}", printable(&message))
}

/// `isobench bench`, in vLLM's order: client and model, prompts, then the library's benchmark
/// (ready check, warm-up, the measured run; rendered by [`Console`]), then the summary and the
/// saved result.
pub async fn run(args: BenchArgs) -> miette::Result<ExitCode> {
    let metadata = args.metadata_pairs().map_err(fail)?;
    let client = connect(&args)?;
    let model = match &args.model {
        Some(model) => model.clone(),
        None => client
            .first_served_model()
            .await
            .map_err(|err| fail(err.to_string()))?,
    };
    let dataset = prompts(&args, &model)?;
    let served = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| model.clone());
    let run = args.run_config(served).map_err(fail)?;
    run.validate().map_err(|err| fail(err.to_string()))?;
    if args.ready_check_timeout_sec == 0 {
        println!("Skipping endpoint ready check.");
    }
    let show_bar = !args.disable_tqdm && std::io::stderr().is_terminal();
    let plan = BenchPlan {
        run: &run,
        ready_check: (args.ready_check_timeout_sec > 0)
            .then(|| Duration::from_secs(args.ready_check_timeout_sec)),
        warmup: (args.num_warmups > 0).then_some(WarmupPlan {
            dataset: &dataset,
            requests: args.num_warmups,
        }),
        measure: Some(&dataset),
        // A bar moves smoothly; plain lines (logs, CI) come every 10 s.
        progress_every: Duration::from_millis(if show_bar { 200 } else { 10_000 }),
    };
    let mut console = Console {
        run: &run,
        total: dataset.requests.len(),
        show_bar,
        bar: None,
    };
    let benchmark = loadgen::run_benchmark(&client, &plan, |event| console.show(event)).await;
    console.finish();
    let result = match benchmark {
        Ok(done) => done.measured.expect("the plan has a measured run").result,
        Err(err) if err.stage == BenchStage::ReadyCheck => {
            return Err(fail(format!("Initial test run failed: {}", err.error)));
        }
        Err(err) => return Err(fail(err.error.to_string())),
    };

    print_failures(&result);
    print!("{}", result.summary_text());
    for warning in &result.audit.warnings {
        eprintln!("self-audit warning: {warning}");
    }
    if args.save_result || args.save_detailed {
        save(&args, &model, &result, &metadata)?;
    }
    Ok(match result.outcome() {
        RunOutcome::Ok => ExitCode::SUCCESS,
        RunOutcome::TimedOut | RunOutcome::AllRequestsFailed => {
            if let Some(failure) = result.failure() {
                eprintln!("error: {}", printable(&failure.to_string()));
            }
            ExitCode::FAILURE
        }
    })
}

/// The client, with one pooled connection per concurrent request and the API key if asked.
fn connect(args: &BenchArgs) -> miette::Result<LoadClient> {
    let base_url = args
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}:{}", args.host, args.port));
    let pool_size = if args.max_concurrency > 0 {
        args.max_concurrency
    } else {
        args.num_prompts
    };
    let client = LoadClient::new(ClientConfig {
        base_url: base_url.clone(),
        pool_size,
        request_timeout: args.request_timeout.unwrap_or(args.timeout),
    })
    .and_then(|client| match &args.api_key_env {
        Some(name) => client.with_api_key_env(name),
        None => Ok(client),
    })
    .map_err(|err| fail(err.to_string()))?;
    if args.api_key_env.is_none() && std::env::var_os("OPENAI_API_KEY").is_some() {
        // `vllm bench serve` would send it; say why isobench does not.
        eprintln!(
            "note: OPENAI_API_KEY is set but not sent to the server; pass --api-key-env OPENAI_API_KEY to send it"
        );
    }
    Ok(client)
}

/// The random dataset, tokenized with the model's tokenizer when one is found (synthetic
/// prompts otherwise, with a warning).
fn prompts(args: &BenchArgs, model: &str) -> miette::Result<loadgen::Dataset> {
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(path.clone()),
        None => loadgen::find_tokenizer(model),
    };
    if tokenizer.is_none() {
        eprintln!(
            "warning: no tokenizer found for `{model}` (give --tokenizer): using synthetic prompts; \
             token counts come from the server's usage"
        );
    }
    let dataset_config = dataset_config(args)?;
    let dataset = loadgen::build_dataset(&dataset_config, tokenizer.as_deref())
        .map_err(|err| fail(err.to_string()))?;
    if dataset.mismatched_prompts > 0 {
        eprintln!(
            "warning: {} prompt(s) missed their token length after decoding and re-encoding (total {:+} tokens)",
            dataset.mismatched_prompts, dataset.residual_mismatch
        );
    }
    Ok(dataset)
}

/// `--dataset-name` and its options, as `vllm bench serve` reads them.
fn dataset_config(args: &BenchArgs) -> miette::Result<DatasetConfig> {
    let path = || {
        args.dataset_path.clone().ok_or_else(|| {
            fail(format!(
                "--dataset-name {} needs --dataset-path",
                args.dataset_name
            ))
        })
    };
    let mut cfg = DatasetConfig {
        input_len: args.random_input_len,
        output_len: args.random_output_len,
        range_ratio: args.random_range_ratio,
        prefix_len: args.random_prefix_len,
        num_prompts: args.num_prompts,
        seed: args.seed,
        workload: Workload::Random,
    };
    cfg.workload = match args.dataset_name.as_str() {
        "sharegpt" => Workload::Sharegpt {
            path: path()?,
            output_len: args.sharegpt_output_len,
            multi_turn: false,
        },
        "custom" => Workload::Custom {
            path: path()?,
            // vLLM: -1 (or any negative) reads each record's `output_tokens`.
            output_len: u32::try_from(args.custom_output_len).ok(),
            multi_turn: false,
        },
        "prefix_repetition" => {
            cfg.prefix_len = args.prefix_repetition_prefix_len;
            cfg.output_len = args.prefix_repetition_output_len;
            Workload::PrefixRepetition {
                suffix_len: args.prefix_repetition_suffix_len,
                num_prefixes: args.prefix_repetition_num_prefixes,
            }
        }
        _ => Workload::Random,
    };
    if cfg.workload.path().is_none() && args.dataset_path.is_some() {
        return Err(fail(format!(
            "--dataset-path is read by sharegpt and custom, not {}",
            args.dataset_name
        )));
    }
    Ok(cfg)
}

/// What `bench` shows of the benchmark's stages: vLLM's lines on stdout, and during the
/// measured run a progress bar on a terminal, plain lines on stderr otherwise.
struct Console<'a> {
    run: &'a RunConfig,
    /// Requests of the measured run (the bar's length).
    total: usize,
    show_bar: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Console<'_> {
    fn show(&mut self, event: BenchEvent<'_>) {
        match event {
            BenchEvent::ReadyCheck => println!("Starting initial single prompt test run..."),
            BenchEvent::Ready => println!("Initial test run completed."),
            BenchEvent::WarmingUp { requests } => {
                println!("Warming up with {requests} requests...")
            }
            BenchEvent::WarmedUp(warm) => {
                if warm.failed > 0 {
                    eprintln!(
                        "warning: {} of {} warm-up requests failed",
                        warm.failed, warm.requests
                    );
                }
                println!("Warmup run completed.");
            }
            BenchEvent::Measuring => {
                announce_run(self.run);
                if self.show_bar {
                    self.bar = Some(indicatif::ProgressBar::new(self.total as u64));
                }
            }
            BenchEvent::Progress { progress, .. } => match &self.bar {
                Some(bar) => {
                    bar.set_position(progress.finished() as u64);
                    bar.set_message(format!("{} failed", progress.failed()));
                }
                None => eprintln!(
                    "progress: {}/{} done ({} failed), {} output tokens",
                    progress.finished(),
                    self.total,
                    progress.failed(),
                    progress.output_tokens()
                ),
            },
        }
    }

    /// The run is over: the bar stays, at its end.
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// vLLM's lines before the measured run.
fn announce_run(run: &RunConfig) {
    println!("Starting main benchmark run...");
    println!("Traffic request rate: {}", python_float(run.request_rate));
    let distribution = if run.burstiness == 1.0 {
        "Poisson process"
    } else {
        "Gamma distribution"
    };
    println!(
        "Burstiness factor: {} ({distribution})",
        python_float(run.burstiness)
    );
    println!(
        "Maximum request concurrency: {}",
        run.max_concurrency
            .map_or("None".to_string(), |c| c.to_string())
    );
}

/// `--save-result` / `--save-detailed`: the result JSON where vLLM would put it.
fn save(
    args: &BenchArgs,
    model: &str,
    result: &BenchResult,
    metadata: &[(String, String)],
) -> miette::Result<()> {
    let path = result_path(args, model, result);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|err| fail(format!("cannot create {}: {err}", parent.display())))?;
    }
    result
        .save(&path, args.save_detailed, metadata)
        .map_err(|err| fail(format!("cannot write {}: {err}", path.display())))?;
    println!("Result saved to {}", path.display());
    Ok(())
}

/// vLLM lists up to 10 failed requests before the summary.
fn print_failures(result: &BenchResult) {
    let failed: Vec<_> = result.records.iter().filter(|r| !r.success()).collect();
    if failed.is_empty() {
        return;
    }
    println!("Failed requests during benchmark run detected (capping to 10):");
    for (i, record) in failed.iter().take(10).enumerate() {
        println!("Error {i}: {}", printable(record.error_message()));
    }
}

/// vLLM's default name: `{backend}-{rate}qps[-concurrency{N}]-{model}-{date}.json`.
fn result_path(args: &BenchArgs, model: &str, result: &BenchResult) -> PathBuf {
    let name = args.result_filename.clone().unwrap_or_else(|| {
        let base_model = model
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(model);
        let concurrency = result
            .run
            .max_concurrency
            .map(|c| format!("-concurrency{c}"))
            .unwrap_or_default();
        let date = result.to_json(false, &[])["date"]
            .as_str()
            .unwrap_or("")
            .to_string();
        format!(
            "{}-{}qps{concurrency}-{base_model}-{date}.json",
            result.run.backend.as_str(),
            python_float(result.run.request_rate)
        )
    });
    match &args.result_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// Flags as in vLLM (defaults: see `defaults_are_vllm_bench_serves`).
    #[test]
    fn flags_parse_like_vllm() {
        let args = Wrapper::parse_from([
            "x",
            "--backend",
            "vllm",
            "--request-rate",
            "12.5",
            "--max-concurrency",
            "0",
            "--no-ignore-eos",
            "--metric-percentiles",
            "50,99.9",
            "--goodput",
            "ttft:100",
            "tpot:5",
            "--metadata",
            "a=1",
            "b = two",
            "--timeout",
            "2m",
        ])
        .args;
        let run = args.run_config("m".into()).unwrap();
        assert_eq!(run.endpoint, "/v1/completions");
        assert_eq!(
            (run.max_concurrency, run.request_rate, run.ignore_eos),
            (None, 12.5, false)
        );
        assert_eq!(run.percentiles, vec![50.0, 99.9]);
        assert_eq!(run.goodput.tpot_ms, Some(5.0));
        assert_eq!(run.run_timeout, Duration::from_secs(120));
        assert_eq!(
            args.metadata_pairs().unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "two".into())]
        );
    }

    #[test]
    fn durations_beyond_the_maximum_are_refused() {
        // Each would overflow `Instant::now() + timeout` (a panic) if accepted.
        for flags in [
            ["--timeout", "1e12"],
            ["--timeout", "500000000000y"],
            ["--request-timeout", "8d"],
            ["--ready-check-timeout-sec", "18446744073709551615"],
        ] {
            let err = Wrapper::try_parse_from(["x", flags[0], flags[1]])
                .err()
                .unwrap_or_else(|| panic!("{flags:?} accepted"))
                .to_string();
            assert!(err.contains("at most"), "{flags:?}: {err}");
        }
        let ok = Wrapper::try_parse_from(["x", "--timeout", "7d"]).unwrap();
        assert_eq!(ok.args.timeout, crate::util::MAX_DURATION);
    }

    #[test]
    fn python_float_formatting() {
        assert_eq!(python_float(f64::INFINITY), "inf");
        assert_eq!(python_float(10.0), "10.0");
        assert_eq!(python_float(2.5), "2.5");
    }
}

#[cfg(test)]
mod default_tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> super::BenchArgs {
        let mut argv = vec!["isobench", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Bench(b) => b,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// A drop-in for `vllm bench serve`: its defaults (checked against vLLM 0.31's
    /// `vllm/benchmarks/serve.py` and `datasets.py`), not the seed's campaign settings.
    #[test]
    fn defaults_are_vllm_bench_serves() {
        let b = parse(&[]);
        assert_eq!(b.backend, crate::loadgen::Backend::parse("openai").unwrap());
        assert_eq!(b.num_prompts, 1000);
        assert_eq!((b.random_input_len, b.random_output_len), (1024, 128));
        assert_eq!(b.max_concurrency, 0, "no limit");
        assert_eq!(b.num_warmups, 0);
        assert_eq!(b.ready_check_timeout_sec, 0);
        assert_eq!(b.percentile_metrics, "ttft,tpot,itl");
        assert_eq!(b.metric_percentiles, "99");
        assert!(b.request_rate.is_infinite());
        let run = b.run_config("m".into()).unwrap();
        assert!(!run.ignore_eos, "vLLM respects EOS unless --ignore-eos");
        assert_eq!(run.endpoint, "/v1/completions");
        assert!(
            parse(&["--ignore-eos"])
                .run_config("m".into())
                .unwrap()
                .ignore_eos
        );
        assert!(
            !parse(&["--ignore-eos", "--no-ignore-eos"])
                .run_config("m".into())
                .unwrap()
                .ignore_eos
        );
    }
}
