//! Statistics you can defend, on real measurements: campaigns of `isobench sim` servers (real
//! processes, real HTTP, the real scheduler interleaving trials) with controlled noise.
//!
//! - A/A: commits whose two arms run identical servers. The fraction of `faster`/`slower`
//!   verdicts must not exceed the stated 5 % error rate (one-sided binomial test at 1 %).
//! - Power: commits whose human arm is truly 5 % faster (tokens 5 % closer together) must be
//!   called `faster` in the large majority (≥ 80 %) at 5 trials.
//!
//! Each sim process draws its own speed factor (1 % sd), like separate server starts do.

mod apply_support;
use apply_support::{OutputText, isobench};
use isobench::report::model::ComparisonKind;
use isobench::report::montecarlo::verdict_rates;

const AA_COMMITS: usize = 24;
const POWER_COMMITS: usize = 16;
const TRIALS: u32 = 5;

/// P(X ≥ k) for X ~ Binomial(n, p).
fn binomial_tail(n: usize, k: usize, p: f64) -> f64 {
    let ln_choose = |n: usize, k: usize| -> f64 {
        (1..=k)
            .map(|i| ((n - k + i) as f64).ln() - (i as f64).ln())
            .sum()
    };
    (k..=n)
        .map(|i| (ln_choose(n, i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp())
        .sum()
}

#[test]
fn binomial_tail_is_right() {
    assert!((binomial_tail(10, 0, 0.3) - 1.0).abs() < 1e-12);
    assert!((binomial_tail(2, 1, 0.5) - 0.75).abs() < 1e-12);
    assert!((binomial_tail(40, 6, 0.05) - 0.013877).abs() < 1e-5);
}

#[test]
fn false_verdict_rate_and_power_on_sim_campaigns() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = format!(
        r#"version = 1
name = "sim-stats"
repeats = {TRIALS}
[[arms]]
name = "baseline"
path = "srv/{{{{ commit.short }}}}/baseline"
[[arms]]
name = "human"
path = "srv/{{{{ commit.short }}}}/human"
[models.sim]
hf = "isobench/sim"
served_name = "sim"
[server]
runtime = "process"
command = "{{{{ isobench }}}} sim --config sim.toml --host 127.0.0.1 --port {{{{ port }}}} --model sim"
gpus = 1
ready = {{ path = "/health", timeout = "20s", interval = "20ms" }}
[load]
dataset = {{ input_len = 16, output_len = 32 }}
num_prompts = 16
concurrency = 4
warmup = 2
[resources]
gpus = [0, 1]
"#
    );
    for c in 0..AA_COMMITS + POWER_COMMITS {
        let short = format!("{:08x}", 0x1000_0000 + c);
        m.push_str(&format!(
            "[[commits]]\nhuman = \"{short}{:032x}\"\nparent = \"{:040x}\"\nmodel = \"sim\"\n",
            c,
            0xf000 + c
        ));
        let faster = c >= AA_COMMITS;
        for arm in ["baseline", "human"] {
            let d = dir.path().join("srv").join(&short).join(arm);
            std::fs::create_dir_all(&d).unwrap();
            let itl = if faster && arm == "human" {
                4.0 / 1.05
            } else {
                4.0
            };
            std::fs::write(
                d.join("sim.toml"),
                format!("ttft_ms = 10.0\nitl_ms = {itl}\nspeed_noise_pct = 1.0\n"),
            )
            .unwrap();
        }
    }
    let path = dir.path().join("m.toml");
    std::fs::write(&path, m).unwrap();
    let out = isobench(&["apply", "--plain", "--no-report", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());

    let campaign = isobench::manifest::load_file(&path).unwrap();
    let mut input = isobench::report::recorded::load_report_input(&campaign).unwrap();
    let all = input.clone();
    input
        .trials
        .retain(|t| u32::from_str_radix(&t.commit, 16).unwrap() < 0x1000_0000 + AA_COMMITS as u32);
    input
        .commits
        .retain(|c| u32::from_str_radix(&c.short, 16).unwrap() < 0x1000_0000 + AA_COMMITS as u32);
    let aa = isobench::report::build(&input, &Default::default()).unwrap();
    let mut power_input = all;
    power_input
        .trials
        .retain(|t| u32::from_str_radix(&t.commit, 16).unwrap() >= 0x1000_0000 + AA_COMMITS as u32);
    power_input
        .commits
        .retain(|c| u32::from_str_radix(&c.short, 16).unwrap() >= 0x1000_0000 + AA_COMMITS as u32);
    let power = isobench::report::build(&power_input, &Default::default()).unwrap();

    let a = verdict_rates(std::slice::from_ref(&aa), ComparisonKind::HumanVsBaseline);
    let p = verdict_rates(
        std::slice::from_ref(&power),
        ComparisonKind::HumanVsBaseline,
    );
    let false_verdicts = a.faster + a.slower;
    println!(
        "A/A: {} comparisons, {} faster, {} slower ({:.1} % false verdicts)",
        a.comparisons,
        a.faster,
        a.slower,
        100.0 * false_verdicts as f64 / a.comparisons as f64
    );
    println!(
        "true +5 %: {} comparisons, {} faster ({:.1} % power), {} within noise, {} slower",
        p.comparisons,
        p.faster,
        100.0 * p.faster as f64 / p.comparisons as f64,
        p.within_noise,
        p.slower
    );
    assert_eq!(a.comparisons, AA_COMMITS);
    assert_eq!(p.comparisons, POWER_COMMITS);
    // The observed false-verdict count must be consistent with a rate of at most 5 %.
    let tail = binomial_tail(a.comparisons, false_verdicts, 0.05);
    assert!(
        tail >= 0.01,
        "{false_verdicts}/{} false verdicts: P(≥ that | 5 %) = {tail:.4}",
        a.comparisons
    );
    assert_eq!(p.slower, 0, "a true improvement was called slower");
    assert!(
        p.faster as f64 >= 0.8 * p.comparisons as f64,
        "power {}/{}",
        p.faster,
        p.comparisons
    );
}
