//! One benchmark against a running server, the way both `isobench bench` and a campaign session
//! run one: vLLM's single-prompt ready check, the warm-up requests, then the measured run with
//! periodic progress. Each stage is optional (a session's warm-up step and its measure steps are
//! separate journal nodes, each one call); the caller hears every stage through one callback and
//! renders it (vLLM's lines and bar for `bench`, the live view for a session).

use super::{BenchResult, Dataset, LoadClient, LoadgenError, Progress, RunConfig, WarmupSummary};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run, in order: ready check, warm-up, measured run.
#[derive(Debug, Clone, Copy)]
pub struct BenchPlan<'a> {
    /// The request settings of every stage.
    pub run: &'a RunConfig,
    /// vLLM's "initial test run": the measured dataset's first prompt until one request
    /// succeeds, at most this long.
    pub ready_check: Option<Duration>,
    /// Unmeasured requests before the measured run.
    pub warmup: Option<WarmupPlan<'a>>,
    /// The measured run's prompts; `None`: no measured run (a session's warm-up step).
    pub measure: Option<&'a Dataset>,
    /// How often the callback hears [`BenchEvent::Progress`] during the measured run (the
    /// first time one period after its start).
    pub progress_every: Duration,
}

/// The warm-up: `requests` prompts of `dataset` (cycled). Campaigns use prompts apart from the
/// measured ones, which the server's prefix cache would otherwise answer when measured.
#[derive(Debug, Clone, Copy)]
pub struct WarmupPlan<'a> {
    pub dataset: &'a Dataset,
    pub requests: usize,
}

/// What the callback hears, in order.
#[derive(Debug)]
pub enum BenchEvent<'a> {
    /// The ready check starts.
    ReadyCheck,
    /// A test request succeeded.
    Ready,
    /// The warm-up starts.
    WarmingUp { requests: usize },
    /// The warm-up ended (some of its requests may have failed).
    WarmedUp(&'a WarmupSummary),
    /// The measured run starts.
    Measuring,
    /// The measured run's counters, every [`BenchPlan::progress_every`].
    Progress {
        progress: &'a Progress,
        elapsed: Duration,
    },
}

/// Which stage an error ended the benchmark in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchStage {
    ReadyCheck,
    Warmup,
    Measure,
}

#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct BenchError {
    pub stage: BenchStage,
    pub error: LoadgenError,
}

/// What a benchmark did: each stage asked for, as it came back.
#[derive(Debug, Default)]
pub struct BenchRun {
    pub warmup: Option<WarmupSummary>,
    pub measured: Option<MeasuredRun>,
}

/// The measured run, with when it ran.
#[derive(Debug)]
pub struct MeasuredRun {
    pub result: BenchResult,
    /// When it started (a caller may take its duration later, e.g. when it is recorded).
    pub started: Instant,
    /// Its window in seconds since the Unix epoch: runs of different servers compare on one
    /// clock.
    pub window_start: f64,
    pub window_end: f64,
}

/// Runs `plan` with `client`, telling `on` each stage as it starts and ends. Dropping the
/// future (a cancelled session) stops it where it is.
pub async fn run_benchmark(
    client: &LoadClient,
    plan: &BenchPlan<'_>,
    mut on: impl FnMut(BenchEvent<'_>),
) -> Result<BenchRun, BenchError> {
    let mut out = BenchRun::default();
    if let Some(timeout) = plan.ready_check {
        let dataset = plan.measure.or(plan.warmup.map(|w| w.dataset));
        if let Some(dataset) = dataset {
            on(BenchEvent::ReadyCheck);
            client
                .wait_until_ready(dataset, plan.run, timeout)
                .await
                .map_err(|error| BenchError {
                    stage: BenchStage::ReadyCheck,
                    error,
                })?;
            on(BenchEvent::Ready);
        }
    }
    if let Some(w) = plan.warmup {
        on(BenchEvent::WarmingUp {
            requests: w.requests,
        });
        let summary = client
            .warmup(w.dataset, w.requests, plan.run)
            .await
            .map_err(|error| BenchError {
                stage: BenchStage::Warmup,
                error,
            })?;
        on(BenchEvent::WarmedUp(&summary));
        out.warmup = Some(summary);
    }
    if let Some(dataset) = plan.measure {
        on(BenchEvent::Measuring);
        out.measured = Some(measure(client, plan, dataset, &mut on).await?);
    }
    Ok(out)
}

/// The measured run, with the callback hearing its counters every period.
async fn measure(
    client: &LoadClient,
    plan: &BenchPlan<'_>,
    dataset: &Dataset,
    on: &mut impl FnMut(BenchEvent<'_>),
) -> Result<MeasuredRun, BenchError> {
    let progress = Arc::new(Progress::new());
    let window_start = unix_now();
    let started = Instant::now();
    let run = client.run(dataset, plan.run, Some(progress.clone()));
    tokio::pin!(run);
    let every = plan.progress_every.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = ticker.tick() => on(BenchEvent::Progress { progress: &progress, elapsed: started.elapsed() }),
        }
    };
    let window_end = unix_now();
    Ok(MeasuredRun {
        result: result.map_err(|error| BenchError {
            stage: BenchStage::Measure,
            error,
        })?,
        started,
        window_start,
        window_end,
    })
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
