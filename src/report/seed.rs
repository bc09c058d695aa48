//! Per-run result files in the seed's layout and format, so scripts written for the seed's
//! results work unchanged on isobench's:
//!
//! ```text
//! <results>/baseline_benchmark_results/<commit8>_baseline_result.json
//! <results>/agent_benchmark_results/<commit8>_human_result.json
//! <results>/agent_benchmark_results/<commit8>_agent_result.json     (first agent arm)
//! <results>/agent_benchmark_results/<commit8>_<arm>_result.json     (every agent arm)
//! <results>/docker_benchmark_results/<commit8>_<arm>_trial<N>_result.json   (each raw run)
//! ```
//!
//! One file per commit and arm for one load point (the commit's first, or the one asked for).
//! Numbers are medians over the arm's measured trials; an `isobench` block adds what the seed's
//! single runs could not say (trials, interval). `docker_benchmark_results/` holds each trial's
//! own numbers (no median). Arms that are absent or not run get no file, as in the seed.
//!
//! Field meanings follow the seed's writer: `timestamp` is `%Y-%m-%d %H:%M:%S` in UTC (its
//! `time.strftime`), counts are integers, and `duration_s` is the wall time of a whole run —
//! server start to stop, as the seed timed its whole `docker run` — not the measuring window
//! (that is `metrics.benchmark_duration_s`). Every path component built from the input (commit
//! short names, arm names) is reduced to `[A-Za-z0-9._-]`, so no input can write outside the
//! results directory.
use super::input::{ReportInput, TrialOutcome};
use super::model::{ArmCell, CellStatus, CommitReport, Report};
use super::stats::median;
use crate::manifest::types::ArmRole;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const BASELINE_DIR: &str = "baseline_benchmark_results";
pub const AGENT_DIR: &str = "agent_benchmark_results";
pub const DOCKER_DIR: &str = "docker_benchmark_results";

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

/// The files for every commit; `point`: which load point (default: each commit's first fixed
/// one).
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
            // A fixed point when there is one: a search's figures are those of whichever load
            // it settled on, not the seed's one load.
            None => commit
                .points
                .iter()
                .find(|p| !super::curves::is_search_point(p))
                .or(commit.points.first()),
        }) else {
            continue;
        };
        let commit8 = commit8(&commit.short);
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
            files.extend(raw_runs(commit, &commit8, &p.point, cell, input));
        }
    }
    files
}

/// The seed's `<commit8>`: the first 8 characters of the short name, made file-safe.
fn commit8(short: &str) -> String {
    file_safe(&short.chars().take(8).collect::<String>())
}

/// `docker_benchmark_results/`: one file per measured trial with that run's own numbers.
fn raw_runs(
    commit: &CommitReport,
    commit8: &str,
    point: &str,
    cell: &ArmCell,
    input: &ReportInput,
) -> Vec<SeedFile> {
    input
        .trials
        .iter()
        .filter(|t| t.commit == commit.short && t.arm == cell.arm && t.point == point)
        .filter(|t| !matches!(t.outcome, TrialOutcome::Absent { .. }))
        .map(|t| {
            let (status, error, metrics) = match &t.outcome {
                TrialOutcome::Ok(m) => ("success", Value::Null, run_metrics(m)),
                TrialOutcome::Failed(f) => (
                    "error",
                    json!(f.to_string()),
                    null_headline(serde_json::Map::new()),
                ),
                TrialOutcome::Absent { .. } => unreachable!("filtered above"),
            };
            let mut json = header(commit, status, error, metrics);
            json["duration_s"] = json!(t.run_s.unwrap_or(t.duration_s));
            json["timestamp"] = json!(seed_timestamp(&t.timestamp));
            json["docker_image"] = json!(docker_image(cell.role, t.image.as_deref()));
            json["isobench"] = json!({"arm": cell.arm, "point": point, "trial": t.trial});
            SeedFile {
                path: Path::new(DOCKER_DIR).join(format!(
                    "{commit8}_{}_trial{}_result.json",
                    file_safe(&cell.arm),
                    t.trial
                )),
                json,
            }
        })
        .collect()
}

/// One run's metrics under the seed's keys, counts as integers.
fn run_metrics(m: &super::input::TrialMetrics) -> serde_json::Map<String, Value> {
    let v = serde_json::to_value(m).unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (ours, theirs) in METRIC_KEYS {
        if let Some(x) = v.get(*ours).and_then(Value::as_f64) {
            out.insert(theirs.to_string(), json!(round2(x)));
        }
    }
    for (key, x) in [
        ("successful_requests", m.completed),
        ("total_input_tokens", m.total_input_tokens),
        ("total_generated_tokens", m.total_output_tokens),
    ] {
        if let Some(x) = x {
            out.insert(key.to_string(), json!(x));
        }
    }
    if let Some(d) = m.duration {
        out.insert("benchmark_duration_s".into(), json!(round2(d)));
    }
    out
}

/// The seed's error files carry the headline keys as null; keep that shape.
fn null_headline(mut metrics: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    for key in [
        "throughput_tok_s",
        "output_token_throughput_tok_s",
        "mean_ttft_ms",
        "mean_tpot_ms",
    ] {
        metrics.entry(key).or_insert(Value::Null);
    }
    metrics
}

/// The fields every seed file starts with.
fn header(
    commit: &CommitReport,
    status: &str,
    error: Value,
    metrics: serde_json::Map<String, Value>,
) -> Value {
    let commit8: String = commit.short.chars().take(8).collect();
    json!({
        "human_commit": commit8,
        "human_commit_full": commit.full,
        "commit": commit8,
        "commit_full": commit.full,
        "parent_commit": commit.parent,
        "model": commit.model,
        "benchmark_type": "serving",
        "status": status,
        "error": error,
        "metrics": metrics,
    })
}

/// The seed's `docker_image`: the image an arm ran; an agent arm's is written as the seed's files
/// write it, `"<base image> + patch"`.
fn docker_image(role: ArmRole, image: Option<&str>) -> Option<String> {
    image.map(|i| match role {
        ArmRole::Agent => format!("{i} + patch"),
        _ => i.to_string(),
    })
}

/// RFC 3339 (`2026-01-10T12:00:00.123Z`) → the seed's `2026-01-10 12:00:00` (UTC). Text that is
/// not RFC 3339 is kept as it is.
pub fn seed_timestamp(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(t) => {
            let iso = humantime::format_rfc3339_seconds(t).to_string();
            iso.trim_end_matches('Z').replacen('T', " ", 1)
        }
        Err(_) => rfc3339.to_string(),
    }
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
        if let Some(v) = median_metric(ours) {
            metrics.insert(theirs.to_string(), json!(round2(v)));
        }
    }
    let records: Vec<&super::input::TrialRecord> = input
        .trials
        .iter()
        .filter(|t| t.commit == commit.short && t.arm == cell.arm && t.point == point)
        .filter(|t| !matches!(t.outcome, TrialOutcome::Absent { .. }))
        .collect();
    if success {
        // Counts of the load generator's own result, medians over the measured trials.
        let ok_metrics: Vec<&super::input::TrialMetrics> = records
            .iter()
            .filter_map(|t| match &t.outcome {
                TrialOutcome::Ok(m) => Some(m.as_ref()),
                _ => None,
            })
            .collect();
        let med = |f: fn(&super::input::TrialMetrics) -> Option<f64>| {
            median(&ok_metrics.iter().filter_map(|m| f(m)).collect::<Vec<_>>())
        };
        // Counts stay integers (the seed's `"successful_requests": 50`): a median of an even
        // number of trials is rounded to the nearest request or token.
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
        ] {
            if let Some(v) = value {
                metrics.insert(key.to_string(), json!(v.round() as u64));
            }
        }
        if let Some(v) = med(|m| m.duration) {
            metrics.insert("benchmark_duration_s".into(), json!(round2(v)));
        }
    } else {
        metrics = null_headline(metrics);
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
    // The seed timed a whole run (its `docker run`); a trial's run is its server session.
    // Inputs saved before sessions were timed fall back to the measure step's wall time.
    let runs: Vec<f64> = records
        .iter()
        .map(|t| t.run_s.unwrap_or(t.duration_s))
        .collect();
    let latest = records
        .iter()
        .map(|t| t.timestamp.as_str())
        .max()
        .unwrap_or_default();
    let mut json = header(
        commit,
        if success { "success" } else { "error" },
        error,
        metrics,
    );
    json["duration_s"] = json!(median(&runs).map(round2).unwrap_or(0.0));
    json["timestamp"] = json!(seed_timestamp(latest));
    json["docker_image"] = json!(docker_image(
        cell.role,
        records.iter().find_map(|t| t.image.as_deref())
    ));
    json["isobench"] = json!({
        "arm": cell.arm,
        "point": point,
        "trials": cell.trials.len(),
        "trials_ok": cell.trials.iter().filter(|t| t.status == super::model::TrialStatus::Ok).count(),
        "aggregate": "median over measured trials",
        "confidence": confidence,
        "throughput_ci_tok_s": headline.and_then(|h| h.summary.ci_low.zip(h.summary.ci_high)).map(|(lo, hi)| json!([round2(lo), round2(hi)])),
        "failure": failure,
        // The ISO form the seed's `timestamp` cannot carry.
        "finished_at": latest,
    });
    json
}

/// The seed's files carry two decimals.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Writes the files under `results_dir` (atomically: a temporary file renamed into place).
pub fn write_seed_files(results_dir: &Path, files: &[SeedFile]) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in files {
        // Names are built from input (commit and arm names): refuse anything but plain
        // relative components, whatever produced them, so nothing lands outside `results_dir`.
        if f.path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "refusing to write {}: not a plain relative path",
                    f.path.display()
                ),
            ));
        }
        let path = results_dir.join(&f.path);
        let mut text = serde_json::to_string_pretty(&f.json).map_err(std::io::Error::other)?;
        text.push('\n');
        super::write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
