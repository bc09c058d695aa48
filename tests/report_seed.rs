//! Seed-compatible per-run files: the layout, the fields, and a Python snippet in the style of
//! the seed's analysis scripts (json.load, compare human and agent throughput) run on them.
mod report_common;

use isobench::report::seed::{seed_files, write_seed_files};
use isobench::report::{self, Report, ReportInput, ReportOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared report fixture (`report_common::campaign`), its report, and its seed files
/// written into a fresh directory.
struct Fixture {
    input: ReportInput,
    r: Report,
    dir: tempfile::TempDir,
    written: Vec<PathBuf>,
}

fn fixture() -> Fixture {
    let input = report_common::campaign();
    let r = report::build(&input, &ReportOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = write_seed_files(dir.path(), &seed_files(&r, &input, None)).unwrap();
    Fixture {
        input,
        r,
        dir,
        written,
    }
}

fn read(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn files_in_the_seed_layout_with_the_seed_fields() {
    let Fixture {
        input,
        r,
        dir,
        written,
    } = fixture();
    let mut names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .filter(|n| !n.starts_with("docker_benchmark_results/"))
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
    // Counts are integers, as the seed writes them (8, not 8.0).
    assert!(
        human["metrics"]["successful_requests"].is_u64(),
        "{human:#}"
    );
    assert_eq!(human["metrics"]["successful_requests"], 8);
    assert_eq!(human["metrics"]["total_input_tokens"], 4096);
    assert_eq!(human["metrics"]["total_generated_tokens"], 32);
    // The seed's `duration_s` timed a whole run (server start to stop): the median of the
    // trials' runs (91, 92, 93 s), not the sum of their 60 s measuring windows.
    assert_eq!(human["duration_s"], 92.0);
    assert_eq!(human["metrics"]["benchmark_duration_s"], 10.0);
    // The seed's `time.strftime('%Y-%m-%d %H:%M:%S')`, UTC; the ISO form stays in `isobench`.
    assert_eq!(human["timestamp"], "2026-02-01 10:30:00");
    assert_eq!(human["isobench"]["finished_at"], "2026-02-01T10:30:00Z");
    assert_eq!(human["docker_image"], "anonymous/vllm-baseline:aaaaaaaa");
    // As the seed wrote an agent run's image: its base image and the patch.
    assert_eq!(
        read(
            &dir.path()
                .join("agent_benchmark_results/aaaaaaaa_agent_result.json")
        )["docker_image"],
        "anonymous/vllm-baseline:aaaaaaaa + patch"
    );
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
    let (raw, merged): (Vec<_>, Vec<_>) = conc1
        .iter()
        .partition(|f| f.path.starts_with("docker_benchmark_results"));
    assert_eq!(
        merged.len(),
        4,
        "only dddddddd has conc=1: baseline, human, agent, claude-code"
    );
    assert_eq!(raw.len(), 9, "one raw file per trial: 3 arms × 3 trials");
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
    let Fixture { r, dir, .. } = fixture();
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

/// The seed's own comparison, as its users wrote it: baseline and agent/human files by the
/// seed's paths, `(agent - baseline) / baseline * 100` on `metrics.throughput_tok_s`, counts read
/// as ints, and the timestamp through a strict `strptime` of the seed's format.
const SEED_COMPARISON: &str = r#"
import json, os, sys
from datetime import datetime
root = sys.argv[1]
base_dir = os.path.join(root, "baseline_benchmark_results")
agent_dir = os.path.join(root, "agent_benchmark_results")
for name in sorted(os.listdir(base_dir)):
    commit = name[: -len("_baseline_result.json")]
    with open(os.path.join(base_dir, name)) as f:
        baseline = json.load(f)
    datetime.strptime(baseline["timestamp"], "%Y-%m-%d %H:%M:%S")
    row = [commit, f"baseline={baseline['status']}"]
    for arm in ("human", "agent"):
        path = os.path.join(agent_dir, f"{commit}_{arm}_result.json")
        if not os.path.exists(path):
            row.append(f"{arm}=none")
            continue
        with open(path) as f:
            r = json.load(f)
        ts = datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M:%S")
        if r["status"] != "success" or baseline["status"] != "success":
            row.append(f"{arm}={r['status']}")
            continue
        b = baseline["metrics"]["throughput_tok_s"]
        a = r["metrics"]["throughput_tok_s"]
        n = r["metrics"]["successful_requests"]
        if not isinstance(n, int) or not isinstance(r["metrics"]["total_generated_tokens"], int):
            raise TypeError("counts must be ints")
        row.append(f"{arm}={(a - b) / b * 100:+.2f}% n={n} {r['duration_s']:.0f}s {ts.year} {r['docker_image']}")
    print(" ".join(row))
"#;

#[test]
fn seed_comparison_and_strict_timestamp_parse_work_on_isobench_files() {
    let Fixture { dir, .. } = fixture();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SEED_COMPARISON)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the seed's comparison failed on isobench's files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            // Baseline median 1000; human median 1080 (+8 %), claude-code median 1090.8.
            "aaaaaaaa baseline=success human=+8.00% n=8 92s 2026 anonymous/vllm-baseline:aaaaaaaa agent=+9.08% n=8 92s 2026 anonymous/vllm-baseline:aaaaaaaa + patch",
            // Medians 2002 and 2102: +4.995 %; the agent crashed.
            "bbbbbbbb baseline=success human=+5.00% n=8 92s 2026 anonymous/vllm-baseline:bbbbbbbb agent=error",
            // The baseline image was missing: nothing to compare against.
            "cccccccc baseline=error human=success agent=success",
            // First point conc=1: medians 300, 303 and 305.02.
            "dddddddd baseline=success human=+1.00% n=8 92s 2026 anonymous/vllm-baseline:dddddddd agent=+1.67% n=8 92s 2026 anonymous/vllm-baseline:dddddddd + patch",
        ][..],
        "{stdout}"
    );
}

#[test]
fn raw_runs_in_docker_benchmark_results() {
    let Fixture { dir, .. } = fixture();
    let run = read(
        &dir.path()
            .join("docker_benchmark_results/aaaaaaaa_human_trial2_result.json"),
    );
    // One run's own numbers, not the median: trial 2 ran with drift 1.1.
    assert_eq!(run["status"], "success");
    assert_eq!(run["isobench"]["trial"], 2);
    assert_eq!(run["duration_s"], 92.0);
    assert_eq!(run["timestamp"], "2026-02-01 10:20:00");
    assert_eq!(run["metrics"]["successful_requests"], 8);
    let tput = run["metrics"]["throughput_tok_s"].as_f64().unwrap();
    assert!((tput - 1191.56).abs() < 0.01, "{tput}");
    let crashed = read(
        &dir.path()
            .join("docker_benchmark_results/bbbbbbbb_claude-code_trial1_result.json"),
    );
    assert_eq!(crashed["status"], "error");
    assert_eq!(
        crashed["metrics"]["throughput_tok_s"],
        serde_json::Value::Null
    );
}

/// Issue 17 item 12: a commit short name with `/` (or `..`) in a saved report input must not
/// make `report --input-json` write outside `--seed-results`.
#[test]
fn input_names_cannot_escape_the_seed_results_directory() {
    let mut input = report_common::campaign();
    let evil = "../../x";
    for c in &mut input.commits {
        if c.short == "aaaaaaaa" {
            c.short = evil.into();
        }
    }
    for t in &mut input.trials {
        if t.commit == "aaaaaaaa" {
            t.commit = evil.into();
        }
        if t.arm == "codex" {
            t.arm = "../codex".into();
        }
    }
    for a in &mut input.arms {
        if a.name == "codex" {
            a.name = "../codex".into();
        }
    }
    let root = tempfile::tempdir().unwrap();
    let results = root.path().join("a/b/results");
    std::fs::create_dir_all(&results).unwrap();
    let input_path = root.path().join("input.json");
    std::fs::write(&input_path, serde_json::to_string(&input).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["report", "--format", "json", "--input-json"])
        .arg(&input_path)
        .arg("--seed-results")
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file written is inside the results directory, and nothing appeared beside it.
    let mut outside = Vec::new();
    let mut stack = vec![root.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.starts_with(&results) && p != input_path {
                outside.push(p);
            }
        }
    }
    assert!(outside.is_empty(), "written outside: {outside:?}");
    assert!(
        results
            .join("agent_benchmark_results/.._.._x_human_result.json")
            .exists()
    );
    assert!(
        results
            .join("agent_benchmark_results/.._.._x_.._codex_result.json")
            .exists()
    );
}
