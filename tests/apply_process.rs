//! `isobench apply` end to end with the process runtime: real `isobench sim` servers as child
//! processes, real HTTP, real files, the real binary killed with SIGKILL and SIGINT.

mod apply_support;
use apply_support::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// 2 commits × 3 arms × 2 trials on 2 declared GPUs; one server per GPU.
fn campaign_text(marker: &str, extra_commit: bool) -> String {
    SimCampaign {
        arms: vec!["baseline", "human", "agent"],
        arm_path: "srv/{{ commit.short }}/{arm}",
        commits: if extra_commit {
            vec!['1', '2', '3']
        } else {
            vec!['1', '2']
        },
        ..SimCampaign::marked(format!("apply-{marker}"), marker, 2)
    }
    .text()
}

fn write_servers(dir: &std::path::Path, commits: &[&str], sim_toml: impl Fn(&str, &str) -> String) {
    for c in commits {
        for arm in ["baseline", "human", "agent"] {
            write_sim_config(dir, &format!("srv/{c}/{arm}"), &sim_toml(c, arm));
        }
    }
}

fn fast(_: &str, arm: &str) -> String {
    let itl = match arm {
        "human" => 1.0,
        _ => 2.0,
    };
    format!("ttft_ms = 5.0\nitl_ms = {itl}\n")
}

#[test]
fn full_campaign_runs_two_servers_at_a_time_and_resumes_nothing() {
    let marker = unique("full");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222", "33333333"], fast);
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();

    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let state = dir.path().join(".isobench");
    let journal = Journal::read(&state);
    // Every measurement done: 2 commits × 3 arms × 2 trials.
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 12);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    // Each result file exists and carries the requested output tokens.
    for e in measures.values() {
        let (path, _) = e["outputs"].as_object().unwrap().iter().next().unwrap();
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state.join(path)).unwrap()).unwrap();
        assert_eq!(result["completed"], 16);
        assert_eq!(result["total_output_tokens"], 16 * 16);
        // The measurement's wall time, at least the load generator's own duration.
        let took = e["info"]["duration_s"].as_f64().unwrap_or(0.0);
        assert!(
            took >= result["duration"].as_f64().unwrap() && took < 60.0,
            "{e}"
        );
    }
    // Servers ran two at a time (two GPUs), never more, each on its own GPU.
    let intervals = journal.session_intervals();
    assert_eq!(intervals.len(), 12);
    assert_eq!(max_overlap(&intervals), 2, "{intervals:#?}");
    let gpus: Vec<u64> = journal
        .entries
        .iter()
        .filter(|e| e["event"] == "done" && e["addr"].as_str().unwrap().starts_with("start["))
        .map(|e| e["info"]["gpus"][0].as_u64().unwrap())
        .collect();
    assert!(gpus.contains(&0) && gpus.contains(&1), "{gpus:?}");
    assert!(no_server_left(&marker), "a sim process survived");
    // The report and the seed-compatible files are written.
    let results = dir.path().join("results/apply-".to_string() + &marker);
    assert!(results.join("report.html").exists());
    assert!(
        results
            .join("agent_benchmark_results/11111111_human_result.json")
            .exists()
    );
    let seed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            results.join("baseline_benchmark_results/11111111_baseline_result.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(seed["duration_s"].as_f64().unwrap() > 0.0, "{seed}");

    // Again: nothing to do, nothing re-measured, results untouched.
    let before = result_files(&state);
    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(out.text().contains("nothing to do"), "{}", out.text());
    assert_eq!(before, result_files(&state));
    assert_eq!(Journal::read(&state).entries.len(), journal.entries.len());

    // A new commit: exactly its nodes run.
    std::fs::write(&manifest, campaign_text(&marker, true)).unwrap();
    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let after = Journal::read(&state);
    let new_runs: Vec<&str> = after.entries[journal.entries.len()..]
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| e["addr"].as_str().unwrap())
        .collect();
    assert!(!new_runs.is_empty());
    for addr in &new_runs {
        assert!(
            addr.contains("33333333") || addr.starts_with("pull[path=srv/33333333"),
            "unexpected rerun of {addr}"
        );
    }
    for (path, bytes) in &before {
        assert_eq!(
            &std::fs::read(state.join(path)).unwrap(),
            bytes,
            "{path} changed"
        );
    }
}

#[test]
fn kill_9_at_any_moment_loses_at_most_the_step_in_flight() {
    let marker = unique("kill");
    let dir = tempfile::tempdir().unwrap();
    // Slow enough to catch each phase: 1.5 s not ready, ~1 s per measurement.
    write_servers(dir.path(), &["11111111", "22222222"], |_, _| {
        "ttft_ms = 20.0\nitl_ms = 15.0\nslow_start_s = 1.5\n".to_string()
    });
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();
    let state = dir.path().join(".isobench");
    let m = manifest.to_str().unwrap();

    // 1. During a server start (the first ready step has begun, the server is not ready yet).
    kill_when(&["apply", "--plain", m], &state, |j| {
        j.any("started", "ready[")
    });
    assert!(
        !no_server_left(&marker),
        "the killed apply's servers must still be running (that is what the next apply cleans up)"
    );
    // 2. Mid-measurement. This run first removes the servers the killed one left behind.
    let second = kill_when(&["apply", "--plain", m], &state, |j| {
        j.count_event_prefix("started", "measure[")
            > j.count_event_prefix("done", "measure[") + j.count_event_prefix("failed", "measure[")
            && j.count_event_prefix("done", "measure[") >= 1
    });
    assert!(
        second.contains("leftover process server"),
        "leftovers of the killed run must be cleaned up:\n{second}"
    );
    // 3. Between steps: right after a measurement finished.
    let done_before = Journal::read(&state).count_event_prefix("done", "measure[");
    kill_when(&["apply", "--plain", m], &state, move |j| {
        j.count_event_prefix("done", "measure[") > done_before
    });

    // Snapshot what is done, then resume to completion.
    let snapshot = Journal::read(&state);
    let done: BTreeMap<String, serde_json::Value> = snapshot
        .latest_with_prefix("measure[")
        .into_iter()
        .filter(|(_, e)| e["event"] == "done")
        .collect();
    assert!(!done.is_empty());
    let files = result_files(&state);
    let out = isobench(&["apply", "--plain", m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let final_journal = Journal::read(&state);
    let measures = final_journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 12);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    // Finished measurements were not measured again (no `started` after the snapshot), and
    // their files are byte-identical.
    for addr in done.keys() {
        let restarts = final_journal.entries[snapshot.entries.len()..]
            .iter()
            .filter(|e| e["addr"] == addr.as_str() && e["event"] == "started")
            .count();
        assert_eq!(restarts, 0, "{addr} was measured again");
    }
    for (path, bytes) in &files {
        assert_eq!(
            &std::fs::read(state.join(path)).unwrap(),
            bytes,
            "{path} changed"
        );
    }
    // Interrupted measurements got a fresh attempt directory.
    for (addr, e) in &measures {
        if !done.contains_key(addr) {
            let attempts = final_journal
                .entries
                .iter()
                .filter(|x| x["addr"] == addr.as_str() && x["event"] == "started")
                .map(|x| x["attempt"].as_u64().unwrap())
                .collect::<Vec<_>>();
            let mut sorted = attempts.clone();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                attempts.len(),
                "{addr}: an attempt number was reused: {attempts:?}"
            );
            assert_eq!(e["attempt"].as_u64().unwrap(), *attempts.last().unwrap());
        }
    }
    assert!(
        no_server_left(&marker),
        "a sim process survived the campaign"
    );
}

#[test]
fn ctrl_c_stops_servers_quickly_and_resume_completes() {
    let marker = unique("sigint");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222"], |_, _| {
        "ttft_ms = 20.0\nitl_ms = 20.0\n".to_string()
    });
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();
    let state = dir.path().join(".isobench");
    let m = manifest.to_str().unwrap();
    let (code, elapsed) = ctrl_c_when(
        &["apply", "--plain", m],
        &state,
        Duration::from_secs(60),
        |j| j.any("started", "measure["),
    );
    assert_eq!(code, Some(130));
    assert!(elapsed < Duration::from_secs(10));
    assert!(no_server_left(&marker), "Ctrl-C left a server running");
    let j = Journal::read(&state);
    assert!(
        j.latest_with_prefix("stop[")
            .values()
            .any(|e| e["event"] == "done"),
        "the running servers were stopped through their stop steps"
    );
    let out = isobench(&["apply", "--plain", m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        Journal::read(&state)
            .latest_with_prefix("measure[")
            .values()
            .all(|e| e["event"] == "done")
    );
}

#[test]
fn failures_are_classified_and_the_campaign_goes_on() {
    let marker = unique("fail");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222"], |c, arm| {
        match (c, arm) {
        ("11111111", "human") => "fail_at_start = \"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB\"\n".into(),
        ("11111111", "agent") => "slow_start_s = 86400.0\n".into(),
        ("22222222", "human") => "error_rate = 1.0\n".into(),
        _ => "ttft_ms = 5.0\nitl_ms = 2.0\n".into(),
    }
    });
    // The agent of commit 2 has no installation at all.
    std::fs::remove_dir_all(dir.path().join("srv/22222222/agent")).unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(
        &manifest,
        campaign_text(&marker, false).replace("timeout = \"20s\"", "timeout = \"3s\""),
    )
    .unwrap();
    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let j = Journal::read(&dir.path().join(".isobench"));
    let m = j.latest_with_prefix("measure[");
    let class = |commit: &str, arm: &str| -> (String, String) {
        let e = m
            .iter()
            .find(|(a, _)| {
                a.contains(commit) && a.contains(&format!("arm={arm},")) && a.contains("trial=1")
            })
            .unwrap()
            .1;
        (
            e["failure"]["class"].as_str().unwrap_or("-").to_string(),
            e["failure"]["cause"].as_str().unwrap_or("-").to_string(),
        )
    };
    assert_eq!(
        class("11111111", "human"),
        ("crashed".into(), "cuda_out_of_memory".into())
    );
    assert_eq!(
        class("11111111", "agent"),
        ("startup_timeout".into(), "-".into())
    );
    assert_eq!(
        class("22222222", "human"),
        ("all_requests_failed".into(), "-".into())
    );
    assert_eq!(
        class("22222222", "agent"),
        ("image_missing".into(), "-".into())
    );
    // The healthy arms were all measured.
    for (addr, e) in &m {
        if addr.contains("arm=baseline") {
            assert_eq!(e["event"], "done", "{addr}");
        }
    }
    // The crash's log line is kept for the report, and the summary names the log.
    let crash = m
        .iter()
        .find(|(a, _)| a.contains("11111111") && a.contains("arm=human,"))
        .unwrap()
        .1;
    assert!(
        crash["failure"]["sample_log_line"]
            .as_str()
            .unwrap()
            .contains("CUDA out of memory")
    );
    assert!(
        out.text()
            .contains("log: attempts/start_commit=11111111,arm=human"),
        "{}",
        out.text()
    );
    assert!(no_server_left(&marker));
    // The report's failure breakdown names the categories.
    let report = isobench(&["report", "--format", "markdown", manifest.to_str().unwrap()]);
    let text = report.text();
    for class in [
        "crashed",
        "startup_timeout",
        "all_requests_failed",
        "image_missing",
    ] {
        assert!(text.contains(class), "report lacks {class}:\n{text}");
    }
}

#[test]
fn a_second_apply_on_the_same_state_is_refused_naming_the_holder() {
    let marker = unique("lock");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222"], |_, _| {
        "ttft_ms = 20.0\nitl_ms = 20.0\n".to_string()
    });
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();
    let state = dir.path().join(".isobench");
    let m = manifest.to_str().unwrap();
    let mut first = spawn_isobench(&["apply", "--plain", m]);
    wait_for(&state, Duration::from_secs(60), |j| {
        j.any("started", "start[")
    });
    let second = isobench(&["apply", "--plain", m]);
    assert_eq!(second.status.code(), Some(1));
    let text = second.text();
    assert!(
        text.contains("is locked by pid") && text.contains(&first.id().to_string()),
        "{text}"
    );
    let unlock = isobench(&["unlock", m]);
    assert_ne!(
        unlock.status.code(),
        Some(0),
        "unlock must refuse while the holder lives"
    );
    assert!(unlock.text().contains("live process"), "{}", unlock.text());
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    wait_child(&mut first, Duration::from_secs(10)).expect("first apply stops");
    assert!(no_server_left(&marker));
}

#[test]
fn secrets_reach_the_server_but_never_the_state_plan_or_results() {
    let marker = unique("secret");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222"], fast);
    let manifest = dir.path().join("m.toml");
    let text = campaign_text(&marker, false)
        .replace("repeats = 2", "repeats = 1")
        .replace(&format!("env = {{ ISOBENCH_TEST_MARKER = \"{marker}\" }}"), &format!("env = {{ ISOBENCH_TEST_MARKER = \"{marker}\", HF_TOKEN = \"${{ISOBENCH_TEST_SECRET}}\", API_KEY = \"literal-key-4711\" }}"));
    std::fs::write(&manifest, text).unwrap();
    let secret = format!("hf_{}", unique("tok"));
    let out = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["apply", "--plain", manifest.to_str().unwrap()])
        .env("ISOBENCH_TEST_SECRET", &secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let plan = isobench(&["plan", "--format", "json", manifest.to_str().unwrap()]);
    // Neither the secret from the environment nor the literal secret-named value is written anywhere.
    for needle in [secret.as_str(), "literal-key-4711"] {
        assert!(!out.text().contains(needle) && !plan.text().contains(needle));
        for entry in walkdir::WalkDir::new(dir.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
        {
            if entry.path() == manifest {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(needle),
                "{} contains a secret",
                entry.path().display()
            );
        }
    }
    assert!(no_server_left(&marker));
}

#[test]
fn leftovers_are_removed_even_when_nothing_is_left_to_do() {
    let marker = unique("leftover");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222", "33333333"], |c, _| {
        if c == "33333333" {
            "ttft_ms = 5.0\nitl_ms = 2.0\nslow_start_s = 30.0\n".into()
        } else {
            "ttft_ms = 5.0\nitl_ms = 2.0\n".into()
        }
    });
    let manifest = dir.path().join("m.toml");
    let m = manifest.to_str().unwrap();
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();
    assert_eq!(isobench(&["apply", "--plain", m]).status.code(), Some(0));
    // A third commit whose servers never get ready; kill -9 apply while they start.
    std::fs::write(&manifest, campaign_text(&marker, true)).unwrap();
    let state = dir.path().join(".isobench");
    kill_when(&["apply", "--plain", m], &state, |j| {
        j.any("started", "ready[commit=33333333")
    });
    assert!(
        !no_server_left(&marker),
        "the killed run's servers are still up"
    );
    // Back to the two finished commits: nothing to do, but the orphaned servers must go.
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();
    let out = isobench(&["apply", "--plain", m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(out.text().contains("nothing to do"), "{}", out.text());
    assert!(
        out.text().contains("leftover process server"),
        "{}",
        out.text()
    );
    assert!(no_server_left(&marker));
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

/// Issue 17 item 11: garbage pid records of this state directory — pid 0 (`kill(0)` signals
/// the caller's own group, which `apply` shares with this test), pid 1, this test's pid and
/// group, an unrelated `sleep` with its real start time — are reported and deleted by `apply`,
/// and nothing is signalled: the `sleep` lives on and `apply` completes.
#[test]
fn garbage_pid_records_are_reported_and_never_signalled() {
    use std::os::unix::process::CommandExt;
    let marker = unique("garbage");
    let dir = tempfile::tempdir().unwrap();
    write_servers(dir.path(), &["11111111", "22222222"], fast);
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, campaign_text(&marker, false)).unwrap();
    let state = dir.path().join(".isobench");
    let records = state.join("processes");
    std::fs::create_dir_all(&records).unwrap();
    let state_id = isobench::state::owned::state_id(&state).unwrap();
    let mut sleep = Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let sleep_pid = sleep.id() as i32;
    let own_pid = std::process::id() as i32;
    // SAFETY: getpgrp has no preconditions.
    let own_pgid = unsafe { libc::getpgrp() };
    let record = |file: &str, pid: i32, start_time: u64| {
        let text = serde_json::json!({
            "pid": pid,
            "start_time": start_time,
            "name": file,
            "labels": {
                "isobench.campaign": format!("apply-{marker}"),
                "isobench.state": state_id,
                "isobench.run": "an-earlier-run",
                "isobench.host": isobench::state::lock::hostname(),
            },
        });
        std::fs::write(records.join(format!("{file}.json")), text.to_string()).unwrap();
    };
    record("pid-zero", 0, 0);
    record("pid-one", 1, start_time_of(1));
    record("own-pid", own_pid, start_time_of(own_pid));
    record("own-group", own_pgid, start_time_of(own_pgid));
    record("unrelated-sleep", sleep_pid, start_time_of(sleep_pid));

    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    let text = out.text();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        sleep.try_wait().unwrap().is_none(),
        "the unrelated sleep was signalled: {text}"
    );
    for file in [
        "pid-zero",
        "pid-one",
        "own-pid",
        "own-group",
        "unrelated-sleep",
    ] {
        assert!(
            text.lines().any(|l| l.contains("warning: pid record")
                && l.contains(&format!("{file}.json"))
                && l.contains("not signalled")),
            "{file} not reported:\n{text}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&records)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "records left: {left:?}");
    assert!(
        Journal::read(&state)
            .latest_with_prefix("measure[")
            .values()
            .all(|e| e["event"] == "done")
    );
    assert!(no_server_left(&marker));
    sleep.kill().unwrap();
    sleep.wait().unwrap();
}
