//! Fair comparisons on real campaigns (real `isobench sim` processes, real HTTP, the real
//! scheduler): balanced GPU placement, the isolation policies' measurement windows, and the
//! report's placement and quality sections.

mod apply_support;
use apply_support::{OutputText, isobench};
use isobench::report::input::{ReportInput, TrialOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A campaign of `commits` commits × 2 arms (the same simulated server) × `trials` trials on
/// two declared GPUs under `isolate`.
fn write_campaign(dir: &Path, commits: usize, trials: u32, isolate: &str) -> std::path::PathBuf {
    let srv = dir.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    std::fs::write(
        srv.join("sim.toml"),
        "ttft_ms = 5.0\nitl_ms = 2.0\nspeed_noise_pct = 1.0\n",
    )
    .unwrap();
    let mut m = format!(
        r#"version = 1
name = "fair"
repeats = {trials}
[[arms]]
name = "baseline"
path = "srv"
[[arms]]
name = "human"
path = "srv"
[models.sim]
hf = "isobench/sim"
served_name = "sim"
[server]
runtime = "process"
command = "{{{{ isobench }}}} sim --config sim.toml --host 127.0.0.1 --port {{{{ port }}}} --model sim"
gpus = 1
ready = {{ path = "/health", timeout = "20s", interval = "20ms" }}
[load]
dataset = {{ input_len = 16, output_len = 16 }}
num_prompts = 24
concurrency = 4
warmup = 2
[resources]
gpus = [0, 1]
{isolate}
"#
    );
    for c in 0..commits {
        m.push_str(&format!(
            "[[commits]]\nhuman = \"{:040x}\"\nparent = \"{:040x}\"\nmodel = \"sim\"\n",
            0xabc0_0000u64 + c as u64,
            0xdef0_0000u64 + c as u64
        ));
    }
    let path = dir.join("m.toml");
    std::fs::write(&path, m).unwrap();
    path
}

fn apply_and_load(path: &Path, extra: &[&str]) -> ReportInput {
    let mut args = vec!["apply", "--plain", "--no-report"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let out = isobench(&args);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let campaign = isobench::manifest::load_file(path).unwrap();
    isobench::report::recorded::load_report_input(&campaign).unwrap()
}

/// (commit, arm) → GPUs used, with the number of trials on each.
fn gpus_per_arm(input: &ReportInput) -> BTreeMap<(String, String), BTreeMap<String, usize>> {
    let mut m: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for t in &input.trials {
        assert!(matches!(t.outcome, TrialOutcome::Ok(_)), "{t:?}");
        let info = t
            .measured
            .as_ref()
            .expect("every trial records where it ran");
        assert_eq!(info.gpus.len(), 1, "{info:?}");
        *m.entry((t.commit.clone(), t.arm.clone()))
            .or_default()
            .entry(info.gpus[0].clone())
            .or_default() += 1;
    }
    m
}

/// The regression guard of issue 14: a commit's arms must never sit each on a GPU of its own
/// (every baseline on GPU 0, every human on GPU 1), whatever the scheduler's timing.
#[test]
fn every_arm_of_every_commit_runs_on_both_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 2, 4, "isolate = \"none\"");
    let input = apply_and_load(&path, &[]);
    let usage = gpus_per_arm(&input);
    assert_eq!(usage.len(), 4, "{usage:?}");
    for ((commit, arm), gpus) in &usage {
        assert_eq!(
            gpus.keys().cloned().collect::<Vec<_>>(),
            vec!["gpu0".to_string(), "gpu1".to_string()],
            "{commit} {arm} ran only on {gpus:?}: arm and GPU confounded"
        );
        // 4 trials over 2 GPUs: exactly 2 each (a Latin square).
        assert!(gpus.values().all(|&n| n == 2), "{commit} {arm}: {gpus:?}");
    }
    // The report shows the placement and can estimate a GPU effect (the sim has none).
    let report = isobench::report::build(&input, &Default::default()).unwrap();
    assert_eq!(report.quality.trials.len(), 16);
    assert!(
        report.quality.arms.iter().all(|a| a.gpus.len() == 2),
        "{:?}",
        report.quality.arms
    );
    assert_eq!(report.quality.gpu_effects.len(), 2);
    assert!(
        !report
            .quality
            .warnings
            .iter()
            .any(|w| w.contains("confounded")),
        "{:?}",
        report.quality.warnings
    );
    let md = isobench::report::render(&report, isobench::report::Format::Markdown, false);
    assert!(md.contains("## Measurement quality"), "{md}");
    assert!(md.contains("Benjamini–Hochberg"), "{md}");
    assert!(md.contains("gpu0: 2, gpu1: 2"), "{md}");
}

fn windows(input: &ReportInput) -> Vec<(String, String, u32, f64, f64)> {
    input
        .trials
        .iter()
        .map(|t| {
            let w = t.measured.as_ref().unwrap();
            (
                t.commit.clone(),
                t.arm.clone(),
                t.trial,
                w.window_start,
                w.window_end,
            )
        })
        .collect()
}

#[test]
fn exclusive_never_overlaps_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 1, 3, "isolate = \"exclusive\"");
    let input = apply_and_load(&path, &[]);
    let mut w = windows(&input);
    assert_eq!(w.len(), 6);
    w.sort_by(|a, b| a.3.total_cmp(&b.3));
    for pair in w.windows(2) {
        assert!(
            pair[1].3 >= pair[0].4,
            "{:?} began before {:?} ended",
            pair[1],
            pair[0]
        );
    }
    assert!(
        input
            .trials
            .iter()
            .all(|t| t.measured.as_ref().unwrap().isolate.as_deref() == Some("exclusive"))
    );
}

#[test]
fn paired_measures_the_arms_of_a_round_together_and_rounds_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 1, 3, "");
    // The CLI flag overrides the manifest's (default) policy.
    let input = apply_and_load(&path, &["--isolate", "paired"]);
    let w = windows(&input);
    assert_eq!(w.len(), 6);
    let rounds: BTreeSet<u32> = w.iter().map(|x| x.2).collect();
    for round in &rounds {
        let mine: Vec<_> = w.iter().filter(|x| x.2 == *round).collect();
        assert_eq!(mine.len(), 2);
        // Released by one rendezvous: they start within a few milliseconds.
        assert!(
            (mine[0].3 - mine[1].3).abs() < 0.1,
            "round {round} started apart: {mine:?}"
        );
        for other in w.iter().filter(|x| x.2 != *round) {
            for m in &mine {
                assert!(
                    other.3 >= m.4 || other.4 <= m.3,
                    "round {round} {m:?} overlaps {other:?}"
                );
            }
        }
    }
}

#[test]
fn isolate_policy_is_validated_and_the_old_flag_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 1, 1, "isolate = \"sometimes\"");
    let out = isobench(&["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.text().contains("unknown isolation policy `sometimes`"),
        "{}",
        out.text()
    );
    let path = write_campaign(
        dir.path(),
        1,
        1,
        "isolate = \"paired\"\nisolate_measure = true",
    );
    let out = isobench(&["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.text().contains("contradicts"), "{}", out.text());
    let out = isobench(&["apply", "--isolate", "never", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(
        out.text().contains("unknown isolation policy"),
        "{}",
        out.text()
    );
    // `--isolate-measure` is `--isolate exclusive`.
    let path = write_campaign(dir.path(), 1, 2, "");
    let input = apply_and_load(&path, &["--isolate-measure"]);
    assert!(
        input
            .trials
            .iter()
            .all(|t| t.measured.as_ref().unwrap().isolate.as_deref() == Some("exclusive"))
    );
}

/// Regression: with more arms than GPUs, the members of a paired part are not adjacent in the
/// queue (who shares a part rotates); the scheduler once launched one member and then waited
/// for the queue's head, leaving the member waiting for its partner forever.
#[test]
fn paired_with_more_arms_than_gpus_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 1, 3, "isolate = \"paired\"");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[models.sim]",
        "[[arms]]\nname = \"agent\"\nrole = \"agent\"\npath = \"srv\"\n[models.sim]",
    );
    std::fs::write(&path, text).unwrap();
    let mut child =
        apply_support::spawn_isobench(&["apply", "--plain", "--no-report", path.to_str().unwrap()]);
    let status = apply_support::wait_child(&mut child, std::time::Duration::from_secs(120));
    if status.is_none() {
        let _ = child.kill();
        panic!("apply did not finish: a paired partner was left waiting");
    }
    assert_eq!(status.unwrap().code(), Some(0));
    let campaign = isobench::manifest::load_file(&path).unwrap();
    let input = isobench::report::recorded::load_report_input(&campaign).unwrap();
    assert_eq!(input.trials.len(), 9);
    // Every round has one pair measured together and one arm alone, and the lone arm rotates.
    let w = windows(&input);
    let mut alone = BTreeSet::new();
    for round in 1..=3 {
        let mine: Vec<_> = w.iter().filter(|x| x.2 == round).collect();
        for m in &mine {
            let partners = mine
                .iter()
                .filter(|o| o.1 != m.1 && (o.3 - m.3).abs() < 0.1)
                .count();
            if partners == 0 {
                alone.insert(m.1.clone());
            }
        }
    }
    assert_eq!(alone.len(), 3, "the lone arm did not rotate: {alone:?}");
}

/// `load.duration`: every trial measures a window of that length after its ramp-up, the
/// report judges it by that window, and the window is part of the measurements' keys.
#[test]
fn timed_windows_are_measured_recorded_and_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 1, 1, "isolate = \"exclusive\"");
    let text = std::fs::read_to_string(&path).unwrap();
    let timed = text.replace(
        "warmup = 2\n",
        "warmup = 2\nduration = \"1s\"\nramp_up = \"300ms\"\n",
    );
    std::fs::write(&path, &timed).unwrap();
    let input = apply_and_load(&path, &[]);
    assert_eq!(input.trials.len(), 2);
    for t in &input.trials {
        let info = t.measured.as_ref().unwrap();
        assert_eq!(info.measured_s, Some(1.0), "{info:?}");
        assert!(
            info.window_s() >= 1.3,
            "the run spans ramp-up + window: {info:?}"
        );
        assert!(
            info.prompts_reused.unwrap() > 0,
            "24 prompts cycled: {info:?}"
        );
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.result_path.as_ref().unwrap()).unwrap())
                .unwrap();
        assert_eq!(result["duration"], 1.0);
        let window = &result["isobench"]["window"];
        assert!(window["sent_in_window"].as_u64().unwrap() >= 10, "{window}");
        assert!(window["sent_in_ramp_up"].as_u64().unwrap() >= 3, "{window}");
        assert!(result["output_throughput"].as_f64().unwrap() > 100.0);
    }
    let report = isobench(&["report", "--format", "json", path.to_str().unwrap()]);
    assert_eq!(report.status.code(), Some(0), "{}", report.text());
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    for t in report["quality"]["trials"].as_array().unwrap() {
        assert_eq!(t["window_s"], 1.0, "{t}");
        assert!(t["flags"].to_string().contains("re-sent a prompt"), "{t}");
    }
    // Nothing to do until the window changes; then both measurements (and the comparison) run
    // again, in new server sessions, as after any load change.
    let plan = isobench(&["plan", path.to_str().unwrap()]);
    assert!(
        plan.text().contains("0 to run, 0 to rerun"),
        "{}",
        plan.text()
    );
    std::fs::write(
        &path,
        timed.replace("duration = \"1s\"", "duration = \"2s\""),
    )
    .unwrap();
    let plan = isobench(&["plan", path.to_str().unwrap()]);
    assert!(
        plan.text().contains("8 to run, 3 to rerun"),
        "{}",
        plan.text()
    );
    assert_eq!(
        plan.text().matches("load changed").count(),
        2,
        "{}",
        plan.text()
    );
}

/// A server that needs more GPUs than `apply` has is a `no_gpu` failure (not `internal`, which
/// means a bug), and the campaign still ends with a report of what failed.
#[test]
fn too_few_gpus_at_apply_time_is_a_no_gpu_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_campaign(dir.path(), 1, 1, "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("gpus = 1\n", "gpus = 2\n")).unwrap();
    let out = isobench(&[
        "apply",
        "--plain",
        "--no-report",
        "--gpus",
        "0",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.text()
            .contains("no_gpu: needs 2 GPUs per server; only 1 available"),
        "{}",
        out.text()
    );
    let journal = std::fs::read_to_string(dir.path().join(".isobench/journal.jsonl")).unwrap();
    let classes: BTreeSet<&str> = journal
        .lines()
        .filter_map(|l| l.split("\"class\":\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(classes, BTreeSet::from(["no_gpu"]), "{journal}");
}
