//! A small synthetic 3-way campaign shared by the report tests: every situation the report must
//! handle (clear wins, noise, single trials, crashes, absent arms, two load points, per-request
//! arrays) with values whose statistics are easy to check.
#![allow(dead_code)]
use isobench::failure::{CrashCause, Failure, FailureClass};
use isobench::manifest::types::ArmRole;
use isobench::report::{ArmInfo, CommitInfo, ReportInput, TrialMetrics, TrialOutcome, TrialRecord};
use std::path::{Path, PathBuf};

/// A fresh `target/test-artifacts/<name>/` (kept after the test for people and CI to look at).
pub fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Metrics of one trial: throughput `tput` tok/s, TTFT `ttft` ms, TPOT `tpot` ms, with
/// per-request arrays (8 requests, 4 output tokens each) consistent with the means.
pub fn metrics(tput: f64, ttft: f64, tpot: f64) -> TrialMetrics {
    let requests = 8;
    let out_len = 4u64;
    // Spread TTFT around its mean so distributions have width: ttft · (0.7 .. 1.3).
    let ttfts: Vec<f64> = (0..requests)
        .map(|i| ttft * (0.7 + 0.6 * i as f64 / (requests - 1) as f64) / 1e3)
        .collect();
    let itls: Vec<Vec<f64>> = (0..requests)
        .map(|_| vec![tpot / 1e3; (out_len - 1) as usize])
        .collect();
    TrialMetrics {
        duration: Some(10.0),
        completed: Some(requests as u64),
        failed: Some(0),
        total_input_tokens: Some(512 * requests as u64),
        total_output_tokens: Some(out_len * requests as u64),
        request_throughput: Some(tput / out_len as f64),
        output_throughput: Some(tput),
        total_token_throughput: Some(tput * 129.0),
        mean_ttft_ms: Some(ttft),
        median_ttft_ms: Some(ttft),
        p99_ttft_ms: Some(ttft * 1.29),
        mean_tpot_ms: Some(tpot),
        median_tpot_ms: Some(tpot),
        p99_tpot_ms: Some(tpot),
        mean_itl_ms: Some(tpot),
        median_itl_ms: Some(tpot),
        p99_itl_ms: Some(tpot),
        ttfts: Some(ttfts),
        itls: Some(itls),
        output_lens: Some(vec![out_len; requests]),
        input_lens: Some(vec![512; requests]),
        ..TrialMetrics::default()
    }
}

fn record(commit: &str, arm: &str, trial: u32, point: &str, outcome: TrialOutcome) -> TrialRecord {
    TrialRecord {
        commit: commit.into(),
        arm: arm.into(),
        trial,
        point: point.into(),
        outcome,
        timestamp: format!("2026-02-01T10:{:02}:00Z", trial * 10),
        duration_s: 60.0,
        result_path: Some(format!("attempts/measure-{commit}-{arm}-{trial}/1/result.json").into()),
        // The whole run (server start to stop) takes longer than its measure step.
        run_s: Some(90.0 + trial as f64),
        image: Some(format!("anonymous/vllm-baseline:{commit}")),
        node: None,
        measured: None,
    }
}

/// A measured trial with these metrics.
pub fn measured(commit: &str, arm: &str, trial: u32, point: &str, m: TrialMetrics) -> TrialRecord {
    record(commit, arm, trial, point, TrialOutcome::Ok(Box::new(m)))
}

/// A campaign of baseline and human arms over these commits (short hashes) and trials.
pub fn two_arms(commits: &[&str], trials: Vec<TrialRecord>) -> ReportInput {
    ReportInput {
        outputs: Default::default(),
        images: Vec::new(),
        slos: Default::default(),
        percentiles: Vec::new(),
        campaign: "two-arms".into(),
        generated_at: "2026-02-01T12:00:00Z".into(),
        confidence: 0.95,
        threshold_pct: None,
        commits: commits
            .iter()
            .map(|short| CommitInfo {
                short: short.to_string(),
                human_full: format!("{short}{}", "0".repeat(40 - short.len())),
                parent: "1".repeat(40),
                model_hf: "Qwen/Qwen3-1.7B".into(),
                subject: None,
            })
            .collect(),
        arms: [("baseline", ArmRole::Baseline), ("human", ArmRole::Human)]
            .iter()
            .map(|(n, r)| ArmInfo {
                name: n.to_string(),
                role: *r,
            })
            .collect(),
        trials,
    }
}

pub fn ok(
    commit: &str,
    arm: &str,
    trial: u32,
    point: &str,
    tput: f64,
    ttft: f64,
    tpot: f64,
) -> TrialRecord {
    record(
        commit,
        arm,
        trial,
        point,
        TrialOutcome::Ok(Box::new(metrics(tput, ttft, tpot))),
    )
}

pub fn oom(commit: &str, arm: &str, trial: u32, point: &str) -> TrialRecord {
    let failure = Failure {
        class: FailureClass::Crashed,
        cause: Some(CrashCause::CudaOutOfMemory),
        message: "server exited with status 1 during start-up".into(),
        sample_log_line: Some(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB".into(),
        ),
        log_path: Some("attempts/x/server.log".into()),
    };
    record(commit, arm, trial, point, TrialOutcome::Failed(failure))
}

pub fn missing_image(commit: &str, arm: &str, trial: u32, point: &str) -> TrialRecord {
    let failure = Failure::new(
        FailureClass::ImageMissing,
        "image anonymous/vllm-baseline:baseline-0032903a5bb7 not found",
    );
    record(commit, arm, trial, point, TrialOutcome::Failed(failure))
}

pub fn absent(commit: &str, arm: &str, trial: u32, point: &str) -> TrialRecord {
    record(
        commit,
        arm,
        trial,
        point,
        TrialOutcome::Absent {
            reason: "no patch file patches/codex/bbbbbbbb.diff".into(),
        },
    )
}

pub const C16: &str = "conc=16";

/// The fixture campaign:
/// * `aaaaaaaa`: 3 trials each. Human ≈ +8 % over baseline in every round (faster); claude-code
///   within ±1 % of human (within noise); codex ≈ −6 % vs human in every round (slower).
///   Rounds drift by ±10 % together, which pairing cancels.
/// * `bbbbbbbb`: claude-code crashes with CUDA OOM in all 3 trials; codex has no patch (absent).
/// * `cccccccc`: baseline image missing; human and claude-code have a single trial each.
/// * `dddddddd`: two load points, conc=1 and conc=16; 3 trials; claude-code trial 2 failed at
///   conc=16 (partial).
pub fn campaign() -> ReportInput {
    let arms = [
        ("baseline", ArmRole::Baseline),
        ("human", ArmRole::Human),
        ("claude-code", ArmRole::Agent),
        ("codex", ArmRole::Agent),
    ];
    let commit = |short: &str, model: &str, subject: Option<&str>| CommitInfo {
        short: short.into(),
        human_full: format!("{short}{}", "0".repeat(40 - short.len())),
        parent: format!("{}{}", &short[..1].repeat(12), "1".repeat(28)),
        model_hf: model.into(),
        subject: subject.map(str::to_string),
    };
    let mut trials = Vec::new();
    let drift = [1.0, 1.1, 0.92];
    for (i, d) in drift.iter().enumerate() {
        let t = i as u32 + 1;
        // Latencies move against throughput: a faster arm has proportionally lower latencies.
        let arm = |name: &str, factor: f64| {
            ok(
                "aaaaaaaa",
                name,
                t,
                C16,
                1000.0 * d * factor,
                50.0 / (d * factor),
                10.0 / (d * factor),
            )
        };
        trials.push(arm("baseline", 1.0));
        trials.push(arm("human", 1.08 * [1.0, 1.003, 0.998][i]));
        trials.push(arm("claude-code", 1.08 * [1.01, 0.99, 1.002][i]));
        trials.push(arm("codex", 1.08 * 0.94 * [1.0, 1.002, 0.999][i]));
    }
    for t in 1..=3 {
        trials.push(ok(
            "bbbbbbbb",
            "baseline",
            t,
            C16,
            2000.0 + t as f64,
            40.0,
            8.0,
        ));
        trials.push(ok(
            "bbbbbbbb",
            "human",
            t,
            C16,
            2100.0 + t as f64,
            39.0,
            7.8,
        ));
        trials.push(oom("bbbbbbbb", "claude-code", t, C16));
        trials.push(absent("bbbbbbbb", "codex", t, C16));
    }
    trials.push(missing_image("cccccccc", "baseline", 1, C16));
    trials.push(ok("cccccccc", "human", 1, C16, 500.0, 90.0, 20.0));
    trials.push(ok("cccccccc", "claude-code", 1, C16, 530.0, 88.0, 19.0));
    for point in ["conc=1", C16] {
        let scale = if point == C16 { 10.0 } else { 1.0 };
        for t in 1..=3 {
            // A shared round factor plus a few percent of noise of each arm's own.
            let i = t as usize - 1;
            let j = [1.0, 1.01, 0.99][i];
            trials.push(ok(
                "dddddddd",
                "baseline",
                t,
                point,
                300.0 * scale * j,
                30.0,
                9.0,
            ));
            trials.push(ok(
                "dddddddd",
                "human",
                t,
                point,
                303.0 * scale * j * [1.0, 0.98, 1.02][i],
                30.0,
                9.0,
            ));
            if point == C16 && t == 2 {
                trials.push(oom("dddddddd", "claude-code", t, point));
            } else {
                trials.push(ok(
                    "dddddddd",
                    "claude-code",
                    t,
                    point,
                    302.0 * scale * j * [1.02, 1.0, 0.98][i],
                    30.0,
                    9.0,
                ));
            }
        }
    }
    ReportInput {
        outputs: Default::default(),
        images: Vec::new(),
        slos: Default::default(),
        percentiles: Vec::new(),
        campaign: "fixture-3way".into(),
        generated_at: "2026-02-01T12:00:00Z".into(),
        confidence: 0.95,
        threshold_pct: Some(5.0),
        commits: vec![
            commit("aaaaaaaa", "Qwen/Qwen3-1.7B", Some("[Perf] Faster sampler")),
            commit(
                "bbbbbbbb",
                "meta-llama/Llama-3.1-8B-Instruct",
                Some("Reduce peak memory | use <empty>"),
            ),
            commit("cccccccc", "ibm-ai-platform/Bamba-9B", None),
            commit(
                "dddddddd",
                "Qwen/Qwen2.5-7B-Instruct",
                Some("Cache np arange"),
            ),
        ],
        arms: arms
            .iter()
            .map(|(n, r)| ArmInfo {
                name: n.to_string(),
                role: *r,
            })
            .collect(),
        trials,
    }
}
