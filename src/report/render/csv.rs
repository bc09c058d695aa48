//! CSV, tidy for pandas: one row per observation, with `row_type` saying which kind.
//!
//! Columns: `row_type,commit,point,arm,reference,metric,trial,value,ci_low,ci_high,n,unit,verdict`
//! * `trial`: one measured trial; `value` is the trial's metric, `trial` its number.
//! * `summary`: one arm; `value` the median over trials, `ci_low`/`ci_high` its interval
//!   (empty with one trial), `n` the trials used.
//! * `comparison`: `arm` (candidate) against `reference`; `value` the difference in percent,
//!   positive = better, with its interval and `verdict`.
//! * `outputs`: the comparison's output equivalence (`metric` = `outputs`): `value` the fraction
//!   of requests with identical text, `ci_low` the first divergence (in `unit`: `tokens` or
//!   `chars`), `ci_high` the reference's own identical fraction across its trials (the floor),
//!   `n` the requests compared, `verdict` the finding (`identical`, `within_floor`, `diverged`,
//!   `not_checked`), with `+marked` when it marks the speed verdict.
//!
//! * `quality`: one measured trial's window: `reference` holds its GPU(s), `value` the window
//!   in seconds, `ci_low` the window start (Unix seconds), `ci_high` the number of trials
//!   measured at the same time, `n` the completed requests, `verdict` the quality flags.
//! * `fdr`: one headline comparison under campaign-wide error control (Benjamini–Hochberg):
//!   `value` the difference in percent, `ci_low` its p-value, `ci_high` its q-value, `verdict`
//!   the verdict after FDR control.
//!
//! Failed and absent cells produce no rows (see the JSON or the failure breakdown).
use crate::report::model::{DivergenceUnit, Report};
use crate::report::stats::Verdict;
use std::fmt::Write;

pub const HEADER: &str =
    "row_type,commit,point,arm,reference,metric,trial,value,ci_low,ci_high,n,unit,verdict";

/// RFC 4180 quoting: only when the field needs it.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v}"))
        .unwrap_or_default()
}

fn verdict_key(v: Verdict) -> &'static str {
    match v {
        Verdict::Faster => "faster",
        Verdict::Slower => "slower",
        Verdict::WithinNoise => "within_noise",
        Verdict::NoNoiseEstimate => "no_noise_estimate",
    }
}

/// Trials behind a difference: the rounds paired, else the smaller arm.
fn comparison_n(d: &crate::report::model::MetricDiff) -> usize {
    if d.n_pairs > 0 {
        d.n_pairs
    } else {
        d.n_candidate.min(d.n_reference)
    }
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push('\n');
    let mut line = |cols: [String; 13]| {
        let _ = writeln!(
            out,
            "{}",
            cols.iter().map(|c| field(c)).collect::<Vec<_>>().join(",")
        );
    };
    for commit in &report.commits {
        for point in &commit.points {
            for cell in &point.arms {
                for (key, m) in &cell.metrics {
                    let unit = report
                        .metric(key)
                        .map(|d| d.unit.clone())
                        .unwrap_or_default();
                    for v in &m.values {
                        line([
                            "trial".into(),
                            commit.short.clone(),
                            point.point.clone(),
                            cell.arm.clone(),
                            String::new(),
                            key.clone(),
                            v.trial.to_string(),
                            num(Some(v.value)),
                            String::new(),
                            String::new(),
                            String::new(),
                            unit.clone(),
                            String::new(),
                        ]);
                    }
                    let s = &m.summary;
                    line([
                        "summary".into(),
                        commit.short.clone(),
                        point.point.clone(),
                        cell.arm.clone(),
                        String::new(),
                        key.clone(),
                        String::new(),
                        num(Some(s.median)),
                        num(s.ci_low),
                        num(s.ci_high),
                        s.n.to_string(),
                        unit,
                        String::new(),
                    ]);
                }
            }
            for c in &point.comparisons {
                for (key, d) in &c.metrics {
                    line([
                        "comparison".into(),
                        commit.short.clone(),
                        point.point.clone(),
                        c.candidate.clone(),
                        c.reference.clone(),
                        key.clone(),
                        String::new(),
                        num(Some(d.diff_pct)),
                        num(d.ci_low_pct),
                        num(d.ci_high_pct),
                        comparison_n(d).to_string(),
                        "%".into(),
                        verdict_key(d.verdict).into(),
                    ]);
                }
                let o = &c.outputs;
                line([
                    "outputs".into(),
                    commit.short.clone(),
                    point.point.clone(),
                    c.candidate.clone(),
                    c.reference.clone(),
                    "outputs".into(),
                    String::new(),
                    num(o.identical_fraction),
                    num(o.first_divergence.map(|k| k as f64)),
                    num(o.floor.as_ref().map(|f| f.identical_fraction)),
                    o.compared.to_string(),
                    match o.unit {
                        DivergenceUnit::Tokens => "tokens",
                        DivergenceUnit::Chars => "chars",
                    }
                    .into(),
                    if o.marks_verdict {
                        format!("{}+marked", o.finding.as_str())
                    } else {
                        o.finding.as_str().into()
                    },
                ]);
            }
        }
    }
    for q in &report.quality.trials {
        line([
            "quality".into(),
            q.commit.clone(),
            q.point.clone(),
            q.arm.clone(),
            q.gpus.join("+"),
            "window_s".into(),
            q.trial.to_string(),
            num(q.window_s),
            num(q.window_start),
            q.overlaps.to_string(),
            q.completed.map(|c| c.to_string()).unwrap_or_default(),
            "s".into(),
            q.flags.join("; "),
        ]);
    }
    for r in &report.summary.fdr.rows {
        line([
            "fdr".into(),
            r.commit.clone(),
            r.point.clone(),
            r.candidate.clone(),
            r.reference.clone(),
            report.summary.headline_metric.clone(),
            String::new(),
            num(Some(r.diff_pct)),
            num(Some(r.p_value)),
            num(Some(r.q_value)),
            String::new(),
            "%".into(),
            verdict_key(r.fdr_verdict).into(),
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("conc=16"), "conc=16");
        assert_eq!(field("conc=16,rate=4"), "\"conc=16,rate=4\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(num(None), "");
        assert_eq!(num(Some(f64::NAN)), "");
        assert_eq!(num(Some(1.5)), "1.5");
    }
}
