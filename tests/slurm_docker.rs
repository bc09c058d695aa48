//! The Slurm backend with the Docker runtime, on the two-node test cluster
//! (`scripts/slurm-cluster.sh start`) and the local registry (`scripts/ci-setup.sh`): each job
//! pulls its image on its node and runs its server in a container there; a patched agent arm's
//! derived image is built on the node, inside the job, once per node and key. Both test
//! "nodes" share this host's Docker engine, as nodes of a real cluster would not: the lock that
//! keeps two jobs of one node from building the same image twice is what this exercises.

mod apply_support;
mod common;
use apply_support::*;
use common::docker_env::{self, CampaignGuard, Sim};
use common::slurm_env::*;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;

/// The slow sim's config with a 4× faster latency model: what the agent's patch makes of it.
fn agent_patch(marker: &str) -> String {
    let before = Sim::Slow.config();
    assert!(
        before.contains("ttft_ms = 40.0\nitl_ms = 8.0\n"),
        "{before}"
    );
    let mut patch = String::from(
        "diff --git a/sim.toml b/sim.toml\n--- a/sim.toml\n+++ b/sim.toml\n@@ -1,4 +1,5 @@\n",
    );
    for line in before.lines() {
        match line {
            "ttft_ms = 40.0" => patch.push_str("-ttft_ms = 40.0\n+ttft_ms = 10.0\n"),
            "itl_ms = 8.0" => {
                patch.push_str(&format!("-itl_ms = 8.0\n+itl_ms = 2.0\n+# {marker}\n"))
            }
            other => patch.push_str(&format!(" {other}\n")),
        }
    }
    patch
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_sessions_and_a_patched_arm_run_on_the_nodes() {
    let Some(conf) = slurm_or_skip("slurm docker") else {
        return;
    };
    let Some(docker) = docker_env::docker_or_skip("slurm docker").await else {
        return;
    };
    let guard = CampaignGuard::new("slurm-docker");
    // Not here before the jobs: each job pulls it on its node.
    docker_env::remove_local_image(docker.client(), &Sim::Slow.reference()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.toml");
    // A unique patch (a comment line) makes a key no earlier run built.
    let marker = docker_env::unique_suffix();
    std::fs::write(dir.path().join("agent.diff"), agent_patch(&marker)).unwrap();
    std::fs::write(
        &manifest,
        format!(
            r#"version = 1
name = "{campaign}"
repeats = 2

[[arms]]
name = "baseline"
image = "{slow}"

[[arms]]
name = "agent"
base = "baseline"
patch = "agent.diff"
patch_target = "/etc/isobench"

{sim_server}

[load]
dataset = {{ input_len = 16, output_len = 16 }}
num_prompts = 8
concurrency = 4
warmup = 1
timeout = "60s"

[resources]
gpu_mode = "env"
gpu_kind = "test-gpu"

[cluster]
backend = "slurm"
partition = "gpu"
poll_interval = "300ms"

[[commits]]
human = "{human}"
parent = "{parent}"
model = "sim"
"#,
            sim_server = docker_env::SIM_MODEL_AND_SERVER,
            campaign = guard.campaign,
            slow = Sim::Slow.reference(),
            human = "a".repeat(40),
            parent = "b".repeat(40),
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking({
        let (m, conf) = (manifest.clone(), conf.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_isobench"))
                .args(["apply", "--plain", "--no-report"])
                .arg(&m)
                .env("NO_COLOR", "1")
                .env("SLURM_CONF", &conf)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let state = dir.path().join(".isobench");
    let journal = Journal::read(&state);
    // Whatever happened: the derived image goes (by its key label), the base stays in use.
    let derived: Vec<String> = journal
        .latest_with_prefix("patch[")
        .values()
        .filter_map(|e| e["info"]["source"].as_str().map(str::to_string))
        .collect();
    let remove_derived = || async {
        for id in &derived {
            let options = bollard::query_parameters::RemoveImageOptions {
                force: true,
                noprune: false,
            };
            let _ = docker.client().remove_image(id, Some(options), None).await;
        }
    };
    if out.status.code() != Some(0) {
        remove_derived().await;
        panic!("{}", out.text());
    }
    // Results for every trial, each with the node it ran on.
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 4);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    let starts = journal.latest_with_prefix("start[");
    assert_eq!(starts.len(), 4);
    let nodes: BTreeMap<&str, &str> = starts
        .iter()
        .map(|(a, e)| {
            (
                a.as_str(),
                e["info"]["slurm"]["node"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let used: HashSet<&str> = nodes.values().copied().collect();
    assert_eq!(used, HashSet::from(["n1", "n2"]), "{nodes:?}");
    // The base image was pulled on a node, inside a job.
    let pull =
        &journal.latest_with_prefix("pull[")[&format!("pull[image={}]", Sim::Slow.reference())];
    assert_eq!(pull["event"], "done", "{pull}");
    assert!(pull["info"]["node"].as_str().is_some(), "{pull}");
    // The agent's servers ran the derived image: 4× faster tokens than the base.
    let tput = |arm: &str| mean_throughput(&measures, arm).0;
    let (agent, baseline) = (tput("agent"), tput("baseline"));
    assert!(
        agent > 2.0 * baseline,
        "agent {agent} vs baseline {baseline}"
    );
    // Built on a node inside a job (its log is the job's), once: the other agent job on this
    // engine found it by its key.
    let logs: Vec<String> = std::fs::read_dir(state.join("cluster"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("patch.log")).ok())
        .collect();
    assert_eq!(logs.len(), 2, "{logs:#?}");
    let built = logs
        .iter()
        .filter(|l| l.contains("\nbuilt: image isobench-patched/"))
        .count();
    let reused = logs
        .iter()
        .filter(|l| l.contains("\nreused: image isobench-patched/"))
        .count();
    assert_eq!((built, reused), (1, 1), "{logs:#?}");
    let patch = journal.latest_with_prefix("patch[");
    let patch = patch.values().next().unwrap();
    assert_eq!(patch["event"], "done", "{patch}");
    assert!(
        patch["outputs"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k.starts_with("cluster/") && k.ends_with("/patch.log")),
        "{patch}"
    );
    // No container left (servers or patch helpers), no job left, no scratch files left.
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty(),
        "a container was left"
    );
    let helpers = docker
        .client()
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "ancestor".to_string(),
                vec![Sim::Slow.reference()],
            )])),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(
        helpers.iter().all(|c| !c
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("isobench.patch.helper"))),
        "{helpers:#?}"
    );
    assert!(
        std::fs::read_dir(state.join("cluster"))
            .unwrap()
            .flatten()
            .all(|e| !e.path().join("patched").exists())
    );
    let squeue = slurm_cmd("squeue")
        .args(["-h", "-o", "%j"])
        .output()
        .unwrap();
    let tokens: HashSet<String> = std::fs::read_to_string(state.join("cluster/jobs.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| r["token"].as_str().unwrap().to_string())
        .collect();
    assert!(
        String::from_utf8_lossy(&squeue.stdout)
            .lines()
            .all(|l| !tokens.contains(l.trim())),
        "jobs left in squeue"
    );
    remove_derived().await;
    // The jobs' build lock (named after the derived image's tag): every job has ended.
    for log in &logs {
        if let Some(tag) = log
            .lines()
            .find_map(|l| l.strip_prefix("built: image "))
            .and_then(|rest| rest.split_whitespace().next())
        {
            let name: String = tag
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let lock = std::env::temp_dir().join(format!("isobench-patch-{name}.lock"));
            assert!(lock.exists(), "{}", lock.display());
            let _ = std::fs::remove_file(lock);
        }
    }
}
