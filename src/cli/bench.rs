//! `isobench bench` (stub; see issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!("`isobench bench` is not implemented yet"))
}
