//! The computed report: what every renderer draws from, and exactly what `--format json` writes.
//!
//! This is a stable, versioned schema (`schema_version`, documented in `docs/report.md`): fields
//! may be added in a minor release, never renamed or removed without bumping the version.
pub use super::input::{SearchOutcome, SearchOver};
use super::stats::{Better, Method, Summary, Verdict};
use crate::failure::{CrashCause, Failure, FailureClass};
use crate::manifest::types::{ArmRole, OutputsMode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const SCHEMA_NAME: &str = "isobench.report";
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Always `isobench.report`.
    pub schema: String,
    /// Bumped on any incompatible change of this structure.
    pub schema_version: u32,
    pub isobench_version: String,
    pub campaign: String,
    pub generated_at: String,
    pub settings: Settings,
    /// The metrics that appear in `metrics` maps, in display order.
    pub metrics: Vec<MetricInfo>,
    /// Arms in manifest order.
    pub arms: Vec<ArmEntry>,
    pub commits: Vec<CommitReport>,
    pub summary: CampaignSummary,
    /// Windows, trial spread, GPU placement, overlapping measurements, self-audit warnings.
    pub quality: Quality,
    /// Per commit and arm: the image and how it was had (pulled, built, derived by a patch) or
    /// why not. Empty for inputs that carry no image records.
    #[serde(default)]
    pub images: Vec<ImageRow>,
}

impl Report {
    /// The metric of this key in this report's catalogue.
    pub fn metric(&self, key: &str) -> Option<&MetricInfo> {
        self.metrics.iter().find(|m| m.key == key)
    }
}

/// How one commit's arm got its image (or installation), from the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRow {
    /// Commit short hash.
    pub commit: String,
    pub arm: String,
    /// The image reference, the installation path, or `<base arm> + <patch file>`.
    pub image: String,
    pub status: ImageStatus,
    /// The failure (class: message), or what was done (`built in 12.3 s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Pulled from its registry by isobench.
    Pulled,
    /// Already on the host (or a checked installation).
    Present,
    /// Built from its commit (`[images.build]`).
    Built,
    /// The base arm's image plus the agent's patch.
    Derived,
    /// Could not be had: missing, pull, build or patch failure.
    Failed,
    /// Not attempted yet.
    NotRun,
}

impl ImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pulled => "pulled",
            ImageStatus::Present => "present",
            ImageStatus::Built => "built",
            ImageStatus::Derived => "derived (patch)",
            ImageStatus::Failed => "failed",
            ImageStatus::NotRun => "not run",
        }
    }
}

/// How numbers were computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// Confidence level of every interval, e.g. 0.95.
    pub confidence: f64,
    /// The seed's rule (|difference| ≥ this many percent), when asked for.
    pub threshold_pct: Option<f64>,
    /// Whether differences pair trials of the same round (see `docs/report.md`).
    pub paired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricInfo {
    /// vLLM's result JSON key, e.g. `output_throughput`, `mean_ttft_ms`.
    pub key: String,
    pub label: String,
    pub unit: String,
    pub better: Better,
    /// In the compact terminal and Markdown tables.
    #[serde(default)]
    pub compact: bool,
    /// Compared between arms; else a per-arm figure.
    #[serde(default)]
    pub compared: bool,
    /// From the measurement's telemetry.
    #[serde(default)]
    pub telemetry: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArmEntry {
    pub name: String,
    pub role: ArmRole,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommitReport {
    /// Short hash as used in file names (`<commit8>_human_result.json`).
    pub short: String,
    pub full: String,
    pub parent: String,
    pub model: String,
    pub subject: Option<String>,
    /// One entry per load point, in the order the points were measured.
    pub points: Vec<PointReport>,
    /// The commit's `[load.slo]`, or else the SLO its searches used; goodput counts against it.
    #[serde(default)]
    pub slo: Option<Slo>,
    /// Throughput–latency curves, one per arm with measurements: its fixed load points and its
    /// searches' probes (see `docs/report.md`, "Curves").
    #[serde(default)]
    pub curves: Vec<ArmCurve>,
}

/// Service-level objectives (ms); a request is good when it meets every one given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl From<crate::loadgen::Goodput> for Slo {
    fn from(g: crate::loadgen::Goodput) -> Slo {
        Slo {
            ttft_ms: g.ttft_ms,
            tpot_ms: g.tpot_ms,
            e2el_ms: g.e2el_ms,
        }
    }
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2el_ms.is_some()
    }

    /// `TTFT ≤ 500 ms and TPOT ≤ 50 ms`.
    pub fn describe(&self) -> String {
        crate::loadgen::Goodput {
            ttft_ms: self.ttft_ms,
            tpot_ms: self.tpot_ms,
            e2el_ms: self.e2el_ms,
        }
        .describe()
    }
}

/// One arm's throughput–latency curve at one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArmCurve {
    pub arm: String,
    pub role: ArmRole,
    /// Fixed load points (not searches), by achieved request throughput.
    pub points: Vec<CurvePoint>,
    /// Every probe of every trial's search, in trial and probe order.
    pub probes: Vec<CurveProbe>,
}

/// A fixed load point on a curve: medians over the arm's measured trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CurvePoint {
    pub point: String,
    /// Trials the medians are over.
    pub trials: usize,
    /// Achieved request throughput, req/s (the x axis).
    pub request_throughput: f64,
    pub output_throughput: Option<f64>,
    #[serde(flatten)]
    pub latency: CurveLatency,
    /// Good requests in % (when the commit has an SLO).
    pub goodput_pct: Option<f64>,
}

/// p50 and p99 of TTFT, TPOT and E2E latency, ms (the y axes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CurveLatency {
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    pub tpot_p99_ms: Option<f64>,
    pub e2el_p50_ms: Option<f64>,
    pub e2el_p99_ms: Option<f64>,
}

impl CurveLatency {
    /// (p50, p99) of `ttft`, `tpot` or `e2el`.
    pub fn of(&self, latency: &str) -> (Option<f64>, Option<f64>) {
        match latency {
            "ttft" => (self.ttft_p50_ms, self.ttft_p99_ms),
            "tpot" => (self.tpot_p50_ms, self.tpot_p99_ms),
            _ => (self.e2el_p50_ms, self.e2el_p99_ms),
        }
    }
}

/// One probe of a search, as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CurveProbe {
    /// The search's load point label (`search=rate`).
    pub point: String,
    pub trial: u32,
    pub over: SearchOver,
    /// The rate (req/s) or concurrency probed.
    pub value: f64,
    pub passed: bool,
    pub good_fraction: Option<f64>,
    /// Requests dispatched per second (client side).
    pub achieved_rate: Option<f64>,
    /// Achieved request throughput, req/s (the x axis).
    pub request_throughput: Option<f64>,
    pub output_throughput: Option<f64>,
    #[serde(flatten)]
    pub latency: CurveLatency,
}

/// One trial's search at one load point: what it found and to what resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialSearch {
    pub trial: u32,
    pub over: SearchOver,
    pub slo: Slo,
    /// A probe passed when at least this fraction of its requests was good.
    pub attainment: Option<f64>,
    pub outcome: SearchOutcome,
    /// The highest passing value; none when even the bottom of the range failed.
    pub found: Option<f64>,
    /// The bracket: highest pass and lowest fail (none when the top of the range passed).
    pub bracket_low: Option<f64>,
    pub bracket_high: Option<f64>,
    pub range: Option<(f64, f64)>,
    pub probes: usize,
    pub passed: usize,
}

/// One sentence per commit, load point and comparison with a search: how much more load the
/// candidate sustains within the SLOs, with its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchStatement {
    pub commit: String,
    pub point: String,
    pub kind: ComparisonKind,
    pub candidate: String,
    pub reference: String,
    /// `slo_max_request_rate` or `slo_max_concurrency`.
    pub metric: String,
    pub diff: MetricDiff,
    /// Trials (of either arm, `arm#trial`) whose search passed the top of its range: their
    /// value is a lower bound.
    pub lower_bounds: Vec<String>,
    /// Trials whose search failed even the bottom of the range: no value.
    pub below_range: Vec<String>,
    /// The difference (%) the brackets leave open: candidate's lowest possible answer against
    /// the reference's highest, and the reverse (medians over trials); none with an open bracket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution_pct: Option<(f64, f64)>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PointReport {
    /// Load point label, e.g. `conc=16`.
    pub point: String,
    /// One cell per arm, in manifest order.
    pub arms: Vec<ArmCell>,
    /// Human vs baseline, each agent vs baseline, each agent vs human — where both sides
    /// have measurements.
    pub comparisons: Vec<Comparison>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Every trial measured.
    Measured,
    /// Some trials measured, some failed; statistics use the measured ones.
    Partial,
    /// Trials ran and all failed.
    Failed,
    /// The arm does not exist for this commit (e.g. no patch file).
    Absent,
    /// No trial recorded yet (campaign not finished).
    NotRun,
}

impl CellStatus {
    pub fn has_data(self) -> bool {
        matches!(self, CellStatus::Measured | CellStatus::Partial)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArmCell {
    pub arm: String,
    pub role: ArmRole,
    pub status: CellStatus,
    pub trials: Vec<TrialEntry>,
    /// Per metric key: median over trials with its interval, and the per-trial values.
    pub metrics: BTreeMap<String, MetricCell>,
    /// Per-request distributions pooled over trials (`ttft_ms`, `tpot_ms`, `e2el_ms`), when the
    /// results carry per-request arrays.
    pub distributions: BTreeMap<String, Distribution>,
    /// Why the arm is absent, when it is.
    pub absent_reason: Option<String>,
    /// Per measured trial with a search (load points `search=...`): its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<TrialSearch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialEntry {
    pub trial: u32,
    pub status: TrialStatus,
    pub timestamp: String,
    pub duration_s: f64,
    #[schemars(with = "Option<serde_json::Value>")]
    pub failure: Option<Failure>,
    pub result_path: Option<PathBuf>,
    /// The cluster node the trial ran on (Slurm backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    Ok,
    Failed,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricCell {
    #[serde(flatten)]
    pub summary: Summary,
    /// The value of every measured trial (trial number, value).
    pub values: Vec<TrialValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialValue {
    pub trial: u32,
    pub value: f64,
}

/// Quantiles of per-request samples (milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Distribution {
    pub n: usize,
    pub min: f64,
    pub p5: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonKind {
    HumanVsBaseline,
    AgentVsBaseline,
    AgentVsHuman,
}

impl ComparisonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonKind::HumanVsBaseline => "human vs baseline",
            ComparisonKind::AgentVsBaseline => "agent vs baseline",
            ComparisonKind::AgentVsHuman => "agent vs human",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Comparison {
    pub kind: ComparisonKind,
    /// The arm being judged.
    pub candidate: String,
    /// The arm it is judged against.
    pub reference: String,
    /// Per metric key (only metrics measured in both arms).
    pub metrics: BTreeMap<String, MetricDiff>,
    /// Whether the candidate generated what the reference did (`docs/report.md`, "Output
    /// equivalence"); `not_checked` in reports of older versions.
    #[serde(default)]
    pub outputs: OutputsCheck,
}

/// The output-equivalence finding of one comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputsCheck {
    pub finding: OutputsFinding,
    /// One line: `identical`, `within floor: …`, `diverged: N/M requests, first at token k`,
    /// `not checked: <reason>`.
    pub summary: String,
    /// `[check.outputs] mode`, which decided `marks_verdict`.
    pub mode: OutputsMode,
    /// What `first_divergence` and `mean_common_prefix` count: tokens of the commit's tokenizer,
    /// or characters where none is known.
    pub unit: DivergenceUnit,
    /// Requests compared: prompts answered by both arms, over the rounds both measured.
    pub compared: usize,
    /// Of those, with identical text.
    pub identical: usize,
    pub identical_fraction: Option<f64>,
    /// The shortest common prefix of a diverged request: where the earliest divergence is.
    pub first_divergence: Option<usize>,
    /// Mean common-prefix length of the diverged requests.
    pub mean_common_prefix: Option<f64>,
    /// The reference compared with itself across its trials (none with one trial).
    pub floor: Option<OutputsFloor>,
    /// The speed verdict carries `⚠ outputs diverged` (per `mode`).
    pub marks_verdict: bool,
    /// The earliest divergent requests, texts cut around where they part.
    pub examples: Vec<DivergenceExample>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputsFinding {
    /// Every compared request generated the same text.
    Identical,
    /// Some differ, but no more than the reference differs from itself across trials.
    WithinFloor,
    /// More requests differ than the reference's own floor explains (or it has none).
    Diverged,
    /// Not compared: mode `off`, no generated texts recorded, or nothing to pair.
    #[default]
    NotChecked,
}

impl OutputsFinding {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputsFinding::Identical => "identical",
            OutputsFinding::WithinFloor => "within_floor",
            OutputsFinding::Diverged => "diverged",
            OutputsFinding::NotChecked => "not_checked",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceUnit {
    Tokens,
    #[default]
    Chars,
}

impl DivergenceUnit {
    pub fn singular(self) -> &'static str {
        match self {
            DivergenceUnit::Tokens => "token",
            DivergenceUnit::Chars => "character",
        }
    }
}

/// The nondeterminism floor: an arm's later trials against its first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputsFloor {
    pub arm: String,
    pub compared: usize,
    pub identical: usize,
    pub identical_fraction: f64,
    pub first_divergence: Option<usize>,
}

/// A divergent request: its prompt (dataset index), round, where it parts (in `unit`), and the
/// two texts around the first differing character (raw here; renderers escape them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DivergenceExample {
    pub prompt: usize,
    pub trial: u32,
    pub at: usize,
    pub reference: String,
    pub candidate: String,
}

/// A difference in percent, **positive = better** (higher throughput or lower latency).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricDiff {
    pub diff_pct: f64,
    pub ci_low_pct: Option<f64>,
    pub ci_high_pct: Option<f64>,
    pub method: Method,
    pub n_reference: usize,
    pub n_candidate: usize,
    /// Rounds paired (paired method only).
    pub n_pairs: usize,
    /// Degrees of freedom of the t-interval.
    pub df: Option<f64>,
    /// From the interval: `faster`, `slower`, `within_noise`, or `no_noise_estimate`.
    pub verdict: Verdict,
    /// The seed's rule on `diff_pct`, when `settings.threshold_pct` is set.
    pub seed_verdict: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CampaignSummary {
    /// The metric the summary tables and tallies use (`output_throughput`).
    pub headline_metric: String,
    pub trials: TrialCounts,
    /// Wins / matches / losses / failures per (comparison kind, candidate arm) on the headline.
    pub tallies: Vec<Tally>,
    /// Commit × point × agent where human and agent were both measured (the seed's main table).
    pub complete: Vec<CompleteRow>,
    /// Human measured, agent failed.
    pub agent_failures: Vec<AgentFailureRow>,
    /// Failed trials grouped by class and cause.
    pub failure_breakdown: Vec<FailureCategory>,
    /// Campaign-wide error control over the headline comparisons (per-comparison verdicts stay
    /// in `comparisons`).
    pub fdr: FdrSummary,
    /// Trials each headline comparison needs to detect `change_pct` with `power`.
    pub planning: Planning,
    /// The searches' comparisons in words (one per commit, search point and comparison).
    #[serde(default)]
    pub statements: Vec<SearchStatement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FdrSummary {
    /// `Benjamini–Hochberg`.
    pub method: String,
    /// The false discovery rate controlled, 1 − confidence (e.g. 0.05).
    pub level: f64,
    /// Headline comparisons with an interval (single-trial ones have no p-value).
    pub comparisons: usize,
    /// Comparisons whose adjusted p-value (q) is at most `level`.
    pub discoveries: usize,
    /// Comparisons called faster/slower by their own interval, without the adjustment.
    pub per_comparison_discoveries: usize,
    pub rows: Vec<FdrRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FdrRow {
    pub commit: String,
    pub point: String,
    pub kind: ComparisonKind,
    pub candidate: String,
    pub reference: String,
    pub diff_pct: f64,
    /// Two-sided p-value of the comparison's t-test (log scale).
    pub p_value: f64,
    /// Benjamini–Hochberg adjusted p-value over the campaign.
    pub q_value: f64,
    /// The per-comparison verdict (from the interval).
    pub verdict: Verdict,
    /// The verdict after campaign-wide FDR control.
    pub fdr_verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Planning {
    /// The change to detect, percent (e.g. 3).
    pub change_pct: f64,
    /// The power to detect it with (e.g. 0.8).
    pub power: f64,
    /// Comparisons with fewer trials than they need.
    pub under_powered: usize,
    pub rows: Vec<PowerRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PowerRow {
    pub commit: String,
    pub point: String,
    pub kind: ComparisonKind,
    pub candidate: String,
    /// Standard deviation of one round's candidate/reference log ratio, in percent.
    pub sd_pct: f64,
    /// Rounds (or trials per arm) measured.
    pub trials: usize,
    /// Rounds needed; `None` when beyond 10,000.
    pub needed: Option<usize>,
    pub under_powered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Quality {
    /// Windows shorter than this are flagged (seconds).
    pub min_window_s: f64,
    /// Trials with fewer completed requests are flagged (p99 would be the maximum).
    pub min_completed: u64,
    /// Every measured trial: where and when it ran.
    pub trials: Vec<TrialQuality>,
    /// Per (commit, point, arm): trial spread and trials per GPU.
    pub arms: Vec<ArmQuality>,
    /// Per GPU: its effect on the headline, where the placement lets it be estimated.
    pub gpu_effects: Vec<GpuEffect>,
    /// Trials measured while another measurement ran.
    pub overlapping_trials: usize,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialQuality {
    pub commit: String,
    pub point: String,
    pub arm: String,
    pub trial: u32,
    /// GPU UUIDs (or `gpu<index>` for declared GPUs); empty for results of older versions.
    pub gpus: Vec<String>,
    pub isolate: Option<String>,
    /// Window start, seconds since the Unix epoch.
    pub window_start: Option<f64>,
    pub window_s: Option<f64>,
    pub completed: Option<u64>,
    /// Other trials whose windows overlap this one (its own round's arms under `paired`, which
    /// overlap by design, are not counted).
    pub overlaps: usize,
    /// The first few of them, as `commit/arm#trial`.
    pub overlapping: Vec<String>,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArmQuality {
    pub commit: String,
    pub point: String,
    pub arm: String,
    pub n: usize,
    /// Coefficient of variation of the headline across trials.
    pub cv: Option<f64>,
    /// Trials per GPU.
    pub gpus: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuEffect {
    pub gpu: String,
    /// Trials that contributed (from arms that ran on more than one GPU).
    pub trials: usize,
    /// Headline on this GPU vs its arm's mean, percent.
    pub effect_pct: f64,
    pub ci_low_pct: Option<f64>,
    pub ci_high_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialCounts {
    pub ok: usize,
    pub failed: usize,
    pub absent: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tally {
    pub kind: ComparisonKind,
    pub candidate: String,
    pub reference: String,
    /// Verdict `faster` (a win).
    pub faster: usize,
    /// Verdict `within_noise` (a match).
    pub within_noise: usize,
    /// Verdict `slower` (a loss).
    pub slower: usize,
    /// Single-trial comparisons: shown, not judged.
    pub no_noise_estimate: usize,
    /// Reference measured, candidate failed (a failure of the candidate).
    pub candidate_failed: usize,
    /// Reference failed or absent: nothing to compare with.
    pub not_comparable: usize,
    /// The seed's rule on the same comparisons (`faster`, `within_noise`, `slower`), if asked.
    pub seed: Option<SeedTally>,
    /// Comparisons whose verdict is marked because the outputs diverged.
    #[serde(default)]
    pub outputs_diverged: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SeedTally {
    pub faster: usize,
    pub within_noise: usize,
    pub slower: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompleteRow {
    pub commit: String,
    pub model: String,
    pub point: String,
    pub agent: String,
    /// Medians of the headline metric; baseline may be missing (failed or not run).
    pub baseline: Option<f64>,
    pub human: f64,
    pub agent_value: f64,
    pub human_vs_baseline: Option<MetricDiff>,
    pub agent_vs_baseline: Option<MetricDiff>,
    pub agent_vs_human: MetricDiff,
    /// The agent's outputs diverged from the baseline's or the human's (a marked verdict).
    #[serde(default)]
    pub outputs_diverged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentFailureRow {
    pub commit: String,
    pub point: String,
    pub agent: String,
    /// Human median of the headline metric.
    pub human: f64,
    #[schemars(with = "String")]
    pub class: FailureClass,
    #[schemars(with = "Option<String>")]
    pub cause: Option<CrashCause>,
    pub message: String,
    pub sample_log_line: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FailureCategory {
    /// `class` or `class/cause`, e.g. `crashed/cuda_out_of_memory`.
    pub category: String,
    #[schemars(with = "String")]
    pub class: FailureClass,
    #[schemars(with = "Option<String>")]
    pub cause: Option<CrashCause>,
    /// Failed trial records in this category.
    pub count: usize,
    /// Distinct commits (short hashes), in campaign order.
    pub commits: Vec<String>,
    /// Distinct arms, in manifest order.
    pub arms: Vec<String>,
    /// The first telling log line seen in this category.
    pub sample_log_line: Option<String>,
    /// The first failure message in this category.
    pub sample_message: String,
}
