//! The process runtime: a private, patched copy of the target tree under the cache directory.
//!
//! Only what is needed is copied: an installed package's `vllm/` (not all of site-packages), or
//! the whole target when it is a source tree or an explicit `patch_target` (`.git` left out).
//! Unchanged files are hard links where the filesystem allows (else copies); every file the
//! patch changes is written as a new file after its link is removed, so nothing is ever written
//! through a link into the original install. Stale compiled caches (`__pycache__/<name>.*.pyc`)
//! of changed modules are removed from the copy. With a rebuild, everything is a real copy,
//! because a build may rewrite any file in place.
//!
//! The copy is keyed by the target's path and a fingerprint of what was copied (path, size,
//! mtime, inode of every file), so a reinstalled package gets a fresh copy; it is complete
//! once `isobench-patch.json` is written, and a copy without it (an interrupted build) is
//! removed and built again.
//!
//! The patch itself is applied by the routine shared with Docker ([`super::routine`]), over
//! [`TreeFs`]; this file adds the cache, the copy and the rebuild.
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::apply::io_failure;
use super::routine::{Applied, EntryKind, FileOwner, TargetFs, apply_in_scratch, map_onto_target};
use super::{
    BuildRecord, Change, Layout, PACKAGE, PYTHON_PROBE, PatchInput, PatchLog, PatchOutcome,
    PatchedSource, build_key, internal, link_failure, parent_dirs, parse_probe_output, pycache_of,
    scratch_dir, short_hex, target_failure,
};
use crate::failure::{Failure, FailureClass};
use crate::manifest::model::PatchSpec;
use crate::util::hash::Hasher;

/// Marks a finished copy; holds its [`BuildRecord`].
const RECORD_FILE: &str = "isobench-patch.json";
/// How long the base's Python may take to say where `vllm` is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds (or finds) the patched copy of a base tree: maps the patch onto the target, then,
/// under the copy's lock, applies it in a scratch directory and makes the copy (hard links for
/// untouched files). A copy is marked finished by its record file; a half-made one is removed.
///
/// Runs on a blocking thread: the shared routine is async (an image is read through the
/// engine), but over a tree every step of it is a file operation on this thread.
pub(super) fn build(
    input: &PatchInput,
    spec: &PatchSpec,
    root: &Path,
    cache_dir: &Path,
    log: &PatchLog,
) -> Result<PatchOutcome, Failure> {
    let runtime = tokio::runtime::Handle::current();
    let fs = TreeFs::open(root)?;
    let mapped = runtime.block_on(map_onto_target(&fs, input, spec, log))?;
    let target = PathBuf::from(&mapped.target);
    // What gets copied: (source directory, its place in the copy).
    let (scope, prefix): (PathBuf, PathBuf) = match &mapped.mapping.layout {
        Layout::Install => (target.join(PACKAGE), PathBuf::from(PACKAGE)),
        Layout::Package { name } => (target.clone(), PathBuf::from(name)),
        Layout::SourceTree | Layout::Plain => (target.clone(), PathBuf::new()),
    };
    let fingerprint = fingerprint(&scope)?;
    let identity = format!("{}#{}", mapped.target, fingerprint);
    let key = build_key(&identity, spec);
    let dir = cache_dir.join("trees").join(short_hex(&key, 24));
    // The copy of the target, and the directory holding the copied `vllm` package.
    let (copy_root, pythonpath) = match &mapped.mapping.layout {
        Layout::Package { name } => (dir.join(name), dir.clone()),
        _ => (dir.clone(), dir.clone()),
    };
    let outcome = |record: BuildRecord, reused: bool| PatchOutcome {
        source: PatchedSource::Tree {
            root: copy_root.clone(),
            pythonpath: pythonpath.clone(),
        },
        reused,
        fuzz_used: record.fuzz_used,
        files: record.files,
        skipped: record.skipped,
        target: record.target,
    };

    // Two arms with the same base and patch build the same copy: one builds, the other then
    // finds it.
    let key_lock = lock_for(&dir);
    let _building = key_lock.lock().unwrap_or_else(|e| e.into_inner());
    let record_path = dir.join(RECORD_FILE);
    if let Some(record) = std::fs::read(&record_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<BuildRecord>(&bytes).ok())
        .filter(|r| r.key == key.hex())
    {
        log.line(&format!("cache hit: {} ({key})", dir.display()));
        return Ok(outcome(record, true));
    }
    if dir.exists() {
        log.line(&format!(
            "removing an unfinished copy at {} (an earlier build was interrupted)",
            dir.display()
        ));
        std::fs::remove_dir_all(&dir).map_err(|e| io_failure("removing", &dir, e))?;
    }

    let result = (|| {
        let work = scratch_dir(cache_dir, &key);
        let applied = runtime.block_on(apply_in_scratch(&fs, &mapped, input, spec, work, log))?;
        let copy = Copy {
            input,
            spec,
            log,
            rebuild: mapped.rebuild,
        };
        copy.make(&scope, &dir.join(&prefix), &copy_root, &applied)?;
        let record = BuildRecord {
            key: key.hex(),
            files: mapped.mapping.applied_paths(input),
            skipped: mapped.mapping.skipped.clone(),
            fuzz_used: applied.fuzz_used,
            target: mapped.target.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("plain data");
        crate::util::fsx::write_atomic(&record_path, &json)
            .map_err(|e| io_failure("writing", &record_path, e))?;
        Ok(record)
    })();
    match result {
        Ok(record) => Ok(outcome(record, false)),
        Err(failure) => {
            // Never leave a half-made copy that looks usable.
            let _ = std::fs::remove_dir_all(&dir);
            Err(failure)
        }
    }
}

/// A base tree on this host, as the shared routine sees it.
struct TreeFs {
    /// The base tree, canonical.
    root: PathBuf,
}

impl TreeFs {
    fn open(root: &Path) -> Result<TreeFs, Failure> {
        let expanded = crate::util::expand_tilde(&root.to_string_lossy());
        let root = std::fs::canonicalize(expanded).map_err(|err| {
            Failure::new(
                FailureClass::ImageMissing,
                format!("base tree {} is not there: {err}", root.display()),
            )
        })?;
        Ok(TreeFs { root })
    }
}

impl TargetFs for TreeFs {
    fn place(&self, target: &str) -> String {
        format!("the target {target}")
    }

    async fn find_target(&self, spec: &PatchSpec, log: &PatchLog) -> Result<String, Failure> {
        find_target(&self.root, spec, log).map(|p| p.display().to_string())
    }

    async fn kind(&self, path: &str) -> Result<Option<EntryKind>, Failure> {
        Ok(match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Some(EntryKind::Link),
            Ok(meta) if meta.is_dir() => Some(EntryKind::Dir),
            Ok(_) => Some(EntryKind::Other),
            Err(_) => None,
        })
    }

    async fn has_file(&self, path: &str) -> Result<bool, Failure> {
        Ok(Path::new(path).is_file())
    }

    async fn fetch(&self, path: &str, dest: &Path) -> Result<Option<FileOwner>, Failure> {
        use std::os::unix::fs::MetadataExt;
        let from = Path::new(path);
        let meta = match std::fs::symlink_metadata(from) {
            Ok(meta) if meta.is_file() => meta,
            _ => return Ok(None),
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_failure("creating", parent, e))?;
        }
        std::fs::copy(from, dest).map_err(|e| io_failure("copying", from, e))?;
        Ok(Some((u64::from(meta.uid()), u64::from(meta.gid()))))
    }
}

/// The materialise step of a tree: the patched copy.
struct Copy<'a> {
    input: &'a PatchInput,
    spec: &'a PatchSpec,
    log: &'a PatchLog,
    /// The spec's rebuild command must run in the copy.
    rebuild: bool,
}

impl Copy<'_> {
    /// Copies `scope` to `dest` (hard links unless a rebuild will write into the copy), writes
    /// the changes into it, then runs the rebuild if one is needed.
    fn make(
        &self,
        scope: &Path,
        dest: &Path,
        copy_root: &Path,
        applied: &Applied,
    ) -> Result<(), Failure> {
        let log = self.log;
        let (linked, copied) = copy_tree(scope, dest, !self.rebuild)?;
        log.line(&format!(
            "copied {} to {}: {linked} file(s) hard-linked, {copied} copied",
            scope.display(),
            dest.display()
        ));
        for change in &applied.changes {
            apply_change(change, &self.input.name, &applied.dir, copy_root, log)?;
        }
        if self.rebuild {
            run_rebuild(
                self.spec.rebuild.as_deref().expect("checked"),
                copy_root,
                log,
            )?;
        }
        Ok(())
    }
}

/// The in-process lock of one copy's directory.
fn lock_for(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// `patch_target` (relative to the tree, or absolute), else the directory holding `vllm`.
fn find_target(root: &Path, spec: &PatchSpec, log: &PatchLog) -> Result<PathBuf, Failure> {
    if let Some(explicit) = &spec.target {
        let path = root.join(explicit);
        return match std::fs::canonicalize(&path) {
            Ok(p) if p.is_dir() => {
                log.line(&format!("target from patch_target: {}", p.display()));
                Ok(p)
            }
            _ => Err(target_failure(format!(
                "patch_target {explicit} is not a directory in the base tree {} (looked at {})",
                root.display(),
                path.display()
            ))),
        };
    }
    if let Some(found) = probe_python(root, log) {
        return Ok(found);
    }
    let patterns = [
        "lib*/python3*/site-packages",
        "lib*/python3*/dist-packages",
        "local/lib*/python3*/site-packages",
        "local/lib*/python3*/dist-packages",
        "lib/python3/dist-packages",
        "",
    ];
    let mut found: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let full = root.join(pattern).join(PACKAGE).join("__init__.py");
        let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
            continue;
        };
        for path in paths.flatten() {
            let holder = path
                .parent()
                .and_then(Path::parent)
                .expect("…/vllm/__init__.py")
                .to_path_buf();
            let holder = std::fs::canonicalize(&holder).unwrap_or(holder);
            if !found.contains(&holder) {
                found.push(holder);
            }
        }
    }
    match found.len() {
        1 => {
            let target = found.remove(0);
            log.line(&format!(
                "target found on the filesystem: {}",
                target.display()
            ));
            Ok(target)
        }
        0 => Err(target_failure(format!(
            "cannot find the vllm package in the base tree {}: no Python there knows it and no lib*/python3*/site-packages/vllm/__init__.py (or vllm/__init__.py) exists; set `patch_target` to the directory the patch applies to",
            root.display()
        ))),
        _ => Err(target_failure(format!(
            "the base tree {} holds the vllm package more than once ({}); set `patch_target` to the one the server uses",
            root.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Asks the tree's own Python (`bin/python3`, `bin/python`) where `vllm` lives: this also
/// finds editable installs. `None` when there is no such Python or it does not know `vllm`.
fn probe_python(root: &Path, log: &PatchLog) -> Option<PathBuf> {
    let python = ["bin/python3", "bin/python"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())?;
    let mut child = Command::new(&python)
        .args(["-c", PYTHON_PROBE])
        .current_dir("/")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                log.line(&format!("{} did not answer in time", python.display()));
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let found = parse_probe_output(&stdout)
        .map(PathBuf::from)
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    log.line(&format!(
        "asked {} where vllm is: {}",
        python.display(),
        found
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "it does not know".into())
    ));
    found
}

/// A content identity of a directory without reading contents: every entry's path, type, size,
/// mtime and inode. A reinstall (new files, new inodes) changes it.
fn fingerprint(dir: &Path) -> Result<String, Failure> {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = Hasher::new();
    let mut entries = 0u64;
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| internal(format!("reading {}: {e}", dir.display())))?;
        if entry.depth() == 1 && entry.file_name() == ".git" {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| internal(format!("reading {}: {e}", entry.path().display())))?;
        let rel = entry.path().strip_prefix(dir).expect("below dir");
        hasher.field(
            &rel.to_string_lossy(),
            &format!(
                "{:o} {} {}.{} {}",
                meta.mode(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino()
            ),
        );
        entries += 1;
    }
    hasher.field("entries", &entries.to_string());
    Ok(hasher.finish().hex())
}

/// Copies `from` to `to`: hard links for files when `links` and the filesystem allow, real
/// copies otherwise; symlinks recreated; `.git` at the top left out. Returns (linked, copied).
fn copy_tree(from: &Path, to: &Path, links: bool) -> Result<(u64, u64), Failure> {
    let mut linked = 0;
    let mut copied = 0;
    let mut try_links = links;
    let walker = walkdir::WalkDir::new(from)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"));
    for entry in walker {
        let entry = entry.map_err(|e| internal(format!("reading {}: {e}", from.display())))?;
        let rel = entry.path().strip_prefix(from).expect("below from");
        let dest = to.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| io_failure("creating", &dest, e))?;
            let mode = entry
                .metadata()
                .map(|m| m.permissions().mode())
                .unwrap_or(0o755);
            // Keep the copy writable for us (we patch into it), whatever the install's modes.
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode | 0o700));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())
                .map_err(|e| io_failure("reading", entry.path(), e))?;
            std::os::unix::fs::symlink(target, &dest)
                .map_err(|e| io_failure("linking", &dest, e))?;
        } else {
            if try_links {
                match std::fs::hard_link(entry.path(), &dest) {
                    Ok(()) => {
                        linked += 1;
                        continue;
                    }
                    // Another filesystem, or links not allowed: copy from now on.
                    Err(_) => try_links = false,
                }
            }
            std::fs::copy(entry.path(), &dest).map_err(|e| io_failure("copying", &dest, e))?;
            copied += 1;
        }
    }
    Ok((linked, copied))
}

/// The first symbolic link below `root` among the directories on the way to `rel`; `None` when
/// there is none up to the first missing component. (The target itself was checked by the
/// shared routine; this checks the copy, where a link would lead out of it.)
fn first_link(root: &Path, rel: &str) -> Option<String> {
    for step in parent_dirs(rel) {
        match std::fs::symlink_metadata(root.join(step)) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(step.to_string()),
            Ok(meta) if meta.is_dir() => {}
            // Missing, or a file: nothing further can be reached through a link.
            _ => return None,
        }
    }
    None
}

/// Puts one change into the copy. A changed file replaces its link by a new file (never writing
/// through the link), and its stale compiled caches are removed. A parent directory that is a
/// link in the copy is refused (the target was checked before, so this is the last guard that
/// nothing is written outside the copy).
fn apply_change(
    change: &Change,
    patch_name: &str,
    applied_dir: &Path,
    copy_root: &Path,
    log: &PatchLog,
) -> Result<(), Failure> {
    let rel = match change {
        Change::Write { rel, .. } | Change::Delete { rel } => rel,
    };
    if let Some(link) = first_link(copy_root, rel) {
        let place = format!("the copy {}", copy_root.display());
        return Err(link_failure(patch_name, rel, &link, &place));
    }
    match change {
        Change::Write { rel, mode, .. } => {
            let dest = copy_root.join(rel);
            if std::fs::symlink_metadata(&dest).is_ok() {
                std::fs::remove_file(&dest).map_err(|e| io_failure("unlinking", &dest, e))?;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_failure("creating", parent, e))?;
            }
            std::fs::copy(applied_dir.join(rel), &dest)
                .map_err(|e| io_failure("writing", &dest, e))?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| io_failure("setting the mode of", &dest, e))?;
            log.line(&format!("patched {rel}"));
            remove_stale_caches(rel, copy_root, log)?;
        }
        Change::Delete { rel } => {
            let dest = copy_root.join(rel);
            match std::fs::remove_file(&dest) {
                Ok(()) => log.line(&format!("deleted {rel}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_failure("deleting", &dest, e)),
            }
            remove_stale_caches(rel, copy_root, log)?;
        }
    }
    Ok(())
}

/// Removes `__pycache__/<module>.*.pyc` of a changed `.py` file from the copy. Python would
/// notice most stale caches itself, but not hash-based ones or an edit that keeps size and
/// mtime; removing a link never touches the original.
fn remove_stale_caches(rel: &str, copy_root: &Path, log: &PatchLog) -> Result<(), Failure> {
    let Some((cache_dir, prefix)) = pycache_of(rel) else {
        return Ok(());
    };
    let dir = copy_root.join(&cache_dir);
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        // Removing caches through the link would delete files outside the copy, and Python
        // would write new ones there: the copy gets an empty cache directory of its own.
        std::fs::remove_file(&dir).map_err(|e| io_failure("unlinking", &dir, e))?;
        std::fs::create_dir(&dir).map_err(|e| io_failure("creating", &dir, e))?;
        log.line(&format!(
            "replaced the link {cache_dir} by an empty directory of the copy's own"
        ));
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".pyc") {
            std::fs::remove_file(entry.path())
                .map_err(|e| io_failure("removing", &entry.path(), e))?;
            log.line(&format!("removed stale cache {}", entry.path().display()));
        }
    }
    Ok(())
}

/// Runs `rebuild` with `/bin/sh -c` in the copy; its output goes to the log.
fn run_rebuild(command: &str, dir: &Path, log: &PatchLog) -> Result<(), Failure> {
    log.line(&format!("$ (cd {} && {command})", dir.display()));
    let output = Command::new("/bin/sh")
        .args(["-c", command])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| internal(format!("cannot run the rebuild command: {e}")))?;
    log.block(&String::from_utf8_lossy(&output.stdout));
    log.block(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(())
    } else {
        let tail = String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string);
        let mut failure = Failure::new(
            FailureClass::PatchFailed,
            format!(
                "the rebuild command failed ({}) in {}",
                output.status,
                dir.display()
            ),
        );
        failure.sample_log_line = tail;
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_links_and_leaves_git_out() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("vllm/sub")).unwrap();
        std::fs::create_dir_all(from.join(".git")).unwrap();
        std::fs::write(from.join("vllm/a.py"), "a").unwrap();
        std::fs::write(from.join("vllm/sub/b.py"), "b").unwrap();
        std::fs::write(from.join(".git/HEAD"), "x").unwrap();
        std::os::unix::fs::symlink("a.py", from.join("vllm/link.py")).unwrap();
        let to = dir.path().join("to");
        let (linked, copied) = copy_tree(&from, &to, true).unwrap();
        assert_eq!((linked, copied), (2, 0));
        assert!(!to.join(".git").exists());
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&to.join("vllm/a.py")), ino(&from.join("vllm/a.py")));
        assert_eq!(
            std::fs::read_link(to.join("vllm/link.py")).unwrap(),
            Path::new("a.py")
        );
        let real = dir.path().join("real");
        let (linked, copied) = copy_tree(&from, &real, false).unwrap();
        assert_eq!((linked, copied), (0, 2));
        assert_ne!(ino(&real.join("vllm/a.py")), ino(&from.join("vllm/a.py")));
    }

    #[test]
    fn fingerprint_changes_when_a_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "a").unwrap();
        let before = fingerprint(dir.path()).unwrap();
        assert_eq!(before, fingerprint(dir.path()).unwrap());
        // pip replaces files: a new inode, even with the same size.
        std::fs::remove_file(dir.path().join("a.py")).unwrap();
        std::fs::write(dir.path().join("b.tmp"), "b").unwrap();
        std::fs::rename(dir.path().join("b.tmp"), dir.path().join("a.py")).unwrap();
        assert_ne!(before, fingerprint(dir.path()).unwrap());
    }
}
