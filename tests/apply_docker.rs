//! `isobench apply` against the real Docker Engine: sim images pulled from a local registry,
//! servers in containers on declared GPUs, crash safety with SIGKILL, failure classes.

mod apply_support;
mod common;
use apply_support::*;
use common::docker_env::{self, CampaignGuard, Sim};

fn manifest(campaign: &str, arms: &[(&str, &str)], commits: usize, extra: &str) -> String {
    let mut m = format!(
        r#"version = 1
name = "{campaign}"
repeats = 2

{sim_server}

[load]
dataset = {{ input_len = 32, output_len = 16 }}
num_prompts = 16
concurrency = 4
warmup = 2
timeout = "60s"

[resources]
gpus = [0, 1]
gpu_mode = "env"
gpu_kind = "test-gpu"
{extra}
"#,
        sim_server = docker_env::SIM_MODEL_AND_SERVER
    );
    for (name, image) in arms {
        let role = match *name {
            "baseline" | "human" => String::new(),
            _ => "role = \"agent\"\n".to_string(),
        };
        m.push_str(&format!(
            "\n[[arms]]\nname = \"{name}\"\n{role}image = \"{image}\"\n"
        ));
    }
    for c in 0..commits {
        m.push_str(&format!(
            "\n[[commits]]\nhuman = \"{:040x}\"\nparent = \"{:040x}\"\nmodel = \"sim\"\n",
            0xa000 + c,
            0xb000 + c
        ));
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn full_campaign_pulls_runs_two_at_a_time_and_leaves_no_container() {
    let Some(docker) = docker_env::docker_or_skip("apply full campaign").await else {
        return;
    };
    let guard = CampaignGuard::new("apply-full");
    for sim in [Sim::Fast, Sim::Slow] {
        docker_env::remove_local_image(docker.client(), &sim.reference()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let (slow, fast) = (Sim::Slow.reference(), Sim::Fast.reference());
    std::fs::write(
        &path,
        manifest(
            &guard.campaign,
            &[("baseline", &slow), ("human", &fast), ("agent", &fast)],
            2,
            "",
        ),
    )
    .unwrap();

    let out = tokio::task::spawn_blocking({
        let p = path.clone();
        move || isobench(&["apply", "--plain", p.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let state = dir.path().join(".isobench");
    let journal = Journal::read(&state);
    // The two images were pulled (one pull node each, shared by both commits), with digests.
    let pulls = journal.latest_with_prefix("pull[");
    assert_eq!(pulls.len(), 2, "{pulls:#?}");
    for e in pulls.values() {
        assert_eq!(e["event"], "done");
        assert_eq!(e["info"]["pulled"], true, "{e}");
        assert!(
            e["info"]["repo_digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 12);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    // Two servers at a time on two GPUs; the slow baseline is measurably slower than human.
    assert_eq!(max_overlap(&journal.session_intervals()), 2);
    let tput = |arm: &str| mean_throughput(&measures, arm).0;
    assert!(
        tput("human") > 1.5 * tput("baseline"),
        "human {} vs baseline {}",
        tput("human"),
        tput("baseline")
    );
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty(),
        "a container was left"
    );
    // Resume: nothing to do.
    let again = tokio::task::spawn_blocking(move || {
        isobench(&["apply", "--plain", path.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(again.text().contains("nothing to do"), "{}", again.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_pull_start_and_measure_then_resume() {
    let Some(docker) = docker_env::docker_or_skip("apply kill -9 docker").await else {
        return;
    };
    let guard = CampaignGuard::new("apply-kill");
    // A large image makes the pull take long enough to be interrupted.
    let (payload, _) = docker_env::push_payload_image(docker.client(), 48 << 20)
        .await
        .unwrap();
    docker_env::remove_local_image(docker.client(), &Sim::Slow.reference()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let slow = Sim::Slow.reference();
    std::fs::write(
        &path,
        manifest(
            &guard.campaign,
            &[("baseline", &slow), ("human", &slow), ("agent", &payload)],
            1,
            "",
        )
        .replace("num_prompts = 16", "num_prompts = 24"),
    )
    .unwrap();
    let state = dir.path().join(".isobench");
    let p = path.to_str().unwrap().to_string();

    let (st, p2) = (state.clone(), p.clone());
    let payload_pull = format!("pull[image={payload}");
    tokio::task::spawn_blocking(move || {
        // 1. During the pull of the large image.
        kill_when(&["apply", "--plain", &p2], &st, |j| {
            j.any("started", &payload_pull)
        });
        // 2. During a server start (its readiness check began).
        kill_when(&["apply", "--plain", &p2], &st, |j| {
            j.any("started", "ready[")
        });
        // 3. Mid-measurement.
        kill_when(&["apply", "--plain", &p2], &st, |j| {
            j.count_event_prefix("started", "measure[")
                > j.count_event_prefix("done", "measure[")
                    + j.count_event_prefix("failed", "measure[")
        });
    })
    .await
    .unwrap();
    let before = Journal::read(&state);
    let done: Vec<String> = before
        .latest_with_prefix("measure[")
        .into_iter()
        .filter(|(_, e)| e["event"] == "done")
        .map(|(a, _)| a)
        .collect();
    let files = result_files(&state);
    // The killed runs left containers behind: the next apply removes them first.
    let out = tokio::task::spawn_blocking(move || isobench(&["apply", "--plain", &p]))
        .await
        .unwrap();
    let text = out.text();
    let after = Journal::read(&state);
    let measures = after.latest_with_prefix("measure[");
    // The payload image has no server: its sessions fail (classified), the others complete.
    for (addr, e) in &measures {
        if addr.contains("arm=agent,") {
            assert_eq!(e["event"], "failed", "{addr}");
        } else {
            assert_eq!(e["event"], "done", "{addr}: {text}");
        }
    }
    // No measurement finished before the resume was started again by it.
    for addr in &done {
        let restarts = after.entries[before.entries.len()..]
            .iter()
            .filter(|e| e["addr"] == addr.as_str() && e["event"] == "started")
            .count();
        assert_eq!(restarts, 0, "{addr} re-measured");
    }
    for (file, bytes) in &files {
        assert_eq!(&std::fs::read(state.join(file)).unwrap(), bytes);
    }
    // The interrupted pull completed on a later run.
    let pull = after.latest_with_prefix(&format!("pull[image={payload}"));
    assert_eq!(pull.values().next().unwrap()["event"], "done");
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty(),
        "a container was left:\n{text}"
    );
    docker_env::remove_local_image(docker.client(), &payload).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_classes_in_docker_and_the_campaign_completes() {
    let Some(docker) = docker_env::docker_or_skip("apply failure classes docker").await else {
        return;
    };
    let guard = CampaignGuard::new("apply-fail");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let missing = format!(
        "{}/isobench-test/sim:does-not-exist",
        docker_env::registry()
    );
    let arms = [
        ("baseline", Sim::Fast.reference()),
        ("human", Sim::CrashAtStart.reference()),
        ("agent-a", Sim::NeverReady.reference()),
        ("agent-b", Sim::Errors.reference()),
        ("agent-c", missing),
    ];
    let arms: Vec<(&str, &str)> = arms.iter().map(|(a, b)| (*a, b.as_str())).collect();
    std::fs::write(
        &path,
        manifest(&guard.campaign, &arms, 1, "")
            .replace("timeout = \"20s\"", "timeout = \"4s\"")
            .replace("repeats = 2", "repeats = 1"),
    )
    .unwrap();
    let p = path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || isobench(&["apply", "--plain", &p]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let j = Journal::read(&dir.path().join(".isobench"));
    let m = j.latest_with_prefix("measure[");
    let get = |arm: &str| {
        m.iter()
            .find(|(a, _)| a.contains(&format!("arm={arm},")))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(get("baseline")["event"], "done");
    assert_eq!(get("human")["failure"]["class"], "crashed");
    assert_eq!(get("human")["failure"]["cause"], "cuda_out_of_memory");
    assert_eq!(get("agent-a")["failure"]["class"], "startup_timeout");
    assert_eq!(get("agent-b")["failure"]["class"], "all_requests_failed");
    assert_eq!(get("agent-c")["failure"]["class"], "image_missing");
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_env_finds_registry_images_and_missing_ones() {
    let Some(_docker) = docker_env::docker_or_skip("plan --check-env").await else {
        return;
    };
    let guard = CampaignGuard::new("check-env");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let missing = format!(
        "{}/isobench-test/sim:does-not-exist",
        docker_env::registry()
    );
    let fast = Sim::Fast.reference();
    std::fs::write(
        &path,
        manifest(
            &guard.campaign,
            &[("baseline", &fast), ("human", &missing)],
            1,
            "",
        ),
    )
    .unwrap();
    let p = path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || isobench(&["plan", "--check-env", &p]))
        .await
        .unwrap();
    let text = out.text();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ok   Docker Engine"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok   ") && l.contains(&fast)),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("does-not-exist")
            && l.contains("not found")),
        "{text}"
    );
    assert!(
        text.contains("ok   GPUs: 0 test-gpu, 1 test-gpu (declared)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_leaves_no_container_within_10_s() {
    let Some(docker) = docker_env::docker_or_skip("apply ctrl-c docker").await else {
        return;
    };
    let guard = CampaignGuard::new("apply-sigint");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let slow = Sim::Slow.reference();
    std::fs::write(
        &path,
        manifest(
            &guard.campaign,
            &[("baseline", &slow), ("human", &slow)],
            1,
            "",
        )
        .replace("num_prompts = 16", "num_prompts = 64"),
    )
    .unwrap();
    let state = dir.path().join(".isobench");
    let p = path.to_str().unwrap().to_string();
    let (code, elapsed) = tokio::task::spawn_blocking(move || {
        ctrl_c_when(
            &["apply", "--plain", &p],
            &state,
            std::time::Duration::from_secs(120),
            |j| j.any("started", "measure["),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(130));
    assert!(elapsed < std::time::Duration::from_secs(10));
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty(),
        "Ctrl-C left a container"
    );
}

/// Issue 17 item 7: `disk_budget` prunes only images this state directory pulled. A local-only
/// tag (which nobody could pull back) survives even when no session needs it any more.
#[tokio::test(flavor = "multi_thread")]
async fn disk_budget_prunes_images_no_pending_session_needs() {
    let Some(docker) = docker_env::docker_or_skip("apply disk budget").await else {
        return;
    };
    let guard = CampaignGuard::new("apply-prune");
    // Commit 1 runs on an image this state pulls, commit 2 on a local-only tag; a tiny budget
    // forces pruning of everything no pending session needs.
    let pulled = docker_env::push_sim_copy(docker.client(), Sim::Fast)
        .await
        .unwrap();
    let local = format!("isobench-test-local/sim:{}", docker_env::unique_suffix());
    docker_env::tag_image(docker.client(), &Sim::Slow.reference(), &local)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let image =
        format!("{{% if commit.human[-4:] == 'a000' %}}{pulled}{{% else %}}{local}{{% endif %}}");
    let text = manifest(
        &guard.campaign,
        &[("baseline", &image), ("human", &image)],
        2,
        "disk_budget = \"1k\"\n",
    )
    .replace("repeats = 2", "repeats = 1")
    .replace("gpus = [0, 1]", "gpus = [0]");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || isobench(&["apply", "--plain", &p]))
        .await
        .unwrap();
    let text = out.text();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("pruned {pulled}")), "{text}");
    assert!(!text.contains(&format!("pruned {local}")), "{text}");
    let j = Journal::read(&dir.path().join(".isobench"));
    assert!(
        j.latest_with_prefix("measure[")
            .values()
            .all(|e| e["event"] == "done")
    );
    assert!(
        docker.client().inspect_image(&pulled).await.is_err(),
        "the pulled image should be gone"
    );
    assert!(
        docker.client().inspect_image(&local).await.is_ok(),
        "the local-only image was pruned: it was never pulled and cannot be pulled back"
    );
    docker_env::remove_local_image(docker.client(), &local).await;
}

/// Issue 17 item 3: two state directories run campaigns of the same name on one engine at once.
/// The second apply's cleanup removes its own state directory's leftovers (of a run killed
/// with SIGKILL) and never the other's live servers: both complete, no crash is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn two_state_directories_with_one_campaign_name_leave_each_other_alone() {
    let Some(docker) = docker_env::docker_or_skip("apply two states").await else {
        return;
    };
    let guard = CampaignGuard::new("apply-owners");
    let slow = Sim::Slow.reference();
    let text = manifest(
        &guard.campaign,
        &[("baseline", &slow), ("human", &slow)],
        1,
        "",
    )
    .replace("num_prompts = 16", "num_prompts = 96");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&dir_a, &dir_b] {
        std::fs::write(dir.path().join("m.toml"), &text).unwrap();
    }
    let (state_a, state_b) = (
        dir_a.path().join(".isobench"),
        dir_b.path().join(".isobench"),
    );
    let m_a = dir_a.path().join("m.toml").to_str().unwrap().to_string();
    let m_b = dir_b.path().join("m.toml").to_str().unwrap().to_string();

    // 1. A run of A killed mid-measurement leaves its servers running.
    let (st, m) = (state_a.clone(), m_a.clone());
    tokio::task::spawn_blocking(move || {
        kill_when(&["apply", "--plain", &m], &st, |j| {
            j.any("started", "measure[")
        })
    })
    .await
    .unwrap();
    let a_leftovers = docker_env::containers_of(docker.client(), &guard.campaign).await;
    assert!(!a_leftovers.is_empty(), "the killed run left no server");

    // 2. B runs; while it measures, A resumes (and cleans up first).
    let (st, m) = (state_b.clone(), m_b.clone());
    let (b_code, a_out) = tokio::task::spawn_blocking(move || {
        let (mut b, b_log) = spawn_isobench_logged(&["apply", "--plain", &m]);
        wait_for(&st, std::time::Duration::from_secs(120), |j| {
            j.any("started", "measure[")
        });
        let a = isobench(&["apply", "--plain", &m_a]);
        let b_status = wait_child(&mut b, std::time::Duration::from_secs(180));
        let b_text = std::fs::read_to_string(b_log).unwrap_or_default();
        ((b_status.and_then(|s| s.code()), b_text), a)
    })
    .await
    .unwrap();
    let a_text = a_out.text();
    assert_eq!(a_out.status.code(), Some(0), "A:\n{a_text}");
    assert_eq!(b_code.0, Some(0), "B:\n{}\nA:\n{a_text}", b_code.1);
    assert!(
        a_text.contains(&format!(
            "removed {} leftover docker server(s)",
            a_leftovers.len()
        )),
        "{a_text}"
    );
    for leftover in &a_leftovers {
        assert!(
            a_text.contains(leftover.as_str()),
            "{leftover} not removed: {a_text}"
        );
    }
    for (name, state) in [("A", &state_a), ("B", &state_b)] {
        let j = Journal::read(state);
        let measures = j.latest_with_prefix("measure[");
        assert_eq!(measures.len(), 4, "{name}: {measures:#?}");
        assert!(
            measures.values().all(|e| e["event"] == "done"),
            "{name}: {measures:#?}"
        );
        // Only the killed run's own steps may have failed; B none at all.
        if name == "B" {
            assert_eq!(
                j.count_event_prefix("failed", ""),
                0,
                "B recorded a failure"
            );
        }
    }
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty(),
        "a container was left"
    );
}
