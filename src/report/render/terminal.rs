//! Terminal tables: aligned columns, colour for verdicts and failures, `NO_COLOR` respected.
use super::reading_guide;
use super::tables::{self, TextTable, Tone};
use crate::report::metric::metric;
use crate::report::model::Report;
use crate::util::term::printable_line;

/// `--color`: auto (terminal and no `NO_COLOR`), always, never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "always", "never"];

    pub fn from_name(name: &str) -> Option<ColorChoice> {
        match name {
            "auto" => Some(ColorChoice::Auto),
            "always" => Some(ColorChoice::Always),
            "never" => Some(ColorChoice::Never),
            _ => None,
        }
    }
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

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn ansi(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "\x1b[32m",
        Tone::Bad => "\x1b[31m",
        Tone::Warn => "\x1b[33m",
        Tone::Dim => "\x1b[2m",
        Tone::Plain | Tone::Code | Tone::Commits => "",
    }
}

/// Draws a table: columns padded to their widest cell, numbers right-aligned so digits line up,
/// two spaces between columns, colour around the padded text (so it does not shift columns).
fn draw(table: &TextTable, out: &mut String, indent: &str, color: bool) {
    // Cells carry server error text and log lines: no control character may reach the terminal.
    let clean = |s: &str| printable_line(s).into_owned();
    let headers: Vec<String> = table.headers.iter().map(|h| clean(h)).collect();
    let rows: Vec<Vec<(String, Tone)>> = table
        .rows
        .iter()
        .map(|row| row.iter().map(|c| (clean(&c.text), c.tone)).collect())
        .collect();
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (i, (text, _)) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(text));
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = (&str, &'static str)>| {
        let mut parts = Vec::new();
        for (i, (text, code)) in cells.enumerate() {
            let pad = " ".repeat(widths[i] - width(text));
            let padded = if table.numeric[i] {
                format!("{pad}{text}")
            } else {
                format!("{text}{pad}")
            };
            parts.push(if color && !code.is_empty() {
                format!("{code}{padded}{RESET}")
            } else {
                padded
            });
        }
        out.push_str(indent);
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(out, &mut headers.iter().map(|h| (h.as_str(), BOLD)));
    for row in &rows {
        line(
            out,
            &mut row.iter().map(|(text, tone)| (text.as_str(), ansi(*tone))),
        );
    }
}

fn heading(out: &mut String, text: &str, color: bool) {
    let text = printable_line(text);
    if color {
        out.push_str(&format!("{BOLD}{text}{RESET}\n"));
    } else {
        out.push_str(&text);
        out.push('\n');
    }
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
            draw(&tables::arms_table(report, point), &mut out, "    ", color);
            let searches = tables::search_table(point);
            if !searches.rows.is_empty() {
                out.push_str("    SLO search per trial (bracket: the trial's resolution)\n");
                draw(&searches, &mut out, "    ", color);
            }
            let telemetry = tables::telemetry_table(report, point);
            if !telemetry.rows.is_empty() {
                out.push_str("    telemetry (docs/telemetry.md)\n");
                draw(&telemetry, &mut out, "    ", color);
            }
            if !point.comparisons.is_empty() {
                out.push('\n');
                draw(
                    &tables::comparisons_table(report, point),
                    &mut out,
                    "    ",
                    color,
                );
                let examples = tables::outputs_examples_table(point);
                if !examples.rows.is_empty() {
                    out.push_str("    divergent outputs\n");
                    draw(&examples, &mut out, "    ", color);
                }
            }
        }
        let curves = tables::curves_table(commit);
        if !curves.rows.is_empty() {
            out.push_str(
                "  throughput–latency curve (medians over trials; probes per trial; ms)\n",
            );
            draw(&curves, &mut out, "    ", color);
        }
    }

    let s = &report.summary;
    let headline = metric(&s.headline_metric)
        .map(|m| &*m.label)
        .unwrap_or("throughput");
    out.push('\n');
    heading(&mut out, &format!("Summary ({headline})"), color);
    out.push_str(&format!(
        "  trials: {} measured, {} failed, {} absent\n",
        s.trials.ok, s.trials.failed, s.trials.absent
    ));
    let sections = [
        ("", tables::tally_table(report)),
        (
            "Complete comparisons (human and agent measured)",
            tables::complete_table(report),
        ),
        (
            "Agent failures (human measured, agent failed)",
            tables::agent_failures_table(report),
        ),
        (
            "Failure categories",
            tables::failure_categories_table(report),
        ),
        (
            "Images that could not be had",
            tables::images_table(report, true),
        ),
    ];
    for (title, table) in sections.iter().filter(|(_, t)| !t.rows.is_empty()) {
        out.push('\n');
        if !title.is_empty() {
            heading(&mut out, title, color);
        }
        draw(table, &mut out, "  ", color);
    }
    if !s.statements.is_empty() {
        out.push('\n');
        heading(
            &mut out,
            "Searches: the highest load within the SLOs",
            color,
        );
        for st in &s.statements {
            out.push_str(&wrap(
                &format!("  {} {}: {}", st.commit, st.point, st.text),
                100,
            ));
        }
    }
    out.push('\n');
    heading(&mut out, "Measurement quality", color);
    for line in super::quality::lines(report) {
        out.push_str(&wrap(&format!("  {line}"), 100));
    }
    for (title, table) in super::quality::tables(report) {
        out.push('\n');
        heading(&mut out, title, color);
        draw(&table, &mut out, "  ", color);
    }
    out
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
    use crate::report::render::tables::TextCell;

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
        let cell = |text: &str, tone| TextCell {
            text: text.into(),
            tone,
        };
        let t = TextTable {
            headers: vec!["arm".into(), "n".into()],
            numeric: vec![false, true],
            rows: vec![
                vec![cell("baseline", Tone::Plain), cell("3", Tone::Good)],
                vec![
                    cell("agent-long-name", Tone::Plain),
                    cell("12", Tone::Plain),
                ],
            ],
        };
        let mut plain = String::new();
        draw(&t, &mut plain, "", false);
        assert_eq!(
            plain,
            "arm               n\nbaseline          3\nagent-long-name  12\n"
        );
        let mut coloured = String::new();
        draw(&t, &mut coloured, "", true);
        assert!(coloured.contains("\x1b[32m 3\x1b[0m"), "{coloured:?}");
        assert!(!plain.contains('\x1b'));
    }
}
