//! Docker: the patched files layered over the base image as a derived image.
//!
//! A helper container is *created* (never started) from the base image; the engine's archive
//! API reads single files and directories out of it, so only the files the patch touches are
//! extracted. The target directory is `patch_target`, else asked of the image's own Python (a
//! short-lived container, no network), else found by scanning the image's filesystem export for
//! `*/site-packages/vllm/__init__.py`. After `git apply` on the host, a build context is
//! generated — `FROM <base id>`, one `COPY` of the patched files per owner, an exec-form
//! `RUN rm` for deleted files, and the `rebuild` command as a `RUN` step (so it runs in a build
//! container from the derived image and its result is committed) — and built through bollard
//! with the classic builder. Stale `__pycache__` entries of changed modules are overwritten with
//! empty files, which Python rejects (bad magic) and recompiles from the patched source.
//!
//! The image is tagged `isobench-patched/<base name>:<key12>` and labelled with the base id and
//! digest, the patch hash, the full key and the build record. A later call with the same key
//! finds the tag, checks the key label and returns it with `reused: true`.
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, DownloadFromContainerOptions, LogsOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::apply::{ApplyJob, apply_with_tolerance, check_git, io_failure};
use super::{
    BuildRecord, Change, Mapping, PACKAGE, PYTHON_PROBE, PatchInput, PatchLog, PatchOutcome,
    PatchedSource, TargetFacts, build_key, collect_changes, internal, link_failure, parent_dirs,
    parse_probe_output, pycache_of, scratch_dir, short_hex, target_failure,
};
use crate::failure::{Failure, FailureClass};
use crate::manifest::model::PatchSpec;
use crate::runtime::ImageInfo;
use crate::runtime::docker::DockerRuntime;

/// Label keys of derived images and helper containers.
pub mod labels {
    /// On every derived image (for pruning): `true`.
    pub const PATCHED: &str = "isobench.patched";
    /// The full cache key (`b3:...`); a tag whose key label differs is not reused.
    pub const KEY: &str = "isobench.patch.key";
    /// The base image's local id (`sha256:...`), which the derived image is built `FROM`.
    pub const BASE_ID: &str = "isobench.patch.base-id";
    /// The base's best digest: the registry digest where known, else the id.
    pub const BASE_DIGEST: &str = "isobench.patch.base-digest";
    /// The patch file's content hash.
    pub const PATCH_HASH: &str = "isobench.patch.hash";
    /// The build record (JSON): files, skipped files, fuzz used, target.
    pub const RECORD: &str = "isobench.patch.record";
    /// On helper and probe containers: `true`.
    pub const HELPER: &str = "isobench.patch.helper";
    /// On helper and probe containers: `<host>:<pid>` of the isobench process that made them;
    /// [`super::cleanup_helpers`] removes those whose process is gone.
    pub const OWNER: &str = "isobench.patch.owner";
}

fn helper_labels() -> HashMap<String, String> {
    HashMap::from([
        (labels::HELPER.to_string(), "true".to_string()),
        (
            labels::OWNER.to_string(),
            format!("{}:{}", crate::state::lock::hostname(), std::process::id()),
        ),
    ])
}

/// Removes helper and probe containers that an isobench process on this host left behind when
/// it was killed mid-build (its pid is gone). Those of live processes are kept: another apply
/// may be building right now. Returns the names removed.
pub async fn cleanup_helpers(runtime: &DockerRuntime) -> Result<Vec<String>, Failure> {
    use bollard::query_parameters::ListContainersOptions;
    let docker = runtime.client();
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{}=true", labels::HELPER)],
        )])),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| internal(format!("listing patch helper containers: {e}")))?;
    let this_host = crate::state::lock::hostname();
    let mut removed = Vec::new();
    for container in containers {
        let owner = container
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::OWNER))
            .cloned()
            .unwrap_or_default();
        let gone = match owner.rsplit_once(':') {
            Some((host, pid)) if host == this_host => !Path::new(&format!("/proc/{pid}")).exists(),
            _ => false,
        };
        if gone && let Some(id) = container.id {
            remove_container(docker, &id).await;
            removed.extend(container.names.unwrap_or_default());
        }
    }
    Ok(removed)
}

/// Registry-free repository for derived images.
pub const REPOSITORY_PREFIX: &str = "isobench-patched";
/// How long the base's Python may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest single file or directory read out of an image.
const FETCH_LIMIT: usize = 512 << 20;

pub(super) async fn build(
    runtime: &DockerRuntime,
    input: &PatchInput,
    spec: &PatchSpec,
    base: &ImageInfo,
    reference: &str,
    cache_dir: &Path,
    log: &PatchLog,
) -> Result<PatchOutcome, Failure> {
    let docker = runtime.client();
    let key = build_key(&base.id, spec);
    let tag = derived_tag(reference, &key.hex());
    if let Some(outcome) = find_built(docker, &tag, &key.hex(), log).await? {
        return Ok(outcome);
    }
    let helper = create_helper(docker, &base.id, &key.hex()).await?;
    log.line(&format!(
        "helper container {} created from {} (not started)",
        short(&helper),
        base.id
    ));
    let result = HelperBuild {
        docker,
        helper: &helper,
        input,
        spec,
        base,
        reference,
        tag: &tag,
        key: &key,
        cache_dir,
        log,
    }
    .run()
    .await;
    remove_container(docker, &helper).await;
    result
}

/// One patch build through its helper container (created from the base, never started: files
/// are read out of it through the engine).
struct HelperBuild<'a> {
    docker: &'a Docker,
    helper: &'a str,
    input: &'a PatchInput,
    spec: &'a PatchSpec,
    base: &'a ImageInfo,
    reference: &'a str,
    tag: &'a str,
    key: &'a crate::util::hash::Hash,
    cache_dir: &'a Path,
    log: &'a PatchLog,
}

impl HelperBuild<'_> {
    /// Finds the target and maps the patch onto it, refuses links on the patch's paths, then
    /// applies and builds in a scratch directory that is removed whatever happens.
    async fn run(&self) -> Result<PatchOutcome, Failure> {
        let (target, mapping, rebuild) = self.map_onto_target().await?;
        self.refuse_links(&target, &mapping).await?;
        let work = scratch_dir(self.cache_dir, self.key);
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(|e| io_failure("clearing", &work, e))?;
        }
        let pre = work.join("pre");
        std::fs::create_dir_all(&pre).map_err(|e| io_failure("creating", &pre, e))?;
        let result = self.build_in(&work, &pre, &target, &mapping, rebuild).await;
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// The installed package the patch applies to, and which of the patch's files belong to
    /// it. Fails when files the patch names at the wrong root exist in the target, or when a
    /// rebuild is needed and impossible.
    async fn map_onto_target(&self) -> Result<(String, Mapping, bool), Failure> {
        let (docker, helper, input, log) = (self.docker, self.helper, self.input, self.log);
        let target = find_target(
            docker,
            helper,
            &self.key.hex(),
            self.base,
            self.reference,
            self.spec,
            log,
        )
        .await?;
        let facts = TargetFacts {
            holds_package: exists(
                docker,
                helper,
                &join(&target, &format!("{PACKAGE}/__init__.py")),
            )
            .await?,
            has_build_script: exists(docker, helper, &join(&target, "setup.py")).await?
                || exists(docker, helper, &join(&target, "pyproject.toml")).await?,
            name: target.rsplit('/').next().unwrap_or("").to_string(),
        };
        let mapping = Mapping::new(input, &facts);
        log.line(&format!(
            "target {target}: {:?}; applying {} file(s), skipping {}",
            mapping.layout,
            mapping.applied.len(),
            mapping.skipped.len()
        ));
        for skipped in &mapping.skipped {
            log.line(&format!("  skipped (not part of the target): {skipped}"));
        }
        let mut misrooted = Vec::new();
        for (named, real) in mapping.misrooted_candidates() {
            if exists(docker, helper, &join(&target, &real)).await? {
                misrooted.push((named, real));
            }
        }
        if !misrooted.is_empty() {
            return Err(Mapping::misrooted_failure(input, &misrooted));
        }
        let rebuild = mapping.check_rebuildable(input, self.spec, &target)?;
        Ok((target, mapping, rebuild))
    }

    /// Before anything is read: no path of the patch may go through a link in the image (the
    /// paths themselves were checked when the patch was parsed: relative, no `..`). The engine
    /// resolves links inside the container, so this is about the image, not the host: a COPY
    /// through a link would change files outside the target.
    async fn refuse_links(&self, target: &str, mapping: &Mapping) -> Result<(), Failure> {
        let mut kinds: HashMap<String, Option<u8>> = HashMap::new();
        for rel in mapping.pre_image_paths(self.input) {
            let mut steps = parent_dirs(&rel);
            steps.push(&rel);
            for step in steps {
                let path = join(target, step);
                let kind = match kinds.get(&path) {
                    Some(kind) => *kind,
                    None => {
                        let kind = head_kind(self.docker, self.helper, &path).await?;
                        kinds.insert(path, kind);
                        kind
                    }
                };
                match kind {
                    Some(b'2') => {
                        let place = format!("image {} (below {target})", self.reference);
                        return Err(link_failure(&self.input.name, &rel, step, &place));
                    }
                    Some(b'5') => {}
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Extracts, applies, writes the build context and builds the derived image.
    async fn build_in(
        &self,
        work: &Path,
        pre: &Path,
        target: &str,
        mapping: &Mapping,
        rebuild: bool,
    ) -> Result<PatchOutcome, Failure> {
        let (input, log) = (self.input, self.log);
        let owners = self.extract(pre, target, mapping).await?;
        let (fuzz_used, changes, applied_dir) = self.apply(work, pre, target, mapping).await?;
        let blank_caches = self.stale_caches(target, &changes).await?;
        let record = BuildRecord {
            key: self.key.hex(),
            files: mapping.applied_paths(input),
            skipped: mapping.skipped.clone(),
            fuzz_used,
            target: target.to_string(),
        };
        let context_dir = self
            .cache_dir
            .join("contexts")
            .join(short_hex(self.key, 24));
        let context = write_context(
            &context_dir,
            &self.base.id,
            target,
            &changes,
            &applied_dir,
            &owners,
            &blank_caches,
            self.spec.rebuild.as_deref().filter(|_| rebuild),
        )?;
        log.line(&format!(
            "build context {} ({} file(s) changed, {} stale cache(s) blanked)",
            context_dir.display(),
            changes.len(),
            blank_caches.len()
        ));
        log.block(&context.dockerfile);
        let mut image_labels = HashMap::from([
            (labels::PATCHED.to_string(), "true".to_string()),
            (labels::KEY.to_string(), self.key.hex()),
            (labels::BASE_ID.to_string(), self.base.id.clone()),
            (
                labels::BASE_DIGEST.to_string(),
                self.base.digest().to_string(),
            ),
            (labels::PATCH_HASH.to_string(), input.hash.hex()),
        ]);
        image_labels.insert(
            labels::RECORD.to_string(),
            serde_json::to_string(&record).expect("plain data"),
        );
        let id = build_image(self.docker, self.tag, image_labels, context, log).await?;
        Ok(PatchOutcome {
            source: PatchedSource::Image {
                reference: self.tag.to_string(),
                id,
            },
            reused: false,
            fuzz_used: record.fuzz_used,
            files: record.files,
            skipped: record.skipped,
            target: record.target,
        })
    }

    /// Real copies of the touched files into `pre`, with their owners for the COPY lines.
    async fn extract(
        &self,
        pre: &Path,
        target: &str,
        mapping: &Mapping,
    ) -> Result<HashMap<String, (u64, u64)>, Failure> {
        let input = self.input;
        let mut owners: HashMap<String, (u64, u64)> = HashMap::new();
        for rel in mapping.pre_image_paths(input) {
            let path = join(target, &rel);
            let Some(entry) = fetch_file(self.docker, self.helper, &path).await? else {
                continue;
            };
            let dest = pre.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_failure("creating", parent, e))?;
            }
            std::fs::write(&dest, &entry.bytes).map_err(|e| io_failure("writing", &dest, e))?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(entry.mode))
                .map_err(|e| io_failure("setting the mode of", &dest, e))?;
            owners.insert(rel, (entry.uid, entry.gid));
        }
        self.log.line(&format!(
            "extracted {} of {} touched path(s) from the base ({} are new)",
            owners.len(),
            mapping.pre_image_paths(input).len(),
            mapping.pre_image_paths(input).len() - owners.len()
        ));
        Ok(owners)
    }

    /// Applies the part of the patch that belongs to the target to the extracted copies (with
    /// `git apply`, off the async threads). Returns the fuzz used, the changes, and the
    /// directory holding the patched files.
    async fn apply(
        &self,
        work: &Path,
        pre: &Path,
        target: &str,
        mapping: &Mapping,
    ) -> Result<(Option<u32>, Vec<Change>, PathBuf), Failure> {
        if mapping.applied.is_empty() {
            self.log.line(
                "nothing of the patch applies to this target: the image is the base plus labels",
            );
            return Ok((None, Vec::new(), pre.to_path_buf()));
        }
        let patch_file = work.join("patch.diff");
        std::fs::write(&patch_file, mapping.filtered_patch(self.input))
            .map_err(|e| io_failure("writing", &patch_file, e))?;
        let (work, pre) = (work.to_path_buf(), pre.to_path_buf());
        let (input, mapping, log) = (self.input.clone(), mapping.clone(), self.log.clone());
        let (fuzz, target) = (self.spec.fuzz, target.to_string());
        let (applied, changes) = tokio::task::spawn_blocking(move || {
            log.line(&check_git()?);
            let headers = mapping.hunk_headers(&input);
            let lookup = |path: &str, n: u32| headers.get(&(path.to_string(), n)).cloned();
            let applied = apply_with_tolerance(
                &ApplyJob {
                    pre_images: &pre,
                    work: &work,
                    patch: &patch_file,
                    strip: mapping.git_strip,
                    fuzz,
                    max_context: input.diff.max_context(),
                    hunk_header: &lookup,
                    target: &target,
                    patch_name: &input.name,
                },
                &log,
            )?;
            let changes = collect_changes(&input, &mapping, &pre, &applied.dir)?;
            Ok::<_, Failure>((applied, changes))
        })
        .await
        .map_err(|e| internal(format!("the patch task failed: {e}")))??;
        Ok((applied.fuzz_used, changes, applied.dir))
    }

    /// Stale compiled caches of changed modules, to be overwritten with empty files.
    async fn stale_caches(
        &self,
        target: &str,
        changes: &[Change],
    ) -> Result<Vec<(String, (u64, u64))>, Failure> {
        let mut blank_caches: Vec<(String, (u64, u64))> = Vec::new();
        for change in changes {
            if let Change::Write {
                rel, existed: true, ..
            } = change
                && let Some((cache, prefix)) = pycache_of(rel)
            {
                for (name, owner) in
                    list_dir(self.docker, self.helper, &join(target, &cache)).await?
                {
                    if name.starts_with(&prefix) && name.ends_with(".pyc") {
                        blank_caches.push((format!("{cache}/{name}"), owner));
                    }
                }
            }
        }
        Ok(blank_caches)
    }
}

/// `127.0.0.1:5000/team/vllm:tag` → `isobench-patched/team/vllm:<12 hex of the key>`.
pub fn derived_tag(reference: &str, key_hex: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let mut parts: Vec<&str> = without_digest.split('/').collect();
    // A registry host (has a dot or port, or is localhost) is not part of the name.
    if parts.len() > 1 && {
        let first = parts[0];
        first.contains('.') || first.contains(':') || first == "localhost"
    } {
        parts.remove(0);
    }
    let mut name = parts.join("/");
    // The tag goes: it is the last `:` after the last `/`.
    if let Some(colon) = name.rfind(':')
        && !name[colon..].contains('/')
    {
        name.truncate(colon);
    }
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c: char| "._-/".contains(c));
    let name = if name.is_empty() { "image" } else { name };
    let hex = key_hex.trim_start_matches("b3:");
    format!("{REPOSITORY_PREFIX}/{name}:{}", &hex[..12])
}

/// The derived image of an earlier build with the same key.
async fn find_built(
    docker: &Docker,
    tag: &str,
    key: &str,
    log: &PatchLog,
) -> Result<Option<PatchOutcome>, Failure> {
    let image = match docker.inspect_image(tag).await {
        Ok(image) => image,
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(err) => return Err(internal(format!("inspecting {tag}: {err}"))),
    };
    let image_labels = image.config.and_then(|c| c.labels).unwrap_or_default();
    if image_labels.get(labels::KEY).map(String::as_str) != Some(key) {
        log.line(&format!(
            "{tag} exists but was built from other inputs (key {:?}); building again",
            image_labels.get(labels::KEY)
        ));
        return Ok(None);
    }
    let Some(record) = image_labels
        .get(labels::RECORD)
        .and_then(|r| serde_json::from_str::<BuildRecord>(r).ok())
    else {
        log.line(&format!(
            "{tag} has no readable build record; building again"
        ));
        return Ok(None);
    };
    let id = image.id.unwrap_or_default();
    log.line(&format!("cache hit: {tag} ({id})"));
    Ok(Some(PatchOutcome {
        source: PatchedSource::Image {
            reference: tag.to_string(),
            id,
        },
        reused: true,
        fuzz_used: record.fuzz_used,
        files: record.files,
        skipped: record.skipped,
        target: record.target,
    }))
}

// ------------------------------------------------------------------------------ containers

async fn create_helper(docker: &Docker, image: &str, key: &str) -> Result<String, Failure> {
    let name = helper_name("files", key);
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        // Never started; an entrypoint only because the engine wants a command to create.
        entrypoint: Some(vec!["/isobench-patch-helper".to_string()]),
        cmd: Some(Vec::new()),
        labels: Some(helper_labels()),
        network_disabled: Some(true),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .map(|r| r.id)
        .map_err(|err| internal(format!("creating a helper container from {image}: {err}")))
}

fn helper_name(what: &str, key: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "isobench-patch-{what}-{}-{}-{n}",
        &key.trim_start_matches("b3:")[..12],
        std::process::id()
    )
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let _ = docker.remove_container(id, Some(options)).await;
}

fn short(id: &str) -> &str {
    crate::util::prefix_chars(id, 12)
}

// ------------------------------------------------------------------------------ target

async fn find_target(
    docker: &Docker,
    helper: &str,
    key: &str,
    base: &ImageInfo,
    reference: &str,
    spec: &PatchSpec,
    log: &PatchLog,
) -> Result<String, Failure> {
    if let Some(explicit) = &spec.target {
        let path = if explicit.starts_with('/') {
            explicit.trim_end_matches('/').to_string()
        } else {
            format!("/{}", explicit.trim_end_matches('/'))
        };
        return match head_kind(docker, helper, &path).await? {
            Some(b'5') => {
                log.line(&format!("target from patch_target: {path}"));
                Ok(path)
            }
            Some(_) => Err(target_failure(format!(
                "patch_target {path} in image {reference} is not a directory"
            ))),
            None => Err(target_failure(format!(
                "patch_target {path} does not exist in image {reference}"
            ))),
        };
    }
    if let Some(found) = probe_python(docker, &base.id, key, log).await? {
        return Ok(found);
    }
    log.line("scanning the image's filesystem for */site-packages/vllm/__init__.py");
    let mut found = scan_export(docker, helper).await?;
    found.sort();
    found.dedup();
    match found.len() {
        1 => {
            let target = found.remove(0);
            log.line(&format!("target found in the filesystem: {target}"));
            Ok(target)
        }
        0 => Err(target_failure(format!(
            "cannot find the vllm package in image {reference}: its Python (python3, python) does not know it and no */site-packages/vllm/__init__.py or */dist-packages/vllm/__init__.py exists; set `patch_target` to the directory the patch applies to"
        ))),
        _ => Err(target_failure(format!(
            "image {reference} holds the vllm package more than once ({}); set `patch_target` to the one the server uses",
            found.join(", ")
        ))),
    }
}

/// Asks the image's own Python where `vllm` is (finds editable installs too). `None` when the
/// image has no `python3`/`python` or it does not know `vllm`.
async fn probe_python(
    docker: &Docker,
    image: &str,
    key: &str,
    log: &PatchLog,
) -> Result<Option<String>, Failure> {
    for python in ["python3", "python"] {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec![
                python.to_string(),
                "-c".to_string(),
                PYTHON_PROBE.to_string(),
            ]),
            cmd: Some(Vec::new()),
            labels: Some(helper_labels()),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(helper_name("probe", key)),
            ..Default::default()
        };
        let id = match docker.create_container(Some(options), body).await {
            Ok(r) => r.id,
            Err(err) => return Err(internal(format!("creating a probe container: {err}"))),
        };
        let answer = async {
            if let Err(err) = docker
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                log.line(&format!(
                    "no {python} in the image ({})",
                    first_line(&err.to_string())
                ));
                return None;
            }
            let wait = async {
                let mut stream = docker.wait_container(&id, None::<WaitContainerOptions>);
                while stream.next().await.is_some() {}
            };
            if tokio::time::timeout(PROBE_TIMEOUT, wait).await.is_err() {
                log.line(&format!("{python} did not answer within {PROBE_TIMEOUT:?}"));
                return None;
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
            let found = parse_probe_output(&output);
            log.line(&format!(
                "asked the image's {python} where vllm is: {}",
                found.as_deref().unwrap_or("it does not know")
            ));
            if found.is_none() {
                log.block(&output);
            }
            Some(found)
        }
        .await;
        remove_container(docker, &id).await;
        match answer {
            Some(found) => return Ok(found),
            None => continue,
        }
    }
    Ok(None)
}

/// Scans the helper's filesystem export (tar headers only are looked at) for installed `vllm`
/// packages; returns the directories holding them.
async fn scan_export(docker: &Docker, helper: &str) -> Result<Vec<String>, Failure> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let scanner = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx: &mut rx,
            current: bytes::Bytes::new(),
        };
        let mut archive = tar::Archive::new(reader);
        let mut found = Vec::new();
        for entry in archive.entries()? {
            let entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let path = path.trim_start_matches("./").trim_start_matches('/');
            if let Some(holder) = path.strip_suffix(&format!("/{PACKAGE}/__init__.py"))
                && (holder.ends_with("/site-packages") || holder.ends_with("/dist-packages"))
            {
                found.push(format!("/{holder}"));
            }
        }
        Ok::<_, std::io::Error>(found)
    });
    let mut stream = docker.export_container(helper);
    while let Some(chunk) = stream.next().await {
        let item = chunk.map_err(std::io::Error::other);
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    scanner
        .await
        .map_err(|e| internal(format!("the scan task failed: {e}")))?
        .map_err(|e| internal(format!("reading the image's filesystem export: {e}")))
}

/// A blocking reader over chunks sent from async code.
struct ChannelReader<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

// ------------------------------------------------------------------------------ archive API

/// The type flag of the path's tar header (`b'5'` directory, `b'0'` file, `b'2'` symlink),
/// `None` if it does not exist. Reads only the first header, then drops the stream.
async fn head_kind(docker: &Docker, container: &str, path: &str) -> Result<Option<u8>, Failure> {
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(container, Some(options));
    let mut head: Vec<u8> = Vec::new();
    while head.len() < 512 {
        match stream.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            })) => return Ok(None),
            Some(Err(err)) => {
                return Err(internal(format!("reading {path} from the image: {err}")));
            }
            None => break,
        }
    }
    Ok(head.get(156).copied().or(Some(0)))
}

async fn exists(docker: &Docker, container: &str, path: &str) -> Result<bool, Failure> {
    Ok(head_kind(docker, container, path).await?.is_some())
}

/// The whole archive of `path` (404 → `None`), at most [`FETCH_LIMIT`] bytes.
async fn download(
    docker: &Docker,
    container: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(container, Some(options));
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > FETCH_LIMIT {
                    return Err(internal(format!(
                        "{path} in the image is larger than {} MiB",
                        FETCH_LIMIT >> 20
                    )));
                }
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(err) => return Err(internal(format!("reading {path} from the image: {err}"))),
        }
    }
    Ok(Some(bytes))
}

/// A regular file read from the image.
struct FileEntry {
    bytes: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
}

async fn fetch_file(
    docker: &Docker,
    container: &str,
    path: &str,
) -> Result<Option<FileEntry>, Failure> {
    let Some(archive) = download(docker, container, path).await? else {
        return Ok(None);
    };
    let bad = |e: std::io::Error| internal(format!("reading the archive of {path}: {e}"));
    let mut archive = tar::Archive::new(archive.as_slice());
    let mut entries = archive.entries().map_err(bad)?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.map_err(bad)?;
    let header = entry.header();
    if header.entry_type() != tar::EntryType::Regular {
        return Err(Failure::new(
            FailureClass::PatchFailed,
            format!(
                "{path} in the image is a {:?}, not a regular file; only regular files can be patched",
                header.entry_type()
            ),
        ));
    }
    let mode = header.mode().map_err(bad)? & 0o7777;
    let uid = header.uid().map_err(bad)?;
    let gid = header.gid().map_err(bad)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(bad)?;
    Ok(Some(FileEntry {
        bytes,
        mode,
        uid,
        gid,
    }))
}

/// Names (and owners) of the files directly in directory `path`; empty if it does not exist.
async fn list_dir(
    docker: &Docker,
    container: &str,
    path: &str,
) -> Result<Vec<(String, (u64, u64))>, Failure> {
    let Some(archive) = download(docker, container, path).await? else {
        return Ok(Vec::new());
    };
    files_in_archive(&archive).map_err(|e| internal(format!("reading the archive of {path}: {e}")))
}

/// The regular files directly in the directory an archive from the engine holds. Their names
/// become paths on this host (in the build context), so only plain single names count: an
/// entry named with `..`, `/`, `\` or a control character, and links, are left out.
fn files_in_archive(archive: &[u8]) -> std::io::Result<Vec<(String, (u64, u64))>> {
    let mut archive = tar::Archive::new(archive);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // Entries are `<dir name>/<file>`; only direct children that are files count.
        let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
        if parts.len() == 2
            && entry.header().entry_type() == tar::EntryType::Regular
            && super::diff::check_path(parts[1]).is_ok()
        {
            let owner = (entry.header().uid()?, entry.header().gid()?);
            names.push((parts[1].to_string(), owner));
        }
    }
    Ok(names)
}

// ------------------------------------------------------------------------------ build

/// A generated build context.
struct Context {
    dockerfile: String,
    tar: bytes::Bytes,
}

/// Writes the build context to `dir` (kept for inspection) and returns it as a tar.
#[allow(clippy::too_many_arguments)]
fn write_context(
    dir: &Path,
    base_id: &str,
    target: &str,
    changes: &[Change],
    applied_dir: &Path,
    owners: &HashMap<String, (u64, u64)>,
    blank_caches: &[(String, (u64, u64))],
    rebuild: Option<&str>,
) -> Result<Context, Failure> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io_failure("clearing", dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io_failure("creating", dir, e))?;
    // One folder per owner, so each COPY can give its files their owner back.
    let folder = |owner: (u64, u64)| format!("files-{}-{}", owner.0, owner.1);
    let mut folders: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut deletions: Vec<String> = Vec::new();
    let put =
        |rel: &str, bytes: Option<&Path>, mode: u32, owner: (u64, u64)| -> Result<(), Failure> {
            let dest = dir.join(folder(owner)).join(rel);
            let parent = dest.parent().expect("below the folder");
            std::fs::create_dir_all(parent).map_err(|e| io_failure("creating", parent, e))?;
            match bytes {
                Some(from) => {
                    std::fs::copy(from, &dest).map_err(|e| io_failure("copying", &dest, e))?;
                }
                None => std::fs::write(&dest, b"").map_err(|e| io_failure("writing", &dest, e))?,
            }
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_failure("setting the mode of", &dest, e))
        };
    for change in changes {
        match change {
            Change::Write { rel, mode, .. } => {
                let owner = owners.get(rel).copied().unwrap_or((0, 0));
                put(rel, Some(&applied_dir.join(rel)), *mode, owner)?;
                folders.insert(owner, folder(owner));
            }
            Change::Delete { rel } => deletions.push(join(target, rel)),
        }
    }
    for (rel, owner) in blank_caches {
        put(rel, None, 0o644, *owner)?;
        folders.insert(*owner, folder(*owner));
    }
    let json = |items: &[String]| serde_json::to_string(items).expect("strings");
    let mut dockerfile = format!("FROM {base_id}\n");
    for (owner, name) in &folders {
        let chown = if *owner == (0, 0) {
            String::new()
        } else {
            format!("--chown={}:{} ", owner.0, owner.1)
        };
        dockerfile.push_str(&format!(
            "COPY {chown}{}\n",
            json(&[format!("{name}/"), format!("{target}/")])
        ));
    }
    if !deletions.is_empty() {
        let mut argv = vec!["rm".to_string(), "-f".to_string(), "--".to_string()];
        argv.extend(deletions);
        dockerfile.push_str(&format!("RUN {}\n", json(&argv)));
    }
    if let Some(command) = rebuild {
        let script = format!("cd {} && {command}", shell_quote(target));
        dockerfile.push_str(&format!(
            "RUN {}\n",
            json(&["/bin/sh".to_string(), "-c".to_string(), script])
        ));
    }
    std::fs::write(dir.join("Dockerfile"), &dockerfile)
        .map_err(|e| io_failure("writing", &dir.join("Dockerfile"), e))?;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .map_err(|e| io_failure("packing", dir, e))?;
    let tar = builder
        .into_inner()
        .map_err(|e| io_failure("packing", dir, e))?;
    Ok(Context {
        dockerfile,
        tar: bytes::Bytes::from(tar),
    })
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Builds the context with the classic builder; the build output goes to the log. A failing
/// `rebuild` step is the patch's failure, anything else the engine's.
async fn build_image(
    docker: &Docker,
    tag: &str,
    image_labels: HashMap<String, String>,
    context: Context,
    log: &PatchLog,
) -> Result<String, Failure> {
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_string()),
        labels: Some(image_labels),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    log.line(&format!("building {tag}"));
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.tar)));
    let mut step = String::new();
    while let Some(event) = stream.next().await {
        let info = event.map_err(|err| build_failure(&step, &err.to_string()))?;
        if let Some(text) = &info.stream {
            for line in text.lines() {
                if line.starts_with("Step ") {
                    step = line.to_string();
                }
            }
            log.block(text);
        }
        if let Some(error) = info.error {
            log.block(&error);
            return Err(build_failure(&step, &error));
        }
    }
    match docker.inspect_image(tag).await {
        Ok(image) => Ok(image.id.unwrap_or_default()),
        Err(err) => Err(internal(format!(
            "the build of {tag} finished, but the image cannot be inspected: {err}"
        ))),
    }
}

fn build_failure(step: &str, error: &str) -> Failure {
    let error = first_line(error);
    if step.contains("/bin/sh") {
        let mut failure = Failure::new(
            FailureClass::PatchFailed,
            format!("the rebuild command failed in the build container: {error}"),
        );
        failure.sample_log_line = Some(error.to_string());
        failure
    } else if step.contains("[\"rm\"") {
        internal(format!(
            "the patch deletes files, which needs `rm` in the base image: {error}"
        ))
    } else {
        internal(format!(
            "building the derived image failed ({step}): {error}"
        ))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// `/a/b` + `c/d` → `/a/b/c/d`.
fn join(dir: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_tags_drop_registry_and_tag() {
        let key = "b3:0123456789abcdef0123456789abcdef";
        assert_eq!(
            derived_tag("127.0.0.1:5000/isobench-test/sim:fast", key),
            "isobench-patched/isobench-test/sim:0123456789ab"
        );
        assert_eq!(
            derived_tag("vllm/vllm-openai:v0.9.1", key),
            "isobench-patched/vllm/vllm-openai:0123456789ab"
        );
        assert_eq!(
            derived_tag("ghcr.io/Org/Img@sha256:abcd", key),
            "isobench-patched/org/img:0123456789ab"
        );
        assert_eq!(
            derived_tag("localhost/x", key),
            "isobench-patched/x:0123456789ab"
        );
    }

    #[test]
    fn context_copies_per_owner_deletes_and_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let applied = dir.path().join("applied");
        std::fs::create_dir_all(applied.join("vllm")).unwrap();
        std::fs::write(applied.join("vllm/a.py"), "A").unwrap();
        std::fs::write(applied.join("vllm/b.py"), "B").unwrap();
        let changes = vec![
            Change::Write {
                rel: "vllm/a.py".into(),
                mode: 0o644,
                existed: true,
            },
            Change::Write {
                rel: "vllm/b.py".into(),
                mode: 0o755,
                existed: false,
            },
            Change::Delete {
                rel: "vllm/gone.py".into(),
            },
        ];
        let owners = HashMap::from([("vllm/a.py".to_string(), (1000, 1000))]);
        let blanks = vec![(
            "vllm/__pycache__/a.cpython-311.pyc".to_string(),
            (1000, 1000),
        )];
        let ctx_dir = dir.path().join("ctx");
        let context = write_context(
            &ctx_dir,
            "sha256:abc",
            "/opt/site-packages",
            &changes,
            &applied,
            &owners,
            &blanks,
            Some("make it"),
        )
        .unwrap();
        assert_eq!(
            context.dockerfile,
            "FROM sha256:abc\n\
             COPY [\"files-0-0/\",\"/opt/site-packages/\"]\n\
             COPY --chown=1000:1000 [\"files-1000-1000/\",\"/opt/site-packages/\"]\n\
             RUN [\"rm\",\"-f\",\"--\",\"/opt/site-packages/vllm/gone.py\"]\n\
             RUN [\"/bin/sh\",\"-c\",\"cd '/opt/site-packages' && make it\"]\n"
        );
        let mode = |p: &str| {
            std::fs::metadata(ctx_dir.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("files-0-0/vllm/b.py"), 0o755);
        assert_eq!(
            std::fs::read(ctx_dir.join("files-1000-1000/vllm/a.py")).unwrap(),
            b"A"
        );
        assert_eq!(
            std::fs::read(ctx_dir.join("files-1000-1000/vllm/__pycache__/a.cpython-311.pyc"))
                .unwrap(),
            b""
        );
        let mut names: Vec<String> = tar::Archive::new(context.tar.as_ref())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .filter(|n| n.ends_with(".py") || n.ends_with("Dockerfile"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "Dockerfile",
                "files-0-0/vllm/b.py",
                "files-1000-1000/vllm/a.py"
            ]
        );
    }

    #[test]
    fn archive_listings_keep_only_plain_regular_files() {
        // What a hostile image's engine answer could hold: names that climb out, absolute
        // names, a link, a nested file; only the plain regular file comes back.
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &[u8], kind: tar::EntryType, link: Option<&str>| {
            let mut header = tar::Header::new_old();
            // Raw bytes, so names the tar crate would refuse to write get into the archive.
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_entry_type(kind);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_uid(7);
            header.set_gid(8);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
        };
        add(b"__pycache__/", tar::EntryType::Directory, None);
        add(
            b"__pycache__/engine.cpython-311.pyc",
            tar::EntryType::Regular,
            None,
        );
        add(b"__pycache__/..", tar::EntryType::Regular, None);
        add(b"__pycache__/../../evil.pyc", tar::EntryType::Regular, None);
        add(b"/etc/engine.x.pyc", tar::EntryType::Regular, None);
        add(
            b"__pycache__/engine.link.pyc",
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
        );
        add(b"__pycache__/a\\..\\b.pyc", tar::EntryType::Regular, None);
        add(
            b"__pycache__/sub/engine.x.pyc",
            tar::EntryType::Regular,
            None,
        );
        let archive = builder.into_inner().unwrap();
        assert_eq!(
            files_in_archive(&archive).unwrap(),
            vec![("engine.cpython-311.pyc".to_string(), (7, 8))]
        );
    }

    #[test]
    fn rebuild_step_failures_are_patch_failures() {
        let f = build_failure(
            "Step 4/4 : RUN [\"/bin/sh\",\"-c\",\"cd '/x' && make\"]",
            "The command '/bin/sh -c cd /x && make' returned a non-zero code: 2",
        );
        assert_eq!(f.class, FailureClass::PatchFailed);
        let f = build_failure("Step 3/4 : RUN [\"rm\",\"-f\"]", "exec: \"rm\": not found");
        assert_eq!(f.class, FailureClass::Internal);
        assert!(f.message.contains("needs `rm`"));
    }
}
