//! Expansion of a campaign through its pipeline into a DAG of nodes with stable addresses and
//! content keys.
//!
//! A key hashes everything that can change a node's result and nothing that cannot: image
//! reference and patch content, the rendered server command (port as a placeholder), env with
//! secret values left out, model, load parameters, client version, GPU count and kind, trial,
//! and the keys of what it depends on. Ports, container names, GPU indices, times and the state
//! directory never enter a key.

use crate::manifest::model::{ArmSource, BuildSpec, Campaign, Commit, CommitArm, LoadPoint};
use crate::manifest::pipeline::{Pipeline, Scope, StepDef, StepKind};
use crate::manifest::types::BuildPolicy;
use crate::util::hash::{Hash, Hasher};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

impl Target {
    /// `(session, point)` of a measure node; None for any other target.
    pub fn point(&self) -> Option<(usize, usize)> {
        match *self {
            Target::Point { session, point } => Some((session, point)),
            _ => None,
        }
    }
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
    /// Index into [`Dag::images`]: the root (pulled or checked) source of the session's arm.
    pub image: usize,
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
    /// Per image: the node that makes it available (a pull, or a build when it has a recipe).
    pub pulls: Vec<NodeIndex>,
    /// Per built image with `push = true`: its push node (after the build).
    pub pushes: HashMap<usize, NodeIndex>,
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
    // Only when set: fixed-count campaigns keep the keys (and caches) they had.
    if let Some(t) = &l.timed {
        h.field("ramp_up_s", &t.ramp_up.as_secs_f64().to_string())
            .field("duration_s", &t.duration.as_secs_f64().to_string());
    }
    // Only for other workloads and per-request options, likewise. The file's content is the
    // `dataset` component; here only how it is read.
    if l.workload != crate::loadgen::Workload::Random {
        let mut w = l.workload.clone();
        if let crate::loadgen::Workload::Sharegpt { path, .. }
        | crate::loadgen::Workload::Custom { path, .. } = &mut w
        {
            *path = PathBuf::new();
        }
        h.field("workload", &serde_json::to_string(&w).unwrap_or_default());
    }
    if let Some(extra) = &l.extra_body {
        // serde_json's map is ordered by key: the same table gives the same text.
        h.field(
            "extra_body",
            &serde_json::Value::Object(extra.clone()).to_string(),
        );
    }
    if let Some(p) = point {
        h.field("conc", &p.concurrency.to_string())
            .field("rate", &p.rate.label());
        // Everything a search decides by, its SLOs included (a fixed point's key has no SLO:
        // the report counts goodput from the recorded requests).
        if let Some(search) = &p.search {
            h.field("search", &serde_json::to_string(search).unwrap_or_default());
        }
    }
    h.finish()
}

/// A file workload's content (streamed through blake3, remembered per path, size and mtime);
/// an unreadable file (removed since `plan` checked it) hashes as its error, so it still reads
/// as a changed dataset.
fn dataset_hash(commit: &Commit) -> Option<Hash> {
    let path = commit.load.workload.path()?;
    let content =
        crate::loadgen::dataset_file_hash(path).unwrap_or_else(|e| format!("unreadable: {e}"));
    Some(Hasher::new().field("content", &content).finish())
}

/// What makes a built image what it is: its reference, the source tree, the Dockerfile's
/// content, and the rendered arguments and target. Not the clone's path, nor the policy.
fn build_components(build: &BuildSpec) -> Vec<(&'static str, Hash)> {
    let mut args = Hasher::new();
    for (name, value) in &build.args {
        args.field(name, value);
    }
    args.field("--target", build.target.as_deref().unwrap_or(""));
    vec![
        (
            "image",
            Hasher::new().field("image", &build.reference).finish(),
        ),
        ("source", Hash::of(build.tree.as_bytes())),
        ("dockerfile", build.dockerfile_hash),
        ("build", args.finish()),
    ]
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
    let mut x = Expansion::new(campaign, gpu_kind);
    x.add_images();
    for ci in 0..campaign.commits.len() {
        x.add_commit(ci);
    }
    x.dag
}

/// The state of one expansion: the DAG being built and what every commit shares.
struct Expansion<'a> {
    campaign: &'a Campaign,
    pipeline: &'a Pipeline,
    gpu_kind: Option<&'a str>,
    dag: Dag,
    /// Root source → index into `dag.images`.
    image_index: HashMap<ArmSource, usize>,
    step_ids: HashMap<StepKind, std::sync::Arc<str>>,
    /// The steps each session goes through (session and point scoped), in pipeline order.
    session_steps: Vec<StepDef>,
    client: Hash,
}

/// The key components shared by every node of one commit.
struct CommitParts {
    model: Hash,
    gpu: Hash,
    load_session: Hash,
    /// Per load point: its load component and address label.
    point_loads: Vec<(Hash, String)>,
    /// Per arm: (image, server, patch chain).
    arms: Vec<(Hash, Hash, Option<Hash>)>,
    /// The dataset file's content, for file workloads (random prompts have none: their keys
    /// stay what they were).
    dataset: Option<Hash>,
}

impl<'a> Expansion<'a> {
    fn new(campaign: &'a Campaign, gpu_kind: Option<&'a str>) -> Self {
        let pipeline = &campaign.pipeline;
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
        Expansion {
            campaign,
            pipeline,
            gpu_kind,
            dag,
            image_index: HashMap::new(),
            step_ids: pipeline
                .steps
                .iter()
                .map(|s| (s.kind, std::sync::Arc::from(s.id.as_str())))
                .collect(),
            session_steps: pipeline
                .steps
                .iter()
                .filter(|s| matches!(s.kind.scope(), Scope::Session | Scope::Point))
                .cloned()
                .collect(),
            client: Hash::of(crate::LOADGEN_VERSION.as_bytes()),
        }
    }

    /// Whether the pipeline runs step `to` after step `from`.
    fn depends(&self, from: StepKind, to: StepKind) -> bool {
        match (self.pipeline.step(from), self.pipeline.step(to)) {
            (Some(f), Some(t)) => t.after.contains(&f.id),
            _ => false,
        }
    }

    fn pull_of(&self, image: usize) -> Option<NodeIndex> {
        self.dag.pulls.get(image).copied()
    }

    /// One image per distinct root source, and one pull node per image.
    fn add_images(&mut self) {
        let manifest_dir = &self.campaign.manifest_dir;
        for arm in self.campaign.commits.iter().flat_map(|c| &c.arms) {
            let root = arm.source.root();
            if self.image_index.contains_key(root) {
                continue;
            }
            let label = match root {
                ArmSource::Image { reference } => format!("image={reference}"),
                ArmSource::Path { root } => {
                    format!("path={}", crate::util::portable_path(root, manifest_dir))
                }
                ArmSource::Patched(_) => unreachable!("root() follows patches"),
            };
            self.image_index.insert(root.clone(), self.dag.images.len());
            self.dag.images.push(ImageRef {
                source: root.clone(),
                label,
            });
        }
        let Some(step) = self.pipeline.step(StepKind::ImagePull) else {
            return;
        };
        for i in 0..self.dag.images.len() {
            let img = &self.dag.images[i];
            if let Some(build) = self.build_of(&img.source) {
                self.add_build(i, build);
                continue;
            }
            let components = vec![("image", source_hash(&img.source, manifest_dir))];
            let node = Node {
                address: format!("{}[{}]", step.id, img.label),
                step_id: step.id.as_str().into(),
                kind: StepKind::ImagePull,
                target: Target::Image(i),
                key: key_of(StepKind::ImagePull, &components, &[]),
                components,
            };
            let idx = add(&mut self.dag, node);
            self.dag.pulls.push(idx);
        }
    }

    /// The recipe an image is built with, if it has one that may build (`policy != never`).
    fn build_of(&self, source: &ArmSource) -> Option<&'a BuildSpec> {
        let ArmSource::Image { reference } = source else {
            return None;
        };
        self.campaign
            .builds
            .get(reference)
            .filter(|b| b.policy != BuildPolicy::Never)
    }

    /// `build[image=..]` in the place of the image's pull, and `push[image=..]` after it.
    fn add_build(&mut self, i: usize, build: &BuildSpec) {
        let label = self.dag.images[i].label.clone();
        let components = build_components(build);
        let key = key_of(StepKind::ImageBuild, &components, &[]);
        let node = Node {
            address: format!("build[{label}]"),
            step_id: "build".into(),
            kind: StepKind::ImageBuild,
            target: Target::Image(i),
            key,
            components: components.clone(),
        };
        let idx = add(&mut self.dag, node);
        self.dag.pulls.push(idx);
        if build.push {
            let node = Node {
                address: format!("push[{label}]"),
                step_id: "push".into(),
                kind: StepKind::ImagePush,
                target: Target::Image(i),
                key: key_of(StepKind::ImagePush, &components, &[key]),
                components,
            };
            let push = add(&mut self.dag, node);
            self.dag.graph.add_edge(idx, push, ());
            self.dag.pushes.insert(i, push);
        }
    }

    /// The `image` component of sessions and measures: the reference, and for a built image
    /// its recipe, so a rebuilt image is measured again.
    fn image_component(&self, source: &ArmSource) -> Hash {
        let manifest_dir = &self.campaign.manifest_dir;
        match self.build_of(source) {
            Some(build) => {
                let mut h = Hasher::new();
                h.hash("source", &source_hash(source, manifest_dir));
                for (name, c) in build_components(build) {
                    h.hash(name, &c);
                }
                h.finish()
            }
            None => source_hash(source, manifest_dir),
        }
    }

    /// A commit's patches, sessions (trial-major so arms interleave: A B C A B C) and compare.
    fn add_commit(&mut self, ci: usize) {
        let commit = &self.campaign.commits[ci];
        let manifest_dir = &self.campaign.manifest_dir;
        // Per-commit and per-arm parts are the same for every trial: hash them once.
        let parts = CommitParts {
            model: model_hash(commit, manifest_dir),
            gpu: Hasher::new()
                .field("count", &commit.server.gpus.to_string())
                .field("kind", self.gpu_kind.unwrap_or(""))
                .finish(),
            load_session: load_hash(commit, None),
            dataset: dataset_hash(commit),
            point_loads: commit
                .load
                .points
                .iter()
                .map(|p| (load_hash(commit, Some(p)), p.label()))
                .collect(),
            arms: commit
                .arms
                .iter()
                .map(|arm| {
                    (
                        self.image_component(arm.source.root()),
                        server_hash(commit, arm),
                        patch_chain_hash(&arm.source),
                    )
                })
                .collect(),
        };
        let mut commit_nodes = self.add_patches(ci);
        let mut measure_keys: Vec<Hash> = Vec::new();
        for trial in 1..=commit.repeats {
            for ai in 0..commit.arms.len() {
                let session = self.add_session(ci, ai, trial, &parts);
                commit_nodes.extend(session.nodes.iter().copied());
                commit_nodes.extend(session.measures.iter().copied());
                measure_keys.extend(session.measures.iter().map(|&m| self.dag.graph[m].key));
                self.dag.sessions.push(session);
            }
        }
        self.add_compare(ci, &parts, measure_keys, &commit_nodes);
    }

    /// One patch node per patched arm of the commit; returns the nodes added.
    fn add_patches(&mut self, ci: usize) -> Vec<NodeIndex> {
        let Some(patch_step) = self.pipeline.step(StepKind::ImagePatch) else {
            return Vec::new();
        };
        let commit = &self.campaign.commits[ci];
        let after_pull = self.depends(StepKind::ImagePull, StepKind::ImagePatch);
        let mut added = Vec::new();
        for (ai, arm) in commit.arms.iter().enumerate() {
            let ArmSource::Patched(p) = &arm.source else {
                continue;
            };
            let components = vec![
                ("image", source_hash(&p.base, &self.campaign.manifest_dir)),
                ("patch", p.patch_hash),
            ];
            let pull = self
                .pull_of(self.image_index[arm.source.root()])
                .filter(|_| after_pull);
            let upstream: Vec<Hash> = pull.map(|n| self.dag.graph[n].key).into_iter().collect();
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
                key: key_of(StepKind::ImagePatch, &components, &upstream),
                components,
            };
            let idx = add(&mut self.dag, node);
            if let Some(pull) = pull {
                self.dag.graph.add_edge(pull, idx, ());
            }
            self.dag.patches.insert((ci, ai), idx);
            added.push(idx);
        }
        added
    }

    /// The nodes of one (commit, arm, trial) session and the edges among them; the session is
    /// returned for the caller to push, so its index is `dag.sessions.len()`.
    fn add_session(&mut self, ci: usize, ai: usize, trial: u32, parts: &CommitParts) -> Session {
        let commit = &self.campaign.commits[ci];
        let arm = &commit.arms[ai];
        let image = self.image_index[arm.source.root()];
        let session_index = self.dag.sessions.len();
        // The image is the root (pulled) source; a patch chain is its own component so a
        // changed patch reads as "patch changed".
        let (image_c, server_c, patch_c) = parts.arms[ai];
        let mut base_components = vec![
            ("image", image_c),
            ("server", server_c),
            ("model", parts.model),
            ("client", self.client),
            ("gpu", parts.gpu),
            ("trial", Hash::of(trial.to_string().as_bytes())),
        ];
        if let Some(patch) = patch_c {
            base_components.push(("patch", patch));
        }
        let upstream: Vec<Hash> = self
            .pull_of(image)
            .into_iter()
            .chain(self.dag.patches.get(&(ci, ai)).copied())
            .map(|n| self.dag.graph[n].key)
            .collect();
        let mut session = Session {
            commit: ci,
            arm: ai,
            trial,
            image,
            nodes: Vec::new(),
            measures: Vec::new(),
        };
        let label = format!("commit={},arm={},trial={}", commit.short, arm.name, trial);
        let mut by_kind: HashMap<StepKind, Vec<NodeIndex>> = HashMap::new();
        for si in 0..self.session_steps.len() {
            let kind = self.session_steps[si].kind;
            // A measure node per load point; one node per session for the other steps.
            let points: Vec<(Option<usize>, Hash, String)> = if kind == StepKind::LoadMeasure {
                parts
                    .point_loads
                    .iter()
                    .enumerate()
                    .map(|(pi, (load, point))| (Some(pi), *load, format!("{label},{point}")))
                    .collect()
            } else {
                vec![(None, parts.load_session, label.clone())]
            };
            for (point, load_c, address_args) in points {
                let mut components = base_components.clone();
                if matches!(kind, StepKind::LoadMeasure | StepKind::LoadWarmup) {
                    components.push(("load", load_c));
                    if let Some(dataset) = parts.dataset {
                        components.push(("dataset", dataset));
                    }
                }
                let node = Node {
                    address: format!("{}[{address_args}]", self.session_steps[si].id),
                    step_id: self.step_ids[&kind].clone(),
                    kind,
                    target: match point {
                        Some(point) => Target::Point {
                            session: session_index,
                            point,
                        },
                        None => Target::Session(session_index),
                    },
                    key: key_of(kind, &components, &upstream),
                    components,
                };
                let idx = add(&mut self.dag, node);
                if point.is_some() {
                    session.measures.push(idx);
                } else {
                    session.nodes.push(idx);
                }
                by_kind.entry(kind).or_default().push(idx);
            }
        }
        self.add_session_edges(ci, ai, image, &by_kind);
        session
    }

    /// Edges into and inside one session, from the pipeline's `after` lists.
    fn add_session_edges(
        &mut self,
        ci: usize,
        ai: usize,
        image: usize,
        by_kind: &HashMap<StepKind, Vec<NodeIndex>>,
    ) {
        let no_nodes = Vec::new();
        for step in &self.session_steps {
            let tos = by_kind.get(&step.kind).unwrap_or(&no_nodes);
            for dep in &step.after {
                let Some(dep_step) = self.pipeline.steps.iter().find(|s| &s.id == dep) else {
                    continue;
                };
                let froms: Vec<NodeIndex> = match dep_step.kind.scope() {
                    Scope::Image => self.pull_of(image).into_iter().collect(),
                    Scope::Patch => self
                        .dag
                        .patches
                        .get(&(ci, ai))
                        .copied()
                        .into_iter()
                        .collect(),
                    Scope::Session | Scope::Point => {
                        by_kind.get(&dep_step.kind).cloned().unwrap_or_default()
                    }
                    Scope::Commit => Vec::new(),
                };
                // Point to point (e.g. measure after measure) pairs the same load point only.
                let pointwise =
                    dep_step.kind.scope() == Scope::Point && step.kind.scope() == Scope::Point;
                for (fi, &from) in froms.iter().enumerate() {
                    for (ti, &to) in tos.iter().enumerate() {
                        if !pointwise || fi == ti {
                            self.dag.graph.add_edge(from, to, ());
                        }
                    }
                }
            }
        }
    }

    /// One compare node per commit, after the steps it names; keyed by the commit's measures.
    fn add_compare(
        &mut self,
        ci: usize,
        parts: &CommitParts,
        mut measure_keys: Vec<Hash>,
        commit_nodes: &[NodeIndex],
    ) {
        let Some(step) = self.pipeline.step(StepKind::Compare) else {
            return;
        };
        measure_keys.sort();
        let mut measures = Hasher::new();
        for k in &measure_keys {
            measures.hash("m", k);
        }
        let components = vec![("model", parts.model), ("measures", measures.finish())];
        let node = Node {
            address: format!("{}[commit={}]", step.id, self.campaign.commits[ci].short),
            step_id: step.id.as_str().into(),
            kind: StepKind::Compare,
            target: Target::Commit(ci),
            key: key_of(StepKind::Compare, &components, &[]),
            components,
        };
        let idx = add(&mut self.dag, node);
        let dep_kinds: Vec<StepKind> = step
            .after
            .iter()
            .filter_map(|a| self.pipeline.steps.iter().find(|s| &s.id == a))
            .map(|s| s.kind)
            .collect();
        for &n in commit_nodes {
            if dep_kinds.contains(&self.dag.graph[n].kind) {
                self.dag.graph.add_edge(n, idx, ());
            }
        }
        self.dag.compares.insert(ci, idx);
    }
}

fn add(dag: &mut Dag, node: Node) -> NodeIndex {
    let address = node.address.clone();
    let idx = dag.graph.add_node(node);
    dag.index.insert(address, idx);
    idx
}
