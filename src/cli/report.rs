//! `isobench report`: tables, verdicts with confidence, failure breakdown, HTML, seed files.
use crate::report::{self, ColorChoice, Format, ReportInput, ReportOptions};
use clap::builder::TypedValueParser as _;
use miette::{IntoDiagnostic, WrapErr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The campaign's manifest; its state directory holds the trials.
    pub manifest: Option<PathBuf>,
    /// State directory (default: the manifest's).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Report a saved report input (JSON of `ReportInput`) instead of a manifest's state.
    #[arg(long, value_name = "FILE", conflicts_with = "manifest")]
    pub input_json: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, default_value = "terminal", value_parser = format_parser())]
    pub format: Format,
    /// Also write report.md, report.json, report.csv and report.html into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write the seed-compatible per-run files (baseline_benchmark_results/,
    /// agent_benchmark_results/) under this results directory.
    #[arg(long, value_name = "DIR")]
    pub seed_results: Option<PathBuf>,
    /// Load point of the seed files, e.g. `conc=16` (default: each commit's first).
    #[arg(long, value_name = "POINT")]
    pub seed_point: Option<String>,
    /// Confidence level of intervals (overrides the manifest's `compare.confidence`).
    #[arg(long, value_name = "LEVEL")]
    pub confidence: Option<f64>,
    /// Also apply the seed's rule: a difference of at least this many percent wins or loses.
    #[arg(long, value_name = "PCT")]
    pub threshold_pct: Option<f64>,
    /// Compare arms with Welch's test instead of pairing trials of the same round (use when
    /// trials were not interleaved).
    #[arg(long)]
    pub unpaired: bool,
    /// Colour in terminal output (`NO_COLOR` is respected in auto mode).
    #[arg(long, default_value = "auto", value_parser = color_parser())]
    pub color: ColorChoice,
}

/// The report library's names, offered (and completed) as clap's possible values.
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    clap::builder::PossibleValuesParser::new(Format::NAMES)
        .map(|name| Format::from_name(&name).expect("a listed name"))
}

fn color_parser() -> impl clap::builder::TypedValueParser<Value = ColorChoice> {
    clap::builder::PossibleValuesParser::new(ColorChoice::NAMES)
        .map(|name| ColorChoice::from_name(&name).expect("a listed name"))
}

impl ReportArgs {
    /// The report `apply` writes when it finishes: terminal tables, files in `results`.
    pub fn for_manifest(manifest: &Path, state: Option<PathBuf>, results: PathBuf) -> ReportArgs {
        ReportArgs {
            manifest: Some(manifest.to_path_buf()),
            state,
            input_json: None,
            format: Format::Terminal,
            out: Some(results.clone()),
            seed_results: Some(results),
            seed_point: None,
            confidence: None,
            threshold_pct: None,
            unpaired: false,
            color: ColorChoice::Auto,
        }
    }

    pub fn options(&self) -> ReportOptions {
        ReportOptions {
            confidence: self.confidence,
            threshold_pct: self.threshold_pct,
            paired: !self.unpaired,
            format: self.format,
            color: self.color,
            out_dir: self.out.clone(),
            seed_results_dir: self.seed_results.clone(),
            seed_point: self.seed_point.clone(),
        }
    }
}

/// Loads a saved [`ReportInput`].
pub fn load_input_json(path: &Path) -> miette::Result<ReportInput> {
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .into_diagnostic()
        .wrap_err_with(|| format!("{} is not a report input", path.display()))
}

/// Builds the report, prints the chosen format, writes files; the paths written go to stderr.
pub fn run_report(input: &ReportInput, opts: &ReportOptions) -> miette::Result<ExitCode> {
    let report = report::build(input, opts)?;
    let color = report::render::terminal::use_color_for_stdout(opts.color);
    // Not `print!`: `apply` (which ends with this report) ignores SIGPIPE, and `print!` panics
    // on a closed pipe.
    crate::util::term::out(&report::render(&report, opts.format, color));
    let mut written = Vec::new();
    if let Some(dir) = &opts.out_dir {
        written.extend(report::write_all(&report, dir)?);
    }
    if let Some(dir) = &opts.seed_results_dir {
        let files = report::seed::seed_files(&report, input, opts.seed_point.as_deref());
        written.extend(
            report::seed::write_seed_files(dir, &files)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write seed files under {}", dir.display()))?,
        );
    }
    for path in written {
        crate::util::term::err_line(&format!("wrote {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report's files only (nothing on stdout): for `apply --events`, whose stdout is the
/// event stream.
pub fn write_files(args: ReportArgs) -> miette::Result<ExitCode> {
    let Some(manifest) = &args.manifest else {
        return Err(miette::miette!("write_files needs a manifest"));
    };
    let campaign = super::plan::load_campaign(manifest, args.state.as_deref())?;
    let input = crate::report::recorded::load_report_input(&campaign)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read the state in {}", campaign.state_dir.display()))?;
    let opts = args.options();
    let report = report::build(&input, &opts)?;
    let mut written = Vec::new();
    if let Some(dir) = &opts.out_dir {
        written.extend(report::write_all(&report, dir)?);
    }
    if let Some(dir) = &opts.seed_results_dir {
        let files = report::seed::seed_files(&report, &input, opts.seed_point.as_deref());
        written.extend(
            report::seed::write_seed_files(dir, &files)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write seed files under {}", dir.display()))?,
        );
    }
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `isobench report MANIFEST` reads the manifest's state directory; `--input-json` a saved input.
/// With a manifest, report files and seed-compatible files go to the manifest's `results`
/// directory unless `--out` / `--seed-results` say otherwise.
pub fn run(args: ReportArgs) -> miette::Result<ExitCode> {
    match (&args.input_json, &args.manifest) {
        (Some(path), _) => run_report(&load_input_json(path)?, &args.options()),
        (None, Some(manifest)) => {
            let campaign = super::plan::load_campaign(manifest, args.state.as_deref())?;
            let input = crate::report::recorded::load_report_input(&campaign)
                .into_diagnostic()
                .wrap_err_with(|| {
                    format!("cannot read the state in {}", campaign.state_dir.display())
                })?;
            let mut opts = args.options();
            if opts.out_dir.is_none() {
                opts.out_dir = Some(campaign.results_dir.clone());
            }
            if opts.seed_results_dir.is_none() {
                opts.seed_results_dir = Some(campaign.results_dir.clone());
            }
            run_report(&input, &opts)
        }
        (None, None) => Err(miette::miette!("give a manifest, or --input-json FILE")),
    }
}
