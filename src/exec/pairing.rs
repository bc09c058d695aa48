//! `isolate = "paired"`: the sessions of one measurement group (a commit's trial, or the part
//! of it that fits on the GPUs at once) start each load point's measurement at the same moment,
//! so drift and neighbours hit every arm alike.
//!
//! Each group expects, per load point, the sessions that will measure it. A session that ends
//! early (start, readiness or warm-up failed, interrupted) leaves, so its partners never wait
//! for it.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// (group, point) → sessions still expected / arrived.
#[derive(Debug, Default)]
pub struct Rendezvous {
    state: Mutex<HashMap<(usize, usize), Gate>>,
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct Gate {
    expected: usize,
    arrived: usize,
}

impl Rendezvous {
    /// Declares that one more session of `group` will measure `point`.
    pub fn expect(&self, group: usize, point: usize) {
        let mut state = self.state.lock().expect("rendezvous lock");
        state.entry((group, point)).or_default().expected += 1;
    }

    /// A session that expected to measure `point` will not (it failed or was interrupted).
    pub fn leave(&self, group: usize, point: usize) {
        {
            let mut state = self.state.lock().expect("rendezvous lock");
            if let Some(g) = state.get_mut(&(group, point)) {
                g.expected = g.expected.saturating_sub(1);
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until every session expected at (`group`, `point`) has arrived (or left).
    pub async fn arrive(&self, group: usize, point: usize) {
        {
            let mut state = self.state.lock().expect("rendezvous lock");
            state.entry((group, point)).or_default().arrived += 1;
        }
        self.changed.notify_waiters();
        loop {
            // Registered before the check, so a notification between the two is not lost.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock().expect("rendezvous lock");
                let g = state.get(&(group, point)).copied().unwrap_or_default();
                if g.arrived >= g.expected {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// Leaves every point a session still owed its group when it is dropped (early returns).
pub struct Owed<'a> {
    pub rendezvous: &'a Rendezvous,
    pub group: usize,
    pub points: Vec<usize>,
}

impl Owed<'_> {
    /// The session is about to measure `point`: no longer owed.
    pub fn take(&mut self, point: usize) {
        self.points.retain(|p| *p != point);
    }
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        for &p in &self.points {
            self.rendezvous.leave(self.group, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn partners_start_together_and_a_leaver_releases_them() {
        let r = Arc::new(Rendezvous::default());
        for _ in 0..3 {
            r.expect(7, 0);
        }
        let t0 = Instant::now();
        let early = {
            let r = r.clone();
            tokio::spawn(async move {
                r.arrive(7, 0).await;
                t0.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!early.is_finished(), "released before its partners arrived");
        let r2 = r.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r2.arrive(7, 0).await;
        });
        // The third partner never comes: it leaves (its server failed to start).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!early.is_finished());
        r.leave(7, 0);
        let waited = tokio::time::timeout(Duration::from_secs(2), early)
            .await
            .expect("released once the last partner left")
            .unwrap();
        assert!(waited >= Duration::from_millis(340), "{waited:?}");
        late.await.unwrap();
    }
}
