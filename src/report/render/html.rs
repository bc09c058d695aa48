//! One self-contained HTML page: inline CSS, inline SVG, no script, no external resource, so it
//! opens from disk or an e-mail attachment with no network.
use super::svg::{self, esc};
use super::terminal::cell_note;
use super::{fmt_diff, fmt_num, fmt_status, fmt_summary, fmt_verdict, reading_guide};
use crate::report::analysis::headline_diff;
use crate::report::metric::{HEADLINE, METRICS, metric};
use crate::report::model::{ComparisonKind, MetricDiff, PointReport, Report};
use crate::report::stats::Verdict;
use std::fmt::Write;

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#fff}
main{max-width:1280px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:16px;margin:22px 0 6px}h4{font-size:14px;margin:14px 0 6px;color:#444}
p.guide{color:#444;max-width:900px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e5e5e5;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}td.num{text-align:right}
code{font-size:12px;background:#f3f3f3;padding:0 3px;border-radius:3px}
.faster{color:#0a7c2f}.slower{color:#b3261e}.single{color:#9a6700}.failed{color:#b3261e}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
nav a{margin-right:10px;font-family:monospace}
details{margin:4px 0 12px}
svg.chart{background:#fff;border:1px solid #eee}
svg .title{font-size:12px;font-weight:600;fill:#333}svg .tick,svg .value{font-size:10px;fill:#555}
svg .label{font-size:11px;fill:#222}svg .missing{font-size:11px;fill:#b3261e}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg .whisker{stroke:#222;stroke-width:1.3}
svg .dot{fill:#111;opacity:.55}svg .median{stroke:#111;stroke-width:2}svg .p99{stroke:#555}
svg .box{stroke:#333;stroke-width:.6}
svg rect.bar.faster{fill:#2e9d50}svg rect.bar.slower{fill:#d0453a}svg rect.bar.noise{fill:#9e9e9e}svg rect.bar.single{fill:#e0b040}
"#;

fn verdict_span(d: &MetricDiff, text: &str) -> String {
    let class = match d.verdict {
        Verdict::Faster => "faster",
        Verdict::Slower => "slower",
        Verdict::WithinNoise => "noise",
        Verdict::NoNoiseEstimate => "single",
    };
    format!("<span class=\"{class}\">{}</span>", esc(text))
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>], numeric_cols: &[usize]) {
    out.push_str("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            // Cells arrive as HTML (callers escape text they build from data).
            let class = if numeric_cols.contains(&i) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn anchor(short: &str) -> String {
    format!(
        "c-{}",
        short
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    )
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = format!("isobench report: {}", report.campaign);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>{}</title><style>{CSS}</style></head><body><main>\n",
        esc(&title)
    );
    let _ = write!(
        out,
        "<h1>{}</h1>\n<p>Generated {} by isobench {}.</p>\n",
        esc(&title),
        esc(&report.generated_at),
        esc(&report.isobench_version)
    );
    let _ = writeln!(
        out,
        "<p class=\"guide\">{}</p>",
        esc(&reading_guide(
            report.settings.confidence,
            report.settings.paired
        ))
    );
    if let Some(t) = report.settings.threshold_pct {
        let _ = writeln!(
            out,
            "<p class=\"guide\">Seed rule also shown: a difference of at least {t}% is a win or a loss.</p>"
        );
    }
    out.push_str("<nav>");
    for c in &report.commits {
        let _ = write!(
            out,
            "<a href=\"#{}\">{}</a>",
            anchor(&c.short),
            esc(&c.short)
        );
    }
    out.push_str("</nav>\n");

    summary(report, &mut out);

    out.push_str("<h2>Per commit</h2>\n");
    for commit in &report.commits {
        let _ = write!(
            out,
            "<section id=\"{}\"><h3><code>{}</code> {}</h3>",
            anchor(&commit.short),
            esc(&commit.short),
            esc(commit.subject.as_deref().unwrap_or(""))
        );
        let _ = writeln!(
            out,
            "<p>Model <code>{}</code>, commit <code>{}</code>, parent <code>{}</code>.</p>",
            esc(&commit.model),
            esc(&commit.full),
            esc(&commit.parent)
        );
        if commit.points.is_empty() {
            out.push_str("<p>No trials recorded.</p>");
        }
        for point in &commit.points {
            point_section(report, point, &mut out);
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main></body></html>\n");
    out
}

fn summary(report: &Report, out: &mut String) {
    let s = &report.summary;
    let headline = metric(&s.headline_metric).expect("headline metric is known");
    let _ = writeln!(
        out,
        "<h2>Summary ({} {})</h2>",
        esc(headline.label),
        esc(headline.unit)
    );
    let _ = writeln!(
        out,
        "<p>Trials: {} measured, {} failed, {} absent.</p>",
        s.trials.ok, s.trials.failed, s.trials.absent
    );
    if !s.tallies.is_empty() {
        let mut headers = vec![
            "comparison",
            "faster",
            "within noise",
            "slower",
            "no noise estimate",
            "candidate failed",
            "not comparable",
        ];
        let seed = report
            .settings
            .threshold_pct
            .map(|t| format!("seed rule ±{t}% (faster/within/slower)"));
        if let Some(h) = &seed {
            headers.push(h);
        }
        let rows: Vec<Vec<String>> = s
            .tallies
            .iter()
            .map(|t| {
                let mut row = vec![
                    esc(&format!("{} vs {}", t.candidate, t.reference)),
                    format!("<span class=\"faster\">{}</span>", t.faster),
                    t.within_noise.to_string(),
                    format!("<span class=\"slower\">{}</span>", t.slower),
                    t.no_noise_estimate.to_string(),
                    format!("<span class=\"failed\">{}</span>", t.candidate_failed),
                    t.not_comparable.to_string(),
                ];
                if let Some(seed) = &t.seed {
                    row.push(format!(
                        "{}/{}/{}",
                        seed.faster, seed.within_noise, seed.slower
                    ));
                }
                row
            })
            .collect();
        table(out, &headers, &rows, &[1, 2, 3, 4, 5, 6]);
    }

    // Sorted difference charts: every agent against human, and human against baseline.
    let several_points = report.commits.iter().any(|c| c.points.len() > 1);
    let label = |short: &str, point: &str| {
        if several_points {
            format!("{short} {point}")
        } else {
            short.to_string()
        }
    };
    let mut charts = String::new();
    let agent_names: Vec<&str> = report
        .arms
        .iter()
        .filter(|a| a.role == crate::manifest::types::ArmRole::Agent)
        .map(|a| a.name.as_str())
        .collect();
    let mut kinds: Vec<(ComparisonKind, Option<&str>, String)> = agent_names
        .iter()
        .map(|a| {
            (
                ComparisonKind::AgentVsHuman,
                Some(*a),
                format!("{a} vs human: {} difference, sorted", headline.label),
            )
        })
        .collect();
    kinds.push((
        ComparisonKind::HumanVsBaseline,
        None,
        format!("human vs baseline: {} difference, sorted", headline.label),
    ));
    for (kind, agent, title) in kinds {
        let mut rows: Vec<(String, &MetricDiff)> = Vec::new();
        for commit in &report.commits {
            for point in &commit.points {
                let candidate = agent.map(str::to_string).or_else(|| {
                    point
                        .comparisons
                        .iter()
                        .find(|c| c.kind == kind)
                        .map(|c| c.candidate.clone())
                });
                if let Some(d) = candidate.and_then(|cand| headline_diff(point, kind, &cand)) {
                    rows.push((label(&commit.short, &point.point), d));
                }
            }
        }
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| b.1.diff_pct.total_cmp(&a.1.diff_pct));
        charts.push_str(&svg::diff_bars(&rows, &title));
    }
    if !charts.is_empty() {
        let _ = writeln!(out, "<div class=\"charts\">{charts}</div>");
    }

    if !s.complete.is_empty() {
        out.push_str("<h3>Complete comparisons</h3>\n");
        let rows: Vec<Vec<String>> = s
            .complete
            .iter()
            .map(|r| {
                let pct = |d: &Option<MetricDiff>| {
                    d.as_ref()
                        .map(|d| verdict_span(d, &super::fmt_pct(d.diff_pct)))
                        .unwrap_or("-".into())
                };
                vec![
                    format!(
                        "<a href=\"#{}\"><code>{}</code></a>",
                        anchor(&r.commit),
                        esc(&r.commit)
                    ),
                    esc(&r.model),
                    esc(&r.point),
                    esc(&r.agent),
                    r.baseline.map(fmt_num).unwrap_or("-".into()),
                    fmt_num(r.human),
                    fmt_num(r.agent_value),
                    pct(&r.human_vs_baseline),
                    pct(&r.agent_vs_baseline),
                    verdict_span(&r.agent_vs_human, &fmt_diff(&r.agent_vs_human)),
                    verdict_span(&r.agent_vs_human, &fmt_verdict(&r.agent_vs_human)),
                ]
            })
            .collect();
        table(
            out,
            &[
                "commit",
                "model",
                "load",
                "agent",
                "baseline",
                "human",
                "agent",
                "human vs baseline",
                "agent vs baseline",
                "agent vs human",
                "verdict",
            ],
            &rows,
            &[4, 5, 6, 7, 8],
        );
    }
    if !s.agent_failures.is_empty() {
        out.push_str("<h3>Agent failures (human measured, agent failed)</h3>\n");
        let rows: Vec<Vec<String>> = s
            .agent_failures
            .iter()
            .map(|r| {
                vec![
                    format!("<code>{}</code>", esc(&r.commit)),
                    esc(&r.point),
                    esc(&r.agent),
                    fmt_num(r.human),
                    format!("<span class=\"failed\">{}</span>", esc(r.class.as_str())),
                    esc(r.cause.map(|c| c.as_str()).unwrap_or("-")),
                    esc(&r.message),
                    r.sample_log_line
                        .as_deref()
                        .map(|l| format!("<code>{}</code>", esc(l)))
                        .unwrap_or("-".into()),
                ]
            })
            .collect();
        table(
            out,
            &[
                "commit", "load", "agent", "human", "failure", "cause", "message", "log line",
            ],
            &rows,
            &[3],
        );
    }
    if !s.failure_breakdown.is_empty() {
        out.push_str("<h3>Failure categories</h3>\n");
        let rows: Vec<Vec<String>> = s
            .failure_breakdown
            .iter()
            .map(|c| {
                vec![
                    format!("<span class=\"failed\">{}</span>", esc(&c.category)),
                    c.count.to_string(),
                    c.commits
                        .iter()
                        .map(|s| format!("<a href=\"#{}\"><code>{}</code></a>", anchor(s), esc(s)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    esc(&c.arms.join(", ")),
                    match &c.sample_log_line {
                        Some(l) => format!("<code>{}</code>", esc(l)),
                        None => esc(&c.sample_message),
                    },
                ]
            })
            .collect();
        table(
            out,
            &["category", "count", "commits", "arms", "sample"],
            &rows,
            &[1],
        );
    }
}

fn point_section(report: &Report, point: &PointReport, out: &mut String) {
    let _ = writeln!(out, "<h4>load <code>{}</code></h4>", esc(&point.point));
    let indexed: Vec<(usize, &crate::report::model::ArmCell)> = point
        .arms
        .iter()
        .map(|c| {
            (
                report
                    .arms
                    .iter()
                    .position(|a| a.name == c.arm)
                    .unwrap_or(0),
                c,
            )
        })
        .collect();
    let headline = metric(HEADLINE).expect("headline metric is known");
    out.push_str("<div class=\"charts\">");
    out.push_str(&svg::bars_by_arm(
        &indexed,
        HEADLINE,
        headline.unit,
        headline.label,
    ));
    for (key, label) in [
        ("ttft_ms", "TTFT per request (ms)"),
        ("tpot_ms", "TPOT per request (ms)"),
    ] {
        if let Some(chart) = svg::boxes_by_arm(&indexed, key, label) {
            out.push_str(&chart);
        }
    }
    if point.arms.iter().all(|a| a.distributions.is_empty()) {
        out.push_str("<p>No per-request data in these results (measure with detailed results for TTFT/TPOT distributions).</p>");
    }
    out.push_str("</div>\n");

    // Arms: compact metrics, failures spelled out.
    let compact: Vec<_> = METRICS
        .iter()
        .filter(|m| m.compact && point.arms.iter().any(|a| a.metrics.contains_key(m.key)))
        .collect();
    let mut headers: Vec<String> = vec!["arm".into(), "trials".into()];
    headers.extend(compact.iter().map(|m| format!("{} ({})", m.label, m.unit)));
    headers.push("note".into());
    let rows: Vec<Vec<String>> = point
        .arms
        .iter()
        .map(|a| {
            let mut row = vec![esc(&a.arm), esc(&fmt_status(a))];
            row.extend(compact.iter().map(|m| {
                a.metrics
                    .get(m.key)
                    .map(|c| esc(&fmt_summary(&c.summary)))
                    .unwrap_or("-".into())
            }));
            row.push(format!(
                "<span class=\"failed\">{}</span>",
                esc(&cell_note(a))
            ));
            row
        })
        .collect();
    table(
        out,
        &headers.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
        &(2..headers.len() - 1).collect::<Vec<_>>(),
    );

    if !point.comparisons.is_empty() {
        let mut headers: Vec<String> = vec!["comparison".into(), "verdict".into()];
        headers.extend(compact.iter().map(|m| m.label.to_string()));
        let rows: Vec<Vec<String>> = point
            .comparisons
            .iter()
            .map(|c| {
                let mut row = vec![
                    esc(&format!("{} vs {}", c.candidate, c.reference)),
                    c.metrics
                        .get(HEADLINE)
                        .map(|d| verdict_span(d, &fmt_verdict(d)))
                        .unwrap_or("-".into()),
                ];
                row.extend(compact.iter().map(|m| {
                    c.metrics
                        .get(m.key)
                        .map(|d| verdict_span(d, &fmt_diff(d)))
                        .unwrap_or("-".into())
                }));
                row
            })
            .collect();
        table(
            out,
            &headers.iter().map(String::as_str).collect::<Vec<_>>(),
            &rows,
            &[],
        );
    }

    // Every metric, for those who want TTFT p99 or request throughput too.
    out.push_str("<details><summary>all metrics</summary>");
    let mut headers: Vec<String> = vec!["metric".into()];
    headers.extend(point.arms.iter().map(|a| a.arm.clone()));
    headers.extend(
        point
            .comparisons
            .iter()
            .map(|c| format!("{} vs {}", c.candidate, c.reference)),
    );
    let rows: Vec<Vec<String>> = METRICS
        .iter()
        .filter(|m| point.arms.iter().any(|a| a.metrics.contains_key(m.key)))
        .map(|m| {
            let mut row = vec![format!("{} ({})", esc(m.label), esc(m.unit))];
            row.extend(point.arms.iter().map(|a| {
                a.metrics
                    .get(m.key)
                    .map(|c| esc(&fmt_summary(&c.summary)))
                    .unwrap_or("-".into())
            }));
            row.extend(point.comparisons.iter().map(|c| {
                c.metrics
                    .get(m.key)
                    .map(|d| verdict_span(d, &fmt_diff(d)))
                    .unwrap_or("-".into())
            }));
            row
        })
        .collect();
    table(
        out,
        &headers.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
        &[],
    );
    out.push_str("</details>\n");
}
