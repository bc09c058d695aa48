//! From trial records to the [`Report`]: per-arm summaries, comparisons, verdicts, the campaign
//! summary and the failure breakdown. Pure but for one read: the commits' tokenizers, which the
//! output-equivalence check counts tokens with (`super::outputs`).
use super::input::{ReportInput, TrialMetrics, TrialOutcome, TrialRecord};
use super::metric::{Catalog, HEADLINE, MetricDef, TrialView, metric};
use super::model::*;
use super::outputs::{self, ArmAnswers};
use super::stats::{self, Better, Verdict};
use crate::failure::Failure;
use crate::manifest::types::ArmRole;
use std::collections::BTreeMap;

/// Computes the whole report. Trials whose commit or arm is not in the input's lists are
/// ignored (they belong to an older manifest); of several records with the same
/// (commit, arm, point, trial) the last one wins (a retry replaces a failed attempt).
pub fn analyze(input: &ReportInput, settings: &Settings) -> Report {
    let arms: Vec<ArmEntry> = input
        .arms
        .iter()
        .map(|a| ArmEntry {
            name: a.name.clone(),
            role: a.role,
        })
        .collect();
    let pairs = comparison_pairs(&arms);
    let tokenizers = outputs::Tokenizers::load(&input.outputs);
    let catalog = catalog(input);
    let commits: Vec<CommitReport> = input
        .commits
        .iter()
        .map(|c| {
            let commit_short = c.short.as_str();
            let slo = input.slos.get(commit_short).filter(|g| g.is_set());
            let records: Vec<&TrialRecord> =
                latest_records(input.trials.iter().filter(|t| t.commit == c.short));
            let points = points_in_order(&records)
                .into_iter()
                .map(|point| {
                    let mine: Vec<Vec<&TrialRecord>> = arms
                        .iter()
                        .map(|arm| {
                            records
                                .iter()
                                .copied()
                                .filter(|t| t.arm == arm.name && t.point == point)
                                .collect()
                        })
                        .collect();
                    let cells: Vec<ArmCell> = arms
                        .iter()
                        .zip(&mine)
                        .map(|(arm, mine)| arm_cell(arm, mine, &catalog, slo, settings.confidence))
                        .collect();
                    let answers: Vec<ArmAnswers> = mine.iter().map(|m| ArmAnswers::of(m)).collect();
                    let comparisons = pairs
                        .iter()
                        .filter_map(|&(kind, cand, refr)| {
                            let mut c = compare_cells(
                                kind,
                                &cells[cand],
                                &cells[refr],
                                &catalog,
                                settings,
                            )?;
                            c.outputs = outputs::check(
                                input.outputs.mode,
                                &tokenizers,
                                commit_short,
                                &answers[cand],
                                &answers[refr],
                                &cells[refr].arm,
                            );
                            Some(c)
                        })
                        .collect();
                    PointReport {
                        point,
                        arms: cells,
                        comparisons,
                    }
                })
                .collect();
            let points: Vec<PointReport> = points;
            let slo = slo
                .map(|g| Slo::from(*g))
                .or_else(|| super::curves::search_slo(&points));
            CommitReport {
                short: c.short.clone(),
                full: c.human_full.clone(),
                parent: c.parent.clone(),
                model: c.model_hf.clone(),
                subject: c.subject.clone(),
                curves: super::curves::curves(&points, &records),
                slo,
                points,
            }
        })
        .collect();
    let summary = summarize_campaign(&commits, &arms, &pairs, settings);
    let quality = super::quality::quality(input, &commits);
    Report {
        schema: SCHEMA_NAME.to_string(),
        schema_version: SCHEMA_VERSION,
        isobench_version: env!("CARGO_PKG_VERSION").to_string(),
        campaign: input.campaign.clone(),
        generated_at: input.generated_at.clone(),
        settings: settings.clone(),
        metrics: catalog
            .iter()
            .map(|m| MetricInfo {
                key: m.key().into(),
                label: m.label.to_string(),
                unit: m.unit.into(),
                better: m.better,
                compact: m.compact,
                compared: m.compared,
                telemetry: m.telemetry,
            })
            .collect(),
        arms,
        commits,
        summary,
        quality,
        images: input.images.clone(),
    }
}

/// This report's metrics: the fixed ones, the configured percentiles, goodput when a commit has
/// an SLO, and the searches' results when a trial searched.
fn catalog(input: &ReportInput) -> Catalog {
    let mut searches = Vec::new();
    for t in &input.trials {
        if let TrialOutcome::Ok(m) = &t.outcome
            && let Some(s) = &m.search
            && !searches.contains(&s.over)
        {
            searches.push(s.over);
        }
    }
    Catalog::new(
        &input.percentiles,
        input.slos.values().any(|g| g.is_set()),
        &searches,
    )
}

/// (kind, candidate index, reference index) into the arm list: human vs baseline, then for each
/// agent: vs baseline and vs human. The first arm of each role is the one compared against.
fn comparison_pairs(arms: &[ArmEntry]) -> Vec<(ComparisonKind, usize, usize)> {
    let first = |role| arms.iter().position(|a| a.role == role);
    let (baseline, human) = (first(ArmRole::Baseline), first(ArmRole::Human));
    let mut pairs = Vec::new();
    if let (Some(h), Some(b)) = (human, baseline) {
        pairs.push((ComparisonKind::HumanVsBaseline, h, b));
    }
    for (i, _) in arms
        .iter()
        .enumerate()
        .filter(|(_, a)| a.role == ArmRole::Agent)
    {
        if let Some(b) = baseline {
            pairs.push((ComparisonKind::AgentVsBaseline, i, b));
        }
        if let Some(h) = human {
            pairs.push((ComparisonKind::AgentVsHuman, i, h));
        }
    }
    pairs
}

fn latest_records<'a>(records: impl Iterator<Item = &'a TrialRecord>) -> Vec<&'a TrialRecord> {
    let mut out: Vec<&TrialRecord> = Vec::new();
    for r in records {
        let same = |o: &&TrialRecord| o.arm == r.arm && o.point == r.point && o.trial == r.trial;
        match out.iter().position(same) {
            Some(i) => out[i] = r,
            None => out.push(r),
        }
    }
    out
}

fn points_in_order(records: &[&TrialRecord]) -> Vec<String> {
    let mut points: Vec<String> = Vec::new();
    for r in records {
        if !points.contains(&r.point) {
            points.push(r.point.clone());
        }
    }
    points
}

fn arm_cell(
    arm: &ArmEntry,
    records: &[&TrialRecord],
    catalog: &Catalog,
    slo: Option<&crate::loadgen::Goodput>,
    confidence: f64,
) -> ArmCell {
    let mut records = records.to_vec();
    records.sort_by_key(|r| r.trial);
    let ok: Vec<(u32, &TrialMetrics)> = records
        .iter()
        .filter_map(|r| match &r.outcome {
            TrialOutcome::Ok(m) => Some((r.trial, m.as_ref())),
            _ => None,
        })
        .collect();
    let failed = records
        .iter()
        .filter(|r| matches!(r.outcome, TrialOutcome::Failed(_)))
        .count();
    let absent_reason = records.iter().find_map(|r| match &r.outcome {
        TrialOutcome::Absent { reason } => Some(reason.clone()),
        _ => None,
    });
    let status = match (ok.len(), failed) {
        (0, 0) if absent_reason.is_some() => CellStatus::Absent,
        (0, 0) => CellStatus::NotRun,
        (0, _) => CellStatus::Failed,
        (_, 0) => CellStatus::Measured,
        _ => CellStatus::Partial,
    };
    let trials = records
        .iter()
        .map(|r| {
            let (status, failure) = match &r.outcome {
                TrialOutcome::Ok(_) => (TrialStatus::Ok, None),
                TrialOutcome::Failed(f) => (TrialStatus::Failed, Some(f.clone())),
                TrialOutcome::Absent { .. } => (TrialStatus::Absent, None),
            };
            TrialEntry {
                trial: r.trial,
                status,
                timestamp: r.timestamp.clone(),
                duration_s: r.duration_s,
                failure,
                result_path: r.result_path.clone(),
                node: r.node.clone(),
            }
        })
        .collect();
    let mut metrics = BTreeMap::new();
    let views: Vec<(u32, TrialView)> = ok
        .iter()
        .map(|(trial, m)| (*trial, TrialView::new(m, slo)))
        .collect();
    for def in catalog.iter() {
        let values: Vec<TrialValue> = views
            .iter()
            .filter_map(|(trial, view)| {
                def.value(view).map(|value| TrialValue {
                    trial: *trial,
                    value,
                })
            })
            .collect();
        let raw: Vec<f64> = values.iter().map(|v| v.value).collect();
        if let Some(summary) = stats::summarize(&raw, confidence) {
            metrics.insert(def.key().to_string(), MetricCell { summary, values });
        }
    }
    let searches = ok
        .iter()
        .filter_map(|(trial, m)| {
            m.search
                .as_ref()
                .map(|s| super::curves::trial_search(*trial, s))
        })
        .collect();
    ArmCell {
        arm: arm.name.clone(),
        role: arm.role,
        status,
        trials,
        metrics,
        distributions: distributions(ok.iter().map(|(_, m)| *m)),
        absent_reason: if status == CellStatus::Absent {
            absent_reason
        } else {
            None
        },
        searches,
    }
}

/// Per-request samples pooled over the arm's measured trials.
fn distributions<'a>(
    trials: impl Iterator<Item = &'a TrialMetrics>,
) -> BTreeMap<String, Distribution> {
    let (mut ttft, mut tpot, mut e2el) = (Vec::new(), Vec::new(), Vec::new());
    for m in trials {
        let per = m.per_request_ms();
        ttft.extend(per.ttft);
        tpot.extend(per.tpot);
        e2el.extend(per.e2el);
    }
    [("ttft_ms", ttft), ("tpot_ms", tpot), ("e2el_ms", e2el)]
        .into_iter()
        .filter_map(|(key, samples)| distribution(&samples).map(|d| (key.to_string(), d)))
        .collect()
}

pub fn distribution(samples: &[f64]) -> Option<Distribution> {
    let s = stats::sorted(samples);
    let q = |p| stats::percentile_sorted(&s, p);
    Some(Distribution {
        n: s.len(),
        min: q(0.0)?,
        p5: q(5.0)?,
        p25: q(25.0)?,
        p50: q(50.0)?,
        p75: q(75.0)?,
        p95: q(95.0)?,
        p99: q(99.0)?,
        max: q(100.0)?,
    })
}

fn compare_cells(
    kind: ComparisonKind,
    candidate: &ArmCell,
    reference: &ArmCell,
    catalog: &Catalog,
    settings: &Settings,
) -> Option<Comparison> {
    if !candidate.status.has_data() || !reference.status.has_data() {
        return None;
    }
    let mut metrics = BTreeMap::new();
    for def in catalog.iter().filter(|d| d.compared) {
        let (Some(c), Some(r)) = (
            candidate.metrics.get(def.key()),
            reference.metrics.get(def.key()),
        ) else {
            continue;
        };
        if let Some(diff) = metric_diff(def, &r.values, &c.values, settings) {
            metrics.insert(def.key().to_string(), diff);
        }
    }
    Some(Comparison {
        kind,
        candidate: candidate.arm.clone(),
        reference: reference.arm.clone(),
        metrics,
        outputs: OutputsCheck::default(),
    })
}

/// One metric's difference (percent, positive = better) with interval and verdicts.
pub fn metric_diff(
    def: &MetricDef,
    reference: &[TrialValue],
    candidate: &[TrialValue],
    settings: &Settings,
) -> Option<MetricDiff> {
    let pairs = |v: &[TrialValue]| v.iter().map(|t| (t.trial, t.value)).collect::<Vec<_>>();
    let ratio = stats::compare(
        &pairs(reference),
        &pairs(candidate),
        settings.confidence,
        settings.paired,
    )?;
    let pct = |r| stats::improvement_pct(r, def.better);
    // For a lower-is-better metric the upper ratio bound is the lower improvement bound.
    let ci = ratio.ci.map(|(lo, hi)| match def.better {
        Better::Higher => (pct(lo), pct(hi)),
        Better::Lower => (pct(hi), pct(lo)),
    });
    let diff_pct = pct(ratio.ratio);
    Some(MetricDiff {
        diff_pct,
        ci_low_pct: ci.map(|c| c.0),
        ci_high_pct: ci.map(|c| c.1),
        method: ratio.method,
        n_reference: ratio.n_reference,
        n_candidate: ratio.n_candidate,
        n_pairs: ratio.n_pairs,
        df: ratio.df,
        verdict: Verdict::from_interval(ci),
        seed_verdict: settings
            .threshold_pct
            .map(|t| Verdict::from_threshold(diff_pct, t)),
    })
}

fn summarize_campaign(
    commits: &[CommitReport],
    arms: &[ArmEntry],
    pairs: &[(ComparisonKind, usize, usize)],
    settings: &Settings,
) -> CampaignSummary {
    let headline = metric(HEADLINE).expect("headline metric is in the catalog");
    let mut trials = TrialCounts::default();
    let mut categories: Vec<FailureCategory> = Vec::new();
    for commit in commits {
        for point in &commit.points {
            for cell in &point.arms {
                for t in &cell.trials {
                    match t.status {
                        TrialStatus::Ok => trials.ok += 1,
                        TrialStatus::Absent => trials.absent += 1,
                        TrialStatus::Failed => trials.failed += 1,
                    }
                    if let Some(f) = &t.failure {
                        add_failure(&mut categories, f, &commit.short, &cell.arm);
                    }
                }
            }
        }
    }
    // Arms in manifest order within each category.
    for cat in &mut categories {
        cat.arms
            .sort_by_key(|a| arms.iter().position(|x| &x.name == a));
    }
    categories.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.category.cmp(&b.category))
    });

    let tallies = tallies(commits, arms, pairs, settings);

    let human = arms.iter().position(|a| a.role == ArmRole::Human);
    let baseline = arms.iter().position(|a| a.role == ArmRole::Baseline);
    let mut complete = Vec::new();
    let mut agent_failures = Vec::new();
    if let Some(h) = human {
        for commit in commits {
            for point in &commit.points {
                let human_cell = &point.arms[h];
                let Some(human_value) = median_of(human_cell, headline.key()) else {
                    continue;
                };
                for agent in point.arms.iter().filter(|a| a.role == ArmRole::Agent) {
                    if let Some(vs_human) =
                        headline_diff(point, ComparisonKind::AgentVsHuman, &agent.arm)
                    {
                        complete.push(CompleteRow {
                            commit: commit.short.clone(),
                            model: commit.model.clone(),
                            point: point.point.clone(),
                            agent: agent.arm.clone(),
                            baseline: baseline
                                .and_then(|b| median_of(&point.arms[b], headline.key())),
                            human: human_value,
                            agent_value: median_of(agent, headline.key()).unwrap_or(f64::NAN),
                            human_vs_baseline: headline_diff(
                                point,
                                ComparisonKind::HumanVsBaseline,
                                &human_cell.arm,
                            )
                            .cloned(),
                            agent_vs_baseline: headline_diff(
                                point,
                                ComparisonKind::AgentVsBaseline,
                                &agent.arm,
                            )
                            .cloned(),
                            agent_vs_human: vs_human.clone(),
                            outputs_diverged: outputs_marked(
                                point,
                                ComparisonKind::AgentVsBaseline,
                                &agent.arm,
                            ) || outputs_marked(
                                point,
                                ComparisonKind::AgentVsHuman,
                                &agent.arm,
                            ),
                        });
                    } else if agent.status == CellStatus::Failed {
                        let f = first_failure(agent).expect("a failed cell has a failed trial");
                        agent_failures.push(AgentFailureRow {
                            commit: commit.short.clone(),
                            point: point.point.clone(),
                            agent: agent.arm.clone(),
                            human: human_value,
                            class: f.class,
                            cause: f.cause,
                            message: f.message.clone(),
                            sample_log_line: f.sample_log_line.clone(),
                        });
                    }
                }
            }
        }
    }
    CampaignSummary {
        headline_metric: headline.key().to_string(),
        trials,
        tallies,
        complete,
        agent_failures,
        failure_breakdown: categories,
        fdr: super::quality::fdr(commits, settings.confidence),
        planning: super::quality::planning(commits, settings.confidence),
        statements: super::curves::statements(commits),
    }
}

/// Wins / matches / losses / failures (and marked outputs) per comparison on the headline.
fn tallies(
    commits: &[CommitReport],
    arms: &[ArmEntry],
    pairs: &[(ComparisonKind, usize, usize)],
    settings: &Settings,
) -> Vec<Tally> {
    let mut tallies = Vec::new();
    for &(kind, cand, refr) in pairs {
        let mut tally = Tally {
            kind,
            candidate: arms[cand].name.clone(),
            reference: arms[refr].name.clone(),
            faster: 0,
            within_noise: 0,
            slower: 0,
            no_noise_estimate: 0,
            candidate_failed: 0,
            not_comparable: 0,
            seed: settings.threshold_pct.map(|_| SeedTally::default()),
            outputs_diverged: 0,
        };
        for point in commits.iter().flat_map(|c| &c.points) {
            let (c, r) = (&point.arms[cand], &point.arms[refr]);
            if outputs_marked(point, kind, &c.arm) {
                tally.outputs_diverged += 1;
            }
            let diff = headline_diff(point, kind, &c.arm);
            match diff {
                Some(d) => {
                    match d.verdict {
                        Verdict::Faster => tally.faster += 1,
                        Verdict::WithinNoise => tally.within_noise += 1,
                        Verdict::Slower => tally.slower += 1,
                        Verdict::NoNoiseEstimate => tally.no_noise_estimate += 1,
                    }
                    if let (Some(seed), Some(v)) = (tally.seed.as_mut(), d.seed_verdict) {
                        match v {
                            Verdict::Faster => seed.faster += 1,
                            Verdict::Slower => seed.slower += 1,
                            _ => seed.within_noise += 1,
                        }
                    }
                }
                None if r.status.has_data() && c.status == CellStatus::Failed => {
                    tally.candidate_failed += 1
                }
                None if c.status == CellStatus::NotRun && r.status == CellStatus::NotRun => {}
                None => tally.not_comparable += 1,
            }
        }
        tallies.push(tally);
    }
    tallies
}

fn add_failure(categories: &mut Vec<FailureCategory>, f: &Failure, commit: &str, arm: &str) {
    let category = match f.cause {
        Some(cause) => format!("{}/{}", f.class, cause.as_str()),
        None => f.class.to_string(),
    };
    let idx = match categories.iter().position(|c| c.category == category) {
        Some(i) => i,
        None => {
            categories.push(FailureCategory {
                category,
                class: f.class,
                cause: f.cause,
                count: 0,
                commits: Vec::new(),
                arms: Vec::new(),
                sample_log_line: None,
                sample_message: f.message.clone(),
            });
            categories.len() - 1
        }
    };
    let cat = &mut categories[idx];
    cat.count += 1;
    if !cat.commits.iter().any(|c| c == commit) {
        cat.commits.push(commit.to_string());
    }
    if !cat.arms.iter().any(|a| a == arm) {
        cat.arms.push(arm.to_string());
    }
    if cat.sample_log_line.is_none() {
        cat.sample_log_line = f.sample_log_line.clone();
    }
}

/// The headline difference of `candidate` in the comparison of `kind` at this point.
pub fn headline_diff<'a>(
    point: &'a PointReport,
    kind: ComparisonKind,
    candidate: &str,
) -> Option<&'a MetricDiff> {
    point
        .comparisons
        .iter()
        .find(|c| c.kind == kind && c.candidate == candidate)
        .and_then(|c| c.metrics.get(HEADLINE))
}

/// Whether the comparison of `kind` for `candidate` at this point has its verdict marked by
/// diverged outputs.
pub fn outputs_marked(point: &PointReport, kind: ComparisonKind, candidate: &str) -> bool {
    point
        .comparisons
        .iter()
        .any(|c| c.kind == kind && c.candidate == candidate && c.outputs.marks_verdict)
}

pub fn median_of(cell: &ArmCell, key: &str) -> Option<f64> {
    cell.metrics.get(key).map(|m| m.summary.median)
}

pub fn first_failure(cell: &ArmCell) -> Option<&Failure> {
    cell.trials.iter().find_map(|t| t.failure.as_ref())
}
