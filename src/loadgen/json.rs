//! The result JSON: vLLM's key names and order (`vllm bench serve --save-result`), then an
//! `isobench` block.
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::SystemTime;

use super::SEMANTICS;
use super::record::RequestRecord;
use super::result::BenchResult;
use super::stats::Summary;

impl BenchResult {
    /// The result JSON as a value (key order is not kept; see [`BenchResult::to_json_text`]).
    pub fn to_json(&self, detailed: bool, metadata: &[(String, String)]) -> Value {
        Value::Object(self.entries(detailed, metadata).into_iter().collect())
    }

    /// The result JSON as text, keys in vLLM's order, then the `isobench` block.
    pub fn to_json_text(&self, detailed: bool, metadata: &[(String, String)]) -> String {
        ordered_text(self.entries(detailed, metadata))
    }

    /// [`BenchResult::save`] with more keys in the `isobench` block (a campaign's telemetry).
    pub fn save_with(
        &self,
        path: &std::path::Path,
        detailed: bool,
        metadata: &[(String, String)],
        isobench_extra: &[(&str, Value)],
    ) -> std::io::Result<()> {
        let mut entries = self.entries(detailed, metadata);
        if let Some((_, Value::Object(block))) = entries.iter_mut().find(|(k, _)| k == "isobench") {
            for (k, v) in isobench_extra {
                block.insert(k.to_string(), v.clone());
            }
        }
        crate::util::fsx::write_atomic(path, ordered_text(entries).as_bytes())
    }

    /// Saves the result JSON ([`BenchResult::to_json_text`]) at `path`, atomically: a reader
    /// (the report, a resumed campaign) never sees half a file.
    pub fn save(
        &self,
        path: &std::path::Path,
        detailed: bool,
        metadata: &[(String, String)],
    ) -> std::io::Result<()> {
        crate::util::fsx::write_atomic(path, self.to_json_text(detailed, metadata).as_bytes())
    }

    fn entries(&self, detailed: bool, metadata: &[(String, String)]) -> Vec<(String, Value)> {
        let m = &self.metrics;
        let run = &self.run;
        let mut out: Vec<(String, Value)> = Vec::with_capacity(64);
        let mut put = |key: &str, value: Value| out.push((key.to_string(), value));
        put("date", json!(vllm_date(self.started_at)));
        put("endpoint_type", json!(run.backend.as_str()));
        put("backend", json!(run.backend.as_str()));
        put("label", Value::Null);
        put("model_id", json!(run.model));
        put("tokenizer_id", json!(self.tokenizer));
        put("num_prompts", json!(self.records.len()));
        let mut reserved: Vec<String> = Vec::new();
        for (key, value) in metadata {
            reserved.push(key.clone());
            put(key, json!(value));
        }
        put(
            "request_rate",
            if run.request_rate.is_finite() {
                json!(run.request_rate)
            } else {
                json!("inf")
            },
        );
        put("burstiness", json!(run.burstiness));
        put("max_concurrency", json!(run.max_concurrency));
        put("duration", json!(self.duration_s));
        put("completed", json!(m.completed));
        put("failed", json!(m.failed));
        put("total_input_tokens", json!(m.total_input));
        put("total_output_tokens", json!(m.total_output));
        put("request_throughput", json!(m.request_throughput));
        put("request_goodput", json!(m.request_goodput));
        put("output_throughput", json!(m.output_throughput));
        put("total_token_throughput", json!(m.total_token_throughput));
        if detailed {
            let ok = |r: &RequestRecord| r.success();
            put("input_lens", json!(m.input_lens));
            put("output_lens", json!(m.output_lens));
            put(
                "ttfts",
                json!(
                    self.records
                        .iter()
                        .map(|r| if ok(r) { r.ttft_s.unwrap_or(0.0) } else { 0.0 })
                        .collect::<Vec<_>>()
                ),
            );
            put(
                "itls",
                json!(
                    self.records
                        .iter()
                        .map(|r| if ok(r) { r.itls_s().collect() } else { vec![] })
                        .collect::<Vec<Vec<f64>>>()
                ),
            );
        }
        // vLLM keeps these two lists even without --save-detailed.
        put(
            "latencies",
            json!(
                self.records
                    .iter()
                    .map(|r| if r.success() { r.latency_s() } else { 0.0 })
                    .collect::<Vec<_>>()
            ),
        );
        if detailed {
            put(
                "start_times",
                json!(
                    self.records
                        .iter()
                        .map(|r| r.sent_at_s.unwrap_or(0.0))
                        .collect::<Vec<_>>()
                ),
            );
        }
        put(
            "queue_times",
            json!(
                self.records
                    .iter()
                    .map(|r| r.queue_time_s())
                    .collect::<Vec<_>>()
            ),
        );
        if detailed {
            put(
                "generated_texts",
                json!(
                    self.records
                        .iter()
                        .map(|r| r.generated_text.as_str())
                        .collect::<Vec<_>>()
                ),
            );
            put(
                "errors",
                json!(
                    self.records
                        .iter()
                        .map(|r| r.error_message())
                        .collect::<Vec<_>>()
                ),
            );
        }
        put("max_output_tokens_per_s", json!(m.max_output_tokens_per_s));
        put("max_concurrent_requests", json!(m.max_concurrent_requests));
        put("rtfx", json!(0.0));
        for (name, summary) in [
            ("ttft", &m.ttft),
            ("tpot", &m.tpot),
            ("itl", &m.itl),
            ("e2el", &m.e2el),
        ] {
            summary_entries(&mut put, name, summary);
        }
        for (name, summary) in [
            ("client_queue_time", &m.client_queue_time),
            (
                "e2el_including_client_queue",
                &m.e2el_including_client_queue,
            ),
        ] {
            if run.percentile_metrics.iter().any(|p| p == name) {
                summary_entries(&mut put, name, summary);
            }
        }
        put("isobench", self.isobench_block(detailed, metadata));
        // Metadata must never shadow a measured key (vLLM would let it; a result must not lie).
        let mut seen = std::collections::HashSet::new();
        let mut deduped: Vec<(String, Value)> = Vec::with_capacity(out.len());
        for (key, value) in out.into_iter().rev() {
            if seen.insert(key.clone()) {
                deduped.push((key, value));
            }
        }
        deduped.reverse();
        deduped
    }

    fn isobench_block(&self, detailed: bool, metadata: &[(String, String)]) -> Value {
        let m = &self.metrics;
        let client_prompt_total: Option<u64> = self
            .records
            .iter()
            .map(|r| r.prompt_tokens_client.map(u64::from))
            .sum();
        let server_reported = self
            .records
            .iter()
            .filter(|r| r.prompt_tokens_server.is_some())
            .count();
        let server_prompt_total: u64 = self
            .records
            .iter()
            .filter_map(|r| r.prompt_tokens_server.map(u64::from))
            .sum();
        let mean_template_overhead = {
            let pairs: Vec<f64> = self
                .records
                .iter()
                .filter_map(|r| {
                    Some(f64::from(r.prompt_tokens_server?) - f64::from(r.prompt_tokens_client?))
                })
                .collect();
            (!pairs.is_empty()).then(|| pairs.iter().sum::<f64>() / pairs.len() as f64)
        };
        let mut block = json!({
            "version": crate::LOADGEN_VERSION,
            "semantics": SEMANTICS,
            "started_at": humantime::format_rfc3339_millis(self.started_at).to_string(),
            "outcome": self.outcome(),
            "timed_out": self.timed_out,
            "metadata": metadata.iter().cloned().collect::<BTreeMap<String, String>>(),
            "run": {
                "base_url": self.base_url,
                "backend": self.run.backend.as_str(),
                "endpoint": self.run.endpoint,
                "model": self.run.model,
                "max_concurrency": self.run.max_concurrency,
                "request_rate": if self.run.request_rate.is_finite() { json!(self.run.request_rate) } else { json!("inf") },
                "burstiness": self.run.burstiness,
                "ignore_eos": self.run.ignore_eos,
                "temperature": self.run.temperature,
                "seed": self.run.seed,
                "percentiles": self.run.percentiles,
                "goodput": self.run.goodput,
                "run_timeout_s": self.run.run_timeout.as_secs_f64(),
                "request_timeout_s": self.request_timeout_s,
            },
            "dataset": {
                "name": self.dataset_name,
                "input_len": self.dataset.input_len,
                "output_len": self.dataset.output_len,
                "range_ratio": self.dataset.range_ratio,
                "prefix_len": self.dataset.prefix_len,
                "num_prompts": self.dataset.num_prompts,
                "seed": self.dataset.seed,
                "tokenizer": self.tokenizer,
                "synthetic": self.synthetic_dataset,
                "synthetic_note": self.synthetic_dataset.then_some(
                    "no tokenizer: prompts are synthetic words; token counts come from the server's usage"),
                "residual_prompt_token_mismatch": self.residual_prompt_mismatch,
                "mismatched_prompts": self.mismatched_prompts,
            },
            "prompt_tokens": {
                "client_total": client_prompt_total,
                "server_total": server_prompt_total,
                "server_reported_requests": server_reported,
                "mean_server_minus_client": mean_template_overhead,
            },
            "output_token_sources": m.output_token_sources,
            "ttft_first_content_ms": summary_value(&m.ttft_content),
            "errors_by_kind": self.errors_by_kind(),
            "audit": self.audit,
        });
        if let Some(window) = &self.window {
            block["window"] = json!(window);
        }
        if detailed {
            block["requests"] = json!(self.records);
        }
        block
    }
}

/// Entries as a JSON object in their order (serde_json's map would sort them).
fn ordered_text(entries: Vec<(String, Value)>) -> String {
    struct Ordered(Vec<(String, Value)>);
    impl Serialize for Ordered {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }
    serde_json::to_string_pretty(&Ordered(entries)).unwrap_or_default()
}

fn summary_entries(put: &mut impl FnMut(&str, Value), name: &str, summary: &Summary) {
    put(&format!("mean_{name}_ms"), json!(summary.mean));
    put(&format!("median_{name}_ms"), json!(summary.median));
    put(&format!("std_{name}_ms"), json!(summary.std));
    for (p, value) in &summary.percentiles {
        put(&format!("p{}_{name}_ms", p_word(*p)), json!(value));
    }
}

fn summary_value(summary: &Summary) -> Value {
    let mut value = json!({"mean": summary.mean, "median": summary.median, "std": summary.std});
    for (p, v) in &summary.percentiles {
        value[format!("p{}", p_word(*p))] = json!(v);
    }
    value
}

/// vLLM's percentile key word: `99` for 99.0, `99.9` for 99.9.
pub(crate) fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// vLLM's `date` field (`%Y%m%d-%H%M%S`), in UTC.
fn vllm_date(at: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(at).to_string(); // 2026-11-28T05:24:34Z
    let digits: String = rfc.chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{}-{}", &digits[..8], &digits[8..14])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_words_and_dates() {
        assert_eq!(p_word(99.0), "99");
        assert_eq!(p_word(99.9), "99.9");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_843_474);
        assert_eq!(vllm_date(at), "20261128-052434");
    }
}
