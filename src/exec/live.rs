//! What `apply` shows while it runs. On a terminal: one line per active node (pulling 43 % of
//! 12 GB, starting 35 s, measuring 61/100 requests at 2,310 tok/s) under a totals line with an
//! ETA. Elsewhere (CI, logs): plain timestamped lines, one per transition.

use crate::util::term::{printable, printable_line};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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
}

/// One active node's line.
pub struct Activity {
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

    /// A node transition, as the journal records it (same object, same schema; see
    /// docs/events.md). Printed only in event-stream mode.
    pub fn event(&self, entry: &crate::state::Entry) {
        if !self.events {
            return;
        }
        let _g = self.lock.lock();
        if let Ok(line) = serde_json::to_string(entry) {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the campaign: the journal has the record.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// A permanent line (above the live area on a terminal).
    pub fn line(&self, msg: &str) {
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

    pub fn set_total(&self, measurements: u64) {
        if let Some(t) = &self.totals {
            t.set_length(measurements);
        }
    }

    /// Updates the totals line: measurements done, running sessions, ETA from the pace so far.
    pub fn totals(&self, done: u64, total: u64, running: usize, failed: u64) {
        if let Some(t) = &self.totals {
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

    pub fn begin(&self, label: &str, msg: &str) -> Activity {
        let bar = self.tty.as_ref().map(|mp| {
            let bar = mp.insert_from_back(1, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix} {msg}").expect("valid template"),
            );
            bar.set_prefix(printable_line(label).into_owned());
            bar.set_message(printable_line(msg).into_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            self.line(&format!("{label}: {msg}"));
        }
        Activity {
            bar,
            label: label.to_string(),
            started: Instant::now(),
        }
    }

    pub fn finish(&self) {
        if let Some(t) = &self.totals {
            t.finish_and_clear();
        }
    }
}

impl Activity {
    /// Replaces the activity's status text (terminal only; plain output stays quiet).
    pub fn set(&self, msg: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(printable_line(&msg).into_owned());
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the line and prints a permanent one.
    pub fn end(self, live: &Live, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        live.line(&format!(
            "{}: {msg} ({})",
            self.label,
            human_duration(self.started.elapsed())
        ));
    }
}
