//! The report's tables as plain data (headers, cells with a tone), built once and drawn by the
//! terminal, Markdown and HTML renderers, so a column changes in one place.
use super::{fmt_diff, fmt_num, fmt_pct, fmt_status, fmt_summary, fmt_verdict};
use crate::report::analysis::first_failure;
use crate::report::metric::{HEADLINE, metric};
use crate::report::model::{
    ArmCell, CellStatus, CommitReport, MetricDiff, MetricInfo, OutputsCheck, OutputsFinding,
    PointReport, Report, SearchOutcome,
};
use crate::report::stats::Verdict;

/// How a cell should look; each renderer maps tones to its means (ANSI colour, CSS class,
/// backticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Better (a `faster` verdict).
    Good,
    /// Worse, or a failure.
    Bad,
    /// A single trial: shown, not judged.
    Warn,
    /// Absent or not run.
    Dim,
    /// Literal text: a log line, an identifier.
    Code,
    /// Commit short hashes, comma-separated (HTML links them to their sections).
    Commits,
}

impl Tone {
    pub fn of_verdict(v: Verdict) -> Tone {
        match v {
            Verdict::Faster => Tone::Good,
            Verdict::Slower => Tone::Bad,
            Verdict::WithinNoise => Tone::Plain,
            Verdict::NoNoiseEstimate => Tone::Warn,
        }
    }

    /// `Good`/`Bad` for a non-zero count, else plain.
    fn count(n: usize, tone: Tone) -> Tone {
        if n > 0 { tone } else { Tone::Plain }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextCell {
    pub text: String,
    pub tone: Tone,
}

pub(super) fn plain(text: impl Into<String>) -> TextCell {
    TextCell {
        text: text.into(),
        tone: Tone::Plain,
    }
}

pub(super) fn toned(text: impl Into<String>, tone: Tone) -> TextCell {
    TextCell {
        text: text.into(),
        tone,
    }
}

fn diff_cell(d: Option<&MetricDiff>, text: impl Fn(&MetricDiff) -> String) -> TextCell {
    d.map(|d| toned(text(d), Tone::of_verdict(d.verdict)))
        .unwrap_or(plain("-"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    pub headers: Vec<String>,
    /// Right-aligned (numeric) columns.
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<TextCell>>,
}

impl TextTable {
    pub(super) fn new(headers: Vec<String>, numeric_cols: &[usize]) -> TextTable {
        let numeric = (0..headers.len())
            .map(|i| numeric_cols.contains(&i))
            .collect();
        TextTable {
            headers,
            numeric,
            rows: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, row: Vec<TextCell>) {
        debug_assert_eq!(
            row.len(),
            self.headers.len(),
            "row width matches the header"
        );
        self.rows.push(row);
    }
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The compact metrics that have data somewhere at this point (the per-point tables' columns).
pub fn point_metrics<'a>(report: &'a Report, point: &PointReport) -> Vec<&'a MetricInfo> {
    report
        .metrics
        .iter()
        .filter(|m| m.compact && point.arms.iter().any(|a| a.metrics.contains_key(&m.key)))
        .collect()
}

/// Why a cell has no (or not all) numbers: the first failure, or why the arm is absent.
pub fn cell_note(a: &ArmCell) -> String {
    match (a.status, first_failure(a)) {
        (CellStatus::Failed | CellStatus::Partial, Some(f)) => f.to_string(),
        (CellStatus::Absent, _) => a.absent_reason.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Arms of one load point: status, median [interval] per compact metric, and a note.
pub fn arms_table(report: &Report, point: &PointReport) -> TextTable {
    let metrics = point_metrics(report, point);
    let mut headers = strings(&["arm", "trials"]);
    headers.extend(metrics.iter().map(|m| format!("{} ({})", m.label, m.unit)));
    // The note goes last, so a long failure message does not widen the number columns.
    headers.push("note".into());
    let mut t = TextTable::new(headers, &[]);
    for a in &point.arms {
        let tone = match a.status {
            CellStatus::Failed => Tone::Bad,
            CellStatus::Partial => Tone::Warn,
            CellStatus::Absent | CellStatus::NotRun => Tone::Dim,
            CellStatus::Measured => Tone::Plain,
        };
        let mut row = vec![plain(&a.arm), toned(fmt_status(a), tone)];
        row.extend(metrics.iter().map(|m| {
            plain(
                a.metrics
                    .get(&m.key)
                    .map(|c| fmt_summary(&c.summary))
                    .unwrap_or("-".into()),
            )
        }));
        row.push(toned(cell_note(a), tone));
        t.push(row);
    }
    t
}

/// The telemetry figures of one load point's arms (median [interval]) that have data; no rows
/// when no arm has any (campaigns measured without telemetry).
pub fn telemetry_table(report: &Report, point: &PointReport) -> TextTable {
    let metrics: Vec<&MetricInfo> = report
        .metrics
        .iter()
        .filter(|m| m.telemetry && point.arms.iter().any(|a| a.metrics.contains_key(&m.key)))
        .collect();
    let mut headers = strings(&["arm"]);
    headers.extend(metrics.iter().map(|m| match m.unit.as_str() {
        "" => m.label.to_string(),
        unit => format!("{} ({unit})", m.label),
    }));
    let mut t = TextTable::new(headers, &[]);
    if metrics.is_empty() {
        return t;
    }
    for a in point.arms.iter().filter(|a| a.status.has_data()) {
        let mut row = vec![plain(&a.arm)];
        row.extend(metrics.iter().map(|m| {
            plain(
                a.metrics
                    .get(&m.key)
                    .map(|c| fmt_summary(&c.summary))
                    .unwrap_or("-".into()),
            )
        }));
        t.push(row);
    }
    t
}

/// Comparisons of one load point: the headline verdict (marked when the outputs diverged), the
/// outputs finding, then difference [interval] per metric.
pub fn comparisons_table(report: &Report, point: &PointReport) -> TextTable {
    let metrics = point_metrics(report, point);
    let mut headers = strings(&["comparison", "verdict", "outputs"]);
    headers.extend(metrics.iter().map(|m| m.label.to_string()));
    let mut t = TextTable::new(headers, &[]);
    for c in &point.comparisons {
        let marked = c.outputs.marks_verdict;
        let mut row = vec![
            plain(format!("{} vs {}", c.candidate, c.reference)),
            marked_cell(diff_cell(c.metrics.get(HEADLINE), fmt_verdict), marked),
            outputs_cell(&c.outputs),
        ];
        row.extend(
            metrics
                .iter()
                .map(|m| diff_cell(c.metrics.get(&m.key), fmt_diff)),
        );
        t.push(row);
    }
    t
}

/// A verdict cell with [`OUTPUTS_MARK`] appended (and the warning tone) when `marked`.
fn marked_cell(cell: TextCell, marked: bool) -> TextCell {
    if !marked {
        return cell;
    }
    toned(format!("{} {OUTPUTS_MARK}", cell.text), Tone::Warn)
}

/// What a verdict carries when the arm's outputs diverged from its reference's.
pub const OUTPUTS_MARK: &str = "⚠ outputs diverged";

fn outputs_cell(o: &OutputsCheck) -> TextCell {
    let tone = match o.finding {
        OutputsFinding::Identical | OutputsFinding::WithinFloor => Tone::Plain,
        OutputsFinding::Diverged if o.marks_verdict => Tone::Bad,
        OutputsFinding::Diverged => Tone::Warn,
        OutputsFinding::NotChecked => Tone::Dim,
    };
    let floor = o
        .floor
        .as_ref()
        .filter(|_| o.finding != OutputsFinding::WithinFloor)
        .map(|f| {
            format!(
                "; floor: {} vs itself {}/{} identical",
                f.arm, f.identical, f.compared
            )
        })
        .unwrap_or_default();
    toned(format!("{}{floor}", o.summary), tone)
}

/// Divergent texts of one load point: per comparison, its earliest divergent requests, the two
/// texts around where they part, escaped (quotes, `\n`, control characters) so they stay text.
pub fn outputs_examples_table(point: &PointReport) -> TextTable {
    let mut t = TextTable::new(
        strings(&[
            "comparison",
            "prompt",
            "trial",
            "diverges at",
            "reference",
            "candidate",
        ]),
        &[1, 2, 3],
    );
    for c in &point.comparisons {
        for e in &c.outputs.examples {
            t.push(vec![
                plain(format!("{} vs {}", c.candidate, c.reference)),
                plain(e.prompt.to_string()),
                plain(e.trial.to_string()),
                plain(format!("{} {}", c.outputs.unit.singular(), e.at)),
                toned(format!("{:?}", e.reference), Tone::Code),
                toned(format!("{:?}", e.candidate), Tone::Code),
            ]);
        }
    }
    t
}

/// Wins / matches / losses / failures per comparison (and the seed rule's, when asked).
pub fn tally_table(report: &Report) -> TextTable {
    let mut headers = strings(&[
        "comparison",
        "faster",
        "within noise",
        "slower",
        "no noise estimate",
        "candidate failed",
        "not comparable",
        "outputs diverged",
    ]);
    if let Some(t) = report.settings.threshold_pct {
        headers.push(format!("seed rule ±{t}% (faster/within/slower)"));
    }
    let mut table = TextTable::new(headers, &[1, 2, 3, 4, 5, 6, 7]);
    for t in &report.summary.tallies {
        let mut row = vec![
            plain(format!("{} vs {}", t.candidate, t.reference)),
            toned(t.faster.to_string(), Tone::count(t.faster, Tone::Good)),
            plain(t.within_noise.to_string()),
            toned(t.slower.to_string(), Tone::count(t.slower, Tone::Bad)),
            plain(t.no_noise_estimate.to_string()),
            toned(
                t.candidate_failed.to_string(),
                Tone::count(t.candidate_failed, Tone::Bad),
            ),
            plain(t.not_comparable.to_string()),
            toned(
                t.outputs_diverged.to_string(),
                Tone::count(t.outputs_diverged, Tone::Bad),
            ),
        ];
        if report.settings.threshold_pct.is_some() {
            let s = t.seed.clone().unwrap_or_default();
            row.push(plain(format!(
                "{}/{}/{}",
                s.faster, s.within_noise, s.slower
            )));
        }
        table.push(row);
    }
    table
}

/// The seed's main table: commit × point × agent where human and agent were both measured.
pub fn complete_table(report: &Report) -> TextTable {
    let unit = metric(&report.summary.headline_metric)
        .map(|m| m.unit)
        .unwrap_or("tok/s");
    let headers = vec![
        "commit".into(),
        "model".into(),
        "load".into(),
        "agent".into(),
        format!("baseline {unit}"),
        format!("human {unit}"),
        format!("agent {unit}"),
        "human vs baseline".into(),
        "agent vs baseline".into(),
        "agent vs human".into(),
        "verdict".into(),
    ];
    let mut t = TextTable::new(headers, &[4, 5, 6]);
    for r in &report.summary.complete {
        let pct = |d: &MetricDiff| fmt_pct(d.diff_pct);
        t.push(vec![
            toned(&r.commit, Tone::Commits),
            plain(&r.model),
            plain(&r.point),
            plain(&r.agent),
            plain(r.baseline.map(fmt_num).unwrap_or("-".into())),
            plain(fmt_num(r.human)),
            plain(fmt_num(r.agent_value)),
            diff_cell(r.human_vs_baseline.as_ref(), pct),
            diff_cell(r.agent_vs_baseline.as_ref(), pct),
            diff_cell(Some(&r.agent_vs_human), fmt_diff),
            marked_cell(
                diff_cell(Some(&r.agent_vs_human), fmt_verdict),
                r.outputs_diverged,
            ),
        ]);
    }
    t
}

/// Human measured, agent failed: with the failure and its most telling log line.
pub fn agent_failures_table(report: &Report) -> TextTable {
    let unit = metric(&report.summary.headline_metric)
        .map(|m| m.unit)
        .unwrap_or("tok/s");
    let headers = vec![
        "commit".into(),
        "load".into(),
        "agent".into(),
        format!("human {unit}"),
        "failure".into(),
        "message".into(),
        "log line".into(),
    ];
    let mut t = TextTable::new(headers, &[3]);
    for r in &report.summary.agent_failures {
        let class = match r.cause {
            Some(c) => format!("{} ({})", r.class, c.as_str()),
            None => r.class.to_string(),
        };
        t.push(vec![
            toned(&r.commit, Tone::Commits),
            plain(&r.point),
            plain(&r.agent),
            plain(fmt_num(r.human)),
            toned(class, Tone::Bad),
            plain(&r.message),
            r.sample_log_line
                .as_deref()
                .map(|l| toned(l, Tone::Code))
                .unwrap_or(plain("-")),
        ]);
    }
    t
}

/// Failed trials by category: count, where, and a sample.
pub fn failure_categories_table(report: &Report) -> TextTable {
    let mut t = TextTable::new(
        strings(&["category", "count", "commits", "arms", "sample"]),
        &[1],
    );
    for c in &report.summary.failure_breakdown {
        t.push(vec![
            toned(&c.category, Tone::Bad),
            plain(c.count.to_string()),
            toned(c.commits.join(", "), Tone::Commits),
            plain(c.arms.join(", ")),
            match &c.sample_log_line {
                Some(line) => toned(line, Tone::Code),
                None => plain(&c.sample_message),
            },
        ]);
    }
    t
}

/// Per commit and arm: the image and how it was had; failures first, then in campaign order.
pub fn images_table(report: &Report, failed_only: bool) -> TextTable {
    use crate::report::model::ImageStatus;
    let mut t = TextTable::new(strings(&["commit", "arm", "image", "how", "detail"]), &[]);
    let mut rows: Vec<_> = report
        .images
        .iter()
        .enumerate()
        .filter(|(_, r)| !failed_only || r.status == ImageStatus::Failed)
        .collect();
    rows.sort_by_key(|(i, r)| (r.status != ImageStatus::Failed, *i));
    for (_, r) in rows {
        let tone = match r.status {
            ImageStatus::Failed => Tone::Bad,
            ImageStatus::NotRun => Tone::Dim,
            _ => Tone::Plain,
        };
        t.push(vec![
            toned(&r.commit, Tone::Commits),
            plain(&r.arm),
            toned(&r.image, Tone::Code),
            toned(r.status.as_str(), tone),
            plain(r.detail.clone().unwrap_or_default()),
        ]);
    }
    t
}

/// What each trial's SLO search found at this point, with its bracket (the trial's resolution);
/// no rows when the point is not a search.
pub fn search_table(point: &PointReport) -> TextTable {
    let mut t = TextTable::new(
        strings(&[
            "arm",
            "trial",
            "over",
            "found",
            "bracket (pass, fail)",
            "probes passed",
            "outcome",
        ]),
        &[1, 3, 5],
    );
    for a in &point.arms {
        for s in &a.searches {
            let (found, tone) = match (s.found, s.outcome) {
                (None, _) => ("none".to_string(), Tone::Bad),
                (Some(v), SearchOutcome::AtRangeTop) => (format!("≥ {}", fmt_num(v)), Tone::Warn),
                (Some(v), _) => (fmt_num(v), Tone::Plain),
            };
            let end = |v: Option<f64>| v.map(fmt_num).unwrap_or("-".into());
            let outcome = match s.outcome {
                SearchOutcome::BelowRange => format!(
                    "below the range in trial {}{}",
                    s.trial,
                    s.range
                        .map(|r| format!(" (failed at {})", fmt_num(r.0)))
                        .unwrap_or_default()
                ),
                SearchOutcome::AtRangeTop => format!(
                    "top of the range passed: a lower bound{}",
                    s.range
                        .map(|r| format!(" (range up to {})", fmt_num(r.1)))
                        .unwrap_or_default()
                ),
                o => o.as_str().to_string(),
            };
            t.push(vec![
                plain(&a.arm),
                plain(s.trial.to_string()),
                plain(match s.over {
                    crate::report::model::SearchOver::Rate => "rate (req/s)",
                    crate::report::model::SearchOver::Concurrency => "concurrency",
                }),
                toned(found, tone),
                plain(format!("[{}, {}]", end(s.bracket_low), end(s.bracket_high))),
                plain(format!("{}/{}", s.passed, s.probes)),
                toned(outcome, tone),
            ]);
        }
    }
    t
}

/// The commit's searches in words (`summary.statements`), one line each.
pub fn statements(report: &Report, commit: &str) -> Vec<String> {
    report
        .summary
        .statements
        .iter()
        .filter(|s| s.commit == commit)
        .map(|s| s.text.clone())
        .collect()
}

/// A commit's throughput–latency curves as a table: per arm its fixed load points (medians over
/// trials) and every search probe; empty when the commit has no curve to draw.
pub fn curves_table(commit: &CommitReport) -> TextTable {
    let mut t = TextTable::new(
        strings(&[
            "arm", "load", "req/s", "tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
            "E2E p50", "E2E p99", "passed",
        ]),
        &[2, 3, 4, 5, 6, 7, 8, 9],
    );
    if !crate::report::curves::drawn(commit) {
        return t;
    }
    let num = |v: Option<f64>| plain(v.map(fmt_num).unwrap_or("-".into()));
    for c in &commit.curves {
        for p in &c.points {
            let l = &p.latency;
            t.push(vec![
                plain(&c.arm),
                plain(format!("{} ({} trials)", p.point, p.trials)),
                num(Some(p.request_throughput)),
                num(p.output_throughput),
                num(l.ttft_p50_ms),
                num(l.ttft_p99_ms),
                num(l.tpot_p50_ms),
                num(l.tpot_p99_ms),
                num(l.e2el_p50_ms),
                num(l.e2el_p99_ms),
                plain(
                    p.goodput_pct
                        .map(|g| format!("{} good", fmt_pct_plain(g)))
                        .unwrap_or("-".into()),
                ),
            ]);
        }
        for p in &c.probes {
            let l = &p.latency;
            let over = match p.over {
                crate::report::model::SearchOver::Rate => "rate",
                crate::report::model::SearchOver::Concurrency => "conc",
            };
            let good = p
                .good_fraction
                .map(|g| format!(" ({} good)", fmt_pct_plain(g * 100.0)))
                .unwrap_or_default();
            t.push(vec![
                plain(&c.arm),
                plain(format!("#{} probe {over}={}", p.trial, fmt_num(p.value))),
                num(p.request_throughput),
                num(p.output_throughput),
                num(l.ttft_p50_ms),
                num(l.ttft_p99_ms),
                num(l.tpot_p50_ms),
                num(l.tpot_p99_ms),
                num(l.e2el_p50_ms),
                num(l.e2el_p99_ms),
                if p.passed {
                    toned(format!("yes{good}"), Tone::Good)
                } else {
                    toned(format!("no{good}"), Tone::Bad)
                },
            ]);
        }
    }
    t
}

/// `97.5%` (no sign).
fn fmt_pct_plain(p: f64) -> String {
    format!("{p:.1}%")
}
