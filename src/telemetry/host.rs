//! CPU time of the server's processes over a window (many vLLM changes are CPU-side: scheduling,
//! detokenisation, sampling). Process runtime: the server's process group, read from procfs;
//! Docker: the container's cgroup, read through the engine's stats (every process in it).

use crate::runtime::{Runtime, ServerHandle};
use serde_json::{Value, json};

/// Whose CPU time is read.
#[derive(Clone)]
pub enum CpuSource {
    /// A process group (the process runtime starts each server as a group leader).
    ProcessGroup(i32),
    /// A container, through the Docker Engine.
    Container { docker: bollard::Docker, id: String },
}

impl CpuSource {
    /// The server's processes as its runtime started them.
    pub fn of(runtime: &Runtime, handle: &ServerHandle) -> Result<CpuSource, String> {
        match runtime {
            Runtime::Docker(d) => Ok(CpuSource::Container {
                docker: d.client().clone(),
                id: handle.id.clone(),
            }),
            Runtime::Process(_) => handle
                .id
                .parse()
                .map(CpuSource::ProcessGroup)
                .map_err(|_| format!("server id `{}` is not a process id", handle.id)),
        }
    }

    fn describe(&self) -> String {
        match self {
            CpuSource::ProcessGroup(pgid) => format!("process group {pgid} (procfs)"),
            CpuSource::Container { id, .. } => {
                format!("container {} (cgroup)", &id[..id.len().min(12)])
            }
        }
    }

    /// CPU seconds (user + system) used so far.
    pub async fn cpu_seconds(&self) -> Result<f64, String> {
        match self {
            CpuSource::ProcessGroup(pgid) => group_cpu_seconds(*pgid),
            CpuSource::Container { docker, id } => container_cpu_seconds(docker, id).await,
        }
    }
}

/// utime + stime of every live member of the group, plus cutime + cstime: children the
/// members have reaped (a finished worker's time stays counted in its parent's).
fn group_cpu_seconds(pgid: i32) -> Result<f64, String> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut total: u64 = 0;
    let mut members = 0;
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((group, ticks)) = parse_stat_cpu(&text)
            && group == pgid
        {
            total += ticks;
            members += 1;
        }
    }
    if members == 0 {
        return Err(format!("process group {pgid} has no processes"));
    }
    Ok(total as f64 / ticks as f64)
}

/// `/proc/<pid>/stat` → (pgid, utime + stime + cutime + cstime in clock ticks).
fn parse_stat_cpu(text: &str) -> Option<(i32, u64)> {
    // The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3: field N is f[N - 3].
    let pgid = f.get(5 - 3)?.parse().ok()?;
    let mut ticks = 0u64;
    for n in 14..=17 {
        // cutime/cstime are signed in the kernel's format; never negative in practice.
        ticks += f.get(n - 3)?.parse::<i64>().ok()?.max(0) as u64;
    }
    Some((pgid, ticks))
}

async fn container_cpu_seconds(docker: &bollard::Docker, id: &str) -> Result<f64, String> {
    use futures_util::StreamExt;
    // One sample, without the engine's second one a second later.
    let options = bollard::query_parameters::StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = docker
        .stats(id, Some(options))
        .next()
        .await
        .ok_or("no stats from the engine")?
        .map_err(|e| format!("container stats: {e}"))?;
    let ns = stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .ok_or("the engine reports no CPU usage for the container")?;
    Ok(ns as f64 / 1e9)
}

/// CPU time from [`HostCpu::start`] to [`HostCpu::finish`].
pub struct HostCpu {
    inner: Result<(CpuSource, f64), String>,
}

impl HostCpu {
    pub async fn start(source: Result<CpuSource, String>) -> HostCpu {
        let inner = match source {
            Ok(s) => match s.cpu_seconds().await {
                Ok(at) => Ok((s, at)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        HostCpu { inner }
    }

    /// The `isobench.telemetry.host` object.
    pub async fn finish(self) -> Value {
        let (source, start) = match self.inner {
            Ok(v) => v,
            Err(reason) => return super::absent(&reason),
        };
        match source.cpu_seconds().await {
            Ok(end) if end >= start => json!({
                "available": true,
                "source": source.describe(),
                "cpu_s": end - start,
            }),
            Ok(end) => super::absent(&format!(
                "CPU time went down ({start:.3} s → {end:.3} s): the processes were replaced"
            )),
            Err(reason) => super::absent(&reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_group_and_all_four_times_of_a_stat_line() {
        let line = "4242 (python3 (x) y) S 1 4200 4200 0 -1 4194560 100 0 0 0 150 50 7 3 20 0 12 0 99999 1000 10";
        assert_eq!(parse_stat_cpu(line), Some((4200, 210)));
    }

    #[test]
    fn a_busy_process_group_shows_its_cpu_time() {
        // A child of its own group that burns CPU for a while: the delta must see it.
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let v = rt.block_on(async {
            let cpu = HostCpu::start(Ok(CpuSource::ProcessGroup(pgid))).await;
            std::thread::sleep(std::time::Duration::from_millis(600));
            cpu.finish().await
        });
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(v["available"], true, "{v}");
        assert!(v["cpu_s"].as_f64().unwrap() > 0.1, "{v}");
        let gone = rt.block_on(HostCpu::start(Ok(CpuSource::ProcessGroup(pgid))));
        assert!(gone.inner.is_err());
    }
}
