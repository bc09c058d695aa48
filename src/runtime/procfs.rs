//! Process groups seen through `/proc` (Linux), for stopping a server's whole process tree and
//! for never signalling a process that merely reuses a recorded pid.
use std::time::{Duration, Instant};

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub pgid: i32,
    /// Clock ticks after boot at which it started: with the pid, a unique identity.
    pub start_time: u64,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        pgid: fields.get(5 - 3)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Live (not zombie) members of process group `pgid`, provided the group is the one whose
/// leader started at `leader_start`.
///
/// Linux never reuses a pid while a process group of that id still exists, so: if a process
/// `pgid` exists but started at another time, the pid was reused and the old group is gone
/// (empty answer); if no process `pgid` exists, every process still in group `pgid` belongs to
/// the old group (its leader died first).
pub fn live_group_members(pgid: i32, leader_start: u64) -> Vec<i32> {
    if stat(pgid).is_some_and(|leader| leader.start_time != leader_start) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|p| p.pgid == pgid && !p.is_zombie())
        .map(|p| p.pid)
        .collect()
}

/// Whether the environment of process `pid` holds `entry` (`NAME=value`); `false` when it
/// cannot be read.
pub fn env_has(pid: i32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == entry.as_bytes()))
}

/// The process groups (pgid, start time of the leader or 0 when it is gone) of the live
/// processes whose environment holds `entry` (`NAME=value`); processes of other users, whose
/// environment cannot be read, are not among them.
pub fn groups_with_env(entry: &str) -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pgids: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| env_has(*pid, entry))
        .filter_map(stat)
        .filter(|p| !p.is_zombie())
        .map(|p| p.pgid)
        .collect();
    pgids.sort_unstable();
    pgids.dedup();
    pgids
        .into_iter()
        .map(|pgid| (pgid, stat(pgid).map_or(0, |leader| leader.start_time)))
        .collect()
}

/// Sends `signal` to the group if it still has live members; returns whether it had any.
/// Never signals group 0 or 1 or isobench's own group: `kill(0, ..)` and `kill(-own, ..)`
/// would hit isobench itself, `kill(-1, ..)` every process it may signal.
pub fn signal_group(pgid: i32, leader_start: u64, signal: i32) -> bool {
    if pgid <= 1 || pgid == own_pgid() {
        return false;
    }
    if live_group_members(pgid, leader_start).is_empty() {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe { libc::kill(-pgid, signal) };
    true
}

/// isobench's own process group.
pub fn own_pgid() -> i32 {
    // SAFETY: getpgrp has no preconditions.
    unsafe { libc::getpgrp() }
}

/// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL and up to 5 s more.
/// Returns the pids that still live after all that (empty on success).
pub async fn terminate_group(pgid: i32, leader_start: u64, grace: Duration) -> Vec<i32> {
    if !signal_group(pgid, leader_start, libc::SIGTERM) {
        return Vec::new();
    }
    if wait_group_gone(pgid, leader_start, grace).await {
        return Vec::new();
    }
    signal_group(pgid, leader_start, libc::SIGKILL);
    wait_group_gone(pgid, leader_start, Duration::from_secs(5)).await;
    live_group_members(pgid, leader_start)
}

async fn wait_group_gone(pgid: i32, leader_start: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if live_group_members(pgid, leader_start).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let line = "4242 (we) ird (name)) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 \
                    1 0 987654 12345 67 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 4242,
                state: 'S',
                pgid: 4240,
                start_time: 987654
            }
        );
    }

    #[test]
    fn own_process_is_seen_with_its_group() {
        let me = std::process::id() as i32;
        let own = stat(me).expect("/proc/self exists");
        assert_eq!(own.pid, me);
        assert!(!own.is_zombie());
        // SAFETY: getpgrp has no preconditions.
        assert_eq!(own.pgid, unsafe { libc::getpgrp() });
        assert!(stat(i32::MAX).is_none());
    }

    #[tokio::test]
    async fn a_group_is_terminated_but_a_reused_pid_is_never_signalled() {
        use std::os::unix::process::CommandExt;
        // `sh` leads its own group and starts a second member, as a server with workers would.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30; wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let start = stat(pgid).unwrap().start_time;
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_group_members(pgid, start).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            live_group_members(pgid, start).len(),
            3,
            "sh and two sleeps"
        );

        // A record whose start time does not match is someone else's process: hands off.
        assert!(live_group_members(pgid, start + 1).is_empty());
        assert!(!signal_group(pgid, start + 1, libc::SIGTERM));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the group was signalled"
        );

        let reaper = std::thread::spawn(move || child.wait());
        let survivors = terminate_group(pgid, start, Duration::from_secs(5)).await;
        assert_eq!(survivors, Vec::<i32>::new());
        assert!(live_group_members(pgid, start).is_empty());
        reaper.join().unwrap().unwrap();
    }
}
