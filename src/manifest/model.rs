//! The resolved campaign: defaults merged, templates rendered, references checked. Everything
//! downstream (pipeline expansion, plan, exec, report) works on these types only.

use super::types::{ArmRole, Backend, RuntimeKind};
use crate::util::hash::Hash;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Placeholder for the server's port in rendered commands; replaced at start time so that
/// ports never enter a cache key.
pub const PORT_PLACEHOLDER: &str = "__ISOBENCH_PORT__";

/// Placeholder for the isobench executable (`{{ isobench }}`), so simulator campaigns can run
/// `isobench sim` from wherever isobench is installed without the path entering keys.
pub const EXE_PLACEHOLDER: &str = "__ISOBENCH_EXE__";

#[derive(Debug, Clone)]
pub struct Campaign {
    pub name: String,
    pub description: Option<String>,
    pub manifest_path: PathBuf,
    pub manifest_dir: PathBuf,
    pub pipeline: super::pipeline::Pipeline,
    pub results_dir: PathBuf,
    pub state_dir: PathBuf,
    pub arms: Vec<ArmInfo>,
    pub commits: Vec<Commit>,
    pub resources: ResourceSettings,
    pub compare: CompareSettings,
    /// Images built from a recipe (`[images.build]`), by image reference.
    pub builds: BTreeMap<String, BuildSpec>,
    /// `[cluster]` resolved (`None`: no section); see [`Campaign::slurm`].
    pub cluster: Option<ClusterSettings>,
    /// Valid but risky settings (e.g. an `env()` value on a command line), for the CLI to show.
    pub warnings: Vec<super::diag::Warning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmInfo {
    pub name: String,
    pub role: ArmRole,
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub human: String,
    pub parent: String,
    /// Unambiguous short form of `human` (8 characters unless two commits share them).
    pub short: String,
    pub subject: Option<String>,
    pub model_key: String,
    pub model: Model,
    pub repeats: u32,
    /// The server configuration shared by every arm of this commit.
    pub server: Server,
    pub load: Load,
    /// Arms measured for this commit, in manifest order.
    pub arms: Vec<CommitArm>,
    /// Arms not measured for this commit, and why (e.g. no patch file).
    pub absent: Vec<AbsentArm>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub hf: String,
    /// What the server is given (`path` if set, else `hf`).
    pub path: String,
    pub tokenizer: Option<PathBuf>,
    pub revision: Option<String>,
    pub served_name: String,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub runtime: RuntimeKind,
    pub port: u16,
    pub ready_path: String,
    pub ready_timeout: Duration,
    pub ready_interval: Duration,
    pub gpus: u32,
    pub shm_size: Option<u64>,
    pub ipc: Option<String>,
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    /// Prometheus path scraped while measuring; `None`: scraping is off (`metrics_path = ""`).
    pub metrics_path: Option<String>,
}

/// How one image is built: the source tree at a commit, a Dockerfile, arguments. Everything in
/// it that shapes the image enters the build node's key (`pipeline::expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The image reference the build is tagged (and pushed) as.
    pub reference: String,
    /// The local git clone.
    pub repo: PathBuf,
    /// The full commit hash the source tree is exported at.
    pub commit: String,
    /// The tree id of that commit: the source's identity in the key (two commits with the same
    /// tree build the same image).
    pub tree: String,
    pub dockerfile: DockerfileSource,
    /// blake3 of the Dockerfile's content.
    pub dockerfile_hash: Hash,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub policy: super::types::BuildPolicy,
    pub push: bool,
    /// Which commits and arms use the image, for messages (`015069b0 human`).
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// A file next to the manifest (absolute path), added to the context.
    Manifest(PathBuf),
    /// A path inside the source tree at the commit.
    Source(String),
}

/// How an arm's server comes to exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArmSource {
    /// A container image (docker runtime).
    Image { reference: String },
    /// An installation directory (process runtime), e.g. a venv.
    Path { root: PathBuf },
    /// Another arm's source plus a patch.
    Patched(Box<PatchSpec>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatchSpec {
    pub base_arm: String,
    pub base: ArmSource,
    pub patch_path: PathBuf,
    pub patch_hash: Hash,
    pub target: Option<String>,
    pub fuzz: u32,
    pub rebuild: Option<String>,
}

impl ArmSource {
    /// The pullable root of this source (an image or installation), after following patches.
    pub fn root(&self) -> &ArmSource {
        match self {
            ArmSource::Patched(p) => p.base.root(),
            other => other,
        }
    }

    /// Short human description.
    pub fn describe(&self) -> String {
        match self {
            ArmSource::Image { reference } => reference.clone(),
            ArmSource::Path { root } => root.display().to_string(),
            ArmSource::Patched(p) => format!("{} + {}", p.base.describe(), p.patch_path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommitArm {
    pub name: String,
    pub role: ArmRole,
    pub source: ArmSource,
    /// The server command, split into arguments, with [`PORT_PLACEHOLDER`] for the port; the
    /// arm's declared `args` appended.
    pub argv: Vec<String>,
    /// Server environment plus the arm's declared `env`.
    pub env: BTreeMap<String, String>,
    /// The arm's declared differences, shown in plans.
    pub declared_args: Vec<String>,
    pub declared_env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbsentArm {
    pub arm: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Rate {
    Infinite,
    PerSecond(f64),
}

impl Rate {
    pub fn as_f64(self) -> f64 {
        match self {
            Rate::Infinite => f64::INFINITY,
            Rate::PerSecond(r) => r,
        }
    }

    pub fn label(self) -> String {
        match self {
            Rate::Infinite => "inf".into(),
            Rate::PerSecond(r) => format!("{r}"),
        }
    }
}

/// One load point of a session: a measure step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadPoint {
    pub concurrency: u32,
    pub rate: Rate,
    /// A search (`[load.search]`) instead of one fixed load: the step probes several loads
    /// and records the highest that meets the SLOs. Sessions measure it after the fixed points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::loadgen::search::Search>,
}

impl LoadPoint {
    /// Address label: `conc=16`, plus `rate=4` for finite rates (so addresses stay stable when
    /// a rate list is added later).
    pub fn label(&self) -> String {
        if let Some(search) = &self.search {
            return search.label();
        }
        match self.rate {
            Rate::Infinite => format!("conc={}", self.concurrency),
            Rate::PerSecond(_) => format!("conc={},rate={}", self.concurrency, self.rate.label()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub backend: Backend,
    pub endpoint: String,
    pub input_len: u32,
    pub output_len: u32,
    pub range_ratio: f64,
    pub prefix_len: u32,
    pub num_prompts: u32,
    pub points: Vec<LoadPoint>,
    pub burstiness: f64,
    pub warmup: u32,
    /// Time-based measurement (`load.duration`, `load.ramp_up`); None: one pass over the prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed: Option<TimedLoad>,
    #[serde(skip)]
    pub timeout: Duration,
    #[serde(skip)]
    pub request_timeout: Duration,
    pub seed: u64,
    pub ignore_eos: bool,
    pub temperature: f64,
    /// The variable whose value the client sends as a bearer token (name only; not in keys:
    /// a credential does not change what is measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// `load.dataset.name` and what it reads beyond the random lengths above (the file, resolved
    /// against the manifest; prefix groups).
    #[serde(skip_serializing_if = "is_random")]
    pub workload: crate::loadgen::Workload,
    /// Fields merged into every request body (`load.extra_body`), the same in every arm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
    /// `[load.slo]`: what the report counts goodput against (not in the measure keys: goodput
    /// is computed from the recorded requests; a search point's key has it).
    #[serde(skip)]
    pub slo: crate::loadgen::Goodput,
    /// `load.percentiles`: what the report shows (not in keys either).
    #[serde(skip)]
    pub percentiles: Vec<f64>,
}

impl Load {
    /// Measured runs a session makes at most: one per fixed point, a search's probe budget.
    pub fn measured_runs_at_most(&self) -> u32 {
        self.points
            .iter()
            .map(|p| p.search.map_or(1, |s| s.max_probes()))
            .sum()
    }
}

fn is_random(w: &crate::loadgen::Workload) -> bool {
    *w == crate::loadgen::Workload::Random
}

/// A time-based measure step: `ramp_up` unmeasured, then a `duration` window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimedLoad {
    #[serde(serialize_with = "crate::util::serialize_duration_s")]
    pub ramp_up: Duration,
    #[serde(serialize_with = "crate::util::serialize_duration_s")]
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub enum GpuInventory {
    /// Ask NVML (or `nvidia-smi`) at apply time.
    Auto,
    /// Declared indices (also on machines without GPUs: tests, dry runs).
    Declared(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct ResourceSettings {
    pub gpus: GpuInventory,
    pub gpu_kind: Option<String>,
    pub gpu_env_only: bool,
    pub gpu_idle_memory_mib: u64,
    pub gpu_idle_wait: Duration,
    pub isolate: Isolate,
    pub pull_parallelism: u32,
    pub disk_budget: Option<u64>,
    /// GPU telemetry samples per second while measuring (0: none).
    pub telemetry_hz: u32,
}

/// Which measurements may overlap in time (`resources.isolate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolate {
    /// One measurement at a time on this host; other sessions may start and warm up. The
    /// default: in A/A campaigns (`scripts/bench-aa.sh`, docs/report.md) as few false verdicts
    /// as any policy, no direction favoured, and the only one with no overlap and no order effect.
    #[default]
    Exclusive,
    /// The arms of one commit's trial measure at the same moment on different GPUs; one round
    /// (of as many arms as there are GPU groups) at a time. As few A/A false verdicts as
    /// `exclusive` in two thirds of its time, but rounds run one after another.
    Paired,
    /// As the GPUs allow.
    None,
}

impl Isolate {
    pub fn parse(text: &str) -> Option<Isolate> {
        match text {
            "exclusive" => Some(Isolate::Exclusive),
            "paired" => Some(Isolate::Paired),
            "none" => Some(Isolate::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Isolate::Exclusive => "exclusive",
            Isolate::Paired => "paired",
            Isolate::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompareSettings {
    pub confidence: f64,
    pub threshold_pct: Option<f64>,
    /// `[check.outputs] mode`: when diverged outputs mark a speed verdict.
    pub outputs: super::types::OutputsMode,
}

/// Where sessions are placed on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Slurm places every session job.
    Spread,
    /// All trials of a commit on one node.
    SameNode,
}

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterBackend {
    Local,
    Slurm,
}

/// A resolved `[cluster]` section.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub backend: ClusterBackend,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// `None`: derived per session (see [`ClusterSettings::time_limit_for`]).
    pub time_limit: Option<Duration>,
    pub constraint: Option<String>,
    /// `gpu` or `gpu:<type>`.
    pub gres: String,
    pub sbatch_args: Vec<String>,
    pub placement: Placement,
    pub retries: u32,
    pub poll_interval: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            backend: ClusterBackend::Local,
            partition: None,
            account: None,
            qos: None,
            time_limit: None,
            constraint: None,
            gres: "gpu".into(),
            sbatch_args: Vec::new(),
            placement: Placement::Spread,
            retries: 1,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl Campaign {
    /// The Slurm settings when sessions run on Slurm.
    pub fn slurm(&self) -> Option<&ClusterSettings> {
        self.cluster
            .as_ref()
            .filter(|c| c.backend == ClusterBackend::Slurm)
    }
}

impl ClusterSettings {
    /// A session job's time limit: the configured one, else what the session may take at
    /// most (ready timeout + one load timeout per load point, warm-up included) + 5 minutes.
    pub fn time_limit_for(&self, commit: &Commit) -> Duration {
        self.time_limit.unwrap_or_else(|| {
            commit.server.ready_timeout
                + commit.load.timeout * (commit.load.measured_runs_at_most() + 1)
                + Duration::from_secs(300)
        })
    }

    /// `--gres` for `gpus` GPUs (`None` for none).
    pub fn gres_for(&self, gpus: u32) -> Option<String> {
        (gpus > 0).then(|| format!("{}:{gpus}", self.gres))
    }
}
