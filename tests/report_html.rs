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
    load_in_chromium_at(test, page, out, "1400,4000")
}

/// As [`load_in_chromium`], with the browser window `WIDTH,HEIGHT`.
fn load_in_chromium_at(test: &str, page: &Path, out: &Path, window: &str) -> Option<Loaded> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chromium-check.sh");
    let run = Command::new(&script)
        .arg(page)
        .arg(out)
        .env("WINDOW", window)
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
    // Per commit with a curve (two fixed load points or more, or a search): a throughput–latency
    // chart for each of TTFT, TPOT, E2E that its results carry.
    let curve_charts: usize = r
        .commits
        .iter()
        .filter(|c| isobench::report::curves::drawn(c))
        .map(|c| {
            ["ttft", "tpot", "e2el"]
                .iter()
                .filter(|l| {
                    c.curves
                        .iter()
                        .flat_map(|a| &a.points)
                        .any(|p| p.latency.of(l) != (None, None))
                })
                .count()
        })
        .sum();
    assert_eq!(
        curve_charts, 2,
        "dddddddd: TTFT and TPOT (no E2E in its results)"
    );
    let expected_svgs = 3 + points.len() + boxes + curve_charts;
    assert_eq!(loaded.dom.matches("<svg").count(), expected_svgs);
    assert_eq!(
        loaded.dom.matches("class=\"chart curves\"").count(),
        curve_charts
    );
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

/// Measures, in the browser, every chart text against its SVG's viewBox and the page width, and
/// writes the ones that stick out into `<pre id="clipped">` for `--dump-dom` to carry back.
const CLIP_PROBE: &str = r#"<pre id="clipped"></pre><script>
(function () {
  var bad = [];
  var page = document.documentElement.clientWidth;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var vb = svg.viewBox.baseVal;
    var box = svg.getBoundingClientRect();
    if (box.right > page + 0.5) bad.push('chart wider than the page: ' + svg.getAttribute('aria-label'));
    svg.querySelectorAll('text').forEach(function (t) {
      var b = t.getBBox();
      if (b.x < vb.x - 0.5 || b.x + b.width > vb.x + vb.width + 0.5 ||
          b.y < vb.y - 0.5 || b.y + b.height > vb.y + vb.height + 0.5) {
        bad.push(t.textContent + ' [' + b.x.toFixed(1) + '..' + (b.x + b.width).toFixed(1) +
                 ' of 0..' + vb.width + ']');
      }
    });
  });
  document.getElementById('clipped').textContent = 'CLIPPED:' + JSON.stringify(bad);
})();
</script>"#;

/// The charts' titles ("throughput (tok/s), median with interval"), arm labels and row labels
/// fit their charts, and the charts fit the page, at a desktop and a phone width. The probe
/// is checked to catch a clipped title first (a negative control).
#[test]
fn no_chart_text_is_clipped_at_common_widths() {
    let dir = artifacts("report_html_clipping");
    // The seed's 3-way shape (baseline, human, one agent): the narrowest throughput charts.
    let mut three_way = report_common::campaign();
    three_way.arms.retain(|a| a.name != "codex");
    three_way.trials.retain(|t| t.arm != "codex");
    let r = report::build(&three_way, &ReportOptions::default()).unwrap();
    let html = report::render(&r, Format::Html, false);
    let probed = html.replace("</body>", &format!("{CLIP_PROBE}</body>"));
    assert_ne!(
        probed, html,
        "the page has a </body> to put the probe before"
    );
    let clipped = |page: &Path, out: &Path, window: &str| -> Option<Vec<String>> {
        let loaded = load_in_chromium_at("no_chart_text_is_clipped", page, out, window)?;
        let at = loaded.dom.find("CLIPPED:").expect("the probe ran");
        let json = &loaded.dom[at + "CLIPPED:".len()..];
        let json = &json[..json.find("</pre>").unwrap()];
        Some(serde_json::from_str(&json.replace("&amp;", "&").replace("&quot;", "\"")).unwrap())
    };
    // Negative control: a 120-pixel chart with a long title is reported.
    let control = dir.join("control.html");
    std::fs::write(
        &control,
        format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"></head><body><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"120\" height=\"40\" viewBox=\"0 0 120 40\"><text x=\"4\" y=\"14\" style=\"font-size:12px\">throughput (tok/s), median with interval</text></svg>{CLIP_PROBE}</body></html>"),
    )
    .unwrap();
    let Some(found) = clipped(&control, &dir.join("control"), "1400,900") else {
        return;
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("throughput (tok/s), median with interval"));

    let page = dir.join("report.html");
    std::fs::write(&page, &probed).unwrap();
    for (name, window) in [
        ("desktop", "1400,4000"),
        ("laptop", "1024,4000"),
        ("phone", "390,4000"),
    ] {
        let found = clipped(&page, &dir.join(name), window).expect("Chromium ran above");
        assert!(
            found.is_empty(),
            "{name} ({window}): clipped chart text: {found:#?}"
        );
    }
}
