//! `apply --commit/--arm` (the seed's single-commit mode) with `--events jsonl`, end to end on
//! the quickstart campaign's simulated servers (process runtime, real HTTP, real files): only
//! the selected arm runs, stdout is a clean JSON event stream, and the seed files it writes have
//! the seed's field meanings.
use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn selected_agent_arm_runs_alone_with_an_event_stream() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples.join("quickstart.toml"),
        dir.path().join("quickstart.toml"),
    )
    .unwrap();
    copy_dir(&examples.join("sim"), &dir.path().join("sim"));
    copy_dir(&examples.join("patches"), &dir.path().join("patches"));
    let out = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args([
            "apply",
            "quickstart.toml",
            "--commit",
            "aaaa1111",
            "--arm",
            "agent-sim",
        ])
        .args(["--events", "jsonl"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Targeting 1 of 2 commit(s) (aaaa1111), 1 of 3 arm(s) (agent-sim)"),
        "{stderr}"
    );

    // Every stdout line is one JSON object: transitions, then the end of the run.
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "apply_finished");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["measured"], 3);
    let transitions = &events[..events.len() - 1];
    for e in transitions {
        let addr = e["addr"].as_str().unwrap();
        assert!(
            ["started", "done", "failed"].contains(&e["event"].as_str().unwrap()),
            "{e}"
        );
        // Only the selected arm's nodes, plus the pull of the base its patch applies to.
        assert!(
            addr.contains("commit=aaaa1111,arm=agent-sim") || addr.starts_with("pull["),
            "{addr}"
        );
    }
    let done = |prefix: &str| {
        transitions
            .iter()
            .filter(|e| e["event"] == "done" && e["addr"].as_str().unwrap().starts_with(prefix))
            .count()
    };
    assert_eq!(done("measure["), 3);
    assert_eq!(done("patch["), 1, "the agent arm's own patch");
    assert_eq!(done("compare["), 0, "no compare over one arm");
    // Each node's `started` comes before its `done`, as in the journal (the same objects).
    let journal = std::fs::read_to_string(dir.path().join(".isobench/journal.jsonl")).unwrap();
    let journaled: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(&journaled[..], transitions);

    // `state list --format json`: the latest entry per node, in journal order.
    let listed = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["state", "list", "quickstart.toml", "--format", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let mut latest: Vec<&serde_json::Value> = Vec::new();
    for e in transitions {
        latest.retain(|x| x["addr"] != e["addr"]);
        latest.push(e);
    }
    latest.sort_by_key(|e| {
        transitions
            .iter()
            .position(|x| x["addr"] == e["addr"])
            .unwrap()
    });
    assert_eq!(listed.iter().collect::<Vec<_>>(), latest);
    assert!(listed.iter().all(|e| e["event"] == "done"));

    // The seed files of the run: the seed's timestamp format, integer counts, and a duration
    // of the whole run (server start to stop), longer than its measuring window.
    let results = dir.path().join("results/quickstart");
    let agent: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            results.join("agent_benchmark_results/aaaa1111_agent_result.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(agent["status"], "success", "{agent:#}");
    let ts = agent["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 19, "{ts}");
    assert_eq!(&ts[10..11], " ", "{ts}");
    assert!(
        agent["metrics"]["successful_requests"].is_u64(),
        "{agent:#}"
    );
    let run = agent["duration_s"].as_f64().unwrap();
    let window = agent["metrics"]["benchmark_duration_s"].as_f64().unwrap();
    assert!(
        run > window,
        "duration_s {run} vs benchmark_duration_s {window}"
    );
    assert_eq!(
        agent["docker_image"],
        serde_json::Value::Null,
        "process runtime"
    );
    assert!(
        !results
            .join("agent_benchmark_results/aaaa1111_human_result.json")
            .exists(),
        "the human arm did not run"
    );
    for trial in 1..=3 {
        assert!(
            results
                .join(format!(
                    "docker_benchmark_results/aaaa1111_agent-sim_trial{trial}_result.json"
                ))
                .exists()
        );
    }
}
