//! The Slurm backend on a real two-node Slurm cluster (`scripts/slurm-cluster.sh start`: n1 and
//! n2, two GPUs each as GRES): real sbatch/squeue/scancel, real `isobench worker` jobs, the
//! simulator as the server (process runtime), the real controller killed with SIGKILL/SIGINT.
//!
//! The tests share the cluster's four GPUs; the node-failure test takes n2 down, so it runs
//! alone (write lock) while the others may overlap (read lock).

mod apply_support;
mod common;
use apply_support::*;
use common::slurm_env::*;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

static CLUSTER: RwLock<()> = RwLock::new(());

struct Campaign {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    state: PathBuf,
    conf: PathBuf,
    name: String,
}

/// `commits` × 2 arms × `repeats` sessions, one GPU each; `itl_ms` sets how long a session
/// measures (4 prompts × 16 tokens at concurrency 4: about 16 × itl).
fn campaign(
    conf: &Path,
    marker: &str,
    commits: usize,
    repeats: u32,
    itl_ms: f64,
    cluster_extra: &str,
) -> Campaign {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("slurm-{marker}");
    let mut m = format!(
        r#"version = 1
name = "{name}"
repeats = {repeats}

[[arms]]
name = "baseline"
path = "srv/baseline"

[[arms]]
name = "human"
path = "srv/human"

[models.sim]
hf = "isobench/sim"
served_name = "sim"

[server]
runtime = "process"
command = "{{{{ isobench }}}} sim --config sim.toml --host 127.0.0.1 --port {{{{ port }}}} --model sim --chat-template-tokens 0"
gpus = 1
env = {{ ISOBENCH_TEST_MARKER = "{marker}" }}
ready = {{ path = "/health", timeout = "20s", interval = "50ms" }}

[load]
dataset = {{ input_len = 16, output_len = 16 }}
num_prompts = 4
concurrency = 4
warmup = 1
timeout = "300s"

[resources]
gpu_kind = "test-gpu"

[cluster]
backend = "slurm"
partition = "gpu"
poll_interval = "300ms"
{cluster_extra}
"#
    );
    for c in 0..commits {
        let h = format!("{}", c + 1).repeat(40);
        let p = format!("{}{}", c + 1, "0".repeat(39));
        m.push_str(&format!(
            "\n[[commits]]\nhuman = \"{h}\"\nparent = \"{p}\"\nmodel = \"sim\"\n"
        ));
    }
    for arm in ["baseline", "human"] {
        let d = dir.path().join("srv").join(arm);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("sim.toml"),
            format!("ttft_ms = 5.0\nitl_ms = {itl_ms}\n"),
        )
        .unwrap();
    }
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, m).unwrap();
    let state = dir.path().join(".isobench");
    Campaign {
        dir,
        manifest,
        state,
        conf: conf.to_path_buf(),
        name,
    }
}

impl Campaign {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_isobench"));
        c.args(args)
            .arg(&self.manifest)
            .env("NO_COLOR", "1")
            .env("SLURM_CONF", &self.conf);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> (Child, PathBuf) {
        let log = self.dir.path().join(format!("{}.log", unique("apply")));
        let f = std::fs::File::create(&log).unwrap();
        let child = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        (child, log)
    }

    fn jobs_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("cluster/jobs.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn tokens(&self) -> HashSet<String> {
        self.jobs_log()
            .iter()
            .map(|r| r["token"].as_str().unwrap().to_string())
            .collect()
    }

    /// This campaign's jobs `squeue` lists as queued or running.
    fn alive_jobs(&self) -> Vec<(String, String)> {
        let tokens = self.tokens();
        let out = slurm_cmd("squeue")
            .args(["-h", "-o", "%j %T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(name, _)| tokens.contains(*name))
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    }

    fn outcomes(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.state.join("cluster"))
            .unwrap()
            .flatten()
        {
            if let Ok(t) = std::fs::read_to_string(e.path().join("outcome.json")) {
                out.push(serde_json::from_str(&t).unwrap());
            }
        }
        out
    }

    fn wait_jobs(&self, timeout: Duration, pred: impl Fn(&[serde_json::Value]) -> bool) {
        let t0 = Instant::now();
        while !pred(&self.jobs_log()) {
            assert!(
                t0.elapsed() < timeout,
                "timed out; jobs log: {:#?}",
                self.jobs_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn count(log: &[serde_json::Value], event: &str) -> usize {
    log.iter().filter(|r| r["event"] == event).count()
}

/// Running jobs per `squeue`, by state.
fn running(c: &Campaign) -> usize {
    c.alive_jobs()
        .iter()
        .filter(|(_, s)| s == "RUNNING")
        .count()
}

fn wait_until(timeout: Duration, what: &str, pred: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !pred() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn campaign_spreads_over_both_nodes_and_never_shares_a_gpu() {
    let Some(conf) = slurm_or_skip("spread") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("spread");
    // 2 commits × 2 arms × 2 trials = 8 sessions of ~1 s on 4 GPUs.
    let c = campaign(&conf, &marker, 2, 2, 60.0, "");
    let out = c.run(&["apply", "--plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&c.state);
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 8);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    // Slurm's word on placement (squeue's node per job, kept in the jobs log) matches what
    // each job recorded on its node, and both nodes ran sessions.
    let log = c.jobs_log();
    assert_eq!(
        count(&log, "submitting"),
        8,
        "one job per session: {log:#?}"
    );
    let slurm_nodes: BTreeMap<u64, String> = log
        .iter()
        .filter(|r| r["event"] == "ended")
        .map(|r| {
            assert_eq!(r["state"], "COMPLETED", "{r}");
            (
                r["job_id"].as_u64().unwrap(),
                r["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(slurm_nodes.len(), 8);
    let outcomes = c.outcomes();
    assert_eq!(outcomes.len(), 8);
    for o in &outcomes {
        assert_eq!(
            slurm_nodes[&o["job_id"].as_u64().unwrap()],
            o["node"].as_str().unwrap()
        );
        assert_eq!(o["gpus"].as_array().unwrap().len(), 1, "{o}");
    }
    let used: HashSet<&str> = slurm_nodes.values().map(String::as_str).collect();
    assert_eq!(used, HashSet::from(["n1", "n2"]), "{slurm_nodes:?}");
    // No two sessions held the same GPU of a node at once.
    let mut by_gpu: BTreeMap<(String, u64), Vec<(u64, u64)>> = BTreeMap::new();
    for o in &outcomes {
        by_gpu
            .entry((
                o["node"].as_str().unwrap().into(),
                o["gpus"][0].as_u64().unwrap(),
            ))
            .or_default()
            .push((
                o["began_ms"].as_u64().unwrap(),
                o["ended_ms"].as_u64().unwrap(),
            ));
    }
    for (gpu, mut spans) in by_gpu {
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "GPU {gpu:?} shared: {spans:?}");
        }
    }
    // The recorded node reaches the report; each start entry names its node.
    let starts = journal.latest_with_prefix("start[");
    assert!(
        starts
            .values()
            .all(|e| e["info"]["slurm"]["node"].as_str().is_some()),
        "{starts:#?}"
    );
    let md = std::fs::read_to_string(c.dir.path().join("results").join(&c.name).join("report.md"))
        .unwrap();
    assert!(md.contains("Nodes: baseline #1 `n"), "{md}");
    assert!(c.alive_jobs().is_empty());
    assert!(no_server_left(&marker));
    // Nothing left to do, and plan says so.
    let plan = c.run(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", plan.text());
}

#[test]
fn same_node_placement_keeps_each_commits_trials_on_one_node() {
    let Some(conf) = slurm_or_skip("samenode") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("samenode");
    // 2 commits × 2 arms × 2 trials: commit 1 → n1, commit 2 → n2 (sorted, taking turns).
    let c = campaign(&conf, &marker, 2, 2, 30.0, "placement = \"same-node\"\n");
    let out = c.run(&["apply", "--plain", "--no-report"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&c.state);
    let starts = journal.latest_with_prefix("start[");
    assert_eq!(starts.len(), 8);
    for (addr, e) in &starts {
        let want = if addr.contains("commit=11111111") {
            "n1"
        } else {
            "n2"
        };
        assert_eq!(e["info"]["slurm"]["node"], want, "{addr}");
    }
    assert!(c.alive_jobs().is_empty());
}

#[test]
fn kill_9_then_resume_follows_running_jobs_and_submits_nothing_twice() {
    let Some(conf) = slurm_or_skip("kill9") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("kill9");
    // 8 sessions of ~5 s: 4 run, 4 wait for GPUs.
    let c = campaign(&conf, &marker, 2, 2, 250.0, "");
    let (mut child, _log) = c.spawn(&["apply", "--plain"]);
    // Killed once every session is submitted and some run.
    c.wait_jobs(Duration::from_secs(60), |l| count(l, "submitted") == 8);
    wait_until(Duration::from_secs(60), "a running job", || {
        running(&c) >= 1
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Its jobs run on without it.
    assert!(
        !c.alive_jobs().is_empty(),
        "the jobs died with the controller"
    );
    // plan shows them as running jobs, not as work to submit again.
    let plan = c.run(&["plan"]);
    assert!(
        plan.text()
            .contains("is not collected yet: `apply` follows it"),
        "{}",
        plan.text()
    );
    let out = c.run(&["apply", "--plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        out.text().contains("not submitting again"),
        "{}",
        out.text()
    );
    let log = c.jobs_log();
    // No session was submitted twice.
    assert_eq!(count(&log, "submitting"), 8, "{log:#?}");
    let sessions: HashSet<&str> = log
        .iter()
        .filter(|r| r["event"] == "submitting")
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    assert_eq!(sessions.len(), 8);
    assert_eq!(count(&log, "ended"), 8);
    // Nothing measured twice: one `done` per measurement in the whole journal.
    let journal = Journal::read(&c.state);
    assert_eq!(journal.count_event_prefix("done", "measure["), 8);
    assert_eq!(journal.count_event_prefix("started", "measure["), 8);
    assert!(c.alive_jobs().is_empty(), "{:?}", c.alive_jobs());
    assert!(no_server_left(&marker));
}

#[test]
fn ctrl_c_cancels_every_job_within_seconds() {
    let Some(conf) = slurm_or_skip("ctrlc") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("ctrlc");
    // Long sessions (~30 s each): Ctrl-C comes while they run and while others are pending.
    let c = campaign(&conf, &marker, 3, 2, 2000.0, "");
    let (mut child, log) = c.spawn(&["apply", "--plain"]);
    c.wait_jobs(Duration::from_secs(60), |l| count(l, "submitted") == 12);
    wait_until(Duration::from_secs(60), "a running job", || {
        running(&c) >= 1
    });
    let t0 = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_child(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "apply did not exit: {}",
            std::fs::read_to_string(&log).unwrap()
        )
    });
    let took = t0.elapsed();
    assert_eq!(
        status.code(),
        Some(130),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Every job of this apply is gone from squeue, and every one was collected as cancelled.
    assert!(c.alive_jobs().is_empty(), "{:?}", c.alive_jobs());
    let jobs = c.jobs_log();
    let ended: Vec<&serde_json::Value> = jobs.iter().filter(|r| r["event"] == "ended").collect();
    assert_eq!(ended.len(), 12, "{jobs:#?}");
    assert!(
        ended.iter().all(|r| r["state"] == "CANCELLED"),
        "{ended:#?}"
    );
    assert!(no_server_left(&marker));
    // Interrupted work is not a failure: nothing is journaled as failed.
    let journal = Journal::read(&c.state);
    assert_eq!(journal.count_event_prefix("failed", ""), 0);
}

#[test]
fn a_session_past_its_time_limit_is_classified_time_limit() {
    let Some(conf) = slurm_or_skip("timelimit") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("tl");
    // One session measuring for ~3 min under a 1 min limit.
    let c = campaign(&conf, &marker, 1, 1, 12000.0, "time_limit = \"1m\"\n");
    let text = std::fs::read_to_string(&c.manifest)
        .unwrap()
        .replace("[[arms]]\nname = \"human\"\npath = \"srv/human\"\n", "");
    std::fs::write(&c.manifest, text).unwrap();
    let out = c.run(&["apply", "--plain", "--no-report"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let journal = Journal::read(&c.state);
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 1);
    let m = measures.values().next().unwrap();
    assert_eq!(m["event"], "failed");
    assert_eq!(m["failure"]["class"], "time_limit", "{m}");
    assert!(
        m["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("TIMEOUT"),
        "{m}"
    );
    // The worker stopped its server on Slurm's SIGTERM.
    assert!(c.alive_jobs().is_empty());
    assert!(no_server_left(&marker));
}

/// Puts n2 back into service however the test ends.
struct ResumeNode(&'static str);

impl Drop for ResumeNode {
    fn drop(&mut self) {
        let _ = slurm_cmd("scontrol")
            .args(["update", &format!("nodename={}", self.0), "state=resume"])
            .status();
    }
}

#[test]
fn a_node_taken_down_mid_run_is_classified_and_the_campaign_finishes_elsewhere() {
    let Some(conf) = slurm_or_skip("nodefail") else {
        return;
    };
    let _g = CLUSTER.write().unwrap_or_else(|e| e.into_inner());
    let marker = unique("nodefail");
    // 4 sessions of ~8 s on 4 GPUs: two land on n2.
    let c = campaign(&conf, &marker, 1, 2, 500.0, "");
    let (mut child, log) = c.spawn(&["apply", "--plain", "--no-report"]);
    let on_n2 = || {
        let out = slurm_cmd("squeue")
            .args(["-h", "-t", "RUNNING", "-w", "n2", "-o", "%j"])
            .output()
            .unwrap();
        let tokens = c.tokens();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| tokens.contains(l.trim()))
    };
    wait_until(Duration::from_secs(60), "a job running on n2", on_n2);
    let _resume = ResumeNode("n2");
    // Drained first so that it stays out of service once down: the cluster's
    // ReturnToService=2 would take a plain DOWN node back as soon as its slurmd answers.
    for state in ["state=drain", "state=down"] {
        let st = slurm_cmd("scontrol")
            .args(["update", "nodename=n2", state, "reason=isobench-test"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let status = wait_child(&mut child, Duration::from_secs(120)).expect("apply finishes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let journal = Journal::read(&c.state);
    // The lost sessions were classified...
    let lost: Vec<&serde_json::Value> = journal
        .entries
        .iter()
        .filter(|e| e["event"] == "failed" && e["addr"].as_str().unwrap().starts_with("measure["))
        .collect();
    assert!(!lost.is_empty(), "{text}");
    assert!(
        lost.iter().all(|e| e["failure"]["class"] == "node_failure"),
        "{lost:#?}"
    );
    // ...resubmitted, and measured on n1.
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 4);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    let jobs = c.jobs_log();
    assert!(
        jobs.iter()
            .any(|r| r["event"] == "ended" && r["state"] == "NODE_FAIL"),
        "{jobs:#?}"
    );
    assert_eq!(count(&jobs, "submitting"), 4 + lost.len(), "{jobs:#?}");
    let starts = journal.latest_with_prefix("start[");
    let retried: HashSet<String> = lost
        .iter()
        .map(|e| {
            let a = e["addr"].as_str().unwrap();
            a.replacen("measure[", "start[", 1)
                .rsplit_once(',')
                .map(|(s, _)| format!("{s}]"))
                .unwrap()
        })
        .collect();
    for s in &retried {
        assert_eq!(
            starts[s]["info"]["slurm"]["node"], "n1",
            "{s}: {:#}",
            starts[s]
        );
    }
    assert!(c.alive_jobs().is_empty());
    assert!(no_server_left(&marker));
}

#[test]
fn bad_cluster_settings_are_located_and_nothing_is_submitted() {
    let Some(conf) = slurm_or_skip("bad") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("bad");
    // A malformed section: every problem located, nothing runs.
    let c = campaign(
        &conf,
        &marker,
        1,
        1,
        5.0,
        "placement = \"everywhere\"\ngres = \"gpu:2\"\nsbatch_args = [\"--time=5\"]\n",
    );
    let out = c.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let text = out.text();
    for (what, line) in [
        (
            "unknown placement `everywhere`",
            "placement = \"everywhere\"",
        ),
        ("names the GPU type, not a count", "gres = \"gpu:2\""),
        (
            "`--time` is set by isobench",
            "sbatch_args = [\"--time=5\"]",
        ),
    ] {
        assert!(text.contains(what), "{what}: {text}");
        assert!(text.contains(line), "{line} not shown: {text}");
    }
    let out = c.run(&["apply", "--plain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!c.state.join("cluster/jobs.jsonl").exists());

    // A valid section, but no node of the partition has 3 GPUs.
    let c = campaign(&conf, &marker, 1, 1, 5.0, "");
    let text = std::fs::read_to_string(&c.manifest)
        .unwrap()
        .replace("gpus = 1\n", "gpus = 3\n");
    std::fs::write(&c.manifest, text).unwrap();
    let out = c.run(&["plan", "--check-env"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let text = out.text();
    assert!(
        text.contains("needs 3 GPU(s) per session but no node of partition `gpu` has more than 2"),
        "{text}"
    );
    // Located at the `gpus = 3` line of the manifest (line 20).
    assert!(text.contains("m.toml:20:8"), "{text}");
    let out = c.run(&["apply", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.text().contains("nothing submitted"), "{}", out.text());
    assert_eq!(count(&c.jobs_log(), "submitting"), 0);
}

/// Replaces the campaign's human arm with an agent arm: the baseline plus `diff` (written as
/// `agent.diff`), applied at the installation's root.
fn with_agent_patch(c: &Campaign, diff: &str) {
    let text = std::fs::read_to_string(&c.manifest).unwrap().replace(
        "[[arms]]\nname = \"human\"\npath = \"srv/human\"\n",
        "[[arms]]\nname = \"agent\"\nbase = \"baseline\"\npatch = \"agent.diff\"\npatch_target = \".\"\n",
    );
    assert!(
        text.contains("name = \"agent\""),
        "no human arm to replace:\n{text}"
    );
    std::fs::write(&c.manifest, text).unwrap();
    std::fs::write(c.dir.path().join("agent.diff"), diff).unwrap();
}

/// Files below `dir` with their contents (the base installation, before and after).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() {
            out.insert(e.path().to_path_buf(), std::fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn a_patched_agent_arm_runs_from_the_tree_the_controller_built_and_survives_kill_9() {
    let Some(conf) = slurm_or_skip("patched") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("patched");
    // baseline and an agent arm (baseline + a patch making tokens 4× faster) × 2 trials.
    let c = campaign(&conf, &marker, 1, 2, 120.0, "");
    with_agent_patch(
        &c,
        "diff --git a/sim.toml b/sim.toml\n--- a/sim.toml\n+++ b/sim.toml\n@@ -1,2 +1,2 @@\n \
         ttft_ms = 5.0\n-itl_ms = 120\n+itl_ms = 30\n",
    );
    let base = c.dir.path().join("srv/baseline");
    let before = snapshot(&base);
    // Started with a relative manifest path (its state directory relative too): the jobs,
    // which start in the manifest's directory, must still get absolute paths.
    let parent = c.dir.path().parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["apply", "--plain", "--no-report"])
        .arg(c.manifest.strip_prefix(parent).unwrap())
        .current_dir(parent)
        .env("NO_COLOR", "1")
        .env("SLURM_CONF", &c.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once every session is submitted: the patch was built, the jobs run on.
    c.wait_jobs(Duration::from_secs(60), |l| count(l, "submitted") == 4);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let out = c.run(&["apply", "--plain", "--no-report"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        out.text().contains("not submitting again"),
        "{}",
        out.text()
    );
    // Nothing submitted twice, built twice or measured twice.
    let log = c.jobs_log();
    assert_eq!(count(&log, "submitting"), 4, "{log:#?}");
    assert_eq!(count(&log, "ended"), 4, "{log:#?}");
    let journal = Journal::read(&c.state);
    assert_eq!(journal.count_event_prefix("started", "measure["), 4);
    assert_eq!(journal.count_event_prefix("started", "patch["), 1);
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 4);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    // The agent's servers ran the patched config: 4× shorter inter-token latency.
    let tput = |arm: &str| {
        let (mean, trials) = mean_throughput(&measures, arm);
        assert_eq!(trials, 2, "{arm}");
        mean
    };
    let (agent, baseline) = (tput("agent"), tput("baseline"));
    assert!(
        agent > 2.0 * baseline,
        "agent {agent} vs baseline {baseline}"
    );
    // Built once, by the controller (the main journal's patch node is not a job's), into the
    // shared state directory, before the agent's jobs were submitted.
    assert_eq!(journal.count_event_prefix("done", "patch["), 1);
    let patch = &journal.latest_with_prefix("patch[")["patch[commit=11111111,arm=agent]"];
    assert_eq!(patch["info"]["reused"], false, "{patch}");
    let tree = patch["info"]["source"].as_str().unwrap();
    assert!(
        tree.starts_with(&c.state.join("patched/trees").display().to_string()),
        "{tree}"
    );
    let patched_at = humantime::parse_rfc3339_weak(patch["t"].as_str().unwrap()).unwrap();
    let agent_jobs: Vec<serde_json::Value> = c
        .jobs_log()
        .into_iter()
        .filter(|r| {
            r["event"] == "submitting" && r["session"].as_str().unwrap().contains("arm=agent")
        })
        .collect();
    assert_eq!(agent_jobs.len(), 2);
    for r in &agent_jobs {
        let at = humantime::parse_rfc3339_weak(r["t"].as_str().unwrap()).unwrap();
        assert!(at >= patched_at, "{r} before {patch}");
    }
    // The base installation is untouched.
    assert_eq!(snapshot(&base), before);
    assert!(c.alive_jobs().is_empty());
    assert!(no_server_left(&marker));
    let again = c.run(&["apply", "--plain", "--no-report"]);
    assert!(again.text().contains("nothing to do"), "{}", again.text());
}

#[test]
fn a_hostile_agent_patch_fails_on_the_controller_and_no_job_is_submitted_for_it() {
    let Some(conf) = slurm_or_skip("hostile") else {
        return;
    };
    let _g = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let marker = unique("hostile");
    let c = campaign(&conf, &marker, 1, 1, 5.0, "");
    // A path climbing out of the target to a file of the campaign's directory.
    let victim = c.dir.path().join("victim");
    std::fs::write(&victim, "a\n").unwrap();
    with_agent_patch(
        &c,
        "diff --git a/../../victim b/../../victim\n--- a/../../victim\n+++ b/../../victim\n@@ -1 +1 @@\n-a\n+b\n",
    );
    let out = c.run(&["apply", "--plain", "--no-report"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let journal = Journal::read(&c.state);
    let measures = journal.latest_with_prefix("measure[");
    for (addr, e) in &measures {
        if addr.contains("arm=agent,") {
            assert_eq!(e["failure"]["class"], "patch_failed", "{e}");
        } else {
            assert_eq!(e["event"], "done", "{e}");
        }
    }
    assert_eq!(measures.len(), 2);
    // The baseline's job only: nothing of the agent reached Slurm.
    let log = c.jobs_log();
    assert_eq!(count(&log, "submitting"), 1, "{log:#?}");
    assert!(
        log.iter()
            .all(|r| !r["session"].as_str().unwrap().contains("arm=agent"))
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "a\n");
    assert!(c.alive_jobs().is_empty());
}
