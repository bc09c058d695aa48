//! What the report reads: the campaign's commits and arms, and every trial the executor recorded.
//!
//! The lead fills a [`ReportInput`] from the state directory (journal + attempt dirs); the report
//! never touches the state itself. All types are serde round-trippable, so a campaign's input can
//! be saved as JSON and reported again (tests and `--input-json` use that).
use crate::failure::Failure;
use crate::manifest::types::ArmRole;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything the report needs about one campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    pub campaign: String,
    /// When the report was generated (RFC 3339); rendered verbatim so output stays reproducible.
    pub generated_at: String,
    /// Confidence level of every interval (manifest `compare.confidence`, default 0.95).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// The seed's rule, optional: a difference of at least this many percent is a win or a loss.
    #[serde(default)]
    pub threshold_pct: Option<f64>,
    /// Commits in manifest order.
    pub commits: Vec<CommitInfo>,
    /// Arms in manifest order.
    pub arms: Vec<ArmInfo>,
    pub trials: Vec<TrialRecord>,
    /// How each commit's arm got its image (see [`super::model::ImageRow`]).
    #[serde(default)]
    pub images: Vec<super::model::ImageRow>,
    /// How generated outputs are compared (`[check.outputs]`, the commits' tokenizers).
    #[serde(default)]
    pub outputs: OutputsInput,
    /// Per commit (short hash): its `[load.slo]` (ms). Goodput is counted against it.
    #[serde(default)]
    pub slos: BTreeMap<String, crate::loadgen::Goodput>,
    /// Percentiles the report shows for TTFT, TPOT, ITL, E2E (`load.percentiles`); empty = [50, 99].
    #[serde(default)]
    pub percentiles: Vec<f64>,
}

/// What the output-equivalence check needs beyond the trials (see [`super::outputs`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputsInput {
    /// `[check.outputs] mode` (default `floor`).
    #[serde(default)]
    pub mode: crate::manifest::types::OutputsMode,
    /// Per commit (short hash): the `tokenizer.json` its prompts were made with, so that a
    /// divergence is counted in tokens; commits without one are compared in characters.
    #[serde(default)]
    pub tokenizers: std::collections::BTreeMap<String, PathBuf>,
}

pub fn default_confidence() -> f64 {
    0.95
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Short hash (8+ characters); trials refer to commits by it.
    pub short: String,
    pub human_full: String,
    pub parent: String,
    /// Hugging Face id of the model this commit is served with.
    pub model_hf: String,
    #[serde(default)]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmInfo {
    pub name: String,
    pub role: ArmRole,
}

/// One measure step of one (commit, arm, trial, load point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Short hash, as in [`CommitInfo::short`].
    pub commit: String,
    pub arm: String,
    /// Trial number (1-based by convention). Trials of the arms of one commit with the same
    /// number ran in the same interleaved round, which is what paired comparisons rely on.
    pub trial: u32,
    /// Load point label, e.g. `conc=16` or `conc=16,rate=4`; arms are compared per point.
    pub point: String,
    pub outcome: TrialOutcome,
    /// When the measurement finished (RFC 3339).
    pub timestamp: String,
    /// Wall time of the step, seconds.
    pub duration_s: f64,
    #[serde(default)]
    pub result_path: Option<PathBuf>,
    /// Wall time of the whole run this trial belongs to: from the server's start to its stop
    /// (the seed's `duration_s`, which timed the whole `docker run`), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_s: Option<f64>,
    /// The container image the arm ran (for an agent arm, the base image its patch applies to),
    /// the seed's `docker_image`; none for a process runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The cluster node the trial's session ran on (Slurm backend; `None` on this host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Where and when the measurement ran (absent in results of older versions).
    #[serde(default)]
    pub measured: Option<MeasureInfo>,
}

/// Where and when one measurement ran: the report's measurement-quality section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeasureInfo {
    /// Measurement window, seconds since the Unix epoch (one clock for every trial of a run).
    pub window_start: f64,
    pub window_end: f64,
    /// GPUs the server ran on: UUIDs, or `gpu<index>` for declared GPUs without one.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The isolation policy it was measured under (`exclusive`, `paired`, `none`).
    #[serde(default)]
    pub isolate: Option<String>,
    /// The load generator's self-audit warnings for this run.
    #[serde(default)]
    pub audit_warnings: Vec<String>,
    /// Timed runs (`load.duration`): the measured window's length; the run itself (window_start
    /// to window_end) also spans the ramp-up and the drain.
    #[serde(default)]
    pub measured_s: Option<f64>,
    /// Timed runs: requests that re-sent a prompt of the same run (the dataset was cycled).
    #[serde(default)]
    pub prompts_reused: Option<u64>,
}

impl MeasureInfo {
    /// How long the run took, from the first request to the last answer.
    pub fn window_s(&self) -> f64 {
        (self.window_end - self.window_start).max(0.0)
    }

    /// How long was measured: a timed run's window, else the whole run.
    pub fn measured_window_s(&self) -> f64 {
        self.measured_s.unwrap_or_else(|| self.window_s())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TrialOutcome {
    /// The measurement finished; its metrics.
    Ok(Box<TrialMetrics>),
    /// A step of this trial failed (pull, patch, start, measure, ...).
    Failed(Failure),
    /// The arm does not exist for this commit (for example no patch file): not a failure.
    Absent { reason: String },
}

/// The load generator's result JSON, with vLLM's key names (`vllm bench serve --save-result`).
/// Every field is optional so that results of older clients, or without `--save-detailed`,
/// still load; a metric that is missing is reported as not available, never as zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialMetrics {
    pub duration: Option<f64>,
    pub completed: Option<u64>,
    pub failed: Option<u64>,
    pub total_input_tokens: Option<u64>,
    pub total_output_tokens: Option<u64>,
    pub request_throughput: Option<f64>,
    /// Output tokens per second: the headline (the seed's `throughput_tok_s`).
    pub output_throughput: Option<f64>,
    pub total_token_throughput: Option<f64>,
    /// vLLM's goodput (good requests per second against the run's `--goodput` SLOs); the report
    /// uses it only when the per-request arrays are missing (see [`TrialMetrics::goodput`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_goodput: Option<f64>,

    pub mean_ttft_ms: Option<f64>,
    pub median_ttft_ms: Option<f64>,
    pub std_ttft_ms: Option<f64>,
    pub p99_ttft_ms: Option<f64>,
    pub mean_tpot_ms: Option<f64>,
    pub median_tpot_ms: Option<f64>,
    pub std_tpot_ms: Option<f64>,
    pub p99_tpot_ms: Option<f64>,
    pub mean_itl_ms: Option<f64>,
    pub median_itl_ms: Option<f64>,
    pub std_itl_ms: Option<f64>,
    pub p99_itl_ms: Option<f64>,
    pub mean_e2el_ms: Option<f64>,
    pub median_e2el_ms: Option<f64>,
    pub std_e2el_ms: Option<f64>,
    pub p99_e2el_ms: Option<f64>,

    // Per-request arrays (`--save-detailed`); used for distribution charts when present.
    /// Time to first token per request, seconds (0 for a failed request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfts: Option<Vec<f64>>,
    /// Inter-token gaps per request, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itls: Option<Vec<Vec<f64>>>,
    /// End-to-end latency per request, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latencies: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lens: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_lens: Option<Vec<u64>>,
    /// Error text per request; empty for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    /// The text each request generated (`--save-detailed`), in the order of the per-request
    /// lists: the requests' send order (vLLM's: prompt order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_texts: Option<Vec<String>>,
    /// Not a vLLM key: per entry of the per-request lists, the dataset prompt it answered. Read
    /// from the `isobench` block (`requests[].index` modulo the dataset's prompts) by
    /// [`TrialMetrics::from_json`]; absent for vLLM's own results, whose lists are in prompt
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_indices: Option<Vec<usize>>,
    /// A campaign measurement's `isobench.telemetry` (server metrics, GPU, host CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TrialTelemetry>,
    /// Not vLLM keys: the result JSON's other latency percentiles (`p90_ttft_ms`, `p99.9_e2el_ms`,
    /// ...), read by [`TrialMetrics::from_json`]; configured percentiles fall back to them when the
    /// per-request arrays are missing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_percentiles: BTreeMap<String, f64>,
    /// A search step's `isobench.search`: the SLO search over rate or concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchResult>,
}

/// What a search step found (`isobench.search` of its result JSON; `docs/report.md`,
/// "Searches"). Unknown fields are ignored, missing ones default, so later additions load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub over: SearchOver,
    #[serde(default)]
    pub slo: crate::loadgen::Goodput,
    /// A probe passes when at least this fraction of its requests is good.
    #[serde(default)]
    pub attainment: Option<f64>,
    #[serde(default)]
    pub range: Option<(f64, f64)>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub max_probes: Option<u32>,
    /// The highest passing value; `None` when even the bottom of the range failed.
    #[serde(default)]
    pub found: Option<f64>,
    /// [highest pass, lowest fail]: the trial's resolution; the fail is `None` when the top of
    /// the range passed.
    #[serde(default)]
    pub bracket: Option<(Option<f64>, Option<f64>)>,
    #[serde(default)]
    pub outcome: SearchOutcome,
    #[serde(default)]
    pub probes: Vec<SearchProbe>,
}

/// What a search varies.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SearchOver {
    /// Request rate (req/s), unbounded concurrency.
    #[default]
    Rate,
    /// Concurrent requests, rate unbounded.
    Concurrency,
}

impl SearchOver {
    /// The metric key of the highest value at which the SLOs hold.
    pub fn metric_key(self) -> &'static str {
        match self {
            SearchOver::Rate => "slo_max_request_rate",
            SearchOver::Concurrency => "slo_max_concurrency",
        }
    }

    /// What is sustained, for sentences: `req/s`, `concurrent requests`.
    pub fn noun(self) -> &'static str {
        match self {
            SearchOver::Rate => "req/s",
            SearchOver::Concurrency => "concurrent requests",
        }
    }
}

/// How a search ended.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SearchOutcome {
    /// A pass and a fail bracket the limit.
    #[default]
    Bracketed,
    /// Even the bottom of the range failed: nothing found.
    BelowRange,
    /// The top of the range passed: the value found is a lower bound.
    AtRangeTop,
    /// An outcome this version does not know.
    #[serde(other)]
    Unknown,
}

impl SearchOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchOutcome::Bracketed => "bracketed",
            SearchOutcome::BelowRange => "below_range",
            SearchOutcome::AtRangeTop => "at_range_top",
            SearchOutcome::Unknown => "unknown",
        }
    }
}

/// One probe of a search: a fixed rate or concurrency measured for a while.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchProbe {
    pub value: f64,
    pub passed: bool,
    pub good_fraction: Option<f64>,
    pub requested_rate: Option<f64>,
    pub concurrency: Option<f64>,
    /// Requests dispatched per second (client side).
    pub achieved_rate: Option<f64>,
    pub request_throughput: Option<f64>,
    pub output_throughput: Option<f64>,
    pub completed: Option<u64>,
    pub failed: Option<u64>,
    pub median_ttft_ms: Option<f64>,
    pub p99_ttft_ms: Option<f64>,
    pub median_tpot_ms: Option<f64>,
    pub p99_tpot_ms: Option<f64>,
    pub median_e2el_ms: Option<f64>,
    pub p99_e2el_ms: Option<f64>,
    pub audit_warnings: Vec<String>,
}

/// What the report reads of a measurement's telemetry (see docs/telemetry.md); a figure whose
/// collector was absent is `None`, and the collector's reason is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialTelemetry {
    pub j_per_output_token: Option<f64>,
    pub output_tokens_per_joule: Option<f64>,
    pub cpu_s_per_output_token: Option<f64>,
    pub server_mean_ttft_ms: Option<f64>,
    pub client_mean_ttft_ms: Option<f64>,
    pub preemptions: Option<f64>,
    pub kv_cache_usage_mean: Option<f64>,
    pub prefix_cache_hit_rate: Option<f64>,
    pub gpu_util_mean_pct: Option<f64>,
    /// GPU clock limiters seen during the window (power cap, thermal, ...).
    #[serde(default)]
    pub throttle_reasons: Vec<String>,
    /// Why server metrics / GPU telemetry / host CPU time are absent, when they are.
    pub server_absent: Option<String>,
    pub gpu_absent: Option<String>,
    pub host_absent: Option<String>,
}

impl TrialTelemetry {
    /// From the result JSON's `isobench.telemetry` object.
    pub fn from_value(t: &serde_json::Value) -> TrialTelemetry {
        let d = &t["derived"];
        let absent = |part: &str| {
            (t[part]["available"] == false)
                .then(|| t[part]["reason"].as_str().unwrap_or("").to_string())
        };
        TrialTelemetry {
            j_per_output_token: d["j_per_output_token"].as_f64(),
            output_tokens_per_joule: d["output_tokens_per_joule"].as_f64(),
            cpu_s_per_output_token: d["cpu_s_per_output_token"].as_f64(),
            server_mean_ttft_ms: d["server_mean_ttft_ms"].as_f64(),
            client_mean_ttft_ms: d["client_mean_ttft_ms"].as_f64(),
            preemptions: t["server"]["counters"]["preemptions"].as_f64(),
            kv_cache_usage_mean: t["server"]["gauges"]["kv_cache_usage"]["mean"].as_f64(),
            prefix_cache_hit_rate: t["server"]["prefix_cache_hit_rate"].as_f64(),
            gpu_util_mean_pct: t["gpu"]["sm_util_mean_pct"].as_f64(),
            throttle_reasons: t["gpu"]["throttle_reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
            server_absent: absent("server"),
            gpu_absent: absent("gpu"),
            host_absent: absent("host"),
        }
    }

    /// Client minus server mean TTFT (ms): what the network and the client add.
    pub fn ttft_gap_ms(&self) -> Option<f64> {
        Some(self.client_mean_ttft_ms? - self.server_mean_ttft_ms?)
    }
}

impl TrialMetrics {
    /// Loads a result JSON as written by the load generator (or by `vllm bench serve`).
    pub fn from_json(text: &str) -> Result<TrialMetrics, serde_json::Error> {
        /// Only `isobench.telemetry`: the rest of the block (per-request records) is skipped.
        #[derive(Deserialize)]
        struct Outer {
            #[serde(default)]
            isobench: Option<Block>,
        }
        #[derive(Deserialize)]
        struct Block {
            #[serde(default)]
            telemetry: Option<serde_json::Value>,
            #[serde(default)]
            search: Option<serde_json::Value>,
        }
        let mut metrics: TrialMetrics = serde_json::from_str(text)?;
        if metrics.prompt_indices.is_none() && metrics.generated_texts.is_some() {
            metrics.prompt_indices = prompt_indices(text);
        }
        if let Ok(Outer {
            isobench: Some(block),
        }) = serde_json::from_str::<Outer>(text)
        {
            if metrics.telemetry.is_none()
                && let Some(t) = block.telemetry
            {
                metrics.telemetry = Some(TrialTelemetry::from_value(&t));
            }
            // A malformed search block leaves the rest of the result usable.
            if metrics.search.is_none()
                && let Some(s) = block.search
            {
                metrics.search = serde_json::from_value(s).ok();
            }
        }
        if metrics.extra_percentiles.is_empty()
            && let Ok(PercentileKeys(keys)) = serde_json::from_str::<PercentileKeys>(text)
        {
            metrics.extra_percentiles = keys;
        }
        Ok(metrics)
    }

    /// Goodput against `slo` (vLLM's `--goodput` meaning): (good requests per second of the
    /// run, good requests in % of all requests sent). A request is good when it succeeded and
    /// meets every given SLO; its TPOT is (E2E − TTFT) / (output tokens − 1), 0 for one token.
    /// From the per-request arrays, so that a changed SLO needs no re-measurement; without them,
    /// from vLLM's own `request_goodput` (counted against the SLO of the run) and the request
    /// counts. `None` when neither is there or the run has no duration.
    pub fn goodput(&self, slo: &crate::loadgen::Goodput) -> Option<(f64, f64)> {
        let duration = self.duration.filter(|d| *d > 0.0 && d.is_finite())?;
        let (Some(ttfts), Some(lens)) = (&self.ttfts, &self.output_lens) else {
            let per_s = self.request_goodput?;
            let sent = self.completed? + self.failed.unwrap_or(0);
            let pct = (sent > 0).then(|| per_s * duration / sent as f64 * 100.0)?;
            return Some((per_s, pct));
        };
        if self.latencies.is_none() && self.itls.is_none() {
            return None;
        }
        let mut good = 0usize;
        for (i, &ttft) in ttfts.iter().enumerate() {
            let Some(e2el) = self.latency_s(i, ttft) else {
                continue;
            };
            if self.errored(i) || ttft.is_nan() || ttft <= 0.0 {
                continue;
            }
            let tpot = match lens.get(i) {
                Some(&n) if n > 1 => (e2el - ttft) / (n - 1) as f64,
                _ => 0.0,
            };
            if slo.admits(ttft, tpot, e2el) {
                good += 1;
            }
        }
        let sent = ttfts.len();
        (sent > 0).then(|| (good as f64 / duration, good as f64 / sent as f64 * 100.0))
    }

    /// Whether request `i` of the per-request lists failed (its error text is not empty).
    fn errored(&self, i: usize) -> bool {
        self.errors
            .as_ref()
            .and_then(|e| e.get(i))
            .is_some_and(|e| !e.is_empty())
    }

    /// End-to-end latency of request `i` (seconds): `latencies`, else TTFT plus its ITLs.
    fn latency_s(&self, i: usize, ttft: f64) -> Option<f64> {
        match (&self.latencies, &self.itls) {
            (Some(lat), _) => lat.get(i).copied(),
            (None, Some(itls)) => itls.get(i).map(|gaps| ttft + gaps.iter().sum::<f64>()),
            (None, None) => None,
        }
    }

    /// Each prompt's first successful answer: prompt index → generated text. `None` when the
    /// result holds no generated texts. Timed runs re-send prompts; only the first answer counts.
    pub fn answers(&self) -> Option<BTreeMap<usize, &str>> {
        let texts = self.generated_texts.as_ref()?;
        let mut out = BTreeMap::new();
        for (i, text) in texts.iter().enumerate() {
            let errored = self
                .errors
                .as_ref()
                .and_then(|e| e.get(i))
                .is_some_and(|e| !e.is_empty());
            if errored {
                continue;
            }
            let prompt = match &self.prompt_indices {
                Some(p) => match p.get(i) {
                    Some(&p) => p,
                    None => continue,
                },
                None => i,
            };
            out.entry(prompt).or_insert(text.as_str());
        }
        Some(out)
    }

    /// Per-request samples of the successful requests, in milliseconds: TTFT, TPOT and E2E latency.
    /// TPOT follows vLLM: (latency − TTFT) / (output tokens − 1), only for requests with more than
    /// one output token; without `latencies` the latency is TTFT plus the sum of the request's ITLs.
    pub fn per_request_ms(&self) -> PerRequest {
        let mut out = PerRequest::default();
        let Some(ttfts) = &self.ttfts else { return out };
        for (i, &ttft) in ttfts.iter().enumerate() {
            if self.errored(i) || ttft.is_nan() || ttft <= 0.0 {
                continue;
            }
            out.ttft.push(ttft * 1e3);
            if let Some(gaps) = self.itls.as_ref().and_then(|itls| itls.get(i)) {
                out.itl.extend(gaps.iter().map(|g| g * 1e3));
            }
            if let Some(latency) = self.latency_s(i, ttft) {
                out.e2el.push(latency * 1e3);
                let output_len = self.output_lens.as_ref().and_then(|l| l.get(i)).copied();
                if let Some(n) = output_len.filter(|&n| n > 1) {
                    out.tpot.push((latency - ttft) * 1e3 / (n - 1) as f64);
                }
            }
        }
        out
    }
}

/// The prompt of every entry of a result's per-request lists, from its `isobench` block: the
/// request's index modulo the dataset's prompts (a timed run cycles through the dataset).
fn prompt_indices(text: &str) -> Option<Vec<usize>> {
    #[derive(Deserialize)]
    struct Request {
        index: usize,
    }
    #[derive(Deserialize)]
    struct Dataset {
        num_prompts: usize,
    }
    #[derive(Deserialize)]
    struct Block {
        dataset: Dataset,
        requests: Vec<Request>,
    }
    #[derive(Deserialize)]
    struct Result {
        isobench: Block,
    }
    let block = serde_json::from_str::<Result>(text).ok()?.isobench;
    let n = block.dataset.num_prompts.max(1);
    Some(block.requests.iter().map(|r| r.index % n).collect())
}

/// Per-request latency samples of one trial (milliseconds); `itl` holds every gap of every
/// successful request, as vLLM pools them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerRequest {
    pub ttft: Vec<f64>,
    pub tpot: Vec<f64>,
    pub itl: Vec<f64>,
    pub e2el: Vec<f64>,
}

/// The result JSON's latency percentile keys (`p<P>_<ttft|tpot|itl|e2el>_ms`); every other
/// value is skipped unread.
struct PercentileKeys(BTreeMap<String, f64>);

impl<'de> Deserialize<'de> for PercentileKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = PercentileKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a result JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if is_percentile_key(&key) {
                        if let Some(v) = map.next_value::<Option<f64>>()? {
                            out.insert(key, v);
                        }
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(PercentileKeys(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `p99_ttft_ms`, `p99.9_e2el_ms`: vLLM's percentile keys.
fn is_percentile_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix('p') else {
        return false;
    };
    let Some((number, latency)) = rest.split_once('_') else {
        return false;
    };
    !number.is_empty()
        && number.parse::<f64>().is_ok()
        && matches!(latency, "ttft_ms" | "tpot_ms" | "itl_ms" | "e2el_ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        include_str!("../../tests/loadgen_fixtures/vllm_bench_serve_0.32.0_result.json");

    #[test]
    fn loads_vllm_result_json() {
        let m = TrialMetrics::from_json(SAMPLE).expect("vLLM's result JSON loads");
        assert_eq!(m.completed, Some(50));
        assert!((m.output_throughput.unwrap() - 495.37375113424514).abs() < 1e-9);
        assert!((m.mean_tpot_ms.unwrap() - 12.476297336774254).abs() < 1e-9);
        // This vLLM run did not ask for E2E percentiles: missing, not zero.
        assert_eq!(m.mean_e2el_ms, None);
        assert_eq!(m.ttfts.as_ref().map(Vec::len), Some(50));
    }

    #[test]
    fn per_request_samples_reproduce_vllm_means() {
        let m = TrialMetrics::from_json(SAMPLE).unwrap();
        let per = m.per_request_ms();
        assert_eq!(per.ttft.len(), 50);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // vLLM's own aggregates are computed from the same arrays.
        assert!(
            (mean(&per.ttft) - m.mean_ttft_ms.unwrap()).abs() < 1e-6,
            "{}",
            mean(&per.ttft)
        );
        assert!(
            (mean(&per.tpot) - m.mean_tpot_ms.unwrap()).abs() < 1e-6,
            "{}",
            mean(&per.tpot)
        );
    }

    #[test]
    fn generated_texts_are_matched_to_their_prompts() {
        // A timed run over 3 prompts: the measured window starts at request 2 and cycles on.
        let text = r#"{"generated_texts": ["c", "a", "b", "c2"],
            "isobench": {"dataset": {"num_prompts": 3},
                         "requests": [{"index": 2}, {"index": 3}, {"index": 4}, {"index": 5}]}}"#;
        let m = TrialMetrics::from_json(text).unwrap();
        assert_eq!(m.prompt_indices, Some(vec![2, 0, 1, 2]));
        let answers = m.answers().unwrap();
        assert_eq!(
            answers.into_iter().collect::<Vec<_>>(),
            vec![(0, "a"), (1, "b"), (2, "c")],
            "each prompt's first answer"
        );
        // vLLM's own result: no isobench block, the lists are in prompt order.
        let m = TrialMetrics::from_json(SAMPLE).unwrap();
        assert_eq!(m.prompt_indices, None);
        assert_eq!(m.answers().map(|a| a.len()), Some(50));
    }

    #[test]
    fn failed_requests_are_left_out_of_distributions() {
        let m = TrialMetrics {
            ttfts: Some(vec![0.1, 0.0, 0.2]),
            itls: Some(vec![vec![0.01, 0.01], vec![], vec![0.02, 0.02]]),
            output_lens: Some(vec![3, 0, 3]),
            errors: Some(vec![String::new(), "boom".into(), String::new()]),
            ..TrialMetrics::default()
        };
        let per = m.per_request_ms();
        assert_eq!(per.ttft, vec![100.0, 200.0]);
        // (ttft + Σ itl − ttft) / (3 − 1) = 10 ms and 20 ms.
        assert_eq!(per.tpot.len(), 2);
        assert!((per.tpot[0] - 10.0).abs() < 1e-9 && (per.tpot[1] - 20.0).abs() < 1e-9);
    }
}
