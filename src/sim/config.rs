//! The simulator's configuration: latency model, stream shape and faults.
//!
//! One struct serves both the config file (`isobench sim --config sim.toml`) and the library
//! ([`crate::sim::spawn`]). Times are plain milliseconds so that a test image's latency model is
//! a readable file an agent's patch can change (`itl_ms = 8.0`).
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything `isobench sim` can be told. Missing keys in a file take these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Address to bind (use `0.0.0.0` inside a container).
    pub host: String,
    /// Port to bind; 0 picks a free one (printed on stdout).
    pub port: u16,
    /// Served model name(s); requests naming another model get a 404 like vLLM's.
    /// A file may give one name (`model = "tiny"`) or several.
    #[serde(deserialize_with = "one_or_many")]
    pub model: Vec<String>,

    // --- latency model -------------------------------------------------------------------
    /// Time to first token before prefill cost, in ms.
    pub ttft_ms: f64,
    /// Prefill cost per prompt token, in ms (added to the TTFT).
    pub prefill_ms_per_token: f64,
    /// Gap between successive chunks, in ms (one gap per chunk, whatever its token count).
    pub itl_ms: f64,
    /// Per-gap jitter: each gap is drawn uniformly from `itl_ms ± jitter_ms` (mean preserved).
    pub jitter_ms: f64,
    /// Slowdown per additional running request: every delay is multiplied by
    /// `1 + concurrency_slowdown · (running − 1)`, so output throughput saturates at
    /// `1 / (itl · concurrency_slowdown)` chunks/s like a real batching server.
    pub concurrency_slowdown: f64,
    /// Requests generating at once; later ones wait (their TTFT includes the wait). 0 = no limit.
    pub max_num_seqs: usize,
    /// Each server process draws one speed factor from N(1, speed_noise_pct/100) at start and
    /// multiplies every delay with it, so separate server sessions differ like real servers do.
    pub speed_noise_pct: f64,
    /// Seed for the speed factor; unset = OS entropy (each process differs, which is the point).
    pub speed_noise_seed: Option<u64>,
    /// Seed for per-gap jitter and fault selection.
    pub seed: u64,

    // --- stream shape -------------------------------------------------------------------
    /// Tokens carried by each content chunk (vLLM under load merges tokens into one chunk).
    pub tokens_per_chunk: u32,
    /// Send a final usage-only chunk when the client asks for it (`stream_options.include_usage`).
    pub usage: bool,
    /// Chat: start with a role-only chunk (`delta: {role: assistant, content: ""}`) as vLLM does.
    pub role_chunk: bool,
    /// Output length when the request gives neither `max_tokens` nor `max_completion_tokens`.
    pub default_max_tokens: u32,
    /// Without `ignore_eos`, stop after this many tokens (finish_reason `stop`), like a model
    /// that emits EOS early. Unset = always generate the requested length.
    pub eos_after_tokens: Option<u32>,
    /// From this token on (0-based), generate the words of a second vocabulary instead of the
    /// usual ones: a server whose outputs part from an unchanged one's at exactly this token
    /// (for output-equivalence checks). Unset = the usual words throughout.
    pub diverge_after_tokens: Option<u32>,
    /// Tokenizer for exact prompt token counts (`tokenizer.json` or a directory holding one).
    pub tokenizer: Option<PathBuf>,
    /// Without a tokenizer, prompt tokens are estimated as ceil(chars / chars_per_token).
    pub chars_per_token: f64,
    /// Tokens a chat template adds per message (vLLM counts them in `usage.prompt_tokens`).
    pub chat_template_tokens: u32,

    // --- faults -------------------------------------------------------------------------
    /// Fraction of generation requests answered with HTTP 500.
    pub error_rate: f64,
    /// Fraction of streams cut mid-way (connection closed without finishing the body).
    pub disconnect_rate: f64,
    /// Fraction of streams with one malformed SSE event mid-way.
    pub malformed_rate: f64,
    /// Fraction of streams that stall for `stall_ms` mid-way.
    pub stall_rate: f64,
    /// Length of a stall, in ms.
    pub stall_ms: f64,
    /// Not ready for this many seconds after start: `/health` and every API answer 503.
    pub slow_start_s: f64,
    /// Crash when generation request number `crash_after + 1` arrives (the CLI exits non-zero).
    pub crash_after: Option<u64>,
    /// Line printed to stderr when the simulated crash happens.
    pub crash_message: String,
    /// Fail at start: print this to stderr and exit 1 (e.g. a CUDA OOM traceback line).
    pub fail_at_start: Option<String>,
    /// Like vLLM's `--api-key`: `/v1/*` requests without `Authorization: Bearer <key>` get 401.
    /// Never read from a config file (a secret does not belong in one): `isobench sim` takes it
    /// from `VLLM_API_KEY`, as vLLM does.
    #[serde(skip)]
    pub api_key: Option<String>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            host: "127.0.0.1".into(),
            port: 8000,
            model: vec!["sim".into()],
            ttft_ms: 20.0,
            prefill_ms_per_token: 0.0,
            itl_ms: 5.0,
            jitter_ms: 0.0,
            concurrency_slowdown: 0.0,
            max_num_seqs: 0,
            speed_noise_pct: 0.0,
            speed_noise_seed: None,
            seed: 0,
            tokens_per_chunk: 1,
            usage: true,
            role_chunk: true,
            default_max_tokens: 16,
            eos_after_tokens: None,
            diverge_after_tokens: None,
            tokenizer: None,
            chars_per_token: 4.0,
            chat_template_tokens: 0,
            error_rate: 0.0,
            disconnect_rate: 0.0,
            malformed_rate: 0.0,
            stall_rate: 0.0,
            stall_ms: 1000.0,
            slow_start_s: 0.0,
            crash_after: None,
            crash_message: "RuntimeError: isobench sim: simulated crash".into(),
            fail_at_start: None,
            api_key: None,
        }
    }
}

impl SimConfig {
    /// Defaults, but on a free port of 127.0.0.1 (for tests and embedding).
    pub fn ephemeral() -> SimConfig {
        SimConfig {
            port: 0,
            ..SimConfig::default()
        }
    }

    /// A zero-delay server: streams as fast as it can (for client capacity benchmarks).
    pub fn zero_delay() -> SimConfig {
        SimConfig {
            ttft_ms: 0.0,
            itl_ms: 0.0,
            ..SimConfig::ephemeral()
        }
    }

    /// Reads a TOML file; unknown keys are errors (a typo must not silently keep a default).
    pub fn from_file(path: &Path) -> Result<SimConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        SimConfig::from_toml(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<SimConfig, String> {
        let config: SimConfig = toml::from_str(text).map_err(|err| err.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges; every problem is listed at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let non_negative = [
            ("ttft_ms", self.ttft_ms),
            ("prefill_ms_per_token", self.prefill_ms_per_token),
            ("itl_ms", self.itl_ms),
            ("jitter_ms", self.jitter_ms),
            ("concurrency_slowdown", self.concurrency_slowdown),
            ("speed_noise_pct", self.speed_noise_pct),
            ("stall_ms", self.stall_ms),
            ("slow_start_s", self.slow_start_s),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                problems.push(format!("{name} must be a finite number ≥ 0 (got {value})"));
            }
        }
        let fractions = [
            ("error_rate", self.error_rate),
            ("disconnect_rate", self.disconnect_rate),
            ("malformed_rate", self.malformed_rate),
            ("stall_rate", self.stall_rate),
        ];
        for (name, value) in fractions {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("{name} must be within 0..=1 (got {value})"));
            }
        }
        let fault_sum =
            self.error_rate + self.disconnect_rate + self.malformed_rate + self.stall_rate;
        if fault_sum > 1.0 + 1e-9 {
            problems.push(format!(
                "error_rate + disconnect_rate + malformed_rate + stall_rate must be ≤ 1 (got {fault_sum})"
            ));
        }
        if self.tokens_per_chunk == 0 {
            problems.push("tokens_per_chunk must be ≥ 1".into());
        }
        if !(self.chars_per_token.is_finite() && self.chars_per_token > 0.0) {
            problems.push(format!(
                "chars_per_token must be > 0 (got {})",
                self.chars_per_token
            ));
        }
        if self.model.is_empty() || self.model.iter().any(|m| m.is_empty()) {
            problems.push("model must name at least one non-empty model".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(de)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_override_defaults_and_missing_keys_keep_them() {
        let config = SimConfig::from_toml("itl_ms = 8.5\nmodel = [\"m1\", \"m2\"]\n").unwrap();
        assert_eq!(config.itl_ms, 8.5);
        assert_eq!(config.model, vec!["m1".to_string(), "m2".to_string()]);
        assert_eq!(config.ttft_ms, SimConfig::default().ttft_ms);
        let config = SimConfig::from_toml("model = \"tiny\"").unwrap();
        assert_eq!(config.model, vec!["tiny".to_string()]);
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_rejected() {
        let err = SimConfig::from_toml("itl_msec = 3.0").unwrap_err();
        assert!(err.contains("itl_msec"), "{err}");
        let err = SimConfig::from_toml("error_rate = 1.5\ntokens_per_chunk = 0").unwrap_err();
        assert!(
            err.contains("error_rate") && err.contains("tokens_per_chunk"),
            "{err}"
        );
        let err = SimConfig::from_toml("error_rate = 0.6\nstall_rate = 0.6").unwrap_err();
        assert!(err.contains("≤ 1"), "{err}");
    }
}
