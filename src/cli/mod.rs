//! Command line: thin — parse arguments, call the library, render.
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

pub mod apply;
pub mod bench;
pub mod demo;
pub mod images;
pub mod plan;
pub mod report;
pub mod schema;
pub mod sim;
pub mod state;
pub mod unlock;
pub mod validate;
pub mod worker;

#[derive(Debug, Parser)]
#[command(
    name = "isobench",
    version,
    about = "Did this change really make vLLM faster? Declarative, resumable, GPU-aware benchmark campaigns."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the embedded quickstart campaign (simulated servers, no GPU) to a directory and
    /// apply it: baseline vs human vs agent, with a report.
    Demo(demo::DemoArgs),
    /// Show what `apply` would do: every node with an action and a reason. Touches nothing.
    /// Exit code: 0 success, 1 error; with `--detailed-exitcode` 2 when changes are pending.
    Plan(plan::PlanArgs),
    /// Per commit and arm: is its image here, in its registry, buildable from its recipe, or
    /// missing? Registry lookups use the Docker config's credentials (helpers included).
    /// Exit code: 0 every image can be obtained, 1 otherwise.
    Images(images::ImagesArgs),
    /// Run the plan: only what is not done yet. After a crash or Ctrl-C, run it again to resume.
    /// Exit code: 0 all succeeded, 1 a step failed, 130 interrupted.
    Apply(apply::ApplyArgs),
    /// Inspect the recorded state: `state list MANIFEST`, `state show MANIFEST ADDRESS`.
    State(state::StateArgs),
    /// Clear a stale lock on a state directory (refuses while a live process holds it).
    Unlock(unlock::UnlockArgs),
    /// Check manifests and report every problem with its location.
    Validate(validate::ValidateArgs),
    /// Print the manifest JSON Schema (for editors; also in schemas/manifest.schema.json).
    Schema,
    /// Run the load generator alone against a running server: a drop-in for `vllm bench serve`.
    ///
    /// Flags and defaults are vLLM's (`--backend openai`, `--num-prompts 1000`, random
    /// 1024/128 tokens, no concurrency limit, no warm-up, EOS respected). Campaigns do not use
    /// these defaults: a manifest's `[load]` keeps the seed's (openai-chat, 512/64 tokens, 100
    /// prompts, concurrency 16, 10 warm-ups, EOS ignored).
    Bench(bench::BenchArgs),
    /// Serve an OpenAI-compatible simulator with exactly configured timing and faults.
    Sim(sim::SimArgs),
    /// Tables, verdicts with confidence, failure breakdown, HTML and seed-compatible files.
    Report(report::ReportArgs),
    /// Print a shell completion script: `isobench completions bash > /etc/bash_completion.d/isobench`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): `isobench man > isobench.1`, `isobench man apply > isobench-apply.1`.
    Man {
        /// The subcommand whose page to print (default: the overview page).
        subcommand: Option<String>,
    },
    /// Runs one server session inside a Slurm job (started by `apply`; docs/cluster.md).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

/// The clap definition as a `clap::Command` (for completions, the man page and tests).
pub fn command() -> clap::Command {
    Cli::command()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Die quietly on a closed pipe (`isobench plan ... | head`), like other Unix tools — but
    // not `apply`/`demo`: killed by SIGPIPE mid-campaign they would leave servers running.
    // They keep Rust's default (SIGPIPE ignored) and write through `util::term::{out,
    // err_line}`, which ignore EPIPE. Servers they spawn get the default disposition back
    // (std's `Command` resets SIGPIPE in the child).
    if !matches!(cli.command, Command::Apply(_) | Command::Demo(_)) {
        // SAFETY: resetting a signal disposition at start-up, before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Plan(args) => plan::run_plan(args).await,
            Command::Apply(args) => apply::run_apply(args).await,
            Command::Images(args) => images::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::State(args) => state::run_state(args),
            Command::Unlock(args) => unlock::run_unlock(args),
            Command::Validate(args) => validate::run_validate(args),
            Command::Schema => schema::run_schema(),
            Command::Bench(args) => bench::run(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Report(args) => report::run(args),
            Command::Worker(args) => worker::run(args).await,
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut command(), "isobench", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { subcommand } => man_page(subcommand.as_deref()),
        }
    });
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}

/// `isobench man [SUBCOMMAND]`: the page generated from the clap definitions.
fn man_page(subcommand: Option<&str>) -> miette::Result<ExitCode> {
    let cmd = command();
    let page = match subcommand {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd.find_subcommand(name) else {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                return Err(miette::miette!(
                    "no subcommand `{name}`; valid: {}",
                    names.join(", ")
                ));
            };
            // The page is named like git's: `isobench-apply(1)`.
            // (Leaked: clap takes `'static` names without its `string` feature; once per run.)
            let page_name: &'static str = Box::leak(format!("isobench-{name}").into_boxed_str());
            sub.clone().name(page_name)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| miette::miette!("{e}"))?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| miette::miette!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
