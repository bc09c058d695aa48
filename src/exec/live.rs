//! What `apply` shows while it runs. On a terminal: one line per active node (pulling 43 % of
//! 12 GB, starting 35 s, measuring 61/100 requests at 2,310 tok/s) under a totals line with an
//! ETA. Elsewhere (CI, logs): plain timestamped lines, one per transition. With `--events
//! jsonl`, stdout also carries the journal's entries and the final `apply_finished`. It is one
//! subscriber of the run's event stream (`exec::events`).

use super::events::{ExecEvent, lock};
use crate::util::term::{printable, printable_line};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Live {
    tty: Option<MultiProgress>,
    totals: Option<ProgressBar>,
    started: Instant,
    lock: Mutex<()>,
    /// `apply --events jsonl`: every node transition as one JSON line on stdout.
    events: bool,
    /// The active nodes' lines, by activity id.
    active: Mutex<HashMap<u64, ActiveLine>>,
}

/// One active node's line.
struct ActiveLine {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Live {
    /// Terminal view when stderr is a terminal (and `plain` is not asked for).
    pub fn new(plain: bool) -> Live {
        let tty = (!plain && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        let totals = tty.as_ref().map(|mp| {
            let bar = mp.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:24}] {pos}/{len} measurements · {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix("apply");
            bar
        });
        Live {
            tty,
            totals,
            started: Instant::now(),
            lock: Mutex::new(()),
            events: false,
            active: Mutex::new(HashMap::new()),
        }
    }

    /// The event stream (`apply --events jsonl`): no live view; human lines go to stderr as
    /// plain timestamped lines, and stdout carries one JSON object per transition.
    pub fn events() -> Live {
        Live {
            events: true,
            ..Live::new(true)
        }
    }

    /// Shows one event of the run's stream (`exec::events`).
    pub fn event(&self, event: &ExecEvent<'_>) {
        match *event {
            ExecEvent::Node { entry, .. } => {
                // The very object the journal recorded (docs/events.md).
                if self.events {
                    self.json_line(entry);
                }
            }
            ExecEvent::Note(msg) => self.line(msg),
            ExecEvent::ActivityBegin { id, label, status } => self.begin(id, label, status),
            ExecEvent::ActivityStatus { id, status } => {
                if let Some(bar) = lock(&self.active).get(&id).and_then(|a| a.bar.as_ref()) {
                    bar.set_message(printable_line(status).into_owned());
                }
            }
            ExecEvent::ActivityEnd { id, status } => self.end(id, status),
            ExecEvent::Totals {
                done,
                total,
                running,
                failed,
            } => self.totals(done, total, running, failed),
            ExecEvent::Finished(summary) => {
                if let Some(t) = &self.totals {
                    t.finish_and_clear();
                }
                if let (true, Some(summary)) = (self.events, summary) {
                    // The stream's last object: how the run ended (the exit code follows it).
                    let failed: Vec<&str> = summary
                        .failed_nodes
                        .iter()
                        .map(|(a, _)| a.as_str())
                        .collect();
                    self.json_line(&serde_json::json!({"v": 1, "t": crate::util::now_rfc3339(), "event": "apply_finished", "measured": summary.measured, "failed": failed, "interrupted": summary.interrupted, "nothing_to_do": summary.nothing_to_do, "exit_code": summary.exit_code()}));
                }
            }
        }
    }

    /// One JSON object on stdout (`--events jsonl`).
    fn json_line(&self, value: &impl serde::Serialize) {
        let _g = self.lock.lock();
        if let Ok(line) = serde_json::to_string(value) {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the campaign: the journal has the record.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// A permanent line (above the live area on a terminal).
    fn line(&self, msg: &str) {
        // Lines quote server errors and log lines: no control character reaches the terminal.
        let msg = printable(msg);
        let _g = self.lock.lock();
        match &self.tty {
            Some(mp) => {
                let _ = mp.println(msg);
            }
            // Never `eprintln!`: it panics when stderr is a closed pipe (`apply 2>&1 | head`).
            None => crate::util::term::err_line(&format!("[{}] {msg}", clock())),
        }
    }

    /// Updates the totals line: measurements done, running sessions, ETA from the pace so far.
    fn totals(&self, done: u64, total: u64, running: usize, failed: u64) {
        if let Some(t) = &self.totals {
            t.set_length(total);
            t.set_position(done);
            let elapsed = self.started.elapsed();
            let eta = if done > 0 && total > done {
                format!(
                    " · ETA {}",
                    human_duration(elapsed.mul_f64((total - done) as f64 / done as f64))
                )
            } else {
                String::new()
            };
            t.set_message(format!(
                "{running} server{} running · {failed} failed · {}{eta}",
                if running == 1 { "" } else { "s" },
                human_duration(elapsed)
            ));
        }
    }

    fn begin(&self, id: u64, label: &str, status: &str) {
        let bar = self.tty.as_ref().map(|mp| {
            let bar = mp.insert_from_back(1, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix} {msg}").expect("valid template"),
            );
            bar.set_prefix(printable_line(label).into_owned());
            bar.set_message(printable_line(status).into_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            self.line(&format!("{label}: {status}"));
        }
        lock(&self.active).insert(
            id,
            ActiveLine {
                bar,
                label: label.to_string(),
                started: Instant::now(),
            },
        );
    }

    /// Ends an active line, with a permanent one when there is a status to say.
    fn end(&self, id: u64, status: Option<&str>) {
        let Some(active) = lock(&self.active).remove(&id) else {
            return;
        };
        if let Some(bar) = &active.bar {
            bar.finish_and_clear();
        }
        if let Some(status) = status {
            self.line(&format!(
                "{}: {status} ({})",
                active.label,
                human_duration(active.started.elapsed())
            ));
        }
    }
}
