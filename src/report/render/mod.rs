//! Renderers of a [`Report`](super::model::Report): terminal, Markdown, JSON, CSV, HTML (+SVG).
//! They only format; every number comes from the report model.
pub mod csv;
pub mod html;
pub mod json;
pub mod markdown;
pub mod quality;
pub mod svg;
pub mod tables;
pub mod terminal;

use super::model::{ArmCell, CellStatus, MetricDiff};
use super::stats::{Summary, Verdict};

/// A number with precision that suits its size (tok/s in the thousands, ms below 1).
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Signed percentage, e.g. `+4.3%`, `-0.8%`.
pub fn fmt_pct(p: f64) -> String {
    if !p.is_finite() {
        return "n/a".into();
    }
    // Avoid "-0.0%": a difference that rounds to zero has no sign.
    let p = if (p * 10.0).round() == 0.0 { 0.0 } else { p };
    format!("{p:+.1}%")
}

/// `median [low, high]`, or `median (1 trial)` without an interval.
pub fn fmt_summary(s: &Summary) -> String {
    match (s.ci_low, s.ci_high) {
        (Some(lo), Some(hi)) => format!("{} [{}, {}]", fmt_num(s.median), fmt_num(lo), fmt_num(hi)),
        _ => format!("{} (1 trial)", fmt_num(s.median)),
    }
}

/// `+4.3% [+1.2, +7.5]`, or `+4.3%` without an interval.
pub fn fmt_diff(d: &MetricDiff) -> String {
    match (d.ci_low_pct, d.ci_high_pct) {
        (Some(lo), Some(hi)) => {
            format!("{} [{}, {}]", fmt_pct(d.diff_pct), fmt_pct(lo), fmt_pct(hi))
        }
        _ => fmt_pct(d.diff_pct),
    }
}

/// Verdict text; a single-trial verdict says why there is none.
pub fn fmt_verdict(d: &MetricDiff) -> String {
    match d.verdict {
        Verdict::NoNoiseEstimate => "no noise estimate (1 trial)".into(),
        v => v.as_str().into(),
    }
}

pub fn fmt_status(cell: &ArmCell) -> String {
    let ok = cell
        .trials
        .iter()
        .filter(|t| t.status == super::model::TrialStatus::Ok)
        .count();
    match cell.status {
        CellStatus::Measured => format!("ok {ok}/{}", cell.trials.len()),
        CellStatus::Partial => format!("partial {ok}/{}", cell.trials.len()),
        CellStatus::Failed => "failed".into(),
        CellStatus::Absent => "absent".into(),
        CellStatus::NotRun => "not run".into(),
    }
}

/// Percent of the confidence level for headers: 0.95 → "95%".
pub fn fmt_confidence(c: f64) -> String {
    let pct = c * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

/// One sentence on how to read the numbers, shared by every human-readable format.
pub fn reading_guide(confidence: f64, paired: bool) -> String {
    format!(
        "Numbers are medians over trials with {conf} intervals; differences are percent, positive = better \
         (higher throughput, lower latency), with {conf} intervals from a {method} on log values. \
         Verdict: faster/slower when the whole interval is on one side of zero, else within noise; \
         a single trial gives no noise estimate.",
        conf = fmt_confidence(confidence),
        method = if paired {
            "paired t-test over interleaved rounds"
        } else {
            "Welch t-test"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(fmt_num(8080.42), "8080");
        assert_eq!(fmt_num(198.29), "198.3");
        assert_eq!(fmt_num(13.694), "13.69");
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_pct(4.26), "+4.3%");
        assert_eq!(fmt_pct(-0.04), "+0.0%");
        assert_eq!(fmt_pct(-9.28), "-9.3%");
        assert_eq!(fmt_confidence(0.95), "95%");
        assert_eq!(fmt_confidence(0.975), "97.5%");
    }
}
