//! Self-audit: is the client itself distorting what it measures?
//!
//! Three independent signals: requests released later than scheduled (open loop), the tokio
//! runtime's scheduling delay sampled by a probe task during the run (a busy client timestamps
//! late), and the client's CPU time (getrusage of the whole process).
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record::RequestRecord;
use super::stats::percentile_sorted;

/// Thresholds beyond which a warning is attached to the result.
const MAX_DISPATCH_LAG_P99_MS: f64 = 5.0;
const MIN_ACHIEVED_RATE_FRACTION: f64 = 0.98;
const MAX_SCHEDULER_DELAY_P99_MS: f64 = 2.0;
/// One stall this long can shift a request's timestamps by as much.
const MAX_TICK_LATENESS_MS: f64 = 10.0;
const MAX_CPU_UTILIZATION: f64 = 0.9;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LagSummary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
}

impl LagSummary {
    pub fn of_seconds(values: impl IntoIterator<Item = f64>) -> LagSummary {
        let mut ms: Vec<f64> = values.into_iter().map(|v| v * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        LagSummary {
            p50_ms: percentile_sorted(&ms, 50.0),
            p99_ms: percentile_sorted(&ms, 99.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
            samples: ms.len(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SelfAudit {
    /// Released − scheduled, per request (open loop; zero by construction with rate inf).
    pub dispatch_lag: LagSummary,
    /// Sent − released: waiting for a concurrency slot (by design, not a client fault).
    pub queue_wait: LagSummary,
    /// Requested requests/s (None with rate inf).
    pub requested_rate: Option<f64>,
    /// Released requests / time of the last release (comparable to the requested rate).
    pub achieved_rate: Option<f64>,
    /// How late a probe task got to run after yielding, sampled every 5 ms during the run.
    pub scheduler_delay: LagSummary,
    /// How late the probe's 5 ms ticks fired (≈1 ms is tokio's timer granularity; more means
    /// the process was not running, e.g. on an oversubscribed machine).
    pub tick_lateness: LagSummary,
    /// User + system CPU of the whole client process during the run.
    pub client_cpu_s: f64,
    pub client_cpu_per_1000_events_ms: f64,
    /// CPU seconds / (wall seconds · available cores).
    pub client_cpu_utilization: f64,
    pub available_cores: usize,
    pub events: u64,
    pub warnings: Vec<String>,
}

/// Process CPU time (user + system) so far.
pub(crate) fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Samples the runtime's responsiveness until stopped, every 5 ms: how long a task waits to run
/// again after yielding (a busy runtime), and how late a 5 ms tick fires against its absolute
/// schedule (the process not being scheduled at all, e.g. on an oversubscribed machine; this
/// includes tokio's ~1 ms timer granularity).
pub(crate) struct SchedulerProbe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ProbeSamples>,
}

#[derive(Default)]
pub(crate) struct ProbeSamples {
    pub yield_delays_s: Vec<f64>,
    pub tick_lateness_s: Vec<f64>,
}

impl SchedulerProbe {
    pub(crate) fn start() -> SchedulerProbe {
        const TICK: Duration = Duration::from_millis(5);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = ProbeSamples {
                yield_delays_s: Vec::with_capacity(4096),
                tick_lateness_s: Vec::with_capacity(4096),
            };
            let mut next_tick = Instant::now() + TICK;
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next_tick).await;
                let woke = Instant::now();
                samples
                    .tick_lateness_s
                    .push((woke - next_tick).as_secs_f64());
                next_tick = (next_tick + TICK).max(woke);
                tokio::task::yield_now().await;
                samples.yield_delays_s.push(woke.elapsed().as_secs_f64());
            }
            samples
        });
        SchedulerProbe { stop, task }
    }

    pub(crate) async fn finish(self) -> ProbeSamples {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

pub(crate) struct AuditInputs<'a> {
    pub records: &'a [RequestRecord],
    pub requested_rate: f64,
    pub probe: ProbeSamples,
    pub cpu: Duration,
    pub wall_s: f64,
}

pub(crate) fn audit(inputs: AuditInputs<'_>) -> SelfAudit {
    let records = inputs.records;
    let open_loop = inputs.requested_rate.is_finite();
    let dispatch_lag = LagSummary::of_seconds(records.iter().filter_map(|r| {
        r.released_at_s
            .map(|released| (released - r.scheduled_at_s).max(0.0))
    }));
    let queue_wait = LagSummary::of_seconds(
        records
            .iter()
            .filter(|r| r.sent_at_s.is_some())
            .map(|r| r.queue_time_s()),
    );
    let (requested_rate, achieved_rate) = if open_loop {
        let released: Vec<f64> = records.iter().filter_map(|r| r.released_at_s).collect();
        let last = released.iter().copied().fold(0.0, f64::max);
        let achieved = (last > 0.0).then(|| released.len() as f64 / last);
        (Some(inputs.requested_rate), achieved)
    } else {
        (None, None)
    };
    let scheduler_delay = LagSummary::of_seconds(inputs.probe.yield_delays_s);
    let tick_lateness = LagSummary::of_seconds(inputs.probe.tick_lateness_s);
    let events: u64 = records.iter().map(|r| r.event_times_s.len() as u64).sum();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu_s = inputs.cpu.as_secs_f64();
    let utilization = if inputs.wall_s > 0.0 {
        cpu_s / (inputs.wall_s * cores as f64)
    } else {
        0.0
    };

    let mut warnings = Vec::new();
    if open_loop && dispatch_lag.p99_ms > MAX_DISPATCH_LAG_P99_MS {
        warnings.push(format!(
            "requests were released late: p99 {:.1} ms after their scheduled time (limit {MAX_DISPATCH_LAG_P99_MS} ms)",
            dispatch_lag.p99_ms
        ));
    }
    if let (Some(requested), Some(achieved)) = (requested_rate, achieved_rate)
        && achieved < requested * MIN_ACHIEVED_RATE_FRACTION
    {
        warnings.push(format!(
            "achieved request rate {achieved:.2}/s is below the requested {requested:.2}/s"
        ));
    }
    if scheduler_delay.p99_ms > MAX_SCHEDULER_DELAY_P99_MS {
        warnings.push(format!(
            "the client's runtime was busy (scheduling delay p99 {:.1} ms): timestamps may be late by that much",
            scheduler_delay.p99_ms
        ));
    }
    if tick_lateness.max_ms > MAX_TICK_LATENESS_MS {
        warnings.push(format!(
            "the client process was not running for up to {:.1} ms at a time (p99 {:.1} ms): the machine may be \
             oversubscribed; timestamps may be late by that much",
            tick_lateness.max_ms, tick_lateness.p99_ms
        ));
    }
    if utilization > MAX_CPU_UTILIZATION {
        warnings.push(format!(
            "the client process used {:.0}% of {cores} core(s): it may be limiting the measurement",
            utilization * 100.0
        ));
    }
    SelfAudit {
        dispatch_lag,
        queue_wait,
        requested_rate,
        achieved_rate,
        scheduler_delay,
        tick_lateness,
        client_cpu_s: cpu_s,
        client_cpu_per_1000_events_ms: if events > 0 {
            cpu_s * 1000.0 * 1000.0 / events as f64
        } else {
            0.0
        },
        client_cpu_utilization: utilization,
        available_cores: cores,
        events,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(index: usize, scheduled: f64, released: f64) -> RequestRecord {
        RequestRecord {
            index,
            scheduled_at_s: scheduled,
            released_at_s: Some(released),
            sent_at_s: Some(released),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn late_releases_and_low_rate_are_flagged() {
        // 4 requests scheduled 0.25 s apart at 4/s, each released 50 ms late.
        let records: Vec<_> = (0..4)
            .map(|i| released(i, 0.25 * (i + 1) as f64, 0.25 * (i + 1) as f64 + 0.05))
            .collect();
        let a = audit(AuditInputs {
            records: &records,
            requested_rate: 4.0,
            probe: ProbeSamples {
                yield_delays_s: vec![0.0001; 10],
                tick_lateness_s: vec![0.001; 10],
            },
            cpu: Duration::from_millis(10),
            wall_s: 1.0,
        });
        assert!((a.dispatch_lag.p50_ms - 50.0).abs() < 1e-6);
        assert!((a.achieved_rate.unwrap() - 4.0 / 1.05).abs() < 1e-9);
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
        assert!(a.warnings[0].contains("late") && a.warnings[1].contains("rate"));
    }

    #[test]
    fn on_time_closed_loop_run_has_no_warnings() {
        let records: Vec<_> = (0..4).map(|i| released(i, 0.0, 0.0)).collect();
        let a = audit(AuditInputs {
            records: &records,
            requested_rate: f64::INFINITY,
            probe: ProbeSamples {
                yield_delays_s: vec![0.0001; 10],
                tick_lateness_s: vec![0.001; 10],
            },
            cpu: Duration::from_millis(10),
            wall_s: 1.0,
        });
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert_eq!((a.requested_rate, a.achieved_rate), (None, None));
    }

    #[test]
    fn a_process_that_was_not_running_is_flagged() {
        let records: Vec<_> = (0..4).map(|i| released(i, 0.0, 0.0)).collect();
        let mut lateness = vec![0.001; 99];
        lateness.push(0.040);
        let a = audit(AuditInputs {
            records: &records,
            requested_rate: f64::INFINITY,
            probe: ProbeSamples {
                yield_delays_s: vec![0.0001; 100],
                tick_lateness_s: lateness.clone(),
            },
            cpu: Duration::from_millis(10),
            wall_s: 1.0,
        });
        assert_eq!(a.tick_lateness.max_ms, 40.0);
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(
            a.warnings[0].contains("not running for up to 40.0 ms"),
            "{:?}",
            a.warnings
        );
    }

    #[test]
    fn cpu_time_advances_with_work() {
        let before = process_cpu_time();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() > before);
    }
}
