//! Aggregate metrics over raw request records, with vLLM's definitions (`calculate_metrics`),
//! and what a timed run's window saw.
use serde::Serialize;

use super::Goodput;
use super::record::RequestRecord;
use super::stats::Summary;

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutputTokenSources {
    /// `usage.completion_tokens` from the server.
    pub usage: usize,
    /// The client's tokenizer over the generated text.
    pub client_tokenizer: usize,
    /// Neither: content-bearing events counted (a lower bound if chunks carry several tokens).
    pub client_events: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: u64,
    pub total_output: u64,
    pub request_throughput: f64,
    pub request_goodput: Option<f64>,
    /// Successful requests that met every SLO (with `goodput` set).
    pub good_requests: Option<usize>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: u64,
    pub ttft: Summary,
    pub tpot: Summary,
    pub itl: Summary,
    pub e2el: Summary,
    pub client_queue_time: Summary,
    pub e2el_including_client_queue: Summary,
    /// TTFT by the older definition: the first event with non-empty content.
    pub ttft_content: Summary,
    /// Per request (vLLM's `input_lens`): server prompt tokens when reported, else the client's.
    pub input_lens: Vec<u32>,
    /// Per request (vLLM's `output_lens`): 0 for failed requests.
    pub output_lens: Vec<u32>,
    pub output_token_sources: OutputTokenSources,
}

/// vLLM's `calculate_metrics`, over raw records.
pub fn compute_metrics(
    records: &[RequestRecord],
    duration_s: f64,
    percentiles: &[f64],
    goodput: &Goodput,
    count_tokens: &dyn Fn(&str) -> Option<u32>,
) -> Metrics {
    let mut sources = OutputTokenSources::default();
    let (mut ttfts, mut ttft_content, mut tpots, mut all_tpots, mut itls, mut e2els, mut queues) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut input_lens = Vec::with_capacity(records.len());
    let mut output_lens = Vec::with_capacity(records.len());
    let (mut completed, mut total_input) = (0usize, 0u64);
    for record in records {
        let prompt_len = record
            .prompt_tokens_server
            .or(record.prompt_tokens_client)
            .unwrap_or(0);
        input_lens.push(prompt_len);
        if !record.success() {
            output_lens.push(0);
            continue;
        }
        let output_len = output_len(record, count_tokens, &mut sources);
        output_lens.push(output_len);
        total_input += u64::from(prompt_len);
        let ttft = record.ttft_s.unwrap_or(0.0);
        let latency = record.latency_s();
        let mut tpot = 0.0;
        if output_len > 1 {
            tpot = (latency - ttft) / f64::from(output_len - 1);
            tpots.push(tpot);
        }
        all_tpots.push(tpot);
        itls.extend(record.itls_s());
        ttfts.push(ttft);
        if let Some(first_content) = record.first_content_s {
            ttft_content.push(first_content);
        }
        e2els.push(latency);
        queues.push(record.queue_time_s());
        completed += 1;
    }
    let total_output: u64 = output_lens.iter().map(|&n| u64::from(n)).sum();
    let good_requests = goodput.is_set().then(|| {
        (0..ttfts.len())
            .filter(|&i| goodput.admits(ttfts[i], all_tpots[i], e2els[i]))
            .count()
    });
    let request_goodput = good_requests.map(|good| good as f64 / duration_s);
    let (max_output_tokens_per_s, max_concurrent_requests) = peaks(records);
    let e2el_with_queue: Vec<f64> = e2els.iter().zip(&queues).map(|(e, q)| e + q).collect();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    Metrics {
        completed,
        failed: records.len() - completed,
        total_input,
        total_output,
        request_throughput: per_s(completed as f64),
        request_goodput,
        good_requests,
        output_throughput: per_s(total_output as f64),
        total_token_throughput: per_s((total_input + total_output) as f64),
        max_output_tokens_per_s,
        max_concurrent_requests,
        ttft: Summary::of_seconds(&ttfts, percentiles),
        tpot: Summary::of_seconds(&tpots, percentiles),
        itl: Summary::of_seconds(&itls, percentiles),
        e2el: Summary::of_seconds(&e2els, percentiles),
        client_queue_time: Summary::of_seconds(&queues, percentiles),
        e2el_including_client_queue: Summary::of_seconds(&e2el_with_queue, percentiles),
        ttft_content: Summary::of_seconds(&ttft_content, percentiles),
        input_lens,
        output_lens,
        output_token_sources: sources,
    }
}

/// A successful request's output tokens: the server's usage, else the client's tokenizer over
/// the text, else the content-bearing events (counted in `sources`).
fn output_len(
    record: &RequestRecord,
    count_tokens: &dyn Fn(&str) -> Option<u32>,
    sources: &mut OutputTokenSources,
) -> u32 {
    match record.completion_tokens_server.filter(|&n| n > 0) {
        Some(n) => {
            sources.usage += 1;
            n
        }
        None => match count_tokens(&record.generated_text) {
            Some(n) => {
                sources.client_tokenizer += 1;
                n
            }
            None => {
                sources.client_events += 1;
                record.content_events.max(1)
            }
        },
    }
}

/// What a timed run did around and inside its window ([`super::TimedWindow`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowSummary {
    pub ramp_up_s: f64,
    pub duration_s: f64,
    /// Requests sent during the ramp-up: they fill the server and are not measured.
    pub sent_in_ramp_up: usize,
    /// Requests sent within the window: the measured ones (latencies, per-request lists).
    pub sent_in_window: usize,
    /// Requests of any phase that finished successfully inside the window (request throughput).
    pub completed_in_window: usize,
    /// Output tokens that arrived inside the window, from any request (output throughput); a
    /// request's tokens are spread over its choice-bearing events.
    pub output_tokens_in_window: f64,
    /// Prompt tokens of requests whose first token arrived inside the window.
    pub input_tokens_in_window: u64,
    /// Requests still open when the window closed; they were allowed to finish.
    pub in_flight_at_end: usize,
    /// Requests that re-sent a prompt already sent in this run (the dataset was cycled): a
    /// server's prefix cache may answer those faster. Raise `num_prompts` to avoid it.
    pub prompts_reused: usize,
}

/// Counts, from raw records, what happened inside `[start, end)` (seconds from the run's start).
pub(crate) fn summarize_window(
    records: &[RequestRecord],
    window: super::TimedWindow,
    distinct_prompts: usize,
    count_tokens: &dyn Fn(&str) -> Option<u32>,
) -> WindowSummary {
    let (start, end) = window.bounds_s();
    let inside = |t: f64| (start..end).contains(&t);
    let mut summary = WindowSummary {
        ramp_up_s: start,
        duration_s: end - start,
        sent_in_ramp_up: 0,
        sent_in_window: 0,
        completed_in_window: 0,
        output_tokens_in_window: 0.0,
        input_tokens_in_window: 0,
        in_flight_at_end: 0,
        prompts_reused: records.len().saturating_sub(distinct_prompts),
    };
    let mut sources = OutputTokenSources::default();
    for record in records {
        let Some(sent) = record.sent_at_s else {
            continue;
        };
        if sent < start {
            summary.sent_in_ramp_up += 1;
        } else {
            summary.sent_in_window += 1;
        }
        if sent < end && record.finished_at_s.is_none_or(|f| f >= end) {
            summary.in_flight_at_end += 1;
        }
        if !record.success() || record.event_times_s.is_empty() {
            continue;
        }
        let tokens = f64::from(output_len(record, count_tokens, &mut sources));
        let events = &record.event_times_s;
        let in_window = events.iter().filter(|&&t| inside(sent + t)).count();
        summary.output_tokens_in_window += tokens * in_window as f64 / events.len() as f64;
        if inside(sent + events[0]) {
            let prompt = record.prompt_tokens_server.or(record.prompt_tokens_client);
            summary.input_tokens_in_window += u64::from(prompt.unwrap_or(0));
        }
        if inside(sent + record.latency_s()) {
            summary.completed_in_window += 1;
        }
    }
    summary
}

/// vLLM's peak output tokens/s and peak concurrent requests over 1-second buckets from the
/// first successful request's send time. (Like vLLM, "tokens" here are choice-bearing events.)
fn peaks(records: &[RequestRecord]) -> (f64, u64) {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success()).collect();
    if ok.is_empty() {
        return (0.0, 0);
    }
    let start = |r: &RequestRecord| r.sent_at_s.unwrap_or(0.0);
    let min_start = ok.iter().map(|r| start(r)).fold(f64::INFINITY, f64::min);
    let max_end = ok
        .iter()
        .map(|r| start(r) + r.latency_s())
        .fold(f64::NEG_INFINITY, f64::max);
    let buckets = (max_end - min_start).ceil() as usize + 1;
    let mut tokens = vec![0u64; buckets];
    let mut concurrent = vec![0u64; buckets];
    for r in ok {
        for t in &r.event_times_s {
            let bucket = (start(r) + t - min_start) as usize;
            if bucket < buckets {
                tokens[bucket] += 1;
            }
        }
        let first = (start(r) - min_start) as usize;
        let last = ((start(r) + r.latency_s() - min_start) as usize).min(buckets - 1);
        for slot in &mut concurrent[first..=last] {
            *slot += 1;
        }
    }
    (
        tokens.iter().copied().max().unwrap_or(0) as f64,
        concurrent.iter().copied().max().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::{ErrorKind, RequestError};

    /// A successful record: sent at `sent`, events at the given offsets (s), usage tokens.
    fn ok(sent: f64, events: &[f64], tokens: u32, prompt: u32) -> RequestRecord {
        RequestRecord {
            sent_at_s: Some(sent),
            released_at_s: Some(0.0),
            http_status: Some(200),
            ttft_s: events.first().copied(),
            first_content_s: events.get(1).copied(),
            event_times_s: events.to_vec(),
            completion_tokens_server: Some(tokens),
            prompt_tokens_server: Some(prompt),
            prompt_tokens_client: Some(prompt - 5),
            ..RequestRecord::default()
        }
    }

    fn failed() -> RequestRecord {
        RequestRecord {
            prompt_tokens_client: Some(7),
            error: Some(RequestError {
                kind: ErrorKind::HttpStatus,
                message: "HTTP 500".into(),
            }),
            ..RequestRecord::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn window_counts_what_happened_inside_it() {
        // Window [1, 3). A: ramp-up request (sent 0.5), 4 events at 0.2..0.8 after its send:
        // 0.7, 0.9 outside, 1.1, 1.3 inside → half of its 8 tokens; finishes at 1.3 (inside).
        // B: sent 1.5, events 0.1..1.3 → 1.6, 2.0, 2.4, 2.8 inside, 3.2 outside → 4/5 of 10;
        // still open at 3.0; first token inside (prompt counted). C: sent 2.5, first event at
        // 3.1 → no token inside, open at the end. D: failed inside the window: no tokens.
        let finished = |mut r: RequestRecord| {
            r.finished_at_s = Some(r.sent_at_s.unwrap() + r.latency_s());
            r
        };
        let records = vec![
            finished(ok(0.5, &[0.2, 0.4, 0.6, 0.8], 8, 10)),
            finished(ok(1.5, &[0.1, 0.5, 0.9, 1.3, 1.7], 10, 20)),
            finished(ok(2.5, &[0.6, 0.7], 2, 30)),
            RequestRecord {
                sent_at_s: Some(1.2),
                finished_at_s: Some(1.4),
                ..failed()
            },
        ];
        let window = crate::loadgen::TimedWindow {
            ramp_up: std::time::Duration::from_secs(1),
            duration: std::time::Duration::from_secs(2),
        };
        let w = summarize_window(&records, window, 3, &|_| None);
        assert_eq!((w.ramp_up_s, w.duration_s), (1.0, 2.0));
        assert_eq!((w.sent_in_ramp_up, w.sent_in_window), (1, 3));
        assert!(close(w.output_tokens_in_window, 4.0 + 8.0), "{w:?}");
        assert_eq!(
            w.input_tokens_in_window, 20,
            "only B's first token is inside"
        );
        assert_eq!(w.completed_in_window, 1, "only A finished inside");
        assert_eq!(w.in_flight_at_end, 2, "B and C");
        assert_eq!(w.prompts_reused, 1, "4 requests over 3 distinct prompts");
    }

    #[test]
    fn metrics_by_hand() {
        // A: TTFT 0.1, events at 0.1, 0.2, 0.4 → ITLs 0.1, 0.2; E2E 0.4; 5 tokens → TPOT 0.3/4.
        // B: TTFT 0.2, events at 0.2, 0.3 → ITL 0.1; E2E 0.3; 1 token → no TPOT.
        let records = vec![
            ok(0.0, &[0.1, 0.2, 0.4], 5, 20),
            ok(0.5, &[0.2, 0.3], 1, 30),
            failed(),
        ];
        let m = compute_metrics(&records, 2.0, &[50.0, 99.0], &Goodput::default(), &|_| None);
        assert_eq!((m.completed, m.failed), (2, 1));
        assert_eq!(
            (m.total_input, m.total_output),
            (50, 6),
            "server prompt counts of successful requests"
        );
        assert!(close(m.request_throughput, 1.0) && close(m.output_throughput, 3.0));
        assert!(close(m.total_token_throughput, 28.0));
        assert!(
            close(m.ttft.mean, 150.0) && close(m.ttft.median, 150.0) && close(m.ttft.std, 50.0)
        );
        assert_eq!(m.tpot.percentiles.len(), 2);
        assert!(
            close(m.tpot.mean, 75.0),
            "only requests with > 1 token: {}",
            m.tpot.mean
        );
        // ITL samples 100, 200, 100 ms: mean 133.33, median 100, p99 = 100 + 0.98·... sorted [100,100,200]
        assert!(close(m.itl.mean, 400.0 / 3.0) && close(m.itl.median, 100.0));
        assert!(close(m.itl.percentile(99.0).unwrap(), 198.0));
        assert!(close(m.e2el.mean, 350.0));
        assert_eq!(
            m.input_lens,
            vec![20, 30, 7],
            "failed requests keep the client count"
        );
        assert_eq!(m.output_lens, vec![5, 1, 0]);
        assert_eq!(m.request_goodput, None);
        // Old TTFT definition (first content) is kept separately.
        assert!(close(m.ttft_content.mean, 250.0));
    }

    #[test]
    fn goodput_uses_every_given_slo() {
        let records = vec![
            ok(0.0, &[0.1, 0.2, 0.4], 5, 20),
            ok(0.5, &[0.2, 0.3], 1, 30),
        ];
        let ttft_only = Goodput {
            ttft_ms: Some(150.0),
            ..Goodput::default()
        };
        let m = compute_metrics(&records, 2.0, &[99.0], &ttft_only, &|_| None);
        assert!(
            close(m.request_goodput.unwrap(), 0.5),
            "only A meets TTFT ≤ 150 ms"
        );
        // TPOT of a 1-token request counts as 0 for goodput; A's TPOT is 75 ms.
        let tpot = Goodput {
            tpot_ms: Some(50.0),
            ..Goodput::default()
        };
        assert!(close(
            compute_metrics(&records, 2.0, &[99.0], &tpot, &|_| None)
                .request_goodput
                .unwrap(),
            0.5
        ));
        let both = Goodput {
            ttft_ms: Some(1000.0),
            e2el_ms: Some(300.0),
            ..Goodput::default()
        };
        assert!(close(
            compute_metrics(&records, 2.0, &[99.0], &both, &|_| None)
                .request_goodput
                .unwrap(),
            0.5
        ));
        // The SLO is inclusive (vLLM: slo >= value).
        let exact = Goodput {
            e2el_ms: Some(400.0),
            ..Goodput::default()
        };
        assert!(close(
            compute_metrics(&records, 2.0, &[99.0], &exact, &|_| None)
                .request_goodput
                .unwrap(),
            1.0
        ));
    }

    #[test]
    fn output_tokens_fall_back_to_tokenizer_then_events() {
        let mut no_usage = ok(0.0, &[0.1, 0.2, 0.3], 0, 10);
        no_usage.completion_tokens_server = None;
        no_usage.content_events = 2;
        no_usage.generated_text = "a b c".into();
        let records = vec![no_usage];
        let by_tokenizer = compute_metrics(&records, 1.0, &[99.0], &Goodput::default(), &|t| {
            Some(t.len() as u32)
        });
        assert_eq!(by_tokenizer.output_lens, vec![5]);
        assert_eq!(by_tokenizer.output_token_sources.client_tokenizer, 1);
        let by_events = compute_metrics(&records, 1.0, &[99.0], &Goodput::default(), &|_| None);
        assert_eq!(by_events.output_lens, vec![2]);
        assert_eq!(by_events.output_token_sources.client_events, 1);
    }

    #[test]
    fn empty_and_all_failed_runs_report_zeros() {
        let m = compute_metrics(
            &[failed(), failed()],
            1.0,
            &[99.0],
            &Goodput::default(),
            &|_| None,
        );
        assert_eq!((m.completed, m.failed, m.total_output), (0, 2, 0));
        assert_eq!((m.ttft.mean, m.itl.median, m.e2el.std), (0.0, 0.0, 0.0));
        assert_eq!(
            (m.max_output_tokens_per_s, m.max_concurrent_requests),
            (0.0, 0)
        );
    }

    #[test]
    fn peaks_follow_vllm_buckets() {
        // Two requests overlapping in second 0; events: A at 0.1, 0.2, 1.5; B (sent 0.5) at 0.6, 0.7.
        let records = vec![
            ok(0.0, &[0.1, 0.2, 1.5], 3, 10),
            ok(0.5, &[0.1, 0.2], 2, 10),
        ];
        let (tokens, concurrent) = peaks(&records);
        assert_eq!(tokens, 4.0, "bucket 0 holds 0.1, 0.2, 0.6, 0.7");
        assert_eq!(concurrent, 2);
    }
}
