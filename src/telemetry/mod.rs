//! What a measured window cost and how the server saw it, beside the client's own figures:
//! the server's Prometheus metrics (`prometheus`), GPU telemetry through NVML (`gpu`) and the
//! CPU time of the server's processes (`host`). Each collector that cannot run on this server
//! or host is recorded as absent with its reason; none of them ever fails a measurement.
//! See docs/telemetry.md.

pub mod gpu;
pub mod host;
pub mod prometheus;

use serde_json::{Value, json};

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
