//! The cases `patch_process` (a patched copy of a tree) and `patch_docker` (a derived image)
//! share: both builders apply a patch with one routine, so the same patches must fail and
//! succeed the same way over both. Each test file implements [`PatchBase`] for its fixture and
//! runs these cases, then checks what only its builder makes (trees, images, owners, ...).
//!
//! Include with `mod patch_support;` next to `#[path = "common/patch_fixtures.rs"] mod
//! patch_fixtures;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use isobench::exec::patch::PatchOutcome;
use isobench::failure::{Failure, FailureClass};
use isobench::manifest::model::PatchSpec;
use isobench::runtime::{GpuMode, ServerSource, ServerSpec, labels};

use crate::patch_fixtures::*;

/// One base (a tree, an image) with a place for patches, the patch cache and logs.
#[allow(async_fn_in_trait)]
pub trait PatchBase {
    /// Writes `patch` as a patch file and returns the arm's spec over this base.
    fn spec(&self, name: &str, patch: &str) -> PatchSpec;
    /// The build log of the build named `name`.
    fn log(&self, name: &str) -> PathBuf;
    /// The target directory builds over this base report (without `patch_target`).
    fn target(&self) -> String;
    async fn build(&self, spec: &PatchSpec, log: &str) -> Result<PatchOutcome, Failure>;
    /// Nothing was built for `spec`, no helper of its build is left, and the base is untouched.
    async fn assert_nothing_built(&self, spec: &PatchSpec);
}

/// A patch made against an `engine.py` whose line 30 differs from the base's: its second hunk
/// is rejected, its first applies.
pub fn rejected_hunk_patch() -> String {
    let theirs = engine_py_with(&[(30, "line_30 = 'theirs'")]);
    let theirs_patched = engine_py_with(&[(5, "line_5 = 'fast'"), (30, "line_30 = 'faster'")]);
    git_diff(
        &[("vllm/engine.py", &theirs)],
        &[("vllm/engine.py", Some(&theirs_patched))],
    )
}

/// A rejected hunk fails as `patch_failed` naming file and hunk (only that hunk), the log has
/// `git apply`'s words, and nothing is built. So does a file the base does not have.
pub async fn case_rejected_hunk(base: &impl PatchBase) {
    let spec = base.spec("rejected", &rejected_hunk_patch());
    let failure = base.build(&spec, "rejected").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed, "{failure}");
    assert!(
        failure.message.contains(&format!(
            "does not apply to {}: vllm/engine.py: hunk #2 `@@ -27,7 +27,7 @@",
            base.target()
        )),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains("hunk #1"), "{}", failure.message);
    assert_eq!(
        failure.log_path.as_deref(),
        Some(base.log("rejected").to_str().unwrap())
    );
    let log = std::fs::read_to_string(base.log("rejected")).unwrap();
    assert!(log.contains("Rejected hunk #2."), "{log}");
    assert!(log.contains("FAILED: patch_failed"), "{log}");
    base.assert_nothing_built(&spec).await;

    let missing = git_diff(
        &[("vllm/absent.py", "x = 1\n")],
        &[("vllm/absent.py", Some("x = 2\n"))],
    );
    let spec = base.spec("missing", &missing);
    let failure = base.build(&spec, "missing").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure
            .message
            .contains("vllm/absent.py: No such file or directory"),
        "{}",
        failure.message
    );
    base.assert_nothing_built(&spec).await;
}

/// `patch` changes `csrc/attention.cu` (and a Python file): without `rebuild` it fails as
/// `needs_rebuild` before anything is built, and a `rebuild` over an installed package (no
/// sources there) cannot help. Returns the spec, for the source-tree part of the test.
pub async fn case_compiled_sources_need_a_rebuild(base: &impl PatchBase, patch: &str) -> PatchSpec {
    let spec = base.spec("cuda", patch);
    let failure = base.build(&spec, "cuda").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::NeedsRebuild, "{failure}");
    assert!(
        failure.message.contains("csrc/attention.cu"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("`rebuild`"), "{}", failure.message);
    base.assert_nothing_built(&spec).await;

    let over_install = PatchSpec {
        rebuild: Some("true".into()),
        ..spec.clone()
    };
    let failure = base.build(&over_install, "cuda-install").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::NeedsRebuild, "{failure}");
    assert!(
        failure.message.contains("installed package"),
        "{}",
        failure.message
    );
    base.assert_nothing_built(&over_install).await;
    spec
}

/// A patch with nothing for an installed package (only a test file) builds the base
/// unchanged and says what it skipped; a patch made from inside the package directory would
/// skip everything silently, so it fails. Returns the tests-only outcome.
pub async fn case_nothing_for_an_installed_package(base: &impl PatchBase) -> PatchOutcome {
    let tests_only = git_diff(
        &[("tests/test_engine.py", "def test(): pass\n")],
        &[("tests/test_engine.py", Some("def test(): assert True\n"))],
    );
    let outcome = base
        .build(&base.spec("tests-only", &tests_only), "tests-only")
        .await
        .unwrap();
    assert!(outcome.files.is_empty());
    assert_eq!(outcome.skipped, vec!["tests/test_engine.py"]);
    assert_eq!(outcome.target, base.target());

    let misrooted = git_diff(
        &[("engine.py", &engine_py())],
        &[(
            "engine.py",
            Some(&engine_py_with(&[(5, "line_5 = 'fast'")])),
        )],
    );
    let spec = base.spec("misrooted", &misrooted);
    let failure = base.build(&spec, "misrooted").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure
            .message
            .contains("names `engine.py`, which is `vllm/engine.py` in the installed package"),
        "{}",
        failure.message
    );
    base.assert_nothing_built(&spec).await;
    outcome
}

/// The spec of a sim server for [`serve_and_measure`]: no GPUs, no volumes.
pub fn sim_server(
    name: String,
    campaign: &str,
    source: ServerSource,
    argv: Vec<String>,
    port: u16,
    log_path: PathBuf,
) -> ServerSpec {
    ServerSpec {
        name,
        labels: BTreeMap::from([(labels::CAMPAIGN.to_string(), campaign.to_string())]),
        source,
        argv,
        env: BTreeMap::new(),
        gpus: Vec::new(),
        gpu_mode: GpuMode::EnvOnly,
        port,
        shm_size: None,
        ipc: None,
        volumes: Vec::new(),
        log_path,
    }
}
