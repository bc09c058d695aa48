//! Faults injected by `isobench sim` become failed requests with their error; the run always
//! completes within its timeout.
mod loadgen_support;

use isobench::failure::FailureClass;
use isobench::loadgen::{ClientConfig, ErrorKind, LoadClient, LoadgenError, RunConfig, RunOutcome};
use isobench::sim::{self, SimConfig};
use loadgen_support::*;
use std::time::{Duration, Instant};

fn kinds_of(result: &isobench::loadgen::BenchResult) -> Vec<ErrorKind> {
    result
        .records
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| e.kind))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500s_are_failed_requests_with_their_status() {
    let _serial = SERIAL.lock().await;
    let sim = SimConfig {
        ttft_ms: 2.0,
        itl_ms: 1.0,
        error_rate: 0.2,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(16, 8, 50, None);
    let (result, stats) = measure(sim, &ds, &run_config(Some(8)), 0).await;
    assert_eq!(
        stats.http_500, result.metrics.failed as u64,
        "every 500 is one failed request"
    );
    assert!(
        (9..=11).contains(&stats.http_500),
        "≈ 20% of 50: {}",
        stats.http_500
    );
    assert!(
        kinds_of(&result)
            .iter()
            .all(|k| *k == ErrorKind::HttpStatus)
    );
    let failed = result.records.iter().find(|r| !r.success()).unwrap();
    assert_eq!(failed.http_status, Some(500));
    assert!(
        failed
            .error_message()
            .contains("simulated internal server error"),
        "{}",
        failed.error_message()
    );
    assert_eq!(result.metrics.completed, 50 - result.metrics.failed);
    assert_eq!(
        result.metrics.total_output,
        8 * result.metrics.completed as u64
    );
    assert_eq!(result.outcome(), RunOutcome::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_and_malformed_events_fail_their_requests() {
    let _serial = SERIAL.lock().await;
    let sim = SimConfig {
        ttft_ms: 2.0,
        itl_ms: 1.0,
        disconnect_rate: 0.1,
        malformed_rate: 0.1,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(16, 10, 60, None);
    let (result, stats) = measure(sim, &ds, &run_config(Some(6)), 0).await;
    let kinds = kinds_of(&result);
    let disconnected = kinds
        .iter()
        .filter(|k| **k == ErrorKind::Disconnected)
        .count() as u64;
    let malformed = kinds.iter().filter(|k| **k == ErrorKind::Malformed).count() as u64;
    assert_eq!(
        (disconnected, malformed),
        (stats.disconnects, stats.malformed),
        "{kinds:?}"
    );
    assert!(stats.disconnects >= 5 && stats.malformed >= 5, "{stats:?}");
    assert_eq!(
        kinds.len() as u64,
        stats.disconnects + stats.malformed,
        "no other failure"
    );
    // A cut stream keeps what it received before the cut, but contributes no latency samples.
    let cut = result
        .records
        .iter()
        .find(|r| {
            r.error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::Disconnected)
        })
        .unwrap();
    assert!(!cut.event_times_s.is_empty() && !cut.success());
    assert_eq!(result.metrics.e2el.percentiles.len(), 4);
    assert_eq!(
        result.metrics.completed as u64,
        60 - stats.disconnects - stats.malformed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_beyond_the_request_timeout_are_timeouts() {
    let _serial = SERIAL.lock().await;
    let sim = sim::spawn(SimConfig {
        ttft_ms: 2.0,
        itl_ms: 1.0,
        stall_rate: 0.25,
        stall_ms: 5000.0,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = LoadClient::new(ClientConfig {
        base_url: sim.base_url(),
        pool_size: 8,
        request_timeout: Duration::from_millis(400),
    })
    .unwrap();
    let ds = dataset(16, 10, 16, None);
    let started = Instant::now();
    let result = client.run(&ds, &run_config(Some(8)), None).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stalled requests were cut at 0.4 s"
    );
    let stalls = sim.stats().stalls;
    assert_eq!(stalls, 4, "25% of 16");
    let kinds = kinds_of(&result);
    assert_eq!(kinds, vec![ErrorKind::RequestTimeout; 4]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_server_fails_the_rest_and_the_run_still_ends() {
    let _serial = SERIAL.lock().await;
    let sim = sim::spawn(SimConfig {
        ttft_ms: 5.0,
        itl_ms: 2.0,
        crash_after: Some(20),
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = client_for(&sim, 4);
    let ds = dataset(16, 10, 50, None);
    let started = Instant::now();
    let result = client.run(&ds, &run_config(Some(4)), None).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::time::timeout(Duration::from_secs(1), sim.crashed())
        .await
        .expect("the sim reports its crash");
    let m = &result.metrics;
    assert!(
        (16..=20).contains(&m.completed),
        "requests before the crash succeed: {}",
        m.completed
    );
    assert_eq!(m.completed + m.failed, 50);
    let kinds = kinds_of(&result);
    assert!(kinds.iter().all(|k| matches!(
        k,
        ErrorKind::Connect | ErrorKind::Disconnected | ErrorKind::HttpStatus
    )));
    assert!(
        kinds.iter().filter(|k| **k == ErrorKind::Connect).count() >= 25,
        "after the crash nothing connects"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_failed_is_its_own_outcome_and_warmup_says_so_first() {
    let _serial = SERIAL.lock().await;
    let sim = sim::spawn(SimConfig {
        error_rate: 1.0,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = client_for(&sim, 4);
    let ds = dataset(16, 4, 8, None);
    let run = run_config(Some(4));
    let err = client.warmup(&ds, 3, &run).await.unwrap_err();
    assert!(
        matches!(err, LoadgenError::WarmupFailed { attempted: 3, .. }),
        "{err}"
    );
    assert_eq!(err.failure_class(), FailureClass::AllRequestsFailed);
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    let result = client.run(&ds, &run, None).await.unwrap();
    assert_eq!(result.outcome(), RunOutcome::AllRequestsFailed);
    let failure = result.failure().unwrap();
    assert_eq!(failure.class, FailureClass::AllRequestsFailed);
    assert!(
        failure.message.contains("all 8 requests failed"),
        "{}",
        failure.message
    );
    assert_eq!(
        (result.metrics.ttft.mean, result.metrics.output_throughput),
        (0.0, 0.0)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_slow_start_and_gives_up_in_time() {
    let _serial = SERIAL.lock().await;
    let sim = sim::spawn(SimConfig {
        slow_start_s: 1.0,
        ttft_ms: 1.0,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = client_for(&sim, 2);
    let ds = dataset(8, 2, 2, None);
    let run = run_config(Some(2));
    let started = Instant::now();
    let err = client
        .wait_until_ready(&ds, &run, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadgenError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(900));
    client
        .wait_until_ready(&ds, &run, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "ready only after the slow start"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_and_refused_connections_are_reported() {
    let _serial = SERIAL.lock().await;
    let sim = sim::spawn(SimConfig::ephemeral()).await.unwrap();
    let client = client_for(&sim, 2);
    let ds = dataset(8, 2, 2, None);
    let run = RunConfig {
        model: "other".into(),
        ..run_config(Some(2))
    };
    let result = client.run(&ds, &run, None).await.unwrap();
    assert!(
        result.records[0].error_message().contains("404"),
        "{}",
        result.records[0].error_message()
    );
    assert!(result.records[0].error_message().contains("does not exist"));
    let addr = sim.addr;
    sim.shutdown().await;
    // Nothing listens any more: a connect error, quickly.
    let client = LoadClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        pool_size: 2,
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let result = client.run(&ds, &run_config(Some(2)), None).await.unwrap();
    assert_eq!(kinds_of(&result), vec![ErrorKind::Connect; 2]);
}
