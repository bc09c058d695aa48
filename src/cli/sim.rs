//! `isobench sim` (stub; see issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SimArgs {}

pub async fn run(_args: SimArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("`isobench sim` is not implemented yet"))
}
