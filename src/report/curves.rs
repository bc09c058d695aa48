//! SLO searches and throughput–latency curves (`docs/report.md`, "Searches" and "Curves").
//!
//! A search step (load point `search=rate` or `search=concurrency`) finds, inside one server
//! session, the highest load at which the SLOs hold; its trial's value is `found`, to the
//! resolution of its bracket. The value is compared across trials like any metric
//! (`slo_max_request_rate`, `slo_max_concurrency`); here each trial's search is summarised, the
//! comparisons are put in words, and each arm gets a curve: its fixed load points (medians over
//! trials) and every probe of its searches.
use super::input::{SearchOutcome, SearchOver, SearchResult, TrialOutcome, TrialRecord};
use super::model::{
    ArmCell, ArmCurve, CommitReport, CurveLatency, CurvePoint, CurveProbe, MetricDiff, PointReport,
    SearchStatement, Slo, TrialSearch,
};
use super::render::{fmt_confidence, fmt_diff, fmt_pct};
use super::stats::Verdict;

/// One trial's search, summarised: what it found, its bracket, its probes.
pub fn trial_search(trial: u32, s: &SearchResult) -> TrialSearch {
    TrialSearch {
        trial,
        over: s.over,
        slo: s.slo.into(),
        attainment: s.attainment,
        outcome: s.outcome,
        found: s.found,
        bracket_low: s.bracket.and_then(|b| b.0),
        bracket_high: s.bracket.and_then(|b| b.1),
        range: s.range,
        probes: s.probes.len(),
        passed: s.probes.iter().filter(|p| p.passed).count(),
    }
}

/// Whether a load point is a search (its label says so, or a trial of it searched).
pub fn is_search_point(point: &PointReport) -> bool {
    point.point.starts_with("search=") || point.arms.iter().any(|a| !a.searches.is_empty())
}

/// The SLO the commit's searches used (the first set one), for commits without `[load.slo]`.
pub fn search_slo(points: &[PointReport]) -> Option<Slo> {
    points
        .iter()
        .flat_map(|p| &p.arms)
        .flat_map(|a| &a.searches)
        .map(|s| s.slo)
        .find(Slo::is_set)
}

/// Whether the commit's curves are worth a chart: some arm has two fixed load points or more,
/// or a search's probes. (A single fixed point is a table row, not a curve.)
pub fn drawn(commit: &CommitReport) -> bool {
    commit
        .curves
        .iter()
        .any(|c| c.points.len() >= 2 || !c.probes.is_empty())
}

fn median(cell: &ArmCell, key: &str) -> Option<f64> {
    cell.metrics.get(key).map(|m| m.summary.median)
}

/// Per arm with measurements: its curve from the fixed points (medians over trials, by achieved
/// request throughput) and the probes of its searches (`records`: the commit's latest records).
pub fn curves(points: &[PointReport], records: &[&TrialRecord]) -> Vec<ArmCurve> {
    let Some(first) = points.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, arm) in first.arms.iter().enumerate() {
        let mut fixed: Vec<CurvePoint> = points
            .iter()
            .filter(|p| !is_search_point(p))
            .filter_map(|p| {
                let cell = p.arms.get(i)?;
                let x = cell.metrics.get("request_throughput")?;
                Some(CurvePoint {
                    point: p.point.clone(),
                    trials: x.summary.n,
                    request_throughput: x.summary.median,
                    output_throughput: median(cell, "output_throughput"),
                    latency: CurveLatency {
                        ttft_p50_ms: median(cell, "median_ttft_ms"),
                        ttft_p99_ms: median(cell, "p99_ttft_ms"),
                        tpot_p50_ms: median(cell, "median_tpot_ms"),
                        tpot_p99_ms: median(cell, "p99_tpot_ms"),
                        e2el_p50_ms: median(cell, "median_e2el_ms"),
                        e2el_p99_ms: median(cell, "p99_e2el_ms"),
                    },
                    goodput_pct: median(cell, "goodput_pct"),
                })
            })
            .collect();
        fixed.sort_by(|a, b| a.request_throughput.total_cmp(&b.request_throughput));
        let mut searched: Vec<(u32, usize, &TrialRecord, &SearchResult)> = records
            .iter()
            .filter(|r| r.arm == arm.arm)
            .filter_map(|r| match &r.outcome {
                TrialOutcome::Ok(m) => {
                    let order = points.iter().position(|p| p.point == r.point)?;
                    Some((r.trial, order, *r, m.search.as_ref()?))
                }
                _ => None,
            })
            .collect();
        searched.sort_by_key(|(trial, order, _, _)| (*trial, *order));
        let probes: Vec<CurveProbe> = searched
            .iter()
            .flat_map(|(trial, _, record, s)| {
                s.probes.iter().map(|p| CurveProbe {
                    point: record.point.clone(),
                    trial: *trial,
                    over: s.over,
                    value: p.value,
                    passed: p.passed,
                    good_fraction: p.good_fraction,
                    achieved_rate: p.achieved_rate,
                    request_throughput: p.request_throughput,
                    output_throughput: p.output_throughput,
                    latency: CurveLatency {
                        ttft_p50_ms: p.median_ttft_ms,
                        ttft_p99_ms: p.p99_ttft_ms,
                        tpot_p50_ms: p.median_tpot_ms,
                        tpot_p99_ms: p.p99_tpot_ms,
                        e2el_p50_ms: p.median_e2el_ms,
                        e2el_p99_ms: p.p99_e2el_ms,
                    },
                })
            })
            .collect();
        if fixed.is_empty() && probes.is_empty() {
            continue;
        }
        out.push(ArmCurve {
            arm: arm.arm.clone(),
            role: arm.role,
            points: fixed,
            probes,
        });
    }
    out
}

/// Every search comparison of the campaign in words: per commit, search point and comparison.
pub fn statements(commits: &[CommitReport]) -> Vec<SearchStatement> {
    let mut out = Vec::new();
    for commit in commits {
        for point in &commit.points {
            for c in &point.comparisons {
                for over in [SearchOver::Rate, SearchOver::Concurrency] {
                    let key = over.metric_key();
                    let Some(diff) = c.metrics.get(key) else {
                        continue;
                    };
                    let cells: Vec<&ArmCell> = [&c.candidate, &c.reference]
                        .into_iter()
                        .filter_map(|name| point.arms.iter().find(|a| &a.arm == name))
                        .collect();
                    let trials_with = |outcome: SearchOutcome| -> Vec<String> {
                        cells
                            .iter()
                            .flat_map(|a| {
                                a.searches
                                    .iter()
                                    .filter(move |s| s.over == over && s.outcome == outcome)
                                    .map(move |s| format!("{}#{}", a.arm, s.trial))
                            })
                            .collect()
                    };
                    let lower_bounds = trials_with(SearchOutcome::AtRangeTop);
                    let below_range = trials_with(SearchOutcome::BelowRange);
                    let search = cells
                        .iter()
                        .flat_map(|a| &a.searches)
                        .find(|s| s.over == over);
                    let condition =
                        condition(search.map(|s| s.slo), search.and_then(|s| s.attainment));
                    let arm_searches = |name: &str| -> Vec<&TrialSearch> {
                        point
                            .arms
                            .iter()
                            .filter(|a| a.arm == name)
                            .flat_map(|a| &a.searches)
                            .filter(|s| s.over == over)
                            .collect()
                    };
                    let resolution_pct =
                        resolution(&arm_searches(&c.candidate), &arm_searches(&c.reference));
                    let mut text = sentence(
                        &c.candidate,
                        &c.reference,
                        over,
                        diff,
                        &condition,
                        &lower_bounds,
                        &below_range,
                    );
                    if let Some((lo, hi)) = resolution_pct {
                        text.push_str(&format!(
                            "; the brackets' resolution allows {} to {}",
                            fmt_pct(lo),
                            fmt_pct(hi)
                        ));
                    }
                    out.push(SearchStatement {
                        commit: commit.short.clone(),
                        point: point.point.clone(),
                        kind: c.kind,
                        candidate: c.candidate.clone(),
                        reference: c.reference.clone(),
                        metric: key.to_string(),
                        diff: diff.clone(),
                        lower_bounds,
                        below_range,
                        resolution_pct,
                        text,
                    });
                }
            }
        }
    }
    out
}

/// The difference (percent) that the searches' brackets leave open, from the medians over
/// trials of each arm's bracket ends: the candidate's lowest possible answer against the
/// reference's highest, and the other way round. Trials agree on bracket values whenever their
/// probes pass and fail alike (the bisection's grid is fixed by the range and tolerance), so
/// the interval across trials can be narrower than this; both are stated. `None` when a bracket
/// is open (a search at the top or below its range).
pub fn resolution(candidate: &[&TrialSearch], reference: &[&TrialSearch]) -> Option<(f64, f64)> {
    let median_of = |searches: &[&TrialSearch], end: fn(&TrialSearch) -> Option<f64>| {
        let v: Vec<f64> = searches.iter().map(|s| end(s)).collect::<Option<_>>()?;
        super::stats::median(&v)
    };
    let (c_lo, c_hi) = (
        median_of(candidate, |s| s.bracket_low)?,
        median_of(candidate, |s| s.bracket_high)?,
    );
    let (r_lo, r_hi) = (
        median_of(reference, |s| s.bracket_low)?,
        median_of(reference, |s| s.bracket_high)?,
    );
    Some(((c_lo / r_hi - 1.0) * 100.0, (c_hi / r_lo - 1.0) * 100.0))
}

/// `with 99% of requests within TTFT ≤ 500 ms`.
fn condition(slo: Option<Slo>, attainment: Option<f64>) -> String {
    let slo = slo
        .filter(Slo::is_set)
        .map(|s| s.describe())
        .unwrap_or_else(|| "the SLOs".into());
    match attainment {
        Some(a) => format!("with {} of requests within {slo}", fmt_confidence(a)),
        None => format!("within {slo}"),
    }
}

/// `-8.0% [-13.5, -2.1]` as `8.0% [2.1, 13.5]`: a decrease said as "fewer".
fn fmt_magnitude(d: &MetricDiff) -> String {
    let abs = |p: f64| fmt_pct(-p).trim_start_matches(['+', '-']).to_string();
    match (d.ci_low_pct, d.ci_high_pct) {
        (Some(lo), Some(hi)) => {
            let (a, b) = (abs(hi), abs(lo));
            format!(
                "{} [{}, {}]",
                abs(d.diff_pct),
                a.trim_end_matches('%'),
                b.trim_end_matches('%')
            )
        }
        _ => abs(d.diff_pct),
    }
}

/// The sentence: `human sustains +18.2% [+9.1, +27.9] more req/s than baseline with 99% of
/// requests within TTFT ≤ 500 ms`; an interval across 0 says "no difference shown".
pub fn sentence(
    candidate: &str,
    reference: &str,
    over: SearchOver,
    d: &MetricDiff,
    condition: &str,
    lower_bounds: &[String],
    below_range: &[String],
) -> String {
    let noun = over.noun();
    let mut text = match d.verdict {
        Verdict::WithinNoise => format!(
            "{candidate} vs {reference}: no difference shown in the {noun} sustained {condition} \
             ({}, within noise)",
            fmt_diff(d)
        ),
        _ if d.diff_pct < 0.0 => format!(
            "{candidate} sustains {} fewer {noun} than {reference} {condition}",
            fmt_magnitude(d)
        ),
        _ => format!(
            "{candidate} sustains {} more {noun} than {reference} {condition}",
            fmt_diff(d)
        ),
    };
    if d.verdict == Verdict::NoNoiseEstimate {
        text.push_str(" (1 trial: no noise estimate)");
    }
    if !lower_bounds.is_empty() {
        text.push_str(&format!(
            "; a lower bound: {} passed the top of the range",
            lower_bounds.join(", ")
        ));
    }
    if !below_range.is_empty() {
        text.push_str(&format!(
            "; below the range (no value) in trial {}",
            below_range.join(", ")
        ));
    }
    text
}
