//! The native load generator: datasets, the streaming client, vLLM-identical metrics.
//!
//! Semantics follow `vllm bench serve` of vLLM 0.31/0.32 (see [`SEMANTICS`] and
//! `docs/loadgen.md`); raw per-request timings are kept so any other definition can be
//! recomputed. [`run_benchmark`] is the one entry point for a benchmark (ready check, warm-up,
//! measured run with progress): `isobench bench` calls it once; the executor builds a
//! [`Dataset`] once per commit, makes one [`LoadClient`] per server session, calls it for the
//! warm-up step and for each measure step, and saves [`BenchResult::save`].
mod audit;
mod benchmark;
mod client;
mod console;
mod dataset;
mod files;
mod json;
mod metrics;
mod prefix;
mod pyrandom;
mod record;
mod result;
pub mod search;
pub mod sse;
pub mod stats;

pub use audit::{LagSummary, SelfAudit};
pub use benchmark::{
    BenchError, BenchEvent, BenchPlan, BenchRun, BenchStage, MeasuredRun, WarmupPlan, run_benchmark,
};
pub use client::{LoadClient, WarmupSummary};
pub use dataset::{
    ChatMessage, Dataset, DatasetConfig, SampleRequest, TokenizerInfo, Workload, build_dataset,
    find_tokenizer, resolve_tokenizer_file,
};
pub use files::{check_dataset_file, dataset_file_hash};
pub use metrics::{Metrics, WindowSummary};
pub use record::{ErrorKind, RequestError, RequestRecord};
pub use result::{BenchResult, RunOutcome};

use crate::failure::{Failure, FailureClass};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Limits on what one response may make the client keep: far above any real response, so only
/// a broken or hostile server meets them; the request then fails as `response_too_large` and the
/// run goes on. A line or an event's data: [`sse::MAX_EVENT_BYTES`].
pub use sse::MAX_EVENT_BYTES;
/// Generated text kept per request (for client-side token counting): 4 MiB, about a million
/// tokens of English.
pub const MAX_RESPONSE_TEXT_BYTES: usize = 4 << 20;
/// Choice-bearing events (timestamps) kept per request: 2^20 (8 MiB of timestamps), a million
/// tokens streamed one per event.
pub const MAX_RESPONSE_EVENTS: usize = 1 << 20;

/// The metric definitions followed, named in every result.
pub const SEMANTICS: &str = "vllm-bench-serve-0.32: ttft=first choice-bearing event (role-only chunk counts), \
itl=gaps between choice-bearing events, e2el=last choice-bearing event, tpot=(e2el-ttft)/(output_tokens-1), \
output_tokens=usage.completion_tokens";

/// Which OpenAI API the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Backend {
    /// `/v1/chat/completions` with `messages`.
    #[serde(rename = "openai-chat")]
    OpenAiChat,
    /// `/v1/completions` with `prompt`.
    #[serde(rename = "openai")]
    OpenAi,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::OpenAiChat => "openai-chat",
            Backend::OpenAi => "openai",
        }
    }

    pub fn default_endpoint(self) -> &'static str {
        match self {
            Backend::OpenAiChat => "/v1/chat/completions",
            Backend::OpenAi => "/v1/completions",
        }
    }

    /// Accepts vLLM's names (`vllm` is its completions backend).
    pub fn parse(name: &str) -> Result<Backend, String> {
        match name {
            "openai-chat" | "chat" => Ok(Backend::OpenAiChat),
            "openai" | "vllm" | "completions" => Ok(Backend::OpenAi),
            other => Err(format!(
                "unknown backend `{other}` (expected openai-chat or openai)"
            )),
        }
    }
}

/// Connection settings; one [`LoadClient`] (one keep-alive pool) per server session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` (no trailing path).
    pub base_url: String,
    /// Idle connections kept per host: at least the highest concurrency used.
    pub pool_size: usize,
    /// Limit for one request, from send to the end of its stream.
    pub request_timeout: Duration,
}

/// Service-level objectives for goodput, in ms (a request is good if it meets all given):
/// `--goodput` of `bench`, `[load.slo]` of a manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Goodput {
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    #[serde(default)]
    pub tpot_ms: Option<f64>,
    #[serde(default)]
    pub e2el_ms: Option<f64>,
}

impl Goodput {
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2el_ms.is_some()
    }

    /// `TTFT ≤ 500 ms and TPOT ≤ 50 ms`: the objectives that are set, for people.
    pub fn describe(&self) -> String {
        [
            ("TTFT", self.ttft_ms),
            ("TPOT", self.tpot_ms),
            ("E2E", self.e2el_ms),
        ]
        .into_iter()
        .filter_map(|(name, ms)| Some(format!("{name} ≤ {} ms", ms?)))
        .collect::<Vec<_>>()
        .join(" and ")
    }

    /// Whether a successful request with these latencies (seconds) is good: every given SLO ≥
    /// its value (vLLM's rule; a one-token request's TPOT is 0).
    pub fn admits(&self, ttft_s: f64, tpot_s: f64, e2el_s: f64) -> bool {
        self.ttft_ms.is_none_or(|slo| slo / 1000.0 >= ttft_s)
            && self.tpot_ms.is_none_or(|slo| slo / 1000.0 >= tpot_s)
            && self.e2el_ms.is_none_or(|slo| slo / 1000.0 >= e2el_s)
    }

    /// Parses vLLM's `KEY:VALUE` pairs (`ttft:200 tpot:20`).
    pub fn parse(pairs: &[String]) -> Result<Goodput, String> {
        let mut goodput = Goodput::default();
        for pair in pairs {
            let (key, value) = pair
                .split_once(':')
                .ok_or_else(|| format!("goodput `{pair}`: expected KEY:VALUE"))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("goodput `{pair}`: value is not a number"))?;
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("goodput `{pair}`: value must be ≥ 0 ms"));
            }
            match key.trim() {
                "ttft" => goodput.ttft_ms = Some(value),
                "tpot" => goodput.tpot_ms = Some(value),
                "e2el" => goodput.e2el_ms = Some(value),
                other => return Err(format!("goodput `{other}`: expected ttft, tpot or e2el")),
            }
        }
        Ok(goodput)
    }
}

/// One measured run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub backend: Backend,
    pub endpoint: String,
    /// The model name sent in requests (the served name).
    pub model: String,
    /// Requests in flight at most (FIFO); None = unlimited.
    pub max_concurrency: Option<usize>,
    /// Requests per second; `f64::INFINITY` releases all at once.
    pub request_rate: f64,
    /// Gamma shape of inter-arrival times (1 = Poisson); only with a finite rate.
    pub burstiness: f64,
    pub ignore_eos: bool,
    pub temperature: f64,
    /// The whole run must end by then; requests still open are cut and counted as failed.
    pub run_timeout: Duration,
    /// Seed of the arrival times (datasets have their own seed).
    pub seed: u64,
    /// Percentiles to report, e.g. `[99.0]`.
    pub percentiles: Vec<f64>,
    /// Metrics to print with percentiles: ttft, tpot, itl, e2el, client_queue_time,
    /// e2el_including_client_queue (the JSON always has ttft/tpot/itl/e2el).
    pub percentile_metrics: Vec<String>,
    pub goodput: Goodput,
    /// Time-based (steady-state) measurement instead of one pass over the dataset.
    pub timed: Option<TimedWindow>,
}

/// A time-based run (`load.duration`, `load.ramp_up`): requests are sent without pause (the
/// dataset's prompts in order, cycled) from the start until `ramp_up + duration`; those sent
/// during `ramp_up` fill the server and are not measured; those sent within the window are
/// measured and allowed to finish (as `vllm bench serve` waits for every request). Throughput
/// counts what the server produced *inside* the window, so neither the ramp-up nor the drain
/// at the end dilutes it (`docs/loadgen.md`, "Time-based runs").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimedWindow {
    #[serde(
        rename = "ramp_up_s",
        serialize_with = "crate::util::serialize_duration_s"
    )]
    pub ramp_up: std::time::Duration,
    #[serde(
        rename = "duration_s",
        serialize_with = "crate::util::serialize_duration_s"
    )]
    pub duration: std::time::Duration,
}

impl TimedWindow {
    /// The measured window, seconds from the run's start.
    pub fn bounds_s(&self) -> (f64, f64) {
        let start = self.ramp_up.as_secs_f64();
        (start, start + self.duration.as_secs_f64())
    }
}

impl Default for RunConfig {
    /// The seed's load settings: openai-chat, concurrency 16, rate inf, 600 s.
    fn default() -> RunConfig {
        RunConfig {
            backend: Backend::OpenAiChat,
            endpoint: Backend::OpenAiChat.default_endpoint().into(),
            model: String::new(),
            max_concurrency: Some(16),
            request_rate: f64::INFINITY,
            burstiness: 1.0,
            ignore_eos: true,
            temperature: 0.0,
            run_timeout: Duration::from_secs(600),
            seed: 0,
            percentiles: vec![99.0],
            percentile_metrics: ["ttft", "tpot", "itl", "e2el"].map(String::from).to_vec(),
            goodput: Goodput::default(),
            timed: None,
        }
    }
}

pub const PERCENTILE_METRICS: [&str; 6] = [
    "ttft",
    "tpot",
    "itl",
    "e2el",
    "client_queue_time",
    "e2el_including_client_queue",
];

impl RunConfig {
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let mut problems = Vec::new();
        if self.model.is_empty() {
            problems.push("model is empty".to_string());
        }
        if !self.endpoint.starts_with('/') {
            problems.push(format!("endpoint `{}` must start with /", self.endpoint));
        }
        if self.max_concurrency == Some(0) {
            problems.push("max concurrency must be ≥ 1 (None = unlimited)".into());
        }
        if self.request_rate.is_nan() || self.request_rate <= 0.0 {
            problems.push(format!(
                "request rate must be > 0 (got {})",
                self.request_rate
            ));
        }
        if self.burstiness.is_nan() || self.burstiness <= 0.0 {
            problems.push(format!("burstiness must be > 0 (got {})", self.burstiness));
        }
        if self.percentiles.iter().any(|p| !(0.0..=100.0).contains(p)) {
            problems.push("percentiles must be within 0..=100".into());
        }
        for metric in &self.percentile_metrics {
            if !PERCENTILE_METRICS.contains(&metric.as_str()) {
                problems.push(format!(
                    "unknown percentile metric `{metric}` (expected one of {PERCENTILE_METRICS:?})"
                ));
            }
        }
        if let Some(timed) = &self.timed {
            if timed.duration.is_zero() {
                problems.push("a timed run's duration must be > 0".into());
            }
            if self.request_rate.is_infinite() && self.max_concurrency.is_none() {
                problems.push(
                    "a timed run at rate inf needs a concurrency limit (it would send without end)"
                        .into(),
                );
            }
            if timed.ramp_up.saturating_add(timed.duration) >= self.run_timeout {
                problems.push(format!(
                    "ramp-up + duration ({:.0} s) must be shorter than the run's timeout ({:.0} s): requests in flight at the window's end need time to finish",
                    timed.ramp_up.saturating_add(timed.duration).as_secs_f64(),
                    self.run_timeout.as_secs_f64()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadgenError::Config(problems.join("; ")))
        }
    }
}

/// Live counters for a progress view (updated as requests finish).
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicUsize,
    pub sent: AtomicUsize,
    pub completed: AtomicUsize,
    pub failed: AtomicUsize,
    pub output_tokens: AtomicU64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens.load(Ordering::Relaxed)
    }
    pub fn finished(&self) -> usize {
        self.completed() + self.failed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid load settings: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
    /// Every warm-up request failed (the server answers, but not usefully).
    #[error("all {attempted} warm-up requests failed; first error: {first_error}")]
    WarmupFailed {
        attempted: usize,
        first_error: String,
    },
    /// The server never answered a test request successfully within the readiness timeout.
    #[error("server not ready after {waited_s:.0} s: {last_error}")]
    NotReady { waited_s: f64, last_error: String },
}

impl LoadgenError {
    /// The shared failure class this error maps to.
    pub fn failure_class(&self) -> FailureClass {
        match self {
            LoadgenError::WarmupFailed { .. } => FailureClass::AllRequestsFailed,
            LoadgenError::NotReady { .. } => FailureClass::StartupTimeout,
            LoadgenError::Config(_) | LoadgenError::Tokenizer(_) | LoadgenError::Client(_) => {
                FailureClass::Internal
            }
        }
    }

    pub fn to_failure(&self) -> Failure {
        Failure::new(self.failure_class(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodput_parses_vllm_pairs() {
        let g = Goodput::parse(&["ttft:200".into(), "e2el: 1500.5".into()]).unwrap();
        assert_eq!(
            g,
            Goodput {
                ttft_ms: Some(200.0),
                tpot_ms: None,
                e2el_ms: Some(1500.5)
            }
        );
        assert!(Goodput::parse(&["itl:5".into()]).is_err());
        assert!(Goodput::parse(&["ttft=5".into()]).is_err());
        assert!(!Goodput::default().is_set());
    }

    #[test]
    fn run_config_validation_lists_every_problem() {
        let bad = RunConfig {
            model: String::new(),
            max_concurrency: Some(0),
            request_rate: 0.0,
            percentile_metrics: vec!["ttfb".into()],
            ..RunConfig::default()
        };
        let LoadgenError::Config(message) = bad.validate().unwrap_err() else {
            panic!("not a config error")
        };
        for needle in ["model", "concurrency", "rate", "ttfb"] {
            assert!(message.contains(needle), "{needle} missing in: {message}");
        }
        assert!(
            RunConfig {
                model: "m".into(),
                ..RunConfig::default()
            }
            .validate()
            .is_ok()
        );
    }
}
