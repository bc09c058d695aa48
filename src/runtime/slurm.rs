//! Slurm plumbing: `sbatch`, `squeue --json`, `scancel`, `sinfo`, and `sacct` where a
//! database exists. Only the command-line clients are used (they read `SLURM_CONF`), so any
//! cluster the user can submit to from this shell works; no REST daemon is needed.
//!
//! Slurm 22.05 prints `job_state` as a string, later releases as a list; both are read.
//! Without slurmdbd there is no `sacct`: a finished job is then known only while `squeue`
//! still lists it (`MinJobAge`, 300 s by default), which is why the controller polls.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A Slurm command that did not answer in time is treated as failed (the controller retries
/// at its next poll); `MessageTimeout` is 10 s by default.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One session job as `sbatch` gets it.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// `--job-name`: the submission token, so a controller restarted after `kill -9` finds
    /// the job by it even when its id never reached the journal.
    pub name: String,
    /// `--comment`: the session's address, for people reading `squeue`.
    pub comment: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    pub time_limit: Duration,
    /// `--gres`, e.g. `gpu:2` or `gpu:h100:1`.
    pub gres: Option<String>,
    /// `--nodelist` (same-node placement).
    pub nodelist: Option<String>,
    pub extra: Vec<String>,
    /// stdout and stderr of the job.
    pub output: PathBuf,
    pub chdir: PathBuf,
    /// The batch script (`#!/bin/sh` ...).
    pub script: String,
}

/// What `squeue` says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`, `NODE_FAIL`, `PREEMPTED`, ...
    pub state: String,
    /// Slurm's reason (`Resources`, `Priority`, `TimeLimit`, `None`, ...).
    pub reason: String,
    /// Node(s) the job runs or ran on; empty while pending.
    pub nodes: String,
    /// Unix seconds; 0 when not yet started.
    pub start_time: i64,
    pub end_time: i64,
}

impl JobInfo {
    /// Still queued or running: it can still write results.
    pub fn alive(&self) -> bool {
        is_alive(&self.state)
    }
}

/// States in which a job may still run (or is being torn down).
pub fn is_alive(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_FED"
            | "REQUEUE_HOLD"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
    )
}

async fn run(program: &str, args: &[String], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e} (is Slurm's client installed?)"))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| format!("{program}: {e}"))?;
        drop(pipe);
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("`{program}` did not answer within {COMMAND_TIMEOUT:?}"))?
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `sbatch` arguments of a job (the script goes to stdin).
pub fn sbatch_args(spec: &JobSpec) -> Vec<String> {
    // Slurm takes minutes (rounded up here) or `minutes:seconds`; limits are whole minutes.
    let minutes = spec.time_limit.as_secs().div_ceil(60).max(1);
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name={}", spec.name),
        format!("--comment={}", spec.comment),
        format!("--output={}", spec.output.display()),
        format!("--chdir={}", spec.chdir.display()),
        format!("--time={minutes}"),
        "--nodes=1".into(),
        "--ntasks=1".into(),
        // A lost node must come back to the controller as `node_failure`, not be requeued
        // silently under the same id (the controller decides about retries).
        "--no-requeue".into(),
    ];
    let opt = |a: &mut Vec<String>, name: &str, v: &Option<String>| {
        if let Some(v) = v {
            a.push(format!("--{name}={v}"));
        }
    };
    opt(&mut a, "partition", &spec.partition);
    opt(&mut a, "account", &spec.account);
    opt(&mut a, "qos", &spec.qos);
    opt(&mut a, "constraint", &spec.constraint);
    opt(&mut a, "gres", &spec.gres);
    opt(&mut a, "nodelist", &spec.nodelist);
    a.extend(spec.extra.iter().cloned());
    a
}

/// Submits a job; returns its id.
pub async fn submit(spec: &JobSpec) -> Result<u64, String> {
    let out = run("sbatch", &sbatch_args(spec), Some(&spec.script)).await?;
    // `--parsable`: `id` or `id;cluster`.
    let first = out.trim().split(';').next().unwrap_or("");
    first
        .parse()
        .map_err(|_| format!("sbatch answered {:?}, not a job id", out.trim()))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // Slurm 23.02+: a list of flags, the first is the base state.
        Value::Array(a) => a.first().map(text).unwrap_or_default(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        // 23.02+: {"set": true, "number": N}
        Value::Object(o) => o.get("number").map(number).unwrap_or(0),
        _ => 0,
    }
}

/// Parses `squeue --json`.
pub fn parse_squeue(json: &str) -> Result<Vec<JobInfo>, String> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| format!("squeue --json: not JSON: {e}"))?;
    let jobs = v
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or("squeue --json: no `jobs`")?;
    Ok(jobs
        .iter()
        .map(|j| JobInfo {
            id: number(&j["job_id"]) as u64,
            name: text(&j["name"]),
            state: text(&j["job_state"]),
            reason: text(&j["state_reason"]),
            nodes: text(&j["nodes"]),
            start_time: number(&j["start_time"]),
            end_time: number(&j["end_time"]),
        })
        .collect())
}

/// Every job `squeue` knows of this user, finished ones included (until `MinJobAge`).
pub async fn jobs() -> Result<Vec<JobInfo>, String> {
    let user = std::env::var("USER").ok().or_else(|| {
        // Under `sudo -E` or in containers USER can be unset; the uid always works.
        Some(unsafe_uid().to_string())
    });
    let mut args = vec!["--json".to_string(), "--states=all".to_string()];
    if let Some(u) = user {
        args.push(format!("--user={u}"));
    }
    parse_squeue(&run("squeue", &args, None).await?)
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `sacct`'s final state and reason of a job that `squeue` no longer lists; `None` where the
/// cluster has no accounting database (Slurm 22.05 without slurmdbd) or it does not know it.
pub async fn sacct(id: u64) -> Option<(String, String)> {
    let out = run(
        "sacct",
        &[
            "-n".into(),
            "-X".into(),
            "-P".into(),
            "-j".into(),
            id.to_string(),
            "-o".into(),
            "State,Reason".into(),
        ],
        None,
    )
    .await
    .ok()?;
    let line = out.lines().next()?;
    let mut parts = line.split('|');
    let state = parts.next()?.split_whitespace().next()?.to_string();
    if state.is_empty() {
        return None;
    }
    Some((state, parts.next().unwrap_or("").to_string()))
}

/// `scancel` (SIGTERM to the job, SIGKILL after the cluster's `KillWait`).
pub async fn cancel(ids: &[u64]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let args: Vec<String> = ids.iter().map(u64::to_string).collect();
    run("scancel", &args, None).await.map(|_| ())
}

/// One node of a partition as `sinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub partition: String,
    /// GPUs of the node per GRES type (`""` for untyped), from `Gres=gpu:h100:4(S:0-1)`.
    pub gres: Vec<(String, String, u32)>,
    pub state: String,
}

impl NodeInfo {
    /// GPUs of `gres` (`gpu` or `gpu:type`) the node has.
    pub fn count(&self, gres: &str) -> u32 {
        let (name, ty) = gres.split_once(':').unwrap_or((gres, ""));
        self.gres
            .iter()
            .filter(|(n, t, _)| n == name && (ty.is_empty() || t == ty))
            .map(|(_, _, c)| c)
            .sum()
    }

    /// Usable for new jobs (not down, drained or failing).
    pub fn usable(&self) -> bool {
        let s = self
            .state
            .trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-']);
        !matches!(
            s,
            "down" | "drain" | "drained" | "draining" | "fail" | "failing" | "inval" | "unk"
        )
    }
}

/// Parses one `gres` field: `gpu:2`, `gpu:h100:4(S:0-1)`, `gpu:a:2,gpu:b:2`, `(null)`.
pub fn parse_gres(field: &str) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    // Commas separate entries, but a socket list inside parentheses may hold commas too.
    let mut depth = 0;
    let mut cur = String::new();
    let mut entries = Vec::new();
    for ch in field.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                entries.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        if depth == 0 && ch != ')' {
            cur.push(ch);
        }
    }
    entries.push(cur);
    for e in entries {
        let parts: Vec<&str> = e.trim().split(':').collect();
        let (name, ty, count) = match parts.as_slice() {
            [n, c] => (*n, "", *c),
            [n, t, c] => (*n, *t, *c),
            _ => continue,
        };
        if let Ok(c) = count.parse() {
            out.push((name.to_string(), ty.to_string(), c));
        }
    }
    out
}

/// The nodes of `partition` (the default partition for `None`).
pub async fn nodes(partition: Option<&str>) -> Result<Vec<NodeInfo>, String> {
    let mut args = vec![
        "-h".to_string(),
        "-N".into(),
        "-o".into(),
        "%N|%P|%G|%t".into(),
    ];
    if let Some(p) = partition {
        args.push(format!("--partition={p}"));
    }
    let out = run("sinfo", &args, None).await?;
    let mut nodes = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 4 {
            continue;
        }
        let default = f[1].ends_with('*');
        if partition.is_none() && !default {
            continue;
        }
        nodes.push(NodeInfo {
            name: f[0].to_string(),
            partition: f[1].trim_end_matches('*').to_string(),
            gres: parse_gres(f[2]),
            state: f[3].to_string(),
        });
    }
    Ok(nodes)
}

/// `sbatch --version` (also proves the client is installed).
pub async fn version() -> Result<String, String> {
    Ok(run("sbatch", &["--version".into()], None)
        .await?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gres_fields_parse() {
        assert_eq!(parse_gres("gpu:2"), vec![("gpu".into(), "".into(), 2)]);
        assert_eq!(
            parse_gres("gpu:h100:4(S:0-1)"),
            vec![("gpu".into(), "h100".into(), 4)]
        );
        assert_eq!(
            parse_gres("gpu:a:2(S:0,1),gpu:b:1"),
            vec![("gpu".into(), "a".into(), 2), ("gpu".into(), "b".into(), 1)]
        );
        assert!(parse_gres("(null)").is_empty());
        let n = NodeInfo {
            name: "n1".into(),
            partition: "gpu".into(),
            gres: parse_gres("gpu:a:2,gpu:b:1"),
            state: "idle".into(),
        };
        assert_eq!(n.count("gpu"), 3);
        assert_eq!(n.count("gpu:b"), 1);
        assert_eq!(n.count("gpu:c"), 0);
    }

    #[test]
    fn squeue_json_of_22_05_and_later_parse() {
        let old = r#"{"jobs":[{"job_id":7,"name":"t","job_state":"TIMEOUT","state_reason":"TimeLimit","nodes":"n2","start_time":5,"end_time":9}]}"#;
        let new = r#"{"jobs":[{"job_id":{"set":true,"number":7},"name":"t","job_state":["TIMEOUT"],"state_reason":"TimeLimit","nodes":"n2","start_time":{"set":true,"number":5},"end_time":9}]}"#;
        for j in [old, new] {
            let jobs = parse_squeue(j).unwrap();
            assert_eq!(jobs[0].id, 7);
            assert_eq!(jobs[0].state, "TIMEOUT");
            assert_eq!(jobs[0].start_time, 5);
            assert!(!jobs[0].alive());
        }
    }

    #[test]
    fn time_limits_round_up_to_minutes() {
        let spec = JobSpec {
            name: "n".into(),
            comment: "c".into(),
            partition: Some("gpu".into()),
            account: None,
            qos: None,
            constraint: None,
            time_limit: Duration::from_secs(61),
            gres: Some("gpu:1".into()),
            nodelist: None,
            extra: vec!["--exclusive".into()],
            output: "/o".into(),
            chdir: "/".into(),
            script: String::new(),
        };
        let a = sbatch_args(&spec);
        assert!(a.contains(&"--time=2".to_string()));
        assert!(a.contains(&"--gres=gpu:1".to_string()));
        assert!(a.contains(&"--partition=gpu".to_string()));
        assert_eq!(a.last().unwrap(), "--exclusive");
    }
}
