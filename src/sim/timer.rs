//! A high-resolution timer for the simulator's schedule.
//!
//! Tokio's timer works in whole milliseconds and fires on the first tick after a deadline, so a
//! 5 ms sleep takes ~6.2 ms on average: a systematic error the simulator's users would measure
//! as "server latency". One thread per server instead sleeps on a condition variable (a futex
//! with a nanosecond timeout, i.e. a kernel hrtimer) until the earliest deadline and wakes the
//! waiting streams; the error drops to the thread wake-up latency (~0.1 ms on an idle machine).
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct State {
    queue: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stopped: bool,
}

pub(crate) struct HiResTimer {
    state: Mutex<State>,
    changed: Condvar,
}

impl HiResTimer {
    /// Starts the timer thread; it ends after [`HiResTimer::stop`].
    pub(crate) fn start() -> std::io::Result<Arc<HiResTimer>> {
        let timer = Arc::new(HiResTimer {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = timer.clone();
        std::thread::Builder::new()
            .name("isobench-sim-timer".into())
            .spawn(move || worker.run())?;
        Ok(timer)
    }

    /// Wakes `waker` at `at`. Returns false (and registers nothing) once the timer is stopped:
    /// the caller should then treat the deadline as reached.
    pub(crate) fn wake_at(&self, at: Instant, waker: &Waker) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.stopped {
            return false;
        }
        let is_earliest = state.queue.peek().is_none_or(|Reverse(head)| at < head.at);
        state.seq += 1;
        let seq = state.seq;
        state.queue.push(Reverse(Entry {
            at,
            seq,
            waker: waker.clone(),
        }));
        drop(state);
        if is_earliest {
            self.changed.notify_one();
        }
        true
    }

    pub(crate) fn stop(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.stopped = true;
        // Wake everything still waiting so no task hangs on a dead timer.
        for Reverse(entry) in state.queue.drain() {
            entry.waker.wake();
        }
        drop(state);
        self.changed.notify_one();
    }

    /// A future that completes at `at`.
    pub(crate) fn sleep_until(self: &Arc<Self>, at: Instant) -> HiResSleep {
        HiResSleep {
            timer: self.clone(),
            at,
        }
    }

    fn run(&self) {
        let mut due: Vec<Waker> = Vec::with_capacity(256);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            while state
                .queue
                .peek()
                .is_some_and(|Reverse(head)| head.at <= now)
            {
                if let Some(Reverse(entry)) = state.queue.pop() {
                    due.push(entry.waker);
                }
            }
            if !due.is_empty() {
                drop(state);
                due.drain(..).for_each(Waker::wake);
                state = self
                    .state
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state = match state.queue.peek() {
                Some(Reverse(head)) => {
                    let wait = head.at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        }
    }
}

pub(crate) struct HiResSleep {
    timer: Arc<HiResTimer>,
    at: Instant,
}

impl Future for HiResSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at || !self.timer.wake_at(self.at, cx.waker()) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_in_order_and_not_early() {
        let timer = HiResTimer::start().unwrap();
        let start = Instant::now();
        let mut lateness = Vec::new();
        for ms in [3u64, 1, 2] {
            let at = start + Duration::from_millis(ms) * 5;
            timer.sleep_until(at).await;
            let now = Instant::now();
            assert!(now >= at, "woke early");
            lateness.push(now - at);
        }
        // Even on a loaded CI machine, far better than tokio's whole-millisecond rounding on
        // average; a single wake-up may be late when the machine is busy.
        let mean = lateness.iter().sum::<Duration>() / lateness.len() as u32;
        assert!(mean < Duration::from_millis(20), "mean lateness {mean:?}");
        timer.stop();
        // After stop, sleeps resolve at once instead of hanging.
        tokio::time::timeout(
            Duration::from_secs(5),
            timer.sleep_until(Instant::now() + Duration::from_secs(3600)),
        )
        .await
        .expect("a stopped timer must not hang");
    }
}
