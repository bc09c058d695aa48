//! The "measurement quality" and "campaign-wide error control" sections, as tables and lines
//! shared by the terminal, Markdown and HTML renderers.
use super::tables::{TextTable, Tone, plain, strings, toned};
use super::{fmt_num, fmt_pct};
use crate::report::model::Report;
use crate::report::stats::Verdict;

/// One line each: the FDR result, the trials planning result, then every quality warning.
pub fn lines(report: &Report) -> Vec<String> {
    let f = &report.summary.fdr;
    let p = &report.summary.planning;
    let mut out = vec![format!(
        "Campaign-wide error control ({}, false discovery rate {:.0} %): {} of {} headline comparison(s) remain faster/slower (per-comparison intervals: {}).",
        f.method,
        f.level * 100.0,
        f.discoveries,
        f.comparisons,
        f.per_comparison_discoveries
    )];
    out.push(format!(
        "Trials planning: to detect a {:.0} % change with {:.0} % power, {} of {} comparison(s) are under-powered.",
        p.change_pct,
        p.power * 100.0,
        p.under_powered,
        p.rows.len()
    ));
    let placed = report
        .quality
        .trials
        .iter()
        .filter(|t| !t.gpus.is_empty())
        .count();
    let windows: Vec<f64> = report
        .quality
        .trials
        .iter()
        .filter_map(|t| t.window_s)
        .collect();
    if !windows.is_empty() {
        let min = windows.iter().copied().fold(f64::INFINITY, f64::min);
        out.push(format!(
            "Windows: {} trial(s) with a recorded window, shortest {} s; {} with a recorded GPU; {} measured while another measurement ran.",
            windows.len(),
            fmt_num(min),
            placed,
            report.quality.overlapping_trials
        ));
    }
    out.extend(
        report
            .quality
            .warnings
            .iter()
            .map(|w| format!("warning: {w}")),
    );
    out
}

/// FDR rows: per-comparison and campaign-wide verdicts side by side.
pub fn fdr_table(report: &Report) -> TextTable {
    let mut t = TextTable::new(
        strings(&[
            "commit",
            "load",
            "comparison",
            "difference",
            "p",
            "q (BH)",
            "verdict",
            "after FDR",
        ]),
        &[3, 4, 5],
    );
    for r in &report.summary.fdr.rows {
        t.push(vec![
            toned(r.commit.clone(), Tone::Code),
            plain(r.point.clone()),
            plain(format!("{} vs {}", r.candidate, r.reference)),
            plain(fmt_pct(r.diff_pct)),
            plain(format!("{:.4}", r.p_value)),
            plain(format!("{:.4}", r.q_value)),
            toned(r.verdict.as_str(), Tone::of_verdict(r.verdict)),
            toned(r.fdr_verdict.as_str(), Tone::of_verdict(r.fdr_verdict)),
        ]);
    }
    t
}

/// Trials planning rows.
pub fn planning_table(report: &Report) -> TextTable {
    let p = &report.summary.planning;
    let mut t = TextTable::new(
        vec![
            "commit".into(),
            "load".into(),
            "comparison".into(),
            "round sd".into(),
            "trials".into(),
            format!("needed for {:.0} %", p.change_pct),
        ],
        &[3, 4, 5],
    );
    for r in &p.rows {
        t.push(vec![
            toned(r.commit.clone(), Tone::Code),
            plain(r.point.clone()),
            plain(format!("{} ({})", r.candidate, r.kind.as_str())),
            plain(format!("{:.2} %", r.sd_pct)),
            plain(r.trials.to_string()),
            toned(
                r.needed.map(|n| n.to_string()).unwrap_or("> 10000".into()),
                if r.under_powered {
                    Tone::Warn
                } else {
                    Tone::Plain
                },
            ),
        ]);
    }
    t
}

/// Per arm: trial spread and trials per GPU (the placement).
pub fn arms_table(report: &Report) -> TextTable {
    let mut t = TextTable::new(
        strings(&["commit", "load", "arm", "trials", "CV", "trials per GPU"]),
        &[3, 4],
    );
    for a in &report.quality.arms {
        t.push(vec![
            toned(a.commit.clone(), Tone::Code),
            plain(a.point.clone()),
            plain(a.arm.clone()),
            plain(a.n.to_string()),
            plain(
                a.cv.map(|c| format!("{:.2} %", c * 100.0))
                    .unwrap_or("-".into()),
            ),
            plain(
                a.gpus
                    .iter()
                    .map(|(g, n)| format!("{g}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]);
    }
    t
}

/// Every measured trial: GPU, window, completed requests, overlaps, flags.
pub fn trials_table(report: &Report) -> TextTable {
    let mut t = TextTable::new(
        strings(&[
            "commit",
            "load",
            "arm",
            "trial",
            "GPU",
            "window (s)",
            "completed",
            "overlaps",
            "flags",
        ]),
        &[3, 5, 6, 7],
    );
    for q in &report.quality.trials {
        t.push(vec![
            toned(q.commit.clone(), Tone::Code),
            plain(q.point.clone()),
            plain(q.arm.clone()),
            plain(q.trial.to_string()),
            toned(
                if q.gpus.is_empty() {
                    "-".into()
                } else {
                    q.gpus.join("+")
                },
                Tone::Code,
            ),
            plain(q.window_s.map(fmt_num).unwrap_or("-".into())),
            plain(q.completed.map(|c| c.to_string()).unwrap_or("-".into())),
            plain(q.overlaps.to_string()),
            toned(
                q.flags.join("; "),
                if q.flags.is_empty() {
                    Tone::Plain
                } else {
                    Tone::Warn
                },
            ),
        ]);
    }
    t
}

/// GPU effects on the headline, where the placement allows an estimate.
pub fn gpu_table(report: &Report) -> TextTable {
    let mut t = TextTable::new(strings(&["GPU", "trials", "effect on throughput"]), &[1, 2]);
    for g in &report.quality.gpu_effects {
        let text = match (g.ci_low_pct, g.ci_high_pct) {
            (Some(lo), Some(hi)) => format!(
                "{} [{}, {}]",
                fmt_pct(g.effect_pct),
                fmt_pct(lo),
                fmt_pct(hi)
            ),
            _ => fmt_pct(g.effect_pct),
        };
        let v = Verdict::from_interval(g.ci_low_pct.zip(g.ci_high_pct));
        let tone = if matches!(v, Verdict::Faster | Verdict::Slower) {
            Tone::Warn
        } else {
            Tone::Plain
        };
        t.push(vec![
            toned(g.gpu.clone(), Tone::Code),
            plain(g.trials.to_string()),
            toned(text, tone),
        ]);
    }
    t
}

/// (title, table) of the section, non-empty tables only.
pub fn tables(report: &Report) -> Vec<(&'static str, TextTable)> {
    [
        (
            "Campaign-wide error control (Benjamini–Hochberg)",
            fdr_table(report),
        ),
        ("Trials planning", planning_table(report)),
        (
            "GPU effect (trials of arms placed on several GPUs)",
            gpu_table(report),
        ),
        ("Trial spread and placement per arm", arms_table(report)),
        ("Trials: GPU, window, overlaps", trials_table(report)),
    ]
    .into_iter()
    .filter(|(_, t)| !t.rows.is_empty())
    .collect()
}
