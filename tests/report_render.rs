//! The report on the fixture campaign: numbers, verdicts, summary, failure breakdown, and every
//! text format (terminal, Markdown, JSON, CSV).
mod report_common;

use isobench::report::model::{CellStatus, ComparisonKind, PointReport, Report, Tally};
use isobench::report::stats::{Method, Verdict};
use isobench::report::{self, Format, ReportOptions};

fn fixture_report() -> Report {
    report::build(&report_common::campaign(), &ReportOptions::default()).expect("valid settings")
}

fn point<'a>(r: &'a Report, commit: &str, point: &str) -> &'a PointReport {
    let c = r
        .commits
        .iter()
        .find(|c| c.short == commit)
        .expect("commit in report");
    c.points
        .iter()
        .find(|p| p.point == point)
        .expect("point in commit")
}

fn diff<'a>(
    p: &'a PointReport,
    kind: ComparisonKind,
    candidate: &str,
    key: &str,
) -> &'a isobench::report::model::MetricDiff {
    let c = p
        .comparisons
        .iter()
        .find(|c| c.kind == kind && c.candidate == candidate)
        .expect("comparison present");
    c.metrics.get(key).expect("metric compared")
}

fn tally<'a>(r: &'a Report, kind: ComparisonKind, candidate: &str) -> &'a Tally {
    r.summary
        .tallies
        .iter()
        .find(|t| t.kind == kind && t.candidate == candidate)
        .expect("tally present")
}

#[test]
fn medians_intervals_and_paired_verdicts() {
    let r = fixture_report();
    let p = point(&r, "aaaaaaaa", "conc=16");
    let human = p.arms.iter().find(|a| a.arm == "human").unwrap();
    let tput = &human.metrics["output_throughput"].summary;
    // Trials 1080, 1191.564, 991.613 → median 1080; the interval contains it.
    assert!((tput.median - 1080.0).abs() < 1e-9, "{}", tput.median);
    assert!(tput.ci_low.unwrap() < 1080.0 && tput.ci_high.unwrap() > 1080.0);
    assert_eq!(tput.n, 3);

    // Human is +8 % in every round although rounds drift ±10 %: pairing makes that a clear win.
    let h = diff(
        p,
        ComparisonKind::HumanVsBaseline,
        "human",
        "output_throughput",
    );
    assert_eq!(h.method, Method::PairedLogT);
    assert_eq!(h.n_pairs, 3);
    assert!((h.diff_pct - 8.0).abs() < 0.3, "{}", h.diff_pct);
    assert!(
        h.ci_low_pct.unwrap() > 7.0 && h.ci_high_pct.unwrap() < 9.0,
        "{h:?}"
    );
    assert_eq!(h.verdict, Verdict::Faster);
    assert_eq!(h.seed_verdict, Some(Verdict::Faster));

    // Lower latency is better: TTFT fell by 1 − 1/1.08 = 7.4 %, reported as +7.4 %, faster.
    let ttft = diff(p, ComparisonKind::HumanVsBaseline, "human", "mean_ttft_ms");
    assert!((ttft.diff_pct - 7.4).abs() < 0.3, "{}", ttft.diff_pct);
    assert_eq!(ttft.verdict, Verdict::Faster);

    assert_eq!(
        diff(
            p,
            ComparisonKind::AgentVsHuman,
            "claude-code",
            "output_throughput"
        )
        .verdict,
        Verdict::WithinNoise
    );
    let codex = diff(
        p,
        ComparisonKind::AgentVsHuman,
        "codex",
        "output_throughput",
    );
    assert_eq!(codex.verdict, Verdict::Slower);
    assert!((codex.diff_pct + 6.0).abs() < 0.3, "{}", codex.diff_pct);
    assert_eq!(codex.seed_verdict, Some(Verdict::Slower));

    // Without pairing the same data cannot separate +8 % from ±10 % drift with 3 trials.
    let welch = report::build(
        &report_common::campaign(),
        &ReportOptions {
            paired: false,
            ..Default::default()
        },
    )
    .unwrap();
    let hw = diff(
        point(&welch, "aaaaaaaa", "conc=16"),
        ComparisonKind::HumanVsBaseline,
        "human",
        "output_throughput",
    );
    assert_eq!(hw.method, Method::WelchLogT);
    assert_eq!(hw.verdict, Verdict::WithinNoise);
}

#[test]
fn single_trials_partial_cells_and_absent_arms() {
    let r = fixture_report();
    let c = point(&r, "cccccccc", "conc=16");
    let single = diff(
        c,
        ComparisonKind::AgentVsHuman,
        "claude-code",
        "output_throughput",
    );
    assert_eq!(single.verdict, Verdict::NoNoiseEstimate);
    assert_eq!(single.method, Method::SingleTrial);
    assert!((single.diff_pct - 6.0).abs() < 1e-9);
    assert_eq!(single.ci_low_pct, None);
    assert_eq!(c.arms[0].status, CellStatus::Failed);
    assert!(
        c.comparisons.iter().all(|x| x.reference != "baseline"),
        "no comparison against a failed arm"
    );

    let b = point(&r, "bbbbbbbb", "conc=16");
    let codex = b.arms.iter().find(|a| a.arm == "codex").unwrap();
    assert_eq!(codex.status, CellStatus::Absent);
    assert_eq!(
        codex.absent_reason.as_deref(),
        Some("no patch file patches/codex/bbbbbbbb.diff")
    );

    let d16 = point(&r, "dddddddd", "conc=16");
    let partial = d16.arms.iter().find(|a| a.arm == "claude-code").unwrap();
    assert_eq!(partial.status, CellStatus::Partial);
    assert_eq!(partial.metrics["output_throughput"].summary.n, 2);
    let d = diff(
        d16,
        ComparisonKind::AgentVsHuman,
        "claude-code",
        "output_throughput",
    );
    assert_eq!(
        (d.method, d.n_pairs),
        (Method::PairedLogT, 2),
        "rounds 1 and 3 pair up"
    );
    // Two load points are compared separately.
    assert_eq!(
        r.commits[3]
            .points
            .iter()
            .map(|p| p.point.as_str())
            .collect::<Vec<_>>(),
        ["conc=1", "conc=16"]
    );
}

#[test]
fn campaign_summary_counts_and_failure_breakdown() {
    let r = fixture_report();
    let s = &r.summary;
    assert_eq!((s.trials.ok, s.trials.failed, s.trials.absent), (37, 5, 3));

    let hb = tally(&r, ComparisonKind::HumanVsBaseline, "human");
    assert_eq!(
        (hb.faster, hb.within_noise, hb.slower, hb.not_comparable),
        (2, 2, 0, 1)
    );
    let ch = tally(&r, ComparisonKind::AgentVsHuman, "claude-code");
    assert_eq!(
        (
            ch.faster,
            ch.within_noise,
            ch.slower,
            ch.no_noise_estimate,
            ch.candidate_failed
        ),
        (0, 3, 0, 1, 1)
    );
    let xh = tally(&r, ComparisonKind::AgentVsHuman, "codex");
    assert_eq!(
        (xh.slower, xh.candidate_failed, xh.not_comparable),
        (1, 0, 4)
    );
    // The seed's ±5 % rule on the same comparisons: codex −6 % is a loss, the rest are matches.
    assert_eq!(
        xh.seed
            .as_ref()
            .map(|s| (s.faster, s.within_noise, s.slower)),
        Some((0, 0, 1))
    );
    let seed_ch = ch.seed.as_ref().unwrap();
    // The seed rule calls cccccccc's single-trial +6 % a win; the interval rule has no verdict.
    assert_eq!(
        (seed_ch.faster, seed_ch.within_noise, seed_ch.slower),
        (1, 3, 0)
    );

    let complete: Vec<(&str, &str, &str)> = s
        .complete
        .iter()
        .map(|c| (c.commit.as_str(), c.agent.as_str(), c.point.as_str()))
        .collect();
    assert_eq!(
        complete,
        [
            ("aaaaaaaa", "claude-code", "conc=16"),
            ("aaaaaaaa", "codex", "conc=16"),
            ("cccccccc", "claude-code", "conc=16"),
            ("dddddddd", "claude-code", "conc=1"),
            ("dddddddd", "claude-code", "conc=16")
        ]
    );
    assert_eq!(s.complete[2].baseline, None, "cccccccc's baseline failed");
    assert_eq!(s.agent_failures.len(), 1);
    assert_eq!(s.agent_failures[0].commit, "bbbbbbbb");
    assert!((s.agent_failures[0].human - 2102.0).abs() < 1e-9);

    let cats: Vec<(&str, usize, Vec<&str>)> = s
        .failure_breakdown
        .iter()
        .map(|c| {
            (
                c.category.as_str(),
                c.count,
                c.commits.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        cats,
        [
            (
                "crashed/cuda_out_of_memory",
                4,
                vec!["bbbbbbbb", "dddddddd"]
            ),
            ("image_missing", 1, vec!["cccccccc"])
        ]
    );
    assert!(
        s.failure_breakdown[0]
            .sample_log_line
            .as_deref()
            .unwrap()
            .contains("CUDA out of memory")
    );
    assert_eq!(s.failure_breakdown[1].sample_log_line, None);
    assert!(s.failure_breakdown[1].sample_message.contains("not found"));
}

#[test]
fn terminal_output_is_aligned_and_colour_follows_the_switch() {
    let r = fixture_report();
    let plain = report::render(&r, Format::Terminal, false);
    assert!(!plain.contains('\x1b'), "no escape codes without colour");
    assert!(plain.contains("human vs baseline"));
    assert!(plain.contains("no noise estimate (1 trial)"));
    assert!(plain.contains("crashed (cuda_out_of_memory)"));
    assert!(plain.contains("crashed/cuda_out_of_memory"));
    // Columns line up: in the arms table of aaaaaaaa every row's second column starts at the
    // same offset as its header.
    let lines: Vec<&str> = plain
        .lines()
        .skip_while(|l| !l.starts_with("aaaaaaaa"))
        .collect();
    let header = lines
        .iter()
        .find(|l| l.trim_start().starts_with("arm "))
        .unwrap();
    let col = header.find("trials").unwrap();
    for row in lines
        .iter()
        .skip_while(|l| !l.trim_start().starts_with("arm "))
        .skip(1)
        .take(4)
    {
        assert_eq!(
            &row[col - 2..col],
            "  ",
            "column gap before trials in {row:?}"
        );
        assert_ne!(
            row.as_bytes()[col],
            b' ',
            "trials column starts at {col} in {row:?}"
        );
    }
    let coloured = report::render(&r, Format::Terminal, true);
    assert!(coloured.contains("\x1b[32m"), "faster is green");
    assert!(coloured.contains("\x1b[31m"), "slower and failures are red");
}

#[test]
fn markdown_tables_are_well_formed() {
    let md = report::render(&fixture_report(), Format::Markdown, false);
    assert!(md.starts_with("# isobench report: fixture-3way\n"));
    assert!(md.contains("### Complete comparisons"));
    assert!(md.contains("### Failure categories"));
    // Every table row has as many cells as its header row.
    let mut expected: Option<usize> = None;
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
    // The subject is text, not markup: `|` cannot open a cell, `<empty>` cannot be an HTML tag.
    assert!(md.contains("### `bbbbbbbb` — Reduce peak memory \\| use &lt;empty&gt;"));
    assert!(md.contains("| crashed/cuda_out_of_memory | 4 | `bbbbbbbb`, `dddddddd` | claude-code | `torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB` |"));
}

#[test]
fn json_is_versioned_and_round_trips() {
    let r = fixture_report();
    let text = report::render(&r, Format::Json, false);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["schema"], "isobench.report");
    assert_eq!(value["schema_version"], 1);
    assert_eq!(
        value["commits"][0]["points"][0]["arms"][1]["metrics"]["output_throughput"]["median"],
        1080.0
    );
    assert_eq!(
        value["commits"][0]["points"][0]["comparisons"][0]["metrics"]["output_throughput"]["verdict"],
        "faster"
    );
    // Reading the JSON back and writing it again gives the same document. (serde_json's default
    // float parser may differ in the last bit, hence the relative tolerance on numbers.)
    let back: Report = serde_json::from_value(value.clone()).unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&report::render(&back, Format::Json, false)).unwrap();
    assert_json_eq(&value, &again, "$");
    let schema = isobench::report::render::json::schema();
    assert!(
        schema["properties"]["schema_version"].is_object(),
        "schema documents the version field"
    );
}

#[test]
fn csv_is_tidy() {
    let r = fixture_report();
    let csv = report::render(&r, Format::Csv, false);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(isobench::report::render::csv::HEADER));
    let rows: Vec<Vec<String>> = lines.map(split_csv).collect();
    assert!(
        rows.iter().all(|r| r.len() == 13),
        "every row has 13 fields"
    );
    let count = |kind: &str| rows.iter().filter(|r| r[0] == kind).count();
    let trial_values: usize = r
        .commits
        .iter()
        .flat_map(|c| &c.points)
        .flat_map(|p| &p.arms)
        .flat_map(|a| a.metrics.values())
        .map(|m| m.values.len())
        .sum();
    assert_eq!(count("trial"), trial_values);
    let summaries: usize = r
        .commits
        .iter()
        .flat_map(|c| &c.points)
        .flat_map(|p| &p.arms)
        .map(|a| a.metrics.len())
        .sum();
    assert_eq!(count("summary"), summaries);
    let comparisons: usize = r
        .commits
        .iter()
        .flat_map(|c| &c.points)
        .flat_map(|p| &p.comparisons)
        .map(|c| c.metrics.len())
        .sum();
    assert_eq!(count("comparison"), comparisons);
    let human_summary = rows
        .iter()
        .find(|r| {
            r[0] == "summary"
                && r[1] == "aaaaaaaa"
                && r[3] == "human"
                && r[5] == "output_throughput"
        })
        .unwrap();
    assert_eq!(human_summary[7].parse::<f64>().unwrap(), 1080.0);
    assert_eq!(human_summary[10], "3");
    let codex = rows
        .iter()
        .find(|r| {
            r[0] == "comparison"
                && r[3] == "codex"
                && r[4] == "human"
                && r[5] == "output_throughput"
        })
        .unwrap();
    assert_eq!(codex[12], "slower");
}

/// Splits one CSV line (RFC 4180 quoting).
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn assert_json_eq(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{path}: {x} vs {y}"
            );
        }
        (Array(x), Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_eq(x, y, &format!("{path}[{i}]"));
            }
        }
        (Object(x), Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_json_eq(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}
