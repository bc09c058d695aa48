//! Per-run result files in the seed's layout and format, so scripts written for the seed's
//! results work unchanged on isobench's:
//!
//! ```text
//! <results>/baseline_benchmark_results/<commit8>_baseline_result.json
//! <results>/agent_benchmark_results/<commit8>_human_result.json
//! <results>/agent_benchmark_results/<commit8>_agent_result.json     (first agent arm)
//! <results>/agent_benchmark_results/<commit8>_<arm>_result.json     (every agent arm)
//! ```
//!
//! One file per commit and arm for one load point (the commit's first, or the one asked for).
//! Numbers are medians over the arm's measured trials; an `isobench` block adds what the seed's
//! single runs could not say (trials, interval). Arms that are absent or not run get no file,
//! as in the seed.
use super::input::{ReportInput, TrialOutcome};
use super::model::{ArmCell, CellStatus, CommitReport, Report};
use super::stats::median;
use crate::manifest::types::ArmRole;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const BASELINE_DIR: &str = "baseline_benchmark_results";
pub const AGENT_DIR: &str = "agent_benchmark_results";

#[derive(Debug, Clone, PartialEq)]
pub struct SeedFile {
    /// Relative to the results directory.
    pub path: PathBuf,
    pub json: Value,
}

/// The seed's key for each isobench metric, in the seed's `metrics` object.
const METRIC_KEYS: &[(&str, &str)] = &[
    ("output_throughput", "throughput_tok_s"),
    ("output_throughput", "output_token_throughput_tok_s"),
    ("total_token_throughput", "total_token_throughput_tok_s"),
    ("request_throughput", "request_throughput_req_s"),
    ("mean_ttft_ms", "mean_ttft_ms"),
    ("median_ttft_ms", "median_ttft_ms"),
    ("p99_ttft_ms", "p99_ttft_ms"),
    ("mean_tpot_ms", "mean_tpot_ms"),
    ("median_tpot_ms", "median_tpot_ms"),
    ("p99_tpot_ms", "p99_tpot_ms"),
    ("mean_itl_ms", "mean_itl_ms"),
    ("median_itl_ms", "median_itl_ms"),
    ("p99_itl_ms", "p99_itl_ms"),
    ("mean_e2el_ms", "mean_e2el_ms"),
    ("median_e2el_ms", "median_e2el_ms"),
    ("p99_e2el_ms", "p99_e2el_ms"),
];

/// The files for every commit; `point`: which load point (default: each commit's first).
pub fn seed_files(report: &Report, input: &ReportInput, point: Option<&str>) -> Vec<SeedFile> {
    let first_agent = report
        .arms
        .iter()
        .find(|a| a.role == ArmRole::Agent)
        .map(|a| a.name.as_str());
    let mut files = Vec::new();
    for commit in &report.commits {
        let Some(p) = (match point {
            Some(label) => commit.points.iter().find(|p| p.point == label),
            None => commit.points.first(),
        }) else {
            continue;
        };
        let commit8: String = commit.short.chars().take(8).collect();
        for cell in &p.arms {
            if !matches!(
                cell.status,
                CellStatus::Measured | CellStatus::Partial | CellStatus::Failed
            ) {
                continue;
            }
            let json = seed_json(commit, &p.point, cell, input, report.settings.confidence);
            let mut names: Vec<PathBuf> = Vec::new();
            match cell.role {
                ArmRole::Baseline => names
                    .push(Path::new(BASELINE_DIR).join(format!("{commit8}_baseline_result.json"))),
                ArmRole::Human => {
                    names.push(Path::new(AGENT_DIR).join(format!("{commit8}_human_result.json")))
                }
                ArmRole::Agent => {
                    if Some(cell.arm.as_str()) == first_agent {
                        names.push(
                            Path::new(AGENT_DIR).join(format!("{commit8}_agent_result.json")),
                        );
                    }
                    names.push(
                        Path::new(AGENT_DIR)
                            .join(format!("{commit8}_{}_result.json", file_safe(&cell.arm))),
                    );
                }
            }
            // An arm literally named "agent" maps both names to one file: write it once.
            names.dedup();
            files.extend(names.into_iter().map(|path| SeedFile {
                path,
                json: json.clone(),
            }));
        }
    }
    files
}

/// Arm names become part of a file name: keep letters, digits, `-`, `_`, `.`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn seed_json(
    commit: &CommitReport,
    point: &str,
    cell: &ArmCell,
    input: &ReportInput,
    confidence: f64,
) -> Value {
    let success = cell.status.has_data();
    let median_metric = |key: &str| cell.metrics.get(key).map(|m| m.summary.median);
    let mut metrics = serde_json::Map::new();
    for (ours, theirs) in METRIC_KEYS {
        match median_metric(ours) {
            Some(v) => {
                metrics.insert(theirs.to_string(), json!(round2(v)));
            }
            // The seed's error files carry the headline keys as null; keep that shape.
            None if !success
                && [
                    "throughput_tok_s",
                    "output_token_throughput_tok_s",
                    "mean_ttft_ms",
                    "mean_tpot_ms",
                ]
                .contains(theirs) =>
            {
                metrics.insert(theirs.to_string(), Value::Null);
            }
            None => {}
        }
    }
    if success {
        // Counts of the load generator's own result, medians over the measured trials.
        let ok_metrics: Vec<&super::input::Metrics> = input
            .trials
            .iter()
            .filter(|t| t.commit == commit.short && t.arm == cell.arm && t.point == point)
            .filter_map(|t| match &t.outcome {
                TrialOutcome::Ok(m) => Some(m.as_ref()),
                _ => None,
            })
            .collect();
        let med = |f: fn(&super::input::Metrics) -> Option<f64>| {
            median(&ok_metrics.iter().filter_map(|m| f(m)).collect::<Vec<_>>())
        };
        for (key, value) in [
            (
                "successful_requests",
                med(|m| m.completed.map(|v| v as f64)),
            ),
            (
                "total_input_tokens",
                med(|m| m.total_input_tokens.map(|v| v as f64)),
            ),
            (
                "total_generated_tokens",
                med(|m| m.total_output_tokens.map(|v| v as f64)),
            ),
            ("benchmark_duration_s", med(|m| m.duration).map(round2)),
        ] {
            if let Some(v) = value {
                metrics.insert(key.to_string(), json!(v));
            }
        }
    }
    let failure = super::analysis::first_failure(cell);
    let error = if success {
        Value::Null
    } else {
        json!(
            failure
                .map(|f| f.to_string())
                .unwrap_or_else(|| "failed".into())
        )
    };
    let headline = cell.metrics.get(super::metric::HEADLINE);
    let commit8: String = commit.short.chars().take(8).collect();
    json!({
        "human_commit": commit8,
        "human_commit_full": commit.full,
        "commit": commit8,
        "commit_full": commit.full,
        "parent_commit": commit.parent,
        "model": commit.model,
        "benchmark_type": "serving",
        "status": if success { "success" } else { "error" },
        "error": error,
        "duration_s": cell.trials.iter().map(|t| t.duration_s).sum::<f64>(),
        "timestamp": cell.trials.iter().map(|t| t.timestamp.as_str()).max().unwrap_or_default(),
        "metrics": metrics,
        "isobench": {
            "arm": cell.arm,
            "point": point,
            "trials": cell.trials.len(),
            "trials_ok": cell.trials.iter().filter(|t| t.status == super::model::TrialStatus::Ok).count(),
            "aggregate": "median over measured trials",
            "confidence": confidence,
            "throughput_ci_tok_s": headline.and_then(|h| h.summary.ci_low.zip(h.summary.ci_high)).map(|(lo, hi)| json!([round2(lo), round2(hi)])),
            "failure": failure,
        },
    })
}

/// The seed's files carry two decimals.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Writes the files under `results_dir` (atomically: a temporary file renamed into place).
pub fn write_seed_files(results_dir: &Path, files: &[SeedFile]) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in files {
        let path = results_dir.join(&f.path);
        let mut text = serde_json::to_string_pretty(&f.json).map_err(std::io::Error::other)?;
        text.push('\n');
        super::write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
