//! One self-contained HTML page: inline CSS, inline SVG, no script, no external resource, so it
//! opens from disk or an e-mail attachment with no network.
use super::svg::{self, esc};
use super::tables::{self, TextTable, Tone};
use super::{fmt_diff, fmt_summary, reading_guide};
use crate::manifest::types::ArmRole;
use crate::report::analysis::{headline_diff, outputs_marked};
use crate::report::metric::{HEADLINE, metric};
use crate::report::model::{ArmCell, ComparisonKind, MetricDiff, PointReport, Report};
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
.good{color:#0a7c2f}.bad{color:#b3261e}.warn{color:#9a6700}.dim{color:#888}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
nav a{margin-right:10px;font-family:monospace}
details{margin:4px 0 12px}
svg.chart{background:#fff;border:1px solid #eee;max-width:100%;height:auto}
svg .title{font-size:12px;font-weight:600;fill:#333}svg .tick,svg .value{font-size:10px;fill:#555}
svg .label{font-size:11px;fill:#222}svg .missing{font-size:11px;fill:#b3261e}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg .whisker{stroke:#222;stroke-width:1.3}
svg .dot{fill:#111;opacity:.55}svg .median{stroke:#111;stroke-width:2}svg .p99{stroke:#555}
svg .box{stroke:#333;stroke-width:.6}
svg .curve,svg .legend{stroke-width:2}svg .curve.p99{stroke-dasharray:5 3}svg .slo{stroke:#b3261e;stroke-dasharray:2 2}
svg .slo-label{font-size:10px;fill:#b3261e}svg .probe{stroke-width:1.5}
svg rect.bar.faster{fill:#2e9d50}svg rect.bar.slower{fill:#d0453a}svg rect.bar.noise{fill:#9e9e9e}svg rect.bar.single{fill:#e0b040}
"#;

fn anchor(short: &str) -> String {
    let id: String = short.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("c-{id}")
}

/// A cell's HTML: tones become CSS classes, literals `<code>`, commits links to their sections.
fn cell_html(text: &str, tone: Tone) -> String {
    let span = |class: &str| format!("<span class=\"{class}\">{}</span>", esc(text));
    match tone {
        Tone::Plain => esc(text),
        Tone::Good => span("good"),
        Tone::Bad => span("bad"),
        Tone::Warn => span("warn"),
        Tone::Dim => span("dim"),
        Tone::Code => format!("<code>{}</code>", esc(text)),
        Tone::Commits => text
            .split(", ")
            .map(|c| format!("<a href=\"#{}\"><code>{}</code></a>", anchor(c), esc(c)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn draw(out: &mut String, table: &TextTable) {
    out.push_str("<table><thead><tr>");
    for h in &table.headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &table.rows {
        out.push_str("<tr>");
        for (cell, numeric) in row.iter().zip(&table.numeric) {
            let class = if *numeric { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", cell_html(&cell.text, cell.tone));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
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
    out.push_str("<h2>Measurement quality</h2>\n<ul>");
    for line in super::quality::lines(report) {
        let _ = write!(out, "<li>{}</li>", esc(&line));
    }
    out.push_str("</ul>\n");
    for (title, table) in super::quality::tables(report) {
        let _ = writeln!(out, "<h3>{}</h3>", esc(title));
        draw(&mut out, &table);
    }

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
        curves_section(report, commit, &mut out);
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
        esc(&headline.label),
        esc(headline.unit)
    );
    let _ = writeln!(
        out,
        "<p>Trials: {} measured, {} failed, {} absent.</p>",
        s.trials.ok, s.trials.failed, s.trials.absent
    );
    let tally = tables::tally_table(report);
    if !tally.rows.is_empty() {
        draw(out, &tally);
    }
    if !s.statements.is_empty() {
        out.push_str(
            "<h3>Searches: the highest load within the SLOs</h3>\n<ul class=\"statements\">",
        );
        for st in &s.statements {
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><code>{}</code></a> {}: <span class=\"{}\">{}</span></li>",
                anchor(&st.commit),
                esc(&st.commit),
                esc(&st.point),
                match Tone::of_verdict(st.diff.verdict) {
                    Tone::Good => "good",
                    Tone::Bad => "bad",
                    Tone::Warn => "warn",
                    _ => "plain",
                },
                esc(&st.text)
            );
        }
        out.push_str("</ul>\n");
    }
    let charts = difference_charts(report, &headline.label);
    if !charts.is_empty() {
        let _ = writeln!(out, "<div class=\"charts\">{charts}</div>");
    }
    let sections = [
        ("Complete comparisons", tables::complete_table(report)),
        (
            "Agent failures (human measured, agent failed)",
            tables::agent_failures_table(report),
        ),
        (
            "Failure categories",
            tables::failure_categories_table(report),
        ),
        ("Images", tables::images_table(report, false)),
    ];
    for (title, table) in sections.iter().filter(|(_, t)| !t.rows.is_empty()) {
        let _ = writeln!(out, "<h3>{}</h3>", esc(title));
        draw(out, table);
    }
}

/// A commit's throughput–latency curves: TTFT, TPOT and E2E charts and the table behind them,
/// when the commit has a curve (two fixed load points or a search).
fn curves_section(report: &Report, commit: &crate::report::model::CommitReport, out: &mut String) {
    if !crate::report::curves::drawn(commit) {
        return;
    }
    let arm_index = |name: &str| report.arms.iter().position(|a| a.name == name).unwrap_or(0);
    out.push_str("<h4>throughput–latency curves</h4><div class=\"charts\">");
    for (latency, label) in [("ttft", "TTFT"), ("tpot", "TPOT"), ("e2el", "E2E")] {
        if let Some(chart) = svg::curve_chart(commit, latency, label, &arm_index) {
            out.push_str(&chart);
        }
    }
    out.push_str("</div>\n<details><summary>curve data</summary>");
    draw(out, &tables::curves_table(commit));
    out.push_str("</details>\n");
}

/// Sorted difference charts: every agent against human, then human against baseline.
fn difference_charts(report: &Report, headline_label: &str) -> String {
    let several_points = report.commits.iter().any(|c| c.points.len() > 1);
    let label = |short: &str, point: &str| {
        if several_points {
            format!("{short} {point}")
        } else {
            short.to_string()
        }
    };
    let mut kinds: Vec<(ComparisonKind, Option<&str>, String)> = report
        .arms
        .iter()
        .filter(|a| a.role == ArmRole::Agent)
        .map(|a| {
            let title = format!("{} vs human: {headline_label} difference, sorted", a.name);
            (ComparisonKind::AgentVsHuman, Some(a.name.as_str()), title)
        })
        .collect();
    kinds.push((
        ComparisonKind::HumanVsBaseline,
        None,
        format!("human vs baseline: {headline_label} difference, sorted"),
    ));
    let mut charts = String::new();
    for (kind, agent, title) in kinds {
        let mut rows: Vec<(String, &MetricDiff)> = Vec::new();
        for commit in &report.commits {
            for point in &commit.points {
                let candidate = agent.map(str::to_string).or_else(|| {
                    let c = point.comparisons.iter().find(|c| c.kind == kind);
                    c.map(|c| c.candidate.clone())
                });
                let Some(cand) = candidate else { continue };
                if let Some(d) = headline_diff(point, kind, &cand) {
                    // A bar whose outputs diverged says so where the eye lands: its label.
                    let mark = if outputs_marked(point, kind, &cand) {
                        format!(" {}", tables::OUTPUTS_MARK)
                    } else {
                        String::new()
                    };
                    rows.push((format!("{}{mark}", label(&commit.short, &point.point)), d));
                }
            }
        }
        if !rows.is_empty() {
            rows.sort_by(|a, b| b.1.diff_pct.total_cmp(&a.1.diff_pct));
            charts.push_str(&svg::diff_bars(&rows, &title));
        }
    }
    charts
}

fn point_section(report: &Report, point: &PointReport, out: &mut String) {
    let _ = writeln!(out, "<h4>load <code>{}</code></h4>", esc(&point.point));
    let indexed: Vec<(usize, &ArmCell)> = point
        .arms
        .iter()
        .map(|c| {
            let index = report.arms.iter().position(|a| a.name == c.arm);
            (index.unwrap_or(0), c)
        })
        .collect();
    let headline = metric(HEADLINE).expect("headline metric is known");
    out.push_str("<div class=\"charts\">");
    out.push_str(&svg::bars_by_arm(
        &indexed,
        HEADLINE,
        headline.unit,
        &headline.label,
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

    draw(out, &tables::arms_table(report, point));
    let searches = tables::search_table(point);
    if !searches.rows.is_empty() {
        out.push_str("<p>SLO search per trial (bracket: the trial's resolution):</p>");
        draw(out, &searches);
    }
    if !point.comparisons.is_empty() {
        draw(out, &tables::comparisons_table(report, point));
        let examples = tables::outputs_examples_table(point);
        if !examples.rows.is_empty() {
            out.push_str("<details><summary>divergent outputs</summary>");
            draw(out, &examples);
            out.push_str("</details>\n");
        }
    }

    // Every metric, arms and comparisons side by side, for those who want TTFT p99 too.
    out.push_str("<details><summary>all metrics</summary>");
    let mut headers = vec!["metric".to_string()];
    headers.extend(point.arms.iter().map(|a| a.arm.clone()));
    headers.extend(
        point
            .comparisons
            .iter()
            .map(|c| format!("{} vs {}", c.candidate, c.reference)),
    );
    let numeric = vec![false; headers.len()];
    let mut all = TextTable {
        headers,
        numeric,
        rows: Vec::new(),
    };
    for m in report
        .metrics
        .iter()
        .filter(|m| point.arms.iter().any(|a| a.metrics.contains_key(&m.key)))
    {
        let mut row = vec![tables::TextCell {
            text: format!("{} ({})", m.label, m.unit),
            tone: Tone::Plain,
        }];
        row.extend(point.arms.iter().map(|a| {
            let text = a.metrics.get(&m.key).map(|c| fmt_summary(&c.summary));
            tables::TextCell {
                text: text.unwrap_or("-".into()),
                tone: Tone::Plain,
            }
        }));
        row.extend(
            point
                .comparisons
                .iter()
                .map(|c| match c.metrics.get(&m.key) {
                    Some(d) => tables::TextCell {
                        text: fmt_diff(d),
                        tone: Tone::of_verdict(d.verdict),
                    },
                    None => tables::TextCell {
                        text: "-".into(),
                        tone: Tone::Plain,
                    },
                }),
        );
        all.rows.push(row);
    }
    draw(out, &all);
    out.push_str("</details>\n");
}
