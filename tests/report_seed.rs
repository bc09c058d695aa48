//! Seed-compatible per-run files: the layout, the fields, and a Python snippet in the style of
//! the seed's analysis scripts (json.load, compare human and agent throughput) run on them.
mod report_common;

use isobench::report::seed::{seed_files, write_seed_files};
use isobench::report::{self, ReportOptions};
use std::path::Path;
use std::process::Command;

fn read(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn files_in_the_seed_layout_with_the_seed_fields() {
    let input = report_common::campaign();
    let r = report::build(&input, &ReportOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = write_seed_files(dir.path(), &seed_files(&r, &input, None)).unwrap();
    let mut names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agent_benchmark_results/aaaaaaaa_agent_result.json",
            "agent_benchmark_results/aaaaaaaa_claude-code_result.json",
            "agent_benchmark_results/aaaaaaaa_codex_result.json",
            "agent_benchmark_results/aaaaaaaa_human_result.json",
            "agent_benchmark_results/bbbbbbbb_agent_result.json",
            "agent_benchmark_results/bbbbbbbb_claude-code_result.json",
            "agent_benchmark_results/bbbbbbbb_human_result.json",
            "agent_benchmark_results/cccccccc_agent_result.json",
            "agent_benchmark_results/cccccccc_claude-code_result.json",
            "agent_benchmark_results/cccccccc_human_result.json",
            "agent_benchmark_results/dddddddd_agent_result.json",
            "agent_benchmark_results/dddddddd_claude-code_result.json",
            "agent_benchmark_results/dddddddd_human_result.json",
            "baseline_benchmark_results/aaaaaaaa_baseline_result.json",
            "baseline_benchmark_results/bbbbbbbb_baseline_result.json",
            "baseline_benchmark_results/cccccccc_baseline_result.json",
            "baseline_benchmark_results/dddddddd_baseline_result.json",
        ],
        "codex is absent for bbbbbbbb and not run for cccccccc/dddddddd: no file, as in the seed"
    );

    let human = read(
        &dir.path()
            .join("agent_benchmark_results/aaaaaaaa_human_result.json"),
    );
    assert_eq!(human["human_commit"], "aaaaaaaa");
    assert_eq!(
        human["human_commit_full"],
        "aaaaaaaa00000000000000000000000000000000"
    );
    assert_eq!(
        human["parent_commit"],
        "aaaaaaaaaaaa1111111111111111111111111111"
    );
    assert_eq!(human["model"], "Qwen/Qwen3-1.7B");
    assert_eq!(human["status"], "success");
    assert_eq!(human["error"], serde_json::Value::Null);
    assert_eq!(human["metrics"]["throughput_tok_s"], 1080.0);
    assert_eq!(human["metrics"]["output_token_throughput_tok_s"], 1080.0);
    // Median TTFT over trials 46.296, 41.962, 50.423 → 46.30 with the seed's two decimals.
    assert_eq!(human["metrics"]["mean_ttft_ms"], 46.3);
    assert_eq!(human["metrics"]["mean_tpot_ms"], 9.26);
    assert_eq!(human["metrics"]["successful_requests"], 8.0);
    assert_eq!(human["duration_s"], 180.0);
    assert_eq!(human["timestamp"], "2026-02-01T10:30:00Z");
    assert_eq!(human["isobench"]["trials_ok"], 3);

    // The first agent arm is also the seed's "agent" file; the codex file is its own.
    let agent = read(
        &dir.path()
            .join("agent_benchmark_results/aaaaaaaa_agent_result.json"),
    );
    assert_eq!(
        agent,
        read(
            &dir.path()
                .join("agent_benchmark_results/aaaaaaaa_claude-code_result.json")
        )
    );
    assert_eq!(agent["isobench"]["arm"], "claude-code");
    assert_eq!(
        read(
            &dir.path()
                .join("agent_benchmark_results/aaaaaaaa_codex_result.json")
        )["isobench"]["arm"],
        "codex"
    );

    let crashed = read(
        &dir.path()
            .join("agent_benchmark_results/bbbbbbbb_agent_result.json"),
    );
    assert_eq!(crashed["status"], "error");
    assert_eq!(
        crashed["error"],
        "crashed (cuda_out_of_memory): server exited with status 1 during start-up"
    );
    assert_eq!(
        crashed["metrics"]["throughput_tok_s"],
        serde_json::Value::Null
    );
    assert_eq!(
        crashed["isobench"]["failure"]["cause"],
        "cuda_out_of_memory"
    );

    // Another load point on request.
    let conc1 = seed_files(&r, &input, Some("conc=1"));
    assert_eq!(
        conc1
            .iter()
            .filter(|f| f.json["isobench"]["point"] == "conc=1")
            .count(),
        conc1.len()
    );
    assert_eq!(
        conc1.len(),
        4,
        "only dddddddd has conc=1: baseline, human, agent, claude-code"
    );
}

/// In the style of the seed's analysis scripts: load the per-run JSONs with `json.load`, skip
/// failures, compare agent with human throughput.
const SEED_SNIPPET: &str = r#"
import json, os, sys
root = sys.argv[1]
agent_dir = os.path.join(root, "agent_benchmark_results")
base_dir = os.path.join(root, "baseline_benchmark_results")
for name in sorted(os.listdir(agent_dir)):
    if not name.endswith("_human_result.json"):
        continue
    commit = name.split("_")[0]
    with open(os.path.join(agent_dir, name)) as f:
        human = json.load(f)
    agent_path = os.path.join(agent_dir, f"{commit}_agent_result.json")
    if not os.path.exists(agent_path):
        print(f"{commit} no-agent")
        continue
    with open(agent_path) as f:
        agent = json.load(f)
    base_path = os.path.join(base_dir, f"{commit}_baseline_result.json")
    base = json.load(open(base_path)) if os.path.exists(base_path) else None
    if human["status"] != "success" or agent["status"] != "success":
        print(f"{commit} {human['human_commit_full'][:8]} failed {agent['error'] if agent['status'] != 'success' else human['error']}")
        continue
    h = human["metrics"]["throughput_tok_s"]
    a = agent["metrics"]["throughput_tok_s"]
    b = base["metrics"]["throughput_tok_s"] if base and base["status"] == "success" else None
    diff = (a - h) / h * 100
    verdict = "win" if diff >= 5 else "loss" if diff <= -5 else "match"
    print(f"{commit} {human['model']} human={h:.2f} agent={a:.2f} baseline={b} ttft={human['metrics']['mean_ttft_ms']} tpot={agent['metrics']['mean_tpot_ms']} {diff:+.2f}% {verdict}")
"#;

#[test]
fn seed_python_snippet_works_unchanged() {
    let input = report_common::campaign();
    let r = report::build(&input, &ReportOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_seed_files(dir.path(), &seed_files(&r, &input, None)).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SEED_SNIPPET)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            // aaaaaaaa: medians 1080 (human) and 1090.8 (claude-code): +1.00 %.
            "aaaaaaaa Qwen/Qwen3-1.7B human=1080.00 agent=1090.80 baseline=1000.0 ttft=46.3 tpot=9.17 +1.00% match",
            "bbbbbbbb bbbbbbbb failed crashed (cuda_out_of_memory): server exited with status 1 during start-up",
            "cccccccc ibm-ai-platform/Bamba-9B human=500.00 agent=530.00 baseline=None ttft=90.0 tpot=19.0 +6.00% win",
            "dddddddd Qwen/Qwen2.5-7B-Instruct human=303.00 agent=305.02 baseline=300.0 ttft=30.0 tpot=9.0 +0.67% match",
        ],
        "{stdout}"
    );
    // The seed compared medians here; isobench's own verdict for aaaaaaaa is "within noise" and
    // comes with an interval, which the seed's files could not carry.
    let complete = &r.summary.complete[0];
    assert_eq!(
        (complete.commit.as_str(), complete.agent.as_str()),
        ("aaaaaaaa", "claude-code")
    );
    assert!((complete.agent_value / complete.human - 1.01).abs() < 1e-9);
}
