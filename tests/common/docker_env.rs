//! The real Docker Engine, a local registry, and test images built from the `isobench` binary
//! under test, for integration tests.
//!
//! - [`docker_or_skip`] connects to the engine and makes sure the registry holds fresh sim
//!   images (built once per test binary). Outside CI an unreachable engine or registry skips the
//!   test with a message; in CI (`CI=true`) it fails the test.
//! - Sim images ([`Sim`]) are `FROM scratch` + the binary + the libraries `ldd` lists, with
//!   `isobench sim --config /etc/isobench/sim.toml` as entrypoint, pushed to
//!   `$ISOBENCH_TEST_REGISTRY` (default `127.0.0.1:5000`) as `isobench-test/sim:<tag>` and then
//!   removed locally, so the first `ensure_image` of a test really pulls.
//! - [`push_payload_image`] pushes an image of random bytes under a new tag, for pull tests
//!   that must see every byte downloaded.
//! - [`CampaignGuard`] removes a test's containers (by campaign label) even when it panics.
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::OnceLock;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptions, ListContainersOptions, ListImagesOptions, PruneImagesOptions,
    PushImageOptions, RemoveContainerOptions, RemoveImageOptions,
};
use futures_util::StreamExt;
use isobench::runtime::docker::DockerRuntime;
use isobench::runtime::{Runtime, labels};

/// The `[models.sim]` and `[server]` sections of a campaign of sim containers (the sim images'
/// binary at `/isobench`, its config at `/etc/isobench/sim.toml`), shared by the Docker tests'
/// manifests, which add their own arms, load, resources and commits.
pub const SIM_MODEL_AND_SERVER: &str = r#"[models.sim]
hf = "isobench/sim"
served_name = "sim"

[server]
runtime = "docker"
command = "/isobench sim --config /etc/isobench/sim.toml --host 0.0.0.0 --port {{ port }} --model sim"
gpus = 1
ready = { path = "/health", timeout = "20s", interval = "100ms" }
"#;

/// Port the sim listens on inside its container.
pub const SIM_PORT: u16 = 8000;
/// What the `crash-at-start` image prints before it exits 1.
pub const CRASH_MESSAGE: &str = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)";

/// The test images and how their sim behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sim {
    /// Ready at once, 10 ms TTFT, 2 ms between tokens.
    Fast,
    /// Ready at once, 40 ms TTFT, 8 ms between tokens.
    Slow,
    /// Prints [`CRASH_MESSAGE`] and exits 1.
    CrashAtStart,
    /// Answers 503 on every path for a day.
    NeverReady,
    /// Ready, but every generation request gets HTTP 500.
    Errors,
}

impl Sim {
    pub const ALL: [Sim; 5] = [
        Sim::Fast,
        Sim::Slow,
        Sim::CrashAtStart,
        Sim::NeverReady,
        Sim::Errors,
    ];

    pub fn tag(self) -> &'static str {
        match self {
            Sim::Fast => "fast",
            Sim::Slow => "slow",
            Sim::CrashAtStart => "crash-at-start",
            Sim::NeverReady => "never-ready",
            Sim::Errors => "errors",
        }
    }

    /// `127.0.0.1:5000/isobench-test/sim:<tag>`
    pub fn reference(self) -> String {
        format!("{}/isobench-test/sim:{}", registry(), self.tag())
    }

    /// The sim's config file inside the image.
    pub fn config(self) -> String {
        let base = format!("host = \"0.0.0.0\"\nport = {SIM_PORT}\n");
        let specific = match self {
            Sim::Fast => "ttft_ms = 10.0\nitl_ms = 2.0\n".to_string(),
            Sim::Slow => "ttft_ms = 40.0\nitl_ms = 8.0\n".to_string(),
            Sim::CrashAtStart => format!("fail_at_start = {CRASH_MESSAGE:?}\n"),
            Sim::NeverReady => "slow_start_s = 86400.0\n".to_string(),
            Sim::Errors => "error_rate = 1.0\n".to_string(),
        };
        base + &specific
    }
}

/// `$ISOBENCH_TEST_REGISTRY`, default `127.0.0.1:5000`.
pub fn registry() -> String {
    std::env::var("ISOBENCH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (outside CI) or fails (in CI) a test whose real infrastructure is missing.
pub fn unavailable(test: &str, why: &str) -> Option<DockerRuntime> {
    if in_ci() {
        panic!("{test}: {why} (CI=true: Docker tests must run; see scripts/ci-setup.sh)");
    }
    eprintln!("SKIPPED {test}: {why}; run scripts/ci-setup.sh to enable Docker tests");
    None
}

/// The engine, with the sim images in the registry; `None` (after a message) when this machine
/// has no Docker or registry and `CI` is not `true`.
pub async fn docker_or_skip(test: &str) -> Option<DockerRuntime> {
    let runtime = match DockerRuntime::connect().await {
        Ok(runtime) => runtime,
        Err(failure) => return unavailable(test, &failure.message),
    };
    let registry = registry();
    let probe = reqwest::Client::builder().no_proxy().build().unwrap();
    if let Err(err) = probe.get(format!("http://{registry}/v2/")).send().await {
        return unavailable(test, &format!("no registry at {registry} ({err})"));
    }
    // Built on a thread of its own: the images are shared by all tests of this binary, each of
    // which has its own tokio runtime.
    let built = tokio::task::spawn_blocking(|| ensure_sim_images().clone())
        .await
        .unwrap();
    if let Err(err) = built {
        panic!("building the sim test images failed: {err}");
    }
    Some(runtime)
}

fn ensure_sim_images() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        on_private_runtime(|docker| async move {
            let _lock = CrossProcessLock::acquire("isobench-test-images");
            build_and_push_sims(&docker).await
        })
    })
}

/// Runs `build` with an engine connection on a thread and tokio runtime of its own: test images
/// are shared by all tests of a binary, and each test has its own (possibly ending) runtime.
pub fn on_private_runtime<F, Fut>(build: F) -> Result<(), String>
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let docker = Docker::connect_with_local_defaults()
                .map_err(|e| e.to_string())?
                .negotiate_version()
                .await
                .map_err(|e| e.to_string())?;
            build(docker).await
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the image build thread panicked".into()))
}

async fn build_and_push_sims(docker: &Docker) -> Result<(), String> {
    remove_stale_test_images(docker).await;
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    files.push((
        "Dockerfile".into(),
        b"FROM scratch\n\
          COPY rootfs/ /\n\
          ARG FLAVOUR\n\
          COPY sim-${FLAVOUR}.toml /etc/isobench/sim.toml\n\
          LABEL isobench.test=sim\n\
          ENTRYPOINT [\"/isobench\", \"sim\", \"--config\", \"/etc/isobench/sim.toml\"]\n"
            .to_vec(),
        0o644,
    ));
    for (name, host_path) in rootfs_files()? {
        let bytes = std::fs::read(&host_path).map_err(|e| format!("reading {host_path}: {e}"))?;
        files.push((name, bytes, 0o755));
    }
    for sim in Sim::ALL {
        files.push((
            format!("sim-{}.toml", sim.tag()),
            sim.config().into_bytes(),
            0o644,
        ));
    }
    let context = tar_of(&files)?;
    for sim in Sim::ALL {
        let reference = sim.reference();
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(reference.clone()),
            rm: true,
            forcerm: true,
            buildargs: Some(HashMap::from([(
                "FLAVOUR".to_string(),
                sim.tag().to_string(),
            )])),
            ..Default::default()
        };
        build(docker, options, context.clone()).await?;
        push(docker, &reference).await?;
    }
    for sim in Sim::ALL {
        // Gone locally, so tests pull for real. An image in use by a container (another test
        // binary running at the same time) stays, which is harmless.
        remove_local_image(docker, &sim.reference()).await;
    }
    Ok(())
}

/// `(path in the build context, path on this host)` for the binary (as `rootfs/isobench`) and
/// every library `ldd` lists (at the path it has here).
pub fn rootfs_files() -> Result<Vec<(String, String)>, String> {
    let binary = env!("CARGO_BIN_EXE_isobench");
    let mut files = vec![("rootfs/isobench".to_string(), binary.to_string())];
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let target = line.split("=>").last().unwrap_or(line).trim();
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            files.push((format!("rootfs{path}"), path.to_string()));
        }
    }
    Ok(files)
}

pub fn tar_of(files: &[(String, Vec<u8>, u32)]) -> Result<bytes::Bytes, String> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(|e| format!("building the context: {e}"))?;
    }
    builder
        .into_inner()
        .map(bytes::Bytes::from)
        .map_err(|e| e.to_string())
}

/// Builds the context `files` (with a `Dockerfile` among them) and tags the image `tag`.
pub async fn build_tagged(docker: &Docker, tag: &str, files: &[(String, Vec<u8>, u32)]) {
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    build(docker, options, tar_of(files).unwrap())
        .await
        .unwrap();
}

pub async fn build(
    docker: &Docker,
    options: BuildImageOptions,
    context: bytes::Bytes,
) -> Result<(), String> {
    let tag = options.t.clone().unwrap_or_default();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context)));
    while let Some(event) = stream.next().await {
        match event {
            Ok(info) if info.error.is_some() => {
                return Err(format!("building {tag}: {:?}", info.error));
            }
            Ok(_) => {}
            Err(err) => return Err(format!("building {tag}: {err}")),
        }
    }
    Ok(())
}

/// Pushes `reference` and returns the manifest digest the registry reported.
async fn push(docker: &Docker, reference: &str) -> Result<String, String> {
    let (repo, tag) = reference
        .rsplit_once(':')
        .expect("test references have a tag");
    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let mut stream = docker.push_image(repo, Some(options), Some(DockerCredentials::default()));
    let mut digest = None;
    while let Some(event) = stream.next().await {
        let info = event.map_err(|e| format!("pushing {reference}: {e}"))?;
        if let Some(error) = info.error {
            return Err(format!("pushing {reference}: {error}"));
        }
        if let Some(d) = info
            .status
            .as_deref()
            .and_then(|s| s.split("digest: ").nth(1))
        {
            digest = d.split_whitespace().next().map(str::to_string);
        }
    }
    digest.ok_or_else(|| format!("pushing {reference}: the registry reported no digest"))
}

/// Earlier runs' images: the sims they pulled (rebuilt now), their untagged predecessors, and
/// payload images a failed pull test left. Images in use by a container stay.
async fn remove_stale_test_images(docker: &Docker) {
    for sim in Sim::ALL {
        remove_local_image(docker, &sim.reference()).await;
    }
    let label = |value: &str| {
        HashMap::from([("label".to_string(), vec![format!("isobench.test={value}")])])
    };
    let mut dangling_sims = label("sim");
    dangling_sims.insert("dangling".into(), vec!["true".into()]);
    let prune = PruneImagesOptions {
        filters: Some(dangling_sims),
    };
    let _ = docker.prune_images(Some(prune)).await;
    let payloads = ListImagesOptions {
        filters: Some(label("payload")),
        ..Default::default()
    };
    for image in docker.list_images(Some(payloads)).await.unwrap_or_default() {
        for tag in image.repo_tags {
            remove_local_image(docker, &tag).await;
        }
    }
}

pub async fn remove_local_image(docker: &Docker, reference: &str) {
    let options = RemoveImageOptions {
        force: false,
        noprune: false,
    };
    let _ = docker.remove_image(reference, Some(options), None).await;
}

/// Builds an image of two layers of random bytes (`layer_bytes` each), pushes it under a tag
/// never used before, removes it locally, and returns its reference and manifest digest.
pub async fn push_payload_image(
    docker: &Docker,
    layer_bytes: usize,
) -> Result<(String, String), String> {
    use rand::RngCore;
    let mut a = vec![0u8; layer_bytes];
    let mut b = vec![0u8; layer_bytes];
    rand::rng().fill_bytes(&mut a);
    rand::rng().fill_bytes(&mut b);
    let files = vec![
        (
            "Dockerfile".to_string(),
            b"FROM scratch\nCOPY a /a\nCOPY b /b\nLABEL isobench.test=payload\n".to_vec(),
            0o644,
        ),
        ("a".to_string(), a, 0o644),
        ("b".to_string(), b, 0o644),
    ];
    let reference = format!("{}/isobench-test/payload:{}", registry(), unique_suffix());
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(reference.clone()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    build(docker, options, tar_of(&files)?).await?;
    let digest = push(docker, &reference).await?;
    remove_local_image(docker, &reference).await;
    Ok((reference, digest))
}

/// Tags the local image `source` (pulled first if needed) as `target` (`repo:tag`).
pub async fn tag_image(docker: &Docker, source: &str, target: &str) -> Result<(), String> {
    if docker.inspect_image(source).await.is_err() {
        let runtime = DockerRuntime::connect().await.map_err(|f| f.message)?;
        Runtime::Docker(runtime)
            .ensure_image(source, |_| {})
            .await
            .map_err(|f| format!("pulling {source}: {f}"))?;
    }
    let (repo, tag) = target.rsplit_once(':').expect("a tag");
    let options = bollard::query_parameters::TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    docker
        .tag_image(source, Some(options))
        .await
        .map_err(|e| format!("tagging {source} as {target}: {e}"))
}

/// `sim`'s image pushed under a tag never used before and then untagged here, so an apply
/// really pulls it (its layers are shared with `sim`'s, so the pull is quick).
pub async fn push_sim_copy(docker: &Docker, sim: Sim) -> Result<String, String> {
    let reference = format!(
        "{}/isobench-test/sim-copy:{}-{}",
        registry(),
        sim.tag(),
        unique_suffix()
    );
    tag_image(docker, &sim.reference(), &reference).await?;
    push(docker, &reference).await?;
    remove_local_image(docker, &reference).await;
    Ok(reference)
}

/// Unique enough for names and tags within and across test runs.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), nanos % 1_000_000_000)
}

/// Containers labelled with `campaign`, running or not (names without the leading `/`).
pub async fn containers_of(docker: &Docker, campaign: &str) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={campaign}", labels::CAMPAIGN)],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .expect("listing containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect()
}

/// Removes every container labelled with its campaign when dropped, so a failing test leaves
/// nothing behind (the assertion that nothing is left is the test's own job).
pub struct CampaignGuard {
    pub campaign: String,
}

impl CampaignGuard {
    pub fn new(test: &str) -> CampaignGuard {
        CampaignGuard {
            campaign: format!("test-{test}-{}", unique_suffix()),
        }
    }
}

impl Drop for CampaignGuard {
    fn drop(&mut self) {
        let campaign = self.campaign.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(docker) = Docker::connect_with_local_defaults() else {
                    return;
                };
                let Ok(docker) = docker.negotiate_version().await else {
                    return;
                };
                for name in containers_of(&docker, &campaign).await {
                    let options = RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    };
                    let _ = docker.remove_container(&name, Some(options)).await;
                }
            });
        })
        .join();
    }
}

/// An exclusive `flock` on a file in the temp dir, released on drop: serialises image builds
/// of test binaries that run at the same time.
struct CrossProcessLock(std::fs::File);

impl CrossProcessLock {
    fn acquire(name: &str) -> CrossProcessLock {
        let path = std::env::temp_dir().join(format!("{name}.lock"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        file.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
        let _ = writeln!(file, "{}", std::process::id());
        CrossProcessLock(file)
    }
}
