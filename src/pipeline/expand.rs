//! Expansion of a campaign through its pipeline into a DAG of nodes with stable addresses and
//! content keys.
//!
//! A key hashes everything that can change a node's result and nothing that cannot: image
//! reference and patch content, the rendered server command (port as a placeholder), env with
//! secret values left out, model, load parameters, client version, GPU count and kind, trial,
//! and the keys of what it depends on. Ports, container names, GPU indices, times and the state
//! directory never enter a key.

use super::def::{Pipeline, Scope, StepKind};
use crate::manifest::model::{ArmSource, Campaign, Commit, CommitArm, LoadPoint};
use crate::util::hash::{Hash, Hasher};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;
use std::path::Path;

/// What a node is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Index into [`Dag::images`].
    Image(usize),
    /// Commit index and index into that commit's `arms`.
    Patch {
        commit: usize,
        arm: usize,
    },
    /// Index into [`Dag::sessions`].
    Session(usize),
    /// Session and index into the commit's load points.
    Point {
        session: usize,
        point: usize,
    },
    Commit(usize),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub address: String,
    /// The pipeline step's id (shared by all nodes of that step).
    pub step_id: std::sync::Arc<str>,
    pub kind: StepKind,
    pub target: Target,
    pub key: Hash,
    /// Named parts of the key, stored in the journal so `plan` can say what changed.
    pub components: Vec<(&'static str, Hash)>,
}

/// A distinct image or installation: pulled (or checked) once, shared by every session using it.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub source: ArmSource,
    pub label: String,
}

/// One server's life: (commit, arm, trial).
#[derive(Debug, Clone)]
pub struct Session {
    pub commit: usize,
    pub arm: usize,
    pub trial: u32,
    pub image: Option<usize>,
    pub nodes: Vec<NodeIndex>,
    pub measures: Vec<NodeIndex>,
}

#[derive(Debug, Default)]
pub struct Dag {
    pub graph: DiGraph<Node, ()>,
    pub index: HashMap<String, NodeIndex>,
    pub images: Vec<ImageRef>,
    /// Sessions in execution order: per commit, trials interleaved across arms (A B C A B C).
    pub sessions: Vec<Session>,
    pub patches: HashMap<(usize, usize), NodeIndex>,
    pub compares: HashMap<usize, NodeIndex>,
    pub pulls: Vec<NodeIndex>,
}

impl Dag {
    pub fn node(&self, idx: NodeIndex) -> &Node {
        &self.graph[idx]
    }

    pub fn get(&self, address: &str) -> Option<&Node> {
        self.index.get(address).map(|i| &self.graph[*i])
    }

    /// (commit index, arm name) a node belongs to, for grouping; `None` for shared pulls.
    pub fn owner<'c>(
        &self,
        campaign: &'c Campaign,
        node: &Node,
    ) -> (Option<usize>, Option<&'c str>) {
        match node.target {
            Target::Image(_) => (None, None),
            Target::Patch { commit, arm } => (
                Some(commit),
                Some(campaign.commits[commit].arms[arm].name.as_str()),
            ),
            Target::Session(s) | Target::Point { session: s, .. } => {
                let session = &self.sessions[s];
                (
                    Some(session.commit),
                    Some(
                        campaign.commits[session.commit].arms[session.arm]
                            .name
                            .as_str(),
                    ),
                )
            }
            Target::Commit(c) => (Some(c), None),
        }
    }
}

/// Hash of a server source (image reference, installation path, patch chain).
pub fn source_hash(source: &ArmSource, base_dir: &Path) -> Hash {
    let mut h = Hasher::new();
    match source {
        ArmSource::Image { reference } => h.field("image", reference),
        ArmSource::Path { root } => h.field("path", &crate::util::portable_path(root, base_dir)),
        ArmSource::Patched(p) => h
            .hash("base", &source_hash(&p.base, base_dir))
            .hash("patch", &p.patch_hash)
            .field("fuzz", &p.fuzz.to_string())
            .field("target", p.target.as_deref().unwrap_or(""))
            .field("rebuild", p.rebuild.as_deref().unwrap_or("")),
    };
    h.finish()
}

/// Hash of the patches applied on top of the root source (`None` for an unpatched source).
fn patch_chain_hash(source: &ArmSource) -> Option<Hash> {
    match source {
        ArmSource::Patched(p) => {
            let mut h = Hasher::new();
            if let Some(inner) = patch_chain_hash(&p.base) {
                h.hash("base", &inner);
            }
            h.hash("patch", &p.patch_hash)
                .field("fuzz", &p.fuzz.to_string())
                .field("target", p.target.as_deref().unwrap_or(""))
                .field("rebuild", p.rebuild.as_deref().unwrap_or(""));
            Some(h.finish())
        }
        _ => None,
    }
}

fn server_hash(commit: &Commit, arm: &CommitArm) -> Hash {
    let s = &commit.server;
    let mut h = Hasher::new();
    h.field("runtime", &format!("{:?}", s.runtime));
    for a in &arm.argv {
        h.field("arg", a);
    }
    for (k, v) in &arm.env {
        // Secret values never enter a key (nor the journal): only that they are set.
        h.field("env", k).field(
            "val",
            if crate::util::is_secret_name(k) {
                "<secret>"
            } else {
                v
            },
        );
    }
    h.field("ready", &s.ready_path)
        .field("gpus", &s.gpus.to_string())
        .field("shm", &format!("{:?}", s.shm_size))
        .field("ipc", s.ipc.as_deref().unwrap_or(""));
    for v in &s.volumes {
        h.field("volume", v);
    }
    h.finish()
}

fn model_hash(commit: &Commit, base_dir: &Path) -> Hash {
    let m = &commit.model;
    Hasher::new()
        .field("hf", &m.hf)
        .field("path", &m.path)
        .field("revision", m.revision.as_deref().unwrap_or(""))
        .field(
            "tokenizer",
            &m.tokenizer
                .as_ref()
                .map(|t| crate::util::portable_path(t, base_dir))
                .unwrap_or_default(),
        )
        .field("served", &m.served_name)
        .finish()
}

fn load_hash(commit: &Commit, point: Option<&LoadPoint>) -> Hash {
    let l = &commit.load;
    let mut h = Hasher::new();
    h.field("backend", &format!("{:?}", l.backend))
        .field("endpoint", &l.endpoint)
        .field("in", &l.input_len.to_string())
        .field("out", &l.output_len.to_string())
        .field("range", &l.range_ratio.to_string())
        .field("prefix", &l.prefix_len.to_string())
        .field("n", &l.num_prompts.to_string())
        .field("burst", &l.burstiness.to_string())
        .field("warmup", &l.warmup.to_string())
        .field("seed", &l.seed.to_string())
        .field("ignore_eos", &l.ignore_eos.to_string())
        .field("temperature", &l.temperature.to_string());
    if let Some(p) = point {
        h.field("conc", &p.concurrency.to_string())
            .field("rate", &p.rate.label());
    }
    h.finish()
}

fn key_of(kind: StepKind, components: &[(&'static str, Hash)], upstream: &[Hash]) -> Hash {
    let mut h = Hasher::new();
    h.field("kind", kind.name());
    for (name, c) in components {
        h.hash(name, c);
    }
    for u in upstream {
        h.hash("upstream", u);
    }
    h.finish()
}

/// Expands `campaign` through its pipeline. `gpu_kind` is the GPU model when known (declared,
/// or recorded by an earlier apply); it is part of every measurement's key.
pub fn expand(campaign: &Campaign, gpu_kind: Option<&str>) -> Dag {
    let pipeline: &Pipeline = &campaign.pipeline;
    // Sized up front: a large campaign has tens of thousands of nodes.
    let sessions: usize = campaign
        .commits
        .iter()
        .map(|c| c.repeats as usize * c.arms.len())
        .sum();
    let per_session = pipeline.steps.len()
        + campaign
            .commits
            .iter()
            .map(|c| c.load.points.len())
            .max()
            .unwrap_or(1);
    let mut dag = Dag {
        graph: DiGraph::with_capacity(sessions * per_session, sessions * per_session * 2),
        ..Dag::default()
    };
    dag.index.reserve(sessions * per_session);
    dag.sessions.reserve(sessions);
    let step_ids: HashMap<StepKind, std::sync::Arc<str>> = pipeline
        .steps
        .iter()
        .map(|s| (s.kind, std::sync::Arc::from(s.id.as_str())))
        .collect();
    let client = Hash::of(crate::LOADGEN_VERSION.as_bytes());

    // Images: one pull per distinct root source.
    let mut image_index: HashMap<ArmSource, usize> = HashMap::new();
    let pull_step = pipeline.step(StepKind::ImagePull).map(|s| s.id.clone());
    for commit in &campaign.commits {
        for arm in &commit.arms {
            let root = arm.source.root().clone();
            if !image_index.contains_key(&root) {
                let label = match &root {
                    ArmSource::Image { reference } => format!("image={reference}"),
                    ArmSource::Path { root } => format!(
                        "path={}",
                        crate::util::portable_path(root, &campaign.manifest_dir)
                    ),
                    ArmSource::Patched(_) => unreachable!("root() follows patches"),
                };
                image_index.insert(root.clone(), dag.images.len());
                dag.images.push(ImageRef {
                    source: root,
                    label,
                });
            }
        }
    }
    if let Some(step) = &pull_step {
        for i in 0..dag.images.len() {
            let img = dag.images[i].clone();
            let components = vec![("image", source_hash(&img.source, &campaign.manifest_dir))];
            let key = key_of(StepKind::ImagePull, &components, &[]);
            let node = Node {
                address: format!("{step}[{}]", img.label),
                step_id: step.as_str().into(),
                kind: StepKind::ImagePull,
                target: Target::Image(i),
                key,
                components,
            };
            let idx = add(&mut dag, node);
            dag.pulls.push(idx);
        }
    }
    let pull_of = |dag: &Dag, image: usize| -> Option<NodeIndex> { dag.pulls.get(image).copied() };

    let gpu_component = |commit: &Commit| {
        Hasher::new()
            .field("count", &commit.server.gpus.to_string())
            .field("kind", gpu_kind.unwrap_or(""))
            .finish()
    };
    let session_steps: Vec<_> = pipeline
        .steps
        .iter()
        .filter(|s| s.kind.scope() == Scope::Session || s.kind.scope() == Scope::Point)
        .cloned()
        .collect();
    let depends = |from: StepKind, to: StepKind| -> bool {
        match (pipeline.step(from), pipeline.step(to)) {
            (Some(f), Some(t)) => t.after.contains(&f.id),
            _ => false,
        }
    };

    for (ci, commit) in campaign.commits.iter().enumerate() {
        let model_c = model_hash(commit, &campaign.manifest_dir);
        let gpu_c = gpu_component(commit);
        let load_session_c = load_hash(commit, None);
        let mut commit_measure_keys: Vec<Hash> = Vec::new();
        // Per-commit and per-arm parts are the same for every trial: hash them once.
        let point_loads: Vec<(Hash, String)> = commit
            .load
            .points
            .iter()
            .map(|p| (load_hash(commit, Some(p)), p.label()))
            .collect();
        let arm_parts: Vec<(Hash, Hash, Option<Hash>)> = commit
            .arms
            .iter()
            .map(|arm| {
                (
                    source_hash(arm.source.root(), &campaign.manifest_dir),
                    server_hash(commit, arm),
                    patch_chain_hash(&arm.source),
                )
            })
            .collect();
        let mut commit_nodes: Vec<NodeIndex> = Vec::new();

        // Patches: one per (commit, patched arm).
        if let Some(patch_step) = pipeline.step(StepKind::ImagePatch) {
            for (ai, arm) in commit.arms.iter().enumerate() {
                if let ArmSource::Patched(p) = &arm.source {
                    let components = vec![
                        ("image", source_hash(&p.base, &campaign.manifest_dir)),
                        ("patch", p.patch_hash),
                    ];
                    let image = image_index[arm.source.root()];
                    let upstream: Vec<Hash> = if depends(StepKind::ImagePull, StepKind::ImagePatch)
                    {
                        pull_of(&dag, image)
                            .map(|n| dag.graph[n].key)
                            .into_iter()
                            .collect()
                    } else {
                        vec![]
                    };
                    let key = key_of(StepKind::ImagePatch, &components, &upstream);
                    let node = Node {
                        address: format!(
                            "{}[commit={},arm={}]",
                            patch_step.id, commit.short, arm.name
                        ),
                        step_id: patch_step.id.as_str().into(),
                        kind: StepKind::ImagePatch,
                        target: Target::Patch {
                            commit: ci,
                            arm: ai,
                        },
                        key,
                        components,
                    };
                    let idx = add(&mut dag, node);
                    if depends(StepKind::ImagePull, StepKind::ImagePatch)
                        && let Some(pull) = pull_of(&dag, image)
                    {
                        dag.graph.add_edge(pull, idx, ());
                    }
                    dag.patches.insert((ci, ai), idx);
                    commit_nodes.push(idx);
                }
            }
        }

        // Sessions, trial-major so arms interleave: A B C A B C.
        for trial in 1..=commit.repeats {
            for (ai, arm) in commit.arms.iter().enumerate() {
                let image = image_index[arm.source.root()];
                let session_index = dag.sessions.len();
                // The image is the root (pulled) source; a patch chain is its own component so a
                // changed patch reads as "patch changed".
                let (image_c, server_c, patch_c) = arm_parts[ai];
                let trial_c = Hash::of(trial.to_string().as_bytes());
                let mut upstream_keys: Vec<Hash> = Vec::new();
                if let Some(pull) = pull_of(&dag, image) {
                    upstream_keys.push(dag.graph[pull].key);
                }
                if let Some(patch) = dag.patches.get(&(ci, ai)) {
                    upstream_keys.push(dag.graph[*patch].key);
                }
                let mut session = Session {
                    commit: ci,
                    arm: ai,
                    trial,
                    image: Some(image),
                    nodes: Vec::new(),
                    measures: Vec::new(),
                };
                let session_label =
                    format!("commit={},arm={},trial={}", commit.short, arm.name, trial);
                let mut by_kind: HashMap<StepKind, Vec<NodeIndex>> = HashMap::new();
                for step in &session_steps {
                    let mut base_components = vec![
                        ("image", image_c),
                        ("server", server_c),
                        ("model", model_c),
                        ("client", client),
                        ("gpu", gpu_c),
                        ("trial", trial_c),
                    ];
                    if let Some(patch) = patch_c {
                        base_components.push(("patch", patch));
                    }
                    if step.kind == StepKind::LoadMeasure {
                        for (pi, (load_c, point_label)) in point_loads.iter().enumerate() {
                            let mut components = base_components.clone();
                            components.push(("load", *load_c));
                            let key = key_of(step.kind, &components, &upstream_keys);
                            let node = Node {
                                address: format!("{}[{},{}]", step.id, session_label, point_label),
                                step_id: step_ids[&step.kind].clone(),
                                kind: step.kind,
                                target: Target::Point {
                                    session: session_index,
                                    point: pi,
                                },
                                key,
                                components,
                            };
                            let idx = add(&mut dag, node);
                            commit_measure_keys.push(key);
                            session.measures.push(idx);
                            by_kind.entry(step.kind).or_default().push(idx);
                        }
                    } else {
                        let mut components = base_components;
                        if step.kind == StepKind::LoadWarmup {
                            components.push(("load", load_session_c));
                        }
                        let key = key_of(step.kind, &components, &upstream_keys);
                        let node = Node {
                            address: format!("{}[{}]", step.id, session_label),
                            step_id: step_ids[&step.kind].clone(),
                            kind: step.kind,
                            target: Target::Session(session_index),
                            key,
                            components,
                        };
                        let idx = add(&mut dag, node);
                        session.nodes.push(idx);
                        by_kind.entry(step.kind).or_default().push(idx);
                    }
                }
                // Edges inside the session, from the pipeline's `after` lists.
                for step in &session_steps {
                    for dep in &step.after {
                        let Some(dep_step) = pipeline.steps.iter().find(|s| &s.id == dep) else {
                            continue;
                        };
                        match dep_step.kind.scope() {
                            Scope::Image => {
                                if let Some(pull) = pull_of(&dag, image) {
                                    for &to in by_kind.get(&step.kind).into_iter().flatten() {
                                        dag.graph.add_edge(pull, to, ());
                                    }
                                }
                            }
                            Scope::Patch => {
                                if let Some(&patch) = dag.patches.get(&(ci, ai)) {
                                    for &to in by_kind.get(&step.kind).into_iter().flatten() {
                                        dag.graph.add_edge(patch, to, ());
                                    }
                                }
                            }
                            Scope::Session | Scope::Point => {
                                let froms =
                                    by_kind.get(&dep_step.kind).cloned().unwrap_or_default();
                                let tos = by_kind.get(&step.kind).cloned().unwrap_or_default();
                                let pointwise = dep_step.kind.scope() == Scope::Point
                                    && step.kind.scope() == Scope::Point;
                                for (fi, &from) in froms.iter().enumerate() {
                                    for (ti, &to) in tos.iter().enumerate() {
                                        if !pointwise || fi == ti {
                                            dag.graph.add_edge(from, to, ());
                                        }
                                    }
                                }
                            }
                            Scope::Commit => {}
                        }
                    }
                }
                commit_nodes.extend(session.nodes.iter().copied());
                commit_nodes.extend(session.measures.iter().copied());
                dag.sessions.push(session);
            }
        }

        // Compare: one per commit, after the steps it names.
        if let Some(step) = pipeline.step(StepKind::Compare) {
            commit_measure_keys.sort();
            let components = vec![
                ("model", model_c),
                ("measures", {
                    let mut h = Hasher::new();
                    for k in &commit_measure_keys {
                        h.hash("m", k);
                    }
                    h.finish()
                }),
            ];
            let key = key_of(StepKind::Compare, &components, &[]);
            let node = Node {
                address: format!("{}[commit={}]", step.id, commit.short),
                step_id: step.id.as_str().into(),
                kind: StepKind::Compare,
                target: Target::Commit(ci),
                key,
                components,
            };
            let idx = add(&mut dag, node);
            let dep_kinds: Vec<StepKind> = step
                .after
                .iter()
                .filter_map(|a| pipeline.steps.iter().find(|s| &s.id == a))
                .map(|s| s.kind)
                .collect();
            for &n in &commit_nodes {
                if dep_kinds.contains(&dag.graph[n].kind) {
                    dag.graph.add_edge(n, idx, ());
                }
            }
            dag.compares.insert(ci, idx);
        }
    }
    dag
}

fn add(dag: &mut Dag, node: Node) -> NodeIndex {
    let address = node.address.clone();
    let idx = dag.graph.add_node(node);
    dag.index.insert(address, idx);
    idx
}
