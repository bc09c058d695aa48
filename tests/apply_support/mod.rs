//! Helpers for end-to-end `apply` tests: run the real binary, read its journal, find processes.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// `isobench sim` arguments of the marked campaigns: the arm's `sim.toml`, no chat template.
pub const SIM_WITH_CONFIG: &str =
    "--config sim.toml --host 127.0.0.1 --port {{ port }} --model sim --chat-template-tokens 0";

/// The `[load]` of the marked campaigns: 16 prompts of 32 → 16 tokens at concurrency 4.
pub const LOAD_16: &str = r#"dataset = { input_len = 32, output_len = 16 }
num_prompts = 16
concurrency = 4
warmup = 2
timeout = "60s"
"#;

/// The manifest the process-runtime `apply` tests share: `isobench sim` servers, one declared
/// GPU each, for arms under `srv/`; the fields are what the tests vary.
pub struct SimCampaign {
    pub name: String,
    pub repeats: u32,
    /// Arm names; `agent` gets `role = "agent"`.
    pub arms: Vec<&'static str>,
    /// Each arm's server directory, `{arm}` standing for its name (templates allowed).
    pub arm_path: &'static str,
    /// `isobench sim`'s arguments.
    pub sim_args: &'static str,
    /// `[server]` lines between `gpus` and `ready` (the servers' environment).
    pub server_env: String,
    /// The lines of `[load]`.
    pub load: String,
    /// `resources.gpus`.
    pub gpus: &'static str,
    /// Each commit's digit: `1` → human `1111…`, parent `1000…`.
    pub commits: Vec<char>,
}

impl SimCampaign {
    /// Two arms (`srv/baseline`, `srv/human`) with their `sim.toml`, one commit, two GPUs, and
    /// `ISOBENCH_TEST_MARKER=<marker>` in the servers' environment (see [`no_server_left`]).
    pub fn marked(name: String, marker: &str, repeats: u32) -> SimCampaign {
        SimCampaign {
            name,
            repeats,
            arms: vec!["baseline", "human"],
            arm_path: "srv/{arm}",
            sim_args: SIM_WITH_CONFIG,
            server_env: format!("env = {{ ISOBENCH_TEST_MARKER = \"{marker}\" }}\n"),
            load: LOAD_16.to_string(),
            gpus: "[0, 1]",
            commits: vec!['1'],
        }
    }

    pub fn text(&self) -> String {
        let mut m = format!(
            "version = 1\nname = \"{}\"\nrepeats = {}\n",
            self.name, self.repeats
        );
        for arm in &self.arms {
            let role = if *arm == "agent" {
                "role = \"agent\"\n"
            } else {
                ""
            };
            let path = self.arm_path.replace("{arm}", arm);
            m.push_str(&format!(
                "\n[[arms]]\nname = \"{arm}\"\n{role}path = \"{path}\"\n"
            ));
        }
        m.push_str(&format!(
            r#"
[models.sim]
hf = "isobench/sim"
served_name = "sim"

[server]
runtime = "process"
command = "{{{{ isobench }}}} sim {}"
gpus = 1
{}ready = {{ path = "/health", timeout = "20s", interval = "50ms" }}

[load]
{}
[resources]
gpus = {}
gpu_kind = "test-gpu"
"#,
            self.sim_args, self.server_env, self.load, self.gpus
        ));
        for &digit in &self.commits {
            m.push_str(&commit_block(digit));
        }
        m
    }
}

/// A `[[commits]]` table of the sim model: `1` → human `1111…`, parent `1000…`.
pub fn commit_block(digit: char) -> String {
    let human: String = std::iter::repeat_n(digit, 40).collect();
    let parent: String = std::iter::once(digit)
        .chain(std::iter::repeat_n('0', 39))
        .collect();
    format!("\n[[commits]]\nhuman = \"{human}\"\nparent = \"{parent}\"\nmodel = \"sim\"\n")
}

/// Writes `sim_toml` as `<dir>/<rel>/sim.toml`, making the directory.
pub fn write_sim_config(dir: &Path, rel: &str, sim_toml: &str) {
    let d = dir.join(rel);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("sim.toml"), sim_toml).unwrap();
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

pub trait OutputText {
    /// stdout and stderr together.
    fn text(&self) -> String;
}

impl OutputText for Output {
    fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

pub fn isobench(args: &[&str]) -> Output {
    isobench_env(args, &[])
}

/// Runs isobench to its end with extra environment variables.
pub fn isobench_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(args)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run isobench")
}

/// Runs isobench with extra environment, giving up (and failing) after `limit`; returns its
/// exit code and output.
pub fn run_bounded(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String) {
    let (mut child, log) = spawn_isobench_env(args, env);
    let status = wait_child(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        status.is_some(),
        "isobench did not end within {limit:?}:\n{text}"
    );
    (status.unwrap().code(), text)
}

/// Starts isobench in the background; its output goes to a log file in the temp directory.
pub fn spawn_isobench(args: &[&str]) -> Child {
    spawn_isobench_logged(args).0
}

/// Like [`spawn_isobench`], also returning the path of its output log.
pub fn spawn_isobench_logged(args: &[&str]) -> (Child, PathBuf) {
    spawn_isobench_env(args, &[])
}

/// Like [`spawn_isobench_logged`], with extra environment variables.
pub fn spawn_isobench_env(args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf) {
    let log = std::env::temp_dir().join(format!("isobench-test-{}.log", unique("bg")));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(args)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawn isobench");
    (child, log)
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Polls the journal until `pred` holds (panics after `timeout`).
pub fn wait_for(state: &Path, timeout: Duration, pred: impl Fn(&Journal) -> bool) {
    let t0 = Instant::now();
    loop {
        if pred(&Journal::read(state)) {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "condition not reached within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs isobench and SIGKILLs it the moment the journal satisfies `pred`; returns its output.
pub fn kill_when(args: &[&str], state: &Path, pred: impl Fn(&Journal) -> bool) -> String {
    let (mut child, log) = spawn_isobench_logged(args);
    wait_for(state, Duration::from_secs(120), pred);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Runs isobench, sends SIGINT (Ctrl-C) once the journal satisfies `pred` (waiting up to
/// `timeout` for it), and gives 10 s to exit; returns the exit code and the time it took.
pub fn ctrl_c_when(
    args: &[&str],
    state: &Path,
    timeout: Duration,
    pred: impl Fn(&Journal) -> bool,
) -> (Option<i32>, Duration) {
    let mut child = spawn_isobench(args);
    wait_for(state, timeout, pred);
    let t0 = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status =
        wait_child(&mut child, Duration::from_secs(10)).expect("apply exits within 10 s of Ctrl-C");
    (status.code(), t0.elapsed())
}

pub struct Journal {
    pub entries: Vec<serde_json::Value>,
}

impl Journal {
    pub fn read(state: &Path) -> Journal {
        let text = std::fs::read_to_string(state.join("journal.jsonl")).unwrap_or_default();
        Journal {
            entries: text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    }

    pub fn latest_with_prefix(&self, prefix: &str) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            let addr = e["addr"].as_str().unwrap();
            if addr.starts_with(prefix) {
                out.insert(addr.to_string(), e.clone());
            }
        }
        out
    }

    pub fn any(&self, event: &str, prefix: &str) -> bool {
        self.count_event_prefix(event, prefix) > 0
    }

    pub fn count_event_prefix(&self, event: &str, prefix: &str) -> usize {
        self.entries
            .iter()
            .filter(|e| e["event"] == event && e["addr"].as_str().unwrap().starts_with(prefix))
            .count()
    }

    /// (start, end) in seconds of every server session: `start` started → `stop` done.
    pub fn session_intervals(&self) -> Vec<(f64, f64)> {
        let t = |e: &serde_json::Value| {
            humantime::parse_rfc3339(e["t"].as_str().unwrap())
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let mut starts: BTreeMap<String, f64> = BTreeMap::new();
        let mut out = Vec::new();
        for e in &self.entries {
            let addr = e["addr"].as_str().unwrap();
            let session = addr
                .split_once('[')
                .map(|(_, s)| s.to_string())
                .unwrap_or_default();
            if addr.starts_with("start[") && e["event"] == "started" {
                starts.insert(session, t(e));
            } else if addr.starts_with("stop[")
                && e["event"] == "done"
                && let Some(s) = starts.remove(&session)
            {
                out.push((s, t(e)));
            }
        }
        out
    }
}

/// Most intervals open at one instant.
/// Mean journaled headline (`info.output_throughput`) of `arm`'s measures among `measures`
/// (from [`Journal::latest_with_prefix`]), and how many there were.
pub fn mean_throughput(measures: &BTreeMap<String, serde_json::Value>, arm: &str) -> (f64, usize) {
    let v: Vec<f64> = measures
        .iter()
        .filter(|(a, _)| a.contains(&format!("arm={arm},")))
        .map(|(_, e)| e["info"]["output_throughput"].as_f64().unwrap())
        .collect();
    (v.iter().sum::<f64>() / v.len() as f64, v.len())
}

pub fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    events.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap().then(x.1.cmp(&y.1)));
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        max = max.max(open);
    }
    max as usize
}

/// Every result.json under the state's attempts, by relative path.
pub fn result_files(state: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(state.join("attempts"))
        .into_iter()
        .flatten()
    {
        if entry.file_name() == "result.json" {
            let rel = entry
                .path()
                .strip_prefix(state)
                .unwrap()
                .display()
                .to_string();
            out.insert(rel, std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

/// Whether no process carrying `ISOBENCH_TEST_MARKER=<marker>` in its environment is alive
/// (waits up to 3 s for dying ones).
pub fn no_server_left(marker: &str) -> bool {
    let needle = format!("ISOBENCH_TEST_MARKER={marker}");
    let t0 = Instant::now();
    loop {
        let alive: Vec<PathBuf> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .chars()
                    .all(|c| c.is_ascii_digit())
            })
            .filter(|e| {
                let status = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = status
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'));
                !zombie
                    && std::fs::read(e.path().join("environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            })
            .map(|e| e.path())
            .collect();
        if alive.is_empty() {
            return true;
        }
        if t0.elapsed() > Duration::from_secs(3) {
            eprintln!("still alive: {alive:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
