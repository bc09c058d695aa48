//! Servers as Docker containers, through bollard (Engine API version negotiated, so Docker 20.10
//! with API 1.41 works).
//!
//! A container is created with the GPU device request (or only `CUDA_VISIBLE_DEVICES`), shm
//! size, IPC mode, binds, labels and the server port published on 127.0.0.1 at a free host port;
//! `docker-init` (tini) runs as PID 1 so SIGTERM reaches the server and zombies are reaped. Its
//! stdout and stderr are streamed into the log file until it exits. Stopping removes it.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, ImageInspect, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{
    Availability, CUDA_VISIBLE_DEVICES, Cleanup, GpuMode, HandleInner, ImageInfo, Owner, Ownership,
    PullProgress, ServerHandle, ServerSource, ServerSpec, cuda_visible_devices, free_port, labels,
};
use crate::failure::{CrashCause, Failure, FailureClass};

/// How a [`DockerRuntime`] behaves; the defaults suit real campaigns.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Further tries after a transient pull error (connection reset, registry 5xx, timeout).
    pub pull_retries: u32,
    /// Pause before the first retry; doubled for each further one.
    pub pull_backoff: Duration,
    /// Run `docker-init` as PID 1 (forwards signals, reaps zombies).
    pub init: bool,
    /// Grace before SIGKILL when [`DockerRuntime::cleanup_leftovers`] stops a leftover.
    pub leftover_grace: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            pull_retries: 3,
            pull_backoff: Duration::from_secs(2),
            init: true,
            leftover_grace: Duration::from_secs(10),
        }
    }
}

/// The Docker Engine on this host.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    pub options: DockerOptions,
}

/// What `plan --check-env` reports about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub server_version: String,
    /// The API version this client negotiated, e.g. `1.41`.
    pub api_version: String,
    /// Whether the engine has a runtime named `nvidia` (needed for [`GpuMode::DeviceRequest`]).
    pub nvidia_runtime: bool,
}

/// Per-server state the Docker runtime keeps in the handle.
#[derive(Debug, Clone)]
pub(crate) struct DockerHandle {
    /// Turns `true` once the log stream has ended (the container exited) and the file is flushed.
    logs_done: watch::Receiver<bool>,
}

/// Attempts at publishing the port: another program may take the free port before Docker binds.
const PORT_ATTEMPTS: usize = 3;

impl DockerRuntime {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and negotiates the API version.
    pub async fn connect() -> Result<DockerRuntime, Failure> {
        Self::connect_with(DockerOptions::default()).await
    }

    pub async fn connect_with(options: DockerOptions) -> Result<DockerRuntime, Failure> {
        let unreachable = |err: DockerError| {
            Failure::new(
                FailureClass::Internal,
                format!(
                    "the Docker Engine is not reachable ({err}); is the daemon running, and is \
                     DOCKER_HOST right?"
                ),
            )
        };
        let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        Ok(DockerRuntime { docker, options })
    }

    /// The bollard client, for callers that need the engine directly (image builds, tests).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The id of the local image `reference` names, if there is one.
    pub async fn image_id(&self, reference: &str) -> Option<String> {
        self.docker
            .inspect_image(reference)
            .await
            .ok()
            .and_then(|i| i.id)
    }

    /// Removes the local tag `reference` (never forced: an image a container uses stays; layers
    /// other images share stay).
    pub async fn remove_image(&self, reference: &str) -> Result<(), DockerError> {
        let options = bollard::query_parameters::RemoveImageOptions {
            force: false,
            noprune: false,
        };
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
    }

    pub async fn engine_info(&self) -> Result<EngineInfo, Failure> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| internal("reading engine info", e))?;
        Ok(EngineInfo {
            server_version: info.server_version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
            nvidia_runtime: info.runtimes.is_some_and(|r| r.contains_key("nvidia")),
        })
    }

    // ---------------------------------------------------------------- images

    pub(super) async fn ensure_image(
        &self,
        reference: &str,
        progress: impl Fn(PullProgress) + Send + Sync,
    ) -> Result<ImageInfo, Failure> {
        let reference = normalize_reference(reference);
        if let Some(image) = self.inspect_local(&reference).await? {
            return Ok(image_info(&reference, image, false, None));
        }
        let mut attempt = 1;
        let digest = loop {
            match self.pull_once(&reference, attempt, &progress).await {
                Ok(digest) => break digest,
                Err(PullError::Missing(message)) => {
                    return Err(Failure::new(
                        FailureClass::ImageMissing,
                        format!("image {reference} does not exist in its registry: {message}"),
                    ));
                }
                Err(PullError::Transient(message)) if attempt <= self.options.pull_retries => {
                    let pause = self.options.pull_backoff * 2u32.saturating_pow(attempt - 1);
                    // The caller's live view shows why the pull stalls.
                    progress(PullProgress {
                        reference: reference.clone(),
                        layer: None,
                        status: format!(
                            "retrying in {} after: {message}",
                            humantime::format_duration(pause)
                        ),
                        downloaded_bytes: 0,
                        total_bytes: 0,
                        layers_done: 0,
                        layers_total: 0,
                        attempt,
                    });
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(PullError::Transient(message) | PullError::Other(message)) => {
                    return Err(Failure::new(
                        FailureClass::PullFailed,
                        format!("pulling {reference} failed after {attempt} attempt(s): {message}"),
                    ));
                }
            }
        };
        match self.inspect_local(&reference).await? {
            Some(image) => Ok(image_info(&reference, image, true, digest)),
            None => Err(Failure::new(
                FailureClass::PullFailed,
                format!("the pull of {reference} finished, but the image is not on this host"),
            )),
        }
    }

    async fn inspect_local(&self, reference: &str) -> Result<Option<ImageInspect>, Failure> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(image)),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(internal(&format!("inspecting image {reference}"), err)),
        }
    }

    /// One pull; returns the manifest digest the engine reported, if any.
    async fn pull_once(
        &self,
        reference: &str,
        attempt: u32,
        progress: &(impl Fn(PullProgress) + Send + Sync),
    ) -> Result<Option<String>, PullError> {
        let options = CreateImageOptions {
            from_image: Some(reference.to_string()),
            ..Default::default()
        };
        let credentials = super::docker_auth::for_reference(reference);
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut layers = LayerTracker::default();
        let mut digest = None;
        while let Some(event) = stream.next().await {
            let event = event.map_err(classify_pull_error)?;
            let status = event.status.unwrap_or_default();
            if let Some(d) = status.strip_prefix("Digest: ") {
                digest = Some(d.trim().to_string());
            }
            let detail = event.progress_detail.unwrap_or_default();
            let layer = event.id.filter(|_| is_layer_status(&status));
            if let Some(layer) = &layer {
                layers.apply(layer, &status, detail.current, detail.total);
            }
            progress(PullProgress {
                reference: reference.to_string(),
                layer,
                status,
                downloaded_bytes: layers.downloaded(),
                total_bytes: layers.total(),
                layers_done: layers.done(),
                layers_total: layers.count(),
                attempt,
            });
        }
        Ok(digest)
    }

    pub(super) async fn image_available(&self, reference: &str) -> Result<Availability, Failure> {
        let reference = normalize_reference(reference);
        if let Some(image) = self.inspect_local(&reference).await? {
            return Ok(Availability::Local {
                id: image.id.unwrap_or_default(),
            });
        }
        let credentials = super::docker_auth::for_reference(&reference);
        match self
            .docker
            .inspect_registry_image(&reference, credentials)
            .await
        {
            Ok(found) => Ok(Availability::Registry {
                digest: found.descriptor.digest.unwrap_or_default(),
            }),
            Err(err) => match classify_pull_error(err) {
                PullError::Missing(_) => Ok(Availability::Missing),
                PullError::Transient(message) | PullError::Other(message) => Err(Failure::new(
                    FailureClass::PullFailed,
                    format!("cannot look up {reference} in its registry: {message}"),
                )),
            },
        }
    }

    // ---------------------------------------------------------------- servers

    pub(super) async fn start(&self, spec: &ServerSpec) -> Result<ServerHandle, Failure> {
        if let ServerSource::Path { root } = &spec.source {
            return Err(path_source_failure(root));
        }
        prepare_log_file(&spec.log_path).await?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let host_port = free_port();
            let id = self.create(spec, host_port).await?;
            let started_at = Instant::now();
            match self
                .docker
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                Ok(()) => {}
                Err(err) if is_port_conflict(&err) => {
                    last_error = err.to_string();
                    self.remove(&id).await;
                    continue;
                }
                Err(err) => {
                    let failure = start_failure(spec, &err);
                    append_to_log(&spec.log_path, &format!("isobench: {}\n", failure.message))
                        .await;
                    self.remove(&id).await;
                    return Err(failure);
                }
            }
            // A container that died at once has no published port any more; the address it was
            // given still names it, and `wait_ready` then reports the crash with its log.
            let base_url = match self.published_url(&id, spec.port).await {
                Ok(Some(url)) => url,
                Ok(None) => format!("http://127.0.0.1:{host_port}"),
                Err(failure) => {
                    self.terminate_and_remove(&id, Duration::ZERO).await;
                    return Err(failure);
                }
            };
            let logs_done = self.stream_logs(&id, spec.log_path.clone());
            return Ok(ServerHandle {
                id,
                name: spec.name.clone(),
                base_url,
                log_path: spec.log_path.clone(),
                started_at,
                inner: HandleInner::Docker(DockerHandle { logs_done }),
            });
        }
        Err(Failure::new(
            FailureClass::Internal,
            format!(
                "could not publish port {} of {} after {PORT_ATTEMPTS} tries: {last_error}",
                spec.port, spec.name
            ),
        ))
    }

    /// Creates (does not start) the container for `spec`, its port to be published at
    /// `host_port` on 127.0.0.1, and returns its id. [`Runtime::start`](super::Runtime::start)
    /// uses it; on its own it lets tests and `--check-env` see exactly what the engine would
    /// run (device requests included) on hosts that cannot start it. Remove it with
    /// [`DockerRuntime::remove_container`].
    pub async fn create(&self, spec: &ServerSpec, host_port: u16) -> Result<String, Failure> {
        let reference = match &spec.source {
            ServerSource::Image { reference } => normalize_reference(reference),
            ServerSource::Path { root } => return Err(path_source_failure(root)),
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let body = container_body(spec, &reference, host_port, self.options.init);
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(err) => Err(create_failure(spec, &reference, err)),
        }
    }

    /// Force-removes a container by id or name (running or not); an absent one is no error.
    pub async fn remove_container(&self, id: &str) -> Result<(), Failure> {
        self.remove_checked(id).await
    }

    /// The address Docker reports for the published port (`None` once the container stopped).
    async fn published_url(&self, id: &str, port: u16) -> Result<Option<String>, Failure> {
        let inspect = self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| internal("inspecting the new container", e))?;
        let binding = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&format!("{port}/tcp")))
            .flatten()
            .and_then(|bindings| bindings.into_iter().next());
        let Some(PortBinding {
            host_ip,
            host_port: Some(host_port),
        }) = binding
        else {
            return Ok(None);
        };
        let host = match host_ip.as_deref() {
            None | Some("") | Some("0.0.0.0") => "127.0.0.1".to_string(),
            Some("::") => "[::1]".to_string(),
            Some(ip) if ip.contains(':') => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
        };
        Ok(Some(format!("http://{host}:{host_port}")))
    }

    /// Copies the container's stdout and stderr into `path` until the container exits.
    fn stream_logs(&self, id: &str, path: std::path::PathBuf) -> watch::Receiver<bool> {
        let (done_tx, done_rx) = watch::channel(false);
        let docker = self.docker.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let options = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let mut stream = docker.logs(&id, Some(options));
            if let Ok(mut file) = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
            {
                while let Some(Ok(chunk)) = stream.next().await {
                    if file.write_all(&chunk.into_bytes()).await.is_err() {
                        break;
                    }
                }
                let _ = file.flush().await;
            }
            let _ = done_tx.send(true);
        });
        done_rx
    }

    /// Waits up to `within` for the log stream of `handle` to end (it ends when the container
    /// exits), so the file holds the server's last words.
    pub(super) async fn wait_logs_flushed(&self, handle: &ServerHandle, within: Duration) {
        if let HandleInner::Docker(h) = &handle.inner {
            let mut done = h.logs_done.clone();
            let _ = tokio::time::timeout(within, done.wait_for(|d| *d)).await;
        }
    }

    pub(super) async fn exited(&self, handle: &ServerHandle, _h: &DockerHandle) -> Option<i64> {
        match self
            .docker
            .inspect_container(
                &handle.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                let alive = state.running.unwrap_or(false)
                    || state.restarting.unwrap_or(false)
                    || state.paused.unwrap_or(false);
                if alive {
                    None
                } else {
                    Some(state.exit_code.unwrap_or(-1))
                }
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Some(-1),
            // A hiccup of the engine is not a crash of the server.
            Err(_) => None,
        }
    }

    pub(super) async fn stop(
        &self,
        handle: &ServerHandle,
        _h: &DockerHandle,
        grace: Duration,
    ) -> Result<(), Failure> {
        self.terminate(&handle.id, grace).await;
        self.wait_logs_flushed(handle, Duration::from_secs(5)).await;
        self.remove_checked(&handle.id).await
    }

    /// See [`super::Runtime::cleanup_leftovers`]. Lists by the state label (the engine
    /// filters), then judges each container's full identity.
    pub(super) async fn cleanup_leftovers(&self, owner: &Owner) -> Result<Cleanup, Failure> {
        let mut cleanup = Cleanup::default();
        for container in self.owned_containers(owner, None).await? {
            let (id, name, container_labels) = container;
            match owner.judge(&container_labels) {
                Ownership::EarlierRun => {
                    self.terminate(&id, self.options.leftover_grace).await;
                    self.remove_checked(&id).await?;
                    cleanup.removed.push(name);
                }
                Ownership::OtherHost => cleanup.skipped.push(format!(
                    "container {name} of this state directory was started on host {}; not removed from here",
                    container_labels
                        .get(labels::HOST)
                        .map_or("(unknown)", String::as_str)
                )),
                // This run's servers are live; other states cannot match the filter.
                Ownership::ThisRun | Ownership::OtherState | Ownership::Unowned => {}
            }
        }
        Ok(cleanup)
    }

    /// See [`super::Runtime::cleanup_cancelled_start`].
    pub(super) async fn cleanup_named(
        &self,
        owner: &Owner,
        name: Option<&str>,
    ) -> Result<Vec<String>, Failure> {
        let mut removed = Vec::new();
        for (id, container_name, container_labels) in self.owned_containers(owner, name).await? {
            if owner.judge(&container_labels) == Ownership::ThisRun {
                self.terminate(&id, Duration::ZERO).await;
                self.remove_checked(&id).await?;
                removed.push(container_name);
            }
        }
        Ok(removed)
    }

    /// `(id, name, labels)` of every container, running or not, labelled with `owner`'s state
    /// id (and with `name` as [`labels::NAME`] if given).
    async fn owned_containers(
        &self,
        owner: &Owner,
        name: Option<&str>,
    ) -> Result<Vec<(String, String, BTreeMap<String, String>)>, Failure> {
        let mut selectors = vec![format!("{}={}", labels::STATE, owner.state)];
        if let Some(name) = name {
            selectors.push(format!("{}={name}", labels::NAME));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), selectors)])),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| internal("listing leftover containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let id = container.id?;
                let name = container
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| id.clone());
                let container_labels: BTreeMap<String, String> =
                    container.labels.unwrap_or_default().into_iter().collect();
                Some((id, name, container_labels))
            })
            .collect())
    }

    /// Names of containers that carry an isobench campaign label but no state id: made by an
    /// isobench older than state ids. Nobody can prove whose they are, so they are only
    /// reported (`apply` warns); remove them by hand once no old isobench runs.
    pub async fn unowned_containers(&self, campaign: &str) -> Result<Vec<String>, Failure> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{}={campaign}", labels::CAMPAIGN)],
            )])),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| internal("listing containers", e))?;
        Ok(containers
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_none_or(|l| !l.contains_key(labels::STATE))
            })
            .filter_map(|c| c.names?.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect())
    }

    /// SIGTERM, up to `grace` for the container to exit, then SIGKILL. Errors are ignored: the
    /// removal that follows forces the issue.
    async fn terminate(&self, id: &str, grace: Duration) {
        if !grace.is_zero() && self.signal(id, "SIGTERM").await {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.is_running(id).await {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if self.is_running(id).await {
            self.signal(id, "SIGKILL").await;
        }
    }

    async fn terminate_and_remove(&self, id: &str, grace: Duration) {
        self.terminate(id, grace).await;
        self.remove(id).await;
    }

    /// Sends a signal; `false` if the container is not running (or gone).
    async fn signal(&self, id: &str, signal: &str) -> bool {
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        self.docker.kill_container(id, Some(options)).await.is_ok()
    }

    async fn is_running(&self, id: &str) -> bool {
        match self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspect) => inspect.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }

    async fn remove(&self, id: &str) {
        let _ = self.remove_checked(id).await;
    }

    /// Force-removes the container (and its anonymous volumes); gone already counts as success.
    async fn remove_checked(&self, id: &str) -> Result<(), Failure> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // "removal already in progress": someone else is removing it.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(err) => Err(internal(&format!("removing container {id}"), err)),
        }
    }
}

// -------------------------------------------------------------------- container config

fn container_body(
    spec: &ServerSpec,
    reference: &str,
    host_port: u16,
    init: bool,
) -> ContainerCreateBody {
    let (entrypoint, cmd) = match spec.argv.split_first() {
        Some((program, args)) => (Some(vec![program.clone()]), Some(args.to_vec())),
        None => (None, None),
    };
    let mut env: BTreeMap<&str, String> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let device_requests = match spec.gpu_mode {
        GpuMode::DeviceRequest if spec.gpus.is_empty() => None,
        GpuMode::DeviceRequest => Some(vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(spec.gpus.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]),
        GpuMode::EnvOnly => {
            env.insert(CUDA_VISIBLE_DEVICES, cuda_visible_devices(&spec.gpus));
            None
        }
    };
    let mut container_labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    container_labels.insert(labels::NAME.into(), spec.name.clone());
    let port_key = format!("{}/tcp", spec.port);
    let binding = PortBinding {
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(host_port.to_string()),
    };
    ContainerCreateBody {
        image: Some(reference.to_string()),
        entrypoint,
        cmd,
        env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(container_labels),
        exposed_ports: Some(HashMap::from([(port_key.clone(), HashMap::new())])),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(port_key, Some(vec![binding]))])),
            device_requests,
            shm_size: spec.shm_size,
            ipc_mode: spec.ipc.clone(),
            binds: (!spec.volumes.is_empty())
                .then(|| spec.volumes.iter().map(|v| expand_volume(v)).collect()),
            init: Some(init),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `~/x:/y:ro` → `$HOME/x:/y:ro`; anything else unchanged.
fn expand_volume(volume: &str) -> String {
    let (host, rest) = volume.split_once(':').unwrap_or((volume, ""));
    let expanded = match (host.strip_prefix('~'), std::env::var("HOME")) {
        (Some(tail), Ok(home)) if tail.is_empty() || tail.starts_with('/') => {
            format!("{home}{tail}")
        }
        _ => host.to_string(),
    };
    if rest.is_empty() && !volume.contains(':') {
        expanded
    } else {
        format!("{expanded}:{rest}")
    }
}

/// Adds `:latest` to a reference without tag or digest: a bare name would pull every tag.
fn normalize_reference(reference: &str) -> String {
    let reference = reference.trim();
    let last_component = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last_component.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// The repository part of a reference: without tag and digest.
fn repository_of(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

fn image_info(
    reference: &str,
    image: ImageInspect,
    pulled: bool,
    pulled_digest: Option<String>,
) -> ImageInfo {
    let repository = repository_of(reference);
    let digests = image.repo_digests.unwrap_or_default();
    let repo_digest = digests
        .iter()
        .find(|d| repository_of(d) == repository)
        .or_else(|| digests.first())
        .and_then(|d| d.split_once('@').map(|(_, digest)| digest.to_string()))
        .or(pulled_digest);
    ImageInfo {
        id: image.id.unwrap_or_default(),
        repo_digest,
        size: image.size.and_then(|s| u64::try_from(s).ok()),
        pulled,
    }
}

// -------------------------------------------------------------------- pull progress

/// Per-layer download state, summed for the progress line.
#[derive(Debug, Default)]
struct LayerTracker {
    layers: BTreeMap<String, Layer>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
    /// `Already exists` layers are not downloaded and do not count towards the bytes.
    local: bool,
}

fn is_layer_status(status: &str) -> bool {
    !(status.starts_with("Pulling from")
        || status.starts_with("Digest:")
        || status.starts_with("Status:"))
}

impl LayerTracker {
    fn apply(&mut self, id: &str, status: &str, current: Option<i64>, total: Option<i64>) {
        let layer = self.layers.entry(id.to_string()).or_default();
        let current = current.and_then(|c| u64::try_from(c).ok());
        let total = total.and_then(|t| u64::try_from(t).ok()).filter(|t| *t > 0);
        match status {
            "Downloading" => {
                if let Some(total) = total {
                    layer.total = total;
                }
                if let Some(current) = current {
                    layer.current = current.min(layer.total.max(current));
                }
            }
            "Verifying Checksum" | "Download complete" => layer.current = layer.total,
            "Extracting" => {
                layer.current = layer.total;
                if layer.total == 0 {
                    // Blobs small enough to skip "Downloading" report their size here.
                    layer.total = total.unwrap_or(0);
                    layer.current = layer.total;
                }
            }
            "Pull complete" => {
                layer.current = layer.total;
                layer.done = true;
            }
            "Already exists" => {
                layer.done = true;
                layer.local = true;
            }
            _ => {}
        }
    }

    fn downloaded(&self) -> u64 {
        self.layers
            .values()
            .filter(|l| !l.local)
            .map(|l| l.current)
            .sum()
    }

    fn total(&self) -> u64 {
        self.layers
            .values()
            .filter(|l| !l.local)
            .map(|l| l.total)
            .sum()
    }

    fn done(&self) -> usize {
        self.layers.values().filter(|l| l.done).count()
    }

    fn count(&self) -> usize {
        self.layers.len()
    }
}

// -------------------------------------------------------------------- error classification

#[derive(Debug)]
enum PullError {
    /// The registry says the image does not exist.
    Missing(String),
    /// Worth another try: connection trouble, a registry 5xx, a timeout.
    Transient(String),
    Other(String),
}

const MISSING_PATTERNS: &[&str] = &[
    "manifest unknown",
    "not found",
    "repository does not exist",
    "pull access denied",
    "name unknown",
    "No such image",
];

const TRANSIENT_PATTERNS: &[&str] = &[
    "connection refused",
    "connection reset",
    "broken pipe",
    "timeout",
    "timed out",
    "TLS handshake",
    "EOF",
    "502",
    "503",
    "504",
    "Bad Gateway",
    "Service Unavailable",
    "Too Many Requests",
    "toomanyrequests",
    "temporary",
    "no such host",
];

fn classify_pull_error(err: DockerError) -> PullError {
    let message = match &err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        DockerError::RequestTimeoutError
        | DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. } => {
            return PullError::Transient(err.to_string());
        }
        other => return PullError::Other(other.to_string()),
    };
    if matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    ) || MISSING_PATTERNS.iter().any(|p| message.contains(p))
    {
        PullError::Missing(message)
    } else if TRANSIENT_PATTERNS.iter().any(|p| message.contains(p)) {
        PullError::Transient(message)
    } else {
        PullError::Other(message)
    }
}

fn is_port_conflict(err: &DockerError) -> bool {
    let text = err.to_string();
    text.contains("port is already allocated") || text.contains("address already in use")
}

fn create_failure(spec: &ServerSpec, reference: &str, err: DockerError) -> Failure {
    match err {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => Failure::new(
            FailureClass::ImageMissing,
            format!("image {reference} is not on this host (pull it first): {message}"),
        ),
        DockerError::DockerResponseServerError {
            status_code: 409,
            message,
        } => Failure::new(
            FailureClass::Internal,
            format!("a container named {} already exists: {message}", spec.name),
        ),
        other => internal(&format!("creating container {}", spec.name), other),
    }
}

/// A container that was created but would not start: a wrong command is the server's failure
/// (`crashed`, as if it died at once); a missing NVIDIA runtime is the host's.
fn start_failure(spec: &ServerSpec, err: &DockerError) -> Failure {
    let message = match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    if message.contains("could not select device driver") {
        return Failure::new(
            FailureClass::Internal,
            format!(
                "container {} needs the NVIDIA container runtime, which this Docker Engine lacks \
                 ({message}); install nvidia-container-toolkit, or pass GPUs as \
                 CUDA_VISIBLE_DEVICES only (GPU mode env-only)",
                spec.name
            ),
        );
    }
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        let mut failure = Failure::new(
            FailureClass::Crashed,
            format!("container {} could not start its command", spec.name),
        );
        failure.cause = Some(CrashCause::Unknown);
        failure.sample_log_line = Some(message.chars().take(300).collect());
        failure.log_path = Some(spec.log_path.display().to_string());
        return failure;
    }
    Failure::new(
        FailureClass::Internal,
        format!("starting container {}: {message}", spec.name),
    )
}

fn path_source_failure(root: &std::path::Path) -> Failure {
    Failure::new(
        FailureClass::Internal,
        format!(
            "the docker runtime runs images; {} is a path (use the process runtime)",
            root.display()
        ),
    )
}

fn internal(context: &str, err: DockerError) -> Failure {
    Failure::new(FailureClass::Internal, format!("{context}: {err}"))
}

async fn prepare_log_file(path: &std::path::Path) -> Result<(), Failure> {
    let io_failure = |e: std::io::Error| {
        Failure::new(
            FailureClass::Internal,
            format!("cannot create server log {}: {e}", path.display()),
        )
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_failure)?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(io_failure)?;
    Ok(())
}

async fn append_to_log(path: &std::path::Path, text: &str) {
    if let Ok(mut file) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        let _ = file.write_all(text.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec() -> ServerSpec {
        ServerSpec {
            name: "isobench-test-1".into(),
            labels: BTreeMap::from([(labels::CAMPAIGN.to_string(), "c".to_string())]),
            source: ServerSource::Image {
                reference: "repo/x:1".into(),
            },
            argv: vec![
                "/isobench".into(),
                "sim".into(),
                "--port".into(),
                "8000".into(),
            ],
            env: BTreeMap::from([("HF_TOKEN".to_string(), "secret".to_string())]),
            gpus: vec![2, 3],
            gpu_mode: GpuMode::DeviceRequest,
            port: 8000,
            shm_size: Some(1 << 30),
            ipc: Some("host".into()),
            volumes: vec!["~/.cache/hf:/root/.cache/hf:ro".into()],
            log_path: PathBuf::from("/tmp/x.log"),
        }
    }

    #[test]
    fn argv_splits_into_entrypoint_and_cmd() {
        let body = container_body(&spec(), "repo/x:1", 40000, true);
        assert_eq!(body.entrypoint, Some(vec!["/isobench".to_string()]));
        assert_eq!(
            body.cmd,
            Some(vec!["sim".into(), "--port".into(), "8000".into()])
        );
        let mut bare = spec();
        bare.argv.clear();
        let body = container_body(&bare, "repo/x:1", 40000, true);
        assert_eq!(
            (body.entrypoint, body.cmd),
            (None, None),
            "empty argv keeps the image's own"
        );
    }

    #[test]
    fn gpu_modes_set_either_the_device_request_or_the_env() {
        let body = container_body(&spec(), "repo/x:1", 40000, true);
        let requests = body.host_config.unwrap().device_requests.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(
            requests[0].device_ids,
            Some(vec!["2".to_string(), "3".to_string()])
        );
        assert_eq!(
            requests[0].capabilities,
            Some(vec![vec!["gpu".to_string()]])
        );
        assert!(
            !body
                .env
                .unwrap()
                .iter()
                .any(|e| e.starts_with("CUDA_VISIBLE_DEVICES="))
        );

        let mut env_only = spec();
        env_only.gpu_mode = GpuMode::EnvOnly;
        env_only
            .env
            .insert("CUDA_VISIBLE_DEVICES".into(), "7".into());
        let body = container_body(&env_only, "repo/x:1", 40000, true);
        assert_eq!(body.host_config.unwrap().device_requests, None);
        let env = body.env.unwrap();
        assert!(
            env.contains(&"CUDA_VISIBLE_DEVICES=2,3".to_string()),
            "the runtime's GPUs win: {env:?}"
        );
        assert!(env.contains(&"HF_TOKEN=secret".to_string()));

        let mut no_gpus = spec();
        no_gpus.gpus.clear();
        let body = container_body(&no_gpus, "repo/x:1", 40000, true);
        assert_eq!(body.host_config.unwrap().device_requests, None);
    }

    #[test]
    fn port_is_published_on_loopback_only() {
        let body = container_body(&spec(), "repo/x:1", 40001, true);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let binding = bindings["8000/tcp"].as_ref().unwrap();
        assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding[0].host_port.as_deref(), Some("40001"));
        assert!(body.exposed_ports.unwrap().contains_key("8000/tcp"));
    }

    #[test]
    fn volumes_expand_home() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            expand_volume("~/.cache/hf:/root/.cache/hf:ro"),
            format!("{home}/.cache/hf:/root/.cache/hf:ro")
        );
        assert_eq!(expand_volume("~:/h"), format!("{home}:/h"));
        assert_eq!(expand_volume("/data:/data"), "/data:/data");
        assert_eq!(
            expand_volume("~other/x:/x"),
            "~other/x:/x",
            "another user's home is not ours"
        );
        assert_eq!(expand_volume("named-volume"), "named-volume");
    }

    #[test]
    fn references_get_latest_only_when_they_have_no_tag_or_digest() {
        assert_eq!(normalize_reference("ubuntu"), "ubuntu:latest");
        assert_eq!(
            normalize_reference("127.0.0.1:5000/a/b"),
            "127.0.0.1:5000/a/b:latest"
        );
        assert_eq!(
            normalize_reference("127.0.0.1:5000/a/b:fast"),
            "127.0.0.1:5000/a/b:fast"
        );
        assert_eq!(normalize_reference("a/b@sha256:abc"), "a/b@sha256:abc");
        assert_eq!(
            repository_of("127.0.0.1:5000/a/b:fast"),
            "127.0.0.1:5000/a/b"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/a/b@sha256:abc"),
            "127.0.0.1:5000/a/b"
        );
        assert_eq!(repository_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
    }

    #[test]
    fn layer_progress_sums_downloads_and_skips_local_layers() {
        let mut layers = LayerTracker::default();
        layers.apply("a", "Pulling fs layer", None, None);
        layers.apply("b", "Already exists", None, None);
        layers.apply("c", "Pulling fs layer", None, None);
        layers.apply("a", "Downloading", Some(100), Some(1000));
        layers.apply("c", "Downloading", Some(50), Some(500));
        assert_eq!((layers.downloaded(), layers.total()), (150, 1500));
        assert_eq!((layers.done(), layers.count()), (1, 3));
        layers.apply("a", "Download complete", None, None);
        layers.apply("a", "Pull complete", None, None);
        assert_eq!((layers.downloaded(), layers.total()), (1050, 1500));
        assert_eq!(layers.done(), 2);
    }

    #[test]
    fn pull_errors_are_classified() {
        let stream = |e: &str| DockerError::DockerStreamError { error: e.into() };
        let server = |code, m: &str| DockerError::DockerResponseServerError {
            status_code: code,
            message: m.into(),
        };
        let kind = |e| match classify_pull_error(e) {
            PullError::Missing(_) => "missing",
            PullError::Transient(_) => "transient",
            PullError::Other(_) => "other",
        };
        assert_eq!(
            kind(stream(
                "manifest for r/x:y not found: manifest unknown: manifest unknown"
            )),
            "missing"
        );
        assert_eq!(kind(server(404, "whatever")), "missing");
        assert_eq!(
            kind(server(
                500,
                "Get \"http://127.0.0.1:1/v2/\": dial tcp: connect: connection refused"
            )),
            "transient"
        );
        assert_eq!(
            kind(stream(
                "received unexpected HTTP status: 503 Service Unavailable"
            )),
            "transient"
        );
        assert_eq!(kind(DockerError::RequestTimeoutError), "transient");
        assert_eq!(kind(stream("no space left on device")), "other");
    }
}
