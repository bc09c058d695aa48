//! Telemetry of a Docker server: the container's CPU time comes from its cgroup (the engine's
//! stats), the Prometheus endpoint is reached through the published port.

mod apply_support;
mod common;
use apply_support::*;
use common::docker_env::{self, CampaignGuard, Sim};

#[tokio::test(flavor = "multi_thread")]
async fn a_containers_cpu_time_and_metrics_are_recorded() {
    let Some(docker) = docker_env::docker_or_skip("telemetry in docker").await else {
        return;
    };
    let guard = CampaignGuard::new("telemetry-docker");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let manifest = format!(
        r#"version = 1
name = "{}"
{}
[load]
dataset = {{ input_len = 32, output_len = 16 }}
num_prompts = 64
concurrency = 8
warmup = 2
timeout = "60s"
[resources]
gpus = [0]
gpu_mode = "env"
gpu_kind = "test-gpu"
[[arms]]
name = "baseline"
image = "{}"
[[commits]]
human = "{:040x}"
parent = "{:040x}"
model = "sim"
"#,
        guard.campaign,
        docker_env::SIM_MODEL_AND_SERVER,
        Sim::Fast.reference(),
        0xc000,
        0xd000
    );
    std::fs::write(&path, manifest).unwrap();
    let out = tokio::task::spawn_blocking({
        let p = path.clone();
        move || isobench(&["apply", "--plain", p.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let state = dir.path().join(".isobench");
    let measures = Journal::read(&state).latest_with_prefix("measure[");
    let e = measures.values().next().unwrap();
    let (rel, _) = e["outputs"].as_object().unwrap().iter().next().unwrap();
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join(rel)).unwrap()).unwrap();
    let t = &result["isobench"]["telemetry"];
    assert_eq!(t["host"]["available"], true, "{t:#}");
    assert!(
        t["host"]["source"].as_str().unwrap().ends_with("(cgroup)"),
        "{t:#}"
    );
    assert!(t["host"]["cpu_s"].as_f64().unwrap() >= 0.0, "{t:#}");
    assert_eq!(
        t["server"]["counters"]["generation_tokens"].as_f64(),
        Some(64.0 * 16.0),
        "{t:#}"
    );
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty(),
        "a container was left"
    );
}
