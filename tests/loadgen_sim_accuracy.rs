//! The client against `isobench sim` (the ground truth): measured TTFT, ITL, TPOT, E2E and
//! token counts must match what the simulator was told to do.
//!
//! Bounds: a measured delay can never be shorter than configured (the client's clock starts
//! before the request is written, the server's after it is read), and it may be late by the
//! request round trip plus wake-up latencies — well under the 8–10 ms a real bug would shift
//! (a late timestamp, an event counted twice, the usage chunk taken as a token). Timing checks
//! are retried only when the client's self-audit reports the run as distorted (see
//! `measure_checked`); counts and lower bounds are checked on every run.
mod loadgen_support;

use isobench::loadgen::{Backend, ErrorKind, RunConfig, RunOutcome};
use isobench::sim::SimConfig;
use loadgen_support::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_1_matches_the_configured_timing() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), false);
    let sim = SimConfig {
        ttft_ms: 40.0,
        itl_ms: 8.0,
        tokenizer: Some(tokenizer.clone()),
        ..SimConfig::ephemeral()
    };
    let ds = dataset(64, 16, 12, Some(&tokenizer));
    let (result, stats) = measure_checked(sim, &ds, &run_config(Some(1)), 2, |result, _, slack| {
        let m = &result.metrics;
        within("median TTFT", m.ttft.median, 40.0, 43.0 + slack)?;
        within("mean TTFT", m.ttft.mean, 40.0, 45.0 + slack)?;
        within("median ITL", m.itl.median, 7.0, 9.0 + slack)?;
        within("mean TPOT", m.tpot.mean, 7.6, 8.4 + slack / 15.0)?;
        within("median E2EL", m.e2el.median, 160.0, 164.0 + slack)?;
        // Sequential requests: 16 tokens per ~160 ms.
        within(
            "output tok/s",
            m.output_throughput,
            80.0 * 160.0 / (160.0 + slack),
            101.0,
        )
    })
    .await;
    let m = &result.metrics;
    assert_eq!((m.completed, m.failed), (12, 0));
    assert_eq!(m.output_lens, vec![16; 12], "usage.completion_tokens");
    assert_eq!(m.total_output, 16 * 12);
    // Server and client count prompt tokens with the same tokenizer here: they must agree.
    assert_eq!(m.total_input, 64 * 12);
    assert_eq!(
        stats.prompt_tokens,
        64 * 14,
        "12 measured + 2 warm-up prompts"
    );
    assert_eq!(m.output_token_sources.usage, 12);
    assert!(
        m.ttft.percentile(10.0).unwrap() >= 40.0,
        "never shorter than configured"
    );
    // Role chunk + 16 content chunks = 17 events = 16 gaps, one of them ~0 (role and first
    // token leave together, as in vLLM).
    for record in &result.records {
        assert_eq!(record.event_times_s.len(), 17);
        assert!(
            record.itls_s().next().unwrap() < 0.002,
            "role and first token arrive together"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_64_keeps_ttft_and_tpot() {
    let _serial = SERIAL.lock().await;
    let sim = SimConfig {
        ttft_ms: 50.0,
        itl_ms: 10.0,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(128, 32, 128, None);
    let (result, stats) =
        measure_checked(sim, &ds, &run_config(Some(64)), 64, |result, _, slack| {
            let m = &result.metrics;
            within("median TTFT", m.ttft.median, 50.0, 55.0 + slack)?;
            within(
                "p10 TTFT",
                m.ttft.percentile(10.0).unwrap(),
                50.0,
                53.0 + slack,
            )?;
            within("median ITL", m.itl.median, 9.0, 11.0 + slack)?;
            within("mean TPOT", m.tpot.mean, 9.5, 10.7 + slack / 31.0)?;
            // Two waves of 64 requests of 50 + 31·10 = 360 ms each.
            within(
                "duration",
                result.duration_s,
                0.72,
                0.95 + 2.0 * slack / 1000.0,
            )
        })
        .await;
    let m = &result.metrics;
    assert_eq!((m.completed, m.failed), (128, 0));
    assert_eq!(m.total_output, 32 * 128);
    // One keep-alive pool of 64 + 16 spare connections (not one per request: 192 with warm-up).
    assert!(
        stats.connections <= 64 + 16 + 2,
        "one keep-alive pool: {} connections",
        stats.connections
    );
    assert!(result.audit.scheduler_delay.samples > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_cost_scales_ttft_with_prompt_tokens() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), false);
    let sim = SimConfig {
        ttft_ms: 10.0,
        prefill_ms_per_token: 0.25,
        itl_ms: 2.0,
        tokenizer: Some(tokenizer.clone()),
        ..SimConfig::ephemeral()
    };
    let cfg = isobench::loadgen::DatasetConfig {
        input_len: 120,
        output_len: 4,
        range_ratio: 0.6,
        num_prompts: 24,
        seed: 5,
        ..Default::default()
    };
    let ds = isobench::loadgen::build_dataset(&cfg, Some(&tokenizer)).unwrap();
    let expected_ms = |r: &isobench::loadgen::RequestRecord| {
        10.0 + 0.25 * f64::from(r.prompt_tokens_server.unwrap_or(0))
    };
    let (result, _) = measure_checked(sim, &ds, &run_config(Some(4)), 0, |result, _, slack| {
        let close = result
            .records
            .iter()
            .filter(|r| r.ttft_s.unwrap_or(0.0) * 1000.0 <= expected_ms(r) + 3.0 + slack)
            .count();
        // Prompts range over 48..192 tokens: TTFT spans 22..58 ms; nearly all within 3 ms.
        if close >= 22 {
            Ok(())
        } else {
            Err(format!(
                "only {close} of 24 TTFTs within 3 ms of 10 + 0.25·prompt"
            ))
        }
    })
    .await;
    for record in &result.records {
        let prompt = record
            .prompt_tokens_server
            .expect("usage reports prompt tokens");
        assert_eq!(Some(prompt), record.prompt_tokens_client);
        let measured_ms = record.ttft_s.unwrap() * 1000.0;
        assert!(
            measured_ms >= expected_ms(record) - 0.01,
            "TTFT {measured_ms} < {}",
            expected_ms(record)
        );
    }
    let spread = result.metrics.ttft.percentile(90.0).unwrap()
        - result.metrics.ttft.percentile(10.0).unwrap();
    assert!(
        spread > 10.0,
        "TTFT follows the prompt length: p90 − p10 = {spread} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_several_tokens_count_as_one_gap() {
    let _serial = SERIAL.lock().await;
    let sim = SimConfig {
        ttft_ms: 20.0,
        itl_ms: 12.0,
        tokens_per_chunk: 4,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(32, 32, 8, None);
    let (result, _) = measure_checked(sim, &ds, &run_config(Some(2)), 0, |result, _, slack| {
        let m = &result.metrics;
        within("median ITL", m.itl.median, 11.0, 13.0 + slack)?;
        // TPOT = (E2E − TTFT) / 31 = 7 gaps · 12 ms / 31.
        within(
            "mean TPOT",
            m.tpot.mean,
            84.0 / 31.0 - 0.2,
            84.0 / 31.0 + 0.3 + slack / 31.0,
        )
    })
    .await;
    assert_eq!(
        result.metrics.output_lens,
        vec![32; 8],
        "tokens come from usage, not from events"
    );
    for record in &result.records {
        assert_eq!(
            record.event_times_s.len(),
            1 + 8,
            "role + 8 chunks of 4 tokens"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_usage_tokens_are_counted_by_the_client_tokenizer() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tokenizer(dir.path(), false);
    let sim = SimConfig {
        ttft_ms: 5.0,
        itl_ms: 1.0,
        usage: false,
        role_chunk: false,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(16, 10, 6, Some(&tokenizer));
    let run = RunConfig {
        backend: Backend::OpenAi,
        endpoint: "/v1/completions".into(),
        ..run_config(Some(3))
    };
    let (result, _) = measure(sim, &ds, &run, 0).await;
    assert_eq!(result.metrics.output_token_sources.client_tokenizer, 6);
    for (record, &output_len) in result.records.iter().zip(&result.metrics.output_lens) {
        assert_eq!(record.completion_tokens_server, None);
        assert_eq!(
            record.event_times_s.len(),
            10,
            "no role chunk on completions"
        );
        assert_eq!(
            output_len as usize,
            count_tokens(&tokenizer, &record.generated_text)
        );
        assert!(
            record.generated_text.starts_with(" the model"),
            "{:?}",
            record.generated_text
        );
        // Without a role chunk the first event carries content: both TTFT definitions agree.
        assert_eq!(record.ttft_s, record.first_content_s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_achieves_the_requested_rate() {
    let _serial = SERIAL.lock().await;
    let sim = SimConfig {
        ttft_ms: 5.0,
        itl_ms: 2.0,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(16, 4, 120, None);
    let run = RunConfig {
        request_rate: 40.0,
        burstiness: 1.0,
        seed: 3,
        ..run_config(None)
    };
    let (result, _) = measure_checked(sim, &ds, &run, 0, |result, _, slack| {
        let audit = &result.audit;
        within(
            "achieved rate",
            audit.achieved_rate.unwrap_or(0.0),
            40.0 * 0.98,
            40.0 * 1.02,
        )?;
        within(
            "dispatch lag p99 (ms)",
            audit.dispatch_lag.p99_ms,
            0.0,
            5.0 + slack,
        )?;
        within("duration", result.duration_s, 3.0, 3.3 + slack / 1000.0)
    })
    .await;
    assert_eq!(result.metrics.completed, 120);
    assert_eq!(result.audit.requested_rate, Some(40.0));
    // Releases follow the precomputed schedule, which ends at n / rate = 3 s, never early.
    let last = result
        .records
        .iter()
        .map(|r| r.scheduled_at_s)
        .fold(0.0, f64::max);
    assert!((last - 3.0).abs() < 1e-9);
    assert!(
        result
            .records
            .iter()
            .all(|r| r.released_at_s.unwrap() >= r.scheduled_at_s)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_timeout_returns_promptly_with_what_it_has() {
    let _serial = SERIAL.lock().await;
    // Each request would take 50 + 99·50 ms ≈ 5 s; the run may take 1 s.
    let sim = SimConfig {
        ttft_ms: 50.0,
        itl_ms: 50.0,
        ..SimConfig::ephemeral()
    };
    let ds = dataset(16, 100, 8, None);
    let run = RunConfig {
        run_timeout: Duration::from_secs(1),
        ..run_config(Some(4))
    };
    let started = Instant::now();
    let (result, _) = measure(sim, &ds, &run, 0).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(result.outcome(), RunOutcome::TimedOut);
    assert_eq!(
        result.failure().unwrap().class,
        isobench::failure::FailureClass::Timeout
    );
    let kinds = result.errors_by_kind();
    assert_eq!(kinds.get("run_timeout"), Some(&4), "{kinds:?}");
    assert_eq!(kinds.get("not_sent"), Some(&4), "{kinds:?}");
    for record in result
        .records
        .iter()
        .filter(|r| r.error.as_ref().unwrap().kind == ErrorKind::RunTimeout)
    {
        // Cut mid-stream, but what arrived is kept: ~19 events in the first second.
        assert!(
            record.event_times_s.len() >= 10,
            "{} events kept",
            record.event_times_s.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmed_connections_are_reused_by_the_measured_run() {
    let _serial = SERIAL.lock().await;
    let sim = isobench::sim::spawn(SimConfig {
        ttft_ms: 5.0,
        itl_ms: 1.0,
        ..SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let ds = dataset(16, 8, 64, None);
    let run = run_config(Some(16));
    let client = client_for(&sim, 16);
    // 4 warm-up requests, then the pool is filled up to the concurrency of 16 plus 4 spares.
    let warm = client.warmup(&ds, 4, &run).await.unwrap();
    assert_eq!((warm.completed, warm.connections_prewarmed), (4, 20));
    let opened_in_warmup = sim.stats().connections;
    assert!((4..=20).contains(&opened_in_warmup), "{opened_in_warmup}");
    let result = client.run(&ds, &run, None).await.unwrap();
    assert_eq!(result.metrics.completed, 64);
    // hyper's pool races a fresh connect against a connection about to come back, so a few
    // extra connections may open; one per request (64) would be the classic pitfall.
    let opened_in_run = sim.stats().connections - opened_in_warmup;
    assert!(
        opened_in_run <= 8,
        "the run opened {opened_in_run} new connections after {opened_in_warmup} in warm-up"
    );
    sim.shutdown().await;
}
