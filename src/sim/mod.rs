//! `isobench sim`: an OpenAI-compatible streaming server whose timing is exactly what it is told.
//!
//! It is the ground truth for the load generator's accuracy tests, the way to try a manifest
//! without GPUs, and the server inside test Docker images. Endpoints: `POST /v1/chat/completions`,
//! `POST /v1/completions` (streaming and not), `GET /v1/models`, `GET /health`, `GET /metrics`
//! (Prometheus text), `GET /version`.
//!
//! Timing model (all delays in ms, multiplied by the process's speed factor and by the
//! concurrency slowdown `1 + concurrency_slowdown · (running − 1)`):
//! - first chunk at `ttft_ms + prefill_ms_per_token · prompt_tokens` after admission
//!   (the role-only chunk, if on, goes out together with the first content chunk, as in vLLM);
//! - each further chunk `itl_ms ± jitter_ms` after the previous chunk's *scheduled* time, so
//!   timer error never accumulates;
//! - the usage chunk and `data: [DONE]` follow the last content chunk at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), isobench::sim::SimError> {
//! use isobench::sim::{self, SimConfig};
//! let sim = sim::spawn(SimConfig { itl_ms: 10.0, ..SimConfig::ephemeral() }).await?;
//! println!("http://{}", sim.addr);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
mod config;
mod server;
mod stream;

pub use config::SimConfig;
pub use server::{SimError, SimHandle, SimStats, spawn};
