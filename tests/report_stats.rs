//! Monte-Carlo validation of the verdict rule (see `docs/report.md`, "How often is a verdict
//! wrong?"): the false-verdict rate when arms are identical (A/A) and the power to call a true
//! 5 % throughput gain `faster`, on synthetic trials with server-like noise. The figures are
//! printed (`cargo test --test report_stats -- --nocapture`) and kept in
//! `target/test-artifacts/report_stats/rates.md`.
mod report_common;

use isobench::report::analysis::analyze;
use isobench::report::model::{ComparisonKind, Settings};
use isobench::report::montecarlo::{
    Noise, Rates, Scenario, simulate, synthetic_campaign, verdict_rates,
};
use std::fmt::Write;

const REPS: usize = 4000;
const CONFIDENCE: f64 = 0.95;
const ALPHA: f64 = 1.0 - CONFIDENCE;

fn settings(paired: bool, threshold_pct: Option<f64>) -> Settings {
    Settings {
        confidence: CONFIDENCE,
        threshold_pct,
        paired,
    }
}

/// ±10 % drift shared by the arms of a round (interleaved trials), plus independent noise.
const DRIFT: f64 = 0.10;

fn scenario(
    name: &'static str,
    noise: Noise,
    trials: u32,
    true_diff_pct: f64,
    paired: bool,
) -> Scenario {
    Scenario {
        name,
        noise,
        trials,
        true_diff_pct,
        settings: settings(paired, Some(5.0)),
    }
}

fn row(table: &mut String, s: &Scenario, r: &Rates) {
    let _ = writeln!(
        table,
        "| {} | {} | {:.1} % | {:.1} % | {} | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
        s.name,
        s.trials,
        s.noise.drift_sd * 100.0,
        s.noise.noise_sd * 100.0,
        if s.settings.paired { "paired" } else { "Welch" },
        s.true_diff_pct,
        r.faster_rate() * 100.0,
        r.slower_rate() * 100.0,
        r.decided() * 100.0,
        r.seed_decided() * 100.0,
    );
}

#[test]
fn false_verdict_rate_and_power() {
    let mut table = String::from(
        "| scenario | trials | shared drift sd | own noise sd | method | true diff % | faster | slower | faster+slower | seed rule ±5 % decided |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let se_alpha = (ALPHA * (1.0 - ALPHA) / REPS as f64).sqrt();
    // Stated in docs/report.md: at most 1 − confidence (5 %) false verdicts, for any noise level.
    let a_a = [
        (
            scenario("A/A interleaved", Noise::new(DRIFT, 0.02), 5, 0.0, true),
            true,
        ),
        (
            scenario(
                "A/A interleaved, 3 trials",
                Noise::new(DRIFT, 0.02),
                3,
                0.0,
                true,
            ),
            true,
        ),
        (
            scenario("A/A ±5 % own noise", Noise::new(0.0, 0.05), 5, 0.0, true),
            true,
        ),
        (
            scenario("A/A ±20 % own noise", Noise::new(0.0, 0.20), 5, 0.0, true),
            true,
        ),
        (
            scenario(
                "A/A heavy tail (10 % of trials 20 % slow)",
                Noise::new(DRIFT, 0.02).with_outliers(0.10, 0.8),
                5,
                0.0,
                true,
            ),
            false,
        ),
        (
            scenario(
                "A/A interleaved, unpaired",
                Noise::new(DRIFT, 0.02),
                5,
                0.0,
                false,
            ),
            false,
        ),
    ];
    for (i, (s, exact)) in a_a.iter().enumerate() {
        let r = simulate(s, REPS, 100 + i as u64);
        row(&mut table, s, &r);
        assert!(
            r.decided() <= ALPHA + 3.0 * se_alpha,
            "{}: false-verdict rate {:.4} above {ALPHA}",
            s.name,
            r.decided()
        );
        if *exact {
            // With log-normal noise the t-interval is exact: a rate far below 5 % would mean
            // intervals that are too wide (a bug that hides real differences).
            assert!(
                r.decided() >= ALPHA - 3.0 * se_alpha,
                "{}: false-verdict rate {:.4} far below {ALPHA}",
                s.name,
                r.decided()
            );
            // Errors are symmetric.
            // faster and slower are each about Binomial(REPS, α/2); their difference has sd √(α/REPS).
            assert!(
                (r.faster_rate() - r.slower_rate()).abs() <= 4.0 * (ALPHA / REPS as f64).sqrt(),
                "{}: {r:?}",
                s.name
            );
        }
    }

    // Power for a true +5 % throughput gain at 5 trials; bounds are the stated figures minus
    // three Monte-Carlo standard errors (and plus, for the honest low-power case).
    let power = [
        (
            scenario(
                "+5 % interleaved, 1.5 % own noise",
                Noise::new(DRIFT, 0.015),
                5,
                5.0,
                true,
            ),
            0.93,
            1.0,
        ),
        (
            scenario(
                "+5 % interleaved, 2 % own noise",
                Noise::new(DRIFT, 0.02),
                5,
                5.0,
                true,
            ),
            0.78,
            0.87,
        ),
        (
            scenario(
                "+5 % interleaved, 2 % own noise, 3 trials",
                Noise::new(DRIFT, 0.02),
                3,
                5.0,
                true,
            ),
            0.34,
            0.44,
        ),
        (
            scenario("+5 % ±5 % own noise", Noise::new(0.0, 0.05), 5, 5.0, true),
            0.18,
            0.26,
        ),
        (
            scenario(
                "+5 % interleaved, 2 % own noise, unpaired",
                Noise::new(DRIFT, 0.02),
                5,
                5.0,
                false,
            ),
            0.0,
            0.12,
        ),
    ];
    for (i, (s, lo, hi)) in power.iter().enumerate() {
        let r = simulate(s, REPS, 200 + i as u64);
        row(&mut table, s, &r);
        assert!(
            r.faster_rate() >= *lo && r.faster_rate() <= *hi,
            "{}: power {:.4} outside [{lo}, {hi}]",
            s.name,
            r.faster_rate()
        );
        assert!(
            r.slower_rate() <= 0.005,
            "{}: a true gain called slower {:.4}",
            s.name,
            r.slower_rate()
        );
    }

    // The seed's practice: one run per arm, runs days apart (no shared drift: all noise is the
    // run's own), ±5 % rule. Most identical pairs are called a win or a loss.
    let seed = Scenario {
        name: "A/A single runs, seed rule ±5 %",
        noise: Noise::new(0.0, 0.10),
        trials: 1,
        true_diff_pct: 0.0,
        settings: settings(true, Some(5.0)),
    };
    let r = simulate(&seed, REPS, 300);
    row(&mut table, &seed, &r);
    assert_eq!(
        r.no_noise_estimate, r.comparisons,
        "a single trial gets no interval verdict"
    );
    assert!(
        r.seed_decided() > 0.5,
        "seed rule decided {:.3}",
        r.seed_decided()
    );

    println!("{table}");
    std::fs::write(
        report_common::artifacts("report_stats").join("rates.md"),
        &table,
    )
    .unwrap();
}

#[test]
fn whole_report_path_gives_the_same_rates() {
    // The same rule through `analyze` on whole synthetic campaigns (300 commits each), read back
    // with `verdict_rates` — the function the lead runs on real `isobench sim` campaigns.
    let n = 300;
    let aa = scenario("A/A interleaved", Noise::new(DRIFT, 0.02), 5, 0.0, true);
    let report = analyze(&synthetic_campaign(&aa, n, 7), &aa.settings);
    let same = verdict_rates(
        std::slice::from_ref(&report),
        ComparisonKind::HumanVsBaseline,
    );
    assert_eq!(same.comparisons, n);
    let se = (ALPHA * (1.0 - ALPHA) / n as f64).sqrt();
    assert!(
        same.decided() <= ALPHA + 3.0 * se,
        "A/A through the report: {:.3}",
        same.decided()
    );

    let gain = scenario(
        "+5 % interleaved, 1.5 % own noise",
        Noise::new(DRIFT, 0.015),
        5,
        5.0,
        true,
    );
    let report = analyze(&synthetic_campaign(&gain, n, 8), &gain.settings);
    let r = verdict_rates(
        std::slice::from_ref(&report),
        ComparisonKind::HumanVsBaseline,
    );
    assert!(
        r.faster_rate() >= 0.90,
        "power through the report: {:.3}",
        r.faster_rate()
    );
    println!(
        "through analyze(), {n} commits: A/A decided {:.1} %, +5 % power {:.1} %",
        100.0 * same.decided(),
        100.0 * r.faster_rate()
    );
}
