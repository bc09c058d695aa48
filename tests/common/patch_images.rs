//! Locally built base images for the `patch_docker` tests (no registry needed: derived images
//! are built on this engine from local bases).
//!
//! - [`BASE`]: `FROM scratch` + the `isobench` binary under test (and the libraries `ldd`
//!   lists) + a vLLM-like installed package under [`SITE`] whose `vllm/sim.toml` is the
//!   server's latency model (the entrypoint is `isobench sim --config <SITE>/vllm/sim.toml`),
//!   a file owned by uid 1000, a source tree under [`SRC`] (`setup.py`, `csrc/`, `vllm/`),
//!   and `/bin/sh` + `/bin/rm` (the host's dash and rm) for `RUN` steps. No Python: the target
//!   is found by scanning the filesystem.
//! - [`PYTHON`]: [`BASE`] plus the host's Debian Python (`/usr/bin/python3.N` and its
//!   standard library) with [`SRC`] as an editable install (a `.pth` file in
//!   `/usr/local/lib/python3.N/dist-packages`), its modules compiled to *unchecked-hash*
//!   bytecode (Python never compares those with the source). The image's Python, asked where
//!   `vllm` is, names [`SRC`] — not the site-packages under [`SITE`], which it does not use.
//! - [`NO_VLLM`]: the binary only.
//!
//! Both are built once per test binary (without the build cache, so each run has new image
//! ids and therefore new derived-image keys); images of earlier runs, derived ones included,
//! are removed first.
//!
//! Include with `#[path = "common/patch_images.rs"] mod patch_images;` next to `mod common;`
//! and `#[path = "common/patch_fixtures.rs"] mod patch_fixtures;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::OnceLock;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
};
use futures_util::StreamExt;
use isobench::runtime::docker::DockerRuntime;

use crate::common::docker_env::{on_private_runtime, unavailable};

pub const BASE: &str = "isobench-test/patch-base:sim";
pub const NO_VLLM: &str = "isobench-test/patch-base:no-vllm";
pub const PYTHON: &str = "isobench-test/patch-base:python";

/// The Debian Python copied into [`PYTHON`]: `(minor version, binary, standard library)`,
/// e.g. `(11, /usr/bin/python3.11, /usr/lib/python3.11)`.
pub fn host_python() -> Result<(u32, String, String), String> {
    (8..=20)
        .rev()
        .map(|minor| {
            (
                minor,
                format!("/usr/bin/python3.{minor}"),
                format!("/usr/lib/python3.{minor}"),
            )
        })
        .find(|(_, binary, stdlib)| {
            std::path::Path::new(binary).is_file()
                && std::path::Path::new(stdlib).join("os.py").is_file()
        })
        .ok_or_else(|| {
            "no Debian python3 (/usr/bin/python3.N + /usr/lib/python3.N); install python3".into()
        })
}

/// The bytecode tag of [`host_python`], e.g. `cpython-311`.
pub fn python_cache_tag() -> String {
    let minor = host_python().map(|(m, _, _)| m).unwrap_or(0);
    format!("cpython-3{minor}")
}
/// The installed package's directory in [`BASE`].
pub const SITE: &str = "/opt/venv/lib/python3.11/site-packages";
/// A source checkout (editable-install style) in [`BASE`].
pub const SRC: &str = "/workspace/vllm-src";
/// Label on both bases, inherited by every image derived from them.
const TEST_LABEL: &str = "isobench.test=patch-base";

/// The engine with the base images built; `None` (after a `SKIPPED` line) without Docker,
/// unless `CI=true`, where a missing engine fails the test.
pub async fn docker_or_skip(test: &str) -> Option<DockerRuntime> {
    let runtime = match DockerRuntime::connect().await {
        Ok(runtime) => runtime,
        Err(failure) => return unavailable(test, &failure.message),
    };
    let built = tokio::task::spawn_blocking(|| base_images().clone())
        .await
        .unwrap();
    if let Err(err) = built {
        panic!("building the patch base images failed: {err}");
    }
    Some(runtime)
}

fn base_images() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        on_private_runtime(|docker| async move {
            remove_earlier_images(&docker).await;
            build_bases(&docker).await
        })
    })
}

/// Derived images first (they depend on the bases), then the bases.
async fn remove_earlier_images(docker: &Docker) {
    let options = ListImagesOptions {
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![TEST_LABEL.to_string()],
        )])),
        ..Default::default()
    };
    let images = docker.list_images(Some(options)).await.unwrap_or_default();
    let mut tags: Vec<String> = images.into_iter().flat_map(|i| i.repo_tags).collect();
    tags.sort_by_key(|t| !t.starts_with("isobench-patched/"));
    for tag in tags {
        let options = RemoveImageOptions {
            force: true,
            noprune: false,
        };
        let _ = docker.remove_image(&tag, Some(options), None).await;
    }
}

async fn build_bases(docker: &Docker) -> Result<(), String> {
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    for (name, host_path) in rootfs_files()? {
        let bytes = std::fs::read(&host_path).map_err(|e| format!("reading {host_path}: {e}"))?;
        files.push((name, bytes, 0o755));
    }
    for (rel, text) in crate::patch_fixtures::package_files() {
        files.push((format!("site/{rel}"), text.into_bytes(), 0o644));
    }
    files.push((
        "owned/vllm/owned.py".into(),
        b"OWNED = 'base'\n".to_vec(),
        0o644,
    ));
    for (rel, text) in source_tree() {
        files.push((format!("src/{rel}"), text.into_bytes(), 0o644));
    }
    files.push((
        "Dockerfile.base".into(),
        format!(
            "FROM scratch\n\
             COPY rootfs/ /\n\
             COPY site/ {SITE}/\n\
             COPY --chown=1000:1000 owned/ {SITE}/\n\
             COPY src/ {SRC}/\n\
             ENV PATH=/bin\n\
             LABEL {TEST_LABEL}\n\
             ENTRYPOINT [\"/isobench\", \"sim\", \"--config\", \"{SITE}/vllm/sim.toml\"]\n"
        )
        .into_bytes(),
        0o644,
    ));
    files.push((
        "Dockerfile.novllm".into(),
        format!(
            "FROM scratch\n\
             COPY rootfs/isobench /isobench\n\
             LABEL {TEST_LABEL}\n\
             ENTRYPOINT [\"/isobench\", \"sim\"]\n"
        )
        .into_bytes(),
        0o644,
    ));
    files.extend(python_files()?);
    files.push((
        "Dockerfile.python".into(),
        format!(
            "FROM {BASE}\n\
             COPY py/ /\n\
             ENV PATH=/usr/bin:/bin\n\
             RUN [\"python3\", \"-m\", \"compileall\", \"-q\", \"--invalidation-mode\", \"unchecked-hash\", \"{SRC}/vllm\"]\n"
        )
        .into_bytes(),
        0o644,
    ));
    let context = tar_of(&files)?;
    for (dockerfile, tag) in [
        ("Dockerfile.base", BASE),
        ("Dockerfile.novllm", NO_VLLM),
        ("Dockerfile.python", PYTHON),
    ] {
        let options = BuildImageOptions {
            dockerfile: dockerfile.into(),
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            nocache: true,
            ..Default::default()
        };
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(context.clone())));
        while let Some(event) = stream.next().await {
            match event {
                Ok(info) if info.error.is_some() => {
                    return Err(format!("building {tag}: {:?}", info.error));
                }
                Ok(_) => {}
                Err(err) => return Err(format!("building {tag}: {err}")),
            }
        }
    }
    Ok(())
}

/// `py/...`: the host's Debian Python as `/usr/bin/python3`, its libraries, its standard
/// library (without tests, tools and caches; symlinks left out), and the editable install's
/// `.pth` file.
fn python_files() -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let (minor, binary, stdlib) = host_python()?;
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("reading {path}: {e}"));
    let mut files = vec![("py/usr/bin/python3".to_string(), read(&binary)?, 0o755)];
    for lib in ldd(&binary)? {
        files.push((format!("py{lib}"), read(&lib)?, 0o755));
    }
    const SKIP: &[&str] = &[
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "__pycache__",
    ];
    let walker = walkdir::WalkDir::new(&stdlib)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !SKIP.contains(&name.as_ref()) && !name.starts_with("config-3")
        });
    for entry in walker {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_type().is_file() {
            let path = entry.path().display().to_string();
            files.push((format!("py{path}"), read(&path)?, 0o644));
        }
    }
    files.push((
        format!("py/usr/local/lib/python3.{minor}/dist-packages/__editable__.vllm-0.0.0.pth"),
        format!("{SRC}\n").into_bytes(),
        0o644,
    ));
    Ok(files)
}

/// Libraries `ldd` lists for a binary (absolute paths).
fn ldd(binary: &str) -> Result<Vec<String>, String> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let target = line.split("=>").last().unwrap_or(line).trim();
            let path = target.split(" (").next().unwrap_or("").trim();
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

/// The source tree under [`SRC`]: a checkout with compiled sources.
pub fn source_tree() -> Vec<(&'static str, String)> {
    vec![
        ("setup.py", "# builds vllm._C from csrc/\n".to_string()),
        (
            "csrc/attention.cu",
            "__global__ void attention() {}\n".to_string(),
        ),
        ("vllm/__init__.py", "VALUE = 'source'\n".to_string()),
    ]
}

/// `(path in the context, path on this host)`: the binary, `/bin/sh` (dash), `/bin/rm`, and
/// every library `ldd` lists for them.
fn rootfs_files() -> Result<Vec<(String, String)>, String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
            .map(|p| p.to_string())
            .ok_or_else(|| format!("none of {names:?} exists on this host"))
    };
    let binaries = [
        (
            "rootfs/isobench".to_string(),
            env!("CARGO_BIN_EXE_isobench").to_string(),
        ),
        (
            "rootfs/bin/sh".to_string(),
            find(&["/bin/dash", "/usr/bin/dash"])?,
        ),
        (
            "rootfs/bin/rm".to_string(),
            find(&["/bin/rm", "/usr/bin/rm"])?,
        ),
    ];
    let mut files: Vec<(String, String)> = binaries.to_vec();
    for (_, binary) in &binaries {
        for path in ldd(binary)? {
            let entry = (format!("rootfs{path}"), path);
            if !files.contains(&entry) {
                files.push(entry);
            }
        }
    }
    Ok(files)
}

fn tar_of(files: &[(String, Vec<u8>, u32)]) -> Result<bytes::Bytes, String> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(1_700_000_000);
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

/// A file read out of an image: content and owner uid. `None` if it does not exist.
pub struct ImageFile {
    pub bytes: Vec<u8>,
    pub uid: u64,
    pub mode: u32,
}

pub async fn read_image_file(docker: &Docker, image: &str, path: &str) -> Option<ImageFile> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["/never-started".to_string()]),
        labels: Some(HashMap::from([(
            "isobench.test".to_string(),
            "patch-reader".to_string(),
        )])),
        ..Default::default()
    };
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .expect("creating a reader container")
        .id;
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(&id, Some(options));
    let mut archive = Vec::new();
    let mut missing = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => archive.extend_from_slice(&chunk),
            Err(_) => {
                missing = true;
                break;
            }
        }
    }
    let remove = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    docker.remove_container(&id, Some(remove)).await.unwrap();
    if missing {
        return None;
    }
    let mut archive = tar::Archive::new(archive.as_slice());
    let mut entry = archive.entries().unwrap().next()?.unwrap();
    let uid = entry.header().uid().unwrap();
    let mode = entry.header().mode().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
    Some(ImageFile { bytes, uid, mode })
}

/// Runs `argv` in a container of `image` (no network) and returns its output (stdout and
/// stderr) and exit code.
pub async fn run_in_image(docker: &Docker, image: &str, argv: &[&str]) -> (String, i64) {
    use bollard::models::HostConfig;
    use bollard::query_parameters::{LogsOptions, WaitContainerOptions};
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv.iter().map(|s| s.to_string()).collect()),
        cmd: Some(Vec::new()),
        labels: Some(HashMap::from([(
            "isobench.test".to_string(),
            "patch-runner".to_string(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .expect("creating a runner container")
        .id;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("starting the runner container");
    let mut code = -1;
    let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
    while let Some(item) = wait.next().await {
        match item {
            Ok(r) => code = r.status_code,
            Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
            Err(_) => {}
        }
    }
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut output = String::new();
    let mut logs = docker.logs(&id, Some(options));
    while let Some(Ok(chunk)) = logs.next().await {
        output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let remove = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    docker.remove_container(&id, Some(remove)).await.unwrap();
    (output, code)
}

/// Names of containers (running or not) whose name contains `needle`.
pub async fn containers_named(docker: &Docker, needle: &str) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .filter(|n| n.contains(needle))
        .collect()
}
