//! The metrics the report summarises and compares, keyed by vLLM's result JSON names.
//!
//! [`BASE_METRICS`] is the fixed part (vLLM's keys, telemetry); a report builds its [`Catalog`]
//! from its input: the configured latency percentiles (`load.percentiles`), goodput when an SLO
//! is set (`[load.slo]`) and the highest load at which the SLOs hold when searches ran.
use super::input::{PerRequest, SearchOver, TrialMetrics};
use super::stats::Better;
use crate::loadgen::Goodput;
use std::borrow::Cow;
use std::cell::OnceCell;

#[derive(Debug, Clone)]
pub struct MetricDef {
    /// vLLM's key in the result JSON; also the key in the report JSON and CSV.
    pub key: Cow<'static, str>,
    /// Short label for tables.
    pub label: Cow<'static, str>,
    pub unit: &'static str,
    pub better: Better,
    /// Shown in the compact terminal and Markdown tables (all metrics go to JSON, CSV, HTML).
    pub compact: bool,
    /// Compared between arms (with an interval and verdicts); else summarised per arm only.
    pub compared: bool,
    /// Read from the measurement's telemetry (the per-arm telemetry table shows these).
    pub telemetry: bool,
    source: Source,
}

/// Where a metric's value of one trial comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A value of the result JSON (or of its telemetry).
    Field(fn(&TrialMetrics) -> Option<f64>),
    /// A configured latency percentile: from the per-request arrays, else the result JSON's key.
    Percentile(Latency, f64),
    /// Good requests per second against the commit's SLO.
    RequestGoodput,
    /// Good requests in % of the requests sent.
    GoodputPct,
    /// The highest rate or concurrency at which a search found the SLOs to hold.
    SearchMax(SearchOver),
}

/// The per-request latencies a percentile can be taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    Ttft,
    Tpot,
    Itl,
    E2el,
}

impl Latency {
    pub const ALL: [Latency; 4] = [Latency::Ttft, Latency::Tpot, Latency::Itl, Latency::E2el];

    /// The word in vLLM's keys: `ttft` in `p99_ttft_ms`.
    pub fn word(self) -> &'static str {
        match self {
            Latency::Ttft => "ttft",
            Latency::Tpot => "tpot",
            Latency::Itl => "itl",
            Latency::E2el => "e2el",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Latency::Ttft => "TTFT",
            Latency::Tpot => "TPOT",
            Latency::Itl => "ITL",
            Latency::E2el => "E2E",
        }
    }

    fn samples(self, per: &PerRequest) -> &[f64] {
        match self {
            Latency::Ttft => &per.ttft,
            Latency::Tpot => &per.tpot,
            Latency::Itl => &per.itl,
            Latency::E2el => &per.e2el,
        }
    }
}

/// vLLM's percentile word: `99` for 99.0, `99.9` for 99.9 (as `loadgen` writes its keys).
pub fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// The key of a latency percentile, vLLM's: `p99_ttft_ms`, `p99.9_e2el_ms`; the 50th is the
/// `median_*` key, as vLLM writes it.
pub fn percentile_key(latency: Latency, p: f64) -> String {
    if p == 50.0 {
        format!("median_{}_ms", latency.word())
    } else {
        format!("p{}_{}_ms", p_word(p), latency.word())
    }
}

/// One trial as the metrics read it: its result, the commit's SLO, and the per-request samples
/// (sorted once, when a percentile first asks for them).
pub struct TrialView<'a> {
    pub metrics: &'a TrialMetrics,
    pub slo: Option<&'a Goodput>,
    sorted: OnceCell<PerRequest>,
    goodput: OnceCell<Option<(f64, f64)>>,
}

impl<'a> TrialView<'a> {
    pub fn new(metrics: &'a TrialMetrics, slo: Option<&'a Goodput>) -> TrialView<'a> {
        TrialView {
            metrics,
            slo,
            sorted: OnceCell::new(),
            goodput: OnceCell::new(),
        }
    }

    /// The `p`-th percentile (numpy's linear interpolation) of a latency over the successful
    /// requests, ms; `None` without per-request data.
    pub fn percentile(&self, latency: Latency, p: f64) -> Option<f64> {
        let per = self.sorted.get_or_init(|| {
            let mut per = self.metrics.per_request_ms();
            for v in [&mut per.ttft, &mut per.tpot, &mut per.itl, &mut per.e2el] {
                v.sort_by(f64::total_cmp);
            }
            per
        });
        let samples = latency.samples(per);
        (!samples.is_empty()).then(|| crate::loadgen::stats::percentile_sorted(samples, p))
    }

    /// (good req/s, good %) against the SLO; `None` without an SLO.
    pub fn goodput(&self) -> Option<(f64, f64)> {
        *self.goodput.get_or_init(|| {
            self.slo
                .filter(|s| s.is_set())
                .and_then(|s| self.metrics.goodput(s))
        })
    }
}

impl MetricDef {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The metric's value in one trial; `None` when missing or not positive for a compared
    /// metric (log-scale statistics need positive values; vLLM writes 0 for an empty sample list,
    /// which is "no data", not 0 ms). A per-arm figure keeps a real 0 (no preemptions is a
    /// finding, not missing data).
    pub fn value(&self, t: &TrialView) -> Option<f64> {
        let raw = match self.source {
            Source::Field(get) => get(t.metrics),
            Source::Percentile(latency, p) => t
                .percentile(latency, p)
                .or_else(|| t.metrics.extra_percentiles.get(self.key()).copied()),
            Source::RequestGoodput => t.goodput().map(|g| g.0),
            Source::GoodputPct => t.goodput().map(|g| g.1),
            Source::SearchMax(over) => t
                .metrics
                .search
                .as_ref()
                .filter(|s| s.over == over)
                .and_then(|s| s.found),
        };
        raw.filter(|v| v.is_finite() && (*v > 0.0 || (!self.compared && *v == 0.0)))
    }

    /// [`MetricDef::value`] of a trial without an SLO (the fixed metrics need none).
    pub fn value_of(&self, m: &TrialMetrics) -> Option<f64> {
        self.value(&TrialView::new(m, None))
    }
}

macro_rules! metric {
    ($key:ident, $label:expr, $unit:expr, $better:ident, $compact:expr) => {
        MetricDef {
            key: Cow::Borrowed(stringify!($key)),
            label: Cow::Borrowed($label),
            unit: $unit,
            better: Better::$better,
            compact: $compact,
            compared: true,
            telemetry: false,
            source: Source::Field(|m| m.$key),
        }
    };
}

/// A metric read from [`TrialMetrics::telemetry`]; never in the compact tables.
macro_rules! telemetry {
    ($key:expr, $label:expr, $unit:expr, $better:expr, $compared:expr, |$t:ident| $get:expr $(,)?) => {
        MetricDef {
            key: Cow::Borrowed($key),
            label: Cow::Borrowed($label),
            unit: $unit,
            better: $better,
            compact: false,
            compared: $compared,
            telemetry: true,
            source: Source::Field(|m| {
                let $t = m.telemetry.as_ref()?;
                $get
            }),
        }
    };
}

/// The headline metric: output tokens per second.
pub const HEADLINE: &str = "output_throughput";

/// The fixed part of the catalogue: vLLM's keys and the telemetry figures. A report's own
/// catalogue ([`Catalog`]) adds the configured percentiles, goodput and search results.
pub const BASE_METRICS: &[MetricDef] = &[
    metric!(output_throughput, "throughput", "tok/s", Higher, true),
    metric!(
        total_token_throughput,
        "total tok/s",
        "tok/s",
        Higher,
        false
    ),
    metric!(request_throughput, "req/s", "req/s", Higher, false),
    metric!(mean_ttft_ms, "TTFT mean", "ms", Lower, true),
    metric!(median_ttft_ms, "TTFT p50", "ms", Lower, false),
    metric!(p99_ttft_ms, "TTFT p99", "ms", Lower, false),
    metric!(mean_tpot_ms, "TPOT mean", "ms", Lower, true),
    metric!(median_tpot_ms, "TPOT p50", "ms", Lower, false),
    metric!(p99_tpot_ms, "TPOT p99", "ms", Lower, false),
    metric!(mean_itl_ms, "ITL mean", "ms", Lower, true),
    metric!(median_itl_ms, "ITL p50", "ms", Lower, false),
    metric!(p99_itl_ms, "ITL p99", "ms", Lower, false),
    metric!(mean_e2el_ms, "E2E mean", "ms", Lower, true),
    metric!(median_e2el_ms, "E2E p50", "ms", Lower, false),
    metric!(p99_e2el_ms, "E2E p99", "ms", Lower, false),
    // From the measurement's telemetry (docs/telemetry.md): present only where it was collected.
    telemetry!(
        "j_per_output_token",
        "energy/token",
        "J/tok",
        Better::Lower,
        true,
        |t| t.j_per_output_token,
    ),
    telemetry!(
        "output_tokens_per_joule",
        "tokens/J",
        "tok/J",
        Better::Higher,
        true,
        |t| t.output_tokens_per_joule,
    ),
    telemetry!(
        "cpu_ms_per_output_token",
        "server CPU/token",
        "ms/tok",
        Better::Lower,
        true,
        |t| t.cpu_s_per_output_token.map(|s| s * 1000.0),
    ),
    // Server figures, per arm only: they explain a difference rather than being one.
    telemetry!(
        "server_preemptions",
        "preemptions",
        "",
        Better::Lower,
        false,
        |t| t.preemptions,
    ),
    telemetry!(
        "server_kv_cache_usage_pct",
        "KV-cache usage",
        "%",
        Better::Lower,
        false,
        |t| t.kv_cache_usage_mean.map(|f| f * 100.0),
    ),
    telemetry!(
        "server_prefix_cache_hit_pct",
        "prefix hits",
        "%",
        Better::Higher,
        false,
        |t| t.prefix_cache_hit_rate.map(|f| f * 100.0),
    ),
    telemetry!(
        "gpu_util_pct",
        "GPU util",
        "%",
        Better::Higher,
        false,
        |t| t.gpu_util_mean_pct,
    ),
    telemetry!(
        "server_mean_ttft_ms",
        "server TTFT mean",
        "ms",
        Better::Lower,
        false,
        |t| t.server_mean_ttft_ms,
    ),
];

/// The fixed metric of this key (the headline, vLLM's keys, telemetry).
pub fn metric(key: &str) -> Option<&'static MetricDef> {
    BASE_METRICS.iter().find(|m| m.key == key)
}

/// One report's metrics, in display order: the fixed ones, each configured latency percentile
/// next to its latency's (50 is `median_*`, 99 is `p99_*`: no duplicates), then goodput (when a
/// commit has an SLO) and the searches' results (when searches ran), then telemetry.
#[derive(Debug, Clone)]
pub struct Catalog {
    defs: Vec<MetricDef>,
}

impl Catalog {
    /// `percentiles`: `load.percentiles` (empty: vLLM's 50 and 99); `goodput`: some commit has
    /// an SLO; `searches`: what the campaign's searches varied.
    pub fn new(percentiles: &[f64], goodput: bool, searches: &[SearchOver]) -> Catalog {
        let mut extra: Vec<f64> = percentiles
            .iter()
            .copied()
            .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0 && *p != 50.0 && *p != 99.0)
            .collect();
        extra.sort_by(f64::total_cmp);
        extra.dedup();
        let percentile = |latency: Latency, p: f64| MetricDef {
            key: Cow::Owned(percentile_key(latency, p)),
            label: Cow::Owned(format!("{} p{}", latency.label(), p_word(p))),
            unit: "ms",
            better: Better::Lower,
            compact: false,
            compared: true,
            telemetry: false,
            source: Source::Percentile(latency, p),
        };
        let mut defs = Vec::new();
        for def in BASE_METRICS.iter().filter(|d| !d.telemetry) {
            let before_p99 = Latency::ALL
                .into_iter()
                .find(|l| def.key == format!("p99_{}_ms", l.word()));
            if let Some(latency) = before_p99 {
                defs.extend(
                    extra
                        .iter()
                        .filter(|p| **p < 99.0)
                        .map(|&p| percentile(latency, p)),
                );
            }
            defs.push(def.clone());
            if let Some(latency) = before_p99 {
                defs.extend(
                    extra
                        .iter()
                        .filter(|p| **p > 99.0)
                        .map(|&p| percentile(latency, p)),
                );
            }
        }
        if goodput {
            defs.push(MetricDef {
                key: Cow::Borrowed("request_goodput"),
                label: Cow::Borrowed("goodput"),
                unit: "req/s",
                better: Better::Higher,
                compact: false,
                compared: true,
                telemetry: false,
                source: Source::RequestGoodput,
            });
            defs.push(MetricDef {
                key: Cow::Borrowed("goodput_pct"),
                label: Cow::Borrowed("good requests"),
                unit: "%",
                better: Better::Higher,
                compact: false,
                compared: false,
                telemetry: false,
                source: Source::GoodputPct,
            });
        }
        for over in [SearchOver::Rate, SearchOver::Concurrency] {
            if !searches.contains(&over) {
                continue;
            }
            let (label, unit) = match over {
                SearchOver::Rate => ("max rate within SLO", "req/s"),
                SearchOver::Concurrency => ("max concurrency within SLO", "requests"),
            };
            defs.push(MetricDef {
                key: Cow::Borrowed(over.metric_key()),
                label: Cow::Borrowed(label),
                unit,
                better: Better::Higher,
                compact: false,
                compared: true,
                telemetry: false,
                source: Source::SearchMax(over),
            });
        }
        defs.extend(BASE_METRICS.iter().filter(|d| d.telemetry).cloned());
        Catalog { defs }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, MetricDef> {
        self.defs.iter()
    }

    pub fn get(&self, key: &str) -> Option<&MetricDef> {
        self.defs.iter().find(|d| d.key == key)
    }
}

impl Default for Catalog {
    /// The fixed metrics alone (vLLM's default percentiles, no SLO, no search).
    fn default() -> Catalog {
        Catalog::new(&[], false, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_vllm_names_and_unique() {
        let mut keys: Vec<_> = BASE_METRICS.iter().map(|m| m.key()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), BASE_METRICS.len());
        assert_eq!(metric(HEADLINE).unwrap().better, Better::Higher);
        let m = TrialMetrics {
            output_throughput: Some(12.5),
            mean_ttft_ms: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            metric("output_throughput").unwrap().value_of(&m),
            Some(12.5)
        );
        assert_eq!(
            metric("mean_ttft_ms").unwrap().value_of(&m),
            None,
            "0 ms means no samples"
        );
        assert_eq!(metric("p99_e2el_ms").unwrap().value_of(&m), None);
    }

    #[test]
    fn a_per_arm_zero_is_a_value_and_a_compared_zero_is_not() {
        let m = TrialMetrics {
            telemetry: Some(crate::report::input::TrialTelemetry {
                preemptions: Some(0.0),
                cpu_s_per_output_token: Some(0.0),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            metric("server_preemptions").unwrap().value_of(&m),
            Some(0.0)
        );
        assert_eq!(
            metric("cpu_ms_per_output_token").unwrap().value_of(&m),
            None
        );
        let s = crate::report::stats::summarize(&[0.0, 0.0, 2.0], 0.95).unwrap();
        assert_eq!((s.median, s.ci_low, s.ci_high), (0.0, None, None));
    }
}
