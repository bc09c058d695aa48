//! Hostile agent patches (issue 17): a patch is untrusted input. Paths that climb out of the
//! target, absolute paths, links in the target, symlink modes, ... are refused as
//! `patch_failed` naming the path before any file is touched, and a patched copy never writes
//! outside itself. The parser and the process runtime here; the Docker runtime runs the same
//! corpus in `patch_docker.rs`.
mod apply_support;
#[path = "common/patch_fixtures.rs"]
mod patch_fixtures;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use apply_support::{Journal, OutputText, isobench};
use isobench::exec::patch::{PatchOutcome, PatchedSource, build_patched, parse_diff};
use isobench::failure::{Failure, FailureClass};
use isobench::manifest::model::ArmSource;
use isobench::runtime::{Runtime, ServerSource};
use patch_fixtures::*;

const SITE: &str = "lib/python3.11/site-packages";

/// A venv-like installation at `<tmp>/inst`, its patch cache at `<tmp>/cache` (the same depth,
/// so the corpus's `..` paths lead from the target and from the scratch directory to the same
/// victim, as in the audit's reproduction), and a victim directory `<tmp>/venv`.
struct Setup {
    dir: tempfile::TempDir,
    runtime: Runtime,
    victim: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in package_files() {
            write(&dir.path().join("inst").join(SITE).join(rel), &text);
        }
        let victim = plant_victim(dir.path());
        let runtime = Runtime::process(dir.path().join("processes"));
        Setup {
            dir,
            runtime,
            victim,
        }
    }

    fn tmp(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.tmp().join("inst")
    }

    fn site(&self) -> PathBuf {
        self.root().join(SITE)
    }

    async fn build(&self, name: &str, text: &str) -> Result<PatchOutcome, Failure> {
        let spec = patch_spec(
            &self.tmp().join("patches"),
            name,
            text,
            ArmSource::Path { root: self.root() },
        );
        let base = self
            .runtime
            .ensure_image(&self.root().to_string_lossy(), |_| {})
            .await
            .unwrap();
        build_patched(
            &self.runtime,
            &spec,
            &base,
            &ServerSource::Path { root: self.root() },
            &self.tmp().join("cache"),
            &self.tmp().join(format!("logs/{name}.log")),
        )
        .await
    }

    /// Every file below the temp directory except the patch cache, patch files and logs
    /// (content hash, inode, mtime): the victim and the original installation included.
    fn outside(&self) -> Vec<(PathBuf, String, u64, i64)> {
        let skip = ["cache", "patches", "logs", "processes"].map(|s| self.tmp().join(s));
        snapshot(self.tmp())
            .into_iter()
            .filter(|(p, ..)| !skip.iter().any(|s| p.starts_with(s)))
            .collect()
    }
}

fn ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn the_corpus_is_refused_by_the_parser_naming_the_line() {
    for (name, text) in hostile_corpus(Path::new("/tmp/isobench-victim/sim.toml")) {
        match parse_diff(&text) {
            Ok(diff) => panic!("{name}: accepted as {diff:?}"),
            Err(err) => assert!(err.starts_with("line "), "{name}: {err}"),
        }
    }
}

#[tokio::test]
async fn the_corpus_changes_nothing_outside_the_process_sandbox() {
    let setup = Setup::new();
    let before = setup.outside();
    assert!(before.iter().any(|(p, ..)| p == &setup.victim));
    let started = std::time::Instant::now();
    for (name, text) in hostile_corpus(&setup.victim) {
        let failure = setup.build(&name, &text).await.unwrap_err();
        assert_eq!(
            failure.class,
            FailureClass::PatchFailed,
            "{name}: {failure}"
        );
        assert!(
            failure.message.contains("not a usable unified diff: line "),
            "{name}: {}",
            failure.message
        );
    }
    eprintln!(
        "{} hostile patches refused in {:?}",
        hostile_corpus(&setup.victim).len(),
        started.elapsed()
    );
    assert_eq!(
        setup.outside(),
        before,
        "something outside the sandbox changed"
    );
    assert_eq!(
        std::fs::read_to_string(&setup.victim).unwrap(),
        BASE_SIM_TOML
    );
    // No patched tree was made, and no scratch directory is left.
    let cache = setup.tmp().join("cache");
    for sub in ["trees", "work"] {
        let left: Vec<_> = std::fs::read_dir(cache.join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}

/// Issue 17 item 1: `a/vllm/../../…/sim.toml` reaches the victim from the target and from the
/// scratch directory alike; the pre-image copy used to copy it onto itself (0 bytes).
#[tokio::test]
async fn a_climbing_path_is_refused_and_the_victim_keeps_its_bytes() {
    let setup = Setup::new();
    let inode = ino(&setup.victim);
    let (_, text) = hostile_corpus(&setup.victim)
        .into_iter()
        .find(|(n, _)| n == "dotdot-git.diff")
        .unwrap();
    let failure = setup.build("climb", &text).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed, "{failure}");
    assert!(
        failure.message.contains(&format!(
            "unsafe path `a/vllm/../../../../../{VICTIM_REL}`: it has a `..` component"
        )),
        "{}",
        failure.message
    );
    assert_eq!(
        std::fs::read_to_string(&setup.victim).unwrap(),
        BASE_SIM_TOML
    );
    assert_eq!(ino(&setup.victim), inode, "the victim was replaced");
    let log = std::fs::read_to_string(setup.tmp().join("logs/climb.log")).unwrap();
    assert!(log.contains("FAILED: "), "{log}");
}

/// Issue 17 item 2: the base tree holds `vllm/shared -> <elsewhere>`; a patch to
/// `vllm/shared/x.txt` used to unlink and rewrite the original through the copied link.
#[tokio::test]
async fn a_write_through_a_link_in_the_base_tree_is_refused() {
    let setup = Setup::new();
    let elsewhere = setup.tmp().join("elsewhere");
    write(&elsewhere.join("x.txt"), "ORIGINAL\n");
    std::os::unix::fs::symlink(&elsewhere, setup.site().join("vllm/shared")).unwrap();
    // The last component a link: the patch would change the link's target.
    std::os::unix::fs::symlink(elsewhere.join("x.txt"), setup.site().join("vllm/link.py")).unwrap();
    let before = setup.outside();
    let inode = ino(&elsewhere.join("x.txt"));
    let through = "`vllm/shared/x.txt` goes through the symbolic link `vllm/shared` in the target";
    for (name, rel, after, expected) in [
        ("through", "vllm/shared/x.txt", Some("AGENT\n"), through),
        // A deletion would have unlinked the original through the copied link.
        ("delete", "vllm/shared/x.txt", None, through),
        (
            "onto",
            "vllm/link.py",
            Some("AGENT\n"),
            "`vllm/link.py` is a symbolic link in the target",
        ),
    ] {
        let patch = git_diff(&[(rel, "ORIGINAL\n")], &[(rel, after)]);
        let failure = setup.build(name, &patch).await.unwrap_err();
        assert_eq!(failure.class, FailureClass::PatchFailed, "{failure}");
        assert!(failure.message.contains(expected), "{}", failure.message);
    }
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("x.txt")).unwrap(),
        "ORIGINAL\n"
    );
    assert_eq!(ino(&elsewhere.join("x.txt")), inode);
    assert_eq!(setup.outside(), before);
}

/// A `__pycache__` that is a link (to a shared cache elsewhere): removing the changed module's
/// stale caches through it used to delete files outside the copy. The copy gets an empty cache
/// directory of its own instead.
#[tokio::test]
async fn a_linked_pycache_is_replaced_in_the_copy_not_emptied_through() {
    let setup = Setup::new();
    let shared_cache = setup.tmp().join("shared-cache");
    let pyc = shared_cache.join("engine.cpython-311.pyc");
    write(&pyc, "someone else's bytecode");
    let cache_dir = setup.site().join("vllm/__pycache__");
    std::fs::remove_dir_all(&cache_dir).unwrap();
    std::os::unix::fs::symlink(&shared_cache, &cache_dir).unwrap();
    let before = setup.outside();
    let patch = git_diff(
        &[("vllm/engine.py", &engine_py())],
        &[(
            "vllm/engine.py",
            Some(&engine_py_with(&[(3, "line_3 = 'agent'")])),
        )],
    );
    let outcome = setup.build("pycache", &patch).await.unwrap();
    let PatchedSource::Tree { root, .. } = &outcome.source else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        std::fs::read_to_string(&pyc).unwrap(),
        "someone else's bytecode"
    );
    let copied = root.join("vllm/__pycache__");
    let meta = std::fs::symlink_metadata(&copied).unwrap();
    assert!(meta.is_dir(), "the copy's cache directory is its own");
    assert_eq!(std::fs::read_dir(&copied).unwrap().count(), 0);
    assert_eq!(setup.outside(), before);
}

/// End to end: the quickstart campaign with a hostile agent patch. The agent's node fails as
/// `patch_failed` naming the path, nothing is measured for it, the other arms are measured,
/// and the victim outside the campaign keeps its bytes.
#[test]
fn a_quickstart_campaign_with_a_hostile_agent_patch_measures_nothing_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "VICTIM\n").unwrap();
    let inode = ino(&victim);
    let campaign = tmp.path().join("campaign");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for sub in ["sim", "patches/agent-sim"] {
        for entry in walkdir::WalkDir::new(examples.join(sub)) {
            let entry = entry.unwrap();
            let dest = campaign.join(entry.path().strip_prefix(&examples).unwrap());
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
            } else {
                std::fs::copy(entry.path(), &dest).unwrap();
            }
        }
    }
    let manifest = std::fs::read_to_string(examples.join("quickstart.toml"))
        .unwrap()
        .replace("repeats = 3", "repeats = 1")
        .replace("num_prompts = 48", "num_prompts = 8");
    std::fs::write(campaign.join("quickstart.toml"), manifest).unwrap();
    // The target is `sim/aaaa1111/baseline` (patch_target = "."): four levels up is the
    // temp directory holding the victim.
    let bad = "../../../../victim.txt";
    std::fs::write(
        campaign.join("patches/agent-sim/aaaa1111.diff"),
        format!("--- a/{bad}\n+++ b/{bad}\n@@ -1 +1 @@\n-VICTIM\n+PWNED\n"),
    )
    .unwrap();
    let out = isobench(&[
        "apply",
        "--plain",
        campaign.join("quickstart.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "VICTIM\n");
    assert_eq!(ino(&victim), inode);
    let j = Journal::read(&campaign.join(".isobench"));
    let patches = j.latest_with_prefix("patch[");
    let patch = &patches["patch[commit=aaaa1111,arm=agent-sim]"];
    assert_eq!(patch["failure"]["class"], "patch_failed", "{patch}");
    let message = patch["failure"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("unsafe path `a/{bad}`")),
        "{message}"
    );
    let m = j.latest_with_prefix("measure[");
    let agent: Vec<_> = m
        .iter()
        .filter(|(a, _)| a.contains("arm=agent-sim,"))
        .collect();
    assert!(!agent.is_empty());
    for (a, e) in agent {
        assert_eq!(e["event"], "failed", "{a}");
        assert!(e["outputs"].is_null(), "{a} has results");
    }
    for (a, e) in m.iter().filter(|(a, _)| a.contains("arm=baseline,")) {
        assert_eq!(e["event"], "done", "{a}");
    }
}
