//! `isobench validate`: check manifests, every problem with its location.
use super::plan::print_warnings;
use crate::manifest;
use miette::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Manifests to check.
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
}

pub fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    let mut failed = 0;
    for path in &args.manifests {
        match manifest::load_file(path) {
            Ok(c) => {
                print_warnings(&c);
                let arms: usize = c.commits.iter().map(|c| c.arms.len()).sum();
                println!(
                    "{}: ok ({} commits, {} arms measured, pipeline {})",
                    path.display(),
                    c.commits.len(),
                    arms,
                    c.pipeline.name
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("{:?}", miette::Report::new(e));
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
