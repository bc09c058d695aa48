//! The plan: every desired node diffed against the recorded state, each with one action and one
//! reason; plus nodes the state knows but the manifest no longer wants (orphaned).

pub mod render;
pub mod select;

use crate::manifest::model::{ArmSource, Campaign};
use crate::manifest::pipeline::{Scope, StepKind};
use crate::manifest::types::BuildPolicy;
use crate::pipeline::expand::{Dag, Node, Target};
use crate::state::{Event, Inventory, State};
use petgraph::graph::NodeIndex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The campaign's DAG as `plan`, `apply` and `report` all see it. The GPU model enters the
/// measurement keys: the manifest's `resources.gpu_kind` when set, else the model of the GPUs
/// found (`apply`) or recorded in the state's inventory (`plan`, `report`).
pub fn desired_dag(campaign: &Campaign, inventory: Option<&Inventory>) -> Dag {
    let gpu_kind = campaign
        .resources
        .gpu_kind
        .clone()
        .or_else(|| inventory.and_then(Inventory::kind));
    crate::pipeline::expand::expand(campaign, gpu_kind.as_deref())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `+ run`: never done (or failed before).
    Run,
    /// `~ rerun`: done, but something that shapes its result changed.
    Rerun,
    /// `! incomplete`: started and never finished (interrupted).
    Incomplete,
    /// `= cached`: done with the same key.
    Cached,
    /// `- orphaned`: in the state, no longer in the manifest (results kept).
    Orphaned,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Run => "+",
            Action::Rerun => "~",
            Action::Incomplete => "!",
            Action::Cached => "=",
            Action::Orphaned => "-",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::Rerun => "rerun",
            Action::Incomplete => "incomplete",
            Action::Cached => "cached",
            Action::Orphaned => "orphaned",
        }
    }

    /// Whether apply will execute a node with this action.
    pub fn executes(self) -> bool {
        matches!(self, Action::Run | Action::Rerun | Action::Incomplete)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub address: String,
    #[serde(skip)]
    pub node: Option<NodeIndex>,
    pub action: Action,
    pub reason: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub run: usize,
    pub rerun: usize,
    pub incomplete: usize,
    pub cached: usize,
    pub orphaned: usize,
    pub absent_arms: usize,
}

impl Counts {
    pub fn pending(&self) -> usize {
        self.run + self.rerun + self.incomplete
    }
}

#[derive(Debug)]
pub struct Plan {
    /// One entry per DAG node, indexed like the DAG.
    pub nodes: Vec<Planned>,
    pub orphaned: Vec<Planned>,
    pub counts: Counts,
}

impl Plan {
    pub fn action(&self, idx: NodeIndex) -> Action {
        self.nodes[idx.index()].action
    }

    pub fn get(&self, idx: NodeIndex) -> &Planned {
        &self.nodes[idx.index()]
    }
}

/// A glob over node addresses. Addresses contain `[` and `]`, which glob reads as character
/// classes; here they match themselves, so `measure[commit=015069b0*` means what it says.
pub fn address_glob(pattern: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(&pattern.replace('[', "[[]"))
        .map_err(|e| format!("bad address pattern `{pattern}`: {e}"))
}

/// Options that change what the plan asks for.
#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// Address globs to run again even if cached (`--rerun 'measure[commit=015069b0*'`).
    pub rerun: Vec<glob::Pattern>,
    /// The campaign was narrowed by `--commit`/`--arm`: recorded nodes outside it are not
    /// orphans, just not targeted, and are left out.
    pub targeted: bool,
    /// What the local engine holds under the references of built images (`[images.build]`),
    /// when the caller looked (`plan` does, read-only); empty: unknown.
    pub image_presence: HashMap<String, ImagePresence>,
}

/// A built image's reference as the local Docker engine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePresence {
    Absent,
    /// Present; the key of the recipe that built it (its `isobench.build-key` label), `None`
    /// for an image built some other way.
    Present {
        build_key: Option<String>,
    },
}

fn component_phrase(name: &str) -> &str {
    match name {
        "image" => "image changed",
        "patch" => "patch changed",
        "server" => "server args changed",
        "model" => "model changed",
        "load" => "load changed",
        "dataset" => "dataset changed",
        "client" => "client version changed",
        "gpu" => "GPU changed",
        "trial" => "trial changed",
        "measures" => "measurements changed",
        "source" => "source tree changed",
        "dockerfile" => "Dockerfile changed",
        "build" => "build args changed",
        other => other,
    }
}

/// Why a node whose key changed must run again, from the recorded key components.
fn rerun_reason(node: &Node, recorded: &BTreeMap<String, String>) -> String {
    let mut changed: Vec<&str> = Vec::new();
    for (name, hash) in &node.components {
        match recorded.get(*name) {
            Some(old) if *old == hash.hex() => {}
            Some(_) => changed.push(component_phrase(name)),
            None => changed.push(component_phrase(name)),
        }
    }
    if changed.is_empty() {
        "upstream changed".to_string()
    } else {
        changed.join(", ")
    }
}

/// Whether the files a done entry recorded still hold what it wrote: a deleted or edited
/// `result.json` must be measured again, not reported as cached. Costs one read and hash of
/// each recorded file (a result is a few KB).
fn outputs_problem(state: &State, e: &crate::state::Entry) -> Option<String> {
    for (rel, digest) in &e.outputs {
        let name = std::path::Path::new(rel)
            .file_name()
            .map_or_else(|| rel.clone(), |n| n.to_string_lossy().into_owned());
        let what = if name == "result.json" {
            "result".to_string()
        } else {
            name
        };
        match crate::util::hash::file_hash(&state.dir.join(rel)) {
            Ok(h) if h.hex() == *digest => {}
            Ok(_) => return Some(format!("{what} changed")),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("{what} missing"));
            }
            Err(err) => return Some(format!("{what} unreadable: {err}")),
        }
    }
    None
}

/// Diffs the DAG against the state, in stages: each node with results of its own on its own
/// record, then sessions from their measures, then pulls and patches from who needs them, then
/// compares from their measurements; orphans are what the state has and the DAG has not.
pub fn plan(campaign: &Campaign, dag: &Dag, state: &State, opts: &PlanOptions) -> Plan {
    let mut nodes: Vec<Planned> = dag
        .graph
        .node_indices()
        .map(|idx| own_action(dag, state, opts, idx))
        .collect();
    follow_sessions(dag, state, &mut nodes);
    explain_builds(campaign, dag, opts, &mut nodes);
    skip_unneeded_sources(dag, &mut nodes);
    rerun_compares(dag, &mut nodes);
    let orphaned = orphans(dag, state, opts);
    let counts = count(campaign, &nodes, &orphaned);
    Plan {
        nodes,
        orphaned,
        counts,
    }
}

/// Stage 1: nodes with results of their own (pulls, patches, measures, compares), from their own
/// record; ephemeral session steps are decided from their session by [`follow_sessions`].
fn own_action(dag: &Dag, state: &State, opts: &PlanOptions, idx: NodeIndex) -> Planned {
    let node = &dag.graph[idx];
    let forced = opts.rerun.iter().any(|p| p.matches(&node.address));
    let (action, reason) = if node.kind.is_ephemeral() {
        (Action::Cached, String::new()) // decided from its session below
    } else {
        match state.get(&node.address) {
            None => (Action::Run, "new".to_string()),
            Some(e) if forced && e.event == Event::Done => {
                (Action::Rerun, "forced by --rerun".to_string())
            }
            Some(e) => match e.event {
                Event::Started => (
                    Action::Incomplete,
                    format!("interrupted (attempt {})", e.attempt),
                ),
                Event::Failed => {
                    let why = e
                        .failure
                        .as_ref()
                        .map(|f| f.class.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    if e.key == node.key.hex() {
                        (Action::Run, format!("failed before: {why}"))
                    } else {
                        (
                            Action::Run,
                            format!(
                                "failed before: {why}; {}",
                                rerun_reason(node, &e.components)
                            ),
                        )
                    }
                }
                Event::Done if e.key == node.key.hex() => match outputs_problem(state, e) {
                    Some(why) if node.kind == StepKind::LoadMeasure => (Action::Incomplete, why),
                    _ => (Action::Cached, String::new()),
                },
                Event::Done => (Action::Rerun, rerun_reason(node, &e.components)),
            },
        }
    };
    Planned {
        address: node.address.clone(),
        node: Some(idx),
        action,
        reason,
    }
}

/// Stage 2: sessions run when any of their measures must; their steps follow.
fn follow_sessions(dag: &Dag, state: &State, nodes: &mut [Planned]) {
    for session in &dag.sessions {
        let pending = session
            .measures
            .iter()
            .filter(|m| nodes[m.index()].action.executes())
            .count();
        for &s in &session.nodes {
            let p = &mut nodes[s.index()];
            if pending > 0 {
                p.action = Action::Run;
                p.reason = format!(
                    "server session for {pending} measurement{}",
                    if pending == 1 { "" } else { "s" }
                );
            } else if session.measures.is_empty() {
                // A pipeline without measure steps: sessions run unless done before.
                let done = state
                    .get(&p.address)
                    .is_some_and(|e| e.event == Event::Done && e.key == dag.graph[s].key.hex());
                if !done {
                    p.action = Action::Run;
                    p.reason = "new".into();
                }
            }
        }
    }
}

/// Stage 2b: build nodes, refined by what the engine holds (when the caller looked): an image
/// this recipe built, or a prebuilt one under policy `missing`, needs no build; a recorded
/// build whose image was removed since must be made again.
fn explain_builds(campaign: &Campaign, dag: &Dag, opts: &PlanOptions, nodes: &mut [Planned]) {
    for &idx in &dag.pulls {
        let node = &dag.graph[idx];
        let Target::Image(i) = node.target else {
            continue;
        };
        let (StepKind::ImageBuild, ArmSource::Image { reference }) =
            (node.kind, &dag.images[i].source)
        else {
            continue;
        };
        let Some(presence) = opts.image_presence.get(reference) else {
            continue;
        };
        let policy = campaign.builds.get(reference).map(|b| b.policy);
        let p = &mut nodes[idx.index()];
        let forced = opts.rerun.iter().any(|g| g.matches(&node.address));
        match presence {
            ImagePresence::Absent if p.action == Action::Cached => {
                p.action = Action::Run;
                p.reason = "image missing (built before, removed since)".into();
            }
            ImagePresence::Absent if p.action.executes() => {
                p.reason = match p.reason.as_str() {
                    "new" => "image missing".into(),
                    other => format!("{other}; image missing"),
                }
            }
            ImagePresence::Present { build_key } if p.action.executes() && !forced => {
                match build_key {
                    Some(k) if *k == node.key.hex() => {
                        p.action = Action::Cached;
                        p.reason = "present: built by this recipe".into();
                    }
                    None if policy == Some(BuildPolicy::Missing) => {
                        p.action = Action::Cached;
                        p.reason = "present (built elsewhere; policy missing)".into();
                    }
                    Some(_) => p.reason = format!("{}; the image is from another recipe", p.reason),
                    None => p.reason = format!("{} (policy always)", p.reason),
                }
            }
            _ => {}
        }
    }
}

/// Stage 3: pulls and patches nobody pending needs are not worth doing now (pushes are wanted
/// for themselves).
fn skip_unneeded_sources(dag: &Dag, nodes: &mut [Planned]) {
    for idx in dag.graph.node_indices() {
        let node = &dag.graph[idx];
        if !matches!(node.kind.scope(), Scope::Image | Scope::Patch)
            || node.kind == StepKind::ImagePush
            || !nodes[idx.index()].action.executes()
        {
            continue;
        }
        let needed = dag
            .graph
            .neighbors_directed(idx, petgraph::Direction::Outgoing)
            .any(|next| nodes[next.index()].action.executes());
        if !needed {
            let p = &mut nodes[idx.index()];
            p.action = Action::Cached;
            p.reason = "not needed: everything that uses it is cached".into();
        }
    }
}

/// Stage 4: a compare runs again whenever any of its measurements does.
fn rerun_compares(dag: &Dag, nodes: &mut [Planned]) {
    for (&_commit, &cmp) in &dag.compares {
        let upstream_runs = dag
            .graph
            .neighbors_directed(cmp, petgraph::Direction::Incoming)
            .filter(|u| nodes[u.index()].action.executes())
            .count();
        let p = &mut nodes[cmp.index()];
        if upstream_runs > 0 && p.action == Action::Cached {
            p.action = Action::Rerun;
            p.reason = format!(
                "{upstream_runs} upstream step{} will run",
                if upstream_runs == 1 { "" } else { "s" }
            );
        }
    }
}

/// Stage 5: orphans: recorded, no longer wanted (none when targeted: the rest of the campaign was
/// left out on purpose), sorted by address.
fn orphans(dag: &Dag, state: &State, opts: &PlanOptions) -> Vec<Planned> {
    let mut orphaned: Vec<Planned> = state
        .order
        .iter()
        .filter(|_| !opts.targeted)
        .filter(|addr| !dag.index.contains_key(*addr))
        .map(|addr| {
            let e = &state.latest[addr];
            let what = match e.event {
                Event::Done => "results kept",
                Event::Failed => "failure record kept",
                Event::Started => "interrupted attempt kept",
            };
            Planned {
                address: addr.clone(),
                node: None,
                action: Action::Orphaned,
                reason: format!("no longer in manifest; {what}"),
            }
        })
        .collect();
    orphaned.sort_by(|a, b| a.address.cmp(&b.address));
    orphaned
}

fn count(campaign: &Campaign, nodes: &[Planned], orphaned: &[Planned]) -> Counts {
    let mut counts = Counts {
        orphaned: orphaned.len(),
        absent_arms: campaign.commits.iter().map(|c| c.absent.len()).sum(),
        ..Counts::default()
    };
    for p in nodes {
        match p.action {
            Action::Run => counts.run += 1,
            Action::Rerun => counts.rerun += 1,
            Action::Incomplete => counts.incomplete += 1,
            Action::Cached => counts.cached += 1,
            Action::Orphaned => counts.orphaned += 1,
        }
    }
    counts
}

/// The step kinds a node target has, for grouping in renderers.
pub fn target_commit(dag: &Dag, node: &Node) -> Option<usize> {
    match node.target {
        Target::Image(_) => None,
        Target::Patch { commit, .. } | Target::Commit(commit) => Some(commit),
        Target::Session(s) | Target::Point { session: s, .. } => Some(dag.sessions[s].commit),
    }
}

/// Whether a node is a measurement (the unit results are counted in).
pub fn is_measure(node: &Node) -> bool {
    node.kind == StepKind::LoadMeasure
}
