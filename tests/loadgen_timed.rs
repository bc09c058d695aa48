//! Time-based runs (`load.duration`, `bench --duration`) against `isobench sim`, whose timing is
//! known: nothing is sent after the window, the ramp-up is not measured, and the throughput is
//! the steady state's, neither diluted by the ramp-up nor by the drain after the window.
mod loadgen_support;

use isobench::loadgen::{RunConfig, TimedWindow};
use isobench::sim::SimConfig;
use loadgen_support::*;
use std::time::Duration;

fn timed(run: RunConfig, ramp_up_ms: u64, duration_ms: u64) -> RunConfig {
    RunConfig {
        timed: Some(TimedWindow {
            ramp_up: Duration::from_millis(ramp_up_ms),
            duration: Duration::from_millis(duration_ms),
        }),
        ..run
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_window_measures_the_steady_state() {
    let _serial = SERIAL.lock().await;
    // Each request: TTFT 20 ms, then 15 gaps of 5 ms = 95 ms for 16 tokens; 4 at a time → at
    // most 4 · 16 / 0.095 = 674 tok/s, whatever the window's phase.
    let sim = SimConfig {
        ttft_ms: 20.0,
        itl_ms: 5.0,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(32, 16, 8, None);
    let run = timed(run_config(Some(4)), 500, 2000);
    let ceiling = 4.0 * 16.0 / 0.095;
    let (result, _) = measure_checked(sim, &ds, &run, 4, |result, _, slack| {
        let m = &result.metrics;
        // Each request is late by at most its round trip + wake-ups (`slack` per request).
        let floor = ceiling * 95.0 / (95.0 + 2.0 + slack);
        within("output tok/s", m.output_throughput, floor, ceiling * 1.02)
    })
    .await;
    let w = result.window.as_ref().expect("a timed run has a window");
    assert_eq!(result.duration_s, 2.0, "duration is the window's length");
    assert_eq!((w.ramp_up_s, w.duration_s), (0.5, 2.0));
    assert!(w.sent_in_ramp_up >= 16, "~21 ramp-up requests: {w:?}");
    assert_eq!(
        result.records.len(),
        w.sent_in_window,
        "only the window's requests are kept"
    );
    for r in &result.records {
        let sent = r.sent_at_s.unwrap();
        assert!(
            (0.5..2.51).contains(&sent),
            "measured request sent at {sent}"
        );
        assert!(r.success(), "every request finishes: {:?}", r.error);
    }
    assert!(w.in_flight_at_end <= 4, "{w:?}");
    assert_eq!(
        w.prompts_reused,
        w.sent_in_ramp_up + w.sent_in_window - 8,
        "8 distinct prompts, cycled"
    );
    // The whole window's requests (~84) are measured; vLLM's per-request lists match them.
    let m = &result.metrics;
    assert_eq!(m.completed, w.sent_in_window);
    assert_eq!(m.output_lens.len(), w.sent_in_window);
    // Request throughput counts completions inside the window: ~4 / 0.095 s.
    within("req/s", m.request_throughput, 30.0, 4.0 / 0.095 * 1.05).unwrap();
    let json: serde_json::Value = serde_json::from_str(&result.to_json_text(false, &[])).unwrap();
    assert_eq!(json["duration"], 2.0);
    assert_eq!(
        json["isobench"]["window"]["sent_in_window"],
        w.sent_in_window
    );
    assert!(result.summary_text().contains("Ramp-up, not measured (s):"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finite_rate_stops_sending_when_the_window_ends() {
    let _serial = SERIAL.lock().await;
    let sim = SimConfig {
        ttft_ms: 10.0,
        itl_ms: 2.0,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(32, 8, 200, None);
    // 50 req/s for 0.4 + 1.6 s: ~100 requests, none after 2.0 s, ~80 measured.
    let mut run = timed(run_config(None), 400, 1600);
    run.request_rate = 50.0;
    run.seed = 3;
    let (result, _) = measure(sim, &ds, &run, 0).await;
    let w = result.window.clone().unwrap();
    let total = w.sent_in_ramp_up + w.sent_in_window;
    assert!((85..=101).contains(&total), "sent {total}: {w:?}");
    assert!((60..=95).contains(&w.sent_in_window), "{w:?}");
    assert_eq!(w.prompts_reused, 0, "200 prompts are enough");
    for r in &result.records {
        assert!(r.sent_at_s.unwrap() < 2.01, "sent after the window: {r:?}");
    }
    within("req/s", result.metrics.request_throughput, 35.0, 65.0).unwrap();
}

#[test]
fn an_endless_timed_run_is_refused() {
    let mut run = timed(run_config(None), 0, 1000);
    run.model = "m".into();
    let err = run.validate().unwrap_err().to_string();
    assert!(err.contains("needs a concurrency limit"), "{err}");
    let mut run = timed(run_config(Some(2)), 60_000, 60_000);
    run.run_timeout = Duration::from_secs(100);
    let err = run.validate().unwrap_err().to_string();
    assert!(err.contains("shorter than the run's timeout"), "{err}");
}
