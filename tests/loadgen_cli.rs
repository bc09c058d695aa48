//! `isobench bench` as a user runs it: the real binary against a simulator.
mod loadgen_support;

use isobench::sim::{self, SimConfig};
use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_isobench"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_vllms_summary_and_saves_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = loadgen_support::train_tokenizer(dir.path(), false);
    let sim = sim::spawn(SimConfig {
        ttft_ms: 3.0,
        itl_ms: 1.0,
        model: vec!["tiny".into()],
        tokenizer: Some(tokenizer.clone()),
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let base_url = sim.base_url();
    let result_dir = dir.path().join("out");
    let args: Vec<String> = [
        "--base-url",
        &base_url,
        "--model",
        "tiny",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--random-input-len",
        "24",
        "--random-output-len",
        "5",
        "--num-prompts",
        "12",
        "--max-concurrency",
        "3",
        "--num-warmups",
        "2",
        "--metric-percentiles",
        "50,99",
        // vLLM's default leaves E2EL out of the percentiles; ask for it.
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--goodput",
        "ttft:1000",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        result_dir.to_str().unwrap(),
        "--result-filename",
        "r.json",
        "--metadata",
        "arm=human",
    ]
    .map(String::from)
    .to_vec();
    let output = tokio::task::spawn_blocking(move || {
        bench(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "============ Serving Benchmark Result ============",
        "Successful requests:                     12        ",
        "Failed requests:                         0         ",
        "Maximum request concurrency:             3         ",
        "Total generated tokens:                  60        ",
        "---------------Time to First Token----------------",
        "Request goodput (req/s):",
        "P50 TTFT (ms):",
        "P99 ITL (ms):",
        "Mean E2EL (ms):",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result_dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(json["completed"], 12);
    assert_eq!(
        json["total_input_tokens"],
        12 * 24,
        "client and sim count with the same tokenizer"
    );
    assert_eq!(json["arm"], "human");
    assert_eq!(json["ttfts"].as_array().unwrap().len(), 12);
    assert!(json["p50_ttft_ms"].as_f64().unwrap() >= 3.0);
    assert_eq!(json["isobench"]["dataset"]["synthetic"], false);
    sim.shutdown().await;
}

#[test]
fn a_dead_server_fails_the_readiness_check_with_exit_1() {
    let output = bench(&[
        "--base-url",
        "http://127.0.0.1:9",
        "--model",
        "m",
        "--num-prompts",
        "2",
        "--ready-check-timeout-sec",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Initial test run failed"), "{stderr}");
    assert!(
        stderr.contains("synthetic prompts"),
        "no tokenizer for `m`: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_failed_exits_1_and_says_why() {
    let sim = sim::spawn(SimConfig {
        error_rate: 1.0,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let base_url = sim.base_url();
    let output = tokio::task::spawn_blocking(move || {
        bench(&[
            "--base-url",
            &base_url,
            "--model",
            "sim",
            "--num-prompts",
            "4",
            "--num-warmups",
            "0",
            "--ready-check-timeout-sec",
            "0",
        ])
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Failed requests during benchmark run detected (capping to 10):"),
        "{stdout}"
    );
    assert!(stdout.contains("Error 0: HTTP 500"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("all_requests_failed"), "{stderr}");
    sim.shutdown().await;
}

/// `--dataset-name custom` and `prefix_repetition` with vLLM's flags: each record's output length
/// (`--custom-output-len -1`), and prefix groups of exact token lengths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_and_prefix_repetition_datasets_by_vllms_flags() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = loadgen_support::train_tokenizer(dir.path(), false);
    let sim = sim::spawn(SimConfig {
        model: vec!["tiny".into()],
        tokenizer: Some(tokenizer.clone()),
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let jsonl = dir.path().join("p.jsonl");
    let records: Vec<String> = (1..=5)
        .map(|i| format!("{{\"prompt\": \"the cache {i}\", \"output_tokens\": {i}}}"))
        .collect();
    std::fs::write(&jsonl, records.join("\n")).unwrap();
    let run = |extra: &[&str], name: &str| {
        let mut args: Vec<String> = [
            "--base-url",
            &sim.base_url(),
            "--model",
            "tiny",
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--ignore-eos",
            "--save-result",
            "--result-dir",
            dir.path().to_str().unwrap(),
            "--result-filename",
            name,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let out = tokio::task::spawn_blocking(move || {
                bench(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let path = jsonl.to_str().unwrap();
    let custom = ["--dataset-name", "custom", "--dataset-path", path];
    run(
        &[
            &custom[..],
            &["--custom-output-len", "-1", "--num-prompts", "5"],
        ]
        .concat(),
        "c.json",
    )
    .await;
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    let json = read("c.json");
    assert_eq!(json["completed"], 5);
    assert_eq!(
        json["total_output_tokens"],
        1 + 2 + 3 + 4 + 5,
        "each record's own length"
    );
    assert_eq!(json["isobench"]["dataset"]["name"], "custom");
    // vLLM's default fixes every output length at 256; here 7.
    run(
        &[
            &custom[..],
            &["--custom-output-len", "7", "--num-prompts", "5"],
        ]
        .concat(),
        "c7.json",
    )
    .await;
    assert_eq!(read("c7.json")["total_output_tokens"], 5 * 7);

    let prefix = [
        "--dataset-name",
        "prefix_repetition",
        "--prefix-repetition-prefix-len",
        "8",
        "--prefix-repetition-suffix-len",
        "4",
        "--prefix-repetition-num-prefixes",
        "3",
        "--prefix-repetition-output-len",
        "3",
        "--num-prompts",
        "12",
    ];
    run(&prefix, "p.json").await;
    let json = read("p.json");
    assert_eq!(json["completed"], 12);
    assert_eq!(
        json["total_input_tokens"],
        12 * 12,
        "prefix + suffix tokens"
    );
    assert_eq!(json["total_output_tokens"], 12 * 3);
    assert_eq!(json["isobench"]["dataset"]["name"], "prefix_repetition");
    sim.shutdown().await;
}
