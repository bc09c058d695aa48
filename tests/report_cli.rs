//! `isobench report --input-json`: the real binary prints the chosen format, writes every file
//! format and the seed files, honours NO_COLOR, and rejects bad settings with a clear message.
mod report_common;

use std::process::Command;

fn isobench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_isobench"))
}

#[test]
fn report_from_saved_input_writes_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        serde_json::to_string(&report_common::campaign()).unwrap(),
    )
    .unwrap();
    let out = dir.path().join("out");
    let results = dir.path().join("results");
    let run = isobench()
        .args(["report", "--input-json"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--seed-results")
        .arg(&results)
        .args(["--color", "always"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(
        stdout.starts_with("\x1b[1misobench report: fixture-3way"),
        "--color always wins over NO_COLOR"
    );
    for name in ["report.md", "report.json", "report.csv", "report.html"] {
        assert!(out.join(name).is_file(), "{name} written");
    }
    assert!(
        results
            .join("agent_benchmark_results/aaaaaaaa_agent_result.json")
            .is_file()
    );
    let stderr = String::from_utf8(run.stderr).unwrap();
    let wrote: Vec<&str> = stderr.lines().filter(|l| l.starts_with("wrote ")).collect();
    let raw = wrote
        .iter()
        .filter(|l| l.contains("/docker_benchmark_results/"))
        .count();
    // 4 report files, 17 seed files, and one raw file per trial run: aaaaaaaa 4 arms × 3,
    // bbbbbbbb 3 arms × 3 (codex absent), cccccccc 3 × 1, dddddddd 3 × 3 at its first point.
    assert_eq!(
        (wrote.len() - raw, raw),
        (4 + 17, 12 + 9 + 3 + 9),
        "{stderr}"
    );

    // Auto colour: a pipe gets none, and NO_COLOR is respected either way.
    let plain = isobench()
        .args(["report", "--input-json"])
        .arg(&input)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert!(!String::from_utf8(plain.stdout).unwrap().contains('\x1b'));

    let json = isobench()
        .args([
            "report",
            "--format",
            "json",
            "--threshold-pct",
            "3",
            "--input-json",
        ])
        .arg(&input)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        value["settings"]["threshold_pct"], 3.0,
        "the flag overrides the manifest's 5 %"
    );
}

#[test]
fn bad_confidence_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        serde_json::to_string(&report_common::campaign()).unwrap(),
    )
    .unwrap();
    let run = isobench()
        .args(["report", "--confidence", "95", "--input-json"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert!(
        stderr.contains("confidence must be between 0 and 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0.95"),
        "the hint shows the expected form: {stderr}"
    );
}
