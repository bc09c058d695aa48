//! What every task of one `apply` shares: the campaign, its DAG and plan, the event stream
//! (journal, live view, tally), the runtimes, and the cancellation signal.

use super::events::{Activity, ExecEvent, Stream, lock};
use super::record;
use crate::failure::Failure;
use crate::manifest::model::Campaign;
use crate::manifest::types::RuntimeKind;
use crate::pipeline::expand::Dag;
use crate::plan::Plan;
use crate::runtime::{Runtime, ServerHandle};
use crate::state::{Entry, Event};
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::{Semaphore, watch};

pub struct Ctx {
    pub campaign: Campaign,
    pub dag: Dag,
    pub plan: Plan,
    pub run_id: String,
    /// This run's identity (state id, run id, host): labels every server it starts.
    pub owner: crate::runtime::Owner,
    /// Attempt number each node gets in this run (the state's last + 1; never reused).
    pub attempts: HashMap<NodeIndex, u32>,
    /// Where every step reports what happens: journal first, then live view and tally.
    pub events: Stream,
    pub cancel: watch::Receiver<bool>,
    pub docker: Option<Runtime>,
    pub process: Option<Runtime>,
    /// Which measurements may overlap in time.
    pub isolate: crate::manifest::model::Isolate,
    /// The one measurement slot of `isolate = "exclusive"`.
    pub measure_slot: Semaphore,
    /// Measurement groups of `isolate = "paired"`.
    pub rendezvous: super::pairing::Rendezvous,
    /// Session → its paired measurement group (only under `isolate = "paired"`).
    pub pair_group: HashMap<usize, usize>,
    /// How each GPU index is recorded with results: its UUID, or `gpu<index>` when declared.
    pub gpu_ids: HashMap<u32, String>,
    /// This executable, for `{{ isobench }}` in server commands.
    pub exe: String,
    pub gpu_env_only: bool,
    /// Writes `compare.json` for `compare` nodes (supplied by the caller; see [`super::Comparer`]).
    pub comparer: std::sync::Arc<dyn super::Comparer>,
    /// Servers started by sessions and not yet stopped, by session: if a session's task
    /// panics or returns early, the scheduler stops what is left here.
    pub servers: Mutex<HashMap<usize, ServerHandle>>,
    /// Nodes whose `done` or `failed` this run has written: a task that panicked leaves the
    /// rest of its nodes to be marked failed by the scheduler.
    pub closed: Mutex<HashSet<NodeIndex>>,
}

/// A journal write failed: the run cannot continue safely.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal: {0}")]
pub struct JournalError(#[from] pub std::io::Error);

/// A step that cannot journal its own transition fails as `internal` (the run stops on the
/// journal error elsewhere; the step only reports it).
impl From<JournalError> for Failure {
    fn from(e: JournalError) -> Failure {
        Failure::new(crate::failure::FailureClass::Internal, e.to_string())
    }
}

impl Ctx {
    pub fn state_dir(&self) -> &Path {
        &self.campaign.state_dir
    }

    pub fn runtime(&self, kind: RuntimeKind) -> Option<&Runtime> {
        match kind {
            RuntimeKind::Docker => self.docker.as_ref(),
            RuntimeKind::Process => self.process.as_ref(),
        }
    }

    pub fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves when the run is cancelled (never, if it is not).
    pub async fn cancelled_wait(&self) {
        let mut rx = self.cancel.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn attempt(&self, node: NodeIndex) -> u32 {
        self.attempts.get(&node).copied().unwrap_or(1)
    }

    /// The attempt directory of a node, absolute; created.
    pub fn attempt_dir(&self, node: NodeIndex) -> std::io::Result<PathBuf> {
        let rel = crate::state::attempt_dir(&self.dag.graph[node].address, self.attempt(node));
        let dir = self.state_dir().join(rel);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Path relative to the state directory, for the journal and messages.
    pub fn rel(&self, path: &Path) -> String {
        path.strip_prefix(self.state_dir())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Delivers one event to the run's subscribers (see [`Stream::emit`]).
    pub fn emit(&self, event: &ExecEvent<'_>) -> Result<(), JournalError> {
        self.events.emit(event)
    }

    /// A permanent human line.
    pub fn note(&self, msg: &str) {
        self.events.note(msg);
    }

    /// One active node's line (`label: status`), until [`Activity::end`].
    pub fn begin(&self, label: &str, status: &str) -> Activity<'_> {
        self.events.begin(label, status)
    }

    /// A node transition: journaled, then shown and tallied. Also for entries another writer
    /// made (a Slurm job's journal, copied when the job ends), so they count like this run's.
    pub fn transition(&self, entry: &Entry) -> Result<(), JournalError> {
        let step = self
            .dag
            .index
            .get(&entry.addr)
            .map(|n| self.dag.graph[*n].kind);
        self.emit(&ExecEvent::Node { step, entry })
    }

    /// Records the server a session started (until [`Ctx::forget_server`]).
    pub fn record_server(&self, session: usize, handle: &ServerHandle) {
        lock(&self.servers).insert(session, handle.clone());
    }

    /// The session's server has been stopped (or is being stopped by the caller).
    pub fn forget_server(&self, session: usize) -> Option<ServerHandle> {
        lock(&self.servers).remove(&session)
    }

    /// Whether this run has written `done` or `failed` for the node.
    pub fn is_closed(&self, node: NodeIndex) -> bool {
        lock(&self.closed).contains(&node)
    }

    /// `started`: written before the step has any effect.
    pub fn started(&self, node: NodeIndex) -> Result<(), JournalError> {
        test_panic_hook(&self.dag.graph[node].address);
        self.transition(&record::entry(
            &self.dag.graph[node],
            Event::Started,
            self.attempt(node),
            &self.run_id,
        ))
    }

    /// `done`, with the digests of the files the step wrote and step-specific facts.
    pub fn done(
        &self,
        node: NodeIndex,
        outputs: &[PathBuf],
        info: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        let mut entry = record::entry(
            &self.dag.graph[node],
            Event::Done,
            self.attempt(node),
            &self.run_id,
        );
        entry.outputs = outputs
            .iter()
            .map(|p| {
                let digest = crate::util::hash::file_hash(p)
                    .map(|h| h.hex())
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                (self.rel(p), digest)
            })
            .collect::<BTreeMap<_, _>>();
        entry.info = info;
        self.transition(&entry)?;
        lock(&self.closed).insert(node);
        Ok(())
    }

    pub fn failed(&self, node: NodeIndex, mut failure: Failure) -> Result<(), JournalError> {
        if let Some(log) = &failure.log_path {
            failure.log_path = Some(self.rel(Path::new(log)));
        }
        self.transition(&record::failed(
            &self.dag.graph[node],
            self.attempt(node),
            &self.run_id,
            failure,
        ))?;
        lock(&self.closed).insert(node);
        Ok(())
    }
}

/// Test hook, compiled into debug builds only (the tests' binary): with
/// `ISOBENCH_TEST_PANIC_AT=<node address>`, the task running that node panics as the node
/// starts. No input can make a task panic once durations are bounded, yet the scheduler's
/// handling of a panicked task (an `internal` failure, its server stopped, apply ending) must
/// stay tested; release builds carry no such hook.
#[cfg(debug_assertions)]
fn test_panic_hook(address: &str) {
    if std::env::var("ISOBENCH_TEST_PANIC_AT").is_ok_and(|at| at == address) {
        panic!("ISOBENCH_TEST_PANIC_AT: panicking at {address}");
    }
}

#[cfg(not(debug_assertions))]
fn test_panic_hook(_address: &str) {}
