//! `isobench unlock`: clear a stale lock.
use super::plan::load_campaign;
use crate::state;
use miette::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// The campaign manifest whose state directory is locked.
    pub manifest: PathBuf,
    /// State directory (default: the manifest's `state`, else `.isobench` next to it).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Clear the lock even if a process seems to hold it.
    #[arg(long)]
    pub force: bool,
}

pub fn run_unlock(args: UnlockArgs) -> Result<ExitCode> {
    let campaign = load_campaign(&args.manifest, args.state.as_deref())?;
    match state::lock::unlock(&campaign.state_dir, args.force) {
        Ok(state::lock::UnlockOutcome::NotLocked) => println!("not locked"),
        Ok(state::lock::UnlockOutcome::ClearedStale(Some(h))) => {
            println!("cleared the lock of {h}")
        }
        Ok(state::lock::UnlockOutcome::ClearedStale(None)) => {
            println!("cleared an unreadable lock file")
        }
        Err(e) => return Err(miette::miette!("{e}")),
    }
    Ok(ExitCode::SUCCESS)
}
