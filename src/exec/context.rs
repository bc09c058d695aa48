//! What every task of one `apply` shares: the campaign, its DAG and plan, the journal, the
//! runtimes, the live view, and the cancellation signal.

use super::live::Live;
use super::record;
use crate::failure::Failure;
use crate::manifest::model::Campaign;
use crate::manifest::types::RuntimeKind;
use crate::pipeline::expand::Dag;
use crate::plan::Plan;
use crate::runtime::Runtime;
use crate::state::{Event, Journal};
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::{Semaphore, watch};

pub struct Ctx {
    pub campaign: Campaign,
    pub dag: Dag,
    pub plan: Plan,
    pub run_id: String,
    /// Attempt number each node gets in this run (the state's last + 1; never reused).
    pub attempts: HashMap<NodeIndex, u32>,
    pub journal: Mutex<Journal>,
    pub live: Live,
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
}

/// A journal write failed: the run cannot continue safely.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal: {0}")]
pub struct JournalError(#[from] pub std::io::Error);

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

    fn append(&self, entry: &crate::state::Entry) -> Result<(), JournalError> {
        self.journal.lock().expect("journal lock").append(entry)?;
        Ok(())
    }

    /// `started`: written before the step has any effect.
    pub fn started(&self, node: NodeIndex) -> Result<(), JournalError> {
        self.append(&record::entry(
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
        self.append(&entry)
    }

    pub fn failed(&self, node: NodeIndex, mut failure: Failure) -> Result<(), JournalError> {
        if let Some(log) = &failure.log_path {
            failure.log_path = Some(self.rel(Path::new(log)));
        }
        self.append(&record::failed(
            &self.dag.graph[node],
            self.attempt(node),
            &self.run_id,
            failure,
        ))
    }
}
