//! `loadgen::run_benchmark`, the one entry point `isobench bench` and a campaign session share,
//! against `isobench sim`: the stages run in order and are each told to the caller, the
//! measured run reports progress while it runs, and an error names the stage it ended in.
mod loadgen_support;

use isobench::loadgen::{self, BenchEvent, BenchPlan, BenchStage, WarmupPlan};
use isobench::sim::{self, SimConfig};
use loadgen_support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_check_warm_up_and_measured_run_in_order_with_progress() {
    let _serial = SERIAL.lock().await;
    // 20 requests of 8 tokens, 4 at a time: about 5 rounds of 20 + 7·5 ms, so the measured run
    // lasts well over the 20 ms progress period.
    let sim = sim::spawn(SimConfig {
        ttft_ms: 20.0,
        itl_ms: 5.0,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = client_for(&sim, 4);
    let measured_set = dataset(16, 8, 20, None);
    let warmup_set = dataset(16, 8, 3, None);
    let run = run_config(Some(4));
    let plan = BenchPlan {
        run: &run,
        ready_check: Some(Duration::from_secs(10)),
        warmup: Some(WarmupPlan {
            dataset: &warmup_set,
            requests: 6,
        }),
        measure: Some(&measured_set),
        progress_every: Duration::from_millis(20),
    };
    let mut heard: Vec<String> = Vec::new();
    let mut last_finished = 0;
    let done = loadgen::run_benchmark(&client, &plan, |event| {
        let name = match event {
            BenchEvent::ReadyCheck => "ready-check".to_string(),
            BenchEvent::Ready => "ready".to_string(),
            BenchEvent::WarmingUp { requests } => format!("warming-up {requests}"),
            BenchEvent::WarmedUp(w) => format!("warmed-up {}/{}", w.completed, w.requests),
            BenchEvent::Measuring => "measuring".to_string(),
            BenchEvent::Progress { progress, .. } => {
                // Counters only grow.
                assert!(progress.finished() >= last_finished);
                last_finished = progress.finished();
                "progress".to_string()
            }
        };
        if heard.last() != Some(&name) {
            heard.push(name);
        }
    })
    .await
    .unwrap();
    let stats = sim.stats();
    sim.shutdown().await;
    assert_eq!(
        heard,
        [
            "ready-check",
            "ready",
            "warming-up 6",
            "warmed-up 6/6",
            "measuring",
            "progress"
        ]
    );
    assert_eq!(done.warmup.as_ref().map(|w| w.completed), Some(6));
    let measured = done.measured.expect("a measured run");
    assert_eq!(measured.result.metrics.completed, 20);
    assert!(measured.window_end > measured.window_start);
    // One test request, the warm-up and the measured run reached the server (the warm-up may
    // add one-token requests that open spare connections).
    assert!(stats.requests >= 1 + 6 + 20, "{}", stats.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_ends_the_benchmark_in_its_ready_check() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = loadgen::LoadClient::new(loadgen::ClientConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        pool_size: 1,
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let ds = dataset(16, 8, 2, None);
    let run = run_config(Some(1));
    let plan = BenchPlan {
        run: &run,
        ready_check: Some(Duration::from_secs(1)),
        warmup: Some(WarmupPlan {
            dataset: &ds,
            requests: 1,
        }),
        measure: Some(&ds),
        progress_every: Duration::from_millis(20),
    };
    let mut heard = Vec::new();
    let err = loadgen::run_benchmark(&client, &plan, |event| {
        heard.push(format!("{event:?}"));
    })
    .await
    .unwrap_err();
    assert_eq!(err.stage, BenchStage::ReadyCheck);
    assert!(
        matches!(err.error, loadgen::LoadgenError::NotReady { .. }),
        "{err}"
    );
    assert_eq!(heard, ["ReadyCheck"], "nothing after the failed check");
}
