//! Monte-Carlo validation of the verdict rule: how often it calls a difference where there is
//! none (A/A), and how often it finds a real one (power), on synthetic trials whose noise
//! resembles real servers. `tests/report_stats.rs` runs it and asserts the rates stated in
//! `docs/report.md`; [`verdict_rates`] computes the same rates from real reports (e.g. campaigns
//! against `isobench sim`).
//!
//! Noise model, on the log scale (multiplicative noise):
//! `value = base · (1 + true_diff if candidate) · exp(drift_round + noise_trial [+ outlier])`
//! * `drift_round ~ N(0, drift_sd)` is shared by every arm in one interleaved round (the
//!   machine got slower or faster between rounds: thermals, neighbours, clocks);
//! * `noise_trial ~ N(0, noise_sd)` is independent per trial (server start, scheduling);
//! * with probability `outlier_prob` a trial is additionally `outlier_factor` times slower
//!   (a heavy tail: a noisy neighbour, a page-cache miss).
use super::analysis::metric_diff;
use super::metric::{HEADLINE, metric};
use super::model::{ComparisonKind, Report, Settings, TrialValue};
use super::stats::Verdict;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    pub drift_sd: f64,
    pub noise_sd: f64,
    pub outlier_prob: f64,
    pub outlier_factor: f64,
}

impl Noise {
    pub const fn new(drift_sd: f64, noise_sd: f64) -> Noise {
        Noise {
            drift_sd,
            noise_sd,
            outlier_prob: 0.0,
            outlier_factor: 1.0,
        }
    }

    pub const fn with_outliers(self, prob: f64, factor: f64) -> Noise {
        Noise {
            outlier_prob: prob,
            outlier_factor: factor,
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    pub noise: Noise,
    /// Trials per arm (rounds).
    pub trials: u32,
    /// True throughput difference of the candidate, percent (0 for A/A).
    pub true_diff_pct: f64,
    pub settings: Settings,
}

/// Verdict counts over many comparisons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub comparisons: usize,
    pub faster: usize,
    pub slower: usize,
    pub within_noise: usize,
    pub no_noise_estimate: usize,
    /// The seed's rule on the same comparisons (when a threshold is set).
    pub seed_faster: usize,
    pub seed_slower: usize,
}

impl Rates {
    fn add(&mut self, verdict: Verdict, seed: Option<Verdict>) {
        self.comparisons += 1;
        match verdict {
            Verdict::Faster => self.faster += 1,
            Verdict::Slower => self.slower += 1,
            Verdict::WithinNoise => self.within_noise += 1,
            Verdict::NoNoiseEstimate => self.no_noise_estimate += 1,
        }
        match seed {
            Some(Verdict::Faster) => self.seed_faster += 1,
            Some(Verdict::Slower) => self.seed_slower += 1,
            _ => {}
        }
    }

    fn frac(&self, n: usize) -> f64 {
        if self.comparisons == 0 {
            f64::NAN
        } else {
            n as f64 / self.comparisons as f64
        }
    }

    /// Share of comparisons called `faster` or `slower` (the false-verdict rate under A/A).
    pub fn decided(&self) -> f64 {
        self.frac(self.faster + self.slower)
    }

    /// Share called `faster` (the power when the candidate is truly faster).
    pub fn faster_rate(&self) -> f64 {
        self.frac(self.faster)
    }

    pub fn slower_rate(&self) -> f64 {
        self.frac(self.slower)
    }

    /// The seed rule's share of wins or losses.
    pub fn seed_decided(&self) -> f64 {
        self.frac(self.seed_faster + self.seed_slower)
    }

    pub fn seed_faster_rate(&self) -> f64 {
        self.frac(self.seed_faster)
    }

    /// Monte-Carlo standard error of a rate `p` estimated from these comparisons.
    pub fn standard_error(&self, p: f64) -> f64 {
        (p * (1.0 - p) / self.comparisons.max(1) as f64).sqrt()
    }
}

/// Synthetic headline values of one comparison: (reference, candidate) per round.
pub fn synthetic_trials(
    scenario: &Scenario,
    rng: &mut StdRng,
) -> (Vec<TrialValue>, Vec<TrialValue>) {
    let normal =
        |sd: f64| Normal::new(0.0, sd).expect("a standard deviation is finite and non-negative");
    let (drift, noise) = (
        normal(scenario.noise.drift_sd),
        normal(scenario.noise.noise_sd),
    );
    let base = 1000.0;
    let n = scenario.noise;
    let trial_noise = |rng: &mut StdRng| {
        let outlier = if rand::Rng::random::<f64>(rng) < n.outlier_prob {
            n.outlier_factor.ln()
        } else {
            0.0
        };
        noise.sample(rng) + outlier
    };
    let (mut reference, mut candidate) = (Vec::new(), Vec::new());
    for trial in 1..=scenario.trials {
        let shared = drift.sample(rng);
        reference.push(TrialValue {
            trial,
            value: base * (shared + trial_noise(rng)).exp(),
        });
        let scaled = base * (1.0 + scenario.true_diff_pct / 100.0);
        candidate.push(TrialValue {
            trial,
            value: scaled * (shared + trial_noise(rng)).exp(),
        });
    }
    (reference, candidate)
}

/// Runs `reps` comparisons of the scenario through the report's own verdict code.
pub fn simulate(scenario: &Scenario, reps: usize, seed: u64) -> Rates {
    let def = metric(HEADLINE).expect("headline metric is in the catalog");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rates = Rates::default();
    for _ in 0..reps {
        let (reference, candidate) = synthetic_trials(scenario, &mut rng);
        let d = metric_diff(def, &reference, &candidate, &scenario.settings)
            .expect("both arms have trials");
        rates.add(d.verdict, d.seed_verdict);
    }
    rates
}

/// The same rates from finished reports: every comparison of `kind` on the headline metric.
pub fn verdict_rates(reports: &[Report], kind: ComparisonKind) -> Rates {
    let mut rates = Rates::default();
    for point in reports
        .iter()
        .flat_map(|r| &r.commits)
        .flat_map(|c| &c.points)
    {
        for c in point.comparisons.iter().filter(|c| c.kind == kind) {
            if let Some(d) = c.metrics.get(HEADLINE) {
                rates.add(d.verdict, d.seed_verdict);
            }
        }
    }
    rates
}

/// A campaign of `commits` synthetic commits with a baseline and a human arm whose headline
/// values follow the scenario (the human arm carries the true difference), for running the
/// whole report path (`analyze`) on simulated data.
pub fn synthetic_campaign(scenario: &Scenario, commits: usize, seed: u64) -> super::ReportInput {
    use super::input::{ArmInfo, CommitInfo, ReportInput, TrialMetrics, TrialOutcome, TrialRecord};
    use crate::manifest::types::ArmRole;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut trials = Vec::new();
    let mut infos = Vec::new();
    for i in 0..commits {
        let short = format!("{i:08x}");
        let (reference, candidate) = synthetic_trials(scenario, &mut rng);
        for (arm, values) in [("baseline", reference), ("human", candidate)] {
            for v in values {
                trials.push(TrialRecord {
                    commit: short.clone(),
                    arm: arm.into(),
                    trial: v.trial,
                    point: "conc=16".into(),
                    outcome: TrialOutcome::Ok(Box::new(TrialMetrics {
                        output_throughput: Some(v.value),
                        ..TrialMetrics::default()
                    })),
                    timestamp: String::new(),
                    duration_s: 0.0,
                    result_path: None,
                    run_s: None,
                    image: None,
                    node: None,
                    measured: None,
                });
            }
        }
        infos.push(CommitInfo {
            short: short.clone(),
            human_full: short.clone(),
            parent: short,
            model_hf: "synthetic".into(),
            subject: None,
        });
    }
    ReportInput {
        outputs: Default::default(),
        images: Vec::new(),
        slos: Default::default(),
        percentiles: Vec::new(),
        campaign: scenario.name.into(),
        generated_at: String::new(),
        confidence: scenario.settings.confidence,
        threshold_pct: scenario.settings.threshold_pct,
        commits: infos,
        arms: vec![
            ArmInfo {
                name: "baseline".into(),
                role: ArmRole::Baseline,
            },
            ArmInfo {
                name: "human".into(),
                role: ArmRole::Human,
            },
        ],
        trials,
    }
}
