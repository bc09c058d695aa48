//! Markdown: the seed's README-style tables, ready to paste into an issue or a paper draft.
use super::tables::{self, TextTable, Tone};
use super::{fmt_confidence, reading_guide};
use crate::report::metric::metric;
use crate::report::model::Report;
use crate::util::term::printable_line;

/// Text for a table cell or a line of prose. Failure messages, log lines and commit subjects come
/// from servers and repositories, so nothing in them may become markup: `<`, `>` and `&` (raw
/// HTML, entities) are written as entities; `\\`, `` ` ``, `[`, `]` (escapes, code, links) and
/// `|` (a new table cell) are backslash-escaped; newlines and control characters (terminal
/// escapes for whoever `cat`s the file) are made visible on one line.
fn esc(s: &str) -> String {
    let s = printable_line(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '[' | ']' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A literal in backticks. Inside a code span nothing is markup (no HTML, no entities, no
/// escapes), so only what ends the span or the cell needs care: text with a backtick falls back
/// to [`esc`]; `|` is escaped (GitHub splits table cells before it parses code spans).
fn code(text: &str) -> String {
    if text.is_empty() || text.contains('`') {
        return esc(text);
    }
    format!("`{}`", printable_line(text).replace('|', "\\|"))
}

/// A cell's Markdown: literals in backticks.
fn cell_text(text: &str, tone: Tone) -> String {
    match tone {
        Tone::Code => code(text),
        Tone::Commits => text.split(", ").map(code).collect::<Vec<_>>().join(", "),
        _ => esc(text),
    }
}

fn draw(out: &mut String, table: &TextTable) {
    let line = |out: &mut String, cells: Vec<String>| {
        out.push_str("| ");
        out.push_str(&cells.join(" | "));
        out.push_str(" |\n");
    };
    line(out, table.headers.iter().map(|h| esc(h)).collect());
    out.push('|');
    for numeric in &table.numeric {
        out.push_str(if *numeric { "---:|" } else { "---|" });
    }
    out.push('\n');
    for row in &table.rows {
        line(
            out,
            row.iter().map(|c| cell_text(&c.text, c.tone)).collect(),
        );
    }
    out.push('\n');
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let headline = metric(&s.headline_metric).expect("headline metric is known");
    out.push_str(&format!("# isobench report: {}\n\n", esc(&report.campaign)));
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
    let sections = [
        ("", tables::tally_table(report)),
        (
            "### Complete comparisons\n\n",
            tables::complete_table(report),
        ),
        (
            "### Agent failures (human measured, agent failed)\n\n",
            tables::agent_failures_table(report),
        ),
        (
            "### Failure categories\n\n",
            tables::failure_categories_table(report),
        ),
        ("### Images\n\n", tables::images_table(report, false)),
    ];
    for (title, table) in sections.iter().filter(|(_, t)| !t.rows.is_empty()) {
        out.push_str(title);
        draw(&mut out, table);
    }
    if !s.statements.is_empty() {
        out.push_str("### Searches: the highest load within the SLOs\n\n");
        for st in &s.statements {
            out.push_str(&format!(
                "- {} {}: {}\n",
                code(&st.commit),
                code(&st.point),
                esc(&st.text)
            ));
        }
        out.push('\n');
    }

    out.push_str("## Measurement quality\n\n");
    for line in super::quality::lines(report) {
        out.push_str(&format!("- {}\n", esc(&line)));
    }
    out.push('\n');
    for (title, table) in super::quality::tables(report) {
        out.push_str(&format!("### {title}\n\n"));
        draw(&mut out, &table);
    }

    out.push_str("## Per commit\n\n");
    for commit in &report.commits {
        let subject = commit
            .subject
            .as_deref()
            .map(|s| format!(" — {}", esc(s)))
            .unwrap_or_default();
        out.push_str(&format!("### {}{subject}\n\n", code(&commit.short)));
        out.push_str(&format!(
            "Model {}, commit {}, parent {}.\n\n",
            code(&commit.model),
            code(&commit.full),
            code(&commit.parent)
        ));
        if commit.points.is_empty() {
            out.push_str("No trials recorded.\n\n");
        }
        for point in &commit.points {
            out.push_str(&format!(
                "Load {}; medians with {} intervals.\n\n",
                code(&point.point),
                fmt_confidence(report.settings.confidence)
            ));
            draw(&mut out, &tables::arms_table(report, point));
            let searches = tables::search_table(point);
            if !searches.rows.is_empty() {
                out.push_str("SLO search per trial (bracket: the trial's resolution):\n\n");
                draw(&mut out, &searches);
            }
            let telemetry = tables::telemetry_table(report, point);
            if !telemetry.rows.is_empty() {
                out.push_str("Telemetry (server, GPU, host; see docs/telemetry.md):\n\n");
                draw(&mut out, &telemetry);
            }
            // Cluster campaigns: where each trial ran (placement fairness is checkable).
            let nodes: Vec<String> = point
                .arms
                .iter()
                .flat_map(|a| {
                    a.trials.iter().filter_map(move |t| {
                        t.node
                            .as_ref()
                            .map(|n| format!("{} #{} `{}`", a.arm, t.trial, esc(n)))
                    })
                })
                .collect();
            if !nodes.is_empty() {
                out.push_str(&format!("Nodes: {}.\n\n", nodes.join(", ")));
            }
            if !point.comparisons.is_empty() {
                draw(&mut out, &tables::comparisons_table(report, point));
                let examples = tables::outputs_examples_table(point);
                if !examples.rows.is_empty() {
                    out.push_str("Divergent outputs (earliest first):\n\n");
                    draw(&mut out, &examples);
                }
            }
        }
        let curves = tables::curves_table(commit);
        if !curves.rows.is_empty() {
            out.push_str(
                "Throughput–latency curve (fixed load points: medians over trials; search probes per trial; ms):\n\n",
            );
            draw(&mut out, &curves);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::tables::TextCell;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(esc("a|b\nc"), "a\\|b c");
        assert_eq!(
            cell_text("x = `y`", Tone::Code),
            "x = \\`y\\`",
            "no nested backticks"
        );
        assert_eq!(cell_text("a|b", Tone::Code), "`a\\|b`");
        assert_eq!(cell_text("aaaa, bbbb", Tone::Commits), "`aaaa`, `bbbb`");
        let mut out = String::new();
        let t = TextTable {
            headers: vec!["x".into(), "n".into()],
            numeric: vec![false, true],
            rows: vec![vec![
                TextCell {
                    text: "a".into(),
                    tone: Tone::Plain,
                },
                TextCell {
                    text: "1".into(),
                    tone: Tone::Good,
                },
            ]],
        };
        draw(&mut out, &t);
        assert_eq!(out, "| x | n |\n|---|---:|\n| a | 1 |\n\n");
    }
}
