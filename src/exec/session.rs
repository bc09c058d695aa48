//! One server session: start → ready → warmup → measure (each pending load point) → stop.
//! The server is stopped on every path: success, failure, timeout and cancellation.

use super::context::{Ctx, JournalError};
use super::events::Activity;
use crate::failure::{CrashCause, Failure, FailureClass};
use crate::loadgen::search::{Bisection, ProbeSummary, Search, SearchSummary};
use crate::loadgen::{
    self, BenchError, BenchEvent, BenchPlan, ClientConfig, Dataset, LoadClient, MeasuredRun,
    RunConfig, WarmupPlan,
};
use crate::manifest::model::{Commit, CommitArm, EXE_PLACEHOLDER, Isolate, PORT_PLACEHOLDER};
use crate::manifest::pipeline::StepKind;
use crate::runtime::{GpuMode, Runtime, ServerHandle, ServerSource, ServerSpec};
use petgraph::graph::NodeIndex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a session's server comes from, once pulls and patches are done.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    pub source: ServerSource,
    /// Extra environment (e.g. `PYTHONPATH` for a patched tree).
    pub env: BTreeMap<String, String>,
    /// Content identity (image digest / tree path), recorded with results.
    pub digest: String,
}

/// What one measure step ran: a fixed load point, or a search's probes.
enum Measured {
    Point(Box<MeasuredRun>),
    Search(SearchRun),
}

/// A search's probes, in the order they ran, and its summary.
struct SearchRun {
    summary: SearchSummary,
    probes: Vec<MeasuredRun>,
    /// The probe whose metrics the step records: the highest that passed, else the first.
    chosen: usize,
    duration_s: f64,
}

impl Measured {
    /// The run whose metrics are recorded.
    fn main(&self) -> &MeasuredRun {
        match self {
            Measured::Point(run) => run,
            Measured::Search(s) => &s.probes[s.chosen],
        }
    }

    /// Why the step failed, if it did. A search fails only when no probe passed and the first
    /// one failed outright (every request failed, timed out): a search that merely finds the
    /// SLOs missed even at the low end has found something.
    fn failure(&self) -> Option<Failure> {
        match self {
            Measured::Point(run) => run.result.failure(),
            Measured::Search(s) => s
                .summary
                .found
                .is_none()
                .then(|| s.probes[s.chosen].result.failure())
                .flatten(),
        }
    }
}

/// The prompts of one commit: the measured set and a disjoint warm-up set.
#[derive(Debug)]
pub struct Datasets {
    pub measure: Dataset,
    pub warmup: Dataset,
}

#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub measured: usize,
    pub failed: usize,
    pub interrupted: bool,
    /// The task panicked before its server was recorded (e.g. inside the runtime's `start`):
    /// a server may run that only a sweep by campaign label finds.
    pub unrecorded_server: bool,
}

fn node_of(ctx: &Ctx, session: usize, kind: StepKind) -> Option<NodeIndex> {
    ctx.dag.sessions[session]
        .nodes
        .iter()
        .copied()
        .find(|n| ctx.dag.graph[*n].kind == kind)
}

/// Builds the runtime's server spec for a session.
fn server_spec(
    ctx: &Ctx,
    commit: &Commit,
    arm: &CommitArm,
    source: &ResolvedSource,
    gpus: &[u32],
    log_path: PathBuf,
    address: &str,
) -> ServerSpec {
    let port = match commit.server.runtime {
        crate::manifest::types::RuntimeKind::Docker => commit.server.port,
        crate::manifest::types::RuntimeKind::Process => crate::runtime::free_port(),
    };
    let argv = arm
        .argv
        .iter()
        .map(|a| {
            a.replace(PORT_PLACEHOLDER, &port.to_string())
                .replace(EXE_PLACEHOLDER, &ctx.exe)
        })
        .collect();
    let mut env = arm.env.clone();
    env.extend(source.env.clone());
    resolve_env_refs(&mut env, |name| std::env::var(name).ok());
    // State id + run + host: what cleanup selects by (the campaign label is for people).
    let mut labels = ctx.owner.labels();
    labels.insert(
        crate::runtime::labels::CAMPAIGN.to_string(),
        ctx.campaign.name.clone(),
    );
    labels.insert(
        crate::runtime::labels::ADDRESS.to_string(),
        address.to_string(),
    );
    let name: String = format!(
        "isobench-{}-{}-{}",
        ctx.campaign.name,
        crate::state::slug(address),
        ctx.run_id
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
            c
        } else {
            '-'
        }
    })
    .collect();
    ServerSpec {
        name,
        labels,
        source: source.source.clone(),
        argv,
        env,
        gpus: gpus.to_vec(),
        gpu_mode: if ctx.gpu_env_only {
            GpuMode::EnvOnly
        } else {
            GpuMode::DeviceRequest
        },
        port,
        shm_size: commit.server.shm_size.map(|s| s as i64),
        ipc: commit.server.ipc.clone(),
        volumes: commit.server.volumes.clone(),
        log_path,
    }
}

/// `"${NAME}"` takes the value of `NAME` from isobench's own environment at start time, so
/// secrets (HF_TOKEN, ...) need not be written in manifests and never reach keys, plans or state.
fn resolve_env_refs(env: &mut BTreeMap<String, String>, lookup: impl Fn(&str) -> Option<String>) {
    for value in env.values_mut() {
        if let Some(name) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            *value = lookup(name).unwrap_or_default();
        }
    }
}

pub fn run_config(commit: &Commit, point: &crate::manifest::model::LoadPoint) -> RunConfig {
    let l = &commit.load;
    RunConfig {
        backend: match l.backend {
            crate::manifest::types::Backend::OpenAiChat => loadgen::Backend::OpenAiChat,
            crate::manifest::types::Backend::OpenAi => loadgen::Backend::OpenAi,
        },
        endpoint: l.endpoint.clone(),
        model: commit.model.served_name.clone(),
        max_concurrency: Some(point.concurrency as usize),
        request_rate: point.rate.as_f64(),
        burstiness: l.burstiness,
        ignore_eos: l.ignore_eos,
        temperature: l.temperature,
        run_timeout: l.timeout,
        seed: l.seed,
        timed: l.timed.map(|t| loadgen::TimedWindow {
            ramp_up: t.ramp_up,
            duration: t.duration,
        }),
        ..RunConfig::default()
    }
}

/// Marks every not-yet-finished step of the session failed with `failure` (they were blocked
/// by it), so the report shows each trial's cause.
fn fail_rest(ctx: &Ctx, nodes: &[NodeIndex], failure: &Failure) -> Result<usize, JournalError> {
    for &n in nodes {
        let mut f = failure.clone();
        if ctx.dag.graph[n].kind != StepKind::LoadMeasure {
            f.message = format!("not run: {}", failure.message);
        }
        ctx.failed(n, f)?;
    }
    Ok(nodes
        .iter()
        .filter(|n| ctx.dag.graph[**n].kind == StepKind::LoadMeasure)
        .count())
}

/// Classifies a server that exited, from its exit code and log tail.
async fn crash_failure(runtime: &Runtime, handle: &ServerHandle, during: &str) -> Option<Failure> {
    let code = runtime.exited(handle).await?;
    let tail = crate::runtime::read_log_tail(&handle.log_path, 16 * 1024);
    let cause = CrashCause::from_log(Some(code), &tail);
    Some(Failure {
        class: FailureClass::Crashed,
        cause: Some(cause),
        message: format!("server exited with code {code} {during}"),
        sample_log_line: CrashCause::sample_line(&tail),
        log_path: Some(handle.log_path.display().to_string()),
    })
}

/// Runs one session on `gpus`. Journal errors abort; everything else is recorded.
pub async fn run(
    ctx: Arc<Ctx>,
    session_index: usize,
    gpus: Vec<u32>,
    source: ResolvedSource,
    dataset: Arc<Datasets>,
) -> Result<SessionOutcome, JournalError> {
    let session = &ctx.dag.sessions[session_index];
    let commit = &ctx.campaign.commits[session.commit];
    let arm = &commit.arms[session.arm];
    let runtime = ctx
        .runtime(commit.server.runtime)
        .expect("runtime prepared for every pending session");
    let label = format!("{} {} #{}", commit.short, arm.name, session.trial);
    let start = node_of(&ctx, session_index, StepKind::ServerStart);
    let ready = node_of(&ctx, session_index, StepKind::ServerReady);
    let warmup = node_of(&ctx, session_index, StepKind::LoadWarmup);
    let stop = node_of(&ctx, session_index, StepKind::ServerStop);
    let measures: Vec<NodeIndex> = session
        .measures
        .iter()
        .copied()
        .filter(|m| ctx.plan.action(*m).executes())
        .collect();
    // Paired: whatever ends this session early, its partners stop waiting for it.
    let mut owed = ctx
        .pair_group
        .get(&session_index)
        .map(|&group| super::pairing::Owed {
            rendezvous: &ctx.rendezvous,
            group,
            points: measures.iter().filter_map(|&m| point_of(&ctx, m)).collect(),
        });
    let mut outcome = SessionOutcome::default();
    let Some(start) = start else {
        return Ok(outcome);
    };

    // start
    let activity = ctx.begin(
        &label,
        &format!(
            "starting on GPUs [{}]",
            gpus.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    ctx.started(start)?;
    let log_path = ctx
        .attempt_dir(start)
        .map_err(JournalError)?
        .join("server.log");
    let address = ctx.dag.graph[start].address.clone();
    let spec = server_spec(
        &ctx,
        commit,
        arm,
        &source,
        &gpus,
        log_path.clone(),
        &address,
    );
    let started = tokio::select! {
        r = runtime.start(&spec) => r,
        _ = ctx.cancelled_wait() => {
            outcome.interrupted = true;
            activity.end("interrupted before the server started");
            // A start cut short can leave a created container: remove exactly that one (by
            // name, state and run), never another run's or another state directory's.
            let _ = runtime.cleanup_cancelled_start(&ctx.owner, &spec).await;
            return Ok(outcome);
        }
    };
    let handle = match started {
        Ok(h) => h,
        Err(f) => {
            ctx.failed(start, f.clone())?;
            let rest: Vec<NodeIndex> = [ready, warmup]
                .into_iter()
                .flatten()
                .chain(measures.iter().copied())
                .chain(stop)
                .collect();
            outcome.failed = fail_rest(&ctx, &rest, &f)?;
            activity.end(&format!("failed to start: {f}"));
            return Ok(outcome);
        }
    };
    // From here on the server runs: it is recorded (so the scheduler can stop it should this
    // task panic) and everything, journal errors included, ends with the stop below.
    ctx.record_server(session_index, &handle);
    let body = async {
        ctx.done(start, &[], Some(serde_json::json!({"id": handle.id, "base_url": handle.base_url, "gpus": gpus, "server_log": ctx.rel(&log_path), "source": source.digest})))?;
        let server = OnServer {
            ctx: &ctx,
            runtime,
            handle: &handle,
            activity: &activity,
            commit,
            gpus: &gpus,
            dataset: &dataset,
        };
        session_body(&server, ready, warmup, &measures, &mut owed, &mut outcome).await
    }
    .await;
    drop(owed);
    // The stop happens even when its `started` cannot be journaled (disk full): a server left
    // running is worse than a stop the journal does not show.
    let stop_started = stop.map(|n| (n, ctx.started(n)));
    let stopped = runtime.stop(&handle, Duration::from_secs(10)).await;
    ctx.forget_server(session_index);
    let stop_result = match stop_started {
        Some((n, Ok(()))) => match stopped {
            Ok(()) => ctx.done(n, &[], None),
            Err(f) => ctx.failed(n, f),
        },
        Some((_, Err(e))) => Err(e),
        None => Ok(()),
    };
    if let Err(e) = body.and(stop_result) {
        activity.end(&format!("server stopped; {e}"));
        return Err(e);
    }
    let summary = if outcome.interrupted {
        "interrupted; server stopped".to_string()
    } else if outcome.failed > 0 {
        format!("{} measured, {} failed", outcome.measured, outcome.failed)
    } else {
        format!("{} measured", outcome.measured)
    };
    activity.end(&summary);
    Ok(outcome)
}

/// What the steps of a session share once its server runs.
struct OnServer<'a> {
    ctx: &'a Ctx,
    runtime: &'a Runtime,
    handle: &'a ServerHandle,
    activity: &'a Activity<'a>,
    commit: &'a Commit,
    gpus: &'a [u32],
    dataset: &'a Arc<Datasets>,
}

/// How often the server's gauges (KV-cache usage, running and waiting requests) are scraped
/// during a measurement: often enough for a mean over a window of tens of seconds, rarely
/// enough that the scrape (a few hundred lines of text) costs the server nothing measurable.
const TELEMETRY_SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// How often a measurement's live line is updated.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The session's steps while its server runs: ready → warm-up → each pending measurement. A
/// step that fails marks the rest failed; an interruption stops where it is. The caller stops
/// the server whatever this returns.
async fn session_body(
    server: &OnServer<'_>,
    ready: Option<NodeIndex>,
    warmup: Option<NodeIndex>,
    measures: &[NodeIndex],
    owed: &mut Option<super::pairing::Owed<'_>>,
    outcome: &mut SessionOutcome,
) -> Result<(), JournalError> {
    if let Some(ready) = ready
        && !server.ready(ready, warmup, measures, outcome).await?
    {
        return Ok(());
    }
    let Some(client) = server.client(warmup, measures, outcome)? else {
        return Ok(());
    };
    // warmup (opens the pool's connections, so the measurement does not pay for them)
    if let Some(warmup) = warmup
        && !server.warm_up(&client, warmup, measures, outcome).await?
    {
        return Ok(());
    }
    // measure each pending load point
    for (i, &m) in measures.iter().enumerate() {
        if !server
            .measure(&client, m, &measures[i + 1..], owed, outcome)
            .await?
        {
            return Ok(());
        }
    }
    Ok(())
}

impl OnServer<'_> {
    /// Waits for the server's readiness. `false`: the session ends here (interrupted, or not
    /// ready: the rest is marked failed).
    async fn ready(
        &self,
        ready: NodeIndex,
        warmup: Option<NodeIndex>,
        measures: &[NodeIndex],
        outcome: &mut SessionOutcome,
    ) -> Result<bool, JournalError> {
        let (ctx, commit) = (self.ctx, self.commit);
        self.activity.set("waiting for readiness".into());
        ctx.started(ready)?;
        let r = tokio::select! {
            r = self.runtime.wait_ready(self.handle, &commit.server.ready_path, commit.server.ready_timeout, commit.server.ready_interval) => r,
            _ = ctx.cancelled_wait() => { outcome.interrupted = true; return Ok(false); }
        };
        match r {
            Ok(after) => ctx.done(
                ready,
                &[],
                Some(serde_json::json!({"ready_after_s": after.as_secs_f64()})),
            )?,
            Err(f) => {
                ctx.failed(ready, f.clone())?;
                let rest: Vec<NodeIndex> =
                    warmup.into_iter().chain(measures.iter().copied()).collect();
                outcome.failed = fail_rest(ctx, &rest, &f)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The load client, with one connection per request of the most concurrent point. `None`:
    /// it cannot be made (the rest is marked failed).
    fn client(
        &self,
        warmup: Option<NodeIndex>,
        measures: &[NodeIndex],
        outcome: &mut SessionOutcome,
    ) -> Result<Option<LoadClient>, JournalError> {
        let commit = self.commit;
        let pool = commit
            .load
            .points
            .iter()
            .map(|p| p.concurrency as usize)
            .max()
            .unwrap_or(1);
        match LoadClient::new(ClientConfig {
            base_url: self.handle.base_url.clone(),
            pool_size: pool,
            request_timeout: commit.load.request_timeout,
        })
        .and_then(|c| match &commit.load.api_key_env {
            Some(name) => c.with_api_key_env(name),
            None => Ok(c),
        }) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                let f = e.to_failure();
                outcome.failed = fail_rest(
                    self.ctx,
                    &warmup
                        .into_iter()
                        .chain(measures.iter().copied())
                        .collect::<Vec<_>>(),
                    &f,
                )?;
                Ok(None)
            }
        }
    }

    /// The warm-up requests (not measured). `false`: the session ends here.
    async fn warm_up(
        &self,
        client: &LoadClient,
        warmup: NodeIndex,
        measures: &[NodeIndex],
        outcome: &mut SessionOutcome,
    ) -> Result<bool, JournalError> {
        let (ctx, commit) = (self.ctx, self.commit);
        self.activity
            .set(format!("warming up ({} requests)", commit.load.warmup));
        ctx.started(warmup)?;
        let point = commit.load.points.first().expect("at least one load point");
        let warmup_run = run_config(commit, point);
        let plan = BenchPlan {
            run: &warmup_run,
            ready_check: None,
            warmup: Some(WarmupPlan {
                dataset: &self.dataset.warmup,
                requests: commit.load.warmup as usize,
            }),
            measure: None,
            progress_every: PROGRESS_EVERY,
        };
        let w = tokio::select! {
            w = loadgen::run_benchmark(client, &plan, |_| {}) => w,
            _ = ctx.cancelled_wait() => { outcome.interrupted = true; return Ok(false); }
        };
        match w.map(|done| done.warmup.expect("the plan has a warm-up")) {
            Ok(summary) => ctx.done(warmup, &[], serde_json::to_value(&summary).ok())?,
            Err(e) => {
                let f = crash_failure(self.runtime, self.handle, "during warm-up")
                    .await
                    .unwrap_or_else(|| e.error.to_failure());
                ctx.failed(warmup, f.clone())?;
                outcome.failed = fail_rest(ctx, measures, &f)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Measures one load point once its turn comes, and records it. `false`: the session ends
    /// here (interrupted, or the server crashed: `rest` is marked failed).
    async fn measure(
        &self,
        client: &LoadClient,
        m: NodeIndex,
        rest: &[NodeIndex],
        owed: &mut Option<super::pairing::Owed<'_>>,
        outcome: &mut SessionOutcome,
    ) -> Result<bool, JournalError> {
        let ctx = self.ctx;
        let (_, point_index) = ctx.dag.graph[m]
            .target
            .point()
            .expect("a measure node targets a load point");
        let point = self.commit.load.points[point_index];
        let Some(_permit) = self.turn(point_index, owed).await else {
            outcome.interrupted = true;
            return Ok(false);
        };
        ctx.started(m)?;
        // The collectors span the measured run: started just before, stopped just after.
        let window = self.start_telemetry(m).await?;
        let measured = match &point.search {
            None => self
                .run_point(
                    client,
                    &run_config(self.commit, &point),
                    &self.dataset.measure,
                    &format!("measuring {}", point.label()),
                )
                .await
                .map(|r| r.map(|run| Measured::Point(Box::new(run)))),
            Some(search) => self
                .run_search(client, m, &point, search)
                .await
                .map(|r| r.map(Measured::Search)),
        };
        let Some(measured) = measured else {
            outcome.interrupted = true;
            return Ok(false);
        };
        let telemetry = window.finish().await;
        let failure = match &measured {
            Ok(run) => {
                match crash_failure(self.runtime, self.handle, "during the measurement").await {
                    Some(crash) => Some(crash),
                    None => run.failure(),
                }
            }
            Err(e) => Some(
                crash_failure(self.runtime, self.handle, "during the measurement")
                    .await
                    .unwrap_or_else(|| e.error.to_failure()),
            ),
        };
        match (failure, &measured) {
            (None, Ok(run)) => {
                self.record(m, &point, run, &telemetry)?;
                outcome.measured += 1;
            }
            (Some(f), _) => {
                let crashed = f.class == FailureClass::Crashed;
                ctx.failed(m, f.clone())?;
                outcome.failed += 1;
                if crashed {
                    // No server left to measure the remaining points with.
                    outcome.failed += fail_rest(ctx, rest, &f)?;
                    return Ok(false);
                }
            }
            (None, Err(_)) => unreachable!("an error always yields a failure"),
        }
        Ok(true)
    }

    /// Waits for the point's turn under the isolation policy: the one measurement slot
    /// (exclusive) or the paired arms (paired). The permit, if any, is held while measuring.
    /// `None`: interrupted while waiting.
    async fn turn<'s>(
        &'s self,
        point_index: usize,
        owed: &mut Option<super::pairing::Owed<'_>>,
    ) -> Option<Option<tokio::sync::SemaphorePermit<'s>>> {
        let ctx = self.ctx;
        let permit = match ctx.isolate {
            Isolate::Exclusive => {
                self.activity
                    .set("waiting for the measurement slot (isolate = exclusive)".into());
                tokio::select! {
                    p = ctx.measure_slot.acquire() => Some(p.expect("semaphore open")),
                    _ = ctx.cancelled_wait() => return None,
                }
            }
            Isolate::Paired | Isolate::None => None,
        };
        if let Some(owed) = owed.as_mut() {
            self.activity
                .set("waiting for the paired arms (isolate = paired)".into());
            owed.take(point_index);
            tokio::select! {
                _ = ctx.rendezvous.arrive(owed.group, point_index) => {}
                _ = ctx.cancelled_wait() => return None,
            }
        }
        Some(permit)
    }

    /// Starts the window's telemetry (server metrics, GPU samples, server CPU time); its raw
    /// series go to the measurement's attempt directory.
    async fn start_telemetry(
        &self,
        m: NodeIndex,
    ) -> Result<crate::telemetry::Window, JournalError> {
        let ctx = self.ctx;
        let dir = ctx.attempt_dir(m).map_err(JournalError)?;
        let metrics_url = self.commit.server.metrics_path.as_ref().map(|path| {
            format!(
                "{}/{}",
                self.handle.base_url.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        });
        Ok(
            crate::telemetry::Window::start(crate::telemetry::WindowConfig {
                metrics_url,
                scrape_every: TELEMETRY_SCRAPE_EVERY,
                gpus: self.gpus.to_vec(),
                gpu_hz: ctx.campaign.resources.telemetry_hz,
                cpu: crate::telemetry::host::CpuSource::of(self.runtime, self.handle),
                dir,
            })
            .await,
        )
    }

    /// Runs a search's probes, one after another on this server, until the bracket is closed
    /// (`loadgen::search`). `None`: interrupted.
    async fn run_search(
        &self,
        client: &LoadClient,
        m: NodeIndex,
        point: &crate::manifest::model::LoadPoint,
        search: &Search,
    ) -> Option<Result<SearchRun, BenchError>> {
        let base = run_config(self.commit, point);
        let dataset = self.dataset.measure.first(search.num_prompts as usize);
        let mut bisection = Bisection::new(*search);
        let mut probes: Vec<(f64, MeasuredRun)> = Vec::new();
        let started = std::time::Instant::now();
        let unit = search.over.unit();
        while let Some(value) = bisection.next() {
            let run = search.probe_config(&base, value);
            let status = format!(
                "searching: probe {} of at most {} at {value:.3} {unit}",
                probes.len() + 1,
                search.max_probes()
            );
            let measured = match self.run_point(client, &run, &dataset, &status).await? {
                Ok(measured) => measured,
                Err(e) => return Some(Err(e)),
            };
            let passed = search.passed(&measured.result).0;
            bisection.record(value, passed);
            self.ctx.note(&format!(
                "{} probe {value:.3} {unit}: {}",
                self.ctx.dag.graph[m].address,
                if passed { "SLOs hold" } else { "SLOs missed" }
            ));
            probes.push((value, measured));
        }
        let summaries = probes
            .iter()
            .map(|(v, m)| ProbeSummary::of(search, *v, &m.result))
            .collect();
        let summary = SearchSummary::new(search, &bisection, summaries);
        // The recorded metrics are those of the highest passing probe (of the first when none
        // passed): the server's figures at the load the search settled on.
        let chosen = probes
            .iter()
            .enumerate()
            .filter(|(_, (v, _))| Some(*v) == summary.found)
            .map(|(i, _)| i)
            .next()
            .unwrap_or(0);
        Some(Ok(SearchRun {
            summary,
            probes: probes.into_iter().map(|(_, m)| m).collect(),
            chosen,
            duration_s: started.elapsed().as_secs_f64(),
        }))
    }

    /// One measured run (a fixed point, or a search's probe) with a live progress line that
    /// starts with `status`. `None`: interrupted.
    async fn run_point(
        &self,
        client: &LoadClient,
        run: &RunConfig,
        dataset: &Dataset,
        status: &str,
    ) -> Option<Result<MeasuredRun, BenchError>> {
        let plan = BenchPlan {
            run,
            ready_check: None,
            warmup: None,
            measure: Some(dataset),
            progress_every: PROGRESS_EVERY,
        };
        let show = |event: BenchEvent<'_>| match event {
            BenchEvent::Measuring => self.activity.set(status.to_string()),
            BenchEvent::Progress { progress, elapsed } => {
                let secs = elapsed.as_secs_f64().max(1e-3);
                // A timed run's total is open (0).
                let of_total = match progress.total() {
                    0 => String::new(),
                    n => format!("/{n}"),
                };
                self.activity.set(format!(
                    "{status}: {}{of_total} requests, {:.0} tok/s",
                    progress.finished(),
                    progress.output_tokens() as f64 / secs
                ));
            }
            _ => {}
        };
        tokio::select! {
            r = loadgen::run_benchmark(client, &plan, show) => {
                Some(r.map(|done| done.measured.expect("the plan has a measured run")))
            }
            _ = self.ctx.cancelled_wait() => None,
        }
    }

    /// Writes `result.json` (the load generator's JSON plus isobench metadata) and journals
    /// the measurement done.
    fn record(
        &self,
        m: NodeIndex,
        point: &crate::manifest::model::LoadPoint,
        run: &Measured,
        telemetry: &crate::telemetry::WindowSummary,
    ) -> Result<(), JournalError> {
        let measured = run.main();
        let br = &measured.result;
        let (ctx, commit) = (self.ctx, self.commit);
        let dir = ctx.attempt_dir(m).map_err(JournalError)?;
        let node = &ctx.dag.graph[m];
        let (session, _) = node
            .target
            .point()
            .expect("a measure node targets a load point");
        let session = &ctx.dag.sessions[session];
        let arm = &commit.arms[session.arm];
        let metadata: Vec<(String, String)> = vec![
            ("address".into(), node.address.clone()),
            ("campaign".into(), ctx.campaign.name.clone()),
            ("commit".into(), commit.human.clone()),
            ("parent".into(), commit.parent.clone()),
            ("arm".into(), arm.name.clone()),
            ("trial".into(), session.trial.to_string()),
            ("point".into(), point.label()),
            ("model".into(), commit.model.hf.clone()),
            ("key".into(), node.key.hex()),
            ("run".into(), ctx.run_id.clone()),
        ];
        // The GPU each trial ran on (UUID where known), for the placement report.
        let gpu_labels: Vec<String> = self
            .gpus
            .iter()
            .map(|g| {
                ctx.gpu_ids
                    .get(g)
                    .cloned()
                    .unwrap_or_else(|| format!("gpu{g}"))
            })
            .collect();
        let path = dir.join("result.json");
        // The telemetry window spans every probe of a search: per-token figures and the
        // server/client TTFT check take all of them, not only the recorded one.
        let (output_tokens, client_ttft_ms) = match run {
            Measured::Point(_) => (br.metrics.total_output, br.metrics.ttft.mean),
            Measured::Search(search) => {
                let all = search.probes.iter().map(|p| &p.result.metrics);
                let tokens = all.clone().map(|m| m.total_output).sum();
                let completed: usize = all.clone().map(|m| m.completed).sum();
                let ttft_sum: f64 = all.map(|m| m.ttft.mean * m.completed as f64).sum();
                (tokens, ttft_sum / completed.max(1) as f64)
            }
        };
        let telemetry = telemetry.to_json(output_tokens, client_ttft_ms);
        let mut extra = vec![("telemetry", telemetry)];
        let mut outputs = vec![path.clone()];
        let (mut duration_s, mut window) = (
            measured.started.elapsed().as_secs_f64(),
            (measured.window_start, measured.window_end),
        );
        if let Measured::Search(search) = run {
            extra.push((
                "search",
                serde_json::to_value(&search.summary).expect("plain data serialises"),
            ));
            // Every probe's own result, per request, for whoever wants to check a verdict.
            for (i, probe) in search.probes.iter().enumerate() {
                let probe_path = dir.join(format!("probe-{}.json", i + 1));
                probe
                    .result
                    .save_with(&probe_path, true, &metadata, &[])
                    .map_err(JournalError)?;
                outputs.push(probe_path);
            }
            duration_s = search.duration_s;
            window = (
                search.probes[0].window_start,
                search.probes[search.probes.len() - 1].window_end,
            );
        }
        br.save_with(&path, true, &metadata, &extra)
            .map_err(JournalError)?;
        // `duration_s` feeds the report's trial durations and the seed files' `duration_s`.
        let info = crate::state::MeasureDoneInfo {
            output_throughput: br.metrics.output_throughput,
            completed: br.metrics.completed,
            failed: br.metrics.failed,
            duration_s,
            window_start: Some(window.0),
            window_end: Some(window.1),
            gpus: gpu_labels,
            isolate: Some(ctx.isolate.as_str().to_string()),
            measured_s: br.window.as_ref().map(|w| w.duration_s),
            prompts_reused: br.window.as_ref().map(|w| w.prompts_reused as u64),
        };
        let info = serde_json::to_value(info).expect("plain data serialises");
        ctx.done(m, &outputs, Some(info))?;
        Ok(())
    }
}

fn point_of(ctx: &Ctx, m: NodeIndex) -> Option<usize> {
    match ctx.dag.graph[m].target {
        crate::pipeline::expand::Target::Point { point, .. } => Some(point),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_are_filled_at_start() {
        let mut env = BTreeMap::from([
            ("HF_TOKEN".to_string(), "${MY_TOKEN}".to_string()),
            ("PLAIN".to_string(), "1".to_string()),
            ("UNSET".to_string(), "${NOPE}".to_string()),
        ]);
        resolve_env_refs(&mut env, |name| {
            (name == "MY_TOKEN").then(|| "hf_secret".to_string())
        });
        assert_eq!(env["HF_TOKEN"], "hf_secret");
        assert_eq!(env["PLAIN"], "1");
        assert_eq!(env["UNSET"], "");
    }
}
