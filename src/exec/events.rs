//! One stream of execution events. Every step reports what happens through [`Stream::emit`]
//! (via `Ctx::emit` and its helpers `started`/`done`/`failed`, `note`, `begin`); the subscribers
//! take what they need: the journal (durable, first: a transition it could not record reaches no
//! one else, and its error stops the run), the live view (terminal lines or `--events jsonl`),
//! and the [`Tally`] the end-of-run summary and `apply_finished` are read from.

use super::apply::ApplySummary;
use super::context::JournalError;
use super::live::Live;
use crate::failure::Failure;
use crate::manifest::pipeline::StepKind;
use crate::state::{Entry, Event, Journal};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What happens during a run, in the order it happens.
#[derive(Debug, Clone, Copy)]
pub enum ExecEvent<'a> {
    /// A node transition (`started`, `done`, `failed`): the journal entry itself, and the
    /// node's step (`None` for an address the DAG does not know).
    Node {
        step: Option<StepKind>,
        entry: &'a Entry,
    },
    /// A permanent human line: the plan, warnings, errors.
    Note(&'a str),
    /// One active node's line appears (`status`: what it is doing).
    ActivityBegin {
        id: u64,
        label: &'a str,
        status: &'a str,
    },
    /// The active node's status changes (shown on a terminal only).
    ActivityStatus { id: u64, status: &'a str },
    /// The active node's line ends: with a permanent line, or (`None`: its handle was dropped
    /// without an end) silently.
    ActivityEnd { id: u64, status: Option<&'a str> },
    /// The run's progress: measurements done of `total`, servers running, measurements failed.
    Totals {
        done: u64,
        total: u64,
        running: usize,
        failed: u64,
    },
    /// The run is over: with its summary, or (`None`) ended by an error.
    Finished(Option<&'a ApplySummary>),
}

/// A non-durable subscriber: sees every event after the journal has it.
pub trait Observer: Send + Sync {
    fn observe(&self, event: &ExecEvent<'_>);
}

impl Observer for Live {
    fn observe(&self, event: &ExecEvent<'_>) {
        self.event(event);
    }
}

/// A poisoned lock only means another task panicked while holding it; the data (a journal
/// handle, a map) is still sound, and one panicked session must not take down the others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The stream: the journal first, then the observers (the live view and the tally).
pub struct Stream {
    /// Attached once the run has a journal to write (`apply`'s setup notes come before it).
    journal: Option<Mutex<Journal>>,
    observers: Vec<Arc<dyn Observer>>,
    tally: Arc<Tally>,
    next_activity: AtomicU64,
}

impl Stream {
    /// A stream to the live view and a fresh tally of run `run` (no journal yet).
    pub fn new(live: Live, run: &str) -> Stream {
        let tally = Arc::new(Tally::new(run));
        Stream {
            journal: None,
            observers: vec![Arc::new(live), tally.clone()],
            tally,
            next_activity: AtomicU64::new(1),
        }
    }

    /// From here on, node transitions are journaled (and fsynced) before anyone sees them.
    pub fn with_journal(mut self, journal: Journal) -> Stream {
        self.journal = Some(Mutex::new(journal));
        self
    }

    /// Delivers `event`. A node transition is appended to the journal first; if that fails the
    /// error is returned and no observer sees the transition (it did not happen as far as the
    /// state directory knows).
    pub fn emit(&self, event: &ExecEvent<'_>) -> Result<(), JournalError> {
        if let ExecEvent::Node { entry, .. } = event {
            let Some(journal) = &self.journal else {
                return Err(JournalError(std::io::Error::other(
                    "no journal is open for this run",
                )));
            };
            lock(journal).append(entry)?;
        }
        self.tell(event);
        Ok(())
    }

    /// Every event but a node transition cannot fail: it only reaches the observers.
    fn tell(&self, event: &ExecEvent<'_>) {
        for o in &self.observers {
            o.observe(event);
        }
    }

    /// A permanent human line.
    pub fn note(&self, msg: &str) {
        self.tell(&ExecEvent::Note(msg));
    }

    /// One active node's line, until [`Activity::end`].
    pub fn begin(&self, label: &str, status: &str) -> Activity<'_> {
        let id = self.next_activity.fetch_add(1, Ordering::Relaxed);
        self.tell(&ExecEvent::ActivityBegin { id, label, status });
        Activity {
            stream: self,
            id,
            ended: false,
        }
    }

    /// The run is over (`None`: ended by an error): the last event.
    pub fn finish(&self, summary: Option<&ApplySummary>) {
        self.tell(&ExecEvent::Finished(summary));
    }

    /// What this run's node transitions added up to so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// The handle of one active node's line; its updates go through the stream.
pub struct Activity<'a> {
    stream: &'a Stream,
    id: u64,
    ended: bool,
}

impl Activity<'_> {
    /// Replaces the activity's status text (terminal only; plain output stays quiet).
    pub fn set(&self, status: String) {
        self.stream.tell(&ExecEvent::ActivityStatus {
            id: self.id,
            status: &status,
        });
    }

    /// Ends the line with a permanent one (`label: status (duration)`).
    pub fn end(mut self, status: &str) {
        self.ended = true;
        self.stream.tell(&ExecEvent::ActivityEnd {
            id: self.id,
            status: Some(status),
        });
    }
}

impl Drop for Activity<'_> {
    /// A handle dropped without an end (an early return) still takes its line off the screen.
    fn drop(&mut self) {
        if !self.ended {
            self.stream.tell(&ExecEvent::ActivityEnd {
                id: self.id,
                status: None,
            });
        }
    }
}

/// The summary's subscriber: measurements done, and the latest transition of each measure.
pub struct Tally {
    run: String,
    inner: Mutex<TallyInner>,
}

#[derive(Default)]
struct TallyInner {
    measured: usize,
    /// Address → the latest transition of that measure, with its run and failure.
    latest: HashMap<String, (Event, String, Option<Failure>)>,
}

impl Tally {
    fn new(run: &str) -> Tally {
        Tally {
            run: run.to_string(),
            inner: Mutex::new(TallyInner::default()),
        }
    }

    /// Measurements recorded done through the stream (a Slurm job of an earlier apply that
    /// this one followed included).
    pub fn measured(&self) -> usize {
        lock(&self.inner).measured
    }

    /// Measures whose latest transition is a failure (a resubmitted one is not, once it
    /// started again).
    pub fn failed(&self) -> usize {
        lock(&self.inner)
            .latest
            .values()
            .filter(|(e, _, _)| *e == Event::Failed)
            .count()
    }

    /// The failure of `address`, if this run's latest transition of that measure is one.
    pub fn failure_of(&self, address: &str) -> Option<Failure> {
        match lock(&self.inner).latest.get(address) {
            Some((Event::Failed, run, failure)) if *run == self.run => failure.clone(),
            _ => None,
        }
    }
}

impl Observer for Tally {
    fn observe(&self, event: &ExecEvent<'_>) {
        let ExecEvent::Node {
            step: Some(StepKind::LoadMeasure),
            entry,
        } = event
        else {
            return;
        };
        let mut inner = lock(&self.inner);
        if entry.event == Event::Done {
            inner.measured += 1;
        }
        inner.latest.insert(
            entry.addr.clone(),
            (entry.event, entry.run.clone(), entry.failure.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureClass;

    fn entry(addr: &str, event: Event, run: &str) -> Entry {
        Entry {
            v: crate::state::STATE_VERSION,
            t: crate::util::now_rfc3339(),
            addr: addr.into(),
            event,
            key: "k".into(),
            attempt: 1,
            components: Default::default(),
            outputs: Default::default(),
            failure: (event == Event::Failed).then(|| Failure::new(FailureClass::Crashed, "gone")),
            run: run.into(),
            info: None,
        }
    }

    /// The tally counts measures only, lets the latest transition win, and names as failed only
    /// what this run failed.
    #[test]
    fn the_tally_follows_the_latest_transition_of_each_measure() {
        let dir = tempfile::tempdir().unwrap();
        let stream =
            Stream::new(Live::new(true), "r1").with_journal(Journal::open(dir.path()).unwrap());
        let measure = Some(StepKind::LoadMeasure);
        let node = |step, e: &Entry| stream.emit(&ExecEvent::Node { step, entry: e }).unwrap();
        node(measure, &entry("m1", Event::Started, "r1"));
        node(measure, &entry("m1", Event::Done, "r1"));
        node(measure, &entry("m2", Event::Failed, "r1"));
        node(measure, &entry("m3", Event::Failed, "r0"));
        node(
            Some(StepKind::ServerStart),
            &entry("s", Event::Failed, "r1"),
        );
        let t = stream.tally();
        assert_eq!((t.measured(), t.failed()), (1, 2));
        assert!(t.failure_of("m2").is_some());
        assert!(t.failure_of("m3").is_none(), "another run's failure");
        assert!(t.failure_of("s").is_none(), "not a measure");
        // A failed measure started again (a resubmission) no longer counts as failed.
        node(measure, &entry("m2", Event::Started, "r1"));
        assert_eq!(t.failed(), 1);
        // Everything emitted was journaled, in order.
        let journal = std::fs::read_to_string(dir.path().join("journal.jsonl")).unwrap();
        assert_eq!(journal.lines().count(), 6);
    }

    /// Without a journal no transition is delivered: nothing may be seen that is not recorded.
    #[test]
    fn a_transition_without_a_journal_is_an_error_and_reaches_no_one() {
        let stream = Stream::new(Live::new(true), "r1");
        let e = entry("m1", Event::Done, "r1");
        let r = stream.emit(&ExecEvent::Node {
            step: Some(StepKind::LoadMeasure),
            entry: &e,
        });
        assert!(r.is_err());
        assert_eq!(stream.tally().measured(), 0);
    }
}
