//! The Docker runtime against the real Docker Engine and a local registry (see
//! `tests/common/docker_env.rs`; `scripts/ci-setup.sh` starts the registry).
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use common::docker_env::{
    CRASH_MESSAGE, CampaignGuard, SIM_PORT, Sim, containers_of, docker_or_skip, push_payload_image,
    registry, remove_local_image,
};
use isobench::failure::{CrashCause, FailureClass};
use isobench::runtime::docker::{DockerOptions, DockerRuntime};
use isobench::runtime::{
    Availability, GpuMode, Owner, PullProgress, Runtime, ServerSource, ServerSpec, free_port,
    labels,
};

const GRACE: Duration = Duration::from_secs(5);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Makes sure `sim`'s image is local (pulling it from the test registry).
async fn pull(runtime: &Runtime, sim: Sim) {
    runtime
        .ensure_image(&sim.reference(), |_| {})
        .await
        .unwrap();
}

async fn assert_no_container_left(docker: &DockerRuntime, guard: &CampaignGuard) {
    assert_eq!(
        containers_of(docker.client(), &guard.campaign).await,
        Vec::<String>::new(),
        "containers of campaign {} were left behind",
        guard.campaign
    );
}

/// A state directory's owner identity for run `run` on this host.
fn owner(state: &str, run: &str) -> Owner {
    Owner {
        state: state.to_string(),
        run: run.to_string(),
        host: isobench::state::lock::hostname(),
    }
}

fn sim_spec(sim: Sim, campaign: &str, log_dir: &Path) -> ServerSpec {
    owned_spec(
        sim,
        campaign,
        &owner(&format!("state-{campaign}"), "run-1"),
        &format!("{campaign}-{}", sim.tag()),
        log_dir,
    )
}

/// A sim server named `name`, labelled with `campaign` and `owner`'s identity, as
/// `exec::session` labels them.
fn owned_spec(sim: Sim, campaign: &str, owner: &Owner, name: &str, log_dir: &Path) -> ServerSpec {
    let name = name.to_string();
    let mut spec_labels = owner.labels();
    spec_labels.extend([
        (labels::CAMPAIGN.to_string(), campaign.to_string()),
        (
            labels::ADDRESS.to_string(),
            format!("start[arm={}]", sim.tag()),
        ),
    ]);
    ServerSpec {
        name: name.clone(),
        labels: spec_labels,
        source: ServerSource::Image {
            reference: sim.reference(),
        },
        argv: Vec::new(), // the image's own entrypoint
        env: BTreeMap::new(),
        gpus: vec![0, 1],
        gpu_mode: GpuMode::EnvOnly,
        port: SIM_PORT,
        shm_size: None,
        ipc: None,
        volumes: Vec::new(),
        log_path: log_dir.join(format!("{name}.log")),
    }
}

async fn inspect(
    docker: &DockerRuntime,
    id: &str,
) -> Option<bollard::models::ContainerInspectResponse> {
    docker
        .client()
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ok()
}

#[tokio::test]
async fn pull_from_the_registry_reports_layer_progress_and_the_digest() {
    let Some(docker) = docker_or_skip("pull_progress").await else {
        return;
    };
    let (reference, pushed_digest) = push_payload_image(docker.client(), 3 << 20).await.unwrap();
    let runtime = Runtime::Docker(docker.clone());

    // Looked up without pulling: the registry has it, this host does not.
    assert_eq!(
        runtime.image_available(&reference).await.unwrap(),
        Availability::Registry {
            digest: pushed_digest.clone()
        }
    );

    let events: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
    let sink = events.clone();
    let info = runtime
        .ensure_image(&reference, move |p| sink.lock().unwrap().push(p))
        .await
        .unwrap();
    assert!(info.pulled);
    assert_eq!(info.repo_digest.as_deref(), Some(pushed_digest.as_str()));
    assert!(info.id.starts_with("sha256:"), "{}", info.id);
    assert!(
        info.size.unwrap() >= 6 << 20,
        "two layers of 3 MiB: {:?}",
        info.size
    );

    let events = events.lock().unwrap().clone();
    let downloading: Vec<&PullProgress> = events
        .iter()
        .filter(|p| p.status == "Downloading")
        .collect();
    assert!(!downloading.is_empty(), "no byte progress in {events:#?}");
    assert!(
        downloading
            .iter()
            .all(|p| p.layer.is_some() && p.attempt == 1)
    );
    let last = events.last().unwrap();
    assert_eq!((last.layers_done, last.layers_total), (2, 2), "{last:?}");
    assert_eq!(last.downloaded_bytes, last.total_bytes);
    // Compressed layers of random bytes are about as large as the bytes.
    assert!(last.total_bytes >= 6 << 20, "{last:?}");
    let mut previous = 0;
    for p in &events {
        assert!(
            p.downloaded_bytes >= previous || p.layer.is_none(),
            "progress went back: {p:?}"
        );
        previous = p.downloaded_bytes;
    }

    // Now it is here: no second pull, same identity.
    assert_eq!(
        runtime.image_available(&reference).await.unwrap(),
        Availability::Local {
            id: info.id.clone()
        }
    );
    let again = runtime
        .ensure_image(&reference, |_| panic!("no pull expected"))
        .await
        .unwrap();
    assert!(!again.pulled);
    assert_eq!(again.digest(), info.digest());
    remove_local_image(docker.client(), &reference).await;
}

#[tokio::test]
async fn an_image_the_registry_lacks_is_image_missing() {
    let Some(docker) = docker_or_skip("image_missing").await else {
        return;
    };
    let runtime = Runtime::Docker(docker);
    let reference = format!("{}/isobench-test/does-not-exist:nope", registry());
    assert_eq!(
        runtime.image_available(&reference).await.unwrap(),
        Availability::Missing
    );
    let failure = runtime.ensure_image(&reference, |_| {}).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::ImageMissing, "{failure}");
    assert!(failure.message.contains(&reference), "{failure}");
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_then_pull_failed() {
    if docker_or_skip("pull_failed").await.is_none() {
        return;
    }
    let options = DockerOptions {
        pull_retries: 2,
        pull_backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let runtime = Runtime::Docker(DockerRuntime::connect_with(options).await.unwrap());
    // Nothing listens on a port that was just free.
    let reference = format!("127.0.0.1:{}/isobench-test/sim:fast", free_port());
    let events: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
    let sink = events.clone();
    let failure = runtime
        .ensure_image(&reference, move |p| sink.lock().unwrap().push(p))
        .await
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::PullFailed, "{failure}");
    assert!(failure.message.contains("after 3 attempt(s)"), "{failure}");
    let retries: Vec<u32> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.status.starts_with("retrying"))
        .map(|p| p.attempt)
        .collect();
    assert_eq!(retries, vec![1, 2]);
    assert!(
        runtime.image_available(&reference).await.is_err(),
        "a lookup cannot say missing either"
    );
}

#[tokio::test]
async fn a_sim_container_starts_answers_streams_its_log_and_is_removed() {
    let Some(docker) = docker_or_skip("start_ready_stop").await else {
        return;
    };
    let guard = CampaignGuard::new("start");
    let logs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::Docker(docker.clone());
    pull(&runtime, Sim::Fast).await;

    let mut spec = sim_spec(Sim::Fast, &guard.campaign, logs.path());
    spec.env
        .insert("HF_TOKEN".into(), "not-a-real-token".into());
    spec.shm_size = Some(256 << 20);
    spec.ipc = Some("private".into());
    spec.volumes = vec![format!(
        "{}:/root/.cache/huggingface:ro",
        cache.path().display()
    )];
    let handle = runtime.start(&spec).await.unwrap();
    assert!(
        handle.base_url.starts_with("http://127.0.0.1:"),
        "{}",
        handle.base_url
    );
    let ready = runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap();
    assert!(ready < READY_TIMEOUT);
    assert_eq!(runtime.exited(&handle).await, None);

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let models = client
        .get(format!("{}/v1/models", handle.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert!(models.text().await.unwrap().contains("\"sim\""));

    let container = inspect(&docker, &handle.id).await.unwrap();
    let config = container.config.unwrap();
    let container_labels = config.labels.unwrap();
    assert_eq!(container_labels[labels::CAMPAIGN], guard.campaign);
    assert_eq!(container_labels[labels::RUN], "run-1");
    assert_eq!(
        container_labels[labels::STATE],
        format!("state-{}", guard.campaign)
    );
    assert_eq!(
        container_labels[labels::HOST],
        isobench::state::lock::hostname()
    );
    assert_eq!(container_labels[labels::NAME], spec.name);
    let env = config.env.unwrap();
    assert!(
        env.contains(&"CUDA_VISIBLE_DEVICES=0,1".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"HF_TOKEN=not-a-real-token".to_string()));
    let host = container.host_config.unwrap();
    assert_eq!(host.shm_size, Some(256 << 20));
    assert_eq!(host.ipc_mode.as_deref(), Some("private"));
    assert_eq!(host.init, Some(true));
    assert_eq!(
        host.device_requests.unwrap_or_default(),
        vec![],
        "env-only mode requests no devices"
    );
    assert_eq!(host.binds.unwrap(), spec.volumes);
    let bindings = host.port_bindings.unwrap()[&format!("{SIM_PORT}/tcp")]
        .clone()
        .unwrap();
    assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        container.name.as_deref(),
        Some(format!("/{}", spec.name).as_str())
    );

    let stopping = Instant::now();
    runtime.stop(&handle, GRACE).await.unwrap();
    // The sim exits on SIGTERM (forwarded by docker-init), well before the grace runs out.
    assert!(
        stopping.elapsed() < GRACE,
        "stop took {:?}",
        stopping.elapsed()
    );
    assert!(
        inspect(&docker, &handle.id).await.is_none(),
        "container not removed"
    );
    assert_eq!(runtime.exited(&handle).await, Some(-1));
    let log = std::fs::read_to_string(&spec.log_path).unwrap();
    assert!(
        log.contains("isobench sim listening on 0.0.0.0:8000"),
        "{log}"
    );
    runtime
        .stop(&handle, GRACE)
        .await
        .expect("stop is idempotent");
    assert_no_container_left(&docker, &guard).await;
}

#[tokio::test]
async fn a_server_that_dies_at_start_is_crashed_with_cause_and_log_line() {
    let Some(docker) = docker_or_skip("crash_at_start").await else {
        return;
    };
    let guard = CampaignGuard::new("crash");
    let logs = tempfile::tempdir().unwrap();
    let runtime = Runtime::Docker(docker.clone());
    pull(&runtime, Sim::CrashAtStart).await;
    let spec = sim_spec(Sim::CrashAtStart, &guard.campaign, logs.path());
    let handle = runtime.start(&spec).await.unwrap();
    let failure = runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::Crashed, "{failure}");
    assert_eq!(failure.cause, Some(CrashCause::CudaOutOfMemory));
    assert_eq!(failure.sample_log_line.as_deref(), Some(CRASH_MESSAGE));
    assert!(failure.message.contains("exited with code 1"), "{failure}");
    assert_eq!(
        failure.log_path.as_deref(),
        Some(spec.log_path.to_str().unwrap())
    );
    assert_eq!(runtime.exited(&handle).await, Some(1));
    runtime.stop(&handle, GRACE).await.unwrap();
    assert_no_container_left(&docker, &guard).await;
}

#[tokio::test]
async fn a_server_that_never_gets_ready_is_startup_timeout() {
    let Some(docker) = docker_or_skip("startup_timeout").await else {
        return;
    };
    let guard = CampaignGuard::new("timeout");
    let logs = tempfile::tempdir().unwrap();
    let runtime = Runtime::Docker(docker.clone());
    pull(&runtime, Sim::NeverReady).await;
    let handle = runtime
        .start(&sim_spec(Sim::NeverReady, &guard.campaign, logs.path()))
        .await
        .unwrap();
    let timeout = Duration::from_secs(3);
    let waiting = Instant::now();
    let failure = runtime
        .wait_ready(&handle, "/health", timeout, POLL)
        .await
        .unwrap_err();
    let waited = waiting.elapsed();
    assert_eq!(failure.class, FailureClass::StartupTimeout, "{failure}");
    assert!(failure.message.contains("HTTP 503"), "{failure}");
    // Not before the timeout; and not long after it, even on a loaded machine.
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(3),
        "waited {waited:?}"
    );
    assert_eq!(
        runtime.exited(&handle).await,
        None,
        "still running: the caller decides"
    );
    runtime.stop(&handle, GRACE).await.unwrap();
    assert_no_container_left(&docker, &guard).await;
}

#[tokio::test]
async fn a_command_missing_from_the_image_is_crashed_and_leaves_nothing() {
    let Some(docker) = docker_or_skip("missing_command").await else {
        return;
    };
    let guard = CampaignGuard::new("nocmd");
    let logs = tempfile::tempdir().unwrap();
    let runtime = Runtime::Docker(docker.clone());
    pull(&runtime, Sim::Fast).await;
    let mut spec = sim_spec(Sim::Fast, &guard.campaign, logs.path());
    spec.argv = vec!["/usr/bin/python3".into(), "-m".into(), "vllm".into()];
    // docker-init starts, then fails to exec the command: a crash at start like any other.
    let handle = runtime.start(&spec).await.unwrap();
    let failure = runtime
        .wait_ready(&handle, "/health", READY_TIMEOUT, POLL)
        .await
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::Crashed, "{failure}");
    let line = failure.sample_log_line.unwrap();
    assert!(line.contains("/usr/bin/python3"), "{line}");
    runtime.stop(&handle, GRACE).await.unwrap();
    assert_no_container_left(&docker, &guard).await;

    // Without docker-init the engine itself refuses to start it: still `crashed`, and the
    // container is removed at once.
    let options = DockerOptions {
        init: false,
        ..Default::default()
    };
    let runtime = Runtime::Docker(DockerRuntime::connect_with(options).await.unwrap());
    let failure = runtime.start(&spec).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Crashed, "{failure}");
    assert!(
        failure
            .sample_log_line
            .unwrap()
            .contains("/usr/bin/python3")
    );
    assert!(
        std::fs::read_to_string(&spec.log_path)
            .unwrap()
            .contains("could not start")
    );
    assert_no_container_left(&docker, &guard).await;
}

#[tokio::test]
async fn gpu_device_requests_are_set_on_the_created_container() {
    let Some(docker) = docker_or_skip("device_requests").await else {
        return;
    };
    let guard = CampaignGuard::new("gpus");
    let logs = tempfile::tempdir().unwrap();
    let runtime = Runtime::Docker(docker.clone());
    pull(&runtime, Sim::Fast).await;
    let mut spec = sim_spec(Sim::Fast, &guard.campaign, logs.path());
    spec.gpus = vec![1, 3];
    spec.gpu_mode = GpuMode::DeviceRequest;

    // Created, not started: this host has no NVIDIA runtime.
    let id = docker.create(&spec, free_port()).await.unwrap();
    let container = inspect(&docker, &id).await.unwrap();
    let requests = container.host_config.unwrap().device_requests.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(
        requests[0].device_ids,
        Some(vec!["1".to_string(), "3".to_string()])
    );
    assert_eq!(
        requests[0].capabilities,
        Some(vec![vec!["gpu".to_string()]])
    );
    let env = container.config.unwrap().env.unwrap_or_default();
    assert!(
        !env.iter().any(|e| e.starts_with("CUDA_VISIBLE_DEVICES=")),
        "{env:?}"
    );
    docker.remove_container(&id).await.unwrap();

    if !docker.engine_info().await.unwrap().nvidia_runtime {
        // Starting it here fails with advice, and leaves no container.
        let failure = runtime.start(&spec).await.unwrap_err();
        assert_eq!(failure.class, FailureClass::Internal, "{failure}");
        assert!(
            failure.message.contains("NVIDIA container runtime"),
            "{failure}"
        );
    }
    assert_no_container_left(&docker, &guard).await;
}

/// Issue 17 item 3: two state directories may run campaigns of one name on one engine at once.
/// Cleanup selects by the state id: it removes this state directory's leftovers of earlier runs
/// (running or exited) and nothing else — not another state directory's server of the same
/// campaign name, not this run's own server, not one started by this state directory on
/// another host, not an unlabelled one of an older isobench.
#[tokio::test]
async fn cleanup_removes_only_this_state_directorys_leftovers() {
    let Some(docker) = docker_or_skip("cleanup").await else {
        return;
    };
    let guard = CampaignGuard::new("owners"); // one campaign name for every container below
    let logs = tempfile::tempdir().unwrap();
    let runtime = Runtime::Docker(docker.clone());
    pull(&runtime, Sim::Fast).await;
    pull(&runtime, Sim::CrashAtStart).await;
    let campaign = &guard.campaign;
    let state_a = format!("a-{campaign}");
    let state_b = format!("b-{campaign}");
    let earlier = owner(&state_a, "run-1");
    let current = owner(&state_a, "run-2");
    let elsewhere = Owner {
        host: "another-host".into(),
        ..owner(&state_a, "run-0")
    };
    let (rt, log_dir) = (&runtime, logs.path());
    let start = move |sim: Sim, owner: &Owner, name: &str| {
        let spec = owned_spec(sim, campaign, owner, &format!("{campaign}-{name}"), log_dir);
        async move { rt.start(&spec).await }
    };
    // An interrupted earlier run of state A: a running and an exited server.
    let running = start(Sim::Fast, &earlier, "a1-running").await.unwrap();
    let exited = start(Sim::CrashAtStart, &earlier, "a1-exited")
        .await
        .unwrap();
    // State B (same campaign name) is running right now.
    let b_server = start(Sim::Fast, &owner(&state_b, "run-1"), "b1")
        .await
        .unwrap();
    // State A's current run already started a server; and one of A's started on another host.
    let own = start(Sim::Fast, &current, "a2-own").await.unwrap();
    let remote = start(Sim::Fast, &elsewhere, "a0-remote").await.unwrap();
    // A container of an older isobench: only the campaign label.
    let mut old_spec = sim_spec(Sim::Fast, campaign, logs.path());
    old_spec.name = format!("{campaign}-old");
    old_spec.labels = BTreeMap::from([(labels::CAMPAIGN.to_string(), campaign.clone())]);
    let old = runtime.start(&old_spec).await.unwrap();

    let mut cleanup = runtime.cleanup_leftovers(&current).await.unwrap();
    cleanup.removed.sort();
    let mut expected = vec![running.name.clone(), exited.name.clone()];
    expected.sort();
    assert_eq!(cleanup.removed, expected);
    assert_eq!(cleanup.skipped.len(), 1, "{:?}", cleanup.skipped);
    assert!(
        cleanup.skipped[0].contains(&remote.name) && cleanup.skipped[0].contains("another-host"),
        "{:?}",
        cleanup.skipped
    );
    let mut left = containers_of(docker.client(), campaign).await;
    left.sort();
    let mut survivors = vec![
        b_server.name.clone(),
        own.name.clone(),
        remote.name.clone(),
        old.name.clone(),
    ];
    survivors.sort();
    assert_eq!(left, survivors);
    for handle in [&b_server, &own, &remote, &old] {
        assert_eq!(
            runtime.exited(handle).await,
            None,
            "{} was stopped",
            handle.name
        );
    }
    assert_eq!(
        docker.unowned_containers(campaign).await.unwrap(),
        vec![old.name.clone()]
    );
    // Idempotent.
    assert_eq!(
        runtime.cleanup_leftovers(&current).await.unwrap().removed,
        Vec::<String>::new()
    );

    // A cancelled start's cleanup removes only this run's container of that name.
    let b_spec = owned_spec(
        Sim::Fast,
        campaign,
        &owner(&state_b, "run-1"),
        &b_server.name,
        logs.path(),
    );
    assert_eq!(
        runtime
            .cleanup_cancelled_start(&current, &b_spec)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let own_spec = owned_spec(Sim::Fast, campaign, &current, &own.name, logs.path());
    assert_eq!(
        runtime
            .cleanup_cancelled_start(&current, &own_spec)
            .await
            .unwrap(),
        vec![own.name.clone()]
    );
    assert_eq!(runtime.exited(&b_server).await, None);

    for handle in [&b_server, &remote, &old] {
        runtime.stop(handle, GRACE).await.unwrap();
    }
    assert_eq!(
        containers_of(docker.client(), campaign).await,
        Vec::<String>::new()
    );
}

/// Also the way to publish the sim images for trying manifests by hand:
/// `cargo test --test runtime_docker every_sim_image_is_in_the_registry`.
#[tokio::test]
async fn every_sim_image_is_in_the_registry() {
    let Some(docker) = docker_or_skip("sim_images").await else {
        return;
    };
    let runtime = Runtime::Docker(docker);
    for sim in Sim::ALL {
        match runtime.image_available(&sim.reference()).await.unwrap() {
            Availability::Registry { digest } | Availability::Local { id: digest } => {
                assert!(digest.starts_with("sha256:"), "{sim:?}: {digest}")
            }
            Availability::Missing => panic!("{} is not in the registry", sim.reference()),
        }
    }
}
