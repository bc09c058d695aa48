//! The state directory: an append-only journal of node transitions, attempt directories, and
//! the lock that keeps two `apply`s apart.
//!
//! ```text
//! .isobench/
//!   meta.json            {"version": 1, "campaign": "...", "created": "..."}
//!   journal.jsonl        one JSON object per transition, appended and fsynced
//!   attempts/<node>/<n>/ everything attempt n of a node wrote (logs, result.json)
//!   inventory.json       the GPUs the last apply saw (model name enters measurement keys)
//!   lock                 held (flock) while apply runs; names the holder
//!   state-id             random id of this state directory; labels every server it starts
//!   pulled-images.json   images this state directory pulled (the only ones it may prune)
//!   processes/           pid records of process-runtime servers
//! ```
//! A `kill -9` can at worst leave a torn last journal line, which loading skips: the node it
//! described is then seen as not started and simply runs again.

pub mod lock;
pub mod owned;

use crate::failure::Failure;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

pub const STATE_VERSION: u32 = 1;
pub const JOURNAL: &str = "journal.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The step began (written before any side effect).
    Started,
    /// The step finished; `outputs` holds digests of what it wrote.
    Done,
    /// The step failed; `failure` says how.
    Failed,
}

/// The `info` of a finished measure step's entry: written by `exec`, read back by `report`
/// (typed on both sides, so a renamed field cannot silently read as missing). Fields added over
/// time are optional, so older journals still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeasureDoneInfo {
    /// The headline, for the live view and `plan`'s summary.
    pub output_throughput: f64,
    pub completed: usize,
    pub failed: usize,
    /// The measure step's wall time (the seed files' `duration_s`).
    pub duration_s: f64,
    /// The run, in seconds since the Unix epoch (one clock for every trial of a state).
    #[serde(default)]
    pub window_start: Option<f64>,
    #[serde(default)]
    pub window_end: Option<f64>,
    /// GPU UUIDs (or `gpu<index>` for declared GPUs without one).
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The isolation policy it was measured under.
    #[serde(default)]
    pub isolate: Option<String>,
    /// Timed runs: the measured window's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_s: Option<f64>,
    /// Timed runs: requests that re-sent a prompt of the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_reused: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Journal format version.
    pub v: u32,
    /// RFC 3339 time of the transition.
    pub t: String,
    pub addr: String,
    pub event: Event,
    pub key: String,
    pub attempt: u32,
    /// Named key components (`image`, `server`, `load`, ...), for explaining reruns.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
    /// Files written, relative to the state directory, with their content hashes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The apply run that wrote this entry.
    #[serde(default)]
    pub run: String,
    /// Step-specific facts (image digest, server pid, duration...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// What the journal says about every node: the latest entry per address.
#[derive(Debug, Default)]
pub struct State {
    pub dir: PathBuf,
    pub latest: HashMap<String, Entry>,
    /// Entries in journal order (for `state list`), only the latest per address.
    pub order: Vec<String>,
    /// Lines that could not be read (a torn write at a crash).
    pub skipped_lines: usize,
    pub inventory: Option<Inventory>,
}

/// GPUs seen by the last apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inventory {
    pub gpus: Vec<GpuInfo>,
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub memory_total_mib: u64,
}

impl Inventory {
    /// The GPU model for keys: the name of the first GPU (mixed hosts list all distinct names).
    pub fn kind(&self) -> Option<String> {
        let mut names: Vec<&str> = self
            .gpus
            .iter()
            .map(|g| g.name.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        (!names.is_empty()).then(|| names.join("+"))
    }
}

impl State {
    /// Loads the state directory; a missing directory is an empty state.
    pub fn load(dir: &Path) -> std::io::Result<State> {
        let mut state = State {
            dir: dir.to_path_buf(),
            ..State::default()
        };
        let journal = dir.join(JOURNAL);
        match std::fs::File::open(&journal) {
            Ok(file) => {
                for line in std::io::BufReader::new(file).split(b'\n') {
                    let line = line?;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Entry>(&line) {
                        Ok(entry) if entry.v <= STATE_VERSION => {
                            if !state.latest.contains_key(&entry.addr) {
                                state.order.push(entry.addr.clone());
                            }
                            state.latest.insert(entry.addr.clone(), entry);
                        }
                        Ok(entry) => {
                            return Err(std::io::Error::other(format!(
                                "{} was written by a newer isobench (journal version {}); this one reads version {STATE_VERSION}",
                                journal.display(),
                                entry.v
                            )));
                        }
                        Err(_) => state.skipped_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Ok(bytes) = std::fs::read(dir.join("inventory.json")) {
            state.inventory = serde_json::from_slice(&bytes).ok();
        }
        Ok(state)
    }

    pub fn get(&self, address: &str) -> Option<&Entry> {
        self.latest.get(address)
    }

    /// The next attempt number for a node (attempts are never reused). A recorded attempt at
    /// `u32::MAX` (only a hand-edited journal gets there) is an error, not a wrap to 0 that
    /// would reuse attempt directories (or a panic in a debug build).
    pub fn next_attempt(&self, address: &str) -> Result<u32, String> {
        match self.latest.get(address) {
            None => Ok(1),
            Some(e) => e.attempt.checked_add(1).ok_or_else(|| {
                format!(
                    "{address}: the journal records attempt {}, the largest possible; no further attempt can be numbered (was {} edited by hand? remove that line to run the node again)",
                    e.attempt,
                    self.dir.join(JOURNAL).display()
                )
            }),
        }
    }
}

/// Appends entries to the journal, one fsynced line each.
pub struct Journal {
    file: std::fs::File,
    /// The file may end inside a line: a torn line from a crash, or a write that failed part
    /// way (disk full). The next entry then starts with a newline, so it never glues onto the
    /// torn bytes (which loading skips) and stays readable itself.
    torn: bool,
}

impl Journal {
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let mut torn = false;
        let len = file.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            let mut reader = std::fs::File::open(&path)?;
            reader.seek(SeekFrom::End(-1))?;
            reader.read_exact(&mut last)?;
            torn = last[0] != b'\n';
        }
        Ok(Journal { file, torn })
    }

    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(512);
        if self.torn {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // Until this write is known complete, the file may end mid-line.
        self.torn = true;
        self.file.write_all(&line)?;
        self.torn = false;
        self.file.sync_data()
    }
}

/// Directory name for a node address: readable, filesystem-safe.
pub fn slug(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=,._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Attempt directory of a node, relative to the state directory.
pub fn attempt_dir(address: &str, attempt: u32) -> PathBuf {
    PathBuf::from("attempts")
        .join(slug(address))
        .join(attempt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: &str, event: Event, attempt: u32) -> Entry {
        Entry {
            v: 1,
            t: "2026-01-01T00:00:00Z".into(),
            addr: addr.into(),
            event,
            key: "k".into(),
            attempt,
            components: Default::default(),
            outputs: Default::default(),
            failure: None,
            run: "r".into(),
            info: None,
        }
    }

    #[test]
    fn latest_entry_wins_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&entry("a", Event::Started, 1)).unwrap();
        j.append(&entry("a", Event::Done, 1)).unwrap();
        j.append(&entry("b", Event::Started, 1)).unwrap();
        drop(j);
        // Simulate a crash in the middle of writing a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(b"{\"v\":1,\"t\":\"x\",\"addr\":\"b\",\"ev")
            .unwrap();
        drop(f);
        // The next writer starts on a fresh line.
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&entry("c", Event::Done, 2)).unwrap();
        let s = State::load(dir.path()).unwrap();
        assert_eq!(s.get("a").unwrap().event, Event::Done);
        assert_eq!(s.get("b").unwrap().event, Event::Started);
        assert_eq!(s.get("c").unwrap().attempt, 2);
        assert_eq!(s.skipped_lines, 1);
        assert_eq!(s.next_attempt("c"), Ok(3));
        assert_eq!(s.next_attempt("zzz"), Ok(1));
    }

    /// A writer whose file ends mid-line (a write cut short, e.g. by a full disk) starts its
    /// next entry on a fresh line.
    #[test]
    fn an_append_after_a_torn_write_starts_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&entry("a", Event::Started, 1)).unwrap();
        // What a write that failed part way leaves: the journal's own handle, its flag set.
        j.file.write_all(b"{\"v\":1,\"addr\":\"a\",\"ev").unwrap();
        j.torn = true;
        j.append(&entry("a", Event::Done, 1)).unwrap();
        let s = State::load(dir.path()).unwrap();
        assert_eq!(s.get("a").unwrap().event, Event::Done);
        assert_eq!(s.skipped_lines, 1);
    }

    #[test]
    fn attempt_counter_at_its_maximum_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&entry("a", Event::Failed, u32::MAX)).unwrap();
        let s = State::load(dir.path()).unwrap();
        let e = s.next_attempt("a").unwrap_err();
        assert!(e.contains("attempt 4294967295"), "{e}");
    }

    #[test]
    fn slugs_are_safe() {
        assert_eq!(
            slug("measure[commit=015069b0,arm=human,trial=2,conc=16]"),
            "measure_commit=015069b0,arm=human,trial=2,conc=16_"
        );
        assert_eq!(slug("pull[image=a/b:c]"), "pull_image=a_b_c_");
    }
}
