//! The metrics the report summarises and compares, keyed by vLLM's result JSON names.
use super::input::TrialMetrics;
use super::stats::Better;

#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// vLLM's key in the result JSON; also the key in the report JSON and CSV.
    pub key: &'static str,
    /// Short label for tables.
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// Shown in the compact terminal and Markdown tables (all metrics go to JSON, CSV, HTML).
    pub compact: bool,
    /// Compared between arms (with an interval and verdicts); else summarised per arm only.
    pub compared: bool,
    /// Read from the measurement's telemetry (the per-arm telemetry table shows these).
    pub telemetry: bool,
    get: fn(&TrialMetrics) -> Option<f64>,
}

impl MetricDef {
    /// The metric's value in one trial; `None` when missing or not positive for a compared
    /// metric (log-scale statistics need positive values; vLLM writes 0 for an empty sample list,
    /// which is "no data", not 0 ms). A per-arm figure keeps a real 0 (no preemptions is a
    /// finding, not missing data).
    pub fn value(&self, m: &TrialMetrics) -> Option<f64> {
        (self.get)(m).filter(|v| v.is_finite() && (*v > 0.0 || (!self.compared && *v == 0.0)))
    }
}

macro_rules! metric {
    ($key:ident, $label:expr, $unit:expr, $better:ident, $compact:expr) => {
        MetricDef {
            key: stringify!($key),
            label: $label,
            unit: $unit,
            better: Better::$better,
            compact: $compact,
            compared: true,
            telemetry: false,
            get: |m| m.$key,
        }
    };
}

/// A metric read from [`TrialMetrics::telemetry`]; never in the compact tables.
macro_rules! telemetry {
    ($key:expr, $label:expr, $unit:expr, $better:expr, $compared:expr, |$t:ident| $get:expr $(,)?) => {
        MetricDef {
            key: $key,
            label: $label,
            unit: $unit,
            better: $better,
            compact: false,
            compared: $compared,
            telemetry: true,
            get: |m| {
                let $t = m.telemetry.as_ref()?;
                $get
            },
        }
    };
}

/// The headline metric: output tokens per second.
pub const HEADLINE: &str = "output_throughput";

pub const METRICS: &[MetricDef] = &[
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

pub fn metric(key: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_vllm_names_and_unique() {
        let mut keys: Vec<_> = METRICS.iter().map(|m| m.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), METRICS.len());
        assert_eq!(metric(HEADLINE).unwrap().better, Better::Higher);
        let m = TrialMetrics {
            output_throughput: Some(12.5),
            mean_ttft_ms: Some(0.0),
            ..Default::default()
        };
        assert_eq!(metric("output_throughput").unwrap().value(&m), Some(12.5));
        assert_eq!(
            metric("mean_ttft_ms").unwrap().value(&m),
            None,
            "0 ms means no samples"
        );
        assert_eq!(metric("p99_e2el_ms").unwrap().value(&m), None);
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
        assert_eq!(metric("server_preemptions").unwrap().value(&m), Some(0.0));
        assert_eq!(metric("cpu_ms_per_output_token").unwrap().value(&m), None);
        let s = crate::report::stats::summarize(&[0.0, 0.0, 2.0], 0.95).unwrap();
        assert_eq!((s.median, s.ci_low, s.ci_high), (0.0, None, None));
    }
}
