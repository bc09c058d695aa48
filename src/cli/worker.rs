//! `isobench worker` (hidden): the payload of one Slurm session job. Started by the batch
//! script that `apply` submits; runs one session on the GPUs Slurm bound and writes only below
//! `<state>/cluster/<token>/` (see `exec::cluster`).
use miette::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The campaign manifest (on the shared filesystem).
    pub manifest: PathBuf,
    /// The campaign's state directory (on the shared filesystem).
    #[arg(long)]
    pub state: PathBuf,
    /// Address of the session's `start` node.
    #[arg(long)]
    pub session: String,
    /// The submission token (also the job's name).
    #[arg(long)]
    pub token: String,
    /// The id of the apply run that submitted the job.
    #[arg(long)]
    pub run: String,
    /// `apply --rerun` globs, passed on.
    #[arg(long)]
    pub rerun: Vec<String>,
    /// Process runtime, patched arm: the patched tree the controller built (shared filesystem).
    #[arg(long)]
    pub patched_root: Option<PathBuf>,
    /// `KEY=VALUE` the patched tree needs (`PYTHONPATH`), as the controller resolved it.
    #[arg(long)]
    pub patched_env: Vec<String>,
    /// The patched tree's identity in results (`<root>+<patch hash>`).
    #[arg(long)]
    pub patched_digest: Option<String>,
}

pub async fn run(args: WorkerArgs) -> Result<ExitCode> {
    let code = crate::exec::cluster::worker(crate::exec::cluster::WorkerArgs {
        manifest: args.manifest,
        state: args.state,
        session: args.session,
        token: args.token,
        run: args.run,
        rerun: args.rerun,
        patched: args
            .patched_root
            .map(|root| crate::exec::cluster::PatchedTree {
                root,
                env: args
                    .patched_env
                    .iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                digest: args.patched_digest.unwrap_or_default(),
            }),
    })
    .await
    .map_err(|e| miette::miette!("worker: {e}"))?;
    Ok(ExitCode::from(code))
}
