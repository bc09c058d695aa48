//! Docker: the patched files layered over the base image as a derived image.
//!
//! A helper container ([`crate::runtime::docker_helper`]) is *created* (never started) from the
//! base image; the engine's archive API reads single files and directories out of it, so only
//! the files the patch touches are extracted ([`ImageFs`], the image's side of the routine
//! shared with the tree builder, [`super::routine`]). The target directory is `patch_target`, else asked of the image's own Python (a
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
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt;

use super::apply::io_failure;
use super::routine::{
    Applied, EntryKind, FileOwner, Mapped, TargetFs, apply_in_scratch, join, map_onto_target,
};
use super::{
    BuildRecord, Change, PACKAGE, PYTHON_PROBE, PatchInput, PatchLog, PatchOutcome, PatchedSource,
    build_key, internal, parse_probe_output, pycache_of, scratch_dir, short_hex, target_failure,
};
use crate::failure::{Failure, FailureClass};
use crate::manifest::model::PatchSpec;
use crate::runtime::ImageInfo;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::docker_helper::{self, Helper, RunOnce};

/// Label keys of derived images (those of helper containers: [`docker_helper::labels`]).
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
}

fn helper_labels() -> HashMap<String, String> {
    docker_helper::helper_labels(&crate::state::lock::hostname())
}

/// Removes helper and probe containers that an isobench process on this host left behind when
/// it was killed mid-build (its pid is gone). Those of live processes are kept: another apply
/// may be building right now. Returns the names removed.
pub async fn cleanup_helpers(runtime: &DockerRuntime) -> Result<Vec<String>, Failure> {
    docker_helper::cleanup_helpers(runtime.client(), &crate::state::lock::hostname()).await
}

/// Registry-free repository for derived images.
pub const REPOSITORY_PREFIX: &str = "isobench-patched";
/// How long the base's Python may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Finds an earlier build of the same key, else creates a helper container from the base,
/// applies the patch over it with the shared routine, and builds the derived image. The helper
/// and the scratch directory are removed whatever happens.
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
    let name = helper_name("files", &key.hex());
    let helper = Helper::create(docker, &base.id, name, helper_labels()).await?;
    log.line(&format!(
        "helper container {} created from {} (not started)",
        short(helper.id()),
        base.id
    ));
    let fs = ImageFs {
        docker,
        helper: &helper,
        key: key.hex(),
        base,
        reference,
    };
    let result = async {
        let mapped = map_onto_target(&fs, input, spec, log).await?;
        let work = scratch_dir(cache_dir, &key);
        let applied = apply_in_scratch(&fs, &mapped, input, spec, work, log).await?;
        let derived = Derived {
            fs: &fs,
            input,
            spec,
            tag: &tag,
            context_dir: cache_dir.join("contexts").join(short_hex(&key, 24)),
            log,
        };
        derived.build(&mapped, &applied).await
    }
    .await;
    helper.remove().await;
    result
}

/// A base image as the shared routine sees it: read through a helper container created from
/// it (never started; the engine's archive API reads single files out of it).
struct ImageFs<'a> {
    docker: &'a Docker,
    helper: &'a Helper<'a>,
    /// The build's key, for the names of probe containers.
    key: String,
    base: &'a ImageInfo,
    reference: &'a str,
}

impl TargetFs for ImageFs<'_> {
    fn place(&self, target: &str) -> String {
        format!("image {} (below {target})", self.reference)
    }

    async fn find_target(&self, spec: &PatchSpec, log: &PatchLog) -> Result<String, Failure> {
        find_target(self, spec, log).await
    }

    /// The engine resolves links inside the container, so this is about the image, not the
    /// host.
    async fn kind(&self, path: &str) -> Result<Option<EntryKind>, Failure> {
        Ok(self.helper.head_kind(path).await?.map(|flag| match flag {
            b'2' => EntryKind::Link,
            b'5' => EntryKind::Dir,
            _ => EntryKind::Other,
        }))
    }

    async fn has_file(&self, path: &str) -> Result<bool, Failure> {
        Ok(self.helper.head_kind(path).await?.is_some())
    }

    async fn fetch(&self, path: &str, dest: &Path) -> Result<Option<FileOwner>, Failure> {
        let Some(entry) = self.helper.fetch_file(path).await? else {
            return Ok(None);
        };
        if entry.kind != tar::EntryType::Regular {
            return Err(Failure::new(
                FailureClass::PatchFailed,
                format!(
                    "{path} in the image is a {:?}, not a regular file; only regular files can be patched",
                    entry.kind
                ),
            ));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_failure("creating", parent, e))?;
        }
        std::fs::write(dest, &entry.bytes).map_err(|e| io_failure("writing", dest, e))?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(entry.mode))
            .map_err(|e| io_failure("setting the mode of", dest, e))?;
        Ok(Some((entry.uid, entry.gid)))
    }
}

/// The materialise step of an image: a build context over the base, built as the derived
/// image.
struct Derived<'a> {
    fs: &'a ImageFs<'a>,
    input: &'a PatchInput,
    spec: &'a PatchSpec,
    tag: &'a str,
    /// Where the context is written (kept for inspection).
    context_dir: std::path::PathBuf,
    log: &'a PatchLog,
}

impl Derived<'_> {
    /// Writes the build context and builds the derived image, labelled with its inputs and
    /// build record.
    async fn build(&self, mapped: &Mapped, applied: &Applied) -> Result<PatchOutcome, Failure> {
        let (input, log, base) = (self.input, self.log, self.fs.base);
        let target = mapped.target.as_str();
        let blank_caches = self.stale_caches(target, &applied.changes).await?;
        let record = BuildRecord {
            key: self.fs.key.clone(),
            files: mapped.mapping.applied_paths(input),
            skipped: mapped.mapping.skipped.clone(),
            fuzz_used: applied.fuzz_used,
            target: target.to_string(),
        };
        let context = write_context(
            &self.context_dir,
            &base.id,
            target,
            &applied.changes,
            &applied.dir,
            &applied.owners,
            &blank_caches,
            self.spec.rebuild.as_deref().filter(|_| mapped.rebuild),
        )?;
        log.line(&format!(
            "build context {} ({} file(s) changed, {} stale cache(s) blanked)",
            self.context_dir.display(),
            applied.changes.len(),
            blank_caches.len()
        ));
        log.block(&context.dockerfile);
        let image_labels = HashMap::from([
            (labels::PATCHED.to_string(), "true".to_string()),
            (labels::KEY.to_string(), self.fs.key.clone()),
            (labels::BASE_ID.to_string(), base.id.clone()),
            (labels::BASE_DIGEST.to_string(), base.digest().to_string()),
            (labels::PATCH_HASH.to_string(), input.hash.hex()),
            (
                labels::RECORD.to_string(),
                serde_json::to_string(&record).expect("plain data"),
            ),
        ]);
        let id = build_image(self.fs.docker, self.tag, image_labels, context, log).await?;
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

    /// Stale compiled caches of changed modules, to be overwritten with empty files (Python
    /// rejects those, bad magic, and recompiles from the patched source).
    async fn stale_caches(
        &self,
        target: &str,
        changes: &[Change],
    ) -> Result<Vec<(String, FileOwner)>, Failure> {
        let mut blank_caches: Vec<(String, FileOwner)> = Vec::new();
        for change in changes {
            if let Change::Write {
                rel, existed: true, ..
            } = change
                && let Some((cache, prefix)) = pycache_of(rel)
            {
                let listed = self
                    .fs
                    .helper
                    .list_files(&join(target, &cache), plain_name)
                    .await?;
                for (name, owner) in listed {
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

/// Whether a file name listed in the image may become a path of the build context on this
/// host: not `..`, no `/`, `\` or control characters (what [`super::diff::check_path`] refuses).
fn plain_name(name: &str) -> bool {
    super::diff::check_path(name).is_ok()
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

fn short(id: &str) -> &str {
    crate::util::prefix_chars(id, 12)
}

// ------------------------------------------------------------------------------ target

async fn find_target(
    fs: &ImageFs<'_>,
    spec: &PatchSpec,
    log: &PatchLog,
) -> Result<String, Failure> {
    let reference = fs.reference;
    if let Some(explicit) = &spec.target {
        let path = if explicit.starts_with('/') {
            explicit.trim_end_matches('/').to_string()
        } else {
            format!("/{}", explicit.trim_end_matches('/'))
        };
        return match fs.kind(&path).await? {
            Some(EntryKind::Dir) => {
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
    if let Some(found) = probe_python(fs, log).await? {
        return Ok(found);
    }
    log.line("scanning the image's filesystem for */site-packages/vllm/__init__.py");
    let mut found = fs.helper.scan_export(installed_package).await?;
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

/// A path of the image's filesystem export (`/`-relative) that is an installed package's
/// `vllm/__init__.py` → the directory holding the package.
fn installed_package(path: &str) -> Option<String> {
    let holder = path.strip_suffix(&format!("/{PACKAGE}/__init__.py"))?;
    (holder.ends_with("/site-packages") || holder.ends_with("/dist-packages"))
        .then(|| format!("/{holder}"))
}

/// Asks the image's own Python where `vllm` is (finds editable installs too). `None` when the
/// image has no `python3`/`python` or it does not know `vllm`.
async fn probe_python(fs: &ImageFs<'_>, log: &PatchLog) -> Result<Option<String>, Failure> {
    for python in ["python3", "python"] {
        let argv = vec![
            python.to_string(),
            "-c".to_string(),
            PYTHON_PROBE.to_string(),
        ];
        let name = helper_name("probe", &fs.key);
        let ran = docker_helper::run_once(
            fs.docker,
            &fs.base.id,
            argv,
            name,
            helper_labels(),
            PROBE_TIMEOUT,
        )
        .await?;
        let output = match ran {
            RunOnce::NotStarted(err) => {
                log.line(&format!("no {python} in the image ({})", first_line(&err)));
                continue;
            }
            RunOnce::TimedOut => {
                log.line(&format!("{python} did not answer within {PROBE_TIMEOUT:?}"));
                continue;
            }
            RunOnce::Finished(output) => output,
        };
        let found = parse_probe_output(&output);
        log.line(&format!(
            "asked the image's {python} where vllm is: {}",
            found.as_deref().unwrap_or("it does not know")
        ));
        if found.is_none() {
            log.block(&output);
        }
        return Ok(found);
    }
    Ok(None)
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
            docker_helper::files_in_archive(&archive, plain_name).unwrap(),
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
