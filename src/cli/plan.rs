//! `isobench plan`, `isobench validate`, `isobench schema`.
use crate::manifest::{self, Campaign};
use crate::pipeline::expand::{self, Dag};
use crate::plan::{self, Plan, PlanOptions, render};
use crate::state::State;
use crate::util::term::Style;
use clap::ValueEnum;
use miette::{IntoDiagnostic, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum PlanFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The campaign manifest.
    pub manifest: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: PlanFormat,
    /// Print the DAG instead (Graphviz dot).
    #[arg(long, value_enum)]
    pub graph: Option<GraphFormat>,
    /// One line per node instead of collapsed groups.
    #[arg(long, short)]
    pub verbose: bool,
    /// State directory (default: the manifest's `state`, else `.isobench` next to it).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Plan these nodes as `~ rerun` even if cached (glob over addresses, repeatable).
    #[arg(long, value_name = "ADDRESS-GLOB")]
    pub rerun: Vec<String>,
    /// Also check the environment: Docker reachable, NVIDIA runtime, images present, GPUs.
    #[arg(long)]
    pub check_env: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Manifests to check.
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
}

/// Everything `plan` and `apply` share: the campaign, its DAG and the plan against the state.
pub struct Planned {
    pub campaign: Campaign,
    pub dag: Dag,
    pub state: State,
    pub plan: Plan,
}

pub fn load_campaign(path: &Path, state_override: Option<&Path>) -> Result<Campaign> {
    let mut campaign = manifest::load_file(path)?;
    if let Some(dir) = state_override {
        campaign.state_dir = dir.to_path_buf();
    }
    Ok(campaign)
}

/// Shows the manifest's warnings on stderr (they never stop `plan` or `apply`).
pub fn print_warnings(campaign: &Campaign) {
    for warning in &campaign.warnings {
        eprintln!("{:?}", miette::Report::new(warning.clone()));
    }
}

pub fn parse_globs(globs: &[String]) -> Result<Vec<glob::Pattern>> {
    globs
        .iter()
        .map(|g| plan::address_glob(g).map_err(|e| miette::miette!("{e}")))
        .collect()
}

/// Loads the campaign, expands it, and diffs it against the state. Pure: reads files only.
pub fn make_plan(path: &Path, state_override: Option<&Path>, rerun: &[String]) -> Result<Planned> {
    let campaign = load_campaign(path, state_override)?;
    print_warnings(&campaign);
    let state = State::load(&campaign.state_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read the state in {}", campaign.state_dir.display()))?;
    let gpu_kind = campaign
        .resources
        .gpu_kind
        .clone()
        .or_else(|| state.inventory.as_ref().and_then(|i| i.kind()));
    let dag = expand::expand(&campaign, gpu_kind.as_deref());
    let opts = PlanOptions {
        rerun: parse_globs(rerun)?,
    };
    let plan = plan::plan(&campaign, &dag, &state, &opts);
    Ok(Planned {
        campaign,
        dag,
        state,
        plan,
    })
}

pub async fn run_plan(args: PlanArgs) -> Result<ExitCode> {
    let planned = make_plan(&args.manifest, args.state.as_deref(), &args.rerun)?;
    let Planned {
        campaign,
        dag,
        plan,
        ..
    } = &planned;
    match (args.graph, args.format) {
        (Some(GraphFormat::Dot), _) => print!("{}", render::dot(dag, plan)),
        (None, PlanFormat::Json) => println!("{}", render::json(campaign, dag, plan)),
        (None, PlanFormat::Text) => print!(
            "{}",
            render::text(campaign, dag, plan, args.verbose, Style::for_stdout())
        ),
    }
    if args.check_env {
        let ok = crate::exec::check_env::check(campaign, dag).await;
        if !ok {
            return Ok(ExitCode::from(1));
        }
    }
    // Exit codes as `terraform plan -detailed-exitcode`: 0 nothing to do, 2 changes pending.
    Ok(if plan.counts.pending() > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
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

pub fn run_schema() -> Result<ExitCode> {
    println!("{}", schema_text());
    Ok(ExitCode::SUCCESS)
}

/// The committed `schemas/manifest.schema.json` must equal this text.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&manifest::schema()).expect("schema serialises")
}
