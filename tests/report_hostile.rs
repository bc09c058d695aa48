//! Reports of a campaign whose servers and commits are hostile: failure messages, log lines and
//! commit subjects carrying HTML, Markdown links and terminal escapes. They must come out as
//! text in every format (issue 17, item 15).
mod report_common;

use isobench::report::{self, Format, ReportOptions, TrialOutcome};

const HTML: &str = "<img src=x onerror=alert(1)><script>alert(2)</script>";
const LINK: &str = "[click](javascript:alert(3))";
/// Clear screen, set the window title, a CSI in its one-byte form, a bell, a carriage return
/// that would overwrite the line, and a right-to-left override.
const ESCAPES: &str = "\x1b[2J\x1b]0;pwned\x07\u{9b}31m\rOK\u{202e}gnp.exe";

fn hostile_report() -> isobench::report::model::Report {
    let mut input = report_common::campaign();
    input.commits[0].subject = Some(format!("Faster {HTML} {LINK} {ESCAPES}"));
    let mut changed = 0;
    for trial in &mut input.trials {
        if let TrialOutcome::Failed(failure) = &mut trial.outcome {
            failure.message = format!("server said {HTML} | {LINK} `x` {ESCAPES}");
            failure.sample_log_line = Some(format!("ERROR `{HTML}` {ESCAPES}"));
            changed += 1;
        }
    }
    assert!(changed > 0, "the fixture has failures");
    report::build(&input, &ReportOptions::default()).unwrap()
}

/// Control characters that must never reach a terminal (our own SGR colours are checked apart).
fn assert_no_control(text: &str, what: &str) {
    for (i, c) in text.char_indices() {
        let bad = (c.is_control() && c != '\n' && c != '\x1b') || c == '\u{202e}';
        assert!(!bad, "{what}: {c:?} at byte {i}");
    }
    // Every ESC left is one of the renderer's own colour codes: ESC [ digits m.
    for (i, _) in text.match_indices('\x1b') {
        let rest = &text[i + 1..];
        let code_len = rest
            .strip_prefix('[')
            .and_then(|r| r.find('m'))
            .filter(|&end| {
                rest[1..=end]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == 'm' || c == ';')
            });
        assert!(
            code_len.is_some(),
            "{what}: foreign escape at byte {i}: {:?}",
            &rest[..rest.len().min(12)]
        );
    }
}

#[test]
fn markdown_shows_hostile_text_as_text() {
    let md = report::render(&hostile_report(), Format::Markdown, false);
    assert!(
        !md.contains("<img") && !md.contains("<script"),
        "raw HTML in:\n{md}"
    );
    assert!(md.contains("&lt;img src=x onerror=alert(1)&gt;"), "{md}");
    assert!(!md.contains("[click]("), "a live link in:\n{md}");
    assert!(md.contains("\\[click\\](javascript:alert(3))"), "{md}");
    assert!(!md.contains('\x1b'), "an escape in:\n{md}");
    // Shown visibly: `\u{1b}[2J` once Markdown's own escapes are rendered.
    assert!(
        md.contains(r"\\u{1b}\[2J"),
        "escapes are shown visibly:\n{md}"
    );
    assert_no_control(&md, "markdown");
    // A log line with backticks cannot leave its code span: it becomes escaped text.
    assert!(md.contains("ERROR \\`&lt;img"), "{md}");
    // The tables keep their shape: every row of a table has the same number of cells.
    let mut expected = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            expected = None;
            continue;
        }
        let cells = line.replace("\\|", "").matches('|').count();
        match expected {
            None => expected = Some(cells),
            Some(n) => assert_eq!(cells, n, "row {line:?}"),
        }
    }
}

#[test]
fn terminal_output_carries_no_foreign_escapes() {
    let report = hostile_report();
    for color in [false, true] {
        let text = report::render(&report, Format::Terminal, color);
        assert!(text.contains("server said"), "the failure is shown");
        assert!(
            text.contains("\\u{1b}]0;pwned\\u{7}"),
            "visibly escaped:\n{text}"
        );
        assert_no_control(&text, &format!("terminal (color {color})"));
        if !color {
            assert!(!text.contains('\x1b'));
        }
    }
}

#[test]
fn html_and_svg_escape_markup_and_controls() {
    let html = report::render(&hostile_report(), Format::Html, false);
    assert!(!html.contains("<img") && !html.contains("alert(2)</script>"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.contains('\x1b') && !html.contains('\x07'));
    assert_no_control(&html, "html");
}
