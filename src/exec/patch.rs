//! `image.patch`: an agent arm's server is its base arm's server plus a patch. For Docker the
//! result is a derived image (`FROM <base id>` + the patched files), for the process runtime a
//! private, patched copy of the target tree. Either is built once per (base identity, patch
//! content, options) and found again by every later trial and apply.
//!
//! Steps (see `docs/patches.md` for the rules and their reasons):
//! 1. read and parse the patch ([`diff`]); a patch touching compiled sources without a
//!    `rebuild` command fails at once as `needs_rebuild`;
//! 2. a cache hit (same key) returns the earlier result with `reused: true`;
//! 3. find the target: `patch_target`, else the directory holding the `vllm` package (asked of
//!    the base's own Python, else searched for on its filesystem);
//! 4. map patch paths onto the target (an installed package takes only `vllm/...` files) and
//!    refuse paths through links in it;
//! 5. fetch real copies of the touched files and apply the patch on the host, strictly unless
//!    `patch_fuzz` allows tolerance ([`apply`]);
//! 6. layer the result over the base ([`docker`]: build context + classic builder;
//!    [`tree`]: hard-linked copy with the patched files as real copies).
//!
//! Steps 3–5 are one routine for both builders ([`routine`], over the [`routine::TargetFs`]
//! each implements); steps 2 and 6 are theirs.
//!
//! Everything done is written to the step's log in plain words, `git apply` output included.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::failure::{Failure, FailureClass};
use crate::manifest::model::PatchSpec;
use crate::runtime::{ImageInfo, Runtime, ServerSource};
use crate::util::hash::{Hash, Hasher};

mod apply;
mod diff;
mod docker;
mod routine;
mod tree;

pub use diff::{ChangeKind, Diff, FilePatch, parse as parse_diff};

/// Bumped when the way a patched source is built changes, so old cache entries are not reused.
const BUILD_FORMAT: &str = "isobench-patch/1";

/// Where a patched server comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchedSource {
    /// Docker: a derived image, tagged and labelled with base digest + patch hash.
    Image { reference: String, id: String },
    /// Process runtime: a private, patched copy of the target tree. `root` is the copy of the
    /// target directory (the server's working directory); `pythonpath` is the directory that
    /// holds the copied `vllm` package, to be put first on `PYTHONPATH` so `import vllm`
    /// finds the copy. The two differ only when `patch_target` names the package itself.
    Tree { root: PathBuf, pythonpath: PathBuf },
}

/// What [`build_patched`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOutcome {
    pub source: PatchedSource,
    /// Cache hit: the same base identity + patch + options were built before.
    pub reused: bool,
    /// `None`: applied strictly. `Some(k)`: needed tolerance (hunks at an offset, and up to `k`
    /// context lines ignored); recorded in results.
    pub fuzz_used: Option<u32>,
    /// Files the patch changed, as the patch names them (e.g. `vllm/engine.py`).
    pub files: Vec<String>,
    /// Files of the patch that are not part of the target and were left out (tests, docs,
    /// benchmarks of a repo-wide diff applied to an installed package).
    pub skipped: Vec<String>,
    /// The directory the patch was applied to (inside the image, or on this host).
    pub target: String,
}

/// Builds (or finds) the patched server source of an agent arm.
///
/// Failures: `patch_failed` (a hunk or file does not apply, or the target cannot be found; the
/// message lists each rejected file and hunk, the log has the `git apply` output),
/// `needs_rebuild` (compiled sources touched and no `rebuild` command, or nothing to rebuild
/// them in), `internal` otherwise.
pub async fn build_patched(
    runtime: &Runtime,
    spec: &PatchSpec,
    base: &ImageInfo,
    base_source: &ServerSource,
    cache_dir: &Path,
    log: &Path,
) -> Result<PatchOutcome, Failure> {
    let log = PatchLog::create(log)?;
    log.line(&format!(
        "isobench image.patch at {}: {} over {} ({})",
        crate::util::now_rfc3339(),
        spec.patch_path.display(),
        describe_source(base_source),
        base.digest()
    ));
    // git runs in scratch directories: every path it is given must be absolute.
    let cache_dir = std::path::absolute(cache_dir).unwrap_or_else(|_| cache_dir.to_path_buf());
    let result = build(runtime, spec, base, base_source, &cache_dir, &log).await;
    match result {
        Ok(outcome) => {
            log.line(&format!(
                "{}: {}",
                if outcome.reused { "reused" } else { "built" },
                match &outcome.source {
                    PatchedSource::Image { reference, id } => format!("image {reference} ({id})"),
                    PatchedSource::Tree { root, pythonpath } => format!(
                        "tree {} (PYTHONPATH={})",
                        root.display(),
                        pythonpath.display()
                    ),
                }
            ));
            Ok(outcome)
        }
        Err(mut failure) => {
            log.line(&format!("FAILED: {failure}"));
            failure.log_path = Some(log.path().display().to_string());
            Err(failure)
        }
    }
}

async fn build(
    runtime: &Runtime,
    spec: &PatchSpec,
    base: &ImageInfo,
    base_source: &ServerSource,
    cache_dir: &Path,
    log: &PatchLog,
) -> Result<PatchOutcome, Failure> {
    let input = PatchInput::read(spec, log)?;
    match (runtime, base_source) {
        (Runtime::Docker(d), ServerSource::Image { reference }) => {
            docker::build(d, &input, spec, base, reference, cache_dir, log).await
        }
        (Runtime::Process(_), ServerSource::Path { root }) => {
            let (input, spec) = (input.clone(), spec.clone());
            let (root, cache_dir, log) = (root.clone(), cache_dir.to_path_buf(), log.clone());
            tokio::task::spawn_blocking(move || tree::build(&input, &spec, &root, &cache_dir, &log))
                .await
                .map_err(|err| internal(format!("the patch task failed: {err}")))?
        }
        (runtime, source) => Err(internal(format!(
            "the {} runtime cannot patch {}",
            runtime.kind(),
            describe_source(source)
        ))),
    }
}

fn describe_source(source: &ServerSource) -> String {
    match source {
        ServerSource::Image { reference } => format!("image {reference}"),
        ServerSource::Path { root } => format!("tree {}", root.display()),
    }
}

// ------------------------------------------------------------------------------ the patch

/// The patch file, read once, hashed and parsed.
#[derive(Debug, Clone)]
pub(crate) struct PatchInput {
    pub name: String,
    pub diff: Diff,
    pub hash: Hash,
    /// Leading components `git apply` strips (`a/`, `b/`).
    pub strip: usize,
}

impl PatchInput {
    fn read(spec: &PatchSpec, log: &PatchLog) -> Result<PatchInput, Failure> {
        let name = spec.patch_path.display().to_string();
        let bytes = std::fs::read(&spec.patch_path).map_err(|err| {
            Failure::new(
                FailureClass::PatchFailed,
                format!("cannot read patch file {name}: {err}"),
            )
        })?;
        let hash = Hash::of(&bytes);
        if hash != spec.patch_hash {
            // The key the plan computed would not describe what gets built.
            return Err(internal(format!(
                "patch file {name} changed since the manifest was loaded ({} now, {} then); run again",
                hash, spec.patch_hash
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            Failure::new(
                FailureClass::PatchFailed,
                format!("patch file {name} is not UTF-8 text"),
            )
        })?;
        let diff = diff::parse(&text).map_err(|err| {
            Failure::new(
                FailureClass::PatchFailed,
                // Also the message for unsafe paths and symlink modes, which `parse` refuses
                // so that nothing downstream ever sees them.
                format!("patch file {name} is not a usable unified diff: {err}"),
            )
        })?;
        if diff.files.is_empty() && !text.trim().is_empty() {
            return Err(Failure::new(
                FailureClass::PatchFailed,
                format!(
                    "patch file {name} holds no file changes (expected `git diff` output: `diff --git`, `---`/`+++` and `@@` lines)"
                ),
            ));
        }
        let strip = diff.strip_level();
        log.line(&format!(
            "patch {name} ({hash}): {} file section(s), paths stripped by {strip} component(s)",
            diff.files.len()
        ));
        for file in &diff.files {
            log.line(&format!(
                "  {:?} {}{}{}",
                file.kind,
                file.display_path(strip),
                if file.hunks.is_empty() {
                    String::new()
                } else {
                    format!(" ({} hunk(s))", file.hunks.len())
                },
                if file.binary { " [binary]" } else { "" }
            ));
        }
        let input = PatchInput {
            name,
            diff,
            hash,
            strip,
        };
        let compiled = input.compiled_sources();
        if !compiled.is_empty() && spec.rebuild.is_none() {
            return Err(Failure::new(
                FailureClass::NeedsRebuild,
                format!(
                    "patch {} changes compiled sources ({}), which the base's binaries were built from; set `rebuild` on the arm to a command that rebuilds them in a build container, or leave these files out of the patch",
                    input.name,
                    compiled.join(", ")
                ),
            ));
        }
        Ok(input)
    }

    /// Paths (as the patch names them) that need a rebuild to take effect.
    pub fn compiled_sources(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .diff
            .files
            .iter()
            .flat_map(|f| f.paths(self.strip))
            .filter(|p| needs_rebuild(p))
            .collect();
        out.dedup();
        out
    }
}

/// Source kinds that are compiled into the base's binaries (vLLM's `_C` extensions): changing
/// them without a rebuild would measure stale binaries.
const COMPILED_EXTENSIONS: &[&str] = &[
    "c", "cc", "cpp", "cxx", "h", "hh", "hpp", "cu", "cuh", "hip", "pyx", "pxd", "cmake",
];
/// Build files: changing them changes what gets compiled.
const BUILD_FILES: &[&str] = &["CMakeLists.txt", "setup.py", "setup.cfg"];
/// Directories whose contents feed the build (`csrc/` kernels, `cmake/` helpers).
const BUILD_DIRS: &[&str] = &["csrc", "cmake"];

/// Whether a change to `path` (relative to the repository root) needs a rebuild.
pub fn needs_rebuild(path: &str) -> bool {
    let components: Vec<&str> = path.split('/').collect();
    let file = components.last().copied().unwrap_or("");
    let in_build_dir = components[..components.len().saturating_sub(1)]
        .iter()
        .any(|c| BUILD_DIRS.contains(c));
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    in_build_dir || BUILD_FILES.contains(&file) || COMPILED_EXTENSIONS.contains(&ext)
}

// ------------------------------------------------------------------------------ targets

/// The package whose directory is the default target.
pub const PACKAGE: &str = "vllm";

/// Prints the directories of the `vllm` package without importing it (find_spec runs no
/// package code), so the probe is fast and works without a GPU.
pub(crate) const PYTHON_PROBE: &str = "import importlib.util, json\n\
s = importlib.util.find_spec('vllm')\n\
print('ISOBENCH-VLLM ' + json.dumps(list(s.submodule_search_locations or []) if s else []))\n";

/// Reads the probe's answer: the directory holding the package (the parent of its first
/// location).
pub(crate) fn parse_probe_output(output: &str) -> Option<String> {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("ISOBENCH-VLLM "))?;
    let locations: Vec<String> = serde_json::from_str(line).ok()?;
    let package = locations.first()?;
    let parent = Path::new(package).parent()?;
    Some(parent.display().to_string())
}

/// What the target directory is, which decides how the patch's paths map onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Holds an installed `vllm/` package (site-packages): only files under `vllm/` apply; the
    /// rest of a repository-wide diff (tests, docs, benchmarks) is not part of the install.
    Install,
    /// Holds `vllm/` next to a build script (a source checkout, an editable install): every
    /// file applies.
    SourceTree,
    /// The target is itself the directory `name` and the patch's paths start with `name/`:
    /// that component is dropped; files outside it are skipped.
    Package { name: String },
    /// Anything else (e.g. an explicit directory of config files): paths apply as they are.
    Plain,
}

/// What was found out about the target directory.
#[derive(Debug, Clone)]
pub(crate) struct TargetFacts {
    /// `vllm/__init__.py` exists in it.
    pub holds_package: bool,
    /// `setup.py` or `pyproject.toml` exists in it.
    pub has_build_script: bool,
    /// Its last path component.
    pub name: String,
}

/// How the patch maps onto one target.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub layout: Layout,
    /// Indices of the file sections that apply.
    pub applied: Vec<usize>,
    /// Paths (as the patch names them) of sections left out.
    pub skipped: Vec<String>,
    /// `-p` for `git apply`: the patch's own prefix plus the package component, if dropped.
    pub git_strip: usize,
}

impl Mapping {
    pub fn new(input: &PatchInput, facts: &TargetFacts) -> Mapping {
        let strip = input.strip;
        let under = |f: &FilePatch, dir: &str| {
            let prefix = format!("{dir}/");
            f.paths(strip).iter().any(|p| p.starts_with(&prefix))
        };
        let layout = if facts.holds_package {
            if facts.has_build_script {
                Layout::SourceTree
            } else {
                Layout::Install
            }
        } else if !facts.name.is_empty() && input.diff.files.iter().any(|f| under(f, &facts.name)) {
            Layout::Package {
                name: facts.name.clone(),
            }
        } else {
            Layout::Plain
        };
        let keep = |f: &FilePatch| match &layout {
            Layout::Install => under(f, PACKAGE),
            Layout::Package { name } => under(f, name),
            Layout::SourceTree | Layout::Plain => true,
        };
        let mut applied = Vec::new();
        let mut skipped = Vec::new();
        for (i, file) in input.diff.files.iter().enumerate() {
            if keep(file) {
                applied.push(i);
            } else {
                skipped.push(file.display_path(strip));
            }
        }
        let git_strip = strip + usize::from(matches!(layout, Layout::Package { .. }));
        Mapping {
            layout,
            applied,
            skipped,
            git_strip,
        }
    }

    /// A path as the patch names it → relative to the target.
    pub fn target_relative(&self, patch_path: &str) -> String {
        match &self.layout {
            Layout::Package { .. } => diff::strip_components(patch_path, 1),
            _ => patch_path.to_string(),
        }
    }

    /// Files applied, as the patch names them.
    pub fn applied_paths(&self, input: &PatchInput) -> Vec<String> {
        self.applied
            .iter()
            .map(|&i| input.diff.files[i].display_path(input.strip))
            .collect()
    }

    /// The patch cut down to the sections that apply.
    pub fn filtered_patch(&self, input: &PatchInput) -> String {
        self.applied
            .iter()
            .map(|&i| input.diff.files[i].text.as_str())
            .collect()
    }

    /// Target-relative paths whose current content the patch needs (or must not clash with).
    pub fn pre_image_paths(&self, input: &PatchInput) -> Vec<String> {
        let mut paths: Vec<String> = self
            .applied
            .iter()
            .flat_map(|&i| input.diff.files[i].paths(input.strip))
            .map(|p| self.target_relative(&p))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// `(path as git prints it, hunk number)` → the hunk's `@@` line.
    pub fn hunk_headers(
        &self,
        input: &PatchInput,
    ) -> std::collections::HashMap<(String, u32), String> {
        let mut map = std::collections::HashMap::new();
        for &i in &self.applied {
            let file = &input.diff.files[i];
            for path in file.paths(input.strip) {
                let rel = self.target_relative(&path);
                for (n, hunk) in file.hunks.iter().enumerate() {
                    map.insert((rel.clone(), n as u32 + 1), hunk.header.clone());
                }
            }
        }
        map
    }

    /// Skipped files that would exist if the patch were made from inside the package
    /// directory (`a/engine.py` for `vllm/engine.py`): `(as named, path in the target)`.
    pub fn misrooted_candidates(&self) -> Vec<(String, String)> {
        if self.layout != Layout::Install {
            return Vec::new();
        }
        self.skipped
            .iter()
            .map(|p| (p.clone(), format!("{PACKAGE}/{p}")))
            .collect()
    }

    /// The failure for a patch whose paths are relative to the package, not the repository.
    pub fn misrooted_failure(input: &PatchInput, found: &[(String, String)]) -> Failure {
        let (named, real) = &found[0];
        Failure::new(
            FailureClass::PatchFailed,
            format!(
                "patch {} names `{named}`, which is `{real}` in the installed package: its paths are relative to the package directory, but patches must be made from the repository root (`a/{real}`, as `git diff` there writes them)",
                input.name
            ),
        )
    }

    /// Fails when compiled sources must be rebuilt but the target cannot rebuild them.
    pub fn check_rebuildable(
        &self,
        input: &PatchInput,
        spec: &PatchSpec,
        target: &str,
    ) -> Result<bool, Failure> {
        let compiled = input.compiled_sources();
        if compiled.is_empty() {
            return Ok(false);
        }
        let skipped: Vec<&String> = compiled
            .iter()
            .filter(|p| self.skipped.contains(p))
            .collect();
        if self.layout == Layout::Install || !skipped.is_empty() {
            return Err(Failure::new(
                FailureClass::NeedsRebuild,
                format!(
                    "patch {} changes compiled sources ({}), but the target {target} is an installed package without them, so `rebuild` has nothing to rebuild; set `patch_target` to the source tree (an editable install) in the base",
                    input.name,
                    compiled.join(", ")
                ),
            ));
        }
        debug_assert!(spec.rebuild.is_some(), "checked when the patch was read");
        Ok(true)
    }
}

/// What one applied section did to the target, read back from the patched scratch copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Write this file (target-relative) with this mode; `existed`: it was there before.
    Write {
        rel: String,
        mode: u32,
        existed: bool,
    },
    Delete {
        rel: String,
    },
}

/// The changes of the applied sections, checked against the patched scratch copy.
pub(crate) fn collect_changes(
    input: &PatchInput,
    mapping: &Mapping,
    pre_images: &Path,
    patched: &Path,
) -> Result<Vec<Change>, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mut changes = Vec::new();
    for &i in &mapping.applied {
        let file = &input.diff.files[i];
        let old = file
            .old_path(input.strip)
            .map(|p| mapping.target_relative(&p));
        let new = file
            .new_path(input.strip)
            .map(|p| mapping.target_relative(&p));
        if let Some(rel) = &new {
            let meta = std::fs::symlink_metadata(patched.join(rel)).map_err(|err| {
                internal(format!(
                    "git apply succeeded, but {rel} is not in the result: {err}"
                ))
            })?;
            if !meta.is_file() {
                return Err(Failure::new(
                    FailureClass::PatchFailed,
                    format!(
                        "{rel}: only regular files can be patched (this one is a link or directory)"
                    ),
                ));
            }
            changes.push(Change::Write {
                rel: rel.clone(),
                mode: meta.permissions().mode() & 0o7777,
                existed: pre_images.join(rel).exists(),
            });
        }
        if let Some(rel) = old {
            let moved_away = matches!(file.kind, ChangeKind::Delete | ChangeKind::Rename)
                && new.as_ref() != Some(&rel);
            if moved_away {
                changes.push(Change::Delete { rel });
            }
        }
    }
    Ok(changes)
}

/// The directories `rel` (a checked, target-relative path) goes through below the target,
/// shortest first: `vllm/a/b.py` → `vllm`, `vllm/a`.
pub(crate) fn parent_dirs(rel: &str) -> Vec<&str> {
    rel.match_indices('/').map(|(i, _)| &rel[..i]).collect()
}

/// The failure for a patch path that goes through (or is) a symbolic link in the target. The
/// rule is strict (any link, not only links that leave the target): a link is followed by
/// whoever writes through it, and the process runtime's copy keeps the install's links, so a
/// write through one could change the original install or anything else on the host.
pub(crate) fn link_failure(patch_name: &str, rel: &str, link: &str, place: &str) -> Failure {
    let what = if link == rel {
        format!("`{rel}` is a symbolic link in {place}")
    } else {
        format!("`{rel}` goes through the symbolic link `{link}` in {place}")
    };
    Failure::new(
        FailureClass::PatchFailed,
        format!(
            "patch {patch_name} changes {what}; patches may only change regular files reached without links"
        ),
    )
}

/// `vllm/engine.py` → the prefix its compiled caches carry in `vllm/__pycache__/`
/// (`engine.`), for `.py` files only.
pub(crate) fn pycache_of(rel: &str) -> Option<(String, String)> {
    let (dir, file) = match rel.rsplit_once('/') {
        Some((dir, file)) => (format!("{dir}/__pycache__"), file),
        None => ("__pycache__".to_string(), rel),
    };
    let stem = file.strip_suffix(".py")?;
    Some((dir, format!("{stem}.")))
}

// ------------------------------------------------------------------------------ cache

/// What a finished build recorded, so a cache hit can report the same outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildRecord {
    pub key: String,
    pub files: Vec<String>,
    pub skipped: Vec<String>,
    pub fuzz_used: Option<u32>,
    pub target: String,
}

/// The cache key: everything that changes the built result. (The patch file's content is
/// checked against `spec.patch_hash` before anything is built.)
pub(crate) fn build_key(base_identity: &str, spec: &PatchSpec) -> Hash {
    Hasher::new()
        .field("format", BUILD_FORMAT)
        .field("base", base_identity)
        .hash("patch", &spec.patch_hash)
        .field("target", spec.target.as_deref().unwrap_or(""))
        .field("fuzz", &spec.fuzz.to_string())
        .field("rebuild", spec.rebuild.as_deref().unwrap_or(""))
        .finish()
}

/// A scratch directory of its own for one build: `<cache>/work/<key>-<n>-<pid>` (the pid last,
/// for [`cleanup_leftovers`]; `n` keeps two builds of one key in this process apart).
pub(crate) fn scratch_dir(cache_dir: &Path, key: &Hash) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    cache_dir
        .join("work")
        .join(format!("{}-{n}-{}", short_hex(key, 24), std::process::id()))
}

/// `b3:0123...` → the first `n` hex digits.
pub(crate) fn short_hex(hash: &Hash, n: usize) -> String {
    hash.hex().trim_start_matches("b3:")[..n].to_string()
}

/// Removes what an interrupted `image.patch` left behind: Docker helper containers of isobench
/// processes on this host that are gone, and scratch directories under `cache_dir/work` of such
/// processes. Call once per apply, before patches are built (next to
/// [`Runtime::cleanup_leftovers`]). Half-built process-runtime copies need nothing: a copy
/// without its record is rebuilt when next asked for. Returns what it removed.
pub async fn cleanup_leftovers(
    runtime: &Runtime,
    cache_dir: &Path,
) -> Result<Vec<String>, Failure> {
    let mut removed = match runtime {
        Runtime::Docker(d) => docker::cleanup_helpers(d).await?,
        Runtime::Process(_) => Vec::new(),
    };
    // Scratch directories are named `<key>-<n>-<pid>` (see `scratch_dir`).
    if let Ok(entries) = std::fs::read_dir(cache_dir.join("work")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit_once('-').map(|(_, pid)| pid).unwrap_or("");
            let alive = !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists();
            if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    Ok(removed)
}

/// The tag [`build_patched`] gives the derived image of `spec` over the base image
/// `reference` whose local id is `base_id` (`isobench-patched/<base name>:<12 hex of the key>`),
/// e.g. to look for it or to prune it.
pub fn derived_image_tag(reference: &str, base_id: &str, spec: &PatchSpec) -> String {
    docker::derived_tag(reference, &build_key(base_id, spec).hex())
}

// ------------------------------------------------------------------------------ log

/// The step's human-readable log. Cheap to clone; lines are written as they happen, so a log
/// of a killed run still shows how far it got.
#[derive(Debug, Clone)]
pub(crate) struct PatchLog {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl PatchLog {
    fn create(path: &Path) -> Result<PatchLog, Failure> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| internal(format!("opening the patch log {}: {e}", path.display())))?;
        Ok(PatchLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn line(&self, text: &str) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A log line that cannot be written must not fail the build it describes.
        let _ = writeln!(file, "{text}");
    }

    /// Tool output, indented under the line that ran it.
    pub fn block(&self, text: &str) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines() {
            let _ = writeln!(file, "    {line}");
        }
    }
}

pub(crate) fn internal(message: impl Into<String>) -> Failure {
    Failure::new(FailureClass::Internal, message)
}

/// A target that cannot be found or used: the patch cannot be applied.
pub(crate) fn target_failure(message: impl Into<String>) -> Failure {
    Failure::new(FailureClass::PatchFailed, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> PatchInput {
        let diff = diff::parse(text).unwrap();
        PatchInput {
            name: "p.diff".into(),
            strip: diff.strip_level(),
            diff,
            hash: Hash::of(text.as_bytes()),
        }
    }

    const REPO_DIFF: &str = "\
diff --git a/vllm/engine.py b/vllm/engine.py
--- a/vllm/engine.py
+++ b/vllm/engine.py
@@ -1 +1 @@
-a
+b
diff --git a/tests/test_engine.py b/tests/test_engine.py
--- a/tests/test_engine.py
+++ b/tests/test_engine.py
@@ -1 +1 @@
-a
+b
";

    fn facts(holds_package: bool, has_build_script: bool, name: &str) -> TargetFacts {
        TargetFacts {
            holds_package,
            has_build_script,
            name: name.into(),
        }
    }

    #[test]
    fn installed_package_takes_only_package_files() {
        let input = input(REPO_DIFF);
        let m = Mapping::new(&input, &facts(true, false, "site-packages"));
        assert_eq!(m.layout, Layout::Install);
        assert_eq!(m.applied_paths(&input), vec!["vllm/engine.py"]);
        assert_eq!(m.skipped, vec!["tests/test_engine.py"]);
        assert_eq!(m.git_strip, 1);
        assert_eq!(m.pre_image_paths(&input), vec!["vllm/engine.py"]);
        assert!(!m.filtered_patch(&input).contains("tests/"));
    }

    #[test]
    fn source_tree_takes_everything() {
        let input = input(REPO_DIFF);
        let m = Mapping::new(&input, &facts(true, true, "vllm"));
        assert_eq!(m.layout, Layout::SourceTree);
        assert_eq!(m.applied.len(), 2);
        assert!(m.skipped.is_empty());
        assert_eq!(m.filtered_patch(&input), REPO_DIFF);
    }

    #[test]
    fn package_directory_target_drops_the_package_component() {
        let input = input(REPO_DIFF);
        let m = Mapping::new(&input, &facts(false, false, "vllm"));
        assert_eq!(
            m.layout,
            Layout::Package {
                name: "vllm".into()
            }
        );
        assert_eq!(m.git_strip, 2);
        assert_eq!(m.pre_image_paths(&input), vec!["engine.py"]);
        assert_eq!(
            m.hunk_headers(&input).get(&("engine.py".to_string(), 1)),
            Some(&"@@ -1 +1 @@".to_string())
        );
    }

    #[test]
    fn plain_directory_applies_paths_as_they_are() {
        let input = input("--- a/sim.toml\n+++ b/sim.toml\n@@ -1 +1 @@\n-a\n+b\n");
        let m = Mapping::new(&input, &facts(false, false, "isobench"));
        assert_eq!(m.layout, Layout::Plain);
        assert_eq!(m.pre_image_paths(&input), vec!["sim.toml"]);
    }

    #[test]
    fn compiled_sources_are_recognised() {
        for path in [
            "csrc/attention/kernel.cu",
            "csrc/ops.h",
            "vllm/x/kernel.cuh",
            "CMakeLists.txt",
            "setup.py",
            "cmake/utils.cmake",
            "csrc/README",
        ] {
            assert!(needs_rebuild(path), "{path}");
        }
        for path in [
            "vllm/engine.py",
            "vllm/csrc_like.py",
            "docs/setup.md",
            "tests/test_setup.py",
        ] {
            assert!(!needs_rebuild(path), "{path}");
        }
    }

    #[test]
    fn installed_target_cannot_rebuild() {
        let text = format!(
            "{REPO_DIFF}diff --git a/csrc/k.cu b/csrc/k.cu\n--- a/csrc/k.cu\n+++ b/csrc/k.cu\n@@ -1 +1 @@\n-a\n+b\n"
        );
        let input = input(&text);
        let spec = PatchSpec {
            base_arm: "baseline".into(),
            base: crate::manifest::model::ArmSource::Image {
                reference: "x".into(),
            },
            patch_path: "p.diff".into(),
            patch_hash: input.hash,
            target: None,
            fuzz: 0,
            rebuild: Some("make".into()),
        };
        let install = Mapping::new(&input, &facts(true, false, "site-packages"));
        let err = install
            .check_rebuildable(&input, &spec, "/usr/lib/site-packages")
            .unwrap_err();
        assert_eq!(err.class, FailureClass::NeedsRebuild);
        assert!(err.message.contains("csrc/k.cu"), "{}", err.message);
        let source = Mapping::new(&input, &facts(true, true, "vllm"));
        assert!(
            source
                .check_rebuildable(&input, &spec, "/src/vllm")
                .unwrap()
        );
    }

    #[test]
    fn probe_output_names_the_directory_holding_the_package() {
        let out = "some warning\nISOBENCH-VLLM [\"/usr/lib/python3/dist-packages/vllm\"]\n";
        assert_eq!(
            parse_probe_output(out).as_deref(),
            Some("/usr/lib/python3/dist-packages")
        );
        assert_eq!(parse_probe_output("ISOBENCH-VLLM []\n"), None);
        assert_eq!(parse_probe_output("Traceback ...\n"), None);
    }

    #[test]
    fn pycache_prefix_of_python_files_only() {
        assert_eq!(
            pycache_of("vllm/engine.py"),
            Some(("vllm/__pycache__".into(), "engine.".into()))
        );
        assert_eq!(
            pycache_of("x.py"),
            Some(("__pycache__".into(), "x.".into()))
        );
        assert_eq!(pycache_of("vllm/sim.toml"), None);
    }
}
