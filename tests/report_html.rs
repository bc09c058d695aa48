//! The HTML report in a real browser (headless Chromium, see `scripts/chromium-check.sh`): it
//! loads without console messages, needs nothing from the network, and its charts are in the
//! rendered DOM. The page, the DOM and a screenshot stay in `target/test-artifacts/report_html/`.
mod report_common;

use isobench::report::{self, Format, ReportOptions};
use report_common::artifacts;
use std::path::Path;
use std::process::Command;

struct Loaded {
    dom: String,
    console: String,
    screenshot: Vec<u8>,
}

/// Loads `page` in Chromium; `None` (after a `SKIPPED` line) when Chromium is not installed and
/// this is not CI, where a missing browser fails the test like missing Docker does.
fn load_in_chromium(test: &str, page: &Path, out: &Path) -> Option<Loaded> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chromium-check.sh");
    let run = Command::new(&script)
        .arg(page)
        .arg(out)
        .output()
        .expect("run scripts/chromium-check.sh");
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if run.status.code() == Some(2) && !in_ci {
        eprintln!("SKIPPED {test}: Chromium is not installed; run scripts/ci-setup.sh");
        return None;
    }
    assert!(
        run.status.success(),
        "chromium check failed ({}); Chromium comes from scripts/ci-setup.sh\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    Some(Loaded {
        dom: std::fs::read_to_string(out.join("dom.html")).unwrap(),
        console: std::fs::read_to_string(out.join("console.log")).unwrap(),
        screenshot: std::fs::read(out.join("screenshot.png")).unwrap(),
    })
}

#[test]
fn console_errors_are_caught() {
    // The check itself must be able to fail: a page with a console error and an uncaught
    // exception produces two console messages.
    let dir = artifacts("report_html_negative_control");
    let page = dir.join("broken.html");
    std::fs::write(&page, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"></head><body><script>console.error(\"boom\"); missingFunction();</script></body></html>").unwrap();
    let Some(loaded) = load_in_chromium("console_errors_are_caught", &page, &dir.join("chromium"))
    else {
        return;
    };
    assert_eq!(loaded.console.lines().count(), 2, "{}", loaded.console);
    assert!(loaded.console.contains("boom") && loaded.console.contains("missingFunction"));
}

#[test]
fn html_report_loads_cleanly_with_its_charts() {
    let dir = artifacts("report_html");
    let r = report::build(&report_common::campaign(), &ReportOptions::default()).unwrap();
    let html = report::render(&r, Format::Html, false);
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();

    // Self-contained: every src/href is a data: URI or an in-page anchor (the SVG namespace
    // declaration is an identifier, not a fetch).
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let value = &html[i + attr.len()..];
            assert!(
                value.starts_with("data:") || value.starts_with('#'),
                "external reference: {}",
                &value[..value.len().min(60)]
            );
        }
    }
    assert!(!html.contains("<script"), "the page needs no script");

    let Some(loaded) = load_in_chromium(
        "html_report_loads_cleanly_with_its_charts",
        &page,
        &dir.join("chromium"),
    ) else {
        return;
    };
    assert_eq!(loaded.console.trim(), "", "the page logged to the console");

    // Charts present after parsing. Expected counts come from the report: three sorted
    // difference charts (two agents vs human, human vs baseline), and per load point a
    // throughput chart plus TTFT and TPOT box plots where per-request data exist.
    let points: Vec<_> = r.commits.iter().flat_map(|c| &c.points).collect();
    let boxes: usize = points
        .iter()
        .map(|p| {
            ["ttft_ms", "tpot_ms"]
                .iter()
                .filter(|k| p.arms.iter().any(|a| a.distributions.contains_key(**k)))
                .count()
        })
        .sum();
    let expected_svgs = 3 + points.len() + boxes;
    assert_eq!(loaded.dom.matches("<svg").count(), expected_svgs);
    assert_eq!(loaded.dom.matches("class=\"chart diffs\"").count(), 3);
    assert_eq!(
        loaded.dom.matches("class=\"chart bars\"").count(),
        points.len()
    );
    assert_eq!(loaded.dom.matches("class=\"chart boxes\"").count(), boxes);
    // One bar per arm with throughput at each point, one per sorted difference.
    let arm_bars: usize = points
        .iter()
        .map(|p| {
            p.arms
                .iter()
                .filter(|a| a.metrics.contains_key("output_throughput"))
                .count()
        })
        .sum();
    let diff_bars = r.summary.complete.len()
        + r.summary
            .tallies
            .iter()
            .find(|t| t.candidate == "human")
            .map(|t| t.faster + t.within_noise + t.slower + t.no_noise_estimate)
            .unwrap();
    assert_eq!(loaded.dom.matches("<rect class=\"bar\"").count(), arm_bars);
    assert_eq!(
        loaded.dom.matches("<rect class=\"bar ").count(),
        diff_bars,
        "difference bars carry their verdict class"
    );
    // Failures and verdicts are in the page, not only in charts.
    assert!(loaded.dom.contains("crashed/cuda_out_of_memory"));
    assert!(loaded.dom.contains("no noise estimate (1 trial)"));

    assert!(
        loaded.screenshot.starts_with(b"\x89PNG\r\n\x1a\n"),
        "screenshot is a PNG"
    );
    assert!(
        loaded.screenshot.len() > 20_000,
        "a blank page compresses to a few KB; got {} bytes",
        loaded.screenshot.len()
    );
}
