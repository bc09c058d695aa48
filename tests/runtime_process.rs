//! The process runtime with `isobench sim` as a real child process.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isobench::failure::{CrashCause, FailureClass};
use isobench::runtime::process::SERVER_TOKEN_ENV;
use isobench::runtime::{
    GpuMode, Owner, Runtime, ServerHandle, ServerSource, ServerSpec, free_port, labels,
};

const ISOBENCH: &str = env!("CARGO_BIN_EXE_isobench");
const GRACE: Duration = Duration::from_secs(5);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

struct Fixture {
    dir: tempfile::TempDir,
    runtime: Runtime,
    /// The identity of the "earlier run" that starts servers (run-1 of a fresh state id).
    owner: Owner,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::process(dir.path().join("processes"));
        let owner = Owner {
            state: isobench::state::owned::state_id(dir.path()).unwrap(),
            run: "run-1".to_string(),
            host: isobench::state::lock::hostname(),
        };
        Fixture {
            dir,
            runtime,
            owner,
        }
    }

    /// The next run of the same state directory: the one that cleans up.
    fn later(&self) -> Owner {
        Owner {
            run: "run-2".to_string(),
            ..self.owner.clone()
        }
    }

    /// A record as the runtime writes it, for `owner`, labelled `campaign`.
    fn write_record(
        &self,
        file: &str,
        owner: &Owner,
        pid: i32,
        start_time: u64,
        token: Option<&str>,
    ) {
        let mut record_labels = owner.labels();
        record_labels.insert(labels::CAMPAIGN.to_string(), "campaign-x".to_string());
        let mut record = serde_json::json!({
            "pid": pid,
            "start_time": start_time,
            "name": file.trim_end_matches(".json"),
            "labels": record_labels,
        });
        if let Some(token) = token {
            record["token"] = token.into();
        }
        std::fs::create_dir_all(self.records()).unwrap();
        std::fs::write(self.records().join(file), record.to_string()).unwrap();
    }

    fn records(&self) -> PathBuf {
        self.dir.path().join("processes")
    }

    /// `isobench sim` on a free port, with `extra` flags.
    fn sim_spec(&self, name: &str, campaign: &str, extra: &[&str]) -> ServerSpec {
        let port = free_port();
        let mut argv: Vec<String> = [
            ISOBENCH,
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ]
        .map(String::from)
        .to_vec();
        argv.extend(extra.iter().map(|s| s.to_string()));
        self.spec(name, campaign, port, argv)
    }

    fn spec(&self, name: &str, campaign: &str, port: u16, argv: Vec<String>) -> ServerSpec {
        let mut spec_labels = self.owner.labels();
        spec_labels.insert(labels::CAMPAIGN.to_string(), campaign.to_string());
        ServerSpec {
            name: name.to_string(),
            labels: spec_labels,
            source: ServerSource::Path {
                root: self.dir.path().to_path_buf(),
            },
            argv,
            env: BTreeMap::from([("ISOBENCH_TEST_MARKER".to_string(), name.to_string())]),
            gpus: vec![2, 5],
            gpu_mode: GpuMode::DeviceRequest,
            port,
            shm_size: None,
            ipc: None,
            volumes: Vec::new(),
            log_path: self.dir.path().join("logs").join(format!("{name}.log")),
        }
    }
}

/// `(pid, pgid, state)` of every process, from /proc.
fn processes() -> Vec<(i32, i32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            Some((pid, rest[2].parse().ok()?, rest[0].chars().next()?))
        })
        .collect()
}

/// Live (not zombie) members of a process group.
fn live_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, g, s)| *g == pgid && *s != 'Z')
        .map(|(p, _, _)| p)
        .collect()
}

fn pgid_of(handle: &ServerHandle) -> i32 {
    handle.id.parse().unwrap()
}

fn record_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_sim_process_starts_gets_its_gpus_answers_and_stops() {
    let fx = Fixture::new();
    let spec = fx.sim_spec("srv-a", "c1", &[]);
    let handle = fx.runtime.start(&spec).await.unwrap();
    assert_eq!(handle.base_url, format!("http://127.0.0.1:{}", spec.port));
    let ready = fx
        .runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap();
    assert!(ready < READY_TIMEOUT);
    assert_eq!(fx.runtime.exited(&handle).await, None);

    // Its own process group, its GPUs, its env; a pid record while it runs.
    let pid = pgid_of(&handle);
    assert_eq!(live_members(pid), vec![pid]);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(environ.contains(&&b"CUDA_VISIBLE_DEVICES=2,5"[..]));
    assert!(environ.contains(&&b"ISOBENCH_TEST_MARKER=srv-a"[..]));
    let records = record_files(&fx.records());
    assert_eq!(records.len(), 1);
    assert!(records[0].starts_with(&format!("{pid}-")), "{records:?}");

    let stopping = Instant::now();
    fx.runtime.stop(&handle, GRACE).await.unwrap();
    assert!(
        stopping.elapsed() < GRACE,
        "the sim exits on SIGTERM: {:?}",
        stopping.elapsed()
    );
    assert_eq!(live_members(pid), Vec::<i32>::new());
    assert_eq!(
        fx.runtime.exited(&handle).await,
        Some(0),
        "SIGTERM is a clean shutdown for the sim"
    );
    assert_eq!(record_files(&fx.records()), Vec::<String>::new());
    let log = std::fs::read_to_string(&spec.log_path).unwrap();
    assert!(
        log.contains(&format!(
            "isobench sim listening on 127.0.0.1:{}",
            spec.port
        )),
        "{log}"
    );
    fx.runtime
        .stop(&handle, GRACE)
        .await
        .expect("stop is idempotent");
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let fx = Fixture::new();
    let port = free_port();
    // A shell that leaves a worker behind and then becomes the server, as launchers do.
    let script = format!("sleep 300 & exec {ISOBENCH} sim --host 127.0.0.1 --port {port}");
    let spec = fx.spec(
        "srv-group",
        "c1",
        port,
        vec!["sh".into(), "-c".into(), script],
    );
    let handle = fx.runtime.start(&spec).await.unwrap();
    fx.runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap();
    let pgid = pgid_of(&handle);
    let members = live_members(pgid);
    assert_eq!(
        members.len(),
        2,
        "the server and its sleeping worker: {members:?}"
    );

    fx.runtime.stop(&handle, GRACE).await.unwrap();
    assert_eq!(live_members(pgid), Vec::<i32>::new());
    for pid in members {
        let state = processes()
            .into_iter()
            .find(|(p, _, _)| *p == pid)
            .map(|(_, _, s)| s);
        assert!(matches!(state, None | Some('Z')), "{pid} still alive");
    }
}

#[tokio::test]
async fn a_server_ignoring_sigterm_is_killed_after_the_grace() {
    let fx = Fixture::new();
    let spec = fx.spec(
        "srv-stubborn",
        "c1",
        free_port(),
        vec![
            "sh".into(),
            "-c".into(),
            "trap '' TERM; sleep 300 & wait; wait".into(),
        ],
    );
    let handle = fx.runtime.start(&spec).await.unwrap();
    let pgid = pgid_of(&handle);
    wait_until("the worker started", Duration::from_secs(10), || {
        live_members(pgid).len() == 2
    })
    .await;
    let grace = Duration::from_millis(600);
    let stopping = Instant::now();
    fx.runtime.stop(&handle, grace).await.unwrap();
    let took = stopping.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(4),
        "took {took:?}"
    );
    assert_eq!(live_members(pgid), Vec::<i32>::new());
    assert_eq!(
        fx.runtime.exited(&handle).await,
        Some(137),
        "SIGKILL reads as 128 + 9"
    );
}

#[tokio::test]
async fn a_server_that_dies_at_start_is_crashed_with_cause_and_log_line() {
    let fx = Fixture::new();
    let message = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB";
    let spec = fx.sim_spec("srv-oom", "c1", &["--fail-at-start", message]);
    let handle = fx.runtime.start(&spec).await.unwrap();
    let failure = fx
        .runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::Crashed, "{failure}");
    assert_eq!(failure.cause, Some(CrashCause::CudaOutOfMemory));
    assert_eq!(failure.sample_log_line.as_deref(), Some(message));
    assert_eq!(
        failure.log_path.as_deref(),
        Some(spec.log_path.to_str().unwrap())
    );
    assert_eq!(fx.runtime.exited(&handle).await, Some(1));
    fx.runtime.stop(&handle, GRACE).await.unwrap();
    assert_eq!(record_files(&fx.records()), Vec::<String>::new());
}

#[tokio::test]
async fn a_server_that_never_gets_ready_is_startup_timeout() {
    let fx = Fixture::new();
    let spec = fx.sim_spec("srv-slow", "c1", &["--slow-start-s", "3600"]);
    let handle = fx.runtime.start(&spec).await.unwrap();
    let timeout = Duration::from_secs(2);
    let waiting = Instant::now();
    let failure = fx
        .runtime
        .wait_ready(&handle, "/health", timeout, POLL)
        .await
        .unwrap_err();
    let waited = waiting.elapsed();
    assert_eq!(failure.class, FailureClass::StartupTimeout, "{failure}");
    assert!(
        failure
            .message
            .contains("not ready after 2s (last answer: HTTP 503)"),
        "{failure}"
    );
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(2),
        "waited {waited:?}"
    );
    assert_eq!(fx.runtime.exited(&handle).await, None);
    fx.runtime.stop(&handle, GRACE).await.unwrap();
    assert_eq!(live_members(pgid_of(&handle)), Vec::<i32>::new());
}

#[tokio::test]
async fn a_missing_program_or_tree_fails_without_leaving_anything() {
    let fx = Fixture::new();
    let mut spec = fx.spec(
        "srv-none",
        "c1",
        free_port(),
        vec!["/nonexistent/vllm-serve".into()],
    );
    let failure = fx.runtime.start(&spec).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Crashed, "{failure}");
    assert!(
        failure
            .sample_log_line
            .unwrap()
            .contains("/nonexistent/vllm-serve")
    );
    assert!(
        std::fs::read_to_string(&spec.log_path)
            .unwrap()
            .contains("cannot start")
    );
    assert_eq!(record_files(&fx.records()), Vec::<String>::new());

    spec.source = ServerSource::Path {
        root: fx.dir.path().join("no-such-tree"),
    };
    let failure = fx.runtime.start(&spec).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::ImageMissing, "{failure}");
    let missing = fx.dir.path().join("no-such-tree");
    let failure = fx
        .runtime
        .ensure_image(missing.to_str().unwrap(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::ImageMissing);
    let found = fx
        .runtime
        .ensure_image(fx.dir.path().to_str().unwrap(), |_| {})
        .await
        .unwrap();
    assert_eq!(Path::new(&found.id), fx.dir.path().canonicalize().unwrap());
    assert!(!found.pulled);
}

/// `/proc/<pid>/stat` field 22 (start time); 0 for a process that is gone. Our own process
/// group's leader can be gone while the group lives on (a shell that started the tests in the
/// background and exited, as CI's runner may): a record naming that group is garbage all the same.
fn start_time_of(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[22 - 3].parse().unwrap()
}

#[tokio::test]
async fn cleanup_stops_leftovers_of_this_state_and_never_a_reused_pid() {
    let fx = Fixture::new();
    // An "earlier run" that died without stopping its servers: handles dropped, processes live.
    let earlier = Runtime::process(fx.records());
    let mut leftovers = Vec::new();
    for name in ["left-1", "left-2"] {
        let handle = earlier
            .start(&fx.sim_spec(name, "campaign-x", &[]))
            .await
            .unwrap();
        leftovers.push(pgid_of(&handle));
    }
    // The same campaign name, but another state directory's server (its record here only to
    // prove that selection is by state id), and a server of the cleaning run itself.
    let mut other_spec = fx.sim_spec("other", "campaign-x", &[]);
    other_spec.labels.extend(
        Owner {
            state: "another-state".to_string(),
            ..fx.owner.clone()
        }
        .labels(),
    );
    let bystander = earlier.start(&other_spec).await.unwrap();
    let mut own_spec = fx.sim_spec("own", "campaign-x", &[]);
    own_spec.labels.extend(fx.later().labels());
    let own = earlier.start(&own_spec).await.unwrap();
    for handle in [&bystander, &own] {
        fx.runtime
            .wait_ready(handle, "/health", READY_TIMEOUT, POLL)
            .await
            .unwrap();
    }
    for pgid in &leftovers {
        wait_until("the leftover runs", Duration::from_secs(10), || {
            !live_members(*pgid).is_empty()
        })
        .await;
    }

    // Records that must not lead to a kill: a pid now used by another process group leader
    // (recorded start time differs), and a pid that no longer exists.
    let mut stranger = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let stranger_pid = stranger.id() as i32;
    fx.write_record(
        &format!("{stranger_pid}-1.json"),
        &fx.owner,
        stranger_pid,
        1,
        Some("t1"),
    );
    fx.write_record("999999999-1.json", &fx.owner, 999_999_999, 1, Some("t2"));

    let cleanup = fx.runtime.cleanup_leftovers(&fx.later()).await.unwrap();
    let mut removed = cleanup.removed.clone();
    removed.sort();
    assert_eq!(removed, vec!["left-1".to_string(), "left-2".to_string()]);
    for pgid in &leftovers {
        assert_eq!(live_members(*pgid), Vec::<i32>::new());
    }
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "a reused pid was signalled"
    );
    assert!(
        cleanup
            .skipped
            .iter()
            .any(|s| s.contains(&format!("pid {stranger_pid} runs but does not carry"))),
        "{:?}",
        cleanup.skipped
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    let mut remaining = record_files(&fx.records());
    let mut expected = vec![format!("{}-", bystander.id), format!("{}-", own.id)];
    remaining.sort();
    expected.sort();
    assert_eq!(remaining.len(), 2, "{remaining:?}");
    for (file, prefix) in remaining.iter().zip(&expected) {
        assert!(file.starts_with(prefix), "{remaining:?}");
    }
    for handle in [&bystander, &own] {
        assert!(
            !live_members(pgid_of(handle)).is_empty(),
            "{} was stopped",
            handle.name
        );
        fx.runtime.stop(handle, GRACE).await.unwrap();
    }
    assert_eq!(record_files(&fx.records()), Vec::<String>::new());
}

/// Issue 17 item 11: garbage pid records — pid 0 (`kill(0)` would signal isobench's own
/// group), pid 1, isobench's own pid and group, an unrelated process with its real start time,
/// a token carried by a process in isobench's own group — are reported, deleted and never
/// signalled.
#[tokio::test]
async fn garbage_records_are_reported_and_never_signalled() {
    use std::os::unix::process::CommandExt;
    let fx = Fixture::new();
    let own_pid = std::process::id() as i32;
    // SAFETY: getpgrp has no preconditions.
    let own_pgid = unsafe { libc::getpgrp() };
    // Unrelated processes: one leading its own group (as a server would), one in ours, and one
    // in ours that even carries a token.
    let mut leader = std::process::Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let mut member = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let mut carrier = std::process::Command::new("sleep")
        .arg("300")
        .env(SERVER_TOKEN_ENV, "carried-in-our-group")
        .spawn()
        .unwrap();
    let (leader_pid, member_pid) = (leader.id() as i32, member.id() as i32);
    let carrier_pid = carrier.id() as i32;
    wait_until(
        "the carrier shows its environment",
        Duration::from_secs(10),
        || {
            std::fs::read(format!("/proc/{carrier_pid}/environ"))
                .is_ok_and(|e| String::from_utf8_lossy(&e).contains("carried-in-our-group"))
        },
    )
    .await;
    let o = &fx.owner;
    fx.write_record("zero.json", o, 0, 0, None);
    fx.write_record("zero-tok.json", o, 0, 7, Some("zero-tok"));
    fx.write_record("init.json", o, 1, start_time_of(1), Some("init"));
    fx.write_record(
        "self.json",
        o,
        own_pid,
        start_time_of(own_pid),
        Some("self"),
    );
    fx.write_record(
        "group.json",
        o,
        own_pgid,
        start_time_of(own_pgid),
        Some("group"),
    );
    fx.write_record(
        "leader.json",
        o,
        leader_pid,
        start_time_of(leader_pid),
        None,
    );
    fx.write_record(
        "leader-tok.json",
        o,
        leader_pid,
        start_time_of(leader_pid),
        Some("nope"),
    );
    fx.write_record(
        "member.json",
        o,
        member_pid,
        start_time_of(member_pid),
        Some("nope2"),
    );
    fx.write_record(
        "starting-carried.json",
        o,
        0,
        0,
        Some("carried-in-our-group"),
    );

    let cleanup = fx.runtime.cleanup_leftovers(&fx.later()).await.unwrap();
    assert_eq!(cleanup.removed, Vec::<String>::new());
    for (child, what) in [
        (&mut leader, "an unrelated group leader"),
        (&mut member, "a process of our own group"),
        (&mut carrier, "a token carrier in our own group"),
    ] {
        assert!(child.try_wait().unwrap().is_none(), "{what} was signalled");
    }
    // Every record is reported (which record, and why) and deleted.
    for file in [
        "zero.json",
        "zero-tok.json",
        "init.json",
        "self.json",
        "group.json",
        "leader.json",
        "leader-tok.json",
        "member.json",
        "starting-carried.json",
    ] {
        assert!(
            cleanup.skipped.iter().any(|s| s.contains(file)),
            "{file} not reported: {:#?}",
            cleanup.skipped
        );
    }
    assert!(
        cleanup
            .skipped
            .iter()
            .any(|s| s.contains("starting-carried.json") && s.contains("own")),
        "{:#?}",
        cleanup.skipped
    );
    assert_eq!(record_files(&fx.records()), Vec::<String>::new());
    for mut child in [leader, member, carrier] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// What a run killed between a server's spawn and its pid record leaves: a starting record and
/// a live server (with a worker in its group) that carries the record's token.
#[tokio::test]
async fn cleanup_finds_a_server_killed_before_its_pid_record() {
    use std::os::unix::process::CommandExt;
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.records()).unwrap();
    let token = format!("test-{}", std::process::id());
    fx.write_record(
        &format!("starting-{token}.json"),
        &fx.owner,
        0,
        0,
        Some(&token),
    );
    let mut server = std::process::Command::new("sh")
        .args(["-c", "sleep 300 & sleep 300; wait"])
        .env(isobench::runtime::process::SERVER_TOKEN_ENV, &token)
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = server.id() as i32;
    wait_until(
        "the server and its worker run",
        Duration::from_secs(10),
        || live_members(pgid).len() == 3,
    )
    .await;
    // Another state directory's starting record: not ours, left alone.
    let other_state = Owner {
        state: "another-state".to_string(),
        ..fx.owner.clone()
    };
    fx.write_record("starting-other.json", &other_state, 0, 0, Some("nobody"));

    let reaper = std::thread::spawn(move || server.wait());
    assert_eq!(
        fx.runtime
            .cleanup_leftovers(&fx.later())
            .await
            .unwrap()
            .removed,
        vec![format!("starting-{token}")]
    );
    assert_eq!(live_members(pgid), Vec::<i32>::new());
    reaper.join().unwrap().unwrap();
    assert_eq!(record_files(&fx.records()), vec!["starting-other.json"]);

    // A normal start leaves only its pid record once it runs, and the server carries a token.
    let spec = fx.sim_spec("srv-t", "campaign-z", &[]);
    let handle = fx.runtime.start(&spec).await.unwrap();
    // Read the environment only once the server runs: right after exec the kernel may not have
    // laid out the new stack yet, and /proc/<pid>/environ then reads empty.
    fx.runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap();
    let pid = pgid_of(&handle);
    let records = record_files(&fx.records());
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().any(|r| r.starts_with(&format!("{pid}-"))));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let prefix = format!("{}=", isobench::runtime::process::SERVER_TOKEN_ENV);
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(prefix.as_bytes()) && v.len() > prefix.len()),
        "the server carries its start token; its environment names: {:?}",
        environ
            .split(|b| *b == 0)
            .filter_map(|v| v.split(|b| *b == b'=').next())
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
    );
    fx.runtime.stop(&handle, GRACE).await.unwrap();
}
