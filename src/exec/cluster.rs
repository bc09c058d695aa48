//! Sessions on a Slurm cluster (`[cluster] backend = "slurm"`, `docs/cluster.md`).
//!
//! **One Slurm job per server session.** The controller (`apply`) submits a batch job whose
//! payload is `isobench worker` ([`worker`]); the worker runs the session with the same
//! session runner as a local run ([`super::session::run`]) on the GPUs Slurm bound, with the
//! load generator on the same node, and writes attempt directories into the campaign's state
//! directory on the shared filesystem.
//!
//! **Who writes what.** The controller alone appends to `journal.jsonl`. Each job writes only
//! below `cluster/<token>/`: its own `journal.jsonl` (the session's transitions, same format),
//! `outcome.json` (node, GPUs, times) and `slurm.out`. The controller keeps a second
//! append-only log, `cluster/jobs.jsonl`: `submitting` (with a fresh token, *before* `sbatch`,
//! the token is the job's name) → `submitted` (the job id) → `ended` (Slurm's final state). When
//! a job ends, the controller copies the job's journal lines into the main journal and
//! journals a classified failure for every step the job was meant to run but did not finish.
//! After `kill -9` of the controller, the next `apply` reads `jobs.jsonl`: a job not `ended` is
//! looked up by its token in `squeue`; if it still runs the new controller follows it instead
//! of submitting the session again, if it ended its results are collected first.
//!
//! **Patched agent arms.** Process runtime: the controller builds the patched tree (the local
//! `patch` step, journaled in the main journal) into the state directory, which is on the
//! shared filesystem, before it submits the arm's jobs, and names it in each job's script
//! ([`PatchedTree`]). Docker: each job builds (or finds) the derived image on its own node's
//! engine, after the base image (`patch_on_node`); a controller needs no Docker.

use super::context::{Ctx, JournalError};
use super::events::{Activity, Stream};
use super::live::human_duration;
use super::session::{self, ResolvedSource, SessionOutcome};
use crate::failure::{Failure, FailureClass};
use crate::manifest::model::{Campaign, ClusterSettings, Placement};
use crate::manifest::pipeline::StepKind;
use crate::pipeline::expand::Dag;
use crate::runtime::slurm::{self, JobInfo};
use crate::state::{self, Entry, Event, Journal, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// `cluster/` in the state directory.
pub const DIR: &str = "cluster";
/// The controller's log of submissions.
pub const JOBS: &str = "jobs.jsonl";
/// What a worker writes when its session ends.
pub const OUTCOME: &str = "outcome.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEvent {
    /// About to call `sbatch` with this token as the job name.
    Submitting,
    /// `sbatch` answered with the job id.
    Submitted,
    /// The job left Slurm and its results were collected.
    Ended,
}

/// One line of `cluster/jobs.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub t: String,
    pub token: String,
    pub event: JobEvent,
    /// Address of the session's `start` node.
    pub session: String,
    /// The apply run that submitted it (the worker journals under this run id).
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
    /// Measure addresses the job is to run (`submitting` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<String>,
    /// Slurm's final state and reason (`ended` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a worker records about where and when its session ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub job_id: Option<u64>,
    pub node: String,
    /// GPU indices on the node (as Slurm bound them).
    pub gpus: Vec<u32>,
    /// Unix milliseconds: session start and end on the node.
    pub began_ms: u64,
    pub ended_ms: u64,
    pub measured: usize,
    pub failed: usize,
    pub interrupted: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The directory of one job below the state directory.
pub fn job_dir(state_dir: &Path, token: &str) -> PathBuf {
    state_dir.join(DIR).join(token)
}

/// Reads `cluster/jobs.jsonl` (a torn last line is skipped, as in the main journal).
pub fn load_jobs(state_dir: &Path) -> Vec<JobRecord> {
    let Ok(text) = std::fs::read_to_string(state_dir.join(DIR).join(JOBS)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Jobs submitted but not collected: token → (its `submitting` record, job id if known).
pub fn open_jobs(state_dir: &Path) -> BTreeMap<String, (JobRecord, Option<u64>)> {
    let mut open: BTreeMap<String, (JobRecord, Option<u64>)> = BTreeMap::new();
    for r in load_jobs(state_dir) {
        match r.event {
            JobEvent::Submitting => {
                open.insert(r.token.clone(), (r, None));
            }
            JobEvent::Submitted => {
                if let Some(e) = open.get_mut(&r.token) {
                    e.1 = r.job_id;
                }
            }
            JobEvent::Ended => {
                open.remove(&r.token);
            }
        }
    }
    open
}

struct JobsLog {
    file: std::fs::File,
}

impl JobsLog {
    fn open(state_dir: &Path) -> std::io::Result<JobsLog> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(JOBS))?;
        // A torn line from a kill -9 must not glue onto the next record.
        if file.metadata()?.len() > 0 {
            let text = std::fs::read(dir.join(JOBS))?;
            if text.last() != Some(&b'\n') {
                (&file).write_all(b"\n")?;
            }
        }
        Ok(JobsLog { file })
    }

    fn append(&mut self, r: &JobRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

/// The latest `squeue` answer, by job name (= token).
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    jobs: HashMap<String, JobInfo>,
}

/// The controller side: submits session jobs, follows them through one shared `squeue` poll,
/// collects their results.
pub struct Controller {
    settings: ClusterSettings,
    log: Mutex<JobsLog>,
    manifest: PathBuf,
    /// The state directory as an absolute path: the job starts in the manifest's directory,
    /// where a relative one (`apply campaign/m.toml` gives `campaign/.isobench`) means another.
    state: PathBuf,
    rerun: Vec<String>,
    snapshot: watch::Receiver<Snapshot>,
    /// Sessions whose job still runs from an earlier (killed) apply: start address → record.
    attach: Mutex<HashMap<String, (JobRecord, Option<u64>)>>,
    /// Same-node placement: commit index → node.
    pinned: HashMap<usize, String>,
    seq: AtomicU64,
    /// Process-runtime patched arms: the tree built once per (commit, arm) by this controller.
    trees: Mutex<HashMap<(usize, usize), Arc<TreeCell>>>,
}

/// One arm's patched tree, built at most once per apply.
type TreeCell = tokio::sync::OnceCell<Result<PatchedTree, Failure>>;

/// A process-runtime agent arm's patched tree, built by the controller into the state
/// directory (on the shared filesystem) and passed to the session's worker, which runs the
/// server from it: `apply`'s resolved source of the arm, as a local run would use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedTree {
    /// The patched copy (the server's working directory).
    pub root: PathBuf,
    /// The environment the copy needs (`PYTHONPATH` with the copy first).
    pub env: BTreeMap<String, String>,
    /// The source's identity in results: `<root>+<patch hash>`.
    pub digest: String,
}

/// Why a job left the queue.
#[derive(Debug, Clone)]
struct JobEnd {
    state: String,
    reason: String,
    node: String,
    /// This apply cancelled it.
    cancelled_by_us: bool,
}

/// Slurm's final state → a failure class (`None`: the job ended normally).
pub fn classify(
    state: &str,
    reason: &str,
    cancelled_by_us: bool,
) -> Option<(FailureClass, String)> {
    let why = |what: &str| {
        if reason.is_empty() || reason == "None" {
            format!("slurm: {what} ({state})")
        } else {
            format!("slurm: {what} ({state}, reason {reason})")
        }
    };
    match state {
        "COMPLETED" => None,
        "TIMEOUT" | "DEADLINE" => {
            Some((FailureClass::TimeLimit, why("the job hit its time limit")))
        }
        "PREEMPTED" => Some((FailureClass::Preempted, why("the job was preempted"))),
        "NODE_FAIL" | "BOOT_FAIL" => {
            Some((FailureClass::NodeFailure, why("the job lost its node")))
        }
        "VANISHED" => Some((
            FailureClass::NodeFailure,
            "slurm: the job vanished (not in squeue, no accounting record)".into(),
        )),
        "CANCELLED" if cancelled_by_us => Some((FailureClass::Interrupted, "interrupted".into())),
        "CANCELLED" => Some((
            FailureClass::Internal,
            why("the job was cancelled outside isobench"),
        )),
        "OUT_OF_MEMORY" => Some((
            FailureClass::Internal,
            why("the job ran out of host memory"),
        )),
        _ => Some((FailureClass::Internal, why("the job failed"))),
    }
}

/// The inventory an apply with the slurm backend records: no GPUs here (the keys' GPU model
/// comes from `resources.gpu_kind` or the typed GRES; see `manifest::resolve`).
pub fn no_local_gpus() -> state::Inventory {
    state::Inventory {
        gpus: Vec::new(),
        source: "slurm (GPUs are bound per job)".into(),
    }
}

/// Where a resumed apply stands with jobs of earlier runs.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Still queued or running: start address → (record, job id).
    pub running: HashMap<String, (JobRecord, Option<u64>)>,
    /// Collected now (ended while no controller watched).
    pub collected: usize,
}

/// At the start of `apply` with the slurm backend: jobs of an earlier, killed apply that ended
/// meanwhile are collected into the journal (so `plan` sees their results), running ones are
/// handed back to follow. Needs `squeue` to answer: guessing could submit a session twice.
pub async fn reconcile(state_dir: &Path, dag: &Dag, events: &Stream) -> Result<Reconciled, String> {
    let open = open_jobs(state_dir);
    let mut out = Reconciled::default();
    if open.is_empty() {
        return Ok(out);
    }
    let jobs = slurm::jobs()
        .await
        .map_err(|e| format!("cannot ask Slurm about the jobs of an earlier apply: {e}"))?;
    let by_name: HashMap<&str, &JobInfo> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut journal = Journal::open(state_dir).map_err(|e| e.to_string())?;
    let mut log = JobsLog::open(state_dir).map_err(|e| e.to_string())?;
    for (token, (record, id)) in open {
        let found = by_name.get(token.as_str()).copied();
        match found {
            Some(info) if info.alive() => {
                events.note(&format!(
                    "slurm: job {} of an earlier apply ({}) is {}: following it, not submitting again",
                    info.id,
                    record.session,
                    info.state.to_lowercase()
                ));
                out.running
                    .insert(record.session.clone(), (record, Some(info.id)));
            }
            _ => {
                let end = match found {
                    Some(info) => JobEnd {
                        state: info.state.clone(),
                        reason: info.reason.clone(),
                        node: info.nodes.clone(),
                        cancelled_by_us: false,
                    },
                    None => vanished(id, &job_dir(state_dir, &token)).await,
                };
                let id = found.map(|i| i.id).or(id);
                let mut append = |e: &Entry| journal.append(e).map_err(JournalError);
                collect(state_dir, &mut append, dag, &record, id, &end)
                    .map_err(|e| e.to_string())?;
                log.append(&ended(&record, id, &end))
                    .map_err(|e| e.to_string())?;
                events.note(&format!(
                    "slurm: collected job {} of an earlier apply ({}): {}",
                    id.map_or("?".into(), |i| i.to_string()),
                    record.session,
                    end.state.to_lowercase()
                ));
                out.collected += 1;
            }
        }
    }
    Ok(out)
}

/// A job `squeue` no longer lists: `sacct` if the cluster has accounting; else the worker's
/// `outcome.json` says it completed; else it is lost (or was never submitted: a `submitting`
/// record whose `sbatch` never ran leaves no directory, and nothing to fail).
async fn vanished(id: Option<u64>, dir: &Path) -> JobEnd {
    let node = read_outcome(dir).map(|o| o.node).unwrap_or_default();
    if let Some(id) = id
        && let Some((state, reason)) = slurm::sacct(id).await
        && !slurm::is_alive(&state)
    {
        return JobEnd {
            state,
            reason,
            node,
            cancelled_by_us: false,
        };
    }
    let state = if read_outcome(dir).is_some() {
        "COMPLETED"
    } else if id.is_none() && !dir.join(state::JOURNAL).exists() {
        // Killed between `submitting` and sbatch's answer, and Slurm has no such job.
        "NOT_SUBMITTED"
    } else {
        "VANISHED"
    };
    JobEnd {
        state: state.into(),
        reason: String::new(),
        node,
        cancelled_by_us: false,
    }
}

/// Written by the worker (unix ms) the moment Slurm's signal reaches it.
const SIGNALLED: &str = "signalled";
/// How long before the worker heard the signal a step failure may still be the signal's doing
/// (the server, signalled at the same instant, can die first).
const SIGNAL_SLACK_MS: u64 = 2000;

fn entry_ms(entry: &Entry) -> u64 {
    humantime::parse_rfc3339_weak(&entry.t)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn read_outcome(dir: &Path) -> Option<Outcome> {
    serde_json::from_slice(&std::fs::read(dir.join(OUTCOME)).ok()?).ok()
}

fn ended(record: &JobRecord, id: Option<u64>, end: &JobEnd) -> JobRecord {
    JobRecord {
        t: crate::util::now_rfc3339(),
        token: record.token.clone(),
        event: JobEvent::Ended,
        session: record.session.clone(),
        run: record.run.clone(),
        job_id: id,
        measures: Vec::new(),
        state: Some(end.state.clone()),
        reason: Some(end.reason.clone()),
        node: (!end.node.is_empty()).then(|| end.node.clone()),
    }
}

/// Copies a finished job's journal into the main journal (the `start` entry gains the job id,
/// node and GPUs), then journals a classified failure for each step it was to run and did not
/// finish. Returns the session's counts. Every entry goes through `append`: the run's event
/// stream while it runs, the bare journal when an earlier apply's job is collected before the
/// run's stream has one.
fn collect(
    state_dir: &Path,
    append: &mut dyn FnMut(&Entry) -> Result<(), JournalError>,
    dag: &Dag,
    record: &JobRecord,
    id: Option<u64>,
    end: &JobEnd,
) -> Result<SessionOutcome, JournalError> {
    let dir = job_dir(state_dir, &record.token);
    if end.state == "NOT_SUBMITTED" {
        return Ok(SessionOutcome::default()); // nothing ran; the session stays pending
    }
    let outcome = read_outcome(&dir);
    let mut started: HashMap<String, u32> = HashMap::new();
    let mut finished: HashMap<String, Event> = HashMap::new();
    let mut result = SessionOutcome::default();
    // Slurm signals every process of a job (time limit, scancel, preemption, a node going
    // down), the server too: a step can fail with `crashed` just before (or after) the worker
    // itself hears the signal. Such failures are the job's end, not the server's fault.
    let by_signal = classify(&end.state, &end.reason, end.cancelled_by_us);
    let signalled_ms: Option<u64> = std::fs::read_to_string(dir.join(SIGNALLED))
        .ok()
        .and_then(|t| t.trim().parse().ok());
    if let Ok(text) = std::fs::read_to_string(dir.join(state::JOURNAL)) {
        for line in text.lines() {
            let Ok(mut entry) = serde_json::from_str::<Entry>(line) else {
                continue; // torn by a killed job
            };
            if entry.event == Event::Failed
                && let (Some((class, message)), Some(signalled)) = (&by_signal, signalled_ms)
                && entry_ms(&entry) + SIGNAL_SLACK_MS >= signalled
            {
                if *class == FailureClass::Interrupted {
                    continue; // stays `started`: the next apply runs it again
                }
                if let Some(f) = &mut entry.failure {
                    f.message = format!("{message} (the step saw: {})", f.message);
                    f.class = *class;
                    f.cause = None;
                }
            }
            if entry.addr == record.session
                && entry.event == Event::Done
                && let Some(serde_json::Value::Object(info)) = &mut entry.info
            {
                info.insert(
                    "slurm".into(),
                    serde_json::json!({
                        "job_id": id,
                        "node": outcome.as_ref().map(|o| o.node.clone()).unwrap_or_else(|| end.node.clone()),
                        "gpus": outcome.as_ref().map(|o| o.gpus.clone()),
                    }),
                );
            }
            match entry.event {
                Event::Started => {
                    started.insert(entry.addr.clone(), entry.attempt);
                }
                e => {
                    finished.insert(entry.addr.clone(), e);
                }
            }
            append(&entry)?;
        }
    }
    let is_measure = |addr: &str| {
        dag.index
            .get(addr)
            .is_some_and(|n| dag.graph[*n].kind == StepKind::LoadMeasure)
    };
    for (addr, e) in &finished {
        if is_measure(addr) {
            match e {
                Event::Done => result.measured += 1,
                _ => result.failed += 1,
            }
        }
    }
    let class = match classify(&end.state, &end.reason, end.cancelled_by_us) {
        // Exit 0 but steps left unfinished: the worker itself gave up (its log says why).
        None if record.measures.iter().any(|m| !finished.contains_key(m))
            && outcome.as_ref().is_none_or(|o| !o.interrupted) =>
        {
            Some((
                FailureClass::Internal,
                "slurm: the job ended without finishing its steps".to_string(),
            ))
        }
        None => None,
        Some((FailureClass::Interrupted, _)) => {
            result.interrupted = true;
            None
        }
        other => other,
    };
    let Some((class, message)) = class else {
        return Ok(result);
    };
    let log = dir.join("slurm.out");
    let state = State::load(state_dir)?;
    let unfinished: Vec<String> = started
        .keys()
        .filter(|a| !finished.contains_key(*a))
        .cloned()
        .chain(
            record
                .measures
                .iter()
                .filter(|m| !finished.contains_key(*m) && !started.contains_key(*m))
                .cloned(),
        )
        .collect();
    // A job that never reached its worker (pending when preempted, a node lost at launch)
    // fails its measures all the same: each carries the class.
    for addr in unfinished {
        let Some(&n) = dag.index.get(&addr) else {
            continue;
        };
        let attempt = match started.get(&addr) {
            Some(a) => *a,
            None => state
                .next_attempt(&addr)
                .map_err(|e| JournalError(std::io::Error::other(e)))?,
        };
        let mut f = Failure::new(class, message.clone());
        if log.exists() {
            f.log_path = Some(
                log.strip_prefix(state_dir)
                    .unwrap_or(&log)
                    .display()
                    .to_string(),
            );
        }
        if dag.graph[n].kind == StepKind::LoadMeasure {
            result.failed += 1;
        } else {
            f.message = format!("not finished: {message}");
        }
        append(&super::record::failed(
            &dag.graph[n],
            attempt,
            &record.run,
            f,
        ))?;
    }
    Ok(result)
}

impl Controller {
    /// Checks that the partition exists and can ever hold each session (nothing is submitted
    /// otherwise), picks nodes for same-node placement, and starts the shared `squeue` poll.
    pub async fn start(
        campaign: &Campaign,
        settings: &ClusterSettings,
        running: HashMap<String, (JobRecord, Option<u64>)>,
        rerun: &[String],
    ) -> Result<Controller, String> {
        let problems = preflight(campaign, settings).await?;
        if !problems.is_empty() {
            return Err(format!(
                "the cluster cannot run this campaign (nothing submitted):\n  {}",
                problems
                    .iter()
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
        let mut pinned = HashMap::new();
        if settings.placement == Placement::SameNode {
            let nodes = slurm::nodes(settings.partition.as_deref()).await?;
            for (i, c) in campaign.commits.iter().enumerate() {
                let fit: Vec<&slurm::NodeInfo> = nodes
                    .iter()
                    .filter(|n| n.usable() && n.count(&settings.gres) >= c.server.gpus)
                    .collect();
                if fit.is_empty() {
                    return Err(format!(
                        "same-node placement: no usable node of the partition has {} GPU(s) for commit {}",
                        c.server.gpus, c.short
                    ));
                }
                // Commits take turns over the nodes (sorted by name): stable across resumes.
                pinned.insert(i, fit[i % fit.len()].name.clone());
            }
        }
        let log = JobsLog::open(&campaign.state_dir).map_err(|e| e.to_string())?;
        let (tx, rx) = watch::channel(Snapshot {
            at: Instant::now() - Duration::from_secs(3600),
            jobs: HashMap::new(),
        });
        let interval = settings.poll_interval;
        tokio::spawn(async move {
            // Ends once every receiver (the controller and its session tasks) is gone.
            while !tx.is_closed() {
                let asked = Instant::now();
                if let Ok(jobs) = slurm::jobs().await {
                    let jobs = jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
                    let _ = tx.send(Snapshot { at: asked, jobs });
                }
                tokio::time::sleep(interval).await;
            }
        });
        Ok(Controller {
            settings: settings.clone(),
            log: Mutex::new(log),
            manifest: std::path::absolute(&campaign.manifest_path)
                .map_err(|e| format!("{}: {e}", campaign.manifest_path.display()))?,
            state: std::path::absolute(&campaign.state_dir)
                .map_err(|e| format!("{}: {e}", campaign.state_dir.display()))?,
            rerun: rerun.to_vec(),
            snapshot: rx,
            attach: Mutex::new(running),
            pinned,
            seq: AtomicU64::new(0),
            trees: Mutex::new(HashMap::new()),
        })
    }

    fn log(&self, r: &JobRecord) -> Result<(), JournalError> {
        self.log.lock().expect("jobs log").append(r)?;
        Ok(())
    }

    /// The patched tree of a process-runtime agent arm, built on this controller once per
    /// (commit, arm) and apply (journaling the `patch` node as a local apply does); `None` for
    /// other arms. A Docker arm's derived image is built on each job's node instead (`worker`).
    async fn patched_tree(
        &self,
        ctx: &Ctx,
        commit: usize,
        arm: usize,
    ) -> Result<Option<PatchedTree>, Failure> {
        let c = &ctx.campaign.commits[commit];
        let crate::manifest::model::ArmSource::Patched(spec) = &c.arms[arm].source else {
            return Ok(None);
        };
        if c.server.runtime != crate::manifest::types::RuntimeKind::Process {
            return Ok(None);
        }
        let cell = self
            .trees
            .lock()
            .expect("trees")
            .entry((commit, arm))
            .or_default()
            .clone();
        let built = cell
            .get_or_init(|| async {
                let internal = |m: String| Failure::new(FailureClass::Internal, m);
                let runtime = ctx
                    .runtime(crate::manifest::types::RuntimeKind::Process)
                    .ok_or_else(|| internal("no process runtime to build the patch".into()))?;
                let crate::runtime::ServerSource::Path { root } =
                    super::apply::source_of_root(spec.base.root())
                else {
                    return Err(internal(
                        "a process-runtime arm's base is not a path".into(),
                    ));
                };
                let base = runtime
                    .ensure_image(&root.display().to_string(), |_| {})
                    .await?;
                let (resolved, _) =
                    super::apply::build_patch(ctx, (commit, arm), spec, &base).await?;
                match resolved.source {
                    crate::runtime::ServerSource::Path { root } => Ok(PatchedTree {
                        root,
                        env: resolved.env,
                        digest: resolved.digest,
                    }),
                    other => Err(internal(format!(
                        "a patched tree was expected, got {other:?}"
                    ))),
                }
            })
            .await;
        built.clone().map(Some)
    }

    fn script(
        &self,
        ctx: &Ctx,
        session: &str,
        token: &str,
        patched: Option<&PatchedTree>,
    ) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut args = vec![
            q(&ctx.exe),
            "worker".into(),
            q(&self.manifest.display().to_string()),
            "--state".into(),
            q(&self.state.display().to_string()),
            "--session".into(),
            q(session),
            "--token".into(),
            q(token),
            "--run".into(),
            q(&ctx.run_id),
        ];
        for g in &self.rerun {
            args.push("--rerun".into());
            args.push(q(g));
        }
        if let Some(tree) = patched {
            args.push("--patched-root".into());
            args.push(q(&tree.root.display().to_string()));
            for (k, v) in &tree.env {
                args.push("--patched-env".into());
                args.push(q(&format!("{k}={v}")));
            }
            args.push("--patched-digest".into());
            args.push(q(&tree.digest));
        }
        // `exec`: the worker is the batch step's process, so Slurm's SIGTERM (time limit,
        // scancel) reaches it directly and it stops its server before the SIGKILL.
        format!("#!/bin/sh\nexec {}\n", args.join(" "))
    }
}

/// One session as a Slurm job: submit (or re-attach), follow, collect; resubmits a session
/// lost to preemption or a node failure up to `retries` times. Journal errors abort.
pub async fn run_session(
    ctx: Arc<Ctx>,
    ctl: Arc<Controller>,
    s: usize,
) -> Result<SessionOutcome, JournalError> {
    let sess = &ctx.dag.sessions[s];
    let commit = &ctx.campaign.commits[sess.commit];
    let label = format!(
        "{} {} #{}",
        commit.short, commit.arms[sess.arm].name, sess.trial
    );
    let Some(start) = sess
        .nodes
        .iter()
        .copied()
        .find(|n| ctx.dag.graph[*n].kind == StepKind::ServerStart)
    else {
        return Ok(SessionOutcome::default());
    };
    let session_addr = ctx.dag.graph[start].address.clone();
    let mut measures: Vec<String> = sess
        .measures
        .iter()
        .filter(|m| ctx.plan.action(**m).executes())
        .map(|m| ctx.dag.graph[*m].address.clone())
        .collect();
    let mut total = SessionOutcome::default();
    let mut retries = ctl.settings.retries;
    loop {
        let attached = ctl.attach.lock().expect("attach").remove(&session_addr);
        let (record, id) = match attached {
            Some(a) => a,
            None => {
                let job = Submission {
                    s,
                    session: &session_addr,
                    measures: &measures,
                    label: &label,
                };
                match submit(&ctx, &ctl, &job, &mut total).await? {
                    Some(submitted) => submitted,
                    None => return Ok(total),
                }
            }
        };
        // Only a squeue asked after sbatch answered proves a job gone: an earlier one may
        // predate it.
        let submitted_at = Instant::now();
        let activity = ctx.begin(
            &label,
            &format!(
                "slurm job {} submitted",
                id.map_or("?".into(), |i| i.to_string())
            ),
        );
        let (id, end) = follow(&ctx, &ctl, &record.token, id, submitted_at, &activity).await;
        let outcome = collect(
            ctx.state_dir(),
            &mut |e: &Entry| ctx.transition(e),
            &ctx.dag,
            &record,
            id,
            &end,
        )?;
        // What a resubmission still has to run: the measures not recorded as done.
        let state = State::load(ctx.state_dir())?;
        measures.retain(|m| {
            state
                .get(m)
                .is_none_or(|e| e.event != Event::Done || e.run != record.run)
        });
        ctl.log(&ended(&record, id, &end))?;
        total.measured += outcome.measured;
        total.failed += outcome.failed;
        total.interrupted |= outcome.interrupted;
        let class = classify(&end.state, &end.reason, end.cancelled_by_us);
        let summary = job_summary(id, &end, &class, &outcome);
        let retry = matches!(
            class,
            Some((FailureClass::Preempted | FailureClass::NodeFailure, _))
        ) && retries > 0
            && !ctx.cancelled();
        if retry {
            retries -= 1;
            activity.end(&format!("{summary}; resubmitting"));
            // The failed measures were journaled; the new job's worker plans them again.
            total.failed -= outcome.failed.min(total.failed);
            continue;
        }
        activity.end(&summary);
        return Ok(total);
    }
}

/// The session a job is submitted for: its index, its start address, the measures it still
/// has to run (fewer on a resubmission) and its label in the live view.
struct Submission<'a> {
    s: usize,
    session: &'a str,
    measures: &'a [String],
    label: &'a str,
}

/// Submits one job for the session: the patched tree first where the arm needs one, then
/// `submitting` → `sbatch` → `submitted` in `jobs.jsonl`. `None` when no job was submitted
/// (cancelled, or the tree or `sbatch` failed: the session's steps are then journaled failed
/// and counted in `total`), and the session ends there.
async fn submit(
    ctx: &Ctx,
    ctl: &Controller,
    job: &Submission<'_>,
    total: &mut SessionOutcome,
) -> Result<Option<(JobRecord, Option<u64>)>, JournalError> {
    let sess = &ctx.dag.sessions[job.s];
    if ctx.cancelled() {
        total.interrupted = true;
        return Ok(None);
    }
    // A process-runtime agent arm: its patched tree first (once per arm), on this
    // host and into the shared state directory; the job runs its server from it.
    let patched = match ctl.patched_tree(ctx, sess.commit, sess.arm).await {
        Ok(p) => p,
        Err(f) => {
            total.failed += fail_steps(ctx, job.s, &f, true)?;
            ctx.note(&format!("{}: not submitted: {f}", job.label));
            return Ok(None);
        }
    };
    if ctx.cancelled() {
        total.interrupted = true;
        return Ok(None);
    }
    let token = format!(
        "isobench-{}-{}-{}",
        ctx.run_id,
        job.s,
        ctl.seq.fetch_add(1, Ordering::Relaxed)
    );
    let record = JobRecord {
        t: crate::util::now_rfc3339(),
        token: token.clone(),
        event: JobEvent::Submitting,
        session: job.session.to_string(),
        run: ctx.run_id.clone(),
        job_id: None,
        measures: job.measures.to_vec(),
        state: None,
        reason: None,
        node: None,
    };
    // Journaled before sbatch: a controller killed during the call finds the job
    // by this token (its name) on the next apply.
    ctl.log(&record)?;
    let dir = job_dir(ctx.state_dir(), &token);
    std::fs::create_dir_all(&dir)?;
    let spec = job_spec(ctx, ctl, job, &token, patched.as_ref());
    match slurm::submit(&spec).await {
        Ok(id) => {
            ctl.log(&JobRecord {
                t: crate::util::now_rfc3339(),
                event: JobEvent::Submitted,
                job_id: Some(id),
                measures: Vec::new(),
                ..record.clone()
            })?;
            Ok(Some((record, Some(id))))
        }
        Err(e) => {
            let f = Failure::new(FailureClass::Internal, format!("sbatch: {e}"));
            let end = JobEnd {
                state: "NOT_SUBMITTED".into(),
                reason: e.clone(),
                node: String::new(),
                cancelled_by_us: false,
            };
            ctl.log(&ended(&record, None, &end))?;
            total.failed += fail_steps(ctx, job.s, &f, false)?;
            ctx.note(&format!("{}: not submitted: {e}", job.label));
            Ok(None)
        }
    }
}

/// The `sbatch` request for a session's job: the `[cluster]` settings, the GPUs the commit's
/// server needs, the node a same-node placement pinned, and the `isobench worker` script.
fn job_spec(
    ctx: &Ctx,
    ctl: &Controller,
    job: &Submission<'_>,
    token: &str,
    patched: Option<&PatchedTree>,
) -> slurm::JobSpec {
    let sess = &ctx.dag.sessions[job.s];
    let commit = &ctx.campaign.commits[sess.commit];
    slurm::JobSpec {
        name: token.to_string(),
        comment: job.session.to_string(),
        partition: ctl.settings.partition.clone(),
        account: ctl.settings.account.clone(),
        qos: ctl.settings.qos.clone(),
        constraint: ctl.settings.constraint.clone(),
        time_limit: ctl.settings.time_limit_for(commit),
        gres: ctl.settings.gres_for(commit.server.gpus),
        nodelist: ctl.pinned.get(&sess.commit).cloned(),
        extra: ctl.settings.sbatch_args.clone(),
        output: job_dir(&ctl.state, token).join("slurm.out"),
        chdir: std::path::absolute(&ctx.campaign.manifest_dir)
            .unwrap_or_else(|_| ctx.campaign.manifest_dir.clone()),
        script: ctl.script(ctx, job.session, token, patched),
    }
}

/// A session whose job was never submitted: journals `f` for each of its steps the plan was to
/// run (with `only_open`, those not already closed); returns how many were measures.
fn fail_steps(ctx: &Ctx, s: usize, f: &Failure, only_open: bool) -> Result<usize, JournalError> {
    let sess = &ctx.dag.sessions[s];
    let mut failed_measures = 0;
    for &n in sess.nodes.iter().chain(sess.measures.iter()) {
        if ctx.plan.action(n).executes() && !(only_open && ctx.is_closed(n)) {
            ctx.failed(n, f.clone())?;
            if ctx.dag.graph[n].kind == StepKind::LoadMeasure {
                failed_measures += 1;
            }
        }
    }
    Ok(failed_measures)
}

/// The live view's last line for a job: what it measured, or why Slurm ended it.
fn job_summary(
    id: Option<u64>,
    end: &JobEnd,
    class: &Option<(FailureClass, String)>,
    outcome: &SessionOutcome,
) -> String {
    let on = if end.node.is_empty() {
        String::new()
    } else {
        format!(" on {}", end.node)
    };
    match class {
        None => format!(
            "slurm job {}{on}: {} measured, {} failed",
            id.map_or("?".into(), |i| i.to_string()),
            outcome.measured,
            outcome.failed
        ),
        Some((c, m)) => format!(
            "slurm job {}{on}: {c}: {m}",
            id.map_or("?".into(), |i| i.to_string())
        ),
    }
}

/// Follows one job until it leaves the queue; on cancellation, `scancel`s it and waits for it
/// to go (the worker stops its server on the SIGTERM).
async fn follow(
    ctx: &Ctx,
    ctl: &Controller,
    token: &str,
    mut id: Option<u64>,
    submitted_at: Instant,
    activity: &Activity<'_>,
) -> (Option<u64>, JobEnd) {
    let mut rx = ctl.snapshot.clone();
    let mut cancel_sent = false;
    let mut announced = String::new();
    loop {
        if ctx.cancelled() && !cancel_sent {
            if let Some(i) = id {
                if let Err(e) = slurm::cancel(&[i]).await {
                    ctx.note(&format!("warning: scancel {i}: {e}"));
                }
                cancel_sent = true;
            } else if rx.borrow().at > submitted_at {
                // Not even known to Slurm: nothing to cancel.
                return (
                    None,
                    JobEnd {
                        state: "CANCELLED".into(),
                        reason: String::new(),
                        node: String::new(),
                        cancelled_by_us: true,
                    },
                );
            }
        }
        let (fresh, info) = {
            let snap = rx.borrow_and_update();
            (snap.at > submitted_at, snap.jobs.get(token).cloned())
        };
        match info {
            Some(info) if info.alive() => {
                id = Some(info.id);
                let status = if info.state == "PENDING" {
                    format!("slurm job {}: pending ({})", info.id, info.reason)
                } else {
                    let elapsed = if info.start_time > 0 {
                        let now = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0);
                        human_duration(Duration::from_secs((now - info.start_time).max(0) as u64))
                    } else {
                        String::new()
                    };
                    format!(
                        "slurm job {}: {} on {} {elapsed}",
                        info.id,
                        info.state.to_lowercase(),
                        info.nodes
                    )
                };
                let key = format!("{} {}", info.state, info.nodes);
                if key != announced && info.state == "RUNNING" {
                    ctx.note(&format!(
                        "{}: slurm job {} running on {}",
                        activity_label(ctx, token),
                        info.id,
                        info.nodes
                    ));
                }
                announced = key;
                activity.set(status);
            }
            Some(info) => {
                return (
                    Some(info.id),
                    JobEnd {
                        state: info.state.clone(),
                        reason: info.reason.clone(),
                        node: info.nodes.clone(),
                        cancelled_by_us: cancel_sent,
                    },
                );
            }
            None if fresh => {
                let mut end = vanished(id, &job_dir(ctx.state_dir(), token)).await;
                if end.state == "VANISHED"
                    && let Some(i) = id
                {
                    // Never leave a job behind that this controller no longer follows.
                    let _ = slurm::cancel(&[i]).await;
                }
                end.cancelled_by_us = cancel_sent;
                if cancel_sent && end.state == "VANISHED" {
                    end.state = "CANCELLED".into();
                }
                return (id, end);
            }
            None => {}
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { tokio::time::sleep(ctl.settings.poll_interval).await },
            _ = ctx.cancelled_wait(), if !cancel_sent => {}
        }
    }
}

fn activity_label(ctx: &Ctx, token: &str) -> String {
    // token = isobench-<run>-<session>-<seq>
    let s = token
        .rsplit('-')
        .nth(1)
        .and_then(|s| s.parse::<usize>().ok());
    match s.and_then(|s| ctx.dag.sessions.get(s)) {
        Some(sess) => {
            let c = &ctx.campaign.commits[sess.commit];
            format!("{} {} #{}", c.short, c.arms[sess.arm].name, sess.trial)
        }
        None => token.to_string(),
    }
}

/// A `plan --check-env` / `apply` finding: a message and the manifest path it is about.
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: String,
    pub message: String,
    pub label: String,
}

/// Can the partition ever hold each session's GPU request? (Also: does Slurm answer?)
pub async fn preflight(
    campaign: &Campaign,
    settings: &ClusterSettings,
) -> Result<Vec<Problem>, String> {
    let nodes = slurm::nodes(settings.partition.as_deref()).await?;
    let mut problems = Vec::new();
    if nodes.is_empty() {
        problems.push(Problem {
            path: "cluster.partition".into(),
            message: match &settings.partition {
                Some(p) => format!("slurm has no partition `{p}` (or it has no nodes)"),
                None => "slurm has no default partition; set `cluster.partition`".into(),
            },
            label: "unknown partition".into(),
        });
        return Ok(problems);
    }
    let most = nodes
        .iter()
        .map(|n| n.count(&settings.gres))
        .max()
        .unwrap_or(0);
    let partition = settings
        .partition
        .clone()
        .unwrap_or_else(|| nodes[0].partition.clone());
    let mut said = HashSet::new();
    for (i, c) in campaign.commits.iter().enumerate() {
        if c.server.gpus > most && said.insert(c.server.gpus) {
            problems.push(Problem {
                path: format!("commits[{i}].server.gpus"),
                message: format!(
                    "commit {} needs {} GPU(s) per session but no node of partition `{partition}` has more than {most} `{}`",
                    c.short, c.server.gpus, settings.gres
                ),
                label: "more than any node has".into(),
            });
        }
    }
    Ok(problems)
}

/// The located form of [`Problem`]s (for `plan --check-env`): the manifest field a problem
/// is about, or the closest enclosing one that is written (a commit's `server.gpus` may be
/// inherited from the campaign's).
pub fn locate(campaign: &Campaign, problems: &[Problem]) -> Vec<crate::manifest::diag::Diagnostic> {
    let Ok(text) = std::fs::read_to_string(&campaign.manifest_path) else {
        return Vec::new();
    };
    let (table, _) = toml::de::DeTable::parse_recoverable(&text);
    let spans = crate::manifest::spans::SpanIndex::build(&table);
    let source = crate::manifest::diag::Source::new(
        campaign.manifest_path.display().to_string(),
        text.clone(),
    );
    problems
        .iter()
        .map(|p| {
            let mut path = p.path.clone();
            if !spans.contains(&path)
                && let Some(rest) = path.strip_prefix("commits[")
                && let Some((_, field)) = rest.split_once("].")
            {
                // Inherited from the campaign level.
                if spans.contains(field) {
                    path = field.to_string();
                }
            }
            if !spans.contains(&path) && path.starts_with("cluster.") {
                path = "cluster".into();
            }
            crate::manifest::diag::Diagnostic {
                source: source.clone(),
                message: p.message.clone(),
                span: spans.value(&path),
                label: p.label.clone(),
                help: Some(
                    "lower `server.gpus`, pick another `cluster.partition`, or set `cluster.gres` to the GRES the nodes declare"
                        .into(),
                ),
            }
        })
        .collect()
}

/// `plan --check-env` with the slurm backend: the client answers, the partition exists and
/// can hold every session. Prints one line per check; located diagnostics for what cannot run.
pub async fn check_env(campaign: &Campaign, settings: &ClusterSettings) -> bool {
    let mut ok = true;
    match slurm::version().await {
        Ok(v) => eprintln!("ok   sbatch answers ({v})"),
        Err(e) => {
            eprintln!("FAIL sbatch: {e}");
            return false;
        }
    }
    match slurm::jobs().await {
        Ok(j) => eprintln!(
            "ok   squeue answers ({} job(s) of this user listed)",
            j.len()
        ),
        Err(e) => {
            eprintln!("FAIL squeue: {e}");
            ok = false;
        }
    }
    match preflight(campaign, settings).await {
        Ok(problems) if problems.is_empty() => eprintln!(
            "ok   partition {} can hold every session's GPU request",
            settings.partition.as_deref().unwrap_or("(default)")
        ),
        Ok(problems) => {
            ok = false;
            for d in locate(campaign, &problems) {
                eprintln!("FAIL {}", d.short());
                eprintln!("{:?}", miette::Report::new(d));
            }
        }
        Err(e) => {
            eprintln!("FAIL sinfo: {e}");
            ok = false;
        }
    }
    ok
}

/// `isobench worker`: runs one session inside its Slurm job. See the module docs.
pub struct WorkerArgs {
    pub manifest: PathBuf,
    pub state: PathBuf,
    pub session: String,
    pub token: String,
    pub run: String,
    pub rerun: Vec<String>,
    /// A process-runtime agent arm's patched tree, as the controller built it.
    pub patched: Option<PatchedTree>,
}

/// A worker runs no `compare` node (the controller does, once the jobs are collected).
struct NoCompare;

impl super::Comparer for NoCompare {
    fn compare(&self, _: &Campaign, _: &Dag, _: &State, _: usize) -> Result<Vec<u8>, String> {
        Err("a Slurm worker runs no compare step".into())
    }
}

/// The GPUs Slurm bound to this job: `CUDA_VISIBLE_DEVICES` (set by Slurm's gres/gpu plugin),
/// else `SLURM_JOB_GPUS`; empty without GPUs.
pub fn bound_gpus(env: impl Fn(&str) -> Option<String>) -> Result<Vec<u32>, String> {
    let list = env("CUDA_VISIBLE_DEVICES")
        .filter(|v| !v.trim().is_empty())
        .or_else(|| env("SLURM_JOB_GPUS"))
        .unwrap_or_default();
    super::gpu::parse_gpu_list(&list)
}

/// Runs the worker; returns the process exit code (0, 1 for a setup error, 130 interrupted).
pub async fn worker(args: WorkerArgs) -> Result<u8, String> {
    let began_ms = now_ms();
    let dir = job_dir(&args.state, &args.token);
    let planned = plan_session(&args, &dir)?;
    let s = planned.session;
    let node_name =
        std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| crate::state::lock::hostname());
    let job_id = std::env::var("SLURM_JOB_ID")
        .ok()
        .and_then(|v| v.parse().ok());
    let gpus = bound_gpus(|k| std::env::var(k).ok())?;
    let mut outcome = Outcome {
        job_id,
        node: node_name.clone(),
        gpus: gpus.clone(),
        began_ms,
        ..Outcome::default()
    };
    let sess = &planned.dag.sessions[s];
    if !sess
        .measures
        .iter()
        .any(|m| planned.plan.action(*m).executes())
    {
        eprintln!(
            "worker: every measurement of {} is already recorded; nothing to run",
            args.session
        );
        outcome.ended_ms = now_ms();
        write_outcome(&dir, &outcome);
        return Ok(0);
    }
    let commit = &planned.campaign.commits[sess.commit];
    if gpus.len() != commit.server.gpus as usize {
        return Err(format!(
            "the job holds GPUs [{}] but the session needs {}",
            crate::runtime::cuda_visible_devices(&gpus),
            commit.server.gpus
        ));
    }
    eprintln!(
        "worker: {} on {node_name}, job {}, GPUs [{}]",
        args.session,
        job_id.map_or("?".into(), |i: u64| i.to_string()),
        crate::runtime::cuda_visible_devices(&gpus)
    );
    let cancel_rx = watch_signals(dir.join(SIGNALLED));
    // Held (with its GPU probe) until the session has run, as the local scheduler holds its own.
    let _pool = wait_for_idle_gpus(&planned.campaign, &gpus).await?;
    let kind = commit.server.runtime;
    let arm = &commit.arms[sess.arm];
    let source = super::apply::source_of_root(&arm.source);
    let patch_spec = match &arm.source {
        crate::manifest::model::ArmSource::Patched(spec) => Some(spec.clone()),
        _ => None,
    };
    let tree = controller_tree(&args, arm, patch_spec.as_deref(), kind)?;
    let runtimes = node_runtimes(kind, &dir).await?;
    let (ctx, datasets) = worker_ctx(&args, planned, cancel_rx, runtimes, &dir, &gpus, &node_name)?;
    // The image (or installation) on this node; journals the pull node as a local apply does.
    let reference = match &source {
        crate::runtime::ServerSource::Image { reference } => reference.clone(),
        crate::runtime::ServerSource::Path { root } => root.display().to_string(),
    };
    let Some(info) = image_on_node(&ctx, s, kind, &reference, &node_name).await? else {
        outcome.ended_ms = now_ms();
        write_outcome(&dir, &outcome);
        return Ok(1);
    };
    let resolved = match (patch_spec, tree) {
        (_, Some(tree)) => ResolvedSource {
            source: crate::runtime::ServerSource::Path { root: tree.root },
            env: tree.env,
            digest: tree.digest,
        },
        (Some(spec), None) => {
            match patch_on_node(&ctx, s, &spec, &reference, &info, &dir, &node_name).await {
                Ok(r) => r,
                Err(f) => {
                    // Interrupted: the controller classifies the steps from the job's end.
                    let interrupted = f.class == FailureClass::Interrupted;
                    if !interrupted {
                        fail_session_steps(&ctx, s, &f)?;
                    }
                    outcome.ended_ms = now_ms();
                    outcome.interrupted = interrupted;
                    write_outcome(&dir, &outcome);
                    return Ok(if interrupted { 130 } else { 1 });
                }
            }
        }
        (None, None) => ResolvedSource {
            source,
            env: BTreeMap::new(),
            digest: info.digest().to_string(),
        },
    };
    let datasets = match datasets {
        Ok(d) => Arc::new(d),
        Err(f) => return Err(f.to_string()),
    };
    let r = session::run(ctx.clone(), s, gpus, resolved, datasets)
        .await
        .map_err(|e| e.to_string())?;
    outcome.ended_ms = now_ms();
    outcome.measured = r.measured;
    outcome.failed = r.failed;
    outcome.interrupted = r.interrupted;
    write_outcome(&dir, &outcome);
    Ok(if r.interrupted { 130 } else { 0 })
}

/// What a worker starts from: the controller's inputs (manifest, state, `--rerun`), hence the
/// controller's DAG and plan, and the index of the session this job was submitted for.
struct PlannedSession {
    campaign: Campaign,
    dag: Dag,
    state: State,
    plan: crate::plan::Plan,
    session: usize,
}

/// Loads the manifest and the state and plans as the controller did, so that this job runs
/// exactly the steps the controller expects of it; creates the job's directory `dir`.
fn plan_session(args: &WorkerArgs, dir: &Path) -> Result<PlannedSession, String> {
    let mut campaign = crate::manifest::load_file(&args.manifest)
        .map_err(|e| format!("{:?}", miette::Report::new(e)))?;
    campaign.state_dir = args.state.clone();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // The same DAG as the controller's: its inventory has no GPUs (`no_local_gpus`).
    let dag = crate::plan::desired_dag(&campaign, None);
    let state = State::load(&args.state).map_err(|e| e.to_string())?;
    let rerun = args
        .rerun
        .iter()
        .map(|g| crate::plan::address_glob(g))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = crate::plan::plan(
        &campaign,
        &dag,
        &state,
        &crate::plan::PlanOptions {
            rerun,
            ..Default::default()
        },
    );
    let session = dag
        .sessions
        .iter()
        .position(|sess| {
            sess.nodes
                .iter()
                .any(|n| dag.graph[*n].address == args.session)
        })
        .ok_or_else(|| format!("no session {} in this manifest", args.session))?;
    Ok(PlannedSession {
        campaign,
        dag,
        state,
        plan,
        session,
    })
}

/// `outcome.json`, written atomically: the controller reads it when the job has ended, whatever
/// state the job left it in.
fn write_outcome(dir: &Path, o: &Outcome) {
    let _ = crate::util::fsx::write_atomic(
        &dir.join(OUTCOME),
        &serde_json::to_vec_pretty(o).expect("json"),
    );
}

/// SIGTERM or SIGINT (time limit, `scancel`, preemption) cancels the session, so the server is
/// stopped and the steps are journaled as interrupted; the file `signalled` records when, for
/// the controller's classification.
fn watch_signals(signalled: PathBuf) -> watch::Receiver<bool> {
    let (cancel_tx, cancel_rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        let _ = std::fs::write(&signalled, now_ms().to_string());
        eprintln!("worker: signalled (time limit, scancel or preemption): stopping the server");
        let _ = cancel_tx.send(true);
    });
    cancel_rx
}

/// The GPU idle check happens here, on the node (the controller sees no GPUs): waits up to
/// `resources.gpu_idle_wait` for the GPUs Slurm bound to read idle.
async fn wait_for_idle_gpus(campaign: &Campaign, gpus: &[u32]) -> Result<super::gpu::Pool, String> {
    let (inventory, probe) = super::gpu::detect(
        &crate::manifest::model::GpuInventory::Declared(gpus.to_vec()),
        None,
        campaign.resources.gpu_kind.as_deref(),
    )?;
    let mut pool = super::gpu::Pool::new(&inventory, probe, campaign.resources.gpu_idle_memory_mib);
    let waited = Instant::now();
    loop {
        match pool.acquire(gpus.len()) {
            Ok(_) => break,
            Err(super::gpu::Shortage::NotIdle(busy))
                if waited.elapsed() < campaign.resources.gpu_idle_wait =>
            {
                eprintln!("worker: waiting for GPUs to read idle: {busy:?}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(format!(
                    "GPUs [{}] not usable: {e:?}",
                    crate::runtime::cuda_visible_devices(gpus)
                ));
            }
        }
    }
    Ok(pool)
}

/// Process runtime: the controller built the patched tree and names it; it must be the build
/// of the very patch this worker's manifest names (its hash is in the keys). `None` for any
/// other arm.
fn controller_tree(
    args: &WorkerArgs,
    arm: &crate::manifest::model::CommitArm,
    patch_spec: Option<&crate::manifest::model::PatchSpec>,
    kind: crate::manifest::types::RuntimeKind,
) -> Result<Option<PatchedTree>, String> {
    match (patch_spec, kind) {
        (Some(spec), crate::manifest::types::RuntimeKind::Process) => {
            let Some(tree) = args.patched.clone() else {
                return Err(format!(
                    "{} is a patched arm but the job names no patched tree (submitted by an older isobench?)",
                    arm.name
                ));
            };
            if !tree.digest.ends_with(&format!("+{}", spec.patch_hash)) {
                return Err(format!(
                    "patch file {} changed since the controller built its tree ({}); run apply again",
                    spec.patch_path.display(),
                    tree.digest
                ));
            }
            Ok(Some(tree))
        }
        _ => Ok(None),
    }
}

/// The runtime the session's arm needs on this node, as (docker, process) for [`Ctx`].
async fn node_runtimes(
    kind: crate::manifest::types::RuntimeKind,
    dir: &Path,
) -> Result<
    (
        Option<crate::runtime::Runtime>,
        Option<crate::runtime::Runtime>,
    ),
    String,
> {
    Ok(match kind {
        crate::manifest::types::RuntimeKind::Docker => (
            Some(
                crate::runtime::Runtime::docker()
                    .await
                    .map_err(|f| f.to_string())?,
            ),
            None,
        ),
        crate::manifest::types::RuntimeKind::Process => (
            None,
            // Per job: a leftover cleanup never touches another job's server on this node.
            Some(crate::runtime::Runtime::process(dir.join("processes"))),
        ),
    })
}

/// The executor's context for one job: the job's own journal (the controller copies it into
/// the main one), the controller's run labels, and GPU ids named by node. Also the session's
/// datasets, read here; their failure is reported only once the image is in place.
fn worker_ctx(
    args: &WorkerArgs,
    planned: PlannedSession,
    cancel: watch::Receiver<bool>,
    (docker, process): (
        Option<crate::runtime::Runtime>,
        Option<crate::runtime::Runtime>,
    ),
    dir: &Path,
    gpus: &[u32],
    node_name: &str,
) -> Result<(Arc<Ctx>, Result<session::Datasets, Failure>), String> {
    let PlannedSession {
        campaign,
        dag,
        state,
        plan,
        session: s,
    } = planned;
    let journal = Journal::open(dir).map_err(|e| e.to_string())?;
    let attempts = dag
        .graph
        .node_indices()
        .map(|n| Ok((n, state.next_attempt(&dag.graph[n].address)?)))
        .collect::<Result<HashMap<_, _>, String>>()?;
    // The controller's run: servers carry its labels, like those of a local apply.
    let owner = crate::runtime::Owner {
        state: crate::state::owned::state_id(&args.state)
            .map_err(|e| format!("cannot read the state id: {e}"))?,
        run: args.run.clone(),
        host: crate::state::lock::hostname(),
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "isobench".into());
    let gpu_env_only = campaign.resources.gpu_env_only;
    let datasets = super::apply::dataset_for(&campaign, dag.sessions[s].commit);
    let ctx = Arc::new(Ctx {
        campaign,
        dag,
        plan,
        run_id: args.run.clone(),
        attempts,
        events: Stream::new(super::live::Live::new(true), &args.run).with_journal(journal),
        cancel,
        docker,
        process,
        // One session per job: nothing on this node is ours to keep apart; Slurm decides
        // which jobs share a node (`placement` in docs/cluster.md).
        isolate: crate::manifest::model::Isolate::None,
        measure_slot: tokio::sync::Semaphore::new(1),
        rendezvous: super::pairing::Rendezvous::default(),
        pair_group: HashMap::new(),
        // Results name the node with the GPU: `n1:gpu0` is not `n2:gpu0`.
        gpu_ids: gpus
            .iter()
            .map(|g| (*g, format!("{node_name}:gpu{g}")))
            .collect(),
        exe,
        gpu_env_only,
        owner,
        comparer: Arc::new(NoCompare),
        servers: Mutex::new(HashMap::new()),
        closed: Mutex::new(HashSet::new()),
    });
    Ok((ctx, datasets))
}

/// Makes the session's image (or installation) available on this node, journaling the pull
/// node where the plan runs it. `None` when it cannot be had: then every step of the session
/// that was to run is journaled failed with the pull's failure.
async fn image_on_node(
    ctx: &Ctx,
    s: usize,
    kind: crate::manifest::types::RuntimeKind,
    reference: &str,
    node_name: &str,
) -> Result<Option<crate::runtime::ImageInfo>, String> {
    let runtime = ctx.runtime(kind).expect("prepared above");
    let pull_node = ctx.dag.pulls.get(ctx.dag.sessions[s].image).copied();
    let journaled_pull = pull_node.filter(|n| ctx.plan.action(*n).executes());
    if let Some(n) = journaled_pull {
        ctx.started(n).map_err(|e| e.to_string())?;
    }
    match runtime.ensure_image(reference, |_| {}).await {
        Ok(info) => {
            if let Some(n) = journaled_pull {
                ctx.done(n, &[], Some(serde_json::json!({"id": info.id, "repo_digest": info.repo_digest, "node": node_name})))
                    .map_err(|e| e.to_string())?;
            }
            Ok(Some(info))
        }
        Err(f) => {
            if let Some(n) = journaled_pull {
                ctx.failed(n, f.clone()).map_err(|e| e.to_string())?;
            }
            fail_session_steps(ctx, s, &f)?;
            Ok(None)
        }
    }
}

/// Journals `f` for every step of session `s` the plan was to run, so the controller finds
/// each accounted for.
fn fail_session_steps(ctx: &Ctx, s: usize, f: &Failure) -> Result<(), String> {
    let sess = &ctx.dag.sessions[s];
    for &n in sess.nodes.iter().chain(sess.measures.iter()) {
        if ctx.plan.action(n).executes() {
            ctx.failed(n, f.clone()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Docker: the agent arm's derived image, built (or found) on this node's engine, over the
/// base image the worker just made available here. The build is the local one
/// (`patch::build_patched`: same parsing and path checks, same key, same tag and labels), so a
/// later job on this node finds the image by its tag and key label instead of building it
/// again; jobs on one node build one key at a time (a lock file in the node's temp directory).
/// Scratch files go below the job's own directory and are removed afterwards. Journals the
/// `patch` node (with the node's name) when the plan runs it, as a local apply does.
async fn patch_on_node(
    ctx: &Ctx,
    s: usize,
    spec: &crate::manifest::model::PatchSpec,
    base_reference: &str,
    base: &crate::runtime::ImageInfo,
    dir: &Path,
    node_name: &str,
) -> Result<ResolvedSource, Failure> {
    let internal = |m: String| Failure::new(FailureClass::Internal, m);
    let sess = &ctx.dag.sessions[s];
    let runtime = ctx
        .runtime(crate::manifest::types::RuntimeKind::Docker)
        .ok_or_else(|| internal("no Docker runtime".into()))?;
    let node = ctx.dag.patches.get(&(sess.commit, sess.arm)).copied();
    let journaled = node.filter(|n| ctx.plan.action(*n).executes());
    if let Some(n) = journaled {
        ctx.started(n).map_err(|e| internal(e.to_string()))?;
    }
    let cache = dir.join("patched");
    let log = dir.join("patch.log");
    // Helper containers that an isobench process on this node left when it was killed mid-build.
    if let Ok(removed) = super::patch::cleanup_leftovers(runtime, &cache).await
        && !removed.is_empty()
    {
        eprintln!("worker: removed leftovers of interrupted patch builds: {removed:?}");
    }
    let tag = super::patch::derived_image_tag(base_reference, &base.id, spec);
    let build = async {
        let _one_at_a_time = NodeLock::acquire(&tag).await?;
        super::patch::build_patched(
            runtime,
            spec,
            base,
            &crate::runtime::ServerSource::Image {
                reference: base_reference.to_string(),
            },
            &cache,
            &log,
        )
        .await
    };
    let r = tokio::select! {
        r = build => r,
        _ = ctx.cancelled_wait() => Err(Failure::new(FailureClass::Interrupted, "interrupted")),
    };
    let _ = std::fs::remove_dir_all(&cache);
    match r {
        Ok(outcome) => {
            let super::patch::PatchedSource::Image { reference, id } = outcome.source else {
                return Err(internal("a derived image was expected".into()));
            };
            eprintln!(
                "worker: patched image {reference} ({}) on {node_name}",
                if outcome.reused { "reused" } else { "built" }
            );
            if let Some(n) = journaled {
                ctx.done(
                    n,
                    std::slice::from_ref(&log),
                    Some(serde_json::json!({"reused": outcome.reused, "fuzz_used": outcome.fuzz_used, "files": outcome.files, "source": id, "node": node_name})),
                )
                ?;
            }
            Ok(ResolvedSource {
                source: crate::runtime::ServerSource::Image { reference },
                env: BTreeMap::new(),
                digest: id,
            })
        }
        Err(f) => {
            if let Some(n) = journaled
                && f.class != FailureClass::Interrupted
            {
                ctx.failed(n, f.clone())?;
            }
            Err(f)
        }
    }
}

/// An exclusive `flock` on `<temp dir>/isobench-patch-<derived tag>.lock`, released on drop:
/// two jobs on one node (one Docker engine) build a derived image one after the other, so the
/// second finds the first's image. Nothing is ever written to the file.
struct NodeLock(#[allow(dead_code)] std::fs::File);

impl NodeLock {
    async fn acquire(tag: &str) -> Result<NodeLock, Failure> {
        let name: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = std::env::temp_dir().join(format!("isobench-patch-{name}.lock"));
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                // Another user's lock file: reading is enough for flock.
                .or_else(|_| std::fs::File::open(&path))
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            // `flock` on Unix, so it is shared with every other job's lock on this node.
            file.lock()
                .map_err(|e| format!("locking {}: {e}", path.display()))?;
            Ok(NodeLock(file))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| Failure::new(FailureClass::Internal, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_states_map_to_failure_classes() {
        assert!(classify("COMPLETED", "None", false).is_none());
        assert_eq!(
            classify("TIMEOUT", "TimeLimit", false).unwrap().0,
            FailureClass::TimeLimit
        );
        assert_eq!(
            classify("PREEMPTED", "", false).unwrap().0,
            FailureClass::Preempted
        );
        assert_eq!(
            classify("NODE_FAIL", "", false).unwrap().0,
            FailureClass::NodeFailure
        );
        assert_eq!(
            classify("CANCELLED", "", true).unwrap().0,
            FailureClass::Interrupted
        );
        assert_eq!(
            classify("CANCELLED", "", false).unwrap().0,
            FailureClass::Internal
        );
        assert!(
            classify("TIMEOUT", "TimeLimit", false)
                .unwrap()
                .1
                .contains("TimeLimit")
        );
    }

    #[test]
    fn bound_gpus_come_from_slurm() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            bound_gpus(env(&[("CUDA_VISIBLE_DEVICES", "1,0")])).unwrap(),
            vec![1, 0]
        );
        assert_eq!(
            bound_gpus(env(&[("SLURM_JOB_GPUS", "3")])).unwrap(),
            vec![3]
        );
        assert!(bound_gpus(env(&[])).unwrap().is_empty());
    }

    #[test]
    fn open_jobs_follow_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = JobsLog::open(dir.path()).unwrap();
        let rec = |token: &str, event, id| JobRecord {
            t: "t".into(),
            token: token.into(),
            event,
            session: format!("start[{token}]"),
            run: "r".into(),
            job_id: id,
            measures: vec![],
            state: None,
            reason: None,
            node: None,
        };
        log.append(&rec("a", JobEvent::Submitting, None)).unwrap();
        log.append(&rec("a", JobEvent::Submitted, Some(7))).unwrap();
        log.append(&rec("b", JobEvent::Submitting, None)).unwrap();
        log.append(&rec("c", JobEvent::Submitting, None)).unwrap();
        log.append(&rec("c", JobEvent::Ended, None)).unwrap();
        drop(log);
        // A torn line (kill -9 mid-write) is skipped and the next record starts afresh.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(DIR).join(JOBS))
            .unwrap()
            .write_all(b"{\"t\":\"x\",\"tok")
            .unwrap();
        let mut log = JobsLog::open(dir.path()).unwrap();
        log.append(&rec("b", JobEvent::Submitted, Some(9))).unwrap();
        let open = open_jobs(dir.path());
        assert_eq!(open.len(), 2);
        assert_eq!(open["a"].1, Some(7));
        assert_eq!(open["b"].1, Some(9));
    }
}
