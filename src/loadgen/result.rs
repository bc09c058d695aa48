//! One measured run's outcome: settings, raw records, metrics, self-audit, and how it ended.
//! Its JSON is in `json.rs`, its console summary in `console.rs`.
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

use super::audit::SelfAudit;
use super::dataset::Dataset;
use super::metrics::{Metrics, WindowSummary, compute_metrics, summarize_window};
use super::record::RequestRecord;
use super::{ClientConfig, RunConfig};
use crate::failure::{Failure, FailureClass};

/// How a run ended, for the executor's failure classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Ok,
    /// The run's timeout struck (partial results are still in the result).
    TimedOut,
    /// Not one request succeeded.
    AllRequestsFailed,
}

/// The outcome of one measured run: settings, raw records, metrics, self-audit.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub run: RunConfig,
    pub base_url: String,
    pub request_timeout_s: f64,
    pub dataset_name: &'static str,
    pub dataset: super::DatasetConfig,
    pub tokenizer: Option<String>,
    pub synthetic_dataset: bool,
    pub residual_prompt_mismatch: i64,
    pub mismatched_prompts: usize,
    pub records: Vec<RequestRecord>,
    pub duration_s: f64,
    pub timed_out: bool,
    pub metrics: Metrics,
    pub audit: SelfAudit,
    pub started_at: SystemTime,
    /// Timed runs: the window and what happened in it.
    pub window: Option<WindowSummary>,
}

impl BenchResult {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        run: &RunConfig,
        ds: &Dataset,
        client: &ClientConfig,
        records: Vec<RequestRecord>,
        duration_s: f64,
        timed_out: bool,
        audit: SelfAudit,
        started_at: SystemTime,
    ) -> BenchResult {
        let metrics = compute_metrics(
            &records,
            duration_s,
            &run.percentiles,
            &run.goodput,
            &|text| ds.count_tokens(text),
        );
        BenchResult {
            run: run.clone(),
            base_url: client.base_url.clone(),
            request_timeout_s: client.request_timeout.as_secs_f64(),
            dataset_name: ds.config.workload.name(),
            dataset: ds.config.clone(),
            tokenizer: ds.tokenizer.as_ref().map(|t| t.path.display().to_string()),
            synthetic_dataset: ds.synthetic,
            residual_prompt_mismatch: ds.residual_mismatch,
            mismatched_prompts: ds.mismatched_prompts,
            records,
            duration_s,
            timed_out,
            metrics,
            audit,
            started_at,
            window: None,
        }
    }

    /// A timed run's result: `records` are every request sent; those sent within the window
    /// are the measured ones (latency metrics and per-request lists), and the throughputs
    /// count what arrived inside the window over its length (`duration`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn timed(
        run: &RunConfig,
        ds: &Dataset,
        client: &ClientConfig,
        records: Vec<RequestRecord>,
        window: super::TimedWindow,
        timed_out: bool,
        audit: SelfAudit,
        started_at: SystemTime,
    ) -> BenchResult {
        let count_tokens = |text: &str| ds.count_tokens(text);
        let summary = summarize_window(&records, window, ds.requests.len(), &count_tokens);
        let (start, _) = window.bounds_s();
        let measured: Vec<RequestRecord> = records
            .into_iter()
            .filter(|r| r.sent_at_s.is_some_and(|sent| sent >= start))
            .collect();
        let length = summary.duration_s;
        let mut result = BenchResult::new(
            run, ds, client, measured, length, timed_out, audit, started_at,
        );
        let m = &mut result.metrics;
        m.request_throughput = summary.completed_in_window as f64 / length;
        m.output_throughput = summary.output_tokens_in_window / length;
        m.total_token_throughput =
            (summary.output_tokens_in_window + summary.input_tokens_in_window as f64) / length;
        result.window = Some(summary);
        result
    }

    pub fn outcome(&self) -> RunOutcome {
        if self.timed_out {
            RunOutcome::TimedOut
        } else if self.metrics.completed == 0 {
            RunOutcome::AllRequestsFailed
        } else {
            RunOutcome::Ok
        }
    }

    /// The failure to record for this run, if it is one (`timeout`, `all_requests_failed`).
    pub fn failure(&self) -> Option<Failure> {
        let m = &self.metrics;
        let first_error = self
            .records
            .iter()
            .find_map(|r| r.error.as_ref())
            .map(|e| e.message.as_str())
            .unwrap_or("");
        match self.outcome() {
            RunOutcome::Ok => None,
            RunOutcome::TimedOut => Some(Failure::new(
                FailureClass::Timeout,
                format!(
                    "run timed out after {:.0} s ({} completed, {} failed)",
                    self.run.run_timeout.as_secs_f64(),
                    m.completed,
                    m.failed
                ),
            )),
            RunOutcome::AllRequestsFailed => Some(Failure::new(
                FailureClass::AllRequestsFailed,
                format!(
                    "all {} requests failed; first error: {first_error}",
                    m.failed
                ),
            )),
        }
    }

    /// Failed requests per error kind.
    pub fn errors_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for error in self.records.iter().filter_map(|r| r.error.as_ref()) {
            *counts.entry(error.kind.as_str()).or_default() += 1;
        }
        counts
    }
}
