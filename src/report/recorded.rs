//! Recorded results → the report's input: every measurement's metrics or failure, and every
//! absent arm, read from the journal and the attempt directories.
use super::input::{ArmInfo, CommitInfo, ReportInput, TrialMetrics, TrialOutcome, TrialRecord};
use super::model::{ImageRow, ImageStatus};
use crate::manifest::Campaign;
use crate::pipeline::expand::{Dag, Target};
use crate::state::{Event, State};

/// The report input of a campaign from its state directory, with the keys `apply` used (the
/// GPU model recorded in the state's inventory enters them).
pub fn load_report_input(campaign: &Campaign) -> std::io::Result<ReportInput> {
    let state = State::load(&campaign.state_dir)?;
    let dag = crate::plan::desired_dag(campaign, state.inventory.as_ref());
    Ok(report_input(campaign, &dag, &state, None))
}

/// The cluster node a session ran on, from its `start` entry (`info.slurm.node`, written by
/// the Slurm controller); `None` for sessions run on this host.
fn node_of(session: &crate::pipeline::expand::Session, dag: &Dag, state: &State) -> Option<String> {
    session
        .nodes
        .iter()
        .filter(|n| dag.graph[**n].kind == crate::manifest::pipeline::StepKind::ServerStart)
        .filter_map(|n| state.get(&dag.graph[*n].address))
        .filter_map(|e| {
            e.info
                .as_ref()?
                .get("slurm")?
                .get("node")?
                .as_str()
                .map(String::from)
        })
        .next()
}

/// Builds the report input from the state; `only` restricts it to one commit (for `compare`).
pub fn report_input(
    campaign: &Campaign,
    dag: &Dag,
    state: &State,
    only: Option<usize>,
) -> ReportInput {
    let mut trials = Vec::new();
    let started = started_times(state);
    for &session_index in dag
        .sessions
        .iter()
        .enumerate()
        .filter(|(_, s)| only.is_none_or(|c| s.commit == c))
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .iter()
    {
        let session = &dag.sessions[session_index];
        let commit = &campaign.commits[session.commit];
        let arm = &commit.arms[session.arm];
        let run_s = session_wall_s(dag, state, &started, &session.nodes);
        let image = match arm.source.root() {
            crate::manifest::model::ArmSource::Image { reference } => Some(reference.clone()),
            _ => None,
        };
        for &m in &session.measures {
            let node = &dag.graph[m];
            let Target::Point { point, .. } = node.target else {
                continue;
            };
            let Some(entry) = state.get(&node.address) else {
                continue;
            };
            // Only results of the current configuration count: an entry with another key is
            // a measurement of something else (a changed load, image or server).
            if entry.key != node.key.hex() {
                continue;
            }
            let mut audit_warnings = Vec::new();
            let outcome = match entry.event {
                Event::Done => {
                    let Some(path) = entry.outputs.keys().find(|p| p.ends_with("result.json"))
                    else {
                        continue;
                    };
                    match std::fs::read_to_string(state.dir.join(path))
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            audit_warnings = audit_warnings_of(&t);
                            TrialMetrics::from_json(&t).map_err(|e| e.to_string())
                        }) {
                        Ok(metrics) => TrialOutcome::Ok(Box::new(metrics)),
                        Err(e) => TrialOutcome::Failed(crate::failure::Failure::new(
                            crate::failure::FailureClass::Internal,
                            format!("result {path} unreadable: {e}"),
                        )),
                    }
                }
                Event::Failed => TrialOutcome::Failed(entry.failure.clone().unwrap_or_else(|| {
                    crate::failure::Failure::new(crate::failure::FailureClass::Internal, "failed")
                })),
                Event::Started => continue,
            };
            let duration_s = entry
                .info
                .as_ref()
                .and_then(|i| i.get("duration_s"))
                .and_then(|d| d.as_f64())
                .unwrap_or(0.0);
            trials.push(TrialRecord {
                commit: commit.short.clone(),
                arm: arm.name.clone(),
                trial: session.trial,
                point: commit.load.points[point].label(),
                outcome,
                timestamp: entry.t.clone(),
                duration_s,
                result_path: entry
                    .outputs
                    .keys()
                    .find(|p| p.ends_with("result.json"))
                    .map(|p| state.dir.join(p)),
                run_s,
                image: image.clone(),
                node: node_of(session, dag, state),
                measured: measure_info(entry.info.as_ref(), audit_warnings),
            });
        }
    }
    trials.extend(absent_trials(campaign, only));
    ReportInput {
        images: image_rows(campaign, dag, state, only),
        outputs: outputs_input(campaign, only),
        slos: campaign
            .commits
            .iter()
            .filter(|c| c.load.slo.is_set())
            .map(|c| (c.short.clone(), c.load.slo))
            .collect(),
        percentiles: percentiles_of(campaign),
        campaign: campaign.name.clone(),
        generated_at: crate::util::now_rfc3339(),
        confidence: campaign.compare.confidence,
        threshold_pct: campaign.compare.threshold_pct,
        commits: campaign
            .commits
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|c| c == *i))
            .map(|(_, c)| CommitInfo {
                short: c.short.clone(),
                human_full: c.human.clone(),
                parent: c.parent.clone(),
                model_hf: c.model.hf.clone(),
                subject: c.subject.clone(),
            })
            .collect(),
        arms: campaign
            .arms
            .iter()
            .map(|a| ArmInfo {
                name: a.name.clone(),
                role: a.role,
            })
            .collect(),
        trials,
    }
}

/// `[check.outputs]` and, per commit, the tokenizer its prompts were made with (found as the
/// executor finds it: the model's `tokenizer`, else one in its path or the Hugging Face cache).
fn outputs_input(campaign: &Campaign, only: Option<usize>) -> crate::report::input::OutputsInput {
    let tokenizers = campaign
        .commits
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|c| c == *i))
        .filter_map(|(_, c)| {
            let path = c
                .model
                .tokenizer
                .clone()
                .or_else(|| crate::loadgen::find_tokenizer(&c.model.path))
                .or_else(|| crate::loadgen::find_tokenizer(&c.model.hf))?;
            Some((c.short.clone(), path))
        })
        .collect();
    crate::report::input::OutputsInput {
        mode: campaign.compare.outputs,
        tokenizers,
    }
}

/// The time of the latest `started` event per address (the state keeps only the latest entry
/// per address, which for a finished step is its `done`).
fn started_times(state: &State) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let Ok(text) = std::fs::read_to_string(state.dir.join(crate::state::JOURNAL)) else {
        return out;
    };
    for line in text.lines() {
        if let Ok(e) = serde_json::from_str::<crate::state::Entry>(line)
            && e.event == Event::Started
        {
            out.insert(e.addr, e.t);
        }
    }
    out
}

/// A session's wall time, as the seed's `duration_s` (the whole `docker run`): from its first
/// step's start to its last step's end (normally `start` to `stop`). `None` when not recorded.
fn session_wall_s(
    dag: &Dag,
    state: &State,
    started: &std::collections::HashMap<String, String>,
    nodes: &[petgraph::graph::NodeIndex],
) -> Option<f64> {
    let parse = |t: &str| humantime::parse_rfc3339_weak(t).ok();
    let mut begin: Option<std::time::SystemTime> = None;
    let mut end: Option<std::time::SystemTime> = None;
    for &n in nodes {
        let addr = &dag.graph[n].address;
        if let Some(b) = started.get(addr).and_then(|t| parse(t)) {
            begin = Some(begin.map_or(b, |x| x.min(b)));
        }
        if let Some(e) = state
            .get(addr)
            .filter(|e| e.event != Event::Started)
            .and_then(|e| parse(&e.t))
        {
            end = Some(end.map_or(e, |x| x.max(e)));
        }
    }
    end?.duration_since(begin?).ok().map(|d| d.as_secs_f64())
}

/// The window, GPUs and policy `apply` recorded with a measurement (none before this existed).
fn measure_info(
    info: Option<&serde_json::Value>,
    audit_warnings: Vec<String>,
) -> Option<crate::report::input::MeasureInfo> {
    let info: crate::state::MeasureDoneInfo = serde_json::from_value(info?.clone()).ok()?;
    Some(crate::report::input::MeasureInfo {
        window_start: info.window_start?,
        window_end: info.window_end?,
        measured_s: info.measured_s,
        prompts_reused: info.prompts_reused,
        gpus: info.gpus,
        isolate: info.isolate,
        audit_warnings,
    })
}

/// `isobench.audit.warnings` of a result JSON: the load generator's own doubts about the run.
fn audit_warnings_of(text: &str) -> Vec<String> {
    #[derive(serde::Deserialize, Default)]
    struct Audit {
        #[serde(default)]
        warnings: Vec<String>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Block {
        #[serde(default)]
        audit: Audit,
    }
    #[derive(serde::Deserialize, Default)]
    struct Result {
        #[serde(default)]
        isobench: Block,
    }
    serde_json::from_str::<Result>(text)
        .map(|r| r.isobench.audit.warnings)
        .unwrap_or_default()
}

/// Per commit and arm, how its image was had, from the latest journal entry of the node that
/// makes it (pull or build; patch for derived arms).
fn image_rows(campaign: &Campaign, dag: &Dag, state: &State, only: Option<usize>) -> Vec<ImageRow> {
    use crate::manifest::model::ArmSource;
    let mut rows = Vec::new();
    for (ci, commit) in campaign.commits.iter().enumerate() {
        if only.is_some_and(|c| c != ci) {
            continue;
        }
        for (ai, arm) in commit.arms.iter().enumerate() {
            let Some(session) = dag.sessions.iter().find(|s| s.commit == ci && s.arm == ai) else {
                continue;
            };
            let (image, node) = match &arm.source {
                ArmSource::Patched(spec) => {
                    let file = spec
                        .patch_path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (
                        format!("{} + {file}", spec.base_arm),
                        dag.patches.get(&(ci, ai)).copied(),
                    )
                }
                _ => (
                    dag.images[session.image].label.clone(),
                    dag.pulls.get(session.image).copied(),
                ),
            };
            let image = image
                .strip_prefix("image=")
                .or_else(|| image.strip_prefix("path="))
                .unwrap_or(&image)
                .to_string();
            let entry = node.and_then(|n| state.get(&dag.graph[n].address));
            let (status, detail) = image_status(entry, matches!(arm.source, ArmSource::Patched(_)));
            rows.push(ImageRow {
                commit: commit.short.clone(),
                arm: arm.name.clone(),
                image,
                status,
                detail,
            });
        }
    }
    rows
}

fn image_status(
    entry: Option<&crate::state::Entry>,
    derived: bool,
) -> (ImageStatus, Option<String>) {
    let Some(entry) = entry else {
        return (ImageStatus::NotRun, None);
    };
    let info = entry.info.as_ref();
    match entry.event {
        Event::Started => (ImageStatus::NotRun, Some("interrupted".into())),
        Event::Failed => (
            ImageStatus::Failed,
            entry.failure.as_ref().map(|f| {
                let first = f.message.lines().next().unwrap_or_default();
                format!("{}: {first}", f.class)
            }),
        ),
        Event::Done if derived => (ImageStatus::Derived, None),
        Event::Done => {
            let seconds = info.and_then(|i| i.get("seconds")).and_then(|v| v.as_f64());
            match info.and_then(|i| i.get("outcome")).and_then(|v| v.as_str()) {
                Some("built") => (
                    ImageStatus::Built,
                    seconds.map(|s| format!("built in {s:.1} s")),
                ),
                Some("pulled") => (ImageStatus::Pulled, None),
                Some(_) => (ImageStatus::Present, None),
                // A pull node: `info.pulled` says whether it had to pull.
                None if info
                    .and_then(|i| i.get("pulled"))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false) =>
                {
                    (ImageStatus::Pulled, None)
                }
                None => (ImageStatus::Present, None),
            }
        }
    }
}

/// The percentiles to show: every commit's `load.percentiles`, merged (a report has one metric
/// catalogue).
fn percentiles_of(campaign: &Campaign) -> Vec<f64> {
    let mut all: Vec<f64> = campaign
        .commits
        .iter()
        .flat_map(|c| c.load.percentiles.iter().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    all
}

/// One `Absent` record per arm a commit does not have (e.g. no patch file), at its first point.
fn absent_trials(campaign: &Campaign, only: Option<usize>) -> Vec<TrialRecord> {
    let mut out = Vec::new();
    for (ci, commit) in campaign.commits.iter().enumerate() {
        if only.is_some_and(|c| c != ci) {
            continue;
        }
        for absent in &commit.absent {
            out.push(TrialRecord {
                commit: commit.short.clone(),
                arm: absent.arm.clone(),
                trial: 1,
                point: commit
                    .load
                    .points
                    .first()
                    .map(|p| p.label())
                    .unwrap_or_default(),
                outcome: TrialOutcome::Absent {
                    reason: absent.reason.clone(),
                },
                timestamp: String::new(),
                duration_s: 0.0,
                result_path: None,
                run_s: None,
                image: None,
                node: None,
                measured: None,
            });
        }
    }
    out
}
