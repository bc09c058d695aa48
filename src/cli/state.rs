//! `isobench state`: inspect the recorded state.
use super::plan::{PlanFormat, load_campaign};
use crate::state::{self, State};
use miette::{IntoDiagnostic, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Every recorded node: its last event, attempt and time.
    List {
        /// The campaign manifest.
        manifest: PathBuf,
        /// State directory (default: the manifest's `state`, else `.isobench` next to it).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Output format: `text` (one line per node) or `json` (an array of the latest
        /// journal entry per node, in journal order).
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
    },
    /// What happened to one node: its journal entries, failure, files and logs.
    Show {
        /// The campaign manifest.
        manifest: PathBuf,
        /// Node address (globs allowed).
        address: String,
        /// State directory (default: the manifest's `state`, else `.isobench` next to it).
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

pub fn run_state(args: StateArgs) -> Result<ExitCode> {
    match args.command {
        StateCommand::List {
            manifest,
            state,
            format,
        } => list(&manifest, state.as_deref(), format),
        StateCommand::Show {
            manifest,
            address,
            state,
        } => show(&manifest, &address, state.as_deref()),
    }
}

/// `state list`: the latest entry per node, in journal order.
fn list(manifest: &Path, state: Option<&Path>, format: PlanFormat) -> Result<ExitCode> {
    let campaign = load_campaign(manifest, state)?;
    let st = State::load(&campaign.state_dir).into_diagnostic()?;
    if matches!(format, PlanFormat::Json) {
        let entries: Vec<&state::Entry> = st.order.iter().map(|a| &st.latest[a]).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).into_diagnostic()?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for addr in &st.order {
        let e = &st.latest[addr];
        let cause = e
            .failure
            .as_ref()
            .map(|f| format!("  {f}"))
            .unwrap_or_default();
        println!(
            "{:<8} #{:<3} {}  {}{cause}",
            format!("{:?}", e.event).to_lowercase(),
            e.attempt,
            e.t,
            addr
        );
    }
    if st.skipped_lines > 0 {
        eprintln!(
            "({} unreadable journal line(s) skipped: a write cut short by a crash)",
            st.skipped_lines
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `state show`: every journal entry of the nodes matching `address`, with failures, outputs
/// and attempt directories.
fn show(manifest: &Path, address: &str, state: Option<&Path>) -> Result<ExitCode> {
    let campaign = load_campaign(manifest, state)?;
    let st = State::load(&campaign.state_dir).into_diagnostic()?;
    let pattern = crate::plan::address_glob(address).map_err(|e| miette::miette!("{e}"))?;
    let journal =
        std::fs::read_to_string(campaign.state_dir.join(state::JOURNAL)).unwrap_or_default();
    let mut found = 0;
    for addr in st.order.iter().filter(|a| pattern.matches(a)) {
        found += 1;
        println!("{addr}");
        for line in journal.lines() {
            if let Ok(e) = serde_json::from_str::<state::Entry>(line)
                && &e.addr == addr
            {
                println!(
                    "  {} {:<8} attempt {} run {}",
                    e.t,
                    format!("{:?}", e.event).to_lowercase(),
                    e.attempt,
                    e.run
                );
                if let Some(f) = &e.failure {
                    let shown = |s: &str| crate::util::term::printable(s).into_owned();
                    println!("    failure: {}", shown(&f.to_string()));
                    if let Some(l) = &f.sample_log_line {
                        println!("    log line: {}", shown(l));
                    }
                    if let Some(p) = &f.log_path {
                        println!("    log: {}", campaign.state_dir.join(p).display());
                    }
                }
                for (file, digest) in &e.outputs {
                    println!(
                        "    output: {} ({digest})",
                        campaign.state_dir.join(file).display()
                    );
                }
                if let Some(info) = &e.info {
                    println!("    info: {info}");
                }
            }
        }
        let dir = campaign.state_dir.join("attempts").join(state::slug(addr));
        if dir.exists() {
            println!("  attempts: {}", dir.display());
        }
    }
    if found == 0 {
        return Err(miette::miette!(
            "no recorded node matches `{address}` (see `isobench state list`)"
        ));
    }
    Ok(ExitCode::SUCCESS)
}
