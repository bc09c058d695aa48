//! The one way a patch is applied, whatever holds its target: a directory tree on this host
//! ([`super::tree`]) or a base image read through a helper container ([`super::docker`]). Only
//! two things differ, and they stay with the builders: how the target's files are seen (the
//! [`TargetFs`] they implement) and what is made of the result (a patched copy, a derived
//! image). Every check that keeps an untrusted patch inside its target is here, once.
//!
//! 1. [`map_onto_target`]: find the target, map the patch's files onto it, refuse a patch made
//!    at the wrong root, decide whether a rebuild is needed (and possible there), and refuse
//!    every path that goes through a link in the target — before a single file is read.
//! 2. [`apply_in_scratch`]: fetch real copies of the touched files into a scratch directory of
//!    the build's own, `git apply` there strictly (then with the tolerance `patch_fuzz`
//!    allows), and read the changes back. The builder then materialises [`Applied`]; the
//!    scratch directory goes when it is dropped.
//!
//! A builder's cache lookup sits between or before the two: a tree's key depends on the target
//! found, an image's is known before any helper container exists.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::apply::{ApplyJob, apply_with_tolerance, check_git, io_failure};
use super::{
    Change, Mapping, PACKAGE, PatchInput, PatchLog, TargetFacts, collect_changes, internal,
    link_failure, parent_dirs,
};
use crate::failure::Failure;
use crate::manifest::model::PatchSpec;

/// What is at a path of the target, a final link not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    Link,
    /// A regular file or anything else that is neither a directory nor a link.
    Other,
}

/// The owner (uid, gid) of a fetched file.
pub(crate) type FileOwner = (u64, u64);

/// How one builder sees the files of the base it patches. Paths are absolute and `/`-separated,
/// as [`TargetFs::find_target`] returns them joined with checked, target-relative paths.
pub(crate) trait TargetFs {
    /// The target as named in a link failure (`the target /x`, `image R (below /x)`).
    fn place(&self, target: &str) -> String;

    /// `patch_target`, else the directory holding the `vllm` package (asked of the base's own
    /// Python, else searched for). Fails as `patch_failed` when there is none or more than one.
    async fn find_target(&self, spec: &PatchSpec, log: &PatchLog) -> Result<String, Failure>;

    /// What is at `path`; `None` when nothing is.
    async fn kind(&self, path: &str) -> Result<Option<EntryKind>, Failure>;

    /// Whether a file is at `path` (decides the layout, finds patches made at the wrong root).
    async fn has_file(&self, path: &str) -> Result<bool, Failure>;

    /// Writes a real copy of the file at `path` to `dest` (mode kept) and returns its owner;
    /// `None` when the base does not have it (the patch may add it).
    async fn fetch(&self, path: &str, dest: &Path) -> Result<Option<FileOwner>, Failure>;
}

/// A patch mapped onto the target it applies to.
#[derive(Debug, Clone)]
pub(crate) struct Mapped {
    /// The target directory, absolute.
    pub target: String,
    pub mapping: Mapping,
    /// The spec's `rebuild` command must run over the result.
    pub rebuild: bool,
}

/// Finds the target and maps the patch's files onto it. Fails when files the patch names at the
/// wrong root exist there, when a needed rebuild is impossible, or when a path of the patch
/// goes through (or is) a link in the target.
pub(crate) async fn map_onto_target<F: TargetFs>(
    fs: &F,
    input: &PatchInput,
    spec: &PatchSpec,
    log: &PatchLog,
) -> Result<Mapped, Failure> {
    let target = fs.find_target(spec, log).await?;
    let facts = TargetFacts {
        holds_package: fs
            .has_file(&join(&target, &format!("{PACKAGE}/__init__.py")))
            .await?,
        has_build_script: fs.has_file(&join(&target, "setup.py")).await?
            || fs.has_file(&join(&target, "pyproject.toml")).await?,
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
        if fs.has_file(&join(&target, &real)).await? {
            misrooted.push((named, real));
        }
    }
    if !misrooted.is_empty() {
        return Err(Mapping::misrooted_failure(input, &misrooted));
    }
    let rebuild = mapping.check_rebuildable(input, spec, &target)?;
    refuse_links(fs, input, &target, &mapping).await?;
    Ok(Mapped {
        target,
        mapping,
        rebuild,
    })
}

/// Before anything is read: no path of the patch may go through a link in the target, or be
/// one (the paths themselves were checked when the patch was parsed: relative, no `..`). A
/// write through a link would change files outside the target: the tree's copy keeps the
/// install's links, and a COPY into an image follows the image's.
async fn refuse_links<F: TargetFs>(
    fs: &F,
    input: &PatchInput,
    target: &str,
    mapping: &Mapping,
) -> Result<(), Failure> {
    // Each directory is asked about once (for an image, every question is an engine call).
    let mut kinds: HashMap<String, Option<EntryKind>> = HashMap::new();
    for rel in mapping.pre_image_paths(input) {
        let mut steps = parent_dirs(&rel);
        steps.push(&rel);
        for step in steps {
            let path = join(target, step);
            let kind = match kinds.get(&path) {
                Some(kind) => *kind,
                None => {
                    let kind = fs.kind(&path).await?;
                    kinds.insert(path, kind);
                    kind
                }
            };
            match kind {
                Some(EntryKind::Link) => {
                    return Err(link_failure(&input.name, &rel, step, &fs.place(target)));
                }
                Some(EntryKind::Dir) => {}
                // Missing, or a file: nothing further can be reached through a link.
                _ => break,
            }
        }
    }
    Ok(())
}

/// The patch applied in a scratch directory: what the builder materialises.
#[derive(Debug)]
pub(crate) struct Applied {
    /// `None`: applied strictly; `Some(k)`: it took fuzz `k`.
    pub fuzz_used: Option<u32>,
    pub changes: Vec<Change>,
    /// The directory holding the patched files at their target-relative paths.
    pub dir: PathBuf,
    /// Owners of the files fetched from the base, by target-relative path.
    pub owners: HashMap<String, FileOwner>,
    /// Removes the scratch directory (and so `dir`) when the result is dropped.
    _scratch: Scratch,
}

/// Fetches the touched files into `work/pre` (`work` is the build's own scratch directory,
/// removed when the result is dropped or this fails), applies the target's part of the patch
/// there, and reads the changes back.
pub(crate) async fn apply_in_scratch<F: TargetFs>(
    fs: &F,
    mapped: &Mapped,
    input: &PatchInput,
    spec: &PatchSpec,
    work: PathBuf,
    log: &PatchLog,
) -> Result<Applied, Failure> {
    let scratch = Scratch::create(work)?;
    let pre = scratch.0.join("pre");
    std::fs::create_dir_all(&pre).map_err(|e| io_failure("creating", &pre, e))?;
    let paths = mapped.mapping.pre_image_paths(input);
    let mut owners = HashMap::new();
    for rel in &paths {
        if let Some(owner) = fs.fetch(&join(&mapped.target, rel), &pre.join(rel)).await? {
            owners.insert(rel.clone(), owner);
        }
    }
    log.line(&format!(
        "extracted {} of {} touched path(s) from the base ({} are new)",
        owners.len(),
        paths.len(),
        paths.len() - owners.len()
    ));
    if mapped.mapping.applied.is_empty() {
        log.line("nothing of the patch applies to this target: the result is the base unchanged");
        return Ok(Applied {
            fuzz_used: None,
            changes: Vec::new(),
            dir: pre,
            owners,
            _scratch: scratch,
        });
    }
    let work = scratch.0.clone();
    let patch_file = work.join("patch.diff");
    std::fs::write(&patch_file, mapped.mapping.filtered_patch(input))
        .map_err(|e| io_failure("writing", &patch_file, e))?;
    let (input, mapping, log) = (input.clone(), mapped.mapping.clone(), log.clone());
    let (fuzz, target) = (spec.fuzz, mapped.target.clone());
    // `git apply` blocks: off the async threads.
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
    Ok(Applied {
        fuzz_used: applied.fuzz_used,
        changes,
        dir: applied.dir,
        owners,
        _scratch: scratch,
    })
}

/// A build's scratch directory, made empty when created and removed when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn create(dir: PathBuf) -> Result<Scratch, Failure> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_failure("clearing", &dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_failure("creating", &dir, e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/a/b` + `c/d` → `/a/b/c/d`.
pub(crate) fn join(dir: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}
