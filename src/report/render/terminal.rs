//! Terminal tables: aligned columns, colour for verdicts and failures, `NO_COLOR` respected.
use super::{fmt_diff, fmt_num, fmt_pct, fmt_status, fmt_summary, fmt_verdict, reading_guide};
use crate::report::analysis::first_failure;
use crate::report::metric::{METRICS, MetricDef, metric};
use crate::report::model::{CellStatus, PointReport, Report, Tally};
use crate::report::stats::Verdict;

/// `--color`: auto (terminal and no `NO_COLOR`), always, never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether to colour: an explicit choice wins; `auto` colours a terminal unless `NO_COLOR` is set
/// to a non-empty value (no-color.org) or `TERM=dumb`.
pub fn use_color(
    choice: ColorChoice,
    no_color: Option<&str>,
    term: Option<&str>,
    is_terminal: bool,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb")
        }
    }
}

/// [`use_color`] with this process's environment and stdout.
pub fn use_color_for_stdout(choice: ColorChoice) -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var("NO_COLOR").ok();
    let term = std::env::var("TERM").ok();
    use_color(
        choice,
        no_color.as_deref(),
        term.as_deref(),
        std::io::stdout().is_terminal(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Good,
    Bad,
    Warn,
    Dim,
    Bold,
}

impl Style {
    fn ansi(self) -> &'static str {
        match self {
            Style::Plain => "",
            Style::Good => "\x1b[32m",
            Style::Bad => "\x1b[31m",
            Style::Warn => "\x1b[33m",
            Style::Dim => "\x1b[2m",
            Style::Bold => "\x1b[1m",
        }
    }

    fn for_verdict(v: Verdict) -> Style {
        match v {
            Verdict::Faster => Style::Good,
            Verdict::Slower => Style::Bad,
            Verdict::WithinNoise => Style::Plain,
            Verdict::NoNoiseEstimate => Style::Warn,
        }
    }
}

struct Cell {
    text: String,
    style: Style,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        style: Style::Plain,
    }
}

fn styled(text: impl Into<String>, style: Style) -> Cell {
    Cell {
        text: text.into(),
        style,
    }
}

/// Columns padded to their widest cell; the first column left-aligned, the rest too unless
/// they hold numbers (right-aligned so digits line up).
struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    fn right_align(mut self, cols: &[usize]) -> Table {
        for &c in cols {
            self.right[c] = true;
        }
        self
    }

    fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String, indent: &str, color: bool) {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(&c.text));
            }
        }
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = (String, Style)>| {
            let mut parts = Vec::new();
            for (i, (text, style)) in cells.enumerate() {
                let pad = " ".repeat(widths[i] - width(&text));
                let padded = if self.right[i] {
                    format!("{pad}{text}")
                } else {
                    format!("{text}{pad}")
                };
                parts.push(if color && style != Style::Plain {
                    format!("{}{padded}\x1b[0m", style.ansi())
                } else {
                    padded
                });
            }
            out.push_str(indent);
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(
            out,
            &mut self.headers.iter().map(|h| (h.clone(), Style::Bold)),
        );
        for row in &self.rows {
            line(out, &mut row.iter().map(|c| (c.text.clone(), c.style)));
        }
    }
}

fn heading(out: &mut String, text: &str, color: bool) {
    if color {
        out.push_str(&format!("\x1b[1m{text}\x1b[0m\n"));
    } else {
        out.push_str(text);
        out.push('\n');
    }
}

/// The compact metrics that have data somewhere at this point.
fn point_metrics(point: &PointReport) -> Vec<&'static MetricDef> {
    METRICS
        .iter()
        .filter(|m| m.compact && point.arms.iter().any(|a| a.metrics.contains_key(m.key)))
        .collect()
}

pub fn render(report: &Report, color: bool) -> String {
    let mut out = String::new();
    heading(
        &mut out,
        &format!(
            "isobench report: {} (generated {})",
            report.campaign, report.generated_at
        ),
        color,
    );
    out.push_str(&wrap(
        &reading_guide(report.settings.confidence, report.settings.paired),
        100,
    ));
    if let Some(t) = report.settings.threshold_pct {
        out.push_str(&format!(
            "Seed rule also shown: a difference of at least {t}% is a win or a loss.\n"
        ));
    }

    for commit in &report.commits {
        out.push('\n');
        let subject = commit
            .subject
            .as_deref()
            .map(|s| format!("  {s}"))
            .unwrap_or_default();
        heading(
            &mut out,
            &format!("{}  {}{subject}", commit.short, commit.model),
            color,
        );
        if commit.points.is_empty() {
            out.push_str("  no trials recorded\n");
        }
        for point in &commit.points {
            out.push_str(&format!("  load {}\n", point.point));
            let metrics = point_metrics(point);
            let mut headers = vec!["arm".to_string(), "trials".to_string()];
            headers.extend(metrics.iter().map(|m| format!("{} {}", m.label, m.unit)));
            // Failures are explained in a last column, so long messages do not widen the others.
            headers.push(String::new());
            let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            let mut arms = Table::new(&header_refs);
            for a in &point.arms {
                let status_style = match a.status {
                    CellStatus::Failed => Style::Bad,
                    CellStatus::Partial => Style::Warn,
                    CellStatus::Absent | CellStatus::NotRun => Style::Dim,
                    CellStatus::Measured => Style::Plain,
                };
                let mut row = vec![cell(&a.arm), styled(fmt_status(a), status_style)];
                row.extend(metrics.iter().map(|m| {
                    cell(
                        a.metrics
                            .get(m.key)
                            .map(|c| fmt_summary(&c.summary))
                            .unwrap_or("-".into()),
                    )
                }));
                row.push(styled(cell_note(a), status_style));
                arms.row(row);
            }
            arms.render(&mut out, "    ", color);

            if !point.comparisons.is_empty() {
                let mut headers = vec!["comparison".to_string(), "verdict".to_string()];
                headers.extend(metrics.iter().map(|m| m.label.to_string()));
                let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
                let mut cmp = Table::new(&header_refs);
                for c in &point.comparisons {
                    let headline = c.metrics.get(crate::report::metric::HEADLINE);
                    let mut row = vec![
                        cell(format!("{} vs {}", c.candidate, c.reference)),
                        headline
                            .map(|d| styled(fmt_verdict(d), Style::for_verdict(d.verdict)))
                            .unwrap_or(cell("-")),
                    ];
                    row.extend(metrics.iter().map(|m| match c.metrics.get(m.key) {
                        Some(d) => styled(fmt_diff(d), Style::for_verdict(d.verdict)),
                        None => cell("-"),
                    }));
                    cmp.row(row);
                }
                out.push('\n');
                cmp.render(&mut out, "    ", color);
            }
        }
    }

    render_summary(report, &mut out, color);
    out
}

/// Why a cell has no (or not all) numbers: the first failure, or why the arm is absent.
pub(crate) fn cell_note(a: &crate::report::model::ArmCell) -> String {
    match (a.status, first_failure(a)) {
        (CellStatus::Failed | CellStatus::Partial, Some(f)) => f.to_string(),
        (CellStatus::Absent, _) => a.absent_reason.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

fn render_summary(report: &Report, out: &mut String, color: bool) {
    let s = &report.summary;
    let headline = metric(&s.headline_metric)
        .map(|m| m.label)
        .unwrap_or("throughput");
    out.push('\n');
    heading(out, &format!("Summary ({headline})"), color);
    out.push_str(&format!(
        "  trials: {} measured, {} failed, {} absent\n",
        s.trials.ok, s.trials.failed, s.trials.absent
    ));
    if !s.tallies.is_empty() {
        out.push('\n');
        tally_table(&s.tallies, report.settings.threshold_pct).render(out, "  ", color);
    }
    if !s.complete.is_empty() {
        out.push('\n');
        heading(
            out,
            "Complete comparisons (human and agent measured)",
            color,
        );
        let unit = metric(&s.headline_metric)
            .map(|m| m.unit)
            .unwrap_or("tok/s");
        let (b, h, a) = (
            format!("baseline {unit}"),
            format!("human {unit}"),
            format!("agent {unit}"),
        );
        let mut t = Table::new(&[
            "commit",
            "load",
            "agent",
            &b,
            &h,
            &a,
            "human vs base",
            "agent vs base",
            "agent vs human",
            "verdict",
        ])
        .right_align(&[3, 4, 5]);
        for r in &s.complete {
            t.row(vec![
                cell(&r.commit),
                cell(&r.point),
                cell(&r.agent),
                cell(r.baseline.map(fmt_num).unwrap_or("-".into())),
                cell(fmt_num(r.human)),
                cell(fmt_num(r.agent_value)),
                r.human_vs_baseline
                    .as_ref()
                    .map(|d| styled(fmt_pct(d.diff_pct), Style::for_verdict(d.verdict)))
                    .unwrap_or(cell("-")),
                r.agent_vs_baseline
                    .as_ref()
                    .map(|d| styled(fmt_pct(d.diff_pct), Style::for_verdict(d.verdict)))
                    .unwrap_or(cell("-")),
                styled(
                    fmt_diff(&r.agent_vs_human),
                    Style::for_verdict(r.agent_vs_human.verdict),
                ),
                styled(
                    fmt_verdict(&r.agent_vs_human),
                    Style::for_verdict(r.agent_vs_human.verdict),
                ),
            ]);
        }
        t.render(out, "  ", color);
    }
    if !s.agent_failures.is_empty() {
        out.push('\n');
        heading(out, "Agent failures (human measured, agent failed)", color);
        let mut t = Table::new(&["commit", "load", "agent", "human", "failure", "message"])
            .right_align(&[3]);
        for r in &s.agent_failures {
            let class = match r.cause {
                Some(c) => format!("{} ({})", r.class, c.as_str()),
                None => r.class.to_string(),
            };
            t.row(vec![
                cell(&r.commit),
                cell(&r.point),
                cell(&r.agent),
                cell(fmt_num(r.human)),
                styled(class, Style::Bad),
                cell(&r.message),
            ]);
        }
        t.render(out, "  ", color);
    }
    if !s.failure_breakdown.is_empty() {
        out.push('\n');
        heading(out, "Failure categories", color);
        let mut t =
            Table::new(&["category", "count", "commits", "arms", "sample"]).right_align(&[1]);
        for c in &s.failure_breakdown {
            t.row(vec![
                styled(&c.category, Style::Bad),
                cell(c.count.to_string()),
                cell(c.commits.join(" ")),
                cell(c.arms.join(" ")),
                cell(c.sample_log_line.as_deref().unwrap_or(&c.sample_message)),
            ]);
        }
        t.render(out, "  ", color);
    }
}

fn tally_table(tallies: &[Tally], threshold: Option<f64>) -> Table {
    let mut headers = vec![
        "comparison",
        "faster",
        "within noise",
        "slower",
        "no noise est.",
        "candidate failed",
        "not comparable",
    ];
    let seed_header = threshold.map(|t| format!("seed rule ±{t}% (f/w/s)"));
    if let Some(h) = &seed_header {
        headers.push(h);
    }
    let mut t = Table::new(&headers).right_align(&[1, 2, 3, 4, 5, 6]);
    for tally in tallies {
        let mut row = vec![
            cell(format!("{} vs {}", tally.candidate, tally.reference)),
            styled(
                tally.faster.to_string(),
                if tally.faster > 0 {
                    Style::Good
                } else {
                    Style::Plain
                },
            ),
            cell(tally.within_noise.to_string()),
            styled(
                tally.slower.to_string(),
                if tally.slower > 0 {
                    Style::Bad
                } else {
                    Style::Plain
                },
            ),
            cell(tally.no_noise_estimate.to_string()),
            styled(
                tally.candidate_failed.to_string(),
                if tally.candidate_failed > 0 {
                    Style::Bad
                } else {
                    Style::Plain
                },
            ),
            cell(tally.not_comparable.to_string()),
        ];
        if threshold.is_some() {
            let s = tally.seed.clone().unwrap_or_default();
            row.push(cell(format!(
                "{}/{}/{}",
                s.faster, s.within_noise, s.slower
            )));
        }
        t.row(row);
    }
    t
}

/// Word-wraps `text` at `width` columns; every line ends with a newline.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_decision_follows_no_color_convention() {
        assert!(use_color(ColorChoice::Auto, None, Some("xterm"), true));
        assert!(
            !use_color(ColorChoice::Auto, Some("1"), Some("xterm"), true),
            "NO_COLOR=1 switches colour off"
        );
        assert!(
            use_color(ColorChoice::Auto, Some(""), Some("xterm"), true),
            "an empty NO_COLOR is ignored"
        );
        assert!(!use_color(ColorChoice::Auto, None, Some("dumb"), true));
        assert!(
            !use_color(ColorChoice::Auto, None, None, false),
            "pipes get no colour"
        );
        assert!(
            use_color(ColorChoice::Always, Some("1"), None, false),
            "an explicit flag wins"
        );
        assert!(!use_color(ColorChoice::Never, None, None, true));
    }

    #[test]
    fn wraps_at_word_boundaries() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd\n");
        assert_eq!(wrap("longword x", 4), "longword\nx\n");
    }

    #[test]
    fn table_aligns_columns_and_colours_only_when_asked() {
        let mut t = Table::new(&["arm", "n"]).right_align(&[1]);
        t.row(vec![cell("baseline"), styled("3", Style::Good)]);
        t.row(vec![cell("agent-long-name"), cell("12")]);
        let mut plain = String::new();
        t.render(&mut plain, "", false);
        assert_eq!(
            plain,
            "arm               n\nbaseline          3\nagent-long-name  12\n"
        );
        let mut coloured = String::new();
        t.render(&mut coloured, "", true);
        assert!(coloured.contains("\x1b[32m 3\x1b[0m"), "{coloured:?}");
        assert!(!plain.contains('\x1b'));
    }
}
