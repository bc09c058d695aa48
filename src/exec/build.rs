//! `build[image=..]` and `push[image=..]` nodes: an arm's image made from its commit with the
//! campaign's recipe (`[images.build]`, docs/images.md), instead of pulled.
//!
//! What "missing" means: an image under the reference that this recipe built (its
//! `isobench.build-key` label is the node's key) or that someone else built (no such label) is
//! used as it is; one that an earlier version of the recipe built (another key) is stale and
//! rebuilt. A missing image is pulled first when possible (a colleague may have pushed it),
//! and built only when that fails. `always` builds unless this recipe's own build is there.

use super::context::Ctx;
use super::live::human_duration;
use crate::failure::{Failure, FailureClass};
use crate::manifest::model::{BuildSpec, DockerfileSource};
use crate::manifest::types::BuildPolicy;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::docker_build::{BuildRequest, LocalImage};
use crate::runtime::{ImageInfo, Runtime};
use petgraph::graph::NodeIndex;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Instant;

/// Label holding the key of the recipe an image was built with.
pub const BUILD_KEY_LABEL: &str = "isobench.build-key";
/// Where a Dockerfile kept next to the manifest goes in the build context.
const CONTEXT_DOCKERFILE: &str = ".isobench.Dockerfile";

/// How the image came to be there, as journaled in the build node's `info.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Present locally, built by this recipe or prebuilt.
    Present,
    /// Pulled from its registry (policy `missing`).
    Pulled,
    Built,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Present => "present",
            Outcome::Pulled => "pulled",
            Outcome::Built => "built",
        }
    }
}

/// Makes the built image `image` available: used, pulled or built per the recipe's policy,
/// then pushed when the recipe says so. Journals the build node when it runs.
pub(super) async fn acquire(
    ctx: &Ctx,
    image: usize,
    spec: &BuildSpec,
) -> Result<ImageInfo, Failure> {
    let Some(Runtime::Docker(docker)) = &ctx.docker else {
        return Err(Failure::new(
            FailureClass::Internal,
            format!("no Docker runtime to build {}", spec.reference),
        ));
    };
    let node = ctx.dag.pulls[image];
    let key = ctx.dag.graph[node].key.hex();
    let local = docker.local_image(&spec.reference).await?;
    // Cached in the plan and still there: nothing to do (a deleted image is made again).
    if !ctx.plan.action(node).executes()
        && let Some(found) = &local
    {
        let info = image_info(found);
        push_if_pending(ctx, docker, image, spec).await;
        return Ok(info);
    }
    ctx.started(node)?;
    let started = Instant::now();
    let activity = ctx.begin(&format!("build {}", spec.reference), "checking");
    let result = tokio::select! {
        r = obtain(ctx, docker, node, spec, &key, local, &activity) => r,
        _ = ctx.cancelled_wait() => Err(Failure::new(FailureClass::Interrupted, "interrupted")),
    };
    match result {
        Ok((outcome, info)) => {
            let facts = serde_json::json!({
                "outcome": outcome.as_str(),
                "id": info.id,
                "size": info.size,
                "commit": spec.commit,
                "seconds": started.elapsed().as_secs_f64(),
            });
            let outputs: Vec<std::path::PathBuf> = Vec::new();
            ctx.done(node, &outputs, Some(facts))?;
            activity.end(&format!(
                "{} in {}",
                outcome.as_str(),
                human_duration(started.elapsed())
            ));
            push_if_pending(ctx, docker, image, spec).await;
            Ok(info)
        }
        Err(f) => {
            if f.class == FailureClass::Interrupted {
                activity.end("interrupted");
            } else {
                ctx.failed(node, f.clone())?;
                activity.end(&format!(
                    "failed: {}",
                    f.message.lines().next().unwrap_or("")
                ));
            }
            Err(f)
        }
    }
}

/// Uses, pulls or builds the image per the policy.
async fn obtain(
    ctx: &Ctx,
    docker: &DockerRuntime,
    node: NodeIndex,
    spec: &BuildSpec,
    key: &str,
    local: Option<LocalImage>,
    activity: &super::events::Activity<'_>,
) -> Result<(Outcome, ImageInfo), Failure> {
    if let Some(found) = &local
        && usable(found, key, spec.policy)
    {
        return Ok((Outcome::Present, image_info(found)));
    }
    if local.is_none() && spec.policy == BuildPolicy::Missing {
        activity.set("trying a pull".into());
        let pulled = Runtime::Docker(docker.clone())
            .ensure_image(&spec.reference, |_| {})
            .await;
        if pulled.is_ok()
            && let Some(found) = docker.local_image(&spec.reference).await?
            && usable(&found, key, spec.policy)
        {
            return Ok((Outcome::Pulled, image_info(&found)));
        }
    }
    build(ctx, docker, node, spec, key, activity).await?;
    match docker.local_image(&spec.reference).await? {
        Some(found) => Ok((Outcome::Built, image_info(&found))),
        None => Err(Failure::new(
            FailureClass::BuildFailed,
            format!("the build of {} ended without the image", spec.reference),
        )),
    }
}

/// Whether a local image may be used under the policy (see the module's comment).
fn usable(image: &LocalImage, key: &str, policy: BuildPolicy) -> bool {
    match image.labels.get(BUILD_KEY_LABEL) {
        Some(built_with) => built_with == key,
        None => policy != BuildPolicy::Always,
    }
}

fn image_info(image: &LocalImage) -> ImageInfo {
    ImageInfo {
        id: image.id.clone(),
        repo_digest: None,
        size: image.size,
        pulled: false,
    }
}

/// Exports the source tree, builds, and streams the output to `build.log` in the attempt
/// directory and to the live view.
async fn build(
    ctx: &Ctx,
    docker: &DockerRuntime,
    node: NodeIndex,
    spec: &BuildSpec,
    key: &str,
    activity: &super::events::Activity<'_>,
) -> Result<(), Failure> {
    let dir = ctx
        .attempt_dir(node)
        .map_err(|e| Failure::new(FailureClass::Internal, format!("attempt directory: {e}")))?;
    let log_path = dir.join("build.log");
    let mut log = std::fs::File::create(&log_path).map_err(|e| {
        Failure::new(
            FailureClass::Internal,
            format!("{}: {e}", log_path.display()),
        )
    })?;
    activity.set(format!(
        "exporting {} at {}",
        spec.repo.display(),
        &spec.commit[..12]
    ));
    let spec2 = spec.clone();
    let (context, dockerfile) = tokio::task::spawn_blocking(move || build_context(&spec2))
        .await
        .map_err(|e| Failure::new(FailureClass::Internal, format!("source export task: {e}")))??;
    let _ = writeln!(
        log,
        "# isobench: building {} from {} at {} ({} bytes of context)",
        spec.reference,
        spec.repo.display(),
        spec.commit,
        context.len()
    );
    let labels = BTreeMap::from([
        (BUILD_KEY_LABEL.to_string(), key.to_string()),
        ("isobench.source-commit".to_string(), spec.commit.clone()),
    ]);
    let request = BuildRequest {
        reference: spec.reference.clone(),
        context: context.into(),
        dockerfile,
        args: spec.args.clone(),
        target: spec.target.clone(),
        labels,
    };
    let result = docker
        .build(request, |line| {
            // The log is the record; a full disk shows up as a short log, not a failed build.
            let _ = writeln!(log, "{line}");
            let line = line.trim();
            if !line.is_empty() {
                activity.set(line.chars().take(100).collect());
            }
        })
        .await;
    result.map_err(|mut f| {
        f.log_path = Some(log_path.display().to_string());
        f
    })
}

/// The build context: the source tree at the commit (`git archive`, so the clone's working
/// tree and index are never touched), plus the Dockerfile when it lives next to the manifest.
/// Returns the context and the Dockerfile's path in it.
fn build_context(spec: &BuildSpec) -> Result<(Vec<u8>, String), Failure> {
    let failed = |what: String| Failure::new(FailureClass::BuildFailed, what);
    let archive = crate::util::git::read(&spec.repo, &["archive", "--format=tar", &spec.commit])
        .map_err(|e| {
            failed(format!(
                "exporting {} from {}: {e}",
                spec.commit,
                spec.repo.display()
            ))
        })?;
    match &spec.dockerfile {
        DockerfileSource::Source(path) => Ok((archive, path.clone())),
        DockerfileSource::Manifest(path) => {
            let dockerfile = std::fs::read(path)
                .map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
            let context = with_file(&archive, CONTEXT_DOCKERFILE, &dockerfile)
                .map_err(|e| failed(format!("assembling the build context: {e}")))?;
            Ok((context, CONTEXT_DOCKERFILE.to_string()))
        }
    }
}

/// A copy of the tar `archive` with one more regular file.
fn with_file(archive: &[u8], name: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::with_capacity(archive.len() + bytes.len() + 2048));
    let mut input = tar::Archive::new(archive);
    for entry in input.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue; // git's comment header; long names come back through `path()`
        }
        let path = entry.path()?.into_owned();
        let mut header = entry.header().clone();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name()?.unwrap_or_default().into_owned();
            out.append_link(&mut header, &path, &target)?;
        } else {
            out.append_data(&mut header, &path, &mut entry)?;
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    out.append_data(&mut header, name, bytes)?;
    out.into_inner()
}

/// Pushes the image when its push node is pending; a failed push is journaled and shown, and
/// the image is measured all the same.
async fn push_if_pending(ctx: &Ctx, docker: &DockerRuntime, image: usize, spec: &BuildSpec) {
    let Some(&node) = ctx.dag.pushes.get(&image) else {
        return;
    };
    if !ctx.plan.action(node).executes() && !ctx.plan.action(ctx.dag.pulls[image]).executes() {
        return;
    }
    if let Err(e) = ctx.started(node) {
        ctx.note(&format!("push {}: {e}", spec.reference));
        return;
    }
    let activity = ctx.begin(&format!("push {}", spec.reference), "pushing");
    let result = tokio::select! {
        r = docker.push(&spec.reference, |status| activity.set(status.chars().take(100).collect())) => r,
        _ = ctx.cancelled_wait() => Err(Failure::new(FailureClass::Interrupted, "interrupted")),
    };
    let recorded = match result {
        Ok(digest) => {
            activity.end("pushed");
            ctx.done(
                node,
                &[],
                Some(serde_json::json!({ "repo_digest": digest })),
            )
        }
        Err(f) if f.class == FailureClass::Interrupted => {
            activity.end("interrupted");
            Ok(())
        }
        Err(f) => {
            activity.end(&format!("failed: {f}"));
            ctx.failed(node, f)
        }
    };
    if let Err(e) = recorded {
        ctx.note(&format!("push {}: {e}", spec.reference));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_builds_are_used_only_with_the_same_key_and_prebuilt_images_only_when_missing() {
        let image = |label: Option<&str>| LocalImage {
            id: "sha256:x".into(),
            labels: label
                .map(|k| [(BUILD_KEY_LABEL.to_string(), k.to_string())].into())
                .unwrap_or_default(),
            size: None,
        };
        assert!(usable(&image(Some("k1")), "k1", BuildPolicy::Missing));
        assert!(!usable(&image(Some("k0")), "k1", BuildPolicy::Missing));
        assert!(usable(&image(None), "k1", BuildPolicy::Missing));
        assert!(usable(&image(Some("k1")), "k1", BuildPolicy::Always));
        assert!(!usable(&image(None), "k1", BuildPolicy::Always));
    }

    #[test]
    fn the_dockerfile_is_added_to_the_exported_tree() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!("{}/file.py", "d".repeat(120));
        for (name, body) in [("setup.py", "x"), (long.as_str(), "y")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        let archive = builder.into_inner().unwrap();
        let out = with_file(&archive, CONTEXT_DOCKERFILE, b"FROM scratch\n").unwrap();
        let mut names: Vec<String> = tar::Archive::new(out.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![CONTEXT_DOCKERFILE.to_string(), long, "setup.py".into()]
        );
    }
}
