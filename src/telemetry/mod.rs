//! What a measured window cost and how the server saw it, beside the client's own figures:
//! the server's Prometheus metrics (`prometheus`), GPU telemetry through NVML (`gpu`) and the
//! CPU time of the server's processes (`host`). Each collector that cannot run on this server
//! or host is recorded as absent with its reason; none of them ever fails a measurement.
//! See docs/telemetry.md.

pub mod gpu;
pub mod host;
pub mod prometheus;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The raw series' file names in an attempt directory.
pub const SERVER_METRICS_FILE: &str = "server-metrics.jsonl";
pub const GPU_TELEMETRY_FILE: &str = "gpu-telemetry.jsonl";

/// What one measured window collects.
pub struct WindowConfig {
    /// The Prometheus endpoint's URL; `None`: not scraped (`server.metrics_path = ""`).
    pub metrics_url: Option<String>,
    /// Gauge scrapes between the window's first and last.
    pub scrape_every: Duration,
    /// NVML indices of the session's GPUs.
    pub gpus: Vec<u32>,
    /// GPU samples per second (0: none).
    pub gpu_hz: u32,
    /// Whose CPU time counts.
    pub cpu: Result<host::CpuSource, String>,
    /// Where the raw series go (the attempt directory).
    pub dir: PathBuf,
}

/// The collectors of one measured window, started together at its start.
pub struct Window {
    server: Option<prometheus::ServerMetricsRecorder>,
    gpu: gpu::GpuSampler,
    host: host::HostCpu,
}

/// The window's three summaries (each `{"available": false, "reason"}` when absent).
pub struct WindowSummary {
    pub server: Value,
    pub gpu: Value,
    pub host: Value,
}

impl Window {
    pub async fn start(config: WindowConfig) -> Window {
        let host = host::HostCpu::start(config.cpu).await;
        let (gpus, hz, raw) = (
            config.gpus,
            config.gpu_hz,
            config.dir.join(GPU_TELEMETRY_FILE),
        );
        // NVML's initialisation blocks (driver calls): off the async threads.
        let gpu = match tokio::task::spawn_blocking(move || gpu::GpuSampler::start(&gpus, hz, raw))
            .await
        {
            Ok(s) => s,
            Err(e) => gpu::GpuSampler::absent(&format!("NVML start: {e}")),
        };
        let server = match config.metrics_url {
            Some(url) => Some(
                prometheus::ServerMetricsRecorder::start(prometheus::ScrapeConfig {
                    url,
                    interval: config.scrape_every,
                    raw_path: config.dir.join(SERVER_METRICS_FILE),
                })
                .await,
            ),
            None => None,
        };
        Window { server, gpu, host }
    }

    /// Stops every collector: the last scrape, the last GPU sample, the CPU time.
    pub async fn finish(self) -> WindowSummary {
        let server = match self.server {
            Some(s) => s.finish().await,
            None => absent("server.metrics_path is \"\": not scraped"),
        };
        let gpu_sampler = self.gpu;
        let gpu = tokio::task::spawn_blocking(move || gpu_sampler.finish())
            .await
            .unwrap_or_else(|e| absent(&format!("NVML: {e}")));
        let host = self.host.finish().await;
        WindowSummary { server, gpu, host }
    }
}

impl WindowSummary {
    /// The `isobench.telemetry` object: the three summaries and what follows from them.
    pub fn to_json(&self, output_tokens: u64, client_mean_ttft_ms: f64) -> Value {
        json!({
            "server": self.server,
            "gpu": self.gpu,
            "host": self.host,
            "derived": derive(&self.server, &self.gpu, &self.host, output_tokens, client_mean_ttft_ms),
        })
    }
}

/// A collector's summary when it has nothing: `{"available": false, "reason": ...}`.
pub fn absent(reason: &str) -> Value {
    json!({"available": false, "reason": reason})
}

/// Figures derived from the window's telemetry and the client's result: energy per output
/// token, CPU per output token, and the server's TTFT mean beside the client's.
pub fn derive(
    server: &Value,
    gpu: &Value,
    host: &Value,
    output_tokens: u64,
    client_mean_ttft_ms: f64,
) -> Value {
    let tokens = (output_tokens > 0).then_some(output_tokens as f64);
    let energy_j = gpu["energy_j"].as_f64();
    let cpu_s = host["cpu_s"].as_f64();
    let server_ttft_ms = server["histograms"]["ttft"]["mean_s"]
        .as_f64()
        .map(|s| s * 1000.0);
    let per = |v: Option<f64>| Some(v? / tokens?);
    json!({
        "energy_j": energy_j,
        "j_per_output_token": per(energy_j),
        "output_tokens_per_joule": energy_j.filter(|e| *e > 0.0).and_then(|e| Some(tokens? / e)),
        "cpu_s_per_output_token": per(cpu_s),
        "server_mean_ttft_ms": server_ttft_ms,
        "client_mean_ttft_ms": client_mean_ttft_ms,
        // Positive: the client saw a later first token than the server (network, SSE framing,
        // client scheduling); the gap's size is the standing fidelity check.
        "ttft_gap_ms": server_ttft_ms.map(|s| client_mean_ttft_ms - s),
    })
}
