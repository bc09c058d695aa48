//! SSE parser throughput on a vLLM-like chat stream (the client's hot path besides JSON):
//! 200,000 events of ~110 bytes, fed in reads of 1460, 4096 and 16384 bytes.
//!
//!     cargo bench --bench sse
//!
//! Prints the best of 9 runs per read size: ns per event and MB/s. Used to check that the size
//! limits (issue 17, item 5) cost nothing measurable.
use isobench::loadgen::sse::{SseEvent, SseParser};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn stream(events: usize) -> Vec<u8> {
    let mut s = String::from(
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    );
    for i in 0..events {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{}\"}},\"finish_reason\":null}}]}}\n\n",
            i % 1000
        ));
        if i % 5000 == 0 {
            s.push_str(": keep-alive\n\n");
        }
    }
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

fn run(bytes: &[u8], read: usize) -> (Duration, usize) {
    let started = Instant::now();
    let mut parser = SseParser::new();
    let mut events = 0usize;
    let mut payload = 0usize;
    let mut sink = |event: SseEvent<'_>| {
        events += 1;
        if let SseEvent::Data(text) = event {
            payload += text.len();
        }
    };
    for chunk in bytes.chunks(read) {
        parser.feed(black_box(chunk), &mut sink);
    }
    parser.finish(&mut sink);
    black_box(payload);
    (started.elapsed(), events)
}

fn main() {
    let bytes = stream(200_000);
    for read in [1460, 4096, 16384] {
        let mut best = Duration::MAX;
        let mut events = 0;
        for _ in 0..9 {
            let (t, n) = run(&bytes, read);
            best = best.min(t);
            events = n;
        }
        println!(
            "reads of {read:>5} B: {:>6.1} ns/event, {:>7.0} MB/s ({events} events, {} bytes)",
            best.as_nanos() as f64 / events as f64,
            bytes.len() as f64 / best.as_secs_f64() / 1e6,
            bytes.len()
        );
    }
}
