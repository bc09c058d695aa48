//! `apply`: takes the lock, finds the GPUs, plans, then runs every pending session with
//! GPU-aware scheduling, prefetching pulls, building patches, and recording every transition.

use super::context::{Ctx, JournalError};
use super::events::{ExecEvent, Stream};
use super::gpu::{self, Pool, Shortage};
use super::live::{Live, human_bytes, human_duration};
use super::patch::{self, PatchedSource};
use super::session::{self, ResolvedSource, SessionOutcome};
use crate::failure::{Failure, FailureClass};
use crate::loadgen;
use crate::manifest::Campaign;
use crate::manifest::model::{ArmSource, ClusterSettings, Isolate};
use crate::manifest::pipeline::StepKind;
use crate::manifest::types::RuntimeKind;
use crate::pipeline::expand::Dag;
use crate::plan::{self, PlanOptions};
use crate::runtime::{ImageInfo, Runtime, ServerSource};
use crate::state::{self, State, lock};
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// State directory override.
    pub state: Option<PathBuf>,
    /// Declared GPUs (overrides the manifest and detection).
    pub gpus: Option<Vec<u32>>,
    /// Address globs to run again even if cached.
    pub rerun: Vec<String>,
    /// Stop starting new sessions after the first failure.
    pub fail_fast: bool,
    /// Most servers at once (default: as many as the GPUs allow; 1 for servers without GPUs).
    pub max_parallel: Option<usize>,
    /// Plain log lines even on a terminal.
    pub plain: bool,
    /// Overrides the manifest's isolation policy.
    pub isolate: Option<Isolate>,
    /// Pass only `CUDA_VISIBLE_DEVICES` to docker servers (no NVIDIA device request).
    pub gpu_env_only: bool,
    /// The campaign was narrowed by `--commit`/`--arm` (see `plan::select`).
    pub targeted: bool,
    /// One JSON object per node transition on stdout, no live view (`--events jsonl`).
    pub events: bool,
}

#[derive(Debug, Default)]
pub struct ApplySummary {
    pub measured: usize,
    pub failed_nodes: Vec<(String, Failure)>,
    pub interrupted: bool,
    pub makespan: Duration,
    pub nothing_to_do: bool,
    pub parallel_peak: usize,
}

impl ApplySummary {
    /// The process's exit status: 0 all succeeded (or nothing to do), 1 a step failed, 130
    /// interrupted (run `apply` again to resume).
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.failed_nodes.is_empty() {
            0
        } else {
            1
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Setup(String),
}

enum Event {
    Pulled(usize, Result<ImageInfo, Failure>),
    Patched((usize, usize), Result<(ResolvedSource, bool), Failure>),
    SessionDone(usize, Vec<u32>, Result<SessionOutcome, JournalError>),
}

/// Where the image of each pending session stands.
enum Readiness<T> {
    Waiting,
    Ready(T),
    Failed(Failure),
    /// Removed for the disk budget: no pending session needed it.
    Pruned,
}

impl<T> Readiness<T> {
    /// What a finished pull or patch build leaves.
    fn of(r: Result<T, Failure>) -> Readiness<T> {
        match r {
            Ok(v) => Readiness::Ready(v),
            Err(f) => Readiness::Failed(f),
        }
    }
}

fn holder(run_id: &str) -> lock::Holder {
    lock::Holder {
        pid: std::process::id(),
        host: lock::hostname(),
        since: crate::util::now_rfc3339(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        run: run_id.to_string(),
    }
}

pub(crate) fn source_of_root(root: &ArmSource) -> ServerSource {
    match root {
        ArmSource::Image { reference } => ServerSource::Image {
            reference: reference.clone(),
        },
        ArmSource::Path { root } => ServerSource::Path { root: root.clone() },
        ArmSource::Patched(p) => source_of_root(p.base.root()),
    }
}

fn reference_of(source: &ServerSource) -> String {
    match source {
        ServerSource::Image { reference } => reference.clone(),
        ServerSource::Path { root } => root.display().to_string(),
    }
}

/// Builds (once per commit) the prompts every arm of that commit is measured with, and a
/// separate set for warm-up: warm-up prompts drawn from the measured set would be answered
/// from the server's prefix cache when measured, flattering TTFT. A file dataset is parsed once:
/// its first `num_prompts` picks are measured (vLLM's picks), the `warmup` after them warm up.
pub(crate) fn dataset_for(
    campaign: &Campaign,
    commit: usize,
) -> Result<session::Datasets, Failure> {
    let c = &campaign.commits[commit];
    let num_prompts = c.load.num_prompts as usize;
    let warmup_n = (c.load.warmup as usize).max(1);
    let cfg = loadgen::DatasetConfig {
        input_len: c.load.input_len,
        output_len: c.load.output_len,
        range_ratio: c.load.range_ratio,
        prefix_len: c.load.prefix_len,
        num_prompts,
        seed: c.load.seed,
        workload: c.load.workload.clone(),
    };
    let tokenizer = c
        .model
        .tokenizer
        .clone()
        .or_else(|| loadgen::find_tokenizer(&c.model.path))
        .or_else(|| loadgen::find_tokenizer(&c.model.hf));
    let build = |cfg: &loadgen::DatasetConfig| {
        loadgen::build_dataset(cfg, tokenizer.as_deref()).map_err(|e| e.to_failure())
    };
    let (mut measure, mut warmup) = if cfg.workload.path().is_some() {
        let mut all = build(&loadgen::DatasetConfig {
            num_prompts: num_prompts + warmup_n,
            ..cfg.clone()
        })?;
        let mut warmup = all.clone();
        warmup.requests = all.requests.split_off(num_prompts);
        all.config.num_prompts = num_prompts;
        warmup.config.num_prompts = warmup_n;
        (all, warmup)
    } else {
        let warmup_cfg = loadgen::DatasetConfig {
            num_prompts: warmup_n,
            seed: c.load.seed ^ 0x9E37_79B9_7F4A_7C15,
            ..cfg.clone()
        };
        (build(&cfg)?, build(&warmup_cfg)?)
    };
    let chat_lists = measure.requests.iter().any(|r| r.messages.is_some());
    if chat_lists && c.load.backend != crate::manifest::types::Backend::OpenAiChat {
        return Err(loadgen::LoadgenError::Config(
            "the dataset holds chat message lists: they need the `openai-chat` backend".into(),
        )
        .to_failure());
    }
    let extra = c.load.extra_body.clone().map(std::sync::Arc::new);
    measure.extra_body = extra.clone();
    warmup.extra_body = extra;
    Ok(session::Datasets { measure, warmup })
}

/// Runs the campaign in stages, following the data: [`prepare`] (lock, GPUs, plan, leftovers
/// of earlier runs), [`launchpad`] (the context every task shares), the [`Scheduler`] loop
/// (pulls, patches, sessions), then [`summarize`] (compares, this run's failures).
pub async fn apply(
    campaign: Campaign,
    opts: &ApplyOptions,
    comparer: Arc<dyn super::Comparer>,
) -> Result<ApplySummary, ApplyError> {
    let t0 = Instant::now();
    let prepared = match prepare(campaign, opts).await? {
        Prepare::Run(prepared) => prepared,
        Prepare::NothingToDo(events) => {
            let summary = ApplySummary {
                nothing_to_do: true,
                makespan: t0.elapsed(),
                ..Default::default()
            };
            events.finish(Some(&summary));
            return Ok(summary);
        }
    };
    let (cancel_tx, cancel_rx) = watch::channel(false);
    spawn_signal_handler(cancel_tx.clone());
    let Launchpad {
        lock: _lock,
        ctx,
        slurm,
        reattach,
        pending_sessions,
        pending_compares,
        gpus,
        total_measures,
    } = launchpad(prepared, opts, comparer, cancel_rx)?;
    let cluster = match &slurm {
        Some(settings) => Some(Arc::new(
            super::cluster::Controller::start(&ctx.campaign, settings, reattach, &opts.rerun)
                .await
                .map_err(ApplyError::Setup)?,
        )),
        None => None,
    };
    let mut scheduler = Scheduler::new(
        ctx.clone(),
        cancel_tx,
        cluster,
        gpus,
        pending_sessions,
        total_measures,
        opts,
    );
    scheduler.prefetch();
    let summary = scheduler.run().await?;
    summarize(&ctx, &pending_compares, summary, t0)
}

/// What [`prepare`] found out before any task starts. The lock is held until `apply` returns.
struct Prepared {
    lock: lock::LockGuard,
    campaign: Campaign,
    run_id: String,
    owner: crate::runtime::Owner,
    events: Stream,
    slurm: Option<ClusterSettings>,
    inventory: state::Inventory,
    probe: Option<gpu::Probe>,
    state_before: State,
    reattach: HashMap<String, (super::cluster::JobRecord, Option<u64>)>,
    dag: Dag,
    plan: plan::Plan,
    pending_sessions: Vec<usize>,
    pending_compares: Vec<NodeIndex>,
    docker: Option<Runtime>,
    process: Option<Runtime>,
}

/// What [`prepare`] leaves: a run, or nothing to do (and the stream to say so on).
enum Prepare {
    Run(Box<Prepared>),
    NothingToDo(Stream),
}

/// Takes the lock, finds the GPUs, plans, connects the runtimes and removes what earlier runs
/// left behind (even when nothing is left to do).
async fn prepare(mut campaign: Campaign, opts: &ApplyOptions) -> Result<Prepare, ApplyError> {
    if let Some(dir) = &opts.state {
        campaign.state_dir = dir.clone();
    }
    let run_id = new_run_id();
    let lock = lock::acquire(&campaign.state_dir, &holder(&run_id))?;
    // Holding the lock makes every other run of this state directory dead: its servers, and
    // only those, are leftovers.
    let owner = crate::runtime::Owner {
        state: state::owned::state_id(&campaign.state_dir)
            .map_err(|e| ApplyError::Setup(format!("cannot read the state id: {e}")))?,
        run: run_id.clone(),
        host: lock::hostname(),
    };
    // The run's event stream; its journal is attached once the tasks are about to start.
    let events = Stream::new(
        if opts.events {
            Live::events()
        } else {
            Live::new(opts.plain)
        },
        &run_id,
    );
    let slurm = campaign.slurm().cloned();
    let (inventory, probe) = find_gpus(&campaign, opts, slurm.is_some())?;
    let state_before = load_state(&campaign.state_dir)?;
    write_setup(&campaign, &state_before, &inventory)?;
    let dag = plan::desired_dag(&campaign, Some(&inventory));
    // Slurm: jobs of a killed earlier apply are collected (or followed) before planning.
    let (state_before, reattach) = match &slurm {
        Some(_) => {
            let r = super::cluster::reconcile(&campaign.state_dir, &dag, &events)
                .await
                .map_err(ApplyError::Setup)?;
            (load_state(&campaign.state_dir)?, r.running)
        }
        None => (state_before, HashMap::new()),
    };
    let the_plan = plan_run(&campaign, &dag, &state_before, opts)?;
    announce_plan(&events, &the_plan, &inventory);
    let pending_sessions: Vec<usize> = (0..dag.sessions.len())
        .filter(|&s| {
            dag.sessions[s]
                .measures
                .iter()
                .chain(dag.sessions[s].nodes.iter())
                .any(|n| the_plan.action(*n).executes())
        })
        .collect();
    let pending_compares: Vec<NodeIndex> = dag
        .compares
        .values()
        .copied()
        .filter(|n| the_plan.action(*n).executes())
        .collect();
    let (docker, process) =
        connect_runtimes(&campaign, &dag, &pending_sessions, slurm.is_some(), &events).await?;
    for rt in docker.iter().chain(process.iter()) {
        clean_leftovers(rt, &campaign, &owner, &events).await;
    }
    if pending_sessions.is_empty() && pending_compares.is_empty() {
        events.note("nothing to do: every step is cached");
        return Ok(Prepare::NothingToDo(events));
    }
    Ok(Prepare::Run(Box::new(Prepared {
        lock,
        campaign,
        run_id,
        owner,
        events,
        slurm,
        inventory,
        probe,
        state_before,
        reattach,
        dag,
        plan: the_plan,
        pending_sessions,
        pending_compares,
        docker,
        process,
    })))
}

/// `<UTC time without separators>-<pid>`: labels this run's servers and journal entries.
fn new_run_id() -> String {
    format!(
        "{}-{}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace([':', '-'], "")
            .trim_end_matches('Z'),
        std::process::id()
    )
}

fn load_state(dir: &std::path::Path) -> Result<State, ApplyError> {
    State::load(dir).map_err(|e| ApplyError::Setup(format!("cannot read the state: {e}")))
}

/// GPUs: declared or detected; the model name becomes part of measurement keys. Slurm: the
/// jobs find their GPUs on their nodes (`exec::cluster`); this host needs none.
fn find_gpus(
    campaign: &Campaign,
    opts: &ApplyOptions,
    slurm: bool,
) -> Result<(state::Inventory, Option<gpu::Probe>), ApplyError> {
    let (inventory, probe) = if slurm {
        (super::cluster::no_local_gpus(), None)
    } else {
        gpu::detect(
            &campaign.resources.gpus,
            opts.gpus.as_deref(),
            campaign.resources.gpu_kind.as_deref(),
        )
        .map_err(ApplyError::Setup)?
    };
    let needs_gpus = campaign
        .commits
        .iter()
        .map(|c| c.server.gpus)
        .max()
        .unwrap_or(0);
    if needs_gpus > 0 && inventory.gpus.is_empty() && !slurm {
        return Err(ApplyError::Setup(format!(
            "servers ask for {needs_gpus} GPU(s) but none were found ({}); declare them with --gpus 0,1 or `resources.gpus`",
            inventory.source
        )));
    }
    Ok((inventory, probe))
}

/// Records the inventory when it changed (`report` reads the GPU model from it) and the state
/// directory's `meta.json` once.
fn write_setup(
    campaign: &Campaign,
    state_before: &State,
    inventory: &state::Inventory,
) -> Result<(), ApplyError> {
    if state_before.inventory.as_ref() != Some(inventory) {
        let bytes = serde_json::to_vec_pretty(inventory).expect("inventory serialises");
        crate::util::fsx::write_atomic(&campaign.state_dir.join("inventory.json"), &bytes)
            .map_err(|e| ApplyError::Setup(format!("cannot write the state: {e}")))?;
    }
    let meta = campaign.state_dir.join("meta.json");
    if !meta.exists() {
        let m = serde_json::json!({"version": state::STATE_VERSION, "campaign": campaign.name, "created": crate::util::now_rfc3339()});
        crate::util::fsx::write_atomic(&meta, &serde_json::to_vec_pretty(&m).expect("json"))
            .map_err(|e| ApplyError::Setup(format!("cannot write the state: {e}")))?;
    }
    Ok(())
}

/// The plan against the state, with `--rerun` globs and `--commit`/`--arm` targeting.
fn plan_run(
    campaign: &Campaign,
    dag: &Dag,
    state_before: &State,
    opts: &ApplyOptions,
) -> Result<plan::Plan, ApplyError> {
    let rerun = opts
        .rerun
        .iter()
        .map(|g| plan::address_glob(g).map_err(ApplyError::Setup))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(plan::plan(
        campaign,
        dag,
        state_before,
        &PlanOptions {
            rerun,
            targeted: opts.targeted,
            ..Default::default()
        },
    ))
}

fn announce_plan(events: &Stream, the_plan: &plan::Plan, inventory: &state::Inventory) {
    let c = &the_plan.counts;
    events.note(&format!(
        "plan: {} to run, {} to rerun, {} incomplete, {} cached, {} orphaned; {} arm(s) absent · GPUs: {} ({})",
        c.run,
        c.rerun,
        c.incomplete,
        c.cached,
        c.orphaned,
        c.absent_arms,
        if inventory.gpus.is_empty() { "none".to_string() } else { inventory.gpus.iter().map(|g| g.index.to_string()).collect::<Vec<_>>().join(",") },
        inventory.source
    ));
}

/// Runtimes: a killed earlier run may have left servers behind even when nothing is left to
/// do (killed between its last measurement and the stop), so every runtime the campaign uses
/// is connected for the cleanup. Docker must be reachable only if a pending session needs it.
async fn connect_runtimes(
    campaign: &Campaign,
    dag: &Dag,
    pending_sessions: &[usize],
    slurm: bool,
    events: &Stream,
) -> Result<(Option<Runtime>, Option<Runtime>), ApplyError> {
    let needs: HashSet<RuntimeKind> = pending_sessions
        .iter()
        .map(|&s| campaign.commits[dag.sessions[s].commit].server.runtime)
        .collect();
    let used: HashSet<RuntimeKind> = if slurm {
        // Servers run (and are cleaned up) inside the jobs; the controller only builds the
        // patched trees of process-runtime agent arms (`exec::cluster`).
        campaign
            .commits
            .iter()
            .filter(|c| c.server.runtime == RuntimeKind::Process)
            .filter(|c| {
                c.arms
                    .iter()
                    .any(|a| matches!(a.source, ArmSource::Patched(_)))
            })
            .map(|_| RuntimeKind::Process)
            .collect()
    } else {
        campaign.commits.iter().map(|c| c.server.runtime).collect()
    };
    let docker = if used.contains(&RuntimeKind::Docker) {
        match Runtime::docker().await {
            Ok(d) => Some(d),
            Err(f) if needs.contains(&RuntimeKind::Docker) => {
                return Err(ApplyError::Setup(format!("Docker Engine: {f}")));
            }
            Err(f) => {
                events.note(&format!(
                    "warning: Docker Engine not reachable, leftover containers not checked: {f}"
                ));
                None
            }
        }
    } else {
        None
    };
    let process = used
        .contains(&RuntimeKind::Process)
        .then(|| Runtime::process(campaign.state_dir.join("processes")));
    Ok((docker, process))
}

/// Removes the servers and patch-build leftovers earlier runs of this state directory left on
/// `rt`, and warns about containers of older versions that cannot be attributed.
async fn clean_leftovers(
    rt: &Runtime,
    campaign: &Campaign,
    owner: &crate::runtime::Owner,
    events: &Stream,
) {
    match rt.cleanup_leftovers(owner).await {
        Ok(cleanup) => {
            if !cleanup.removed.is_empty() {
                events.note(&format!(
                    "removed {} leftover {} server(s) of an earlier run: {}",
                    cleanup.removed.len(),
                    rt.kind(),
                    cleanup.removed.join(", ")
                ));
            }
            for skipped in &cleanup.skipped {
                events.note(&format!("warning: {skipped}"));
            }
        }
        Err(f) => events.note(&format!(
            "warning: could not clean up leftovers ({}): {f}",
            rt.kind()
        )),
    }
    if let Runtime::Docker(d) = rt
        && let Ok(unowned) = d.unowned_containers(&campaign.name).await
        && !unowned.is_empty()
    {
        events.note(&format!(
            "warning: container(s) {} of campaign {} were made by an older isobench (no state id) and are not removed automatically; remove them by hand if no older isobench runs",
            unowned.join(", "),
            campaign.name
        ));
    }
    match patch::cleanup_leftovers(rt, &campaign.state_dir.join("patched")).await {
        Ok(removed) if !removed.is_empty() => events.note(&format!(
            "removed {} leftover(s) of interrupted patch builds",
            removed.len()
        )),
        Ok(_) => {}
        Err(f) => events.note(&format!("warning: could not clean up patch leftovers: {f}")),
    }
}

/// GPU bookkeeping the scheduler starts from: the pool and each session's fixed placement
/// (`None`: it can never be placed).
struct Gpus {
    pool: Pool,
    placed: Vec<Option<Vec<u32>>>,
}

/// What the scheduler starts from: the context every task shares and the GPU bookkeeping.
struct Launchpad {
    lock: lock::LockGuard,
    ctx: Arc<Ctx>,
    slurm: Option<ClusterSettings>,
    reattach: HashMap<String, (super::cluster::JobRecord, Option<u64>)>,
    pending_sessions: Vec<usize>,
    pending_compares: Vec<NodeIndex>,
    gpus: Gpus,
    total_measures: usize,
}

/// Fixes everything the tasks share before the first one starts: attempt numbers, the
/// journal, GPU placement and paired groups.
fn launchpad(
    p: Box<Prepared>,
    opts: &ApplyOptions,
    comparer: Arc<dyn super::Comparer>,
    cancel: watch::Receiver<bool>,
) -> Result<Launchpad, ApplyError> {
    let attempts = next_attempts(&p.dag, &p.state_before, &p.plan)?;
    let journal = state::Journal::open(&p.campaign.state_dir).map_err(JournalError)?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "isobench".into());
    let isolate = opts.isolate.unwrap_or(p.campaign.resources.isolate);
    let gpu_ids = recorded_gpu_ids(&p.inventory);
    // Balanced placement (a Latin square over trials × GPU groups), fixed before anything runs
    // so that no arm's verdict rests on the card it happened to get.
    let slots: Vec<super::placement::Slot> = p
        .dag
        .sessions
        .iter()
        .map(|s| super::placement::Slot {
            group: s.commit,
            arm: s.arm,
            arms: p.campaign.commits[s.commit].arms.len(),
            trial: s.trial,
            width: p.campaign.commits[s.commit].server.gpus as usize,
        })
        .collect();
    let placed: Vec<Option<Vec<u32>>> = super::placement::place(&slots, p.inventory.gpus.len())
        .into_iter()
        .map(|pl| pl.map(|pos| pos.iter().map(|&i| p.inventory.gpus[i].index).collect()))
        .collect();
    let rendezvous = super::pairing::Rendezvous::default();
    let pair_group = if isolate == Isolate::Paired {
        pair_groups(&p, opts, &slots, &rendezvous)
    } else {
        HashMap::new()
    };
    let pool = Pool::new(
        &p.inventory,
        p.probe,
        p.campaign.resources.gpu_idle_memory_mib,
    );
    let gpu_env_only = opts.gpu_env_only || p.campaign.resources.gpu_env_only;
    let total_measures: usize = p
        .pending_sessions
        .iter()
        .map(|&s| {
            p.dag.sessions[s]
                .measures
                .iter()
                .filter(|m| p.plan.action(**m).executes())
                .count()
        })
        .sum();
    let ctx = Arc::new(Ctx {
        campaign: p.campaign,
        dag: p.dag,
        plan: p.plan,
        run_id: p.run_id,
        owner: p.owner,
        attempts,
        events: p.events.with_journal(journal),
        cancel,
        docker: p.docker,
        process: p.process,
        isolate,
        measure_slot: Semaphore::new(1),
        rendezvous,
        pair_group,
        gpu_ids,
        exe,
        gpu_env_only,
        comparer,
        servers: Mutex::new(HashMap::new()),
        closed: Mutex::new(HashSet::new()),
    });
    Ok(Launchpad {
        lock: p.lock,
        ctx,
        slurm: p.slurm,
        reattach: p.reattach,
        pending_sessions: p.pending_sessions,
        pending_compares: p.pending_compares,
        gpus: Gpus { pool, placed },
        total_measures,
    })
}

/// The attempt number each node gets. A node at the counter's end is an error only if it must
/// run (a hand-edited journal).
fn next_attempts(
    dag: &Dag,
    state_before: &State,
    the_plan: &plan::Plan,
) -> Result<HashMap<NodeIndex, u32>, ApplyError> {
    let mut attempts: HashMap<NodeIndex, u32> = HashMap::new();
    for n in dag.graph.node_indices() {
        match state_before.next_attempt(&dag.graph[n].address) {
            Ok(a) => {
                attempts.insert(n, a);
            }
            Err(e) if the_plan.action(n).executes() => return Err(ApplyError::Setup(e)),
            Err(_) => {}
        }
    }
    Ok(attempts)
}

/// How each GPU is recorded with results: its UUID, or `gpu<index>` when declared.
fn recorded_gpu_ids(inventory: &state::Inventory) -> HashMap<u32, String> {
    inventory
        .gpus
        .iter()
        .map(|g| {
            let id = if g.uuid.is_empty() {
                format!("gpu{}", g.index)
            } else {
                g.uuid.clone()
            };
            (g.index, id)
        })
        .collect()
}

/// Paired measurement groups: the arms of one (commit, trial) that fit on the GPUs at once;
/// each group's points are announced to `rendezvous`. Returns session → group.
fn pair_groups(
    p: &Prepared,
    opts: &ApplyOptions,
    slots: &[super::placement::Slot],
    rendezvous: &super::pairing::Rendezvous,
) -> HashMap<usize, usize> {
    let mut pair_group: HashMap<usize, usize> = HashMap::new();
    let mut ids: HashMap<(usize, u32, usize), usize> = HashMap::new();
    // A group never holds more sessions than may run at once, or its first member would
    // wait for a partner that cannot start.
    let at_once = opts
        .max_parallel
        .unwrap_or(if p.inventory.gpus.is_empty() {
            1
        } else {
            usize::MAX
        })
        .max(1);
    for &s in &p.pending_sessions {
        let sess = &p.dag.sessions[s];
        let chunk = super::placement::part(&slots[s], p.inventory.gpus.len(), at_once);
        let next = ids.len();
        let id = *ids.entry((sess.commit, sess.trial, chunk)).or_insert(next);
        pair_group.insert(s, id);
        for &m in &sess.measures {
            if let crate::pipeline::expand::Target::Point { point, .. } = p.dag.graph[m].target
                && p.plan.action(m).executes()
            {
                rendezvous.expect(id, point);
            }
        }
    }
    pair_group
}

/// What one pass over the queue did with the session at the cursor.
enum Launch {
    /// It stays queued (waiting for its image, patch, group or GPUs); look at the next one.
    Skip,
    /// It left the queue (started or failed); the next one moved up to the cursor.
    Taken,
    /// Nothing more may start now.
    Full,
}

/// The scheduling loop's state: what is queued, running, pulled, patched, and counted so far.
/// `run` alternates [`Scheduler::launch_ready`] and [`Scheduler::on_event`] until nothing is
/// running and nothing more will start.
struct Scheduler {
    ctx: Arc<Ctx>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    cancel: watch::Sender<bool>,
    cluster: Option<Arc<super::cluster::Controller>>,
    pool: Pool,
    placed: Vec<Option<Vec<u32>>>,
    max_parallel: usize,
    fail_fast: bool,
    total_measures: usize,
    summary: ApplySummary,
    images: HashMap<usize, Readiness<ImageInfo>>,
    patches: HashMap<(usize, usize), Readiness<(ResolvedSource, bool)>>,
    datasets: HashMap<usize, Result<Arc<session::Datasets>, Failure>>,
    queue: Vec<usize>,
    running: HashMap<usize, Vec<u32>>,
    waiting_since: HashMap<usize, Instant>,
    stop_launching: bool,
    last_idle_notice: Option<String>,
    /// A journal write failed (disk full...): nothing more can be recorded, so nothing new
    /// starts and running sessions are cancelled; apply returns the error only once every
    /// session has stopped its server.
    fatal: Option<JournalError>,
    /// A task panicked before recording its server: sweep the campaign's servers at the end.
    sweep: bool,
}

impl Scheduler {
    fn new(
        ctx: Arc<Ctx>,
        cancel: watch::Sender<bool>,
        cluster: Option<Arc<super::cluster::Controller>>,
        gpus: Gpus,
        queue: Vec<usize>,
        total_measures: usize,
        opts: &ApplyOptions,
    ) -> Scheduler {
        let max_parallel =
            opts.max_parallel
                .unwrap_or(if gpus.pool.is_empty() && cluster.is_none() {
                    1
                } else {
                    usize::MAX // Slurm queues what does not fit
                });
        let (tx, rx) = mpsc::unbounded_channel::<Event>();
        Scheduler {
            ctx,
            tx,
            rx,
            cancel,
            cluster,
            pool: gpus.pool,
            placed: gpus.placed,
            max_parallel,
            fail_fast: opts.fail_fast,
            total_measures,
            summary: ApplySummary::default(),
            images: HashMap::new(),
            patches: HashMap::new(),
            datasets: HashMap::new(),
            queue,
            running: HashMap::new(),
            waiting_since: HashMap::new(),
            stop_launching: false,
            last_idle_notice: None,
            fatal: None,
            sweep: false,
        }
    }

    /// Prefetch: every image a pending session needs, in order of first use, bounded in
    /// parallel. (Slurm: each job gets its image on its node.)
    fn prefetch(&mut self) {
        let pull_slots = Arc::new(Semaphore::new(
            self.ctx.campaign.resources.pull_parallelism as usize,
        ));
        if self.cluster.is_some() {
            return;
        }
        for &s in &self.queue {
            let image = self.ctx.dag.sessions[s].image;
            if self.images.contains_key(&image) {
                continue;
            }
            self.images.insert(image, Readiness::Waiting);
            let (ctx2, tx2, slots) = (self.ctx.clone(), self.tx.clone(), pull_slots.clone());
            tokio::spawn(async move {
                let _permit = slots.acquire_owned().await.expect("open");
                let node = ctx2.dag.pulls.get(image).copied();
                let task = tokio::spawn({
                    let ctx2 = ctx2.clone();
                    async move { pull(&ctx2, image).await }
                });
                let r = match task.await {
                    Ok(r) => r,
                    Err(e) => Err(task_failed(&ctx2, "pull", e, node.into_iter())),
                };
                let _ = tx2.send(Event::Pulled(image, r));
            });
        }
    }

    /// Launches and waits for events until nothing runs and nothing more will start; then
    /// stops what failed tasks left running.
    async fn run(mut self) -> Result<ApplySummary, ApplyError> {
        loop {
            if self.ctx.cancelled() || self.fatal.is_some() {
                self.stop_launching = true;
            }
            self.launch_ready();
            self.totals(self.running.len());
            if self.drained() {
                break;
            }
            let event = tokio::select! {
                e = self.rx.recv() => e,
                _ = tokio::time::sleep(Duration::from_millis(500)) => None,
            };
            if let Some(event) = event {
                self.on_event(event).await;
            }
        }
        self.totals(0);
        if let Some(e) = self.fatal.take() {
            sweep_servers(&self.ctx).await;
            self.ctx.events.finish(None);
            return Err(e.into());
        }
        if self.sweep {
            sweep_servers(&self.ctx).await;
        }
        self.summary.interrupted |= self.ctx.cancelled();
        Ok(self.summary)
    }

    /// The totals line, from the stream's tally.
    fn totals(&self, running: usize) {
        let tally = self.ctx.events.tally();
        // Only a node transition can fail to be delivered (the journal); totals cannot.
        let _ = self.ctx.emit(&ExecEvent::Totals {
            done: tally.measured() as u64,
            total: self.total_measures as u64,
            running,
            failed: tally.failed() as u64,
        });
    }

    /// Whether the loop is over: nothing runs and nothing more will start, or (interrupted)
    /// only pulls and patch builds are left, which are not waited for.
    fn drained(&self) -> bool {
        let pulls_in_flight = self
            .images
            .values()
            .any(|r| matches!(r, Readiness::Waiting))
            && !self.queue.is_empty();
        let patches_in_flight = self
            .patches
            .values()
            .any(|r| matches!(r, Readiness::Waiting));
        if self.running.is_empty()
            && (self.queue.is_empty() || self.stop_launching)
            && !pulls_in_flight
            && !patches_in_flight
        {
            return true;
        }
        self.running.is_empty()
            && self.stop_launching
            && (pulls_in_flight || patches_in_flight)
            && self.ctx.cancelled()
    }

    /// Launches what can run, in interleaved order; later sessions may backfill free GPUs.
    fn launch_ready(&mut self) {
        let mut i = 0;
        while i < self.queue.len() && !self.stop_launching {
            let step = match self.cluster.clone() {
                Some(ctl) => self.launch_on_cluster(i, ctl),
                None => self.launch_here(i),
            };
            match step {
                Launch::Skip => i += 1,
                Launch::Taken => {}
                Launch::Full => break,
            }
        }
    }

    /// Slurm: the session becomes a job (Slurm queues what does not fit).
    fn launch_on_cluster(&mut self, i: usize, ctl: Arc<super::cluster::Controller>) -> Launch {
        if self.running.len() >= self.max_parallel {
            return Launch::Full;
        }
        let s = self.queue.remove(i);
        self.running.insert(s, Vec::new());
        self.summary.parallel_peak = self.summary.parallel_peak.max(self.running.len());
        let (ctx2, tx2) = (self.ctx.clone(), self.tx.clone());
        tokio::spawn(async move {
            let task = tokio::spawn(super::cluster::run_session(ctx2.clone(), ctl, s));
            let r = match task.await {
                Ok(r) => r,
                // Must still report back, or apply waits forever; the job, not
                // `ended` in cluster/jobs.jsonl, is followed by the next apply.
                Err(e) => {
                    ctx2.note(&format!("error: a Slurm session task failed: {e}"));
                    Ok(SessionOutcome::default())
                }
            };
            let _ = tx2.send(Event::SessionDone(s, Vec::new(), r));
        });
        Launch::Taken
    }

    /// This host: the session starts once its prerequisites are ready, its paired group has
    /// its turn and its placed GPUs are free (and idle).
    fn launch_here(&mut self, i: usize) -> Launch {
        let s = self.queue[i];
        let ctx = self.ctx.clone();
        let (resolved, ds) = match prerequisites(
            &ctx,
            &self.tx,
            s,
            &self.images,
            &mut self.patches,
            &mut self.datasets,
        ) {
            Prerequisites::Wait => return Launch::Skip,
            Prerequisites::Failed(f) => {
                self.give_up(i, s, &f);
                return Launch::Taken;
            }
            Prerequisites::Ready(resolved, ds) => (resolved, ds),
        };
        if !self.group_turn(s) {
            return Launch::Skip;
        }
        if self.running.len() >= self.max_parallel {
            return Launch::Full;
        }
        let wanted = match &self.placed[s] {
            Some(gpus) => self.pool.acquire_exact(gpus),
            None => Err(Shortage::Never),
        };
        match wanted {
            Ok(gpus) => {
                self.waiting_since.remove(&s);
                self.running.insert(s, gpus.clone());
                self.summary.parallel_peak = self.summary.parallel_peak.max(self.running.len());
                self.queue.remove(i);
                let tx2 = self.tx.clone();
                tokio::spawn(async move {
                    let r = supervise_session(ctx, s, gpus.clone(), resolved, ds).await;
                    let _ = tx2.send(Event::SessionDone(s, gpus, r));
                });
                Launch::Taken
            }
            Err(Shortage::Never) => {
                let commit = &ctx.campaign.commits[ctx.dag.sessions[s].commit];
                let f = Failure::new(
                    FailureClass::NoGpu,
                    format!(
                        "needs {} GPUs per server; only {} available",
                        commit.server.gpus,
                        self.pool.len()
                    ),
                );
                self.give_up(i, s, &f);
                Launch::Taken
            }
            Err(Shortage::Busy) => Launch::Skip,
            Err(Shortage::NotIdle(busy)) => self.wait_for_idle(i, s, &busy),
        }
    }

    /// Paired: one measurement group at a time: the running one, else the first queued. (Not
    /// simply the queue's head: with more arms than GPUs a group's members need not be
    /// adjacent in the queue.)
    fn group_turn(&self, s: usize) -> bool {
        let Some(&group) = self.ctx.pair_group.get(&s) else {
            return true;
        };
        let current = self
            .running
            .keys()
            .next()
            .or(self.queue.first())
            .and_then(|q| self.ctx.pair_group.get(q));
        current == Some(&group)
    }

    /// The placed GPUs are used by other processes: said once per distinct situation (not once
    /// per waiting session); after `gpu_idle_wait` with nothing of ours running, the session
    /// fails.
    fn wait_for_idle(&mut self, i: usize, s: usize, busy: &[(u32, u64)]) -> Launch {
        let idle_wait = self.ctx.campaign.resources.gpu_idle_wait;
        let list = busy
            .iter()
            .map(|(g, mib)| format!("GPU {g}: {mib} MiB"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.last_idle_notice.as_deref() != Some(list.as_str()) {
            self.ctx.note(&format!(
                "waiting for a GPU to read idle ({list} in use; threshold {} MiB)",
                self.ctx.campaign.resources.gpu_idle_memory_mib
            ));
            self.last_idle_notice = Some(list.clone());
        }
        let since = *self.waiting_since.entry(s).or_insert_with(Instant::now);
        if since.elapsed() > idle_wait && self.running.is_empty() {
            let f = Failure::new(
                FailureClass::NoGpu,
                format!(
                    "no idle GPU after {} ({list} in use by other processes)",
                    human_duration(idle_wait)
                ),
            );
            self.give_up(i, s, &f);
            Launch::Taken
        } else {
            Launch::Skip
        }
    }

    /// Session `s` (at queue position `i`) will not run: its pending nodes are marked failed
    /// and it leaves the queue.
    fn give_up(&mut self, i: usize, s: usize, f: &Failure) {
        if let Err(e) = fail_session(&self.ctx, s, f) {
            self.abort(e);
        }
        self.queue.remove(i);
    }

    /// A journal write failed: said once, every session is cancelled (see `fatal`).
    fn abort(&mut self, e: JournalError) {
        if self.fatal.is_none() {
            self.ctx
                .note(&format!("error: {e}; stopping every server, then exiting"));
            let _ = self.cancel.send(true);
            self.fatal = Some(e);
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Pulled(image, r) => {
                self.images.insert(image, Readiness::of(r));
            }
            Event::Patched(key, r) => {
                self.patches.insert(key, Readiness::of(r));
            }
            Event::SessionDone(s, gpus, r) => self.session_done(s, &gpus, r).await,
        }
    }

    /// Frees the session's GPUs, prunes images no longer needed (disk budget) and counts.
    async fn session_done(
        &mut self,
        s: usize,
        gpus: &[u32],
        r: Result<SessionOutcome, JournalError>,
    ) {
        self.pool.release(gpus);
        self.running.remove(&s);
        if let Some(budget) = self.ctx.campaign.resources.disk_budget {
            prune_unneeded(
                &self.ctx,
                &mut self.images,
                &self.queue,
                &self.running,
                budget,
            )
            .await;
        }
        let outcome = match r {
            Ok(outcome) => outcome,
            Err(e) => {
                self.abort(e);
                return;
            }
        };
        self.sweep |= outcome.unrecorded_server;
        self.summary.interrupted |= outcome.interrupted;
        if outcome.failed > 0 && self.fail_fast {
            self.ctx
                .note("--fail-fast: a step failed; not starting new sessions");
            self.stop_launching = true;
        }
    }
}

/// Compares each commit whose measurements changed (cheap; reads the results just written),
/// unless interrupted; then reads the run's counts from the stream's tally (measurements done,
/// this run's failed measurements in DAG order) and ends the stream with the summary.
fn summarize(
    ctx: &Ctx,
    pending_compares: &[NodeIndex],
    mut summary: ApplySummary,
    t0: Instant,
) -> Result<ApplySummary, ApplyError> {
    if !summary.interrupted {
        for &cmp in pending_compares {
            run_compare(ctx, cmp)?;
        }
    }
    let tally = ctx.events.tally();
    summary.measured = tally.measured();
    summary.failed_nodes = ctx
        .dag
        .graph
        .node_indices()
        .filter_map(|n| {
            let address = &ctx.dag.graph[n].address;
            Some((address.clone(), tally.failure_of(address)?))
        })
        .collect();
    summary.makespan = t0.elapsed();
    ctx.events.finish(Some(&summary));
    Ok(summary)
}

/// Runs a session as its own task and reports its end whatever happens: a panic in the task
/// becomes an `internal` failure of the session's unfinished nodes, and a server the task
/// left running (panic, journal error) is stopped here. Without this, a panicked session never
/// reported back and apply waited for it forever, its server running.
async fn supervise_session(
    ctx: Arc<Ctx>,
    s: usize,
    gpus: Vec<u32>,
    resolved: ResolvedSource,
    ds: Arc<session::Datasets>,
) -> Result<SessionOutcome, JournalError> {
    let task = tokio::spawn(session::run(ctx.clone(), s, gpus, resolved, ds));
    let joined = task.await;
    if let Some(handle) = ctx.forget_server(s) {
        let commit = &ctx.campaign.commits[ctx.dag.sessions[s].commit];
        if let Some(runtime) = ctx.runtime(commit.server.runtime) {
            let _ = runtime.stop(&handle, Duration::from_secs(10)).await;
            ctx.note(&format!("stopped server {} of a failed session", handle.id));
        }
    }
    match joined {
        Ok(r) => r,
        Err(e) => {
            let sess = &ctx.dag.sessions[s];
            let nodes: Vec<NodeIndex> = sess
                .nodes
                .iter()
                .chain(sess.measures.iter())
                .copied()
                .filter(|n| ctx.plan.action(*n).executes())
                .collect();
            let f = task_failed(&ctx, "session", e, std::iter::empty());
            let start = sess
                .nodes
                .iter()
                .copied()
                .find(|n| ctx.dag.graph[*n].kind == StepKind::ServerStart);
            let mut outcome = SessionOutcome {
                unrecorded_server: start.is_some_and(|n| !ctx.is_closed(n)),
                ..SessionOutcome::default()
            };
            for n in nodes {
                if ctx.is_closed(n) {
                    continue;
                }
                ctx.failed(n, f.clone())?;
                if ctx.dag.graph[n].kind == StepKind::LoadMeasure {
                    outcome.failed += 1;
                }
            }
            Ok(outcome)
        }
    }
}

/// A pull, patch or session task that panicked (or was cancelled): an `internal` failure,
/// journaled for `nodes` not yet closed by the task itself (best effort: the journal may be
/// what failed).
fn task_failed(
    ctx: &Ctx,
    what: &str,
    e: tokio::task::JoinError,
    nodes: impl Iterator<Item = NodeIndex>,
) -> Failure {
    let why = if e.is_panic() {
        let payload = e.into_panic();
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string())
    } else {
        e.to_string()
    };
    let f = Failure::new(
        FailureClass::Internal,
        format!("internal error: the {what} task failed: {why}"),
    );
    ctx.note(&format!("{f}"));
    for n in nodes {
        if ctx.plan.action(n).executes() && !ctx.is_closed(n) {
            let _ = ctx.failed(n, f.clone());
        }
    }
    f
}

/// After a fatal error or a panic: stops every server this campaign still has (sessions have
/// ended, so none is in use), including one a task started but never got to record.
async fn sweep_servers(ctx: &Ctx) {
    let left: Vec<(usize, crate::runtime::ServerHandle)> = ctx
        .servers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (s, handle) in left {
        let commit = &ctx.campaign.commits[ctx.dag.sessions[s].commit];
        if let Some(runtime) = ctx.runtime(commit.server.runtime) {
            let _ = runtime.stop(&handle, Duration::from_secs(10)).await;
        }
    }
    for rt in ctx.docker.iter().chain(ctx.process.iter()) {
        if let Ok(removed) = rt.cleanup_this_run(&ctx.owner).await
            && !removed.is_empty()
        {
            ctx.note(&format!(
                "removed {} {} server(s) left by failed tasks: {}",
                removed.len(),
                rt.kind(),
                removed.join(", ")
            ));
        }
    }
}

/// What a pending session still waits for before it can take GPUs.
enum Prerequisites {
    /// Its image is being pulled or its patch built.
    Wait,
    /// Its image, patch or dataset could not be had.
    Failed(Failure),
    Ready(ResolvedSource, Arc<session::Datasets>),
}

/// Checks (and starts, for patches) what session `s` needs: its pulled image, its patched
/// source, and its commit's dataset (built once per commit, the same prompts in every arm).
fn prerequisites(
    ctx: &Arc<Ctx>,
    tx: &mpsc::UnboundedSender<Event>,
    s: usize,
    images: &HashMap<usize, Readiness<ImageInfo>>,
    patches: &mut HashMap<(usize, usize), Readiness<(ResolvedSource, bool)>>,
    datasets: &mut HashMap<usize, Result<Arc<session::Datasets>, Failure>>,
) -> Prerequisites {
    let sess = &ctx.dag.sessions[s];
    let arm = &ctx.campaign.commits[sess.commit].arms[sess.arm];
    let image_info = match images.get(&sess.image) {
        Some(Readiness::Waiting) => return Prerequisites::Wait,
        Some(Readiness::Failed(f)) => return Prerequisites::Failed(f.clone()),
        Some(Readiness::Ready(info)) => info,
        // Pruning keeps every image a pending session needs; reaching this is a bug, and the
        // session fails as one instead of the campaign stopping.
        Some(Readiness::Pruned) => {
            return Prerequisites::Failed(Failure::new(
                FailureClass::Internal,
                "the image was pruned while a pending session still needed it",
            ));
        }
        None => unreachable!("every pending session's image is being pulled"),
    };
    let key = (sess.commit, sess.arm);
    let resolved = match &arm.source {
        ArmSource::Patched(spec) => match patches.get(&key) {
            None => {
                patches.insert(key, Readiness::Waiting);
                let (ctx2, tx2, spec, info) =
                    (ctx.clone(), tx.clone(), spec.clone(), image_info.clone());
                tokio::spawn(async move {
                    let node = ctx2.dag.patches.get(&key).copied();
                    let task = tokio::spawn({
                        let ctx2 = ctx2.clone();
                        async move { build_patch(&ctx2, key, &spec, &info).await }
                    });
                    let r = match task.await {
                        Ok(r) => r,
                        Err(e) => Err(task_failed(&ctx2, "patch", e, node.into_iter())),
                    };
                    let _ = tx2.send(Event::Patched(key, r));
                });
                return Prerequisites::Wait;
            }
            Some(Readiness::Waiting) => return Prerequisites::Wait,
            Some(Readiness::Failed(f)) => return Prerequisites::Failed(f.clone()),
            Some(Readiness::Ready((r, _))) => r.clone(),
            Some(Readiness::Pruned) => unreachable!("only images are pruned"),
        },
        root => ResolvedSource {
            source: source_of_root(root),
            env: BTreeMap::new(),
            digest: image_info.digest().to_string(),
        },
    };
    match datasets
        .entry(sess.commit)
        .or_insert_with(|| dataset_for(&ctx.campaign, sess.commit).map(Arc::new))
    {
        Ok(ds) => Prerequisites::Ready(resolved, ds.clone()),
        Err(f) => Prerequisites::Failed(f.clone()),
    }
}

/// Serialises read-modify-write of `pulled-images.json` between this run's pull tasks.
static PULLED_IMAGES: Mutex<()> = Mutex::new(());

/// With a disk budget: once the pulled images together exceed it, removes those that no
/// pending or running session needs any more (a later apply pulls them again if needed).
/// Only images this state directory pulled (`pulled-images.json`) are ever removed.
async fn prune_unneeded(
    ctx: &Ctx,
    images: &mut HashMap<usize, Readiness<ImageInfo>>,
    queue: &[usize],
    running: &HashMap<usize, Vec<u32>>,
    budget: u64,
) {
    let Some(Runtime::Docker(docker)) = &ctx.docker else {
        return;
    };
    let in_use: u64 = images
        .values()
        .filter_map(|r| {
            if let Readiness::Ready(i) = r {
                i.size
            } else {
                None
            }
        })
        .sum();
    if in_use <= budget {
        return;
    }
    let needed: HashSet<usize> = queue
        .iter()
        .chain(running.keys())
        .map(|s| ctx.dag.sessions[*s].image)
        .collect();
    let prunable: Vec<usize> = images
        .iter()
        .filter(|(i, r)| !needed.contains(i) && matches!(r, Readiness::Ready(_)))
        .map(|(i, _)| *i)
        .collect();
    // Only what this state directory pulled: an image that was here before (a local-only tag,
    // another campaign's) could not be pulled back by whoever needs it.
    let pulled = {
        let _guard = PULLED_IMAGES.lock().unwrap_or_else(|e| e.into_inner());
        state::owned::pulled_images(ctx.state_dir())
    };
    let pulled = match pulled {
        Ok(pulled) => pulled,
        Err(e) => {
            ctx.note(&format!(
                "warning: not pruning: cannot read what was pulled: {e}"
            ));
            return;
        }
    };
    for image in prunable {
        let ArmSource::Image { reference } = &ctx.dag.images[image].source else {
            continue;
        };
        let Some(record) = pulled.iter().find(|p| &p.reference == reference) else {
            continue;
        };
        // Re-tagged or re-pulled since: the tag now names an image this state did not pull.
        if docker.image_id(reference).await.as_deref() != Some(record.id.as_str()) {
            continue;
        }
        match docker.remove_image(reference).await {
            Ok(()) => {
                ctx.note(&format!(
                    "pruned {reference}: no pending session needs it (disk budget {})",
                    human_bytes(budget)
                ));
                images.insert(image, Readiness::Pruned);
                let _guard = PULLED_IMAGES.lock().unwrap_or_else(|e| e.into_inner());
                let _ = state::owned::forget_pulled(ctx.state_dir(), reference);
            }
            Err(e) => ctx.note(&format!("warning: could not prune {reference}: {e}")),
        }
    }
}

/// Marks every pending node of a session failed (its image or patch could not be had).
fn fail_session(ctx: &Ctx, s: usize, f: &Failure) -> Result<(), JournalError> {
    let sess = &ctx.dag.sessions[s];
    for &n in sess.nodes.iter().chain(sess.measures.iter()) {
        if !ctx.plan.action(n).executes() {
            continue;
        }
        ctx.failed(n, f.clone())?;
        if ctx.dag.graph[n].kind == StepKind::LoadMeasure {
            // Its paired partners must not wait for a session that never starts.
            if let (Some(&group), crate::pipeline::expand::Target::Point { point, .. }) =
                (ctx.pair_group.get(&s), ctx.dag.graph[n].target)
            {
                ctx.rendezvous.leave(group, point);
            }
        }
    }
    let commit = &ctx.campaign.commits[sess.commit];
    ctx.note(&format!(
        "{} {} #{}: not run: {f}",
        commit.short, commit.arms[sess.arm].name, sess.trial
    ));
    Ok(())
}

/// Makes an image (or installation) available; journals the pull node when the plan runs it.
async fn pull(ctx: &Ctx, image: usize) -> Result<ImageInfo, Failure> {
    let img = &ctx.dag.images[image];
    if ctx.dag.graph[ctx.dag.pulls[image]].kind == StepKind::ImageBuild
        && let ArmSource::Image { reference } = &img.source
        && let Some(spec) = ctx.campaign.builds.get(reference)
    {
        return super::build::acquire(ctx, image, spec).await;
    }
    let source = source_of_root(&img.source);
    let kind = match source {
        ServerSource::Image { .. } => RuntimeKind::Docker,
        ServerSource::Path { .. } => RuntimeKind::Process,
    };
    let runtime = ctx.runtime(kind).ok_or_else(|| {
        Failure::new(
            FailureClass::Internal,
            format!("no {kind:?} runtime for {}", img.label),
        )
    })?;
    let node = ctx.dag.pulls.get(image).copied();
    let journaled = node.filter(|n| ctx.plan.action(*n).executes());
    if let Some(n) = journaled {
        ctx.started(n)?;
    }
    let reference = reference_of(&source);
    let activity = ctx.begin(&format!("pull {reference}"), "checking");
    let progress = |p: crate::runtime::PullProgress| {
        if p.total_bytes > 0 {
            activity.set(format!(
                "pulling {:.0} % of {} ({}/{} layers)",
                100.0 * p.downloaded_bytes as f64 / p.total_bytes as f64,
                human_bytes(p.total_bytes),
                p.layers_done,
                p.layers_total
            ));
        } else {
            activity.set(p.status.clone());
        }
    };
    let r = tokio::select! {
        r = runtime.ensure_image(&reference, progress) => r,
        _ = ctx.cancelled_wait() => Err(Failure::new(FailureClass::Interrupted, "interrupted")),
    };
    match &r {
        Ok(info) => {
            if info.pulled && kind == RuntimeKind::Docker {
                // Recorded so `disk_budget` may prune it later, and nothing it did not pull.
                let _guard = PULLED_IMAGES.lock().unwrap_or_else(|e| e.into_inner());
                let image = state::owned::PulledImage {
                    reference: reference.clone(),
                    id: info.id.clone(),
                };
                if let Err(e) = state::owned::record_pulled(ctx.state_dir(), image) {
                    ctx.note(&format!(
                        "warning: cannot record that {reference} was pulled (it will not be pruned): {e}"
                    ));
                }
            }
            if let Some(n) = journaled {
                ctx.done(n, &[], Some(serde_json::json!({"id": info.id, "repo_digest": info.repo_digest, "size": info.size, "pulled": info.pulled})))?;
            }
            activity.end(if info.pulled { "pulled" } else { "present" });
        }
        Err(f) if f.class == FailureClass::Interrupted => activity.end("interrupted"),
        Err(f) => {
            if let Some(n) = journaled {
                ctx.failed(n, f.clone())?;
            }
            activity.end(&format!("failed: {f}"));
        }
    }
    r
}

pub(super) async fn build_patch(
    ctx: &Ctx,
    key: (usize, usize),
    spec: &crate::manifest::model::PatchSpec,
    base: &ImageInfo,
) -> Result<(ResolvedSource, bool), Failure> {
    let commit = &ctx.campaign.commits[key.0];
    let runtime = ctx
        .runtime(commit.server.runtime)
        .ok_or_else(|| Failure::new(FailureClass::Internal, "no runtime"))?;
    let node = ctx.dag.patches.get(&key).copied();
    let journaled = node.filter(|n| ctx.plan.action(*n).executes());
    let log = match node {
        Some(n) => ctx
            .attempt_dir(n)
            .map_err(|e| Failure::new(FailureClass::Internal, e.to_string()))?
            .join("patch.log"),
        None => ctx.state_dir().join("patch.log"),
    };
    if let Some(n) = journaled {
        ctx.started(n)?;
    }
    let label = format!("patch {} {}", commit.short, commit.arms[key.1].name);
    let activity = ctx.begin(&label, "applying");
    let base_source = source_of_root(spec.base.root());
    let r = patch::build_patched(
        runtime,
        spec,
        base,
        &base_source,
        &ctx.state_dir().join("patched"),
        &log,
    )
    .await;
    match r {
        Ok(outcome) => {
            let (source, env, digest) = match &outcome.source {
                PatchedSource::Image { reference, id } => (
                    ServerSource::Image {
                        reference: reference.clone(),
                    },
                    BTreeMap::new(),
                    id.clone(),
                ),
                PatchedSource::Tree { root, pythonpath } => {
                    // The patched copy goes first; whatever PYTHONPATH the arm sets stays behind it.
                    let arm_env = &commit.arms[key.1].env;
                    let joined = match arm_env.get("PYTHONPATH").filter(|p| !p.is_empty()) {
                        Some(existing) => format!("{}:{existing}", pythonpath.display()),
                        None => pythonpath.display().to_string(),
                    };
                    let mut env = BTreeMap::new();
                    env.insert("PYTHONPATH".to_string(), joined);
                    (
                        ServerSource::Path { root: root.clone() },
                        env,
                        format!("{}+{}", root.display(), spec.patch_hash),
                    )
                }
            };
            if let Some(n) = journaled {
                let outputs = if log.exists() {
                    vec![log.clone()]
                } else {
                    vec![]
                };
                ctx.done(n, &outputs, Some(serde_json::json!({"reused": outcome.reused, "fuzz_used": outcome.fuzz_used, "files": outcome.files, "source": digest})))?;
            }
            activity.end(if outcome.reused { "reused" } else { "built" });
            Ok((
                ResolvedSource {
                    source,
                    env,
                    digest,
                },
                outcome.reused,
            ))
        }
        Err(mut f) => {
            if f.log_path.is_none() && log.exists() {
                f.log_path = Some(log.display().to_string());
            }
            if let Some(n) = journaled {
                ctx.failed(n, f.clone())?;
            }
            activity.end(&format!("failed: {f}"));
            Err(f)
        }
    }
}

/// The per-commit comparison: arms' results side by side (`compare.json`).
fn run_compare(ctx: &Ctx, node: NodeIndex) -> Result<(), JournalError> {
    let crate::pipeline::expand::Target::Commit(commit) = ctx.dag.graph[node].target else {
        return Ok(());
    };
    ctx.started(node)?;
    let state = State::load(ctx.state_dir())?;
    let dir = ctx.attempt_dir(node)?;
    let path = dir.join("compare.json");
    match ctx
        .comparer
        .compare(&ctx.campaign, &ctx.dag, &state, commit)
    {
        Ok(json) => {
            crate::util::fsx::write_atomic(&path, &json)?;
            ctx.done(node, &[path], None)
        }
        Err(e) => ctx.failed(
            node,
            Failure::new(FailureClass::Internal, format!("compare: {e}")),
        ),
    }
}

fn spawn_signal_handler(cancel: watch::Sender<bool>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                crate::util::term::err_line(
                    "\ninterrupted: stopping servers (press Ctrl-C again to exit at once; leftovers are removed by the next apply)",
                );
                let _ = cancel.send(true);
            } else {
                std::process::exit(130);
            }
        }
    });
}
