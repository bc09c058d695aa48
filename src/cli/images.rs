//! `isobench images MANIFEST`: per commit and arm, where its image is — here, in its registry,
//! buildable from `[images.build]`, or missing (or its registry refused or did not answer).
use crate::exec::check_env::{self, ImageRow, Presence};
use clap::ValueEnum;
use miette::{IntoDiagnostic, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum ImagesFormat {
    #[default]
    Text,
    Markdown,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// The campaign manifest.
    pub manifest: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ImagesFormat,
    #[command(flatten)]
    pub target: super::plan::TargetArgs,
}

pub async fn run(args: ImagesArgs) -> Result<ExitCode> {
    let mut campaign = super::plan::load_campaign(&args.manifest, None)?;
    crate::plan::select::apply(&mut campaign, &args.target.selection())
        .map_err(|e| miette::miette!("{e}"))?;
    super::plan::print_warnings(&campaign);
    // Best effort, as `plan`: without an engine nothing reads as local, and registries only
    // the HTTP client reaches itself can be looked up.
    let connect = crate::runtime::docker::DockerRuntime::connect();
    let docker = match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(f)) => {
            eprintln!("Docker Engine not reachable ({f}): local images are not checked");
            None
        }
        Err(_) => {
            eprintln!("Docker Engine did not answer within 3 s: local images are not checked");
            None
        }
    };
    let rows = check_env::image_rows(&campaign, docker.as_ref()).await;
    match args.format {
        ImagesFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&rows).into_diagnostic()?)
        }
        ImagesFormat::Text => print!("{}", text(&rows)),
        ImagesFormat::Markdown => print!("{}", markdown(&rows)),
    }
    // Scripts can gate on it: 1 when some arm's image cannot be obtained.
    Ok(if rows.iter().all(|r| r.presence.obtainable()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The detail column: what was found, or why not.
fn detail(row: &ImageRow) -> String {
    let what = match &row.presence {
        Presence::Local { id } => crate::util::prefix_chars(id, 19).to_string(),
        Presence::Registry { digest } => crate::util::prefix_chars(digest, 19).to_string(),
        Presence::Buildable => "from [images.build]".to_string(),
        Presence::Missing => "not here, not in its registry, no recipe".to_string(),
        Presence::Unauthorized { message } => message.clone(),
        Presence::Unreachable { registry, message } => format!("{registry}: {message}"),
    };
    match &row.patched_from {
        Some(base) => format!("derived by patch from {base}; base image {what}"),
        None => what,
    }
}

const HEADER: [&str; 5] = ["COMMIT", "ARM", "IMAGE", "STATUS", "DETAIL"];

fn cells(row: &ImageRow) -> [String; 5] {
    [
        row.commit.clone(),
        row.arm.clone(),
        row.image.clone(),
        row.presence.word().to_string(),
        detail(row),
    ]
}

fn text(rows: &[ImageRow]) -> String {
    let all: Vec<[String; 5]> = std::iter::once(HEADER.map(str::to_string))
        .chain(rows.iter().map(cells))
        .collect();
    let mut widths = [0usize; 5];
    for line in &all {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &all {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 < line.len() {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn markdown(rows: &[ImageRow]) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let mut out = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(5));
    for row in rows {
        let cells = cells(row).map(|c| escape(&c));
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}
