//! `isobench apply`.
use crate::exec::{self, ApplyOptions};
use crate::report;
use crate::util::term::err_line;
use miette::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The campaign manifest.
    pub manifest: PathBuf,
    /// State directory (default: the manifest's `state`, else `.isobench` next to it).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Use these GPUs (e.g. `0,1,2,3`) instead of detecting them; works without GPUs too.
    #[arg(long, value_name = "LIST", value_parser = parse_gpus)]
    pub gpus: Option<GpuList>,
    /// Run these nodes again even if cached (glob over addresses, repeatable).
    #[arg(long, value_name = "ADDRESS-GLOB")]
    pub rerun: Vec<String>,
    /// Stop starting new sessions after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Most servers at once (default: as many as the GPUs allow; 1 for CPU-only servers).
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Which measurements may overlap: `exclusive`, `paired` or `none` (overrides
    /// `resources.isolate`; see docs/report.md for the measured default).
    #[arg(long, value_name = "POLICY", value_parser = parse_isolate)]
    pub isolate: Option<exec::Isolate>,
    /// Old spelling of `--isolate exclusive`.
    #[arg(long, conflicts_with = "isolate")]
    pub isolate_measure: bool,
    /// Give docker servers their GPUs only through CUDA_VISIBLE_DEVICES (no NVIDIA runtime).
    #[arg(long)]
    pub gpu_env_only: bool,
    /// Plain timestamped lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Do not write the report files at the end.
    #[arg(long)]
    pub no_report: bool,
    /// Machine-readable progress: `jsonl` prints one JSON object per node transition on stdout
    /// (the journal's entries) and a final `apply_finished` object; the live view is off and
    /// the report is written to files only. Schema: docs/events.md.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub events: Option<EventsFormat>,
    #[command(flatten)]
    pub target: super::plan::TargetArgs,
    /// Where sessions run: `local` or `slurm` (overrides `[cluster] backend`).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// Sessions on this host's GPUs.
    Local,
    /// One Slurm job per session (`[cluster]` settings; docs/cluster.md).
    Slurm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsFormat {
    /// One JSON object per line.
    Jsonl,
}

impl ApplyArgs {
    /// Defaults for everything but the manifest.
    pub fn simple(manifest: PathBuf, plain: bool) -> ApplyArgs {
        ApplyArgs {
            manifest,
            state: None,
            gpus: None,
            rerun: Vec::new(),
            fail_fast: false,
            max_parallel: None,
            isolate: None,
            isolate_measure: false,
            gpu_env_only: false,
            plain,
            no_report: false,
            events: None,
            target: Default::default(),
            backend: None,
        }
    }
}

/// `--gpus 0,1` is one value holding the whole list. The alias hides the `Vec` from clap's derive,
/// which would otherwise expect one `u32` per value and panic when the parser returns a list.
pub type GpuList = Vec<u32>;

fn parse_isolate(text: &str) -> std::result::Result<exec::Isolate, String> {
    exec::Isolate::parse(text)
        .ok_or_else(|| format!("unknown isolation policy `{text}`: use exclusive, paired or none"))
}

fn parse_gpus(text: &str) -> std::result::Result<GpuList, String> {
    exec::gpu::parse_gpu_list(text)
}

/// `compare` nodes write the commit's report as JSON: the CLI hands `apply` this seam so that
/// `exec` and `report` stay unaware of each other.
struct ReportComparer;

impl exec::Comparer for ReportComparer {
    fn compare(
        &self,
        campaign: &crate::manifest::Campaign,
        dag: &crate::pipeline::expand::Dag,
        state: &crate::state::State,
        commit: usize,
    ) -> std::result::Result<Vec<u8>, String> {
        let input = report::recorded::report_input(campaign, dag, state, Some(commit));
        let built =
            report::build(&input, &report::ReportOptions::default()).map_err(|e| e.to_string())?;
        Ok(report::render(&built, report::Format::Json, false).into_bytes())
    }
}

/// Exit codes: 0 every step succeeded (or nothing to do), 1 some step failed or an error,
/// 130 interrupted (run `apply` again to resume).
pub async fn run_apply(args: ApplyArgs) -> Result<ExitCode> {
    let mut campaign = super::plan::load_campaign(&args.manifest, args.state.as_deref())?;
    if let Some(b) = args.backend {
        use crate::manifest::model::ClusterBackend;
        let c = campaign.cluster.get_or_insert_with(Default::default);
        c.backend = match b {
            BackendArg::Local => ClusterBackend::Local,
            BackendArg::Slurm => ClusterBackend::Slurm,
        };
    }
    let targeted = crate::plan::select::apply(&mut campaign, &args.target.selection())
        .map_err(|e| miette::miette!("{e}"))?;
    if let Some(t) = &targeted {
        eprintln!("{}", t.line());
    }
    let events = args.events.is_some();
    super::plan::print_warnings(&campaign);
    let results_dir = campaign.results_dir.clone();
    let opts = ApplyOptions {
        state: args.state.clone(),
        gpus: args.gpus.clone(),
        rerun: args.rerun.clone(),
        fail_fast: args.fail_fast,
        max_parallel: args.max_parallel,
        plain: args.plain,
        isolate: args
            .isolate
            .or(args.isolate_measure.then_some(exec::Isolate::Exclusive)),
        gpu_env_only: args.gpu_env_only,
        targeted: targeted.is_some(),
        events,
    };
    let summary = exec::apply(campaign, &opts, std::sync::Arc::new(ReportComparer))
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    // With `--events jsonl`, the stream's `apply_finished` (the run's last event) is out.
    let code = summary.exit_code();
    if summary.nothing_to_do {
        return Ok(ExitCode::SUCCESS);
    }
    // Output errors (a closed pipe) are ignored: see `util::term::out`.
    err_line(&format!(
        "apply: {} measurement(s) done, {} failed, in {} (up to {} server(s) at once)",
        summary.measured,
        summary.failed_nodes.len(),
        exec::live::human_duration(summary.makespan),
        summary.parallel_peak
    ));
    for (address, failure) in &summary.failed_nodes {
        let log = failure
            .log_path
            .as_deref()
            .map(|l| format!(" — log: {l}"))
            .unwrap_or_default();
        // Failure messages quote the server: shown with control characters made visible.
        let failure = crate::util::term::printable(&failure.to_string()).into_owned();
        err_line(&format!("  failed {address}: {failure}{log}"));
    }
    if summary.interrupted {
        err_line(&format!(
            "interrupted: run `isobench apply {}` again to resume",
            args.manifest.display()
        ));
        return Ok(ExitCode::from(130));
    }
    if !args.no_report {
        let report = super::report::ReportArgs::for_manifest(
            &args.manifest,
            args.state.clone(),
            results_dir,
        );
        // The terminal report goes to stdout (unless stdout carries events); files to the
        // results directory.
        if events {
            super::report::write_files(report)?;
        } else {
            super::report::run(report)?;
        }
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn apply_gpus(args: &[&str]) -> Result<Option<Vec<u32>>, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        match cli.command {
            Command::Apply(a) => Ok(a.gpus),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn gpus_flag_takes_a_comma_separated_list() {
        let gpus = apply_gpus(&["isobench", "apply", "--gpus", "0,1,3", "m.toml"]).unwrap();
        assert_eq!(gpus, Some(vec![0, 1, 3]));
        assert_eq!(apply_gpus(&["isobench", "apply", "m.toml"]).unwrap(), None);
        assert!(apply_gpus(&["isobench", "apply", "--gpus", "0,0", "m.toml"]).is_err());
    }
}
