//! Where a server runs: one server's life — get its image, start it, wait until it answers,
//! watch it, stop it — behind one seam with two backends today (Docker through bollard, a local
//! process); on a Slurm cluster each session runs as a job (`exec::cluster`, plumbing in
//! [`slurm`]) that uses these same runtimes on its node.
//!
//! The runtime knows nothing about campaigns beyond the labels it is given: the executor renders
//! a [`ServerSpec`], the runtime turns it into a running server and reports where it listens
//! ([`ServerHandle::base_url`], never assumed to be 127.0.0.1). Every failure is a classified
//! [`Failure`]. The caller must call [`Runtime::stop`] on every path once [`Runtime::start`]
//! returned a handle; [`Runtime::cleanup_leftovers`] removes what an interrupted run left behind.
//!
//! See `docs/runtimes.md` for the fields, GPU modes and cleanup guarantees.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::failure::Failure;

pub mod docker;
pub mod docker_auth;
pub mod docker_build;
pub mod docker_helper;
mod logtail;
mod port;
pub mod process;
mod procfs;
mod ready;
pub mod registry;
pub mod slurm;

pub use logtail::read_log_tail;
pub use port::free_port;

/// Label keys isobench puts on what it starts (containers; pid records for processes).
pub mod labels {
    /// The campaign's name. For people and `docker ps` only: two state directories may run
    /// campaigns of one name at once, so nothing is ever selected for removal by it.
    pub const CAMPAIGN: &str = "isobench.campaign";
    /// The node address of the session that started the server.
    pub const ADDRESS: &str = "isobench.address";
    /// The id of the `apply` run that started it.
    pub const RUN: &str = "isobench.run";
    /// The persistent random id of the state directory whose run started it (`<state>/state-id`):
    /// [`super::Runtime::cleanup_leftovers`] selects by it.
    pub const STATE: &str = "isobench.state";
    /// The host whose isobench started it.
    pub const HOST: &str = "isobench.host";
    /// The server's [`super::ServerSpec::name`]; added by the runtime.
    pub const NAME: &str = "isobench.name";
}

/// Who started a server: a state directory, one `apply` run in it, on one host. Servers carry it
/// as the labels [`labels::STATE`], [`labels::RUN`] and [`labels::HOST`]; cleanup touches only
/// servers whose owner it proves to be this state directory (see `docs/runtimes.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The state directory's persistent random id (`state::state_id`).
    pub state: String,
    /// This `apply` run's id.
    pub run: String,
    /// This host's name.
    pub host: String,
}

impl Owner {
    /// The three identity labels, to add to a [`ServerSpec`]'s labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::STATE.to_string(), self.state.clone()),
            (labels::RUN.to_string(), self.run.clone()),
            (labels::HOST.to_string(), self.host.clone()),
        ])
    }

    /// What `labels` (of a container or a pid record) say about their owner relative to this
    /// one. Only [`Ownership::EarlierRun`] may be removed as a leftover.
    pub fn judge(&self, labels: &BTreeMap<String, String>) -> Ownership {
        let get = |k: &str| labels.get(k).map(String::as_str);
        match (get(labels::STATE), get(labels::HOST), get(labels::RUN)) {
            (None, _, _) => Ownership::Unowned,
            (Some(state), _, _) if state != self.state => Ownership::OtherState,
            (Some(_), host, _) if host != Some(self.host.as_str()) => Ownership::OtherHost,
            (Some(_), _, run) if run == Some(self.run.as_str()) => Ownership::ThisRun,
            _ => Ownership::EarlierRun,
        }
    }
}

/// See [`Owner::judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Started by another run of this state directory on this host. The caller holds the state
    /// directory's lock, so that run has ended: a leftover.
    EarlierRun,
    /// Started by this very run: live, never a leftover.
    ThisRun,
    /// This state directory's, but started on another host (a state directory on a shared
    /// file system): its run may be alive there.
    OtherHost,
    /// Another state directory's (maybe a campaign of the same name): not ours.
    OtherState,
    /// No state id: labelled by an isobench older than state ids. Nobody can prove whose it is,
    /// so nobody removes it automatically.
    Unowned,
}

/// What [`Runtime::cleanup_leftovers`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Names of the servers it stopped and removed.
    pub removed: Vec<String>,
    /// What it saw but left alone or could not trust, one line each (for a warning): invalid
    /// pid records (deleted, never signalled), servers of this state directory from another
    /// host, records it cannot prove to be ours.
    pub skipped: Vec<String>,
}

/// The environment variable that pins a server to its GPUs.
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// Where a server runs. Enum dispatch: the set of backends is closed and small.
#[derive(Debug, Clone)]
pub enum Runtime {
    Docker(docker::DockerRuntime),
    Process(process::ProcessRuntime),
}

/// What the server is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSource {
    /// A container image reference (`repo:tag` or `repo@sha256:...`); Docker only.
    Image { reference: String },
    /// A directory on this host (an install or source tree); the process runs in it.
    Path { root: PathBuf },
}

/// How a server gets its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuMode {
    /// Docker: a device request (driver `nvidia`, the GPU ids, capability `gpu`); the NVIDIA
    /// runtime then exposes exactly those GPUs inside the container, numbered from 0.
    /// Process runtime: `CUDA_VISIBLE_DEVICES` (there is no other way).
    #[default]
    DeviceRequest,
    /// Only `CUDA_VISIBLE_DEVICES` is set to the GPU ids, no device request: for hosts without
    /// the NVIDIA container runtime (tests, GPU-less dry runs).
    EnvOnly,
}

/// Everything a runtime needs to start one server. Rendered by the executor.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Unique per attempt: the container name, or the label of a process.
    pub name: String,
    /// [`labels::CAMPAIGN`], [`labels::ADDRESS`], [`labels::RUN`], ...
    pub labels: BTreeMap<String, String>,
    pub source: ServerSource,
    /// The fully rendered command. Docker: `argv[0]` becomes the entrypoint and the rest the
    /// command; an empty `argv` keeps the image's own entrypoint and command.
    pub argv: Vec<String>,
    /// May hold secrets: values are never logged.
    pub env: BTreeMap<String, String>,
    pub gpus: Vec<u32>,
    pub gpu_mode: GpuMode,
    /// The port the server listens on. Docker: inside the container (published on 127.0.0.1 at
    /// a free host port that the runtime chooses); process: on this host.
    pub port: u16,
    /// Bytes of `/dev/shm` (Docker only).
    pub shm_size: Option<i64>,
    /// IPC mode, e.g. `host` (Docker only).
    pub ipc: Option<String>,
    /// `host:container[:ro]`; a leading `~` in the host part is expanded (Docker only).
    pub volumes: Vec<String>,
    /// stdout and stderr of the server go here for its whole life (appended).
    pub log_path: PathBuf,
}

/// A started server. Cheap to clone; every clone refers to the same server.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    /// Container id, or the process id (which is also its process group id).
    pub id: String,
    /// [`ServerSpec::name`].
    pub name: String,
    /// Where the server answers, as reported by the runtime, e.g. `http://127.0.0.1:49213`.
    pub base_url: String,
    /// [`ServerSpec::log_path`].
    pub log_path: PathBuf,
    /// When the runtime started it; [`Runtime::wait_ready`] reports readiness relative to this.
    pub started_at: Instant,
    pub(crate) inner: HandleInner,
}

#[derive(Debug, Clone)]
pub(crate) enum HandleInner {
    Docker(docker::DockerHandle),
    Process(process::ProcessHandle),
}

/// What [`Runtime::ensure_image`] found or fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Docker: the local image id (`sha256:...`, the config digest). Process: the canonical
    /// path of the tree.
    pub id: String,
    /// The registry's manifest digest (`sha256:...`) when the image came from a registry;
    /// `None` for images built locally and for process trees.
    pub repo_digest: Option<String>,
    /// Bytes on disk (Docker).
    pub size: Option<u64>,
    /// Whether this call pulled it (`false`: it was already there).
    pub pulled: bool,
}

impl ImageInfo {
    /// The best content identity for cache keys: the registry digest where known, else the id.
    pub fn digest(&self) -> &str {
        self.repo_digest.as_deref().unwrap_or(&self.id)
    }
}

/// Answer of [`Runtime::image_available`] (for `plan --check-env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Present on this host; `id` as in [`ImageInfo::id`].
    Local {
        id: String,
    },
    /// Not here, but its registry has it (manifest digest).
    Registry {
        digest: String,
    },
    Missing,
}

/// One progress event of a pull, with running totals over all layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub reference: String,
    /// The layer this event is about, if any.
    pub layer: Option<String>,
    /// The engine's status text, e.g. `Downloading`, `Pull complete`.
    pub status: String,
    /// Bytes downloaded so far, summed over the layers being downloaded.
    pub downloaded_bytes: u64,
    /// Sum of the sizes of the layers being downloaded, as far as known yet.
    pub total_bytes: u64,
    pub layers_done: usize,
    pub layers_total: usize,
    /// 1 for the first try; higher after a transient error was retried.
    pub attempt: u32,
}

impl Runtime {
    /// Docker Engine on this host (`DOCKER_HOST` or the local socket), API version negotiated.
    pub async fn docker() -> Result<Runtime, Failure> {
        Ok(Runtime::Docker(docker::DockerRuntime::connect().await?))
    }

    /// Local processes; pid records (for [`Runtime::cleanup_leftovers`]) live in `records_dir`.
    pub fn process(records_dir: impl Into<PathBuf>) -> Runtime {
        Runtime::Process(process::ProcessRuntime::new(records_dir))
    }

    /// `docker` or `process`.
    pub fn kind(&self) -> &'static str {
        match self {
            Runtime::Docker(_) => "docker",
            Runtime::Process(_) => "process",
        }
    }

    /// Makes the image (or tree) available here. Docker: a local image is used as is; otherwise
    /// it is pulled with per-layer progress, retrying transient errors. A reference the
    /// registry does not know → `image_missing`; other pull errors → `pull_failed`.
    /// Process: checks that the path exists (`image_missing` if not).
    pub async fn ensure_image(
        &self,
        reference: &str,
        progress: impl Fn(PullProgress) + Send + Sync,
    ) -> Result<ImageInfo, Failure> {
        match self {
            Runtime::Docker(d) => d.ensure_image(reference, progress).await,
            Runtime::Process(p) => p.ensure_tree(reference).await,
        }
    }

    /// Looks the image up without pulling it: here, in its registry, or nowhere.
    pub async fn image_available(&self, reference: &str) -> Result<Availability, Failure> {
        match self {
            Runtime::Docker(d) => d.image_available(reference).await,
            Runtime::Process(p) => p.tree_available(reference).await,
        }
    }

    /// Starts the server. On error nothing is left running.
    pub async fn start(&self, spec: &ServerSpec) -> Result<ServerHandle, Failure> {
        match self {
            Runtime::Docker(d) => d.start(spec).await,
            Runtime::Process(p) => p.start(spec).await,
        }
    }

    /// Polls `GET base_url + path` every `interval` until it answers 200, and returns the time
    /// from [`ServerHandle::started_at`] to that answer. If the server exits meanwhile →
    /// `crashed` with the cause read from the log tail; after `timeout` (counted from this
    /// call) → `startup_timeout`. Never stops the server: the caller does, on every path.
    pub async fn wait_ready(
        &self,
        handle: &ServerHandle,
        path: &str,
        timeout: Duration,
        interval: Duration,
    ) -> Result<Duration, Failure> {
        ready::wait_ready(self, handle, path, timeout, interval).await
    }

    /// The exit code once the server has exited (128 + signal when a signal ended it, as
    /// Docker reports it), `None` while it runs. A container that vanished reads as `Some(-1)`.
    pub async fn exited(&self, handle: &ServerHandle) -> Option<i64> {
        match (self, &handle.inner) {
            (Runtime::Docker(d), HandleInner::Docker(h)) => d.exited(handle, h).await,
            (Runtime::Process(_), HandleInner::Process(h)) => h.exit_code(),
            _ => Some(-1),
        }
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL. Docker: the container is removed
    /// afterwards; process: the whole process group is signalled. Idempotent.
    pub async fn stop(&self, handle: &ServerHandle, grace: Duration) -> Result<(), Failure> {
        match (self, &handle.inner) {
            (Runtime::Docker(d), HandleInner::Docker(h)) => d.stop(handle, h, grace).await,
            (Runtime::Process(p), HandleInner::Process(h)) => p.stop(handle, h, grace).await,
            _ => Err(Failure::new(
                crate::failure::FailureClass::Internal,
                format!(
                    "server {} was not started by the {} runtime",
                    handle.name,
                    self.kind()
                ),
            )),
        }
    }

    /// Removes what earlier runs of `owner`'s state directory on this host left behind: Docker
    /// containers labelled with its state id and another run, or processes recorded so (only
    /// groups that still carry their start token are signalled). Call it only while holding
    /// the state directory's lock: that is what makes every other run of it dead. Servers of
    /// other state directories, of this run, of other hosts and unlabelled ones are never
    /// touched.
    pub async fn cleanup_leftovers(&self, owner: &Owner) -> Result<Cleanup, Failure> {
        match self {
            Runtime::Docker(d) => d.cleanup_leftovers(owner).await,
            Runtime::Process(p) => p.cleanup_leftovers(owner).await,
        }
    }

    /// Removes whatever a cancelled [`Runtime::start`] of `spec` may have left (Docker: a
    /// created container), selected by the spec's name *and* `owner`'s state and run, so it
    /// can only hit this run's own server. Returns the names removed.
    pub async fn cleanup_cancelled_start(
        &self,
        owner: &Owner,
        spec: &ServerSpec,
    ) -> Result<Vec<String>, Failure> {
        match self {
            Runtime::Docker(d) => d.cleanup_named(owner, Some(&spec.name)).await,
            Runtime::Process(p) => p.cleanup_named(owner, Some(&spec.name)).await,
        }
    }

    /// Removes every server this run (`owner`'s run) started and has not stopped. Only for when
    /// no session of the run is in flight any more (after a fatal error): it cannot tell a live
    /// session's server from a forgotten one. Returns the names removed.
    pub async fn cleanup_this_run(&self, owner: &Owner) -> Result<Vec<String>, Failure> {
        match self {
            Runtime::Docker(d) => d.cleanup_named(owner, None).await,
            Runtime::Process(p) => p.cleanup_named(owner, None).await,
        }
    }
}

/// The value `CUDA_VISIBLE_DEVICES` gets for `gpus`: the ids, comma-separated ("" for none).
pub fn cuda_visible_devices(gpus: &[u32]) -> String {
    gpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_visible_devices_joins_ids_in_order() {
        assert_eq!(cuda_visible_devices(&[]), "");
        assert_eq!(cuda_visible_devices(&[3]), "3");
        assert_eq!(cuda_visible_devices(&[2, 0, 1]), "2,0,1");
    }

    #[test]
    fn only_earlier_runs_of_this_state_on_this_host_are_leftovers() {
        let me = Owner {
            state: "s1".into(),
            run: "r2".into(),
            host: "h".into(),
        };
        let judge = |state: Option<&str>, run: Option<&str>, host: Option<&str>| {
            let mut l = BTreeMap::from([(labels::CAMPAIGN.to_string(), "same-name".to_string())]);
            for (k, v) in [
                (labels::STATE, state),
                (labels::RUN, run),
                (labels::HOST, host),
            ] {
                if let Some(v) = v {
                    l.insert(k.to_string(), v.to_string());
                }
            }
            me.judge(&l)
        };
        assert_eq!(
            judge(Some("s1"), Some("r1"), Some("h")),
            Ownership::EarlierRun
        );
        assert_eq!(judge(Some("s1"), None, Some("h")), Ownership::EarlierRun);
        assert_eq!(judge(Some("s1"), Some("r2"), Some("h")), Ownership::ThisRun);
        assert_eq!(
            judge(Some("s1"), Some("r1"), Some("h2")),
            Ownership::OtherHost
        );
        assert_eq!(judge(Some("s1"), Some("r1"), None), Ownership::OtherHost);
        assert_eq!(
            judge(Some("s2"), Some("r1"), Some("h")),
            Ownership::OtherState
        );
        assert_eq!(judge(None, Some("r1"), Some("h")), Ownership::Unowned);
        let mut with_owner = me.labels();
        with_owner.insert(labels::CAMPAIGN.into(), "x".into());
        assert_eq!(me.judge(&with_owner), Ownership::ThisRun);
    }

    #[test]
    fn image_digest_prefers_the_registry_digest() {
        let mut info = ImageInfo {
            id: "sha256:aaa".into(),
            repo_digest: None,
            size: None,
            pulled: false,
        };
        assert_eq!(info.digest(), "sha256:aaa");
        info.repo_digest = Some("sha256:bbb".into());
        assert_eq!(info.digest(), "sha256:bbb");
    }
}
