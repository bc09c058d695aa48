//! Statistics for few trials: percentiles, Student-t intervals on the log scale, comparisons of
//! two arms and the verdict rule. `docs/report.md` explains the choices; in short:
//!
//! * Benchmark noise is multiplicative (a slow machine makes every number a few percent worse),
//!   so values are compared on the log scale, and differences come out as ratios.
//! * With 3–5 trials a bootstrap has almost nothing to resample (3 trials give 10 distinct
//!   resamples) and its percentile intervals undercover badly; Student's t accounts for the
//!   uncertainty of a standard deviation estimated from so few values.
//! * Trials of one commit are interleaved (A B C, A B C, ...). Trial `i` of two arms ran in the
//!   same round, so the ratio per round cancels drift of the machine: the difference uses a
//!   paired t-interval on the per-round log ratios when at least two rounds pair up.
use serde::{Deserialize, Serialize};

/// Percentile with linear interpolation between closest ranks (numpy's default):
/// rank r = p/100·(n−1). `sorted` must be ascending; `None` when empty.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Percentile of unsorted values (see [`percentile_sorted`]).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    percentile_sorted(&sorted(values), p)
}

pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Sample standard deviation (n − 1 in the denominator); `None` below two values.
pub fn sample_sd(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values)?;
    let ss: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    Some((ss / (values.len() - 1) as f64).sqrt())
}

// ---------------------------------------------------------------------------------------------
// Student's t distribution (CDF through the regularised incomplete beta function).

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, relative error below 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + 7.5;
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised incomplete beta I_x(a, b) by Lentz's continued fraction.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        h *= d * c;
        let aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * h / a
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom (df may be fractional, as in Welch).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (0 < p < 1).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    assert!(
        p > 0.0 && p < 1.0 && df > 0.0,
        "t quantile needs 0 < p < 1 and df > 0"
    );
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    let mut hi = 1.0;
    while student_t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    // Bisection on the monotone CDF, to a relative precision far below what any report shows.
    while hi - lo > 1e-12 * hi {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Two-sided critical value for a `confidence` interval: t_{(1+c)/2, df}.
pub fn t_critical(confidence: f64, df: f64) -> f64 {
    student_t_quantile(0.5 + confidence / 2.0, df)
}

// ---------------------------------------------------------------------------------------------
// One arm: median over trials with an interval.

/// A metric of one arm over its trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// Median over trials (the headline number).
    pub median: f64,
    /// Interval for the arm's typical value; `None` with a single trial (no noise estimate).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Trials that contributed.
    pub n: usize,
    /// Coefficient of variation across trials (sample sd / mean), `None` below two trials.
    pub cv: Option<f64>,
}

/// Median of `values` with a t-interval on the log scale: exp(mean ln x ± t·s/√n).
/// Under log-symmetric noise the population median equals exp(E ln x), so this is an interval
/// for the median that, unlike order statistics, reaches its confidence level with 2–5 trials.
/// `values` must be finite (callers drop others); the interval needs them positive, so a
/// per-arm figure with a real 0 among its values (e.g. preemptions) gets its median only.
pub fn summarize(values: &[f64], confidence: f64) -> Option<Summary> {
    let median = median(values)?;
    let n = values.len();
    let (ci_low, ci_high) = if n >= 2 && values.iter().all(|v| *v > 0.0) {
        let logs: Vec<f64> = values.iter().map(|v| v.ln()).collect();
        let m = mean(&logs)?;
        let half = t_critical(confidence, (n - 1) as f64) * sample_sd(&logs)? / (n as f64).sqrt();
        (Some((m - half).exp()), Some((m + half).exp()))
    } else {
        (None, None)
    };
    let cv = sample_sd(values).zip(mean(values)).map(|(s, m)| s / m);
    Some(Summary {
        median,
        ci_low,
        ci_high,
        n,
        cv,
    })
}

// ---------------------------------------------------------------------------------------------
// Two arms: ratio with an interval, and the verdict.

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// How a difference was estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Paired t-interval on ln(candidate_i / reference_i) over rounds i measured in both arms.
    PairedLogT,
    /// Welch's t-interval on the difference of mean logs (trials did not pair up).
    WelchLogT,
    /// Ratio of the two medians; at least one arm has a single trial, so no interval.
    SingleTrial,
}

/// Candidate ÷ reference on the ratio scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// Point estimate: geometric mean of the per-round ratios (paired), ratio of geometric means
    /// (Welch), or ratio of medians (single trial). Always inside the interval.
    pub ratio: f64,
    pub ci: Option<(f64, f64)>,
    pub method: Method,
    pub n_reference: usize,
    pub n_candidate: usize,
    /// Rounds used by the paired method (0 otherwise).
    pub n_pairs: usize,
    pub df: Option<f64>,
}

/// Compares candidate with reference. Each side is (trial number, value) with positive values.
/// `paired`: use rounds measured in both arms when at least two pair up.
pub fn compare(
    reference: &[(u32, f64)],
    candidate: &[(u32, f64)],
    confidence: f64,
    paired: bool,
) -> Option<Ratio> {
    if reference.is_empty() || candidate.is_empty() {
        return None;
    }
    let (n_reference, n_candidate) = (reference.len(), candidate.len());
    let log_ratios: Vec<f64> = candidate
        .iter()
        .filter_map(|(trial, c)| {
            reference
                .iter()
                .find(|(t, _)| t == trial)
                .map(|(_, r)| (c / r).ln())
        })
        .collect();
    if paired && log_ratios.len() >= 2 {
        let n = log_ratios.len();
        let m = mean(&log_ratios)?;
        let df = (n - 1) as f64;
        let half = t_critical(confidence, df) * sample_sd(&log_ratios)? / (n as f64).sqrt();
        return Some(Ratio {
            ratio: m.exp(),
            ci: Some(((m - half).exp(), (m + half).exp())),
            method: Method::PairedLogT,
            n_reference,
            n_candidate,
            n_pairs: n,
            df: Some(df),
        });
    }
    if n_reference >= 2 && n_candidate >= 2 {
        let lr: Vec<f64> = reference.iter().map(|(_, v)| v.ln()).collect();
        let lc: Vec<f64> = candidate.iter().map(|(_, v)| v.ln()).collect();
        let (vr, vc) = (
            sample_sd(&lr)?.powi(2) / lr.len() as f64,
            sample_sd(&lc)?.powi(2) / lc.len() as f64,
        );
        let diff = mean(&lc)? - mean(&lr)?;
        let se2 = vr + vc;
        // Welch–Satterthwaite; with zero spread in both arms any df gives a zero-width interval.
        let df = if se2 > 0.0 {
            se2.powi(2) / (vr.powi(2) / (lr.len() - 1) as f64 + vc.powi(2) / (lc.len() - 1) as f64)
        } else {
            (lr.len() + lc.len() - 2) as f64
        };
        let half = t_critical(confidence, df) * se2.sqrt();
        return Some(Ratio {
            ratio: diff.exp(),
            ci: Some(((diff - half).exp(), (diff + half).exp())),
            method: Method::WelchLogT,
            n_reference,
            n_candidate,
            n_pairs: 0,
            df: Some(df),
        });
    }
    let med = |side: &[(u32, f64)]| median(&side.iter().map(|(_, v)| *v).collect::<Vec<_>>());
    Some(Ratio {
        ratio: med(candidate)? / med(reference)?,
        ci: None,
        method: Method::SingleTrial,
        n_reference,
        n_candidate,
        n_pairs: 0,
        df: None,
    })
}

/// Percent improvement of candidate over reference, positive = better for either direction:
/// higher-is-better: (ratio − 1)·100; lower-is-better: (1 − ratio)·100 (the seed's formula
/// `(baseline − optimized) / baseline · 100`).
pub fn improvement_pct(ratio: f64, better: Better) -> f64 {
    match better {
        Better::Higher => (ratio - 1.0) * 100.0,
        Better::Lower => (1.0 - ratio) * 100.0,
    }
}

/// The verdict of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval lies on the better side of zero.
    Faster,
    /// The whole interval lies on the worse side of zero.
    Slower,
    /// The interval contains zero.
    WithinNoise,
    /// An arm has one trial: the difference is shown, but there is no noise estimate to judge it.
    NoNoiseEstimate,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::WithinNoise => "within noise",
            Verdict::NoNoiseEstimate => "no noise estimate",
        }
    }

    /// From an improvement interval in percent (positive = better).
    pub fn from_interval(ci_pct: Option<(f64, f64)>) -> Verdict {
        match ci_pct {
            None => Verdict::NoNoiseEstimate,
            Some((lo, _)) if lo > 0.0 => Verdict::Faster,
            Some((_, hi)) if hi < 0.0 => Verdict::Slower,
            Some(_) => Verdict::WithinNoise,
        }
    }

    /// The seed's rule on the point estimate: at least `threshold_pct` better or worse.
    pub fn from_threshold(diff_pct: f64, threshold_pct: f64) -> Verdict {
        if diff_pct >= threshold_pct {
            Verdict::Faster
        } else if diff_pct <= -threshold_pct {
            Verdict::Slower
        } else {
            Verdict::WithinNoise
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile(..., method="linear") values, worked by hand from rank p/100·(n−1).
        assert!(close(
            percentile(&[1.0, 2.0, 3.0, 4.0], 99.0).unwrap(),
            3.97,
            1e-12
        )); // rank 2.97
        assert_eq!(
            percentile(&[15.0, 20.0, 35.0, 40.0, 50.0], 40.0),
            Some(29.0)
        ); // rank 1.6
        assert_eq!(
            percentile(&[50.0, 15.0, 40.0, 20.0, 35.0], 50.0),
            Some(35.0)
        ); // unsorted input
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 100.0), Some(2.0));
    }

    #[test]
    fn t_quantiles_match_tables() {
        // Two-sided 95 % critical values from standard t tables.
        for (df, t) in [
            (1.0, 12.706205),
            (2.0, 4.302653),
            (3.0, 3.182446),
            (4.0, 2.776445),
            (8.0, 2.306004),
            (30.0, 2.042272),
            (1e7, 1.959964),
        ] {
            let got = t_critical(0.95, df);
            assert!(close(got, t, 2e-6), "df {df}: {got} vs {t}");
        }
        assert!(close(t_critical(0.90, 4.0), 2.131847, 2e-6));
        assert!(close(t_critical(0.99, 2.0), 9.924843, 2e-5));
        // Fractional df (Welch) lies between its integer neighbours.
        let frac = t_critical(0.95, 4.5);
        assert!(frac < 2.776445 && frac > 2.570582, "{frac}");
        assert!(close(student_t_cdf(0.0, 3.0), 0.5, 1e-12));
        assert!(close(student_t_cdf(-4.302653, 2.0), 0.025, 1e-6));
    }

    #[test]
    fn summary_interval_by_hand() {
        // Logs are ln100 + {0, a, 2a} with a = ln 1.1: mean log = ln 110, sd of logs = a.
        // Interval: 110 · exp(±4.302653 · a / √3) = 110 · exp(±0.236764) = [86.8096, 139.3856].
        let s = summarize(&[100.0, 110.0, 121.0], 0.95).unwrap();
        assert_eq!(s.median, 110.0);
        assert_eq!(s.n, 3);
        assert!(close(s.ci_low.unwrap(), 86.8096, 1e-3), "{:?}", s.ci_low);
        assert!(close(s.ci_high.unwrap(), 139.3856, 1e-3), "{:?}", s.ci_high);
        // cv = sd / mean = 10.5040 / 110.3333
        assert!(close(s.cv.unwrap(), 0.095202, 1e-5), "{:?}", s.cv);
    }

    #[test]
    fn single_trial_has_no_interval() {
        let s = summarize(&[42.0], 0.95).unwrap();
        assert_eq!(
            (s.median, s.ci_low, s.ci_high, s.n, s.cv),
            (42.0, None, None, 1, None)
        );
        assert_eq!(summarize(&[], 0.95), None);
    }

    #[test]
    fn paired_ratio_by_hand() {
        // Per-round ratios 1.05, 1.06, 1.04 (drift moves both arms, not the ratio).
        let reference = [(1, 100.0), (2, 200.0), (3, 150.0)];
        let candidate = [(1, 105.0), (2, 212.0), (3, 156.0)];
        let r = compare(&reference, &candidate, 0.95, true).unwrap();
        assert_eq!(r.method, Method::PairedLogT);
        assert_eq!(r.n_pairs, 3);
        // logs: 0.0487902, 0.0582689, 0.0392207; mean 0.0487599 → ratio 1.049968;
        // sd 0.0095241, half-width 4.302653·sd/√3 = 0.0236593 → [1.025418, 1.075106].
        assert!(close(r.ratio, 1.049968, 1e-5), "{}", r.ratio);
        let (lo, hi) = r.ci.unwrap();
        assert!(
            close(lo, 1.025418, 1e-5) && close(hi, 1.075106, 1e-5),
            "{lo} {hi}"
        );
        let ci_pct = (
            improvement_pct(lo, Better::Higher),
            improvement_pct(hi, Better::Higher),
        );
        assert_eq!(Verdict::from_interval(Some(ci_pct)), Verdict::Faster);
        // For a latency the same ratio is worse: the interval flips to the negative side.
        let lat = (
            improvement_pct(hi, Better::Lower),
            improvement_pct(lo, Better::Lower),
        );
        assert_eq!(Verdict::from_interval(Some(lat)), Verdict::Slower);
    }

    #[test]
    fn welch_ratio_by_hand() {
        // Unpaired (trial numbers do not match): logs of ref ln{100,110}, cand ln{120,130}.
        let reference = [(1, 100.0), (2, 110.0)];
        let candidate = [(3, 120.0), (4, 130.0)];
        let r = compare(&reference, &candidate, 0.95, true).unwrap();
        assert_eq!(r.method, Method::WelchLogT);
        // diff = ½(ln120+ln130) − ½(ln100+ln110) = ½·ln(15600/11000) = 0.174688
        // var/n: ref (ln1.1)²/2/2 = 0.00227101, cand (ln(13/12))²/2/2 = 0.00160171; se = 0.0622312
        // Welch–Satterthwaite df = se⁴/(0.00227101² + 0.00160171²) = 1.94200
        assert!(close(r.ratio.ln(), 0.174688, 1e-5), "{}", r.ratio.ln());
        assert!(close(r.df.unwrap(), 1.94200, 1e-4), "{:?}", r.df);
        let (lo, hi) = r.ci.unwrap();
        let half = (hi.ln() - lo.ln()) / 2.0;
        assert!(close(half / 0.0622312, t_critical(0.95, 1.94200), 1e-4));
        assert!(
            lo < 1.0,
            "two trials each with this spread cannot exclude zero: {lo}"
        );
        // With pairing switched off, paired data are compared with Welch as well.
        let paired_data = compare(
            &[(1, 100.0), (2, 110.0)],
            &[(1, 120.0), (2, 130.0)],
            0.95,
            false,
        )
        .unwrap();
        assert_eq!(paired_data.method, Method::WelchLogT);
    }

    #[test]
    fn single_trial_comparison_has_no_verdict() {
        let r = compare(&[(1, 100.0)], &[(1, 120.0), (2, 118.0)], 0.95, true).unwrap();
        assert_eq!(r.method, Method::SingleTrial);
        assert!(close(r.ratio, 1.19, 1e-12));
        assert_eq!(r.ci, None);
        assert_eq!(Verdict::from_interval(None), Verdict::NoNoiseEstimate);
        assert!(compare(&[], &[(1, 1.0)], 0.95, true).is_none());
    }

    #[test]
    fn seed_threshold_rule() {
        assert_eq!(Verdict::from_threshold(5.0, 5.0), Verdict::Faster);
        assert_eq!(Verdict::from_threshold(4.99, 5.0), Verdict::WithinNoise);
        assert_eq!(Verdict::from_threshold(-5.0, 5.0), Verdict::Slower);
    }

    #[test]
    fn identical_values_are_within_noise() {
        let same = [(1, 10.0), (2, 10.0), (3, 10.0)];
        let r = compare(&same, &same, 0.95, true).unwrap();
        let ci = r.ci.unwrap();
        assert_eq!(ci, (1.0, 1.0));
        let pct = (
            improvement_pct(ci.0, Better::Higher),
            improvement_pct(ci.1, Better::Higher),
        );
        assert_eq!(Verdict::from_interval(Some(pct)), Verdict::WithinNoise);
    }

    proptest::proptest! {
        #[test]
        fn point_estimate_lies_in_interval(
            a in proptest::collection::vec(1.0f64..1e4, 1..6),
            b in proptest::collection::vec(1.0f64..1e4, 1..6),
            paired in proptest::bool::ANY,
        ) {
            let ra: Vec<(u32, f64)> = a.iter().enumerate().map(|(i, v)| (i as u32, *v)).collect();
            let rb: Vec<(u32, f64)> = b.iter().enumerate().map(|(i, v)| (i as u32, *v)).collect();
            let r = compare(&ra, &rb, 0.95, paired).unwrap();
            if let Some((lo, hi)) = r.ci {
                proptest::prop_assert!(lo <= r.ratio * (1.0 + 1e-12) && r.ratio <= hi * (1.0 + 1e-12));
            }
            let s = summarize(&a, 0.95).unwrap();
            if let (Some(lo), Some(hi)) = (s.ci_low, s.ci_high) {
                proptest::prop_assert!(lo <= hi);
            }
        }
    }
}
