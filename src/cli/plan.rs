//! `isobench plan`, `isobench validate`, `isobench schema`.
use crate::manifest::{self, Campaign};
use crate::pipeline::expand::Dag;
use crate::plan::select::{self, Selection, Targeted};
use crate::plan::{self, Plan, PlanOptions, render};
use crate::state::State;
use crate::util::term::Style;
use clap::ValueEnum;
use miette::{IntoDiagnostic, Result, WrapErr};
use std::collections::HashMap;
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
    /// Exit 2 when changes are pending (0 when there is nothing to do), as Terraform's
    /// `-detailed-exitcode`; without it `plan` exits 0 on success, so `set -e` scripts work.
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `--commit` / `--arm`, shared by `plan` and `apply`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Only this commit: a prefix of its human commit hash or its short name (repeatable;
    /// the seed's single-commit mode, Terraform's `-target`).
    #[arg(long = "commit", value_name = "HASH")]
    pub commits: Vec<String>,
    /// Only this arm, by name (repeatable). Its own pull and patch still run; other arms are
    /// neither run nor required (a human-only run needs no baseline image).
    #[arg(long = "arm", value_name = "NAME")]
    pub arms: Vec<String>,
}

impl TargetArgs {
    pub fn selection(&self) -> Selection {
        Selection {
            commits: self.commits.clone(),
            arms: self.arms.clone(),
        }
    }
}

/// Everything `plan` and `apply` share: the campaign, its DAG and the plan against the state.
pub struct PlannedCampaign {
    pub campaign: Campaign,
    pub dag: Dag,
    pub state: State,
    pub plan: Plan,
    /// What `--commit`/`--arm` selected, when given.
    pub targeted: Option<Targeted>,
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

/// Loads the campaign (narrowed to `target`), expands it, and diffs it against the state.
/// Pure: reads files only.
pub fn make_plan(
    path: &Path,
    state_override: Option<&Path>,
    rerun: &[String],
    target: &Selection,
) -> Result<PlannedCampaign> {
    let mut campaign = load_campaign(path, state_override)?;
    let targeted = select::apply(&mut campaign, target).map_err(|e| miette::miette!("{e}"))?;
    print_warnings(&campaign);
    let state = State::load(&campaign.state_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read the state in {}", campaign.state_dir.display()))?;
    let dag = plan::desired_dag(&campaign, state.inventory.as_ref());
    let opts = PlanOptions {
        rerun: parse_globs(rerun)?,
        targeted: targeted.is_some(),
        ..Default::default()
    };
    let plan = plan::plan(&campaign, &dag, &state, &opts);
    Ok(PlannedCampaign {
        campaign,
        dag,
        state,
        plan,
        targeted,
    })
}

/// What the local engine holds under each built image's reference, so `plan` can say
/// `= cached (present)` or `+ build (image missing)`. Read-only and best effort: without a
/// reachable engine the plan is made from the journal alone.
async fn build_presence(campaign: &Campaign) -> HashMap<String, plan::ImagePresence> {
    let mut presence = HashMap::new();
    if campaign.builds.is_empty() {
        return presence;
    }
    let connect = crate::runtime::docker::DockerRuntime::connect();
    let Ok(Ok(docker)) = tokio::time::timeout(std::time::Duration::from_secs(3), connect).await
    else {
        return presence;
    };
    for reference in campaign.builds.keys() {
        let found = match docker.local_image(reference).await {
            Ok(None) => plan::ImagePresence::Absent,
            Ok(Some(image)) => plan::ImagePresence::Present {
                build_key: image
                    .labels
                    .get(crate::exec::build::BUILD_KEY_LABEL)
                    .cloned(),
            },
            Err(_) => continue,
        };
        presence.insert(reference.clone(), found);
    }
    presence
}

pub async fn run_plan(args: PlanArgs) -> Result<ExitCode> {
    let planned = make_plan(
        &args.manifest,
        args.state.as_deref(),
        &args.rerun,
        &args.target.selection(),
    )?;
    let mut planned = planned;
    let presence = build_presence(&planned.campaign).await;
    if !presence.is_empty() {
        let opts = PlanOptions {
            rerun: parse_globs(&args.rerun)?,
            targeted: planned.targeted.is_some(),
            image_presence: presence,
        };
        planned.plan = plan::plan(&planned.campaign, &planned.dag, &planned.state, &opts);
    }
    let PlannedCampaign {
        campaign,
        dag,
        plan,
        targeted,
        ..
    } = &planned;
    match (args.graph, args.format) {
        (Some(GraphFormat::Dot), _) => print!("{}", render::dot(dag, plan)),
        (None, PlanFormat::Json) => {
            let text = render::json(campaign, dag, plan);
            match targeted {
                None => println!("{text}"),
                Some(t) => {
                    // `target`: what `--commit`/`--arm` selected (absent for the whole campaign).
                    let mut json: serde_json::Value =
                        serde_json::from_str(&text).into_diagnostic()?;
                    json["target"] = serde_json::to_value(t).into_diagnostic()?;
                    println!("{}", serde_json::to_string_pretty(&json).into_diagnostic()?);
                }
            }
        }
        (None, PlanFormat::Text) => {
            if let Some(t) = targeted {
                println!("{}\n", Style::for_stdout().yellow(&t.line()));
            }
            print!(
                "{}",
                render::text(campaign, dag, plan, args.verbose, Style::for_stdout())
            )
        }
    }
    // Slurm jobs submitted by an apply that was killed: `apply` follows them, never resubmits.
    for (token, (record, id)) in crate::exec::cluster::open_jobs(&campaign.state_dir) {
        eprintln!(
            "slurm job {} ({token}) for {} was submitted by run {} and is not collected yet: `apply` follows it (no second submission)",
            id.map_or("?".into(), |i| i.to_string()),
            record.session,
            record.run
        );
    }
    if args.check_env {
        let ok = match campaign.slurm() {
            Some(settings) => crate::exec::cluster::check_env(campaign, settings).await,
            None => crate::exec::check_env::check(campaign, dag).await,
        };
        if !ok {
            return Ok(ExitCode::from(1));
        }
    }
    // As `terraform plan`: 0 on success; with `--detailed-exitcode`, 2 when changes are pending.
    Ok(if args.detailed_exitcode && plan.counts.pending() > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
