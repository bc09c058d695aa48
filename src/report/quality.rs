//! Can the comparison be trusted? Measurement quality (windows, trial spread, placement,
//! overlapping measurements, self-audit), campaign-wide error control (Benjamini–Hochberg over
//! the headline comparisons) and trials planning (how many trials a comparison needs to detect
//! a given change with 80 % power). Pure: computed from the input and the analysed commits.
use super::input::{ReportInput, TrialOutcome, TrialRecord};
use super::metric::HEADLINE;
use super::model::*;
use super::stats::{self, Verdict};
use std::collections::BTreeMap;

/// A measurement window shorter than this is mostly ramp-up and drain.
pub const MIN_WINDOW_S: f64 = 10.0;
/// Fewer completed requests than this make a p99 the sample maximum.
pub const MIN_COMPLETED_FOR_P99: u64 = 100;
/// Trials planning: the change to detect (percent) and the power to detect it with.
pub const PLAN_CHANGE_PCT: f64 = 3.0;
pub const PLAN_POWER: f64 = 0.8;
/// Overlapping trials listed per trial (the count is always complete).
const OVERLAPS_LISTED: usize = 4;

fn label(t: &TrialRecord) -> String {
    format!("{}/{}#{}", t.commit, t.arm, t.trial)
}

/// The measurement-quality section: which trials overlapped, each trial's flags, and each
/// arm's spread and placement.
pub fn quality(input: &ReportInput, commits: &[CommitReport]) -> Quality {
    let known = |t: &&TrialRecord| {
        input.commits.iter().any(|c| c.short == t.commit)
            && input.arms.iter().any(|a| a.name == t.arm)
    };
    let measured: Vec<&TrialRecord> = input
        .trials
        .iter()
        .filter(known)
        .filter(|t| matches!(t.outcome, TrialOutcome::Ok(_)))
        .collect();
    let overlaps = overlaps(&measured);
    let (mut trials, mut warnings) = trial_flags(&measured, &overlaps);
    telemetry_notes(&measured, &mut trials, &mut warnings);
    let arms = arm_placement(commits, &trials, &mut warnings);
    Quality {
        min_window_s: MIN_WINDOW_S,
        min_completed: MIN_COMPLETED_FOR_P99,
        trials,
        arms,
        gpu_effects: gpu_effects(&measured, input.confidence),
        overlapping_trials: overlaps.iter().filter(|o| !o.is_empty()).count(),
        warnings,
    }
}

/// The server's TTFT mean may trail the client's by the HTTP round trip and SSE framing; a gap
/// beyond this many ms and this fraction of the client's mean says the two measure different
/// things (another client on the server, a proxy, a clock problem).
pub const TTFT_GAP_MS: f64 = 10.0;
pub const TTFT_GAP_FRACTION: f64 = 0.25;

/// Telemetry's quality notes per trial (`measured` and `trials` in the same order): GPU clocks
/// throttled during the window, and the server's TTFT disagreeing with the client's; plus one
/// warning per kind, and one per collector absent everywhere.
fn telemetry_notes(
    measured: &[&TrialRecord],
    trials: &mut [TrialQuality],
    warnings: &mut Vec<String>,
) {
    let (mut throttled, mut gaps, mut with_telemetry) = (0, 0, 0);
    let mut absent: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for (t, q) in measured.iter().zip(trials.iter_mut()) {
        let TrialOutcome::Ok(m) = &t.outcome else {
            continue;
        };
        let Some(tel) = &m.telemetry else { continue };
        with_telemetry += 1;
        if !tel.throttle_reasons.is_empty() {
            throttled += 1;
            q.flags.push(format!(
                "GPU clocks throttled ({})",
                tel.throttle_reasons.join(", ")
            ));
        }
        if let (Some(gap), Some(client)) = (tel.ttft_gap_ms(), tel.client_mean_ttft_ms)
            && gap.abs() > TTFT_GAP_MS
            && gap.abs() > TTFT_GAP_FRACTION * client
        {
            gaps += 1;
            q.flags.push(format!(
                "server TTFT mean {:.1} ms vs client {client:.1} ms",
                client - gap
            ));
        }
        for (part, reason) in [
            ("server metrics", &tel.server_absent),
            ("GPU telemetry", &tel.gpu_absent),
            ("host CPU time", &tel.host_absent),
        ] {
            if let Some(r) = reason {
                absent.entry(part).or_insert_with(|| (0, r.clone())).0 += 1;
            }
        }
    }
    if throttled > 0 {
        warnings.push(format!(
            "{throttled} trial(s) ran with GPU clocks throttled (power or thermal limits): their speed reflects the cooling and power budget, not only the code"
        ));
    }
    if gaps > 0 {
        warnings.push(format!(
            "{gaps} trial(s): the server's mean TTFT differs from the client's by more than {TTFT_GAP_MS:.0} ms and {:.0} %: check that nothing else sent requests to the server",
            TTFT_GAP_FRACTION * 100.0
        ));
    }
    if with_telemetry > 0 {
        for (part, (n, reason)) in absent {
            warnings.push(format!(
                "{part} absent in {n} of {with_telemetry} trial(s): {reason}"
            ));
        }
    }
}

/// For each trial, the other trials whose measurement windows overlapped its own (a sweep over
/// windows sorted by start). Under `paired`, the arms of one round overlap by design: only other
/// overlaps count.
fn overlaps(measured: &[&TrialRecord]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..measured.len())
        .filter(|&i| measured[i].measured.is_some())
        .collect();
    let win = |i: usize| measured[i].measured.as_ref().expect("filtered");
    order.sort_by(|&a, &b| win(a).window_start.total_cmp(&win(b).window_start));
    let partners = |i: usize, j: usize| {
        let (a, b) = (measured[i], measured[j]);
        a.commit == b.commit
            && a.trial == b.trial
            && a.point == b.point
            && win(i).isolate.as_deref() == Some("paired")
            && win(j).isolate.as_deref() == Some("paired")
    };
    let mut overlaps: Vec<Vec<usize>> = vec![Vec::new(); measured.len()];
    for (k, &i) in order.iter().enumerate() {
        for &j in &order[k + 1..] {
            if win(j).window_start >= win(i).window_end {
                break;
            }
            if !partners(i, j) {
                overlaps[i].push(j);
                overlaps[j].push(i);
            }
        }
    }
    overlaps
}

/// Each trial's quality row with its flags (short window, few requests, re-sent prompts,
/// self-audit, overlap), and one campaign-wide warning per kind of flag.
fn trial_flags(
    measured: &[&TrialRecord],
    overlaps: &[Vec<usize>],
) -> (Vec<TrialQuality>, Vec<String>) {
    let mut trials = Vec::new();
    let (mut short_windows, mut low_counts, mut audits, mut reused) = (0, 0, 0, 0);
    for (i, t) in measured.iter().enumerate() {
        let TrialOutcome::Ok(m) = &t.outcome else {
            unreachable!("filtered")
        };
        let info = t.measured.as_ref();
        let window_s = info.map(|w| w.measured_window_s());
        let mut flags = Vec::new();
        if window_s.is_some_and(|w| w < MIN_WINDOW_S) {
            flags.push(format!("window under {MIN_WINDOW_S:.0} s"));
            short_windows += 1;
        }
        if m.completed.is_some_and(|c| c < MIN_COMPLETED_FOR_P99) {
            flags.push(format!(
                "{} completed requests: too few for p99",
                m.completed.unwrap_or(0)
            ));
            low_counts += 1;
        }
        if let Some(n) = info.and_then(|w| w.prompts_reused).filter(|&n| n > 0) {
            flags.push(format!("{n} requests re-sent a prompt of the run"));
            reused += 1;
        }
        if let Some(info) = info
            && !info.audit_warnings.is_empty()
        {
            audits += 1;
            flags.extend(
                info.audit_warnings
                    .iter()
                    .map(|w| format!("self-audit: {w}")),
            );
        }
        if !overlaps[i].is_empty() {
            flags.push(format!(
                "measured while {} other trial(s) measured",
                overlaps[i].len()
            ));
        }
        trials.push(TrialQuality {
            commit: t.commit.clone(),
            point: t.point.clone(),
            arm: t.arm.clone(),
            trial: t.trial,
            gpus: info.map(|w| w.gpus.clone()).unwrap_or_default(),
            isolate: info.and_then(|w| w.isolate.clone()),
            window_start: info.map(|w| w.window_start),
            window_s,
            completed: m.completed,
            overlaps: overlaps[i].len(),
            overlapping: overlaps[i]
                .iter()
                .take(OVERLAPS_LISTED)
                .map(|&j| label(measured[j]))
                .collect(),
            flags,
        });
    }
    let overlapping_trials = overlaps.iter().filter(|o| !o.is_empty()).count();
    let mut warnings = Vec::new();
    let mut warn = |count: usize, text: String| {
        if count > 0 {
            warnings.push(text);
        }
    };
    warn(
        short_windows,
        format!(
            "{short_windows} trial(s) measured for less than {MIN_WINDOW_S:.0} s: raise num_prompts, or measure in steady state with load.duration (windows that short are mostly ramp-up and drain)"
        ),
    );
    warn(
        low_counts,
        format!(
            "{low_counts} trial(s) completed fewer than {MIN_COMPLETED_FOR_P99} requests: their p99 values are sample maxima"
        ),
    );
    warn(
        reused,
        format!(
            "{reused} timed trial(s) re-sent prompts (the window needed more than num_prompts): a prefix cache may answer those faster; raise num_prompts"
        ),
    );
    warn(
        audits,
        format!("{audits} trial(s) carry load-generator self-audit warnings"),
    );
    warn(
        overlapping_trials,
        format!(
            "{overlapping_trials} trial(s) were measured while another measurement ran on this host (isolate = \"exclusive\" or \"paired\" avoids uneven overlap)"
        ),
    );
    (trials, warnings)
}

/// Per arm: trial spread and trials per GPU; warns about arms confounded with a GPU.
fn arm_placement(
    commits: &[CommitReport],
    trials: &[TrialQuality],
    warnings: &mut Vec<String>,
) -> Vec<ArmQuality> {
    let mut arms = Vec::new();
    for commit in commits {
        for point in &commit.points {
            let mut arm_gpus: Vec<(String, BTreeMap<String, usize>)> = Vec::new();
            for cell in point.arms.iter().filter(|c| c.status.has_data()) {
                let mut gpus: BTreeMap<String, usize> = BTreeMap::new();
                for t in trials.iter().filter(|t| {
                    t.commit == commit.short && t.point == point.point && t.arm == cell.arm
                }) {
                    if !t.gpus.is_empty() {
                        *gpus.entry(t.gpus.join("+")).or_default() += 1;
                    }
                }
                let headline = cell.metrics.get(HEADLINE);
                arms.push(ArmQuality {
                    commit: commit.short.clone(),
                    point: point.point.clone(),
                    arm: cell.arm.clone(),
                    n: headline.map(|h| h.summary.n).unwrap_or(0),
                    cv: headline.and_then(|h| h.summary.cv),
                    gpus: gpus.clone(),
                });
                arm_gpus.push((cell.arm.clone(), gpus));
            }
            // Confounded: every arm on a single GPU of its own, and not all on the same one.
            let singles: Vec<&String> = arm_gpus
                .iter()
                .filter(|(_, g)| g.len() == 1)
                .filter_map(|(_, g)| g.keys().next())
                .collect();
            if arm_gpus.len() >= 2
                && singles.len() == arm_gpus.len()
                && singles.iter().any(|g| *g != singles[0])
                && arm_gpus.iter().all(|(_, g)| g.values().sum::<usize>() >= 2)
            {
                warnings.push(format!(
                    "commit {} {}: each arm ran every trial on one GPU of its own ({}) — arm and GPU are confounded",
                    commit.short,
                    point.point,
                    arm_gpus
                        .iter()
                        .map(|(a, g)| format!("{a} on {}", g.keys().next().expect("one")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    arms
}

/// GPU effect on the headline: each trial's log value minus its (commit, point, arm) mean, for
/// cells that ran on more than one GPU (only there does the design separate GPU from arm),
/// averaged per GPU with a t-interval.
fn gpu_effects(measured: &[&TrialRecord], confidence: f64) -> Vec<GpuEffect> {
    let mut cells: BTreeMap<(String, String, String), Vec<(String, f64)>> = BTreeMap::new();
    for t in measured {
        let (TrialOutcome::Ok(m), Some(info)) = (&t.outcome, &t.measured) else {
            continue;
        };
        let Some(v) = m.output_throughput.filter(|v| *v > 0.0 && v.is_finite()) else {
            continue;
        };
        if info.gpus.is_empty() {
            continue;
        }
        cells
            .entry((t.commit.clone(), t.point.clone(), t.arm.clone()))
            .or_default()
            .push((info.gpus.join("+"), v.ln()));
    }
    let mut residuals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for values in cells.values() {
        let distinct = values
            .iter()
            .map(|(g, _)| g)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct < 2 {
            continue;
        }
        let mean = values.iter().map(|(_, v)| v).sum::<f64>() / values.len() as f64;
        for (g, v) in values {
            residuals.entry(g.clone()).or_default().push(v - mean);
        }
    }
    residuals
        .into_iter()
        .map(|(gpu, r)| {
            let m = stats::mean(&r).unwrap_or(0.0);
            let ci = (r.len() >= 2)
                .then(|| stats::sample_sd(&r))
                .flatten()
                .map(|sd| {
                    let half = stats::t_critical(confidence, (r.len() - 1) as f64) * sd
                        / (r.len() as f64).sqrt();
                    (
                        ((m - half).exp() - 1.0) * 100.0,
                        ((m + half).exp() - 1.0) * 100.0,
                    )
                });
            GpuEffect {
                gpu,
                trials: r.len(),
                effect_pct: (m.exp() - 1.0) * 100.0,
                ci_low_pct: ci.map(|c| c.0),
                ci_high_pct: ci.map(|c| c.1),
            }
        })
        .collect()
}

/// Two-sided p-value of a difference, recovered from its t-interval (log scale).
pub fn p_value(d: &MetricDiff, better: stats::Better, confidence: f64) -> Option<f64> {
    let (lo, hi, df) = (d.ci_low_pct?, d.ci_high_pct?, d.df?);
    let to_log = |pct: f64| match better {
        stats::Better::Higher => (1.0 + pct / 100.0).ln(),
        stats::Better::Lower => -(1.0 - pct / 100.0).ln(),
    };
    let (est, lo, hi) = (to_log(d.diff_pct), to_log(lo), to_log(hi));
    let se = (hi - lo).abs() / (2.0 * stats::t_critical(confidence, df));
    if se.is_nan() || se <= 0.0 {
        return Some(if est == 0.0 { 1.0 } else { 0.0 });
    }
    let t = (est / se).abs();
    Some((2.0 * (1.0 - stats::student_t_cdf(t, df))).clamp(0.0, 1.0))
}

/// Benjamini–Hochberg adjusted p-values (q-values), in input order.
pub fn bh_adjust(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1.0; m];
    let mut running: f64 = 1.0;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// Campaign-wide false discovery rate control over every headline comparison with an interval.
pub fn fdr(commits: &[CommitReport], confidence: f64) -> FdrSummary {
    let better = super::metric::metric(HEADLINE)
        .expect("headline metric is in the catalog")
        .better;
    let level = 1.0 - confidence;
    let mut rows = Vec::new();
    let mut ps = Vec::new();
    for commit in commits {
        for point in &commit.points {
            for c in &point.comparisons {
                let Some(d) = c.metrics.get(HEADLINE) else {
                    continue;
                };
                let Some(p) = p_value(d, better, confidence) else {
                    continue;
                };
                ps.push(p);
                rows.push(FdrRow {
                    commit: commit.short.clone(),
                    point: point.point.clone(),
                    kind: c.kind,
                    candidate: c.candidate.clone(),
                    reference: c.reference.clone(),
                    diff_pct: d.diff_pct,
                    p_value: p,
                    q_value: p,
                    verdict: d.verdict,
                    fdr_verdict: d.verdict,
                });
            }
        }
    }
    for (row, q) in rows.iter_mut().zip(bh_adjust(&ps)) {
        row.q_value = q;
        row.fdr_verdict = if q <= level {
            if row.diff_pct > 0.0 {
                Verdict::Faster
            } else {
                Verdict::Slower
            }
        } else {
            Verdict::WithinNoise
        };
    }
    FdrSummary {
        method: "Benjamini–Hochberg".into(),
        level,
        comparisons: rows.len(),
        discoveries: rows
            .iter()
            .filter(|r| r.fdr_verdict != Verdict::WithinNoise)
            .count(),
        per_comparison_discoveries: rows
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Faster | Verdict::Slower))
            .count(),
        rows,
    }
}

/// Trials a paired comparison needs to detect `change_pct` with `power` at two-sided level
/// `alpha`, given the sd of per-round log ratios: the smallest n with
/// t_{1−α/2,n−1} + t_{power,n−1} ≤ δ·√n / sd.
pub fn trials_needed(sd_log: f64, change_pct: f64, alpha: f64, power: f64) -> Option<usize> {
    let delta = (1.0 + change_pct / 100.0).ln();
    if sd_log.is_nan() || sd_log <= 0.0 {
        return Some(2);
    }
    (2..=10_000).find(|&n| {
        let df = (n - 1) as f64;
        stats::student_t_quantile(1.0 - alpha / 2.0, df) + stats::student_t_quantile(power, df)
            <= delta * (n as f64).sqrt() / sd_log
    })
}

/// Per headline comparison: the noise measured so far and the trials it needs.
pub fn planning(commits: &[CommitReport], confidence: f64) -> Planning {
    let mut rows = Vec::new();
    for commit in commits {
        for point in &commit.points {
            for c in &point.comparisons {
                let Some(d) = c.metrics.get(HEADLINE) else {
                    continue;
                };
                let (Some(lo), Some(hi), Some(df)) = (d.ci_low_pct, d.ci_high_pct, d.df) else {
                    continue;
                };
                let se = ((1.0 + hi / 100.0).ln() - (1.0 + lo / 100.0).ln())
                    / (2.0 * stats::t_critical(confidence, df));
                // The sd of one round's log ratio: se·√pairs (paired), or se·√(n/2)·√2 = se·√n
                // for two arms of n trials each (Welch).
                let n = if d.n_pairs > 0 {
                    d.n_pairs
                } else {
                    d.n_reference.min(d.n_candidate)
                };
                let sd = se * (n as f64).sqrt();
                let needed = trials_needed(sd, PLAN_CHANGE_PCT, 1.0 - confidence, PLAN_POWER);
                rows.push(PowerRow {
                    commit: commit.short.clone(),
                    point: point.point.clone(),
                    kind: c.kind,
                    candidate: c.candidate.clone(),
                    sd_pct: sd * 100.0,
                    trials: n,
                    needed,
                    under_powered: needed.is_none_or(|k| k > n),
                });
            }
        }
    }
    Planning {
        change_pct: PLAN_CHANGE_PCT,
        power: PLAN_POWER,
        under_powered: rows.iter().filter(|r| r.under_powered).count(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::input::{ArmInfo, CommitInfo, MeasureInfo, TrialMetrics};

    /// Two arms × 2 trials; `gpu(arm, trial)` and `start(arm, trial)` place each trial.
    fn input(
        gpu: impl Fn(&str, u32) -> &'static str,
        start: impl Fn(&str, u32) -> f64,
        isolate: &str,
    ) -> ReportInput {
        let mut trials = Vec::new();
        for arm in ["baseline", "human"] {
            for trial in 1..=2u32 {
                trials.push(TrialRecord {
                    commit: "c0ffee00".into(),
                    arm: arm.into(),
                    trial,
                    point: "conc=8".into(),
                    outcome: TrialOutcome::Ok(Box::new(TrialMetrics {
                        output_throughput: Some(1000.0 + trial as f64),
                        completed: Some(500),
                        ..TrialMetrics::default()
                    })),
                    timestamp: String::new(),
                    duration_s: 20.0,
                    result_path: None,
                    run_s: None,
                    image: None,
                    node: None,
                    measured: Some(MeasureInfo {
                        window_start: start(arm, trial),
                        window_end: start(arm, trial) + 20.0,
                        gpus: vec![gpu(arm, trial).into()],
                        isolate: Some(isolate.into()),
                        audit_warnings: Vec::new(),
                        measured_s: None,
                        prompts_reused: None,
                    }),
                });
            }
        }
        ReportInput {
            outputs: Default::default(),
            images: Vec::new(),
            slos: Default::default(),
            percentiles: Vec::new(),
            campaign: "q".into(),
            generated_at: String::new(),
            confidence: 0.95,
            threshold_pct: None,
            commits: vec![CommitInfo {
                short: "c0ffee00".into(),
                human_full: "c0ffee00".into(),
                parent: "p".into(),
                model_hf: "m".into(),
                subject: None,
            }],
            arms: vec![
                ArmInfo {
                    name: "baseline".into(),
                    role: crate::manifest::types::ArmRole::Baseline,
                },
                ArmInfo {
                    name: "human".into(),
                    role: crate::manifest::types::ArmRole::Human,
                },
            ],
            trials,
        }
    }

    #[test]
    fn confounded_placement_and_overlaps_are_reported() {
        // Every baseline on gpu0, every human on gpu1, rounds measured at once: the run.
        let bad = input(
            |arm, _| if arm == "baseline" { "gpu0" } else { "gpu1" },
            |_, t| 100.0 * t as f64,
            "none",
        );
        let r = crate::report::build(&bad, &Default::default()).unwrap();
        assert!(
            r.quality.warnings.iter().any(|w| w.contains("confounded")),
            "{:?}",
            r.quality.warnings
        );
        assert_eq!(r.quality.overlapping_trials, 4);
        assert!(r.quality.gpu_effects.is_empty(), "no arm ran on both GPUs");
        // Balanced, paired: the round's partners overlap by design and are not counted.
        let good = input(
            |arm, t| {
                if (arm == "baseline") == (t == 1) {
                    "gpu0"
                } else {
                    "gpu1"
                }
            },
            |_, t| 100.0 * t as f64,
            "paired",
        );
        let r = crate::report::build(&good, &Default::default()).unwrap();
        assert!(
            !r.quality.warnings.iter().any(|w| w.contains("confounded")),
            "{:?}",
            r.quality.warnings
        );
        assert_eq!(r.quality.overlapping_trials, 0);
        assert_eq!(r.quality.gpu_effects.len(), 2);
        assert!(r.quality.trials.iter().all(|t| t.flags.is_empty()));
    }

    #[test]
    fn timed_trials_are_judged_by_their_window_and_flag_reused_prompts() {
        let mut timed = input(
            |_, t| if t == 1 { "gpu0" } else { "gpu1" },
            |_, t| 100.0 * t as f64,
            "exclusive",
        );
        // Runs of 20 s whose measured window was 6 s, one of them cycling its prompts.
        for (i, t) in timed.trials.iter_mut().enumerate() {
            let info = t.measured.as_mut().unwrap();
            info.measured_s = Some(6.0);
            info.prompts_reused = Some(if i == 0 { 40 } else { 0 });
        }
        let r = crate::report::build(&timed, &Default::default()).unwrap();
        let q = &r.quality;
        assert!(
            q.trials.iter().all(|t| t.window_s == Some(6.0)),
            "{:?}",
            q.trials
        );
        assert!(
            q.warnings
                .iter()
                .any(|w| w.contains("less than 10 s") && w.contains("load.duration")),
            "{:?}",
            q.warnings
        );
        assert!(
            q.warnings
                .iter()
                .any(|w| w.starts_with("1 timed trial(s) re-sent prompts")),
            "{:?}",
            q.warnings
        );
        assert_eq!(
            q.trials
                .iter()
                .filter(|t| t.flags.iter().any(|f| f.contains("re-sent")))
                .count(),
            1
        );
    }

    #[test]
    fn bh_matches_a_worked_example() {
        // p = 0.01, 0.04, 0.03, 0.2 → sorted 0.01 0.03 0.04 0.2; q = 0.04, 0.0533, 0.0533, 0.2.
        let q = bh_adjust(&[0.01, 0.04, 0.03, 0.2]);
        let want = [0.04, 0.04 * 4.0 / 3.0, 0.04 * 4.0 / 3.0, 0.2];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        assert!(bh_adjust(&[]).is_empty());
    }

    #[test]
    fn trials_needed_grows_with_noise_and_matches_the_normal_approximation() {
        // sd 1 %, detect 3 %: a handful of rounds; sd 5 %: far more.
        let small = trials_needed(0.01, 3.0, 0.05, 0.8).unwrap();
        let large = trials_needed(0.05, 3.0, 0.05, 0.8).unwrap();
        assert!((3..=5).contains(&small), "{small}");
        // Normal approximation: ((1.96 + 0.84)·sd/δ)² ≈ 22.3; t adds about two.
        assert!((22..=26).contains(&large), "{large}");
    }

    #[test]
    fn p_value_agrees_with_the_interval() {
        // An interval that just touches zero has p = 1 − confidence.
        let d = MetricDiff {
            diff_pct: 5.0,
            ci_low_pct: Some(0.0),
            ci_high_pct: Some((1.05f64 * 1.05 - 1.0) * 100.0),
            method: stats::Method::PairedLogT,
            n_reference: 5,
            n_candidate: 5,
            n_pairs: 5,
            df: Some(4.0),
            verdict: Verdict::WithinNoise,
            seed_verdict: None,
        };
        let p = p_value(&d, stats::Better::Higher, 0.95).unwrap();
        assert!((p - 0.05).abs() < 1e-3, "{p}");
    }

    #[test]
    fn throttling_and_a_ttft_gap_are_flagged_and_energy_is_compared() {
        let mut q = input(
            |_, _| "gpu0",
            |arm, t| 100.0 * t as f64 + f64::from(arm == "human") * 50.0,
            "exclusive",
        );
        for t in &mut q.trials {
            let TrialOutcome::Ok(m) = &mut t.outcome else {
                unreachable!()
            };
            let human = t.arm == "human";
            // The human arm: throttled in trial 1, and a server TTFT far below the client's.
            let telemetry = serde_json::json!({
                "server": {"available": true, "counters": {"preemptions": 2.0}},
                "gpu": {"available": true, "sm_util_mean_pct": 80.0,
                        "throttle_reasons": if human && t.trial == 1 { vec!["sw_power_cap"] } else { vec![] }},
                "host": {"available": false, "reason": "no procfs"},
                "derived": {
                    "j_per_output_token": if human { 0.5 } else { 0.6 } + 0.01 * f64::from(t.trial),
                    "output_tokens_per_joule": 1.0 / (if human { 0.5 } else { 0.6 } + 0.01 * f64::from(t.trial)),
                    "server_mean_ttft_ms": if human { 40.0 } else { 99.0 },
                    "client_mean_ttft_ms": 100.0,
                },
            });
            m.telemetry = Some(crate::report::input::TrialTelemetry::from_value(&telemetry));
        }
        let r = crate::report::build(&q, &Default::default()).unwrap();
        let flags: Vec<&String> = r.quality.trials.iter().flat_map(|t| &t.flags).collect();
        assert_eq!(
            flags
                .iter()
                .filter(|f| f.contains("GPU clocks throttled (sw_power_cap)"))
                .count(),
            1,
            "{flags:?}"
        );
        // 60 ms gap on the human arm (both trials); 1 ms on the baseline is within tolerance.
        assert_eq!(
            flags
                .iter()
                .filter(|f| f.contains("server TTFT mean 40.0 ms vs client 100.0 ms"))
                .count(),
            2,
            "{flags:?}"
        );
        let w = &r.quality.warnings;
        assert!(
            w.iter()
                .any(|w| w.starts_with("1 trial(s) ran with GPU clocks throttled")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("2 trial(s): the server's mean TTFT")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w == "host CPU time absent in 4 of 4 trial(s): no procfs"),
            "{w:?}"
        );
        // Energy per token is compared (the human arm uses about 17 % less); preemptions are
        // summarised per arm but not compared.
        let point = &r.commits[0].points[0];
        let c = &point.comparisons[0];
        let diff = c.metrics["j_per_output_token"].diff_pct;
        assert!(diff > 10.0 && diff < 25.0, "{diff}");
        assert!(c.metrics.contains_key("output_tokens_per_joule"));
        assert!(!c.metrics.contains_key("server_preemptions"));
        assert!(point.arms[0].metrics.contains_key("server_preemptions"));
    }
}
