//! `isobench sim`: parse flags (over an optional config file), start the simulator, wait.
use crate::sim::{self, SimConfig, SimError};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Every flag overrides the same key of `--config FILE` (see `docs/loadgen.md` for the file).
#[derive(Debug, Default, clap::Args)]
pub struct SimArgs {
    /// TOML file with any of the keys below (snake_case: `itl_ms = 8.0`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1; use 0.0.0.0 in a container].
    #[arg(long)]
    pub host: Option<String>,
    /// Port [default: 8000]; 0 picks a free one, printed as `isobench sim listening on ADDR`.
    #[arg(long)]
    pub port: Option<u16>,
    /// Served model name (repeat for several) [default: sim].
    #[arg(long = "model", alias = "served-model-name")]
    pub model: Vec<String>,
    /// Time to first token in ms (before prefill cost).
    #[arg(long)]
    pub ttft_ms: Option<f64>,
    /// Prefill cost per prompt token in ms.
    #[arg(long)]
    pub prefill_ms_per_token: Option<f64>,
    /// Gap between chunks in ms.
    #[arg(long)]
    pub itl_ms: Option<f64>,
    /// Uniform per-gap jitter (± ms).
    #[arg(long)]
    pub jitter_ms: Option<f64>,
    /// Delay multiplier per extra running request: 1 + s·(running − 1).
    #[arg(long)]
    pub concurrency_slowdown: Option<f64>,
    /// Requests generating at once (0 = unlimited); others wait.
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Per-process speed factor noise: one draw from N(1, pct/100) at start.
    #[arg(long)]
    pub speed_noise_pct: Option<f64>,
    /// Seed of the speed factor (default: OS entropy, so every process differs).
    #[arg(long)]
    pub speed_noise_seed: Option<u64>,
    /// Seed of jitter and fault selection.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tokens per content chunk.
    #[arg(long)]
    pub tokens_per_chunk: Option<u32>,
    /// Send the usage chunk when asked (`--usage=false` to act like a server without it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub usage: Option<bool>,
    /// Chat: role-only first chunk.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub role_chunk: Option<bool>,
    /// Output length when a request sets none.
    #[arg(long)]
    pub default_max_tokens: Option<u32>,
    /// Without ignore_eos, stop after this many tokens.
    #[arg(long)]
    pub eos_after_tokens: Option<u32>,
    /// tokenizer.json (or a model directory) for exact prompt token counts.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Without a tokenizer: prompt tokens = ceil(chars / this).
    #[arg(long)]
    pub chars_per_token: Option<f64>,
    /// Tokens a chat template adds per message.
    #[arg(long)]
    pub chat_template_tokens: Option<u32>,
    /// Fraction of requests answered with HTTP 500.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Fraction of streams cut mid-way.
    #[arg(long)]
    pub disconnect_rate: Option<f64>,
    /// Fraction of streams with a malformed SSE event.
    #[arg(long)]
    pub malformed_rate: Option<f64>,
    /// Fraction of streams that stall mid-way.
    #[arg(long)]
    pub stall_rate: Option<f64>,
    /// Stall length in ms.
    #[arg(long)]
    pub stall_ms: Option<f64>,
    /// Not ready (503) for this many seconds.
    #[arg(long)]
    pub slow_start_s: Option<f64>,
    /// Crash (exit 1) when generation request N+1 arrives.
    #[arg(long)]
    pub crash_after: Option<u64>,
    /// Line printed to stderr on the simulated crash.
    #[arg(long)]
    pub crash_message: Option<String>,
    /// Print this to stderr and exit 1 instead of starting.
    #[arg(long, value_name = "MESSAGE")]
    pub fail_at_start: Option<String>,
}

impl SimArgs {
    /// The file's configuration (or the defaults) with every given flag applied on top.
    pub fn to_config(&self) -> Result<SimConfig, String> {
        let mut c = match &self.config {
            Some(path) => SimConfig::from_file(path)?,
            None => SimConfig::default(),
        };
        macro_rules! apply {
            ($($field:ident),* $(,)?) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        apply!(
            host,
            port,
            ttft_ms,
            prefill_ms_per_token,
            itl_ms,
            jitter_ms,
            concurrency_slowdown,
            max_num_seqs,
            speed_noise_pct,
            seed,
            tokens_per_chunk,
            usage,
            role_chunk,
            default_max_tokens,
            chars_per_token,
            chat_template_tokens,
            error_rate,
            disconnect_rate,
            malformed_rate,
            stall_rate,
            stall_ms,
            slow_start_s,
            crash_message,
        );
        macro_rules! apply_some {
            ($($field:ident),* $(,)?) => { $( if self.$field.is_some() { c.$field = self.$field.clone(); } )* };
        }
        apply_some!(
            speed_noise_seed,
            eos_after_tokens,
            tokenizer,
            crash_after,
            fail_at_start
        );
        if !self.model.is_empty() {
            c.model = self.model.clone();
        }
        // As vLLM: the key comes from the environment, never from the command line.
        c.api_key = std::env::var("VLLM_API_KEY").ok().filter(|k| !k.is_empty());
        c.validate()?;
        Ok(c)
    }
}

pub async fn run(args: SimArgs) -> miette::Result<ExitCode> {
    let config = args.to_config().map_err(|err| miette::miette!("{err}"))?;
    let crash_message = config.crash_message.clone();
    let handle = match sim::spawn(config.clone()).await {
        Ok(handle) => handle,
        Err(SimError::FailAtStart(message)) => {
            eprintln!("{message}");
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => return Err(miette::miette!("{err}")),
    };
    // The one line a caller parses to learn the port (stdout, flushed at once).
    println!("isobench sim listening on {}", handle.addr);
    let _ = std::io::stdout().flush();
    eprintln!(
        "isobench sim: model {:?}, ttft {} ms + {} ms/prompt token, itl {} ± {} ms, {} token(s)/chunk, speed factor {:.4}",
        config.model,
        config.ttft_ms,
        config.prefill_ms_per_token,
        config.itl_ms,
        config.jitter_ms,
        config.tokens_per_chunk,
        handle.speed_factor()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| miette::miette!("cannot watch SIGTERM: {err}"))?;
    tokio::select! {
        _ = handle.crashed() => {
            eprintln!("{crash_message}");
            // A crashed server process dies at once, mid-stream connections and all.
            std::process::exit(1);
        }
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sim.toml");
        std::fs::write(&file, "itl_ms = 7.0\nttft_ms = 99.0\nusage = false\n").unwrap();
        let wrapper = Wrapper::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--itl-ms",
            "3",
            "--usage",
            "--crash-after",
            "5",
        ]);
        let config = wrapper.args.to_config().unwrap();
        assert_eq!(config.itl_ms, 3.0, "flag wins");
        assert_eq!(
            config.ttft_ms, 99.0,
            "file value kept where no flag is given"
        );
        assert!(config.usage, "a bare boolean flag means true");
        assert_eq!(config.crash_after, Some(5));
        let wrapper = Wrapper::parse_from(["x", "--usage=false", "--error-rate", "2"]);
        assert!(wrapper.args.to_config().unwrap_err().contains("error_rate"));
    }
}
