//! `isobench sim` as a library and as a process: endpoints, config, faults, per-process noise,
//! saturation.
use isobench::loadgen::{
    BenchResult, ClientConfig, DatasetConfig, LoadClient, RunConfig, build_dataset,
};
use isobench::sim::{self, SimConfig};
use loadgen_support::{checked, within};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod loadgen_support;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn run_load(
    base_url: String,
    concurrency: usize,
    prompts: usize,
    output_len: u32,
) -> BenchResult {
    let client = LoadClient::new(ClientConfig {
        base_url,
        pool_size: concurrency,
        request_timeout: Duration::from_secs(60),
    })
    .unwrap();
    let ds = build_dataset(
        &DatasetConfig {
            input_len: 16,
            output_len,
            num_prompts: prompts,
            ..DatasetConfig::default()
        },
        None,
    )
    .unwrap();
    let run = RunConfig {
        model: "sim".into(),
        max_concurrency: Some(concurrency),
        percentiles: vec![50.0],
        ..RunConfig::default()
    };
    client.run(&ds, &run, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_like_vllm() {
    let sim = sim::spawn(SimConfig {
        model: vec!["tiny".into()],
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let http = http();
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let models: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");

    // Non-streaming chat: one JSON document with usage.
    let body = serde_json::json!({"model": "tiny", "messages": [{"role": "user", "content": "abcdefgh"}],
                                  "max_tokens": 5});
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["usage"]["completion_tokens"], 5);
    assert_eq!(
        value["usage"]["prompt_tokens"], 2,
        "8 chars at 4 chars per token"
    );
    assert_eq!(value["choices"][0]["finish_reason"], "length");

    // Without ignore_eos and with eos_after_tokens unset, the requested length is generated;
    // bad JSON is a 400, an unknown path a 404.
    let response = http
        .post(format!("{base}/v1/completions"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        http.get(format!("{base}/v2/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("isobench_sim_requests_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("isobench_sim_requests_rejected_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vllm:generation_tokens_total{model_name=\"tiny\"} 5\n"),
        "{metrics}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eos_stops_early_unless_ignored_and_chat_template_tokens_count() {
    let sim = sim::spawn(SimConfig {
        eos_after_tokens: Some(3),
        chat_template_tokens: 7,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let http = http();
    for (ignore_eos, want_tokens, want_reason) in [(false, 3, "stop"), (true, 10, "length")] {
        let body = serde_json::json!({"model": "sim", "messages": [{"role": "user", "content": "abcd"}],
                                      "max_tokens": 10, "ignore_eos": ignore_eos});
        let response = http
            .post(format!("{}/v1/chat/completions", sim.base_url()))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(value["usage"]["completion_tokens"], want_tokens);
        assert_eq!(value["choices"][0]["finish_reason"], want_reason);
        assert_eq!(value["usage"]["prompt_tokens"], 1 + 7);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_draws_its_own_speed_factor() {
    let _serial = SERIAL.lock().await;
    let mut factors = Vec::new();
    for _ in 0..6 {
        let sim = sim::spawn(SimConfig {
            speed_noise_pct: 10.0,
            ..SimConfig::ephemeral()
        })
        .await
        .unwrap();
        factors.push(sim.speed_factor());
        sim.shutdown().await;
    }
    factors.sort_by(f64::total_cmp);
    factors.dedup();
    assert_eq!(factors.len(), 6, "unseeded draws differ: {factors:?}");
    assert!(
        factors.iter().all(|f| (0.5..1.5).contains(f)),
        "{factors:?}"
    );

    let seeded = |seed| SimConfig {
        speed_noise_pct: 10.0,
        speed_noise_seed: Some(seed),
        ..SimConfig::ephemeral()
    };
    let a = sim::spawn(seeded(1)).await.unwrap();
    let b = sim::spawn(seeded(1)).await.unwrap();
    assert_eq!(a.speed_factor(), b.speed_factor());
    a.shutdown().await;
    b.shutdown().await;
    let plain = sim::spawn(SimConfig::ephemeral()).await.unwrap();
    assert_eq!(plain.speed_factor(), 1.0);
    plain.shutdown().await;

    // The factor scales the measured latency: a seed giving a factor far from 1.
    let mut chosen = None;
    for seed in 0..200u64 {
        let probe = sim::spawn(seeded_20(seed)).await.unwrap();
        let factor = probe.speed_factor();
        probe.shutdown().await;
        if (factor - 1.0).abs() > 0.25 {
            chosen = Some((seed, factor));
            break;
        }
    }
    let (seed, factor) = chosen.expect("some seed gives |f − 1| > 0.25 at 20 %");
    let sim = sim::spawn(SimConfig {
        ttft_ms: 40.0,
        itl_ms: 1.0,
        speed_noise_pct: 20.0,
        speed_noise_seed: Some(seed),
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    assert_eq!(sim.speed_factor(), factor);
    let base = sim.base_url();
    checked(
        || run_load(base.clone(), 1, 6, 2),
        |result, slack| {
            within(
                "median TTFT",
                result.metrics.ttft.median,
                40.0 * factor,
                40.0 * factor + 3.0 + slack,
            )
        },
    )
    .await;
    sim.shutdown().await;
}

fn seeded_20(seed: u64) -> SimConfig {
    SimConfig {
        speed_noise_pct: 20.0,
        speed_noise_seed: Some(seed),
        ..SimConfig::ephemeral()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slowdown_saturates_throughput() {
    let _serial = SERIAL.lock().await;
    let config = SimConfig {
        ttft_ms: 5.0,
        itl_ms: 4.0,
        concurrency_slowdown: 0.2,
        ..SimConfig::ephemeral()
    };
    let sim = sim::spawn(config).await.unwrap();
    let base = sim.base_url();
    // Gap at 16 running = 4 · (1 + 0.2 · 15) = 16 ms; throughput 16/16 ms vs 1/4 ms: 4× not 16×.
    checked(
        || async {
            (
                run_load(base.clone(), 1, 4, 40).await,
                run_load(base.clone(), 16, 32, 40).await,
            )
        },
        |(one, sixteen), slack| {
            within(
                "ITL at 16 running",
                sixteen.metrics.itl.median,
                14.5,
                17.5 + slack,
            )?;
            let speedup = sixteen.metrics.output_throughput / one.metrics.output_throughput;
            within("throughput ratio 16 vs 1", speedup, 3.0, 5.0)
        },
    )
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_num_seqs_queues_requests_into_ttft() {
    let _serial = SERIAL.lock().await;
    let sim = sim::spawn(SimConfig {
        ttft_ms: 20.0,
        itl_ms: 5.0,
        max_num_seqs: 2,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    // 4 at once, 2 slots, each request 20 + 9·5 = 65 ms: two wait ~65 ms before their 20 ms TTFT.
    let base = sim.base_url();
    let result = checked(
        || run_load(base.clone(), 4, 4, 10),
        |result, slack| {
            let mut ttfts: Vec<f64> = result
                .records
                .iter()
                .map(|r| r.ttft_s.unwrap() * 1000.0)
                .collect();
            ttfts.sort_by(f64::total_cmp);
            within("2nd TTFT", ttfts[1], 20.0, 25.0 + slack)
        },
    )
    .await;
    sim.shutdown().await;
    let mut ttfts: Vec<f64> = result
        .records
        .iter()
        .map(|r| r.ttft_s.unwrap() * 1000.0)
        .collect();
    ttfts.sort_by(f64::total_cmp);
    assert!(
        ttfts[2] >= 85.0,
        "the 3rd request waited for a slot (65 ms) before its 20 ms TTFT: {ttfts:?}"
    );
}

fn sim_process(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_isobench"))
        .arg("sim")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the `isobench sim listening on ADDR` line.
fn listening_addr(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("isobench sim listening on ")
        .unwrap_or_else(|| panic!("line: {line:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_prints_its_port_reads_its_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.toml");
    std::fs::write(&file, "model = \"from-file\"\nttft_ms = 30.0\nport = 9\n").unwrap();
    let mut child = sim_process(&["--config", file.to_str().unwrap(), "--port", "0"]);
    let addr = listening_addr(&mut child);
    let models = http()
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(models.contains("from-file"), "{models}");
    // SAFETY: a plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn fail_at_start_prints_the_message_and_exits_1() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args([
            "sim",
            "--port",
            "0",
            "--fail-at-start",
            "torch.OutOfMemoryError: CUDA out of memory",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("torch.OutOfMemoryError: CUDA out of memory")
    );
    assert!(output.stdout.is_empty(), "never claimed to listen");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_n_requests_exits_non_zero() {
    let mut child = sim_process(&[
        "--port",
        "0",
        "--ttft-ms",
        "1",
        "--itl-ms",
        "1",
        "--crash-after",
        "3",
        "--crash-message",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
    ]);
    let addr = listening_addr(&mut child);
    let result = run_load(format!("http://{addr}"), 1, 6, 2).await;
    assert_eq!(
        result.metrics.completed, 3,
        "three requests before the crash"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("illegal memory access"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_answers_503_then_200() {
    let sim = sim::spawn(SimConfig {
        slow_start_s: 0.5,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let http = http();
    let url = format!("{}/health", sim.base_url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 503);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_fail_at_start_and_bad_config_are_errors() {
    let err = sim::spawn(SimConfig {
        fail_at_start: Some("boom".into()),
        ..SimConfig::ephemeral()
    })
    .await
    .err()
    .unwrap();
    assert_eq!(err.to_string(), "boom");
    let err = sim::spawn(SimConfig {
        tokens_per_chunk: 0,
        ..SimConfig::ephemeral()
    })
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("tokens_per_chunk"), "{err}");
    // Shutting down frees the port at once.
    let sim = sim::spawn(SimConfig::ephemeral()).await.unwrap();
    let addr = sim.addr;
    sim.shutdown().await;
    let again = sim::spawn(SimConfig {
        port: addr.port(),
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    assert_eq!(again.addr.port(), addr.port());
    again.shutdown().await;
}
