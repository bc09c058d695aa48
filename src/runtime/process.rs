//! Servers as local child processes, for hosts without Docker.
//!
//! The server leads its own process group (`setpgid(0, 0)`), so stopping it reaches every
//! worker it spawned. `CUDA_VISIBLE_DEVICES` is set to its GPUs; stdout and stderr go straight
//! into the log file (the child writes them itself, so nothing is lost if isobench dies).
//! Each running server has a pid record (pid + start time from `/proc`, its owner labels and a
//! start token) in the records directory, which is how [`ProcessRuntime::cleanup_leftovers`]
//! finds what an interrupted run left behind. The token is in the server's environment
//! ([`SERVER_TOKEN_ENV`]) and inherited by its workers: cleanup signals only groups that carry
//! it, so a reused pid, a garbage record or isobench's own group is never signalled. The pid is
//! only known after the spawn, so a *starting* record with the token is written before it,
//! which finds a server whose run was killed between its spawn and its pid record.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::procfs;
use super::{
    Availability, CUDA_VISIBLE_DEVICES, Cleanup, HandleInner, ImageInfo, Owner, Ownership,
    ServerHandle, ServerSource, ServerSpec, cuda_visible_devices, labels,
};
use crate::failure::{CrashCause, Failure, FailureClass};

/// Local processes; see the module docs.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    records_dir: PathBuf,
    /// Grace before SIGKILL when [`ProcessRuntime::cleanup_leftovers`] stops a leftover.
    pub leftover_grace: Duration,
}

/// Per-server state the process runtime keeps in the handle.
#[derive(Debug, Clone)]
pub(crate) struct ProcessHandle {
    pgid: i32,
    start_time: u64,
    /// Set by the task that reaps the child.
    exit: watch::Receiver<Option<i64>>,
    record: PathBuf,
}

impl ProcessHandle {
    pub(crate) fn exit_code(&self) -> Option<i64> {
        *self.exit.borrow()
    }
}

/// Environment variable holding a server's start token (see the module docs).
pub const SERVER_TOKEN_ENV: &str = "ISOBENCH_SERVER_TOKEN";

/// What the records directory holds per running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PidRecord {
    /// 0 in a starting record (written before the spawn).
    pid: i32,
    /// `/proc/<pid>/stat` field 22: tells our process from a later one with the same pid.
    start_time: u64,
    name: String,
    labels: BTreeMap<String, String>,
    /// The value of [`SERVER_TOKEN_ENV`] in the server's environment: cleanup signals only
    /// groups that carry it. Records without one (older isobench) are never signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// A token no other server start shares: this process, a counter, and the time.
fn new_server_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl ProcessRuntime {
    pub fn new(records_dir: impl Into<PathBuf>) -> ProcessRuntime {
        ProcessRuntime {
            records_dir: records_dir.into(),
            leftover_grace: Duration::from_secs(10),
        }
    }

    pub fn records_dir(&self) -> &Path {
        &self.records_dir
    }

    pub(super) async fn ensure_tree(&self, reference: &str) -> Result<ImageInfo, Failure> {
        match std::fs::canonicalize(expand_home(reference)) {
            Ok(path) if path.is_dir() => Ok(ImageInfo {
                id: path.display().to_string(),
                repo_digest: None,
                size: None,
                pulled: false,
            }),
            _ => Err(Failure::new(
                FailureClass::ImageMissing,
                format!("{reference} is not a directory on this host"),
            )),
        }
    }

    pub(super) async fn tree_available(&self, reference: &str) -> Result<Availability, Failure> {
        Ok(match self.ensure_tree(reference).await {
            Ok(info) => Availability::Local { id: info.id },
            Err(_) => Availability::Missing,
        })
    }

    pub(super) async fn start(&self, spec: &ServerSpec) -> Result<ServerHandle, Failure> {
        let root = match &spec.source {
            ServerSource::Path { root } => expand_home(&root.to_string_lossy()),
            ServerSource::Image { reference } => {
                return Err(Failure::new(
                    FailureClass::Internal,
                    format!(
                        "the process runtime runs from a path; {reference} is an image (use the docker runtime)"
                    ),
                ));
            }
        };
        if !root.is_dir() {
            return Err(Failure::new(
                FailureClass::ImageMissing,
                format!("{} is not a directory on this host", root.display()),
            ));
        }
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(Failure::new(
                FailureClass::Internal,
                format!("server {} has an empty command", spec.name),
            ));
        };
        let log = open_log(&spec.log_path)?;
        let log_err = log
            .try_clone()
            .map_err(|e| log_failure(&spec.log_path, e))?;

        // Recorded before the spawn: a kill -9 between the spawn and the pid record must not
        // leave a server nobody can find.
        let token = new_server_token();
        let starting = self.records_dir.join(format!("starting-{token}.json"));
        write_record(
            &starting,
            &PidRecord {
                pid: 0,
                start_time: 0,
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                token: Some(token.clone()),
            },
        )?;

        let mut command = tokio::process::Command::new(program);
        // GPU indices come from NVML / nvidia-smi, which number GPUs in PCI bus order; CUDA's
        // default order ("fastest first") can differ on mixed hosts, so pin CUDA to bus order
        // unless the manifest says otherwise.
        if !spec.env.contains_key("CUDA_DEVICE_ORDER") {
            command.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
        }
        command
            .args(args)
            .current_dir(&root)
            .envs(&spec.env)
            // The scheduler owns GPU assignment: the runtime's value wins over the manifest's.
            .env(CUDA_VISIBLE_DEVICES, cuda_visible_devices(&spec.gpus))
            .env(SERVER_TOKEN_ENV, &token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        let started_at = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_file(&starting);
                let line = format!("isobench: cannot start {program}: {err}");
                append_line(&spec.log_path, &line);
                let mut failure = Failure::new(
                    FailureClass::Crashed,
                    format!("server {} could not start its command", spec.name),
                );
                failure.cause = Some(CrashCause::Unknown);
                failure.sample_log_line = Some(line);
                failure.log_path = Some(spec.log_path.display().to_string());
                return Err(failure);
            }
        };
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        // The child is not reaped yet, so /proc/<pid> exists even if it already exited.
        let start_time = procfs::stat(pid).map(|s| s.start_time).unwrap_or(0);
        let record = self.records_dir.join(format!("{pid}-{start_time}.json"));
        let written = write_record(
            &record,
            &PidRecord {
                pid,
                start_time,
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                token: Some(token.clone()),
            },
        );
        if written.is_ok() {
            let _ = std::fs::remove_file(&starting);
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(_) => -1,
            };
            let _ = exit_tx.send(Some(code));
        });
        let handle = ServerHandle {
            id: pid.to_string(),
            name: spec.name.clone(),
            base_url: format!("http://127.0.0.1:{}", spec.port),
            log_path: spec.log_path.clone(),
            started_at,
            inner: HandleInner::Process(ProcessHandle {
                pgid: pid,
                start_time,
                exit: exit_rx,
                record,
            }),
        };
        if let Err(failure) = written {
            // Without a record a crash of isobench would leave it unfindable: do not run it.
            let _ = self.stop_process(&handle, Duration::ZERO).await;
            let _ = std::fs::remove_file(&starting);
            return Err(failure);
        }
        Ok(handle)
    }

    pub(super) async fn stop(
        &self,
        handle: &ServerHandle,
        _h: &ProcessHandle,
        grace: Duration,
    ) -> Result<(), Failure> {
        self.stop_process(handle, grace).await
    }

    async fn stop_process(&self, handle: &ServerHandle, grace: Duration) -> Result<(), Failure> {
        let HandleInner::Process(h) = &handle.inner else {
            unreachable!("dispatched by handle kind")
        };
        let survivors = procfs::terminate_group(h.pgid, h.start_time, grace).await;
        if !survivors.is_empty() {
            return Err(Failure::new(
                FailureClass::Internal,
                format!(
                    "processes {survivors:?} of server {} survived SIGKILL",
                    handle.name
                ),
            ));
        }
        // Let the reaper record the exit, so `exited` agrees with what just happened.
        let mut exit = h.exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), exit.wait_for(Option::is_some)).await;
        let _ = std::fs::remove_file(&h.record);
        Ok(())
    }

    /// See [`super::Runtime::cleanup_leftovers`]. Every record of an earlier run of this state
    /// directory on this host is checked before anything is signalled (see [`check_record`]);
    /// records of other states, hosts or of older isobench versions are left alone.
    pub(super) async fn cleanup_leftovers(&self, owner: &Owner) -> Result<Cleanup, Failure> {
        let mut cleanup = Cleanup::default();
        for (path, record) in self.records(&mut cleanup.skipped)? {
            match owner.judge(&record.labels) {
                Ownership::EarlierRun => {}
                Ownership::ThisRun | Ownership::OtherState => continue,
                Ownership::OtherHost => {
                    cleanup.skipped.push(format!(
                        "pid record {} is of host {}; not touched from here",
                        path.display(),
                        record
                            .labels
                            .get(labels::HOST)
                            .map_or("(unknown)", String::as_str)
                    ));
                    continue;
                }
                Ownership::Unowned => {
                    cleanup.skipped.push(format!(
                        "pid record {} was written by an older isobench (no state id); not signalled, check pid {} yourself",
                        path.display(),
                        record.pid
                    ));
                    continue;
                }
            }
            if self
                .stop_recorded(&path, &record, &mut cleanup.skipped)
                .await?
            {
                cleanup.removed.push(record.name);
            }
        }
        Ok(cleanup)
    }

    /// See [`super::Runtime::cleanup_cancelled_start`].
    pub(super) async fn cleanup_named(
        &self,
        owner: &Owner,
        name: Option<&str>,
    ) -> Result<Vec<String>, Failure> {
        let mut skipped = Vec::new();
        let mut removed = Vec::new();
        for (path, record) in self.records(&mut skipped)? {
            if name.is_none_or(|n| record.name == n)
                && owner.judge(&record.labels) == Ownership::ThisRun
                && self.stop_recorded(&path, &record, &mut skipped).await?
            {
                removed.push(record.name);
            }
        }
        Ok(removed)
    }

    /// Every readable record with its path; files that are not records are reported in
    /// `skipped` and left in place (not ours to interpret).
    fn records(&self, skipped: &mut Vec<String>) -> Result<Vec<(PathBuf, PidRecord)>, Failure> {
        let entries = match std::fs::read_dir(&self.records_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(Failure::new(
                    FailureClass::Internal,
                    format!(
                        "cannot read pid records in {}: {err}",
                        self.records_dir.display()
                    ),
                ));
            }
        };
        let mut records = Vec::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PidRecord>(&b).ok())
            {
                Some(record) => records.push((path, record)),
                None => skipped.push(format!(
                    "{} is not a pid record; left alone",
                    path.display()
                )),
            }
        }
        Ok(records)
    }

    /// Stops the process groups a record stands for, after [`check_record`], and deletes the
    /// record. Returns whether anything was running. An invalid record is deleted without
    /// signalling anything and reported in `skipped`.
    async fn stop_recorded(
        &self,
        path: &Path,
        record: &PidRecord,
        skipped: &mut Vec<String>,
    ) -> Result<bool, Failure> {
        let check = check_record(record);
        skipped.extend(
            check
                .problems
                .iter()
                .map(|p| format!("pid record {}: {p}; not signalled", path.display())),
        );
        let mut found = false;
        for (pgid, leader_start) in check.groups {
            found = true;
            let survivors = procfs::terminate_group(pgid, leader_start, self.leftover_grace).await;
            if !survivors.is_empty() {
                return Err(Failure::new(
                    FailureClass::Internal,
                    format!(
                        "leftover processes {survivors:?} of server {} survived SIGKILL",
                        record.name
                    ),
                ));
            }
        }
        let _ = std::fs::remove_file(path);
        Ok(found)
    }
}

/// What [`check_record`] allows to be signalled, and why anything else is not.
#[derive(Debug, Default, PartialEq, Eq)]
struct RecordCheck {
    /// `(pgid, leader start time or 0)` of the groups that provably belong to the record.
    groups: Vec<(i32, u64)>,
    /// Why the record, or a group it seems to name, is not trusted.
    problems: Vec<String>,
}

/// Decides which process groups a record may make isobench signal. Only groups that carry the
/// record's start token ([`SERVER_TOKEN_ENV`], which isobench put into the server's
/// environment) qualify: the leader alive and carrying it (it leads its own group, since the
/// group id is its pid), or the leader gone and every live member carrying it. Never group 0
/// or 1, and never isobench's own group (`kill(0)` or `kill(-own)` would signal isobench
/// itself). A record without a token, or naming pid ≤ 1 or isobench itself, is invalid.
fn check_record(record: &PidRecord) -> RecordCheck {
    let mut check = RecordCheck::default();
    let own_pid = std::process::id() as i32;
    let own_pgid = procfs::own_pgid();
    let Some(token) = record.token.as_deref().filter(|t| !t.is_empty()) else {
        check
            .problems
            .push(format!("no start token (pid {})", record.pid));
        return check;
    };
    let is_starting = record.pid == 0 && record.start_time == 0;
    if !is_starting && (record.pid <= 1 || record.pid == own_pid || record.pid == own_pgid) {
        check.problems.push(format!(
            "invalid pid {} (≤ 1, or isobench itself)",
            record.pid
        ));
        return check;
    }
    let entry = format!("{SERVER_TOKEN_ENV}={token}");
    for (pgid, leader_start) in procfs::groups_with_env(&entry) {
        if pgid <= 1 || pgid == own_pgid {
            check.problems.push(format!(
                "a process carrying its token is in group {pgid} (isobench's own or the system's)"
            ));
            continue;
        }
        let leader_ok =
            procfs::stat(pgid).is_some_and(|p| !p.is_zombie()) && procfs::env_has(pgid, &entry);
        let members = procfs::live_group_members(pgid, leader_start);
        let all_members_ok = members.iter().all(|&pid| procfs::env_has(pid, &entry));
        if leader_ok || (procfs::stat(pgid).is_none_or(|p| p.is_zombie()) && all_members_ok) {
            check.groups.push((pgid, leader_start));
        } else {
            check.problems.push(format!(
                "group {pgid} holds a process carrying its token, but the group was not started by the server"
            ));
        }
    }
    // A pid record whose pid runs without the token: the pid was reused, or the record lies.
    if !is_starting
        && procfs::stat(record.pid).is_some_and(|p| !p.is_zombie())
        && !check.groups.iter().any(|(pgid, _)| *pgid == record.pid)
    {
        check.problems.push(format!(
            "pid {} runs but does not carry the record's start token (not a server isobench started)",
            record.pid
        ));
    }
    check
}

/// 128 + signal for a signal death, as Docker and shells report it.
fn exit_code(status: std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), std::env::var("HOME")) {
        (Some(tail), Ok(home)) if tail.is_empty() || tail.starts_with('/') => {
            PathBuf::from(format!("{home}{tail}"))
        }
        _ => PathBuf::from(path),
    }
}

fn open_log(path: &Path) -> Result<std::fs::File, Failure> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| log_failure(path, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| log_failure(path, e))
}

fn log_failure(path: &Path, err: std::io::Error) -> Failure {
    Failure::new(
        FailureClass::Internal,
        format!("cannot open server log {}: {err}", path.display()),
    )
}

fn append_line(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = open_log(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// Written to a temporary name and renamed, so a crash never leaves a torn record.
fn write_record(path: &Path, record: &PidRecord) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            FailureClass::Internal,
            format!("cannot write pid record {}: {e}", path.display()),
        )
    };
    let dir = path.parent().expect("records live in a directory");
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(record).expect("a record serialises"),
    )
    .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_deaths_read_as_128_plus_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(
            exit_code(std::process::ExitStatus::from_raw(libc::SIGKILL)),
            137
        );
        assert_eq!(
            exit_code(std::process::ExitStatus::from_raw(libc::SIGTERM)),
            143
        );
    }

    #[test]
    fn records_round_trip_and_are_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records/42-7.json");
        let record = PidRecord {
            pid: 42,
            start_time: 7,
            name: "srv".into(),
            labels: BTreeMap::from([(labels::CAMPAIGN.to_string(), "c".to_string())]),
            token: None,
        };
        write_record(&path, &record).unwrap();
        let back: PidRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, record);
        assert!(!path.with_extension("json.tmp").exists());
    }
}
