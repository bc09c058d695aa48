//! isobench: declarative, resumable, GPU-aware benchmark campaigns for LLM inference servers.
//!
//! Data flows one way (see ARCHITECTURE.md):
//! manifest text → [`manifest`] (typed, validated) → [`pipeline`] (expanded DAG with keys)
//! → [`plan`] (diff against [`state`]) → [`exec`] (scheduler, [`runtime`]s, [`loadgen`])
//! → results + journal → [`report`].
pub mod cli;
pub mod exec;
pub mod failure;
pub mod loadgen;
pub mod manifest;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod runtime;
pub mod sim;
pub mod state;
pub mod telemetry;
pub mod util;

/// Version of the measuring client; part of every measure node's cache key, so a change in how
/// isobench measures invalidates old measurements instead of mixing them with new ones.
pub const LOADGEN_VERSION: &str = concat!("isobench-loadgen/", env!("CARGO_PKG_VERSION"));
