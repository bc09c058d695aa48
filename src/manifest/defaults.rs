//! The one place where defaults live: the seed harness's settings.
//!
//! Campaign-level settings override these; commit-level settings override the campaign's.

/// Pipeline used when a manifest names none.
pub const PIPELINE: &str = "serve-bench";
/// State directory, relative to the manifest.
pub const STATE_DIR: &str = ".isobench";
/// Trials per arm.
pub const REPEATS: u32 = 1;

// server
pub const RUNTIME: super::types::RuntimeKind = super::types::RuntimeKind::Docker;
pub const SERVER_COMMAND: &str = "python3 -m vllm.entrypoints.openai.api_server --model {{ model.path }} --served-model-name {{ model.served_name }} --host 0.0.0.0 --port {{ port }}{% if server.max_model_len %} --max-model-len {{ server.max_model_len }}{% endif %}";
pub const CONTAINER_PORT: u16 = 8000;
pub const READY_PATH: &str = "/health";
pub const READY_TIMEOUT: &str = "300s";
pub const READY_INTERVAL: &str = "500ms";
pub const GPUS_PER_SERVER: u32 = 1;
/// vLLM's Prometheus endpoint.
pub const METRICS_PATH: &str = "/metrics";

// load (the seed's `vllm bench serve` settings)
pub const BACKEND: super::types::Backend = super::types::Backend::OpenAiChat;
pub const CHAT_ENDPOINT: &str = "/v1/chat/completions";
pub const COMPLETIONS_ENDPOINT: &str = "/v1/completions";
pub const INPUT_LEN: u32 = 512;
pub const OUTPUT_LEN: u32 = 64;
pub const RANGE_RATIO: f64 = 0.0;
pub const PREFIX_LEN: u32 = 0;
// `prefix_repetition` (vLLM's `--prefix-repetition-*` defaults)
pub const PREFIX_REPETITION_PREFIX_LEN: u32 = 256;
pub const PREFIX_REPETITION_SUFFIX_LEN: u32 = 256;
pub const PREFIX_REPETITION_NUM_PREFIXES: u32 = 10;
pub const PREFIX_REPETITION_OUTPUT_LEN: u32 = 128;
pub const NUM_PROMPTS: u32 = 100;
pub const CONCURRENCY: u32 = 16;
pub const BURSTINESS: f64 = 1.0;
pub const WARMUP: u32 = 10;
/// `load.search`: stop when the bracket is within 10 % (8 probes over [1, 64] req/s).
pub const SEARCH_TOLERANCE: f64 = 0.1;
/// `load.search`: a probe passes when 99 % of its requests meet the SLOs ("p99 ≤ SLO").
pub const SEARCH_ATTAINMENT: f64 = 0.99;
pub const TIMEOUT: &str = "600s";
/// A timed run's unmeasured start (`load.ramp_up`): see docs/loadgen.md, "Time-based runs",
/// for the measurement behind it.
pub const RAMP_UP: &str = "5s";
pub const SEED: u64 = 0;
pub const IGNORE_EOS: bool = true;
pub const TEMPERATURE: f64 = 0.0;

// resources
pub const GPU_IDLE_MEMORY_MIB: u64 = 1024;
pub const GPU_IDLE_WAIT: &str = "120s";
pub const PULL_PARALLELISM: u32 = 2;
/// GPU telemetry rate: enough to see a power or clock step of a 100 ms decode burst.
pub const TELEMETRY_HZ: u32 = 10;
/// The most GPU telemetry samples per second (NVML's counters update about every 20 ms).
pub const TELEMETRY_HZ_MAX: u32 = 100;

// comparisons
pub const CONFIDENCE: f64 = 0.95;
