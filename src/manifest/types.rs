//! The manifest as written in TOML: serde types, also the source of `schemas/manifest.schema.json`.
//!
//! Settings that can be overridden (server, load) use all-optional structs at every level
//! (campaign, commit); [`super::defaults`] holds the one set of defaults and
//! [`super::resolve`] merges `commit → campaign → defaults`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A benchmark campaign: which commits, which arms, which models, how to serve, how to load.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "isobench manifest")]
pub struct ManifestFile {
    /// Manifest format version; only `1` exists.
    pub version: u32,
    /// Campaign name (labels containers, names the default results directory).
    pub name: String,
    /// Optional free text shown in plans and reports.
    #[serde(default)]
    pub description: Option<String>,
    /// Pipeline to expand every (commit, arm, trial) with: a name under `pipelines/`
    /// (built in: `serve-bench`) or a path to a pipeline TOML file.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Where reports and seed-compatible result files go (relative to the manifest).
    #[serde(default)]
    pub results: Option<String>,
    /// State directory (journal, attempts, lock), relative to the manifest. Default `.isobench`.
    #[serde(default)]
    pub state: Option<String>,
    /// Trials per arm; trials of the arms of one commit are interleaved (A B C A B C).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub repeats: Option<u32>,
    /// Image naming shared by the arms' templates (`{{ images.repo }}`, `{{ repo }}`).
    #[serde(default)]
    pub images: Images,
    /// Free-form template variables (`{{ vars.x }}`).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The arms every commit is measured in: `baseline`, `human`, and any number of agents.
    pub arms: Vec<ArmDef>,
    /// Models by key; commits refer to a key.
    pub models: BTreeMap<String, ModelDef>,
    /// Server settings for every commit (a commit can override them).
    #[serde(default)]
    pub server: ServerSettings,
    /// Load settings for every commit (a commit can override them).
    #[serde(default)]
    pub load: LoadSettings,
    /// Machine resources: GPUs, pulls, isolation.
    #[serde(default)]
    pub resources: Resources,
    /// How the report compares arms.
    #[serde(default)]
    pub compare: CompareSettings,
    /// Checks on what the arms produced, beside their speed (`[check.outputs]`).
    #[serde(default)]
    pub check: CheckSettings,
    /// Where sessions run: this host (default) or a Slurm cluster (`docs/cluster.md`).
    #[serde(default)]
    pub cluster: Option<ClusterDef>,
    /// The commits under test.
    pub commits: Vec<CommitDef>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Images {
    /// Repository, e.g. `anonymous/vllm-baseline`.
    #[serde(default)]
    pub repo: Option<String>,
    /// Registry host prefixed to `repo` in `{{ repo }}`, e.g. `127.0.0.1:5000`.
    #[serde(default)]
    pub registry: Option<String>,
    /// How to build an arm's image from its commit when it is missing (`docs/images.md`):
    /// applies to every arm with an `image` unless the arm says `build = false`.
    #[serde(default)]
    pub build: Option<BuildDef>,
}

/// A Dockerfile recipe that builds an arm's image from the source tree at the arm's commit
/// (the human commit for `human`, the parent for the others).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildDef {
    /// Where the source comes from.
    pub source: BuildSourceDef,
    /// The Dockerfile: a path relative to the manifest's directory if such a file exists,
    /// otherwise a path inside the source tree at the arm's commit. A template.
    pub dockerfile: String,
    /// Build arguments (`--build-arg`), templates (`{{ arm.commit }}`, `{{ commit.short }}`).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// The Dockerfile stage to build (`--target`).
    #[serde(default)]
    pub target: Option<String>,
    /// `missing` (default): build only when the image is neither present locally (from this
    /// recipe or prebuilt) nor pullable; `always`: build whenever the recipe's key changed;
    /// `never`: never build (the image must exist, as without a recipe).
    #[serde(default)]
    pub policy: Option<BuildPolicy>,
    /// Push the image to its reference after a build (default false).
    #[serde(default)]
    pub push: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSourceDef {
    /// A local git clone (relative to the manifest; a template). Read with `git archive`; its
    /// working tree is never touched.
    pub repo: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildPolicy {
    Missing,
    Always,
    Never,
}

impl BuildPolicy {
    pub fn name(self) -> &'static str {
        match self {
            BuildPolicy::Missing => "missing",
            BuildPolicy::Always => "always",
            BuildPolicy::Never => "never",
        }
    }
}

/// One arm. Exactly one way to get its server: `image` (docker), `path` (process runtime:
/// an installation such as a venv), or `base` + `patch` (an agent patch over another arm).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmDef {
    /// Arm name: `baseline`, `human`, `agent-claude`, ...
    pub name: String,
    /// Role in comparisons; inferred from the name (`baseline`, `human`) or from `patch` (agent).
    #[serde(default)]
    pub role: Option<ArmRole>,
    /// Image reference template (docker runtime).
    #[serde(default)]
    pub image: Option<String>,
    /// Installation root template (process runtime), available as `{{ arm.path }}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Arm whose image/installation this arm patches.
    #[serde(default)]
    pub base: Option<String>,
    /// Patch file template, relative to the manifest; a missing file means the arm is absent
    /// for that commit (the plan says so).
    #[serde(default)]
    pub patch: Option<String>,
    /// Directory the patch applies to, inside the base image or installation. Default: the
    /// directory that holds the installed `vllm` package, found automatically.
    #[serde(default)]
    pub patch_target: Option<String>,
    /// Context lines a hunk may lose and still apply (`git apply -C`); 0 = strict (default).
    #[serde(default)]
    pub patch_fuzz: Option<u32>,
    /// Command run in a build container when a patch touches compiled sources. Without it such
    /// a patch fails as `needs_rebuild`.
    #[serde(default)]
    pub rebuild: Option<String>,
    /// `false`: never build this arm's image from `[images.build]` (default: build it when
    /// the campaign has a recipe and the arm has an `image`).
    #[serde(default)]
    pub build: Option<bool>,
    /// Declared per-arm server arguments (the only server difference arms may have).
    #[serde(default)]
    pub args: Vec<String>,
    /// Declared per-arm environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArmRole {
    Baseline,
    Human,
    Agent,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDef {
    /// Hugging Face model id, e.g. `Qwen/Qwen3-1.7B`.
    pub hf: String,
    /// Local path given to the server instead of the HF id (`{{ model.path }}`). A template
    /// that may use `vars.*` and `env("NAME", "default")`; a leading `~` is the home directory.
    #[serde(default)]
    pub path: Option<String>,
    /// `tokenizer.json` or a directory holding one, for exact prompt lengths; relative to the
    /// manifest's directory. A template like `path`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Model revision (commit or tag on the Hub).
    #[serde(default)]
    pub revision: Option<String>,
    /// Name requests use (`--served-model-name`); default: `path`, else `hf`.
    #[serde(default)]
    pub served_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Process,
}

/// Server settings; every field optional so the same type serves campaign and commit level.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `docker` (default) or `process`.
    #[serde(default)]
    pub runtime: Option<RuntimeKind>,
    /// Server command template; `{{ port }}` is the port it must listen on.
    #[serde(default)]
    pub command: Option<String>,
    /// Port inside the container (docker). Process servers get a free port from isobench.
    #[serde(default)]
    pub port: Option<u16>,
    /// `{{ server.max_model_len }}` in the command template.
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// Extra arguments appended to the command (a commit's are added to the campaign's).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Readiness check.
    #[serde(default)]
    pub ready: Option<ReadySettings>,
    /// GPUs per server.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// `/dev/shm` size, e.g. `16g` (docker).
    #[serde(default)]
    pub shm_size: Option<String>,
    /// IPC mode, e.g. `host` (docker).
    #[serde(default)]
    pub ipc: Option<String>,
    /// Environment; a commit's entries are merged over the campaign's. A value `"${NAME}"` is
    /// read from isobench's own environment when the server starts (use it for secrets such as
    /// `HF_TOKEN`). Values of names that look secret (`*TOKEN*`, `*KEY*`, `*SECRET*`,
    /// `*PASSWORD*`) are never logged or hashed.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Bind mounts `host:container[:ro]` (docker); `~` expands to the home directory.
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    /// Free-form variables for the command template (`{{ server.vars.x }}`).
    #[serde(default)]
    pub vars: Option<BTreeMap<String, String>>,
    /// Prometheus endpoint scraped while a measurement runs (default `/metrics`; `""`: none).
    /// A server without it is recorded as having no server metrics, never failed.
    #[serde(default)]
    pub metrics_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadySettings {
    /// HTTP path polled until it answers 200 (default `/health`).
    #[serde(default)]
    pub path: Option<String>,
    /// How long the server may take to become ready (default `300s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Poll interval (default `500ms`).
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Backend {
    /// Chat completions API (`/v1/chat/completions`).
    #[serde(rename = "openai-chat")]
    OpenAiChat,
    /// Completions API (`/v1/completions`).
    #[serde(rename = "openai")]
    OpenAi,
}

/// A value or a list of values; a list expands into several measure steps in one session.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Request rate: a number (requests/s) or `"inf"` (all at once behind the concurrency limit).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RateValue {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for RateValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateValue::Number(n) => write!(f, "{n}"),
            RateValue::Text(t) => write!(f, "\"{t}\""),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSettings {
    /// `openai-chat` (default) or `openai`.
    #[serde(default)]
    pub backend: Option<Backend>,
    /// Request path (default `/v1/chat/completions`; `/v1/completions` for `openai`).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub dataset: Option<DatasetSettings>,
    /// Measured requests per load point (default 100).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub num_prompts: Option<u32>,
    /// Requests in flight (default 16); a list gives one measure step per value.
    #[serde(default)]
    pub concurrency: Option<OneOrMany<u32>>,
    /// Requests per second or `"inf"` (default); a list gives one measure step per value.
    #[serde(default)]
    pub request_rate: Option<OneOrMany<RateValue>>,
    /// Gamma shape of arrivals at a finite rate (1 = Poisson, default).
    #[serde(default)]
    pub burstiness: Option<f64>,
    /// Warm-up requests before the first measure step of a session (default 10).
    #[serde(default)]
    pub warmup: Option<u32>,
    /// Time-based (steady-state) measurement: send requests without pause for `ramp_up` +
    /// `duration` and measure the window after the ramp-up (e.g. `"60s"`). Without it, a
    /// measure step is one pass over `num_prompts` prompts (vLLM's way). Prompts are cycled
    /// when the window needs more than `num_prompts` requests.
    #[serde(default)]
    pub duration: Option<String>,
    /// A timed run's unmeasured start, while the server fills up (default `5s`; only with
    /// `duration`).
    #[serde(default)]
    pub ramp_up: Option<String>,
    /// Whole measure step timeout (default `600s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Per-request timeout (default: the step timeout).
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// Dataset seed; the same seed gives the same prompts in every arm (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Ask the server to ignore EOS so every request yields exactly `output_len` tokens.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Sampling temperature (default 0: greedy, no sampler warm-up stalls).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Name of an environment variable (e.g. `OPENAI_API_KEY`) whose value is sent as
    /// `Authorization: Bearer …` to the server under test. Default: no credential is sent; none
    /// is ever read implicitly. Only the name is recorded, never the value.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Fields merged into every request body, the same for every arm (e.g. `response_format`
    /// for structured output, `top_k`); keys isobench sets itself are refused.
    #[serde(default)]
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
    /// Service-level objectives (vLLM's `--goodput`): the report counts goodput against them,
    /// and `search` looks for the highest load that meets them.
    #[serde(default)]
    pub slo: Option<SloSettings>,
    /// Percentiles the report shows for TTFT, TPOT, ITL and E2E latency (default `[50, 99]`).
    #[serde(default)]
    pub percentiles: Option<Vec<f64>>,
    /// Find the highest request rate (or concurrency) at which the SLOs hold, by probing inside
    /// the server session: one more measure step per session (`search=rate`).
    #[serde(default)]
    pub search: Option<SearchSettings>,
}

/// Service-level objectives in milliseconds; a request is good when it succeeded and meets
/// every objective given (vLLM's `--goodput ttft:500 tpot:50`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SloSettings {
    /// Time to first token, ms.
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    /// Time per output token after the first, ms.
    #[serde(default)]
    pub tpot_ms: Option<f64>,
    /// End-to-end latency, ms.
    #[serde(default)]
    pub e2el_ms: Option<f64>,
}

/// What a search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchOver {
    /// Requests per second (arrivals as `burstiness` says, no concurrency limit).
    Rate,
    /// Requests in flight (sent all at once behind the limit).
    Concurrency,
}

/// `[load.search]`: the highest load at which the SLOs hold (docs/loadgen.md, "Search").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// `rate` (requests/s) or `concurrency`.
    pub over: SearchOver,
    /// The lowest and highest load probed, e.g. `[1, 64]` (whole numbers for `concurrency`).
    pub range: [f64; 2],
    /// `rate`: stop when the highest pass and the lowest failure are within this relative
    /// distance (default 0.1). `concurrency` is searched to the exact value.
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// A probe passes when at least this fraction of its requests is good (default 0.99).
    #[serde(default)]
    pub attainment: Option<f64>,
    /// Requests per probe (default `load.num_prompts`).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub num_prompts: Option<u32>,
}

/// The workload, named as `vllm bench serve --dataset-name` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    /// Random token ids of exact lengths (default).
    Random,
    /// A ShareGPT-format JSON file (`path`), filtered and shuffled as vLLM does.
    Sharegpt,
    /// A JSONL file (`path`): `{"prompt": "…" | [messages], "output_tokens": n}` per line.
    Custom,
    /// Random prompts in groups sharing a prefix (`prefix_len`, `suffix_len`, `num_prefixes`).
    PrefixRepetition,
}

impl DatasetName {
    /// Whether the workload is read from `dataset.path`.
    pub fn has_file(self) -> bool {
        matches!(self, DatasetName::Sharegpt | DatasetName::Custom)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSettings {
    /// `random` (default), `sharegpt`, `custom` or `prefix_repetition`.
    #[serde(default)]
    pub name: Option<DatasetName>,
    /// The dataset file (`sharegpt`, `custom`), relative to the manifest; its content enters
    /// the measure keys.
    #[serde(default)]
    pub path: Option<String>,
    /// Prompt tokens (default 512).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub input_len: Option<u32>,
    /// Output tokens (default 64; `prefix_repetition`: 128; `sharegpt`: the dataset's reply
    /// lengths unless set; `custom`: each record's `output_tokens` unless set).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub output_len: Option<u32>,
    /// Lengths drawn from [L·(1−r), L·(1+r)] (default 0).
    #[serde(default)]
    pub range_ratio: Option<f64>,
    /// Shared prefix tokens prepended to every prompt (default 0; `prefix_repetition`: 256).
    #[serde(default)]
    pub prefix_len: Option<u32>,
    /// `prefix_repetition`: tokens after the shared prefix (default 256).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub suffix_len: Option<u32>,
    /// `prefix_repetition`: distinct prefixes; each is shared by `num_prompts / num_prefixes`
    /// prompts (default 10).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub num_prefixes: Option<u32>,
    /// `sharegpt`, `custom`: one request per user turn of each conversation, re-sending the
    /// history (earlier turns and the dataset's recorded replies) (default false).
    #[serde(default)]
    pub multi_turn: Option<bool>,
}

/// GPUs: `"auto"` (NVML, else `nvidia-smi`) or declared indices.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum GpuInventorySetting {
    Declared(Vec<u32>),
    Mode(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `"auto"` (default) or a list of GPU indices, e.g. `[0, 1]`; `--gpus` overrides.
    #[serde(default)]
    pub gpus: Option<GpuInventorySetting>,
    /// GPU model for cache keys when GPUs are declared (e.g. `"H100"`).
    #[serde(default)]
    pub gpu_kind: Option<String>,
    /// How GPUs reach a docker server: `device-request` (NVIDIA runtime, default) or `env`
    /// (only `CUDA_VISIBLE_DEVICES`; machines without the NVIDIA runtime).
    #[serde(default)]
    pub gpu_mode: Option<String>,
    /// A GPU counts as idle below this much used memory (MiB, default 1024).
    #[serde(default)]
    pub gpu_idle_memory_mib: Option<u64>,
    /// How long to wait for a GPU to become idle before failing the session (default `120s`).
    #[serde(default)]
    pub gpu_idle_wait: Option<String>,
    /// Which measurements may overlap in time: `exclusive` (one at a time on this host; others
    /// may start and warm up meanwhile), `paired` (the arms of one commit's trial measure at the
    /// same moment on different GPUs, one round at a time) or `none` (as fits). Default: see
    /// `docs/report.md` (chosen by measured A/A false-verdict rates).
    #[serde(default)]
    pub isolate: Option<String>,
    /// Old spelling of `isolate = "exclusive"`.
    #[serde(default)]
    pub isolate_measure: Option<bool>,
    /// Concurrent image pulls and builds (`[images.build]`) (default 2).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub pull_parallelism: Option<u32>,
    /// Disk budget for pulled images, e.g. `200g`; images this state directory pulled that no
    /// pending step needs are pruned (never one that was on the host before).
    #[serde(default)]
    pub disk_budget: Option<String>,
    /// GPU telemetry samples per second during a measurement (NVML; default 10, 0: none).
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub telemetry_hz: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareSettings {
    /// Confidence level of intervals (default 0.95).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Also apply the seed's rule: a difference of at least this many percent is a win/loss.
    #[serde(default)]
    pub threshold_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSettings {
    /// Output equivalence: every arm's generated text compared with its reference's, per prompt
    /// (`docs/report.md`, "Output equivalence").
    #[serde(default)]
    pub outputs: OutputsCheckSettings,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputsCheckSettings {
    /// Which divergence marks a comparison's speed verdict (default `floor`).
    #[serde(default)]
    pub mode: Option<OutputsMode>,
}

/// When diverged outputs mark a speed verdict (`faster ⚠ outputs diverged`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputsMode {
    /// Any request whose text differs from the reference's marks the verdict.
    Exact,
    /// Only divergence beyond the reference arm's own trial-to-trial divergence (its
    /// nondeterminism floor) marks the verdict.
    #[default]
    Floor,
    /// Outputs are not compared.
    Off,
}

impl OutputsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputsMode::Exact => "exact",
            OutputsMode::Floor => "floor",
            OutputsMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitDef {
    /// The human optimisation commit (full 40-character hash).
    pub human: String,
    /// Its parent, the baseline (full hash, or at least 7 characters where that is all there is).
    pub parent: String,
    /// Model key from `[models]`.
    pub model: String,
    /// Commit subject, for reports.
    #[serde(default)]
    pub subject: Option<String>,
    /// Trials for this commit (overrides `repeats`).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub repeats: Option<u32>,
    /// Only these arms for this commit (default: all).
    #[serde(default)]
    pub arms: Option<Vec<String>>,
    /// Server overrides for this commit (same for all its arms).
    #[serde(default)]
    pub server: Option<ServerSettings>,
    /// Load overrides for this commit (same for all its arms).
    #[serde(default)]
    pub load: Option<LoadSettings>,
}

/// `[cluster]`: run every server session as one Slurm job (`docs/cluster.md`). A session's GPU
/// count is `server.gpus` (per campaign or per commit) and becomes `--gres=<gres>:N`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterDef {
    /// `local` (this host, default) or `slurm`; `apply --backend` overrides it.
    #[serde(default)]
    pub backend: Option<String>,
    /// Slurm partition (`--partition`); default: the cluster's default partition.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--account`.
    #[serde(default)]
    pub account: Option<String>,
    /// `--qos`.
    #[serde(default)]
    pub qos: Option<String>,
    /// Time limit per session job, e.g. `20m`; default: ready timeout + the load's timeout per
    /// load point + 5 minutes. Slurm counts whole minutes.
    #[serde(default)]
    pub time_limit: Option<String>,
    /// Node features (`--constraint`), e.g. `h100&ib`.
    #[serde(default)]
    pub constraint: Option<String>,
    /// GRES name of GPUs: `gpu` (default) or typed, e.g. `gpu:h100` (the type then becomes the
    /// GPU model in cache keys unless `resources.gpu_kind` is set).
    #[serde(default)]
    pub gres: Option<String>,
    /// Extra `sbatch` arguments, passed as they are (e.g. `["--exclusive"]`).
    #[serde(default)]
    pub sbatch_args: Option<Vec<String>>,
    /// `spread` (default: Slurm places every session) or `same-node` (all trials of a commit on
    /// one node, chosen up front from `sinfo`).
    #[serde(default)]
    pub placement: Option<String>,
    /// Resubmissions of a session lost to preemption or a node failure, per apply (default 1).
    #[serde(default)]
    pub retries: Option<u32>,
    /// How often `squeue` is asked about the jobs (default `1s`).
    #[serde(default)]
    pub poll_interval: Option<String>,
}
