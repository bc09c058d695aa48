//! Goodput against `[load.slo]`, configured percentiles, SLO search results and
//! throughput–latency curves (issue 15, report side), on synthetic inputs with values worked out
//! by hand.
mod report_common;

use isobench::loadgen::Goodput;
use isobench::report::model::{ComparisonKind, PointReport, Report, SearchOutcome};
use isobench::report::render::{fmt_diff, fmt_pct};
use isobench::report::stats::Verdict;
use isobench::report::{self, Format, ReportInput, ReportOptions, TrialMetrics};
use report_common::{measured, two_arms};
use serde_json::json;

fn build(input: &ReportInput) -> Report {
    report::build(input, &ReportOptions::default()).expect("valid settings")
}

fn point<'a>(r: &'a Report, commit: &str, point: &str) -> &'a PointReport {
    r.commits
        .iter()
        .find(|c| c.short == commit)
        .and_then(|c| c.points.iter().find(|p| p.point == point))
        .unwrap_or_else(|| panic!("{commit} {point}"))
}

fn median(r: &Report, commit: &str, pt: &str, arm: &str, key: &str) -> Option<f64> {
    point(r, commit, pt)
        .arms
        .iter()
        .find(|a| a.arm == arm)
        .unwrap()
        .metrics
        .get(key)
        .map(|m| m.summary.median)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Five requests over 4 s, worked by hand against TTFT ≤ 200 ms and TPOT ≤ 150 ms:
/// * 0: TTFT 100 ms, TPOT (500 − 100) / 4 = 100 ms: good;
/// * 1: TTFT 300 ms: not good;
/// * 2: failed (error text): not good, but sent;
/// * 3: one output token, TTFT 150 ms, E2E = TTFT: TPOT 0 (not 0/0): good;
/// * 4: TTFT 50 ms, TPOT (850 − 50) / 4 = 200 ms: not good.
///
/// Goodput 2 / 4 s = 0.5 req/s, 2 of 5 requests = 40 %.
fn five_requests(duration: f64) -> TrialMetrics {
    TrialMetrics {
        duration: Some(duration),
        completed: Some(4),
        failed: Some(1),
        request_throughput: Some(4.0 / duration),
        output_throughput: Some(16.0 / duration),
        ttfts: Some(vec![0.1, 0.3, 0.0, 0.15, 0.05]),
        latencies: Some(vec![0.5, 0.7, 0.0, 0.15, 0.85]),
        output_lens: Some(vec![5, 5, 0, 1, 5]),
        errors: Some(vec![
            String::new(),
            String::new(),
            "boom".into(),
            String::new(),
            String::new(),
        ]),
        ..TrialMetrics::default()
    }
}

#[test]
fn goodput_is_counted_from_the_requests_against_each_commits_slo() {
    let slo = Goodput {
        ttft_ms: Some(200.0),
        tpot_ms: Some(150.0),
        e2el_ms: None,
    };
    let (per_s, pct) = five_requests(4.0).goodput(&slo).unwrap();
    assert!(close(per_s, 0.5) && close(pct, 40.0), "{per_s} {pct}");
    // E2E ≤ 400 ms alone: only the one-token request (150 ms) is good.
    let e2el = Goodput {
        e2el_ms: Some(400.0),
        ..Goodput::default()
    };
    let (per_s, pct) = five_requests(4.0).goodput(&e2el).unwrap();
    assert!(close(per_s, 0.25) && close(pct, 20.0), "{per_s} {pct}");

    // Without per-request arrays, vLLM's own `request_goodput` and the request counts.
    let vllm = TrialMetrics::from_json(
        r#"{"duration": 10.0, "completed": 8, "failed": 2, "request_goodput": 0.6}"#,
    )
    .unwrap();
    let (per_s, pct) = vllm.goodput(&slo).unwrap();
    assert!(close(per_s, 0.6) && close(pct, 60.0), "{per_s} {pct}");
    assert_eq!(TrialMetrics::default().goodput(&slo), None);

    // In a report: commit aaaaaaaa has the SLO, bbbbbbbb another, cccccccc none. The human arm
    // ran the same requests in half the time: twice the goodput in every round.
    let mut trials = Vec::new();
    for commit in ["aaaaaaaa", "bbbbbbbb", "cccccccc"] {
        for t in 1..=3 {
            trials.push(measured(
                commit,
                "baseline",
                t,
                "conc=4",
                five_requests(4.0),
            ));
            trials.push(measured(commit, "human", t, "conc=4", five_requests(2.0)));
        }
    }
    let mut input = two_arms(&["aaaaaaaa", "bbbbbbbb", "cccccccc"], trials);
    input.slos.insert("aaaaaaaa".into(), slo);
    input.slos.insert("bbbbbbbb".into(), e2el);
    let r = build(&input);
    let m = |commit, arm, key| median(&r, commit, "conc=4", arm, key);
    assert_eq!(m("aaaaaaaa", "baseline", "request_goodput"), Some(0.5));
    assert_eq!(m("aaaaaaaa", "baseline", "goodput_pct"), Some(40.0));
    assert_eq!(m("aaaaaaaa", "human", "request_goodput"), Some(1.0));
    assert_eq!(m("bbbbbbbb", "baseline", "request_goodput"), Some(0.25));
    assert_eq!(m("bbbbbbbb", "human", "goodput_pct"), Some(20.0));
    assert_eq!(m("cccccccc", "baseline", "request_goodput"), None, "no SLO");
    assert_eq!(m("cccccccc", "baseline", "goodput_pct"), None, "no SLO");

    let goodput = r.metric("request_goodput").expect("in the catalogue");
    assert!(goodput.compared && goodput.unit == "req/s");
    assert!(!r.metric("goodput_pct").unwrap().compared, "per arm only");
    let cmp = &point(&r, "aaaaaaaa", "conc=4").comparisons[0];
    assert_eq!(cmp.kind, ComparisonKind::HumanVsBaseline);
    let d = &cmp.metrics["request_goodput"];
    assert!(close(d.diff_pct, 100.0), "{}", d.diff_pct);
    assert!(!cmp.metrics.contains_key("goodput_pct"));
    assert_eq!(r.commits[0].slo.unwrap().ttft_ms, Some(200.0));

    // Without any SLO the goodput metrics are not in the report at all.
    input.slos.clear();
    let r = build(&input);
    assert!(r.metric("request_goodput").is_none() && r.metric("goodput_pct").is_none());
}

/// Four requests: TTFT 100, 200, 400, 800 ms; E2E 300, 500, 900, 1600 ms; 3, 3, 5, 9 output
/// tokens (TPOT 100, 150, 125, 100 ms); ITLs 2×100, 2×150, 4×125, 8×100 ms.
fn four_requests() -> TrialMetrics {
    TrialMetrics {
        duration: Some(2.0),
        completed: Some(4),
        failed: Some(0),
        output_throughput: Some(10.0),
        median_ttft_ms: Some(300.0),
        p99_ttft_ms: Some(788.0),
        ttfts: Some(vec![0.1, 0.2, 0.4, 0.8]),
        latencies: Some(vec![0.3, 0.5, 0.9, 1.6]),
        output_lens: Some(vec![3, 3, 5, 9]),
        itls: Some(vec![
            vec![0.1; 2],
            vec![0.15; 2],
            vec![0.125; 4],
            vec![0.1; 8],
        ]),
        ..TrialMetrics::default()
    }
}

#[test]
fn configured_percentiles_follow_numpy_and_do_not_duplicate_p50_or_p99() {
    let trials = (1..=2)
        .flat_map(|t| {
            [
                measured("aaaaaaaa", "baseline", t, "conc=4", four_requests()),
                measured("aaaaaaaa", "human", t, "conc=4", four_requests()),
            ]
        })
        .collect();
    let mut input = two_arms(&["aaaaaaaa"], trials);
    input.percentiles = vec![50.0, 90.0, 99.0, 99.9];
    let r = build(&input);
    // np.percentile([100, 200, 400, 800], 90) = 400 + 0.7·400 = 680; at 99.9: 400 + 0.997·400.
    // TPOT [100, 100, 125, 150] → 125 + 0.7·25; ITL (16 gaps: 10×100, 4×125, 2×150), rank 13.5
    // → 137.5; E2E [300, 500, 900, 1600] → 900 + 0.7·700.
    for (key, want) in [
        ("p90_ttft_ms", 680.0),
        ("p99.9_ttft_ms", 798.8),
        ("p90_tpot_ms", 142.5),
        ("p90_itl_ms", 137.5),
        ("p90_e2el_ms", 1390.0),
        ("p99.9_e2el_ms", 900.0 + 0.997 * 700.0),
    ] {
        let got = median(&r, "aaaaaaaa", "conc=4", "baseline", key).unwrap_or(f64::NAN);
        assert!(close(got, want), "{key}: {got} != {want}");
    }
    // 50 and 99 are vLLM's median_* and p99_* (from the result's keys): one row each.
    let keys: Vec<&str> = r.metrics.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys.iter().filter(|k| **k == "median_ttft_ms").count(), 1);
    assert_eq!(keys.iter().filter(|k| **k == "p99_ttft_ms").count(), 1);
    assert!(!keys.iter().any(|k| k.starts_with("p50_")), "{keys:?}");
    assert_eq!(
        median(&r, "aaaaaaaa", "conc=4", "baseline", "p99_ttft_ms"),
        Some(788.0)
    );
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(at("median_ttft_ms") < at("p90_ttft_ms"));
    assert!(at("p90_ttft_ms") < at("p99_ttft_ms"));
    assert!(at("p99_ttft_ms") < at("p99.9_ttft_ms"));
    assert!(at("p99.9_ttft_ms") < at("mean_tpot_ms"));
    assert_eq!(r.metric("p99.9_ttft_ms").unwrap().label, "TTFT p99.9");
    // Compared, with a difference (identical arms: 0 %).
    let cmp = &point(&r, "aaaaaaaa", "conc=4").comparisons[0];
    assert!(close(cmp.metrics["p90_ttft_ms"].diff_pct, 0.0));
    // The HTML's all-metrics table and the CSV carry the new rows.
    assert!(report::render(&r, Format::Html, false).contains("TTFT p99.9 (ms)"));
    assert!(report::render(&r, Format::Csv, false).contains(",p99.9_ttft_ms,"));

    // Without per-request arrays: the result JSON's own key.
    let vllm = TrialMetrics::from_json(
        r#"{"duration": 1.0, "p90_ttft_ms": 123.5, "p99.9_itl_ms": 7.0, "median_ttft_ms": 5.0,
            "pxx_ttft_ms": 1.0, "isobench": {"requests": [{"p90_ttft_ms": 1.0}]}}"#,
    )
    .unwrap();
    assert_eq!(
        vllm.extra_percentiles.into_iter().collect::<Vec<_>>(),
        vec![
            ("p90_ttft_ms".to_string(), 123.5),
            ("p99.9_itl_ms".to_string(), 7.0)
        ]
    );
    let vllm = TrialMetrics::from_json(r#"{"duration": 1.0, "p90_ttft_ms": 123.5}"#).unwrap();
    let mut input = two_arms(
        &["aaaaaaaa"],
        vec![measured("aaaaaaaa", "baseline", 1, "conc=4", vllm)],
    );
    input.percentiles = vec![90.0];
    let r = build(&input);
    assert_eq!(
        median(&r, "aaaaaaaa", "conc=4", "baseline", "p90_ttft_ms"),
        Some(123.5)
    );
    // Default percentiles (50, 99): no extra metrics.
    input.percentiles.clear();
    assert!(build(&input).metric("p90_ttft_ms").is_none());
}

/// A search step's result JSON: vLLM's keys of its highest passing probe and `isobench.search`.
/// Probes: the bottom of the range, `found` (passed), and 1 above it (failed); TTFT grows
/// with the rate, from 40 ms to far beyond the SLO.
fn search_result(
    over: &str,
    found: Option<f64>,
    outcome: &str,
    bracket: serde_json::Value,
) -> String {
    let top = found.unwrap_or(1.0);
    let probe = |value: f64, passed: bool| {
        let x = value * 0.98;
        let ttft = if passed {
            40.0 + value
        } else {
            900.0 + 40.0 * value
        };
        json!({
            "value": value, "passed": passed, "good_fraction": if passed { 1.0 } else { 0.8 },
            "requested_rate": if over == "rate" { json!(value) } else { json!(null) },
            "concurrency": if over == "rate" { json!(null) } else { json!(value) },
            "achieved_rate": value, "request_throughput": x, "output_throughput": x * 64.0,
            "completed": 50, "failed": 0,
            "median_ttft_ms": ttft * 0.8, "p99_ttft_ms": ttft,
            "median_tpot_ms": 10.0, "p99_tpot_ms": 11.0,
            "median_e2el_ms": 700.0, "p99_e2el_ms": 720.0,
            "audit_warnings": [], "a_later_field": true
        })
    };
    let probes = match found {
        Some(v) if outcome == "at_range_top" => vec![probe(1.0, true), probe(v, true)],
        Some(v) => vec![probe(1.0, true), probe(v, true), probe(v + 1.0, false)],
        None => vec![probe(1.0, false)],
    };
    json!({
        "duration": 20.0, "completed": 50, "failed": 0,
        "request_throughput": top * 0.98, "output_throughput": top * 64.0,
        "median_ttft_ms": 41.0, "p99_ttft_ms": 55.0,
        "isobench": { "search": {
            "over": over,
            "slo": {"ttft_ms": 500.0, "tpot_ms": null, "e2el_ms": null},
            "attainment": 0.99, "range": [1.0, 64.0], "tolerance": 0.1, "max_probes": 9,
            "found": found, "bracket": bracket, "outcome": outcome, "probes": probes,
            "a_later_field": {"x": 1}
        }}
    })
    .to_string()
}

fn bracketed(over: &str, found: f64) -> TrialMetrics {
    TrialMetrics::from_json(&search_result(
        over,
        Some(found),
        "bracketed",
        json!([found, found + 1.0]),
    ))
    .unwrap()
}

/// The three outcomes, parsed; and the search point of three commits compared across 3 trials.
fn search_campaign() -> ReportInput {
    let mut trials = Vec::new();
    // aaaaaaaa: human sustains 1.2 × [1, 1.05, 0.95] the baseline's rate, round by round.
    for (i, base) in [10.0, 11.0, 9.0].into_iter().enumerate() {
        let t = i as u32 + 1;
        let human = base * 1.2 * [1.0, 1.05, 0.95][i];
        trials.push(measured(
            "aaaaaaaa",
            "baseline",
            t,
            "search=rate",
            bracketed("rate", base),
        ));
        trials.push(measured(
            "aaaaaaaa",
            "human",
            t,
            "search=rate",
            bracketed("rate", human),
        ));
    }
    // bbbbbbbb: baseline trial 3 fails even the bottom of the range; human trial 2 passes its top.
    let below = TrialMetrics::from_json(&search_result(
        "rate",
        None,
        "below_range",
        json!([null, 1.0]),
    ))
    .unwrap();
    let top = TrialMetrics::from_json(&search_result(
        "rate",
        Some(64.0),
        "at_range_top",
        json!([64.0, null]),
    ))
    .unwrap();
    trials.push(measured(
        "bbbbbbbb",
        "baseline",
        1,
        "search=rate",
        bracketed("rate", 10.0),
    ));
    trials.push(measured(
        "bbbbbbbb",
        "baseline",
        2,
        "search=rate",
        bracketed("rate", 11.0),
    ));
    trials.push(measured("bbbbbbbb", "baseline", 3, "search=rate", below));
    trials.push(measured(
        "bbbbbbbb",
        "human",
        1,
        "search=rate",
        bracketed("rate", 12.0),
    ));
    trials.push(measured("bbbbbbbb", "human", 2, "search=rate", top));
    trials.push(measured(
        "bbbbbbbb",
        "human",
        3,
        "search=rate",
        bracketed("rate", 13.0),
    ));
    // cccccccc: concurrency; the arms swap 8 and 9 between rounds: no difference.
    for (t, (b, h)) in [(8.0, 9.0), (9.0, 8.0), (10.0, 10.0)]
        .into_iter()
        .enumerate()
    {
        let t = t as u32 + 1;
        trials.push(measured(
            "cccccccc",
            "baseline",
            t,
            "search=concurrency",
            bracketed("concurrency", b),
        ));
        trials.push(measured(
            "cccccccc",
            "human",
            t,
            "search=concurrency",
            bracketed("concurrency", h),
        ));
    }
    two_arms(&["aaaaaaaa", "bbbbbbbb", "cccccccc"], trials)
}

#[test]
fn search_results_parse_with_all_three_outcomes() {
    let found = bracketed("rate", 12.3)
        .search
        .expect("isobench.search is read");
    assert_eq!(found.over, isobench::report::input::SearchOver::Rate);
    assert_eq!(
        (found.found, found.outcome),
        (Some(12.3), SearchOutcome::Bracketed)
    );
    assert_eq!(found.bracket, Some((Some(12.3), Some(13.3))));
    assert_eq!(
        (found.attainment, found.range),
        (Some(0.99), Some((1.0, 64.0)))
    );
    assert_eq!(found.slo.ttft_ms, Some(500.0));
    assert_eq!(found.probes.len(), 3);
    assert!(found.probes[1].passed && !found.probes[2].passed);
    assert_eq!(found.probes[0].requested_rate, Some(1.0));
    assert_eq!(found.probes[0].concurrency, None);

    let below = TrialMetrics::from_json(&search_result(
        "rate",
        None,
        "below_range",
        json!([null, 1.0]),
    ))
    .unwrap()
    .search
    .unwrap();
    assert_eq!(
        (below.found, below.outcome),
        (None, SearchOutcome::BelowRange)
    );
    assert_eq!(below.bracket, Some((None, Some(1.0))));

    let top = TrialMetrics::from_json(&search_result(
        "concurrency",
        Some(64.0),
        "at_range_top",
        json!([64.0, null]),
    ))
    .unwrap()
    .search
    .unwrap();
    assert_eq!(
        (top.found, top.outcome),
        (Some(64.0), SearchOutcome::AtRangeTop)
    );
    assert_eq!(top.bracket, Some((Some(64.0), None)));
    assert_eq!(top.probes[1].concurrency, Some(64.0));

    // A malformed search block costs the search, not the result.
    let broken =
        TrialMetrics::from_json(r#"{"duration": 3.0, "isobench": {"search": {"over": 5}}}"#)
            .unwrap();
    assert_eq!((broken.duration, broken.search), (Some(3.0), None));
}

#[test]
fn searches_are_compared_across_trials_and_said_in_words() {
    let r = build(&search_campaign());
    // aaaaaaaa: paired over 3 rounds, d = ln(1.2 · r), r = 1, 1.05, 0.95.
    let d: Vec<f64> = [1.0, 1.05, 0.95]
        .iter()
        .map(|r: &f64| (1.2 * r).ln())
        .collect();
    let mean = d.iter().sum::<f64>() / 3.0;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let half = 4.302652729911275 * sd / 3f64.sqrt(); // t(0.975, 2)
    let (want, lo, hi) = (
        (mean.exp() - 1.0) * 100.0,
        ((mean - half).exp() - 1.0) * 100.0,
        ((mean + half).exp() - 1.0) * 100.0,
    );
    let a = point(&r, "aaaaaaaa", "search=rate");
    let diff = &a.comparisons[0].metrics["slo_max_request_rate"];
    assert!(
        (diff.diff_pct - want).abs() < 1e-6,
        "{} vs {want}",
        diff.diff_pct
    );
    assert!(
        (diff.ci_low_pct.unwrap() - lo).abs() < 1e-4,
        "{:?} vs {lo}",
        diff.ci_low_pct
    );
    assert!(
        (diff.ci_high_pct.unwrap() - hi).abs() < 1e-4,
        "{:?} vs {hi}",
        diff.ci_high_pct
    );
    assert_eq!(diff.verdict, Verdict::Faster);
    assert_eq!(
        median(
            &r,
            "aaaaaaaa",
            "search=rate",
            "baseline",
            "slo_max_request_rate"
        ),
        Some(10.0)
    );
    assert!(r.metric("slo_max_request_rate").unwrap().compared);
    assert!(r.metric("slo_max_concurrency").unwrap().compared);
    // Each trial's bracket is kept.
    let base = &a.arms[0].searches;
    assert_eq!(base.len(), 3);
    assert_eq!(
        (base[1].bracket_low, base[1].bracket_high),
        (Some(11.0), Some(12.0))
    );
    assert_eq!((base[1].probes, base[1].passed), (3, 2));

    // The statements, one per commit and comparison.
    assert_eq!(r.summary.statements.len(), 3);
    let st = &r.summary.statements[0];
    // The brackets' resolution, by hand: medians of the bracket ends over the 3 trials —
    // baseline [10, 11], human [12, 13] — so the candidate's answer is 12/11 − 1 to 13/10 − 1
    // above the reference's whatever the trials' agreement.
    let (res_lo, res_hi) = st.resolution_pct.unwrap();
    assert!(
        (res_lo - (12.0 / 11.0 - 1.0) * 100.0).abs() < 1e-9,
        "{res_lo}"
    );
    assert!((res_hi - 30.0).abs() < 1e-9, "{res_hi}");
    assert_eq!(
        st.text,
        format!(
            "human sustains {} more req/s than baseline with 99% of requests within TTFT ≤ 500 ms; \
             the brackets' resolution allows +9.1% to +30.0%",
            fmt_diff(diff)
        )
    );
    assert!(
        st.text
            .starts_with(&format!("human sustains {} [", fmt_pct(want)))
    );

    // bbbbbbbb: baseline trial 3 has no value; human trial 2 is a lower bound.
    let b = point(&r, "bbbbbbbb", "search=rate");
    let base = &b.arms[0].metrics["slo_max_request_rate"];
    assert_eq!(
        base.values.iter().map(|v| v.trial).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(b.arms[1].metrics["slo_max_request_rate"].values.len(), 3);
    let st = &r.summary.statements[1];
    assert_eq!(
        (st.commit.as_str(), st.lower_bounds.clone()),
        ("bbbbbbbb", vec!["human#2".to_string()])
    );
    assert_eq!(st.below_range, vec!["baseline#3".to_string()]);
    assert!(
        st.text
            .contains("a lower bound: human#2 passed the top of the range"),
        "{}",
        st.text
    );
    assert!(
        st.text
            .contains("below the range (no value) in trial baseline#3"),
        "{}",
        st.text
    );

    // cccccccc: concurrency, the interval spans 0.
    let st = &r.summary.statements[2];
    assert_eq!(st.metric, "slo_max_concurrency");
    assert_eq!(st.diff.verdict, Verdict::WithinNoise);
    assert!(
        st.text.starts_with(
            "human vs baseline: no difference shown in the concurrent requests sustained with 99% of requests within TTFT ≤ 500 ms ("
        ),
        "{}",
        st.text
    );

    // In every summary format, and in the JSON model.
    let json: serde_json::Value =
        serde_json::from_str(&report::render(&r, Format::Json, false)).unwrap();
    assert_eq!(
        json["summary"]["statements"][0]["text"],
        r.summary.statements[0].text
    );
    assert_eq!(
        json["summary"]["statements"][1]["lower_bounds"][0],
        "human#2"
    );
    let terminal = report::render(&r, Format::Terminal, false);
    let md = report::render(&r, Format::Markdown, false);
    let html = report::render(&r, Format::Html, false);
    assert!(terminal.contains("Searches: the highest load within the SLOs"));
    assert!(terminal.contains("human sustains"), "{terminal}");
    // (Markdown escapes the interval's brackets.)
    let escaped = r.summary.statements[0]
        .text
        .replace('[', "\\[")
        .replace(']', "\\]");
    assert!(
        md.contains(&format!("- `aaaaaaaa` `search=rate`: {escaped}")),
        "{md}"
    );
    assert!(html.contains("human sustains"));
    assert!(html.contains("within TTFT ≤ 500 ms"));
    // The per-trial search table: the lower bound and the empty trial are said.
    assert!(md.contains("| human | 2 | rate (req/s) | ≥ 64.00 | \\[64.00, -\\] | 2/2 | top of the range passed: a lower bound (range up to 64.00) |"), "{md}");
    assert!(
        md.contains("below the range in trial 3 (failed at 1.00)"),
        "{md}"
    );
    assert!(terminal.contains("below the range in trial 3"));
}

/// A fixed load point's result: achieved `req_s`, TTFT p50 `ttft` (p99 twice that), TPOT 10/12
/// ms, E2E TTFT + 640 ms (p99 + 700 ms).
fn fixed(req_s: f64, ttft: f64) -> TrialMetrics {
    TrialMetrics {
        duration: Some(30.0),
        completed: Some(100),
        failed: Some(0),
        request_throughput: Some(req_s),
        output_throughput: Some(req_s * 64.0),
        median_ttft_ms: Some(ttft),
        p99_ttft_ms: Some(ttft * 2.0),
        median_tpot_ms: Some(10.0),
        p99_tpot_ms: Some(12.0),
        median_e2el_ms: Some(ttft + 640.0),
        p99_e2el_ms: Some(ttft + 700.0),
        ..TrialMetrics::default()
    }
}

#[test]
fn curves_are_in_the_model_and_drawn_as_svg() {
    let mut input = search_campaign();
    for t in 1..=3 {
        let j = [1.0, 1.02, 0.98][t as usize - 1];
        for (arm, f) in [("baseline", 1.0), ("human", 1.2)] {
            // Listed high load first: the curve sorts by throughput.
            input.trials.push(measured(
                "aaaaaaaa",
                arm,
                t,
                "conc=16",
                fixed(9.0 * f * j, 30.0),
            ));
            input.trials.push(measured(
                "aaaaaaaa",
                arm,
                t,
                "conc=1",
                fixed(1.0 * f * j, 20.0),
            ));
            // eeeeeeee: a single fixed point, no search: no curve.
            input.trials.push(measured(
                "eeeeeeee",
                arm,
                t,
                "conc=1",
                fixed(1.0 * f * j, 20.0),
            ));
        }
    }
    input.commits.push(isobench::report::CommitInfo {
        short: "eeeeeeee".into(),
        human_full: "e".repeat(40),
        parent: "1".repeat(40),
        model_hf: "m".into(),
        subject: None,
    });
    input.slos.insert(
        "aaaaaaaa".into(),
        Goodput {
            ttft_ms: Some(500.0),
            ..Goodput::default()
        },
    );
    let r = build(&input);
    let a = &r.commits[0];
    assert_eq!(a.curves.len(), 2, "one curve per arm");
    let human = &a.curves[1];
    assert_eq!(human.arm, "human");
    assert_eq!(
        human
            .points
            .iter()
            .map(|p| p.point.as_str())
            .collect::<Vec<_>>(),
        vec!["conc=1", "conc=16"],
        "fixed points by throughput; the search point is not one"
    );
    let p = &human.points[1];
    assert!(close(p.request_throughput, 9.0 * 1.2), "median over trials");
    assert_eq!(p.trials, 3);
    assert_eq!(
        (p.latency.ttft_p50_ms, p.latency.ttft_p99_ms),
        (Some(30.0), Some(60.0))
    );
    assert_eq!(p.latency.e2el_p99_ms, Some(730.0));
    assert_eq!(human.probes.len(), 9, "3 probes in each of 3 trials");
    assert_eq!(human.probes.iter().filter(|p| !p.passed).count(), 3);
    assert_eq!(human.probes[0].trial, 1);
    assert!(
        r.commits[3]
            .curves
            .iter()
            .all(|c| c.points.len() == 1 && c.probes.is_empty())
    );

    let json: serde_json::Value =
        serde_json::from_str(&report::render(&r, Format::Json, false)).unwrap();
    let c = &json["commits"][0]["curves"][1];
    assert_eq!(c["points"][1]["ttft_p99_ms"], 60.0);
    assert_eq!(c["probes"][2]["passed"], false);
    assert_eq!(json["commits"][0]["slo"]["ttft_ms"], 500.0);
    // Reports read back unchanged (the new fields round-trip).
    let back: Report = serde_json::from_value(json.clone()).unwrap();
    // (serde_json's default float parser may differ in the last bit: compare the structure.)
    let shape = |r: &Report| -> Vec<(String, Vec<String>, Vec<bool>)> {
        r.commits[0]
            .curves
            .iter()
            .map(|c| {
                (
                    c.arm.clone(),
                    c.points.iter().map(|p| p.point.clone()).collect(),
                    c.probes.iter().map(|p| p.passed).collect(),
                )
            })
            .collect()
    };
    assert_eq!(shape(&back), shape(&r));

    let html = report::render(&r, Format::Html, false);
    let dir = report_common::artifacts("report_curves");
    std::fs::write(dir.join("report.html"), &html).unwrap();
    // Commits with curves: aaaaaaaa (fixed points and a search), bbbbbbbb and cccccccc
    // (searches): three charts each; eeeeeeee none.
    assert_eq!(html.matches("class=\"chart curves\"").count(), 9);
    let aaaa =
        &html[html.find("id=\"c-aaaaaaaa\"").unwrap()..html.find("id=\"c-bbbbbbbb\"").unwrap()];
    // One path per arm and percentile in each of TTFT, TPOT, E2E.
    assert_eq!(aaaa.matches("<path class=\"curve p50\"").count(), 2 * 3);
    assert_eq!(aaaa.matches("<path class=\"curve p99\"").count(), 2 * 3);
    assert_eq!(aaaa.matches("class=\"probe passed\"").count(), 2 * 6 * 3);
    assert_eq!(aaaa.matches("class=\"probe failed\"").count(), 2 * 3 * 3);
    assert_eq!(
        aaaa.matches("<line class=\"slo\"").count(),
        1,
        "TTFT has an SLO"
    );
    assert!(
        aaaa.contains("stroke=\"#0072b2\""),
        "the human arm's colour"
    );
    let eeee = &html[html.find("id=\"c-eeeeeeee\"").unwrap()..];
    assert!(!eeee.contains("chart curves"));
    // Still one self-contained page.
    assert!(!html.contains("<script"));
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let value = &html[i + attr.len()..];
            assert!(
                value.starts_with("data:") || value.starts_with('#'),
                "{}",
                &value[..40]
            );
        }
    }

    // Markdown and terminal: the compact curve table.
    let md = report::render(&r, Format::Markdown, false);
    assert!(md.contains("| arm | load | req/s | tok/s | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | E2E p50 | E2E p99 | passed |"));
    assert!(md.contains("| human | conc=16 (3 trials) | 10.80 | 691.2 | 30.00 | 60.00 | 10.00 | 12.00 | 670.0 | 730.0 | - |"), "{md}");
    assert!(md.contains("| baseline | #1 probe rate=11.00 |"), "{md}");
    let eeee_md = &md[md.find("### `eeeeeeee`").unwrap()..];
    assert!(!eeee_md.contains("Throughput–latency curve"));
    let terminal = report::render(&r, Format::Terminal, false);
    std::fs::write(dir.join("report.md"), &md).unwrap();
    std::fs::write(dir.join("report.txt"), &terminal).unwrap();
    assert!(terminal.contains("throughput–latency curve"));
    assert!(terminal.contains("#1 probe rate=12.00"));
}
