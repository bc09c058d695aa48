//! Markdown: the seed's README-style tables, ready to paste into an issue or a paper draft.
use super::terminal::cell_note;
use super::{
    fmt_confidence, fmt_diff, fmt_num, fmt_pct, fmt_status, fmt_summary, fmt_verdict, reading_guide,
};
use crate::report::metric::{HEADLINE, METRICS, metric};
use crate::report::model::Report;

/// Escapes what would break a table cell.
fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str("| ");
    out.push_str(&cells.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
    out.push_str(" |\n");
}

fn header(out: &mut String, cells: &[&str]) {
    row(
        out,
        &cells.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    );
    out.push('|');
    for _ in cells {
        out.push_str("---|");
    }
    out.push('\n');
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let headline = metric(&s.headline_metric).expect("headline metric is known");
    out.push_str(&format!("# isobench report: {}\n\n", report.campaign));
    out.push_str(&format!(
        "Generated {} by isobench {}.\n\n",
        report.generated_at, report.isobench_version
    ));
    out.push_str(&reading_guide(
        report.settings.confidence,
        report.settings.paired,
    ));
    out.push_str("\n\n");
    out.push_str(&format!(
        "Trials: {} measured, {} failed, {} absent.\n\n",
        s.trials.ok, s.trials.failed, s.trials.absent
    ));

    out.push_str(&format!(
        "## Summary ({} {})\n\n",
        headline.label, headline.unit
    ));
    if !s.tallies.is_empty() {
        let mut cols = vec![
            "comparison",
            "faster",
            "within noise",
            "slower",
            "no noise estimate",
            "candidate failed",
            "not comparable",
        ];
        let seed_col = report
            .settings
            .threshold_pct
            .map(|t| format!("seed rule ±{t}% (faster/within/slower)"));
        if let Some(c) = &seed_col {
            cols.push(c);
        }
        header(&mut out, &cols);
        for t in &s.tallies {
            let mut cells = vec![
                format!("{} vs {}", t.candidate, t.reference),
                t.faster.to_string(),
                t.within_noise.to_string(),
                t.slower.to_string(),
                t.no_noise_estimate.to_string(),
                t.candidate_failed.to_string(),
                t.not_comparable.to_string(),
            ];
            if let Some(seed) = &t.seed {
                cells.push(format!(
                    "{}/{}/{}",
                    seed.faster, seed.within_noise, seed.slower
                ));
            }
            row(&mut out, &cells);
        }
        out.push('\n');
    }

    if !s.complete.is_empty() {
        out.push_str("### Complete comparisons\n\n");
        let (b, h, a) = (
            format!("baseline {}", headline.unit),
            format!("human {}", headline.unit),
            format!("agent {}", headline.unit),
        );
        header(
            &mut out,
            &[
                "commit",
                "model",
                "load",
                "agent",
                &b,
                &h,
                &a,
                "human vs baseline",
                "agent vs baseline",
                "agent vs human",
                "verdict",
            ],
        );
        for r in &s.complete {
            row(
                &mut out,
                &[
                    format!("`{}`", r.commit),
                    r.model.clone(),
                    r.point.clone(),
                    r.agent.clone(),
                    r.baseline.map(fmt_num).unwrap_or("-".into()),
                    fmt_num(r.human),
                    fmt_num(r.agent_value),
                    r.human_vs_baseline
                        .as_ref()
                        .map(|d| fmt_pct(d.diff_pct))
                        .unwrap_or("-".into()),
                    r.agent_vs_baseline
                        .as_ref()
                        .map(|d| fmt_pct(d.diff_pct))
                        .unwrap_or("-".into()),
                    fmt_diff(&r.agent_vs_human),
                    fmt_verdict(&r.agent_vs_human),
                ],
            );
        }
        out.push('\n');
    }

    if !s.agent_failures.is_empty() {
        out.push_str("### Agent failures (human measured, agent failed)\n\n");
        header(
            &mut out,
            &[
                "commit", "load", "agent", "human", "failure", "cause", "message", "log line",
            ],
        );
        for r in &s.agent_failures {
            row(
                &mut out,
                &[
                    format!("`{}`", r.commit),
                    r.point.clone(),
                    r.agent.clone(),
                    fmt_num(r.human),
                    r.class.to_string(),
                    r.cause
                        .map(|c| c.as_str().to_string())
                        .unwrap_or("-".into()),
                    r.message.clone(),
                    r.sample_log_line
                        .as_deref()
                        .map(|l| format!("`{l}`"))
                        .unwrap_or("-".into()),
                ],
            );
        }
        out.push('\n');
    }

    if !s.failure_breakdown.is_empty() {
        out.push_str("### Failure categories\n\n");
        header(
            &mut out,
            &["category", "count", "commits", "arms", "sample"],
        );
        for c in &s.failure_breakdown {
            let sample = match &c.sample_log_line {
                Some(line) => format!("`{line}`"),
                None => c.sample_message.clone(),
            };
            row(
                &mut out,
                &[
                    c.category.clone(),
                    c.count.to_string(),
                    c.commits.join(", "),
                    c.arms.join(", "),
                    sample,
                ],
            );
        }
        out.push('\n');
    }

    out.push_str("## Per commit\n\n");
    let compact: Vec<_> = METRICS.iter().filter(|m| m.compact).collect();
    for commit in &report.commits {
        let subject = commit
            .subject
            .as_deref()
            .map(|s| format!(" — {s}"))
            .unwrap_or_default();
        out.push_str(&format!("### `{}`{subject}\n\n", commit.short));
        out.push_str(&format!(
            "Model `{}`, commit `{}`, parent `{}`.\n\n",
            commit.model, commit.full, commit.parent
        ));
        if commit.points.is_empty() {
            out.push_str("No trials recorded.\n\n");
        }
        for point in &commit.points {
            let metrics: Vec<_> = compact
                .iter()
                .filter(|m| point.arms.iter().any(|a| a.metrics.contains_key(m.key)))
                .collect();
            out.push_str(&format!(
                "Load `{}`; medians with {} intervals.\n\n",
                point.point,
                fmt_confidence(report.settings.confidence)
            ));
            let mut cols: Vec<String> = vec!["arm".into(), "trials".into()];
            cols.extend(metrics.iter().map(|m| format!("{} ({})", m.label, m.unit)));
            cols.push("note".into());
            header(
                &mut out,
                &cols.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            for a in &point.arms {
                let mut cells = vec![a.arm.clone(), fmt_status(a)];
                cells.extend(metrics.iter().map(|m| {
                    a.metrics
                        .get(m.key)
                        .map(|c| fmt_summary(&c.summary))
                        .unwrap_or("-".into())
                }));
                cells.push(cell_note(a));
                row(&mut out, &cells);
            }
            out.push('\n');
            if !point.comparisons.is_empty() {
                let mut cols: Vec<String> = vec!["comparison".into(), "verdict".into()];
                cols.extend(metrics.iter().map(|m| m.label.to_string()));
                header(
                    &mut out,
                    &cols.iter().map(String::as_str).collect::<Vec<_>>(),
                );
                for c in &point.comparisons {
                    let mut cells = vec![
                        format!("{} vs {}", c.candidate, c.reference),
                        c.metrics
                            .get(HEADLINE)
                            .map(fmt_verdict)
                            .unwrap_or("-".into()),
                    ];
                    cells.extend(
                        metrics
                            .iter()
                            .map(|m| c.metrics.get(m.key).map(fmt_diff).unwrap_or("-".into())),
                    );
                    row(&mut out, &cells);
                }
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(esc("a|b\nc"), "a\\|b c");
        let mut out = String::new();
        header(&mut out, &["x", "y"]);
        assert_eq!(out, "| x | y |\n|---|---|\n");
    }
}
