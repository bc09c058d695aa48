//! `isobench report`: statistics over trials, comparisons with verdicts, the campaign summary,
//! renderers (terminal, Markdown, JSON, CSV, HTML with SVG charts) and seed-compatible files.
//!
//! Data flow: [`ReportInput`] (filled from the state directory) → [`analysis::analyze`] →
//! [`model::Report`] → `render::*` / [`seed`]. Nothing here runs a benchmark. See `docs/report.md`.
pub mod analysis;
pub mod curves;
pub mod input;
pub mod metric;
pub mod model;
pub mod montecarlo;
pub mod outputs;
pub mod quality;
pub mod recorded;
pub mod render;
pub mod seed;
pub mod stats;

pub use input::{ArmInfo, CommitInfo, ReportInput, TrialMetrics, TrialOutcome, TrialRecord};
pub use model::Report;
pub use render::terminal::ColorChoice;

use std::path::{Path, PathBuf};

/// Output formats. (The CLI parses them by [`Format::NAMES`]; the library knows no clap.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Terminal,
    Markdown,
    Json,
    Csv,
    Html,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Terminal,
        Format::Markdown,
        Format::Json,
        Format::Csv,
        Format::Html,
    ];
    pub const NAMES: [&'static str; 5] = ["terminal", "markdown", "json", "csv", "html"];

    pub fn name(self) -> &'static str {
        Format::NAMES[Format::ALL.iter().position(|&f| f == self).expect("listed")]
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Format::Terminal => "report.txt",
            Format::Markdown => "report.md",
            Format::Json => "report.json",
            Format::Csv => "report.csv",
            Format::Html => "report.html",
        }
    }
}

/// How to compute and where to write; the CLI builds it from its flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Overrides the input's (manifest's) confidence level.
    pub confidence: Option<f64>,
    /// Overrides the input's seed-rule threshold.
    pub threshold_pct: Option<f64>,
    /// Pair trials by round (default); off compares arms with Welch's test.
    pub paired: bool,
    /// What goes to stdout.
    pub format: Format,
    pub color: ColorChoice,
    /// Writes report.md, report.json, report.csv and report.html here.
    pub out_dir: Option<PathBuf>,
    /// Writes the seed-compatible per-run files under this results directory.
    pub seed_results_dir: Option<PathBuf>,
    /// Load point for the seed files (default: each commit's first).
    pub seed_point: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            confidence: None,
            threshold_pct: None,
            paired: true,
            format: Format::Terminal,
            color: ColorChoice::Auto,
            out_dir: None,
            seed_results_dir: None,
            seed_point: None,
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReportError {
    #[error("confidence must be between 0 and 1 (exclusive), got {0}")]
    #[diagnostic(help("use for example 0.95 for 95 % intervals"))]
    Confidence(f64),
    #[error("the seed rule's threshold must be a non-negative percentage, got {0}")]
    Threshold(f64),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The effective settings: options override the input (manifest) values.
pub fn settings(input: &ReportInput, opts: &ReportOptions) -> Result<model::Settings, ReportError> {
    let confidence = opts.confidence.unwrap_or(input.confidence);
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(ReportError::Confidence(confidence));
    }
    let threshold_pct = opts.threshold_pct.or(input.threshold_pct);
    if let Some(t) = threshold_pct.filter(|t| !(*t >= 0.0 && t.is_finite())) {
        return Err(ReportError::Threshold(t));
    }
    Ok(model::Settings {
        confidence,
        threshold_pct,
        paired: opts.paired,
    })
}

/// Computes the report.
pub fn build(input: &ReportInput, opts: &ReportOptions) -> Result<Report, ReportError> {
    Ok(analysis::analyze(input, &settings(input, opts)?))
}

/// Renders one format (`color` only matters for the terminal).
pub fn render(report: &Report, format: Format, color: bool) -> String {
    match format {
        Format::Terminal => render::terminal::render(report, color),
        Format::Markdown => render::markdown::render(report),
        Format::Json => render::json::render(report),
        Format::Csv => render::csv::render(report),
        Format::Html => render::html::render(report),
    }
}

/// Writes every file format into `out_dir`; returns the paths written.
pub fn write_all(report: &Report, out_dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for format in [Format::Markdown, Format::Json, Format::Csv, Format::Html] {
        let path = out_dir.join(format.file_name());
        write_atomic(&path, render(report, format, false).as_bytes()).map_err(|source| {
            ReportError::Write {
                path: path.clone(),
                source,
            }
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes through a temporary file in the same directory and renames it into place, so a reader
/// never sees half a report.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ReportInput {
        ReportInput {
            images: Vec::new(),
            outputs: Default::default(),
            campaign: "c".into(),
            generated_at: "2026-01-01T00:00:00Z".into(),
            confidence: 0.95,
            threshold_pct: Some(5.0),
            commits: vec![],
            arms: vec![],
            trials: vec![],
            slos: Default::default(),
            percentiles: Vec::new(),
        }
    }

    #[test]
    fn options_override_the_manifest() {
        let opts = ReportOptions {
            confidence: Some(0.9),
            paired: false,
            ..Default::default()
        };
        let s = settings(&input(), &opts).unwrap();
        assert_eq!(
            (s.confidence, s.threshold_pct, s.paired),
            (0.9, Some(5.0), false)
        );
        assert!(matches!(
            settings(
                &input(),
                &ReportOptions {
                    confidence: Some(1.0),
                    ..Default::default()
                }
            ),
            Err(ReportError::Confidence(_))
        ));
        assert!(matches!(
            settings(
                &input(),
                &ReportOptions {
                    threshold_pct: Some(-1.0),
                    ..Default::default()
                }
            ),
            Err(ReportError::Threshold(_))
        ));
    }
}
