//! Agent patches for the process runtime: a private, patched copy of the target tree, applied
//! strictly with real `git apply`, the original install never modified.
#[path = "common/patch_fixtures.rs"]
mod patch_fixtures;
mod patch_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use isobench::exec::patch::{PatchOutcome, PatchedSource, build_patched};
use isobench::failure::{Failure, FailureClass};
use isobench::manifest::model::{ArmSource, PatchSpec};
use isobench::runtime::{Runtime, ServerSource, free_port};
use patch_fixtures::*;
use patch_support::*;

const SITE: &str = "lib/python3.11/site-packages";

/// A fake installation (venv-like: `lib/python3.11/site-packages/vllm`) in a temp dir, plus a
/// state directory for the patch cache and logs.
struct Install {
    dir: tempfile::TempDir,
    runtime: Runtime,
    /// The install as made, for "untouched".
    made: Vec<(PathBuf, String, u64, i64)>,
}

impl Install {
    fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in package_files() {
            write(&dir.path().join("inst").join(SITE).join(rel), &text);
        }
        let runtime = Runtime::process(dir.path().join("processes"));
        let made = snapshot(&dir.path().join("inst"));
        Install { dir, runtime, made }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("inst")
    }

    fn site(&self) -> PathBuf {
        self.root().join(SITE)
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("state/patched")
    }

    fn trees(&self) -> PathBuf {
        self.cache().join("trees")
    }
}

impl PatchBase for Install {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("logs/{name}.log"))
    }

    fn spec(&self, name: &str, patch: &str) -> PatchSpec {
        patch_spec(
            &self.dir.path().join("patches"),
            name,
            patch,
            ArmSource::Path { root: self.root() },
        )
    }

    fn target(&self) -> String {
        self.site().canonicalize().unwrap().display().to_string()
    }

    async fn build(&self, spec: &PatchSpec, log: &str) -> Result<PatchOutcome, Failure> {
        let base = self
            .runtime
            .ensure_image(&self.root().to_string_lossy(), |_| {})
            .await
            .unwrap();
        build_patched(
            &self.runtime,
            spec,
            &base,
            &ServerSource::Path { root: self.root() },
            &self.cache(),
            &self.log(log),
        )
        .await
    }

    /// No half-made copy is left (every tree has its record), and the install is as made.
    async fn assert_nothing_built(&self, _spec: &PatchSpec) {
        for tree in std::fs::read_dir(self.trees()).into_iter().flatten() {
            let tree = tree.unwrap().path();
            assert!(
                tree.join("isobench-patch.json").is_file(),
                "{}",
                tree.display()
            );
        }
        assert_eq!(snapshot(&self.root()), self.made);
    }
}

fn tree(outcome: &PatchOutcome) -> (PathBuf, PathBuf) {
    match &outcome.source {
        PatchedSource::Tree { root, pythonpath } => (root.clone(), pythonpath.clone()),
        other => panic!("expected a tree, got {other:?}"),
    }
}

/// A repo-wide agent patch: changes a module, adds one, deletes one, and touches a test file
/// that is not part of an installed package.
fn repo_wide_patch() -> String {
    let engine = engine_py();
    git_diff(
        &[
            ("vllm/engine.py", &engine),
            ("vllm/gone.py", "GONE = True\n"),
            ("vllm/__init__.py", "VALUE = 'base'\n"),
            ("tests/test_engine.py", "def test(): pass\n"),
        ],
        &[
            (
                "vllm/engine.py",
                Some(&engine_py_with(&[(5, "line_5 = 'fast'")])),
            ),
            ("vllm/gone.py", None),
            ("vllm/__init__.py", Some("VALUE = 'patched'\n")),
            ("vllm/new_kernel.py", Some("NEW = 1\n")),
            ("tests/test_engine.py", Some("def test(): assert True\n")),
        ],
    )
}

fn engine_only_patch() -> String {
    git_diff(
        &[("vllm/engine.py", &engine_py())],
        &[(
            "vllm/engine.py",
            Some(&engine_py_with(&[(9, "line_9 = 'twin'")])),
        )],
    )
}

#[tokio::test]
async fn patched_copy_leaves_the_original_untouched_and_imports_first() {
    let install = Install::new();
    let before = snapshot(&install.root());
    let spec = install.spec("agent", &repo_wide_patch());
    let outcome = install.build(&spec, "agent").await.unwrap();
    let (root, pythonpath) = tree(&outcome);

    assert!(!outcome.reused);
    assert_eq!(outcome.fuzz_used, None);
    assert_eq!(
        outcome.files,
        vec![
            "vllm/__init__.py",
            "vllm/engine.py",
            "vllm/gone.py",
            "vllm/new_kernel.py"
        ]
    );
    assert_eq!(outcome.skipped, vec!["tests/test_engine.py"]);
    assert_eq!(
        outcome.target,
        install.site().canonicalize().unwrap().display().to_string()
    );
    assert_eq!(
        root, pythonpath,
        "an installed package: the copy root holds vllm/"
    );
    assert!(root.starts_with(install.cache()), "{}", root.display());

    // The copy holds exactly the package, patched.
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/engine.py")).unwrap(),
        engine_py_with(&[(5, "line_5 = 'fast'")])
    );
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/new_kernel.py")).unwrap(),
        "NEW = 1\n"
    );
    assert!(!root.join("vllm/gone.py").exists());
    assert!(
        !root.join("torch").exists(),
        "only the vllm package is copied"
    );
    assert!(
        !root.join("tests").exists(),
        "skipped files are not written"
    );
    // Stale caches of changed modules are gone from the copy (and only from the copy).
    assert!(
        !root
            .join("vllm/__pycache__/engine.cpython-311.pyc")
            .exists()
    );
    assert!(
        !root
            .join("vllm/__pycache__/__init__.cpython-311.pyc")
            .exists()
    );
    assert!(
        install
            .site()
            .join("vllm/__pycache__/engine.cpython-311.pyc")
            .exists()
    );
    // Unchanged files are hard links; changed ones are new files.
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&root.join("vllm/sim.toml")),
        ino(&install.site().join("vllm/sim.toml"))
    );
    assert_ne!(
        ino(&root.join("vllm/engine.py")),
        ino(&install.site().join("vllm/engine.py"))
    );

    // The original install: same files, same content, same inodes, same mtimes.
    assert_eq!(snapshot(&install.root()), before);

    // `import vllm` with the copy first on PYTHONPATH finds the patched package even with the
    // original on the path too.
    let out = std::process::Command::new("python3")
        .args([
            "-B",
            "-c",
            "import vllm, os; print(vllm.VALUE, os.path.dirname(vllm.__file__))",
        ])
        .env(
            "PYTHONPATH",
            format!("{}:{}", pythonpath.display(), install.site().display()),
        )
        .current_dir("/")
        .output()
        .expect("python3 runs (scripts/ci-setup.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("patched {}", root.join("vllm").display())
    );

    let log = std::fs::read_to_string(install.log("agent")).unwrap();
    assert!(log.contains("applied strictly"), "{log}");
    assert!(log.contains("git apply -v --reject"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_inputs_are_reused_and_two_agents_get_two_trees() {
    let install = Install::new();
    let claude = install.spec("claude", &repo_wide_patch());
    let codex = install.spec("codex", &faster_patch());

    let first = install.build(&claude, "claude-1").await.unwrap();
    let (root, _) = tree(&first);
    let marker = std::fs::metadata(root.join("vllm/engine.py"))
        .unwrap()
        .ino();
    let again = install.build(&claude, "claude-2").await.unwrap();
    assert!(again.reused);
    assert_eq!(again.source, first.source);
    assert_eq!(
        (again.files.clone(), again.skipped.clone()),
        (first.files.clone(), first.skipped.clone())
    );
    assert_eq!(
        std::fs::metadata(root.join("vllm/engine.py"))
            .unwrap()
            .ino(),
        marker,
        "a reused tree is not rebuilt"
    );
    assert!(
        std::fs::read_to_string(install.log("claude-2"))
            .unwrap()
            .contains("cache hit")
    );

    let other = install.build(&codex, "codex").await.unwrap();
    let (other_root, _) = tree(&other);
    assert!(!other.reused);
    assert_ne!(other_root, root);
    assert_eq!(other.files, vec!["vllm/sim.toml"]);
    assert_eq!(
        std::fs::read_to_string(other_root.join("vllm/sim.toml")).unwrap(),
        FASTER_SIM_TOML
    );
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/sim.toml")).unwrap(),
        BASE_SIM_TOML
    );
    // Each agent's tree has only its own change.
    assert_eq!(
        std::fs::read_to_string(other_root.join("vllm/engine.py")).unwrap(),
        engine_py()
    );

    // Two arms with the same patch at once: one builds, the other waits and reuses it.
    let twin_a = install.spec("twin-a", &engine_only_patch());
    let twin_b = install.spec("twin-b", &engine_only_patch());
    let (a, b) = tokio::join!(
        install.build(&twin_a, "twin-a"),
        install.build(&twin_b, "twin-b")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.source, b.source);
    assert_eq!(
        [a.reused, b.reused].iter().filter(|r| **r).count(),
        1,
        "exactly one of the two built"
    );

    // A reinstalled package (new inode for a file) is a new tree identity: built again.
    let sim = install.site().join("vllm/sim.toml");
    std::fs::remove_file(&sim).unwrap();
    write(&sim, BASE_SIM_TOML);
    let rebuilt = install.build(&codex, "codex-2").await.unwrap();
    assert!(!rebuilt.reused);
    assert_ne!(rebuilt.source, other.source);
}

#[tokio::test]
async fn a_rejected_hunk_fails_listing_file_and_hunk() {
    let install = Install::new();
    case_rejected_hunk(&install).await;
    // Not even a finished tree: both builds failed.
    assert_eq!(
        std::fs::read_dir(install.trees())
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[tokio::test]
async fn offsets_and_fuzz_need_patch_fuzz_and_are_recorded() {
    let install = Install::new();
    // Made against an engine.py with two more lines at the top: hunks land 2 lines off.
    let shifted_base = format!("# header\n# header\n{}", engine_py());
    let shifted_new = format!(
        "# header\n# header\n{}",
        engine_py_with(&[(20, "line_20 = 'fast'")])
    );
    let offset_patch = git_diff(
        &[("vllm/engine.py", &shifted_base)],
        &[("vllm/engine.py", Some(&shifted_new))],
    );
    let strict = install.spec("offset", &offset_patch);
    let failure = install.build(&strict, "offset-strict").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure
            .message
            .contains("vllm/engine.py: hunk #1 matches only 2 line(s) above"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("patch_fuzz"),
        "{}",
        failure.message
    );

    let tolerant = PatchSpec {
        fuzz: 1,
        ..strict.clone()
    };
    let outcome = install.build(&tolerant, "offset-fuzz").await.unwrap();
    assert_eq!(
        outcome.fuzz_used,
        Some(0),
        "an offset alone, no context ignored"
    );
    let (root, _) = tree(&outcome);
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/engine.py")).unwrap(),
        engine_py_with(&[(20, "line_20 = 'fast'")])
    );

    // A patch whose outermost context line differs needs fuzz 1.
    let theirs = engine_py_with(&[(17, "line_17 = 'theirs'")]);
    let fuzzy_patch = git_diff(
        &[("vllm/engine.py", &theirs)],
        &[(
            "vllm/engine.py",
            Some(&engine_py_with(&[
                (17, "line_17 = 'theirs'"),
                (20, "line_20 = 'fast'"),
            ])),
        )],
    );
    let fuzzy = install.spec("fuzzy", &fuzzy_patch);
    let failure = install
        .build(
            &PatchSpec {
                fuzz: 0,
                ..fuzzy.clone()
            },
            "fuzzy-0",
        )
        .await
        .unwrap_err();
    assert!(
        failure.message.contains("hunk #1 `@@ -17,7 +17,7 @@"),
        "{}",
        failure.message
    );
    let outcome = install
        .build(
            &PatchSpec {
                fuzz: 2,
                ..fuzzy.clone()
            },
            "fuzzy-2",
        )
        .await
        .unwrap();
    assert_eq!(outcome.fuzz_used, Some(1));
    let (root, _) = tree(&outcome);
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/engine.py")).unwrap(),
        engine_py_with(&[(20, "line_20 = 'fast'")])
    );
}

#[tokio::test]
async fn compiled_sources_need_a_rebuild_command_and_a_source_tree() {
    let install = Install::new();
    let cu_patch = git_diff(
        &[
            ("csrc/attention.cu", "__global__ void k() {}\n"),
            ("vllm/engine.py", &engine_py()),
        ],
        &[
            (
                "csrc/attention.cu",
                Some("__global__ void k() { /* faster */ }\n"),
            ),
            (
                "vllm/engine.py",
                Some(&engine_py_with(&[(5, "line_5 = 'fast'")])),
            ),
        ],
    );
    let spec = case_compiled_sources_need_a_rebuild(&install, &cu_patch).await;

    // A source tree (an editable install) is patched whole and rebuilt in the copy.
    let src = install.dir.path().join("src");
    write(&src.join("setup.py"), "# build\n");
    write(&src.join("csrc/attention.cu"), "__global__ void k() {}\n");
    write(&src.join("vllm/__init__.py"), "VALUE = 'base'\n");
    write(&src.join("vllm/engine.py"), &engine_py());
    let before = snapshot(&src);
    let source_spec = PatchSpec {
        target: Some(src.display().to_string()),
        rebuild: Some("cp csrc/attention.cu vllm/attention.built".into()),
        ..spec.clone()
    };
    let outcome = install.build(&source_spec, "cuda-source").await.unwrap();
    let (root, pythonpath) = tree(&outcome);
    assert_eq!(root, pythonpath);
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/attention.built")).unwrap(),
        "__global__ void k() { /* faster */ }\n"
    );
    // With a rebuild, nothing in the copy is a link into the source tree.
    assert_ne!(
        std::fs::metadata(root.join("vllm/__init__.py"))
            .unwrap()
            .ino(),
        std::fs::metadata(src.join("vllm/__init__.py"))
            .unwrap()
            .ino()
    );
    assert_eq!(snapshot(&src), before);

    let failing = PatchSpec {
        rebuild: Some("echo 'nvcc: error: bad kernel' >&2; exit 3".into()),
        ..source_spec.clone()
    };
    let failure = install.build(&failing, "cuda-fail").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure.message.contains("rebuild command failed"),
        "{}",
        failure.message
    );
    assert_eq!(
        failure.sample_log_line.as_deref(),
        Some("nvcc: error: bad kernel")
    );
}

#[tokio::test]
async fn targets_are_found_by_python_or_named_and_missing_ones_are_clear() {
    // A real venv: its Python says where vllm is.
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let status = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let site = glob::glob(&format!("{}/lib/python3*/site-packages", venv.display()))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    for (rel, text) in package_files() {
        write(&site.join(rel), &text);
    }
    let runtime = Runtime::process(dir.path().join("processes"));
    let base = runtime
        .ensure_image(&venv.to_string_lossy(), |_| {})
        .await
        .unwrap();
    let spec = patch_spec(
        dir.path(),
        "fast",
        &faster_patch(),
        ArmSource::Path { root: venv.clone() },
    );
    let build = |spec: PatchSpec, log: &'static str| {
        let (runtime, base, venv, dir) = (
            runtime.clone(),
            base.clone(),
            venv.clone(),
            dir.path().to_path_buf(),
        );
        async move {
            build_patched(
                &runtime,
                &spec,
                &base,
                &ServerSource::Path { root: venv },
                &dir.join("patched"),
                &dir.join(log),
            )
            .await
        }
    };
    let outcome = build(spec.clone(), "venv.log").await.unwrap();
    let site_real = site.canonicalize().unwrap();
    assert_eq!(outcome.target, site_real.display().to_string());
    let log = std::fs::read_to_string(dir.path().join("venv.log")).unwrap();
    assert!(log.contains("where vllm is: "), "{log}");

    // `patch_target` naming the package directory itself: its name is dropped from the paths.
    let package_spec = PatchSpec {
        target: Some(
            site.join("vllm")
                .strip_prefix(&venv)
                .unwrap()
                .display()
                .to_string(),
        ),
        ..spec.clone()
    };
    let outcome = build(package_spec, "package.log").await.unwrap();
    let (root, pythonpath) = tree(&outcome);
    assert_eq!(root, pythonpath.join("vllm"));
    assert_eq!(
        std::fs::read_to_string(root.join("sim.toml")).unwrap(),
        FASTER_SIM_TOML
    );

    // No vllm anywhere.
    std::fs::remove_dir_all(site.join("vllm")).unwrap();
    let failure = build(spec.clone(), "none.log").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure.message.contains("cannot find the vllm package"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("patch_target"),
        "{}",
        failure.message
    );
    let failure = build(
        PatchSpec {
            target: Some("no/such/dir".into()),
            ..spec.clone()
        },
        "bad-target.log",
    )
    .await
    .unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure
            .message
            .contains("patch_target no/such/dir is not a directory"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn the_patched_tree_serves_faster_by_the_configured_amount() {
    let install = Install::new();
    let spec = install.spec("fast", &faster_patch());
    let outcome = install.build(&spec, "fast").await.unwrap();
    let (root, _) = tree(&outcome);

    // The sim reads its latency model from `vllm/sim.toml` under its working directory: the
    // original site-packages for the base, the patched copy for the agent.
    let serve = |dir: PathBuf, name: &'static str| {
        let runtime = install.runtime.clone();
        let logs = install.dir.path().join("logs");
        async move {
            let port = free_port();
            let argv = [
                env!("CARGO_BIN_EXE_isobench"),
                "sim",
                "--config",
                "vllm/sim.toml",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ]
            .map(String::from)
            .to_vec();
            let spec = sim_server(
                name.into(),
                "patch-test",
                ServerSource::Path { root: dir },
                argv,
                port,
                logs.join(format!("{name}.server.log")),
            );
            serve_and_measure(
                &runtime,
                &spec,
                Duration::from_secs(30),
                Duration::from_millis(50),
            )
            .await
        }
    };
    let base = serve(install.site(), "base").await;
    let agent = serve(root, "agent").await;
    assert_faster_by_the_configured_amount(&base, &agent);
}

#[tokio::test]
async fn a_patch_with_nothing_for_the_target_gives_an_unchanged_copy() {
    let install = Install::new();
    let outcome = case_nothing_for_an_installed_package(&install).await;
    let (root, _) = tree(&outcome);
    assert_eq!(
        std::fs::read_to_string(root.join("vllm/engine.py")).unwrap(),
        engine_py()
    );

    // An empty patch: the agent changed nothing, and the arm measures exactly that.
    let empty = install
        .build(&install.spec("empty", ""), "empty")
        .await
        .unwrap();
    assert!(empty.files.is_empty() && empty.skipped.is_empty());
    assert_eq!(empty.fuzz_used, None);

    // Text that is not a diff at all is an error, not an empty patch.
    let failure = install
        .build(&install.spec("prose", "I made it faster!\n"), "prose")
        .await
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure.message.contains("holds no file changes"),
        "{}",
        failure.message
    );
}
