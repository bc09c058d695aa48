//! `isobench demo`: the quickstart campaign, embedded in the binary, written to a directory and
//! applied — a complete 3-way run (simulated servers, no GPU, no Docker) from any checkout.
use miette::{IntoDiagnostic, Result, WrapErr};
use std::path::PathBuf;
use std::process::ExitCode;

/// The quickstart's files, relative to the demo directory.
const FILES: &[(&str, &str)] = &[
    (
        "quickstart.toml",
        include_str!("../../examples/quickstart.toml"),
    ),
    (
        "sim/aaaa1111/baseline/sim.toml",
        include_str!("../../examples/sim/aaaa1111/baseline/sim.toml"),
    ),
    (
        "sim/aaaa1111/human/sim.toml",
        include_str!("../../examples/sim/aaaa1111/human/sim.toml"),
    ),
    (
        "sim/bbbb2222/baseline/sim.toml",
        include_str!("../../examples/sim/bbbb2222/baseline/sim.toml"),
    ),
    (
        "sim/bbbb2222/human/sim.toml",
        include_str!("../../examples/sim/bbbb2222/human/sim.toml"),
    ),
    (
        "patches/agent-sim/aaaa1111.diff",
        include_str!("../../examples/patches/agent-sim/aaaa1111.diff"),
    ),
    // For the manifest's `#:schema` directive (editor completion and validation).
    (
        "manifest.schema.json",
        include_str!("../../schemas/manifest.schema.json"),
    ),
];

/// The file's text as written into the demo directory: the quickstart's schema directive points
/// at the schema copied beside it instead of the repository's `../schemas/`.
fn demo_text(rel: &str, text: &str) -> String {
    if rel == "quickstart.toml" {
        text.replacen(
            "#:schema ../schemas/manifest.schema.json",
            "#:schema ./manifest.schema.json",
            1,
        )
    } else {
        text.to_string()
    }
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the campaign (kept afterwards: edit it, `plan` and `apply` it again).
    #[arg(default_value = "isobench-demo")]
    pub dir: PathBuf,
    /// Plain timestamped lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    for (rel, text) in FILES {
        let path = args.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", parent.display()))?;
        }
        // Never overwrite a file the user edited.
        if !path.exists() {
            std::fs::write(&path, demo_text(rel, text))
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write {}", path.display()))?;
        }
    }
    let manifest = args.dir.join("quickstart.toml");
    crate::util::term::err_line(&format!(
        "demo campaign in {} — plan it with `isobench plan {}`",
        args.dir.display(),
        manifest.display()
    ));
    super::apply::run_apply(super::apply::ApplyArgs::simple(manifest, args.plain)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifests_schema_directive_points_at_a_written_file() {
        let (rel, text) = FILES[0];
        let manifest = demo_text(rel, text);
        let first = manifest.lines().next().unwrap();
        let target = first.strip_prefix("#:schema ./").expect(first);
        assert!(FILES.iter().any(|(r, _)| *r == target), "{target}");
    }
}
