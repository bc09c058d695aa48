//! The console summary of a run: vLLM's labels and layout.
use super::json::p_word;
use super::result::BenchResult;

impl BenchResult {
    /// vLLM's console summary: same labels, same layout.
    pub fn summary_text(&self) -> String {
        use std::fmt::Write as _;
        let m = &self.metrics;
        let run = &self.run;
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(out, "{label:<40} {value:<10}");
        };
        line("Successful requests:", m.completed.to_string());
        line("Failed requests:", m.failed.to_string());
        if let Some(c) = run.max_concurrency {
            line("Maximum request concurrency:", c.to_string());
        }
        if run.request_rate.is_finite() {
            line(
                "Request rate configured (RPS):",
                format!("{:.2}", run.request_rate),
            );
        }
        if let Some(w) = &self.window {
            line(
                "Ramp-up, not measured (s):",
                format!("{:.2} ({} requests)", w.ramp_up_s, w.sent_in_ramp_up),
            );
            line(
                "Requests in flight at window end:",
                w.in_flight_at_end.to_string(),
            );
        }
        line("Benchmark duration (s):", format!("{:.2}", self.duration_s));
        line("Total input tokens:", m.total_input.to_string());
        line("Total generated tokens:", m.total_output.to_string());
        line(
            "Request throughput (req/s):",
            format!("{:.2}", m.request_throughput),
        );
        if let Some(goodput) = m.request_goodput {
            line("Request goodput (req/s):", format!("{goodput:.2}"));
        }
        line(
            "Output token throughput (tok/s):",
            format!("{:.2}", m.output_throughput),
        );
        line(
            "Peak output token throughput (tok/s):",
            format!("{:.2}", m.max_output_tokens_per_s),
        );
        line(
            "Peak concurrent requests:",
            format!("{:.2}", m.max_concurrent_requests as f64),
        );
        line(
            "Total token throughput (tok/s):",
            format!("{:.2}", m.total_token_throughput),
        );
        let sections = [
            ("ttft", "TTFT", "Time to First Token", &m.ttft),
            (
                "tpot",
                "TPOT",
                "Time per Output Token (excl. 1st token)",
                &m.tpot,
            ),
            ("itl", "ITL", "Inter-token Latency", &m.itl),
            ("e2el", "E2EL", "End-to-end Latency", &m.e2el),
            (
                "client_queue_time",
                "Client Queue Time",
                "Client-side Queueing",
                &m.client_queue_time,
            ),
            (
                "e2el_including_client_queue",
                "E2EL incl. Client Queue",
                "Queue-inclusive End-to-end Latency",
                &m.e2el_including_client_queue,
            ),
        ];
        let mut body = out;
        for (key, name, header, summary) in sections {
            if !run.percentile_metrics.iter().any(|p| p == key) {
                continue;
            }
            let _ = writeln!(body, "{header:-^50}");
            let _ = writeln!(
                body,
                "{:<40} {:<10}",
                format!("Mean {name} (ms):"),
                format!("{:.2}", summary.mean)
            );
            let _ = writeln!(
                body,
                "{:<40} {:<10}",
                format!("Median {name} (ms):"),
                format!("{:.2}", summary.median)
            );
            for (p, value) in &summary.percentiles {
                let _ = writeln!(
                    body,
                    "{:<40} {:<10}",
                    format!("P{} {name} (ms):", p_word(*p)),
                    format!("{value:.2}")
                );
            }
        }
        format!(
            "{:=^50}\n{body}{}\n",
            " Serving Benchmark Result ",
            "=".repeat(50)
        )
    }
}
