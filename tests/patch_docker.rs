//! Agent patches as derived images on the real Docker Engine: built from locally built base
//! images (see `tests/common/patch_images.rs`), applied strictly with real `git apply`,
//! started with the Docker runtime and measured with the load generator library.
mod common;
#[path = "common/patch_fixtures.rs"]
mod patch_fixtures;
#[path = "common/patch_images.rs"]
mod patch_images;
mod patch_support;

use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::ListImagesOptions;
use common::docker_env::{CampaignGuard, containers_of};
use isobench::exec::patch::{PatchOutcome, PatchedSource, build_patched, derived_image_tag};
use isobench::failure::{Failure, FailureClass};
use isobench::manifest::model::{ArmSource, PatchSpec};
use isobench::runtime::{ImageInfo, Runtime, ServerSource};
use patch_fixtures::*;
use patch_images::{
    BASE, NO_VLLM, PYTHON, SITE, SRC, docker_or_skip, read_image_file, run_in_image,
};
use patch_support::*;

const SIM_PORT: u16 = 8000;

/// One test's patches, cache directory and logs, over one base image.
struct Fixture {
    dir: tempfile::TempDir,
    runtime: Runtime,
    base: ImageInfo,
    reference: String,
}

impl Fixture {
    async fn new(test: &str, reference: &str) -> Option<Fixture> {
        let docker = docker_or_skip(test).await?;
        let runtime = Runtime::Docker(docker);
        let base = runtime.ensure_image(reference, |_| {}).await.unwrap();
        Some(Fixture {
            dir: tempfile::tempdir().unwrap(),
            runtime,
            base,
            reference: reference.to_string(),
        })
    }

    fn docker(&self) -> &bollard::Docker {
        match &self.runtime {
            Runtime::Docker(d) => d.client(),
            _ => unreachable!(),
        }
    }

    fn tag(&self, spec: &PatchSpec) -> String {
        derived_image_tag(&self.reference, &self.base.id, spec)
    }

    async fn image_exists(&self, reference: &str) -> bool {
        self.docker().inspect_image(reference).await.is_ok()
    }

    /// No helper or probe container of this spec's build is left.
    async fn assert_no_helpers(&self, spec: &PatchSpec) {
        let tag = self.tag(spec);
        let key12 = tag.rsplit(':').next().unwrap();
        let left = patch_images::containers_named(self.docker(), &format!("-{key12}-")).await;
        assert!(left.is_empty(), "helper containers left: {left:?}");
    }

    async fn file(&self, image: &str, rel: &str) -> Option<patch_images::ImageFile> {
        read_image_file(self.docker(), image, &format!("{SITE}/{rel}")).await
    }
}

impl PatchBase for Fixture {
    fn spec(&self, name: &str, patch: &str) -> PatchSpec {
        patch_spec(
            &self.dir.path().join("patches"),
            name,
            patch,
            ArmSource::Image {
                reference: self.reference.clone(),
            },
        )
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("logs/{name}.log"))
    }

    fn target(&self) -> String {
        SITE.to_string()
    }

    async fn build(&self, spec: &PatchSpec, log: &str) -> Result<PatchOutcome, Failure> {
        build_patched(
            &self.runtime,
            spec,
            &self.base,
            &ServerSource::Image {
                reference: self.reference.clone(),
            },
            &self.dir.path().join("state/patched"),
            &self.log(log),
        )
        .await
    }

    /// No derived image of the spec and no helper of its build. (Images are immutable: the
    /// base cannot change.)
    async fn assert_nothing_built(&self, spec: &PatchSpec) {
        assert!(
            !self.image_exists(&self.tag(spec)).await,
            "no image for a failed patch"
        );
        self.assert_no_helpers(spec).await;
    }
}

fn image(outcome: &PatchOutcome) -> (String, String) {
    match &outcome.source {
        PatchedSource::Image { reference, id } => (reference.clone(), id.clone()),
        other => panic!("expected an image, got {other:?}"),
    }
}

/// A patch changing the latency model, plus a marker comment so each test has its own patch
/// (and so its own derived image).
fn sim_patch(marker: &str, faster: &str) -> String {
    git_diff(
        &[("vllm/sim.toml", BASE_SIM_TOML)],
        &[("vllm/sim.toml", Some(&format!("{faster}# {marker}\n")))],
    )
}

#[tokio::test]
async fn the_derived_image_serves_faster_by_the_configured_amount() {
    let Some(fx) = Fixture::new("derived_image_faster", BASE).await else {
        return;
    };
    let guard = CampaignGuard::new("patch-faster");
    let patch = git_diff(
        &[
            ("vllm/sim.toml", BASE_SIM_TOML),
            ("vllm/__init__.py", "VALUE = 'base'\n"),
        ],
        &[
            ("vllm/sim.toml", Some(FASTER_SIM_TOML)),
            ("vllm/__init__.py", Some("VALUE = 'patched'\n")),
        ],
    );
    let spec = fx.spec("faster", &patch);
    let outcome = fx.build(&spec, "faster").await.unwrap();
    let (reference, id) = image(&outcome);
    assert_eq!(reference, fx.tag(&spec));
    assert!(reference.starts_with("isobench-patched/isobench-test/patch-base:"));
    assert!(!outcome.reused);
    assert_eq!(outcome.fuzz_used, None);
    assert_eq!(outcome.files, vec!["vllm/__init__.py", "vllm/sim.toml"]);
    assert_eq!(
        outcome.target, SITE,
        "found by scanning (the image has no Python)"
    );
    fx.assert_no_helpers(&spec).await;

    // Tagged and labelled with what it was built from; built FROM the exact base.
    let inspect = fx.docker().inspect_image(&reference).await.unwrap();
    assert_eq!(inspect.id.as_deref(), Some(id.as_str()));
    let config = inspect.config.clone().unwrap();
    let image_labels = config.labels.clone().unwrap();
    assert_eq!(image_labels["isobench.patch.base-id"], fx.base.id);
    assert_eq!(image_labels["isobench.patch.base-digest"], fx.base.digest());
    assert_eq!(image_labels["isobench.patch.hash"], spec.patch_hash.hex());
    assert_eq!(image_labels["isobench.patched"], "true");
    let base_config = fx
        .docker()
        .inspect_image(BASE)
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.entrypoint, base_config.entrypoint);
    // Built on top of the base: its layers come first, then the patched files.
    let layers = |i: &bollard::models::ImageInspect| i.root_fs.clone().unwrap().layers.unwrap();
    let base_layers = layers(&fx.docker().inspect_image(BASE).await.unwrap());
    let derived_layers = layers(&inspect);
    assert_eq!(derived_layers[..base_layers.len()], base_layers[..]);
    assert_eq!(
        derived_layers.len(),
        base_layers.len() + 1,
        "one COPY layer"
    );

    // The patched files are in; the stale cache of the changed module is emptied (Python
    // rejects it and recompiles); the cache of an unchanged module is untouched.
    assert_eq!(
        fx.file(&reference, "vllm/sim.toml").await.unwrap().bytes,
        FASTER_SIM_TOML.as_bytes()
    );
    assert_eq!(
        fx.file(&reference, "vllm/__pycache__/__init__.cpython-311.pyc")
            .await
            .unwrap()
            .bytes,
        b""
    );
    assert_eq!(
        fx.file(&reference, "vllm/__pycache__/engine.cpython-311.pyc")
            .await
            .unwrap()
            .bytes,
        b"stale bytecode"
    );
    // The base is unchanged.
    assert_eq!(
        fx.file(BASE, "vllm/sim.toml").await.unwrap().bytes,
        BASE_SIM_TOML.as_bytes()
    );

    // Start both with the Docker runtime and measure.
    let serve = |reference: String, name: &'static str| {
        let runtime = fx.runtime.clone();
        let campaign = guard.campaign.clone();
        let logs = fx.dir.path().join("logs");
        async move {
            let spec = sim_server(
                format!("{campaign}-{name}"),
                &campaign,
                ServerSource::Image { reference },
                Vec::new(),
                SIM_PORT,
                logs.join(format!("{name}.server.log")),
            );
            serve_and_measure(
                &runtime,
                &spec,
                Duration::from_secs(60),
                Duration::from_millis(100),
            )
            .await
        }
    };
    let base = serve(BASE.to_string(), "base").await;
    let agent = serve(reference.clone(), "agent").await;
    assert_faster_by_the_configured_amount(&base, &agent);
    assert!(containers_of(fx.docker(), &guard.campaign).await.is_empty());
}

#[tokio::test]
async fn a_second_build_with_the_same_inputs_is_reused() {
    let Some(fx) = Fixture::new("patch_reused", BASE).await else {
        return;
    };
    let spec = fx.spec("reuse", &sim_patch("reuse", FASTER_SIM_TOML));
    let first = fx.build(&spec, "first").await.unwrap();
    assert!(!first.reused);
    let (reference, id) = image(&first);

    let count = || async {
        let options = ListImagesOptions {
            filters: Some(std::collections::HashMap::from([(
                "label".to_string(),
                vec![format!("isobench.patch.hash={}", spec.patch_hash.hex())],
            )])),
            ..Default::default()
        };
        fx.docker().list_images(Some(options)).await.unwrap().len()
    };
    assert_eq!(count().await, 1);

    let second = fx.build(&spec, "second").await.unwrap();
    assert!(second.reused);
    assert_eq!(
        image(&second),
        (reference.clone(), id.clone()),
        "no new image"
    );
    assert_eq!(second.files, first.files);
    assert_eq!(second.fuzz_used, first.fuzz_used);
    assert_eq!(second.target, first.target);
    assert_eq!(count().await, 1);
    let log = std::fs::read_to_string(fx.log("second")).unwrap();
    assert!(log.contains("cache hit"), "{log}");
    assert!(
        !log.contains("git apply"),
        "a cache hit applies nothing: {log}"
    );

    // Another state directory (a later apply elsewhere) finds the same image.
    let elsewhere = build_patched(
        &fx.runtime,
        &spec,
        &fx.base,
        &ServerSource::Image {
            reference: BASE.to_string(),
        },
        &fx.dir.path().join("other-state/patched"),
        &fx.log("third"),
    )
    .await
    .unwrap();
    assert!(elsewhere.reused);
    assert_eq!(image(&elsewhere).1, id);

    // Other options (here: fuzz allowed) are another build.
    let tolerant = PatchSpec {
        fuzz: 2,
        ..spec.clone()
    };
    let other = fx.build(&tolerant, "tolerant").await.unwrap();
    assert!(!other.reused);
    assert_ne!(image(&other).0, reference);
}

#[tokio::test]
async fn two_agents_of_one_commit_get_two_images() {
    let Some(fx) = Fixture::new("patch_two_agents", BASE).await else {
        return;
    };
    let claude_toml = BASE_SIM_TOML.replace("ttft_ms = 40.0", "ttft_ms = 30.0");
    let codex_toml = BASE_SIM_TOML.replace("itl_ms = 8.0", "itl_ms = 6.0");
    let claude = fx.spec("agent-claude", &sim_patch("claude", &claude_toml));
    let codex = fx.spec("agent-codex", &sim_patch("codex", &codex_toml));
    let (a, b) = tokio::join!(fx.build(&claude, "claude"), fx.build(&codex, "codex"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (a_ref, a_id) = image(&a);
    let (b_ref, b_id) = image(&b);
    assert_ne!(a_ref, b_ref);
    assert_ne!(a_id, b_id);
    assert_eq!(
        fx.file(&a_ref, "vllm/sim.toml").await.unwrap().bytes,
        format!("{claude_toml}# claude\n").as_bytes()
    );
    assert_eq!(
        fx.file(&b_ref, "vllm/sim.toml").await.unwrap().bytes,
        format!("{codex_toml}# codex\n").as_bytes()
    );
}

#[tokio::test]
async fn a_rejected_hunk_is_patch_failed_with_the_hunk_listed() {
    let Some(fx) = Fixture::new("patch_rejected", BASE).await else {
        return;
    };
    case_rejected_hunk(&fx).await;
}

#[tokio::test]
async fn compiled_sources_need_a_rebuild_which_runs_in_a_build_container() {
    let Some(fx) = Fixture::new("patch_rebuild", BASE).await else {
        return;
    };
    let kernel = "__global__ void attention() {}\n";
    let faster_kernel = "__global__ void attention() { /* unrolled */ }\n";
    let patch = git_diff(
        &[
            ("csrc/attention.cu", kernel),
            ("vllm/__init__.py", "VALUE = 'source'\n"),
        ],
        &[
            ("csrc/attention.cu", Some(faster_kernel)),
            ("vllm/__init__.py", Some("VALUE = 'patched source'\n")),
        ],
    );
    // No rebuild command: fails before touching the engine; nor can an installed package
    // rebuild.
    let spec = case_compiled_sources_need_a_rebuild(&fx, &patch).await;

    // Over the source tree: the rebuild runs in a build container of the derived image (here
    // it "compiles" the kernel by copying it with shell builtins) and its result is committed.
    let source = PatchSpec {
        target: Some(SRC.into()),
        rebuild: Some(
            "while IFS= read -r l; do echo \"$l\"; done < csrc/attention.cu > vllm/_C.built".into(),
        ),
        ..spec.clone()
    };
    let outcome = fx.build(&source, "cuda-source").await.unwrap();
    let (reference, _) = image(&outcome);
    assert_eq!(outcome.target, SRC);
    assert_eq!(outcome.files, vec!["csrc/attention.cu", "vllm/__init__.py"]);
    let built = read_image_file(fx.docker(), &reference, &format!("{SRC}/vllm/_C.built"))
        .await
        .expect("the rebuild's output is in the image");
    assert_eq!(built.bytes, faster_kernel.as_bytes());
    let config = fx
        .docker()
        .inspect_image(&reference)
        .await
        .unwrap()
        .config
        .unwrap();
    let base_config = fx
        .docker()
        .inspect_image(BASE)
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!(
        config.entrypoint, base_config.entrypoint,
        "the rebuild step keeps the image's entrypoint"
    );
    assert_eq!(config.working_dir, base_config.working_dir);
    let log = std::fs::read_to_string(fx.log("cuda-source")).unwrap();
    assert!(log.contains("RUN [\"/bin/sh\",\"-c\""), "{log}");

    // A failing rebuild is the patch's failure.
    let failing = PatchSpec {
        rebuild: Some("echo 'nvcc error: attention.cu(1): bad' >&2; exit 3".into()),
        ..source.clone()
    };
    let failure = fx.build(&failing, "cuda-fail").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed, "{failure}");
    assert!(
        failure.message.contains("rebuild command failed"),
        "{}",
        failure.message
    );
    let log = std::fs::read_to_string(fx.log("cuda-fail")).unwrap();
    assert!(log.contains("nvcc error: attention.cu(1): bad"), "{log}");
    assert!(!fx.image_exists(&fx.tag(&failing)).await);
    fx.assert_no_helpers(&failing).await;
}

#[tokio::test]
async fn deleted_files_go_and_owners_and_modes_stay() {
    let Some(fx) = Fixture::new("patch_delete", BASE).await else {
        return;
    };
    let patch = git_diff(
        &[
            ("vllm/gone.py", "GONE = True\n"),
            ("vllm/owned.py", "OWNED = 'base'\n"),
            ("tests/test_gone.py", "def test(): pass\n"),
        ],
        &[
            ("vllm/gone.py", None),
            ("vllm/owned.py", Some("OWNED = 'patched'\n")),
            ("vllm/tool.sh", Some("#!/bin/sh\necho hi\n")),
            ("tests/test_gone.py", None),
        ],
    );
    // `git diff` records the new file's mode; make it executable as an agent's script would be.
    let patch = patch.replace(
        "new file mode 100644\nindex 0000000..",
        "new file mode 100755\nindex 0000000..",
    );
    let spec = fx.spec("delete", &patch);
    let outcome = fx.build(&spec, "delete").await.unwrap();
    let (reference, _) = image(&outcome);
    assert_eq!(outcome.skipped, vec!["tests/test_gone.py"]);
    assert_eq!(
        outcome.files,
        vec!["vllm/gone.py", "vllm/owned.py", "vllm/tool.sh"]
    );
    assert!(
        fx.file(&reference, "vllm/gone.py").await.is_none(),
        "deleted"
    );
    assert!(fx.file(BASE, "vllm/gone.py").await.is_some());
    let owned = fx.file(&reference, "vllm/owned.py").await.unwrap();
    assert_eq!(owned.bytes, b"OWNED = 'patched'\n");
    assert_eq!(owned.uid, 1000, "the file keeps its owner");
    let tool = fx.file(&reference, "vllm/tool.sh").await.unwrap();
    assert_eq!(tool.mode & 0o777, 0o755);
    assert_eq!(tool.uid, 0);
    assert!(
        read_image_file(
            fx.docker(),
            &reference,
            &format!("{SITE}/tests/test_gone.py")
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn a_missing_target_is_a_clear_failure() {
    let Some(fx) = Fixture::new("patch_no_target", NO_VLLM).await else {
        return;
    };
    let spec = fx.spec("fast", &faster_patch());
    let failure = fx.build(&spec, "none").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed, "{failure}");
    assert!(
        failure
            .message
            .contains(&format!("cannot find the vllm package in image {NO_VLLM}")),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("`patch_target`"),
        "{}",
        failure.message
    );
    let log = std::fs::read_to_string(fx.log("none")).unwrap();
    assert!(log.contains("no python3 in the image"), "{log}");
    assert!(log.contains("scanning the image's filesystem"), "{log}");
    fx.assert_no_helpers(&spec).await;

    let named = PatchSpec {
        target: Some("/opt/nowhere".into()),
        ..spec.clone()
    };
    let failure = fx.build(&named, "named").await.unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed);
    assert!(
        failure
            .message
            .contains("patch_target /opt/nowhere does not exist"),
        "{}",
        failure.message
    );
    fx.assert_no_helpers(&named).await;
}

#[tokio::test]
async fn the_images_python_finds_an_editable_install_and_stale_bytecode_is_not_used() {
    let Some(fx) = Fixture::new("patch_python_probe", PYTHON).await else {
        return;
    };
    let import = [
        "python3",
        "-c",
        "import vllm; print(vllm.VALUE, vllm.__file__)",
    ];
    // The base's bytecode is unchecked-hash: Python would keep using it after a source edit.
    let (out, code) = run_in_image(fx.docker(), PYTHON, &import).await;
    assert_eq!(
        (out.trim(), code),
        (format!("source {SRC}/vllm/__init__.py").as_str(), 0)
    );
    let pyc = read_image_file(
        fx.docker(),
        PYTHON,
        &format!(
            "{SRC}/vllm/__pycache__/__init__.{}.pyc",
            patch_images::python_cache_tag()
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        pyc.bytes[4..8],
        [1, 0, 0, 0],
        "flags: hash-based, unchecked"
    );

    let patch = git_diff(
        &[("vllm/__init__.py", "VALUE = 'source'\n")],
        &[
            ("vllm/__init__.py", Some("VALUE = 'patched'\n")),
            ("tests/test_value.py", Some("def test(): pass\n")),
        ],
    );
    let spec = fx.spec("editable", &patch);
    let outcome = fx.build(&spec, "editable").await.unwrap();
    let (reference, _) = image(&outcome);
    // Python named the editable source tree (a source tree takes every file), not the
    // site-packages copy a filesystem scan would have found.
    assert_eq!(outcome.target, SRC);
    assert_eq!(
        outcome.files,
        vec!["tests/test_value.py", "vllm/__init__.py"]
    );
    assert!(outcome.skipped.is_empty());
    let log = std::fs::read_to_string(fx.log("editable")).unwrap();
    assert!(
        log.contains(&format!("asked the image's python3 where vllm is: {SRC}")),
        "{log}"
    );
    fx.assert_no_helpers(&spec).await;

    let (out, code) = run_in_image(fx.docker(), &reference, &import).await;
    assert_eq!(
        (out.trim(), code),
        (format!("patched {SRC}/vllm/__init__.py").as_str(), 0)
    );
    assert!(
        read_image_file(
            fx.docker(),
            &reference,
            &format!("{SRC}/tests/test_value.py")
        )
        .await
        .is_some()
    );
}

#[tokio::test]
async fn leftovers_of_a_killed_build_are_cleaned_up_and_live_ones_kept() {
    let Some(fx) = Fixture::new("patch_cleanup", BASE).await else {
        return;
    };
    // A pid that has ended: a finished child's.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = isobench::state::lock::hostname();
    let suffix = common::docker_env::unique_suffix();
    let create = |owner: String, name: String| {
        let docker = fx.docker().clone();
        async move {
            let body = bollard::models::ContainerCreateBody {
                image: Some(BASE.to_string()),
                labels: Some(std::collections::HashMap::from([
                    ("isobench.patch.helper".to_string(), "true".to_string()),
                    ("isobench.patch.owner".to_string(), owner),
                ])),
                ..Default::default()
            };
            let options = bollard::query_parameters::CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            };
            docker
                .create_container(Some(options), body)
                .await
                .unwrap()
                .id
        }
    };
    let dead_name = format!("isobench-test-helper-dead-{suffix}");
    let live_name = format!("isobench-test-helper-live-{suffix}");
    create(format!("{host}:{dead}"), dead_name.clone()).await;
    let live = create(format!("{host}:{}", std::process::id()), live_name.clone()).await;
    let cache = fx.dir.path().join("state/patched");
    std::fs::create_dir_all(cache.join(format!("work/abc-{dead}"))).unwrap();
    std::fs::create_dir_all(cache.join(format!("work/def-{}", std::process::id()))).unwrap();

    let removed = isobench::exec::patch::cleanup_leftovers(&fx.runtime, &cache)
        .await
        .unwrap();
    assert!(removed.contains(&format!("/{dead_name}")), "{removed:?}");
    assert!(
        !removed.iter().any(|r| r.contains(&live_name)),
        "{removed:?}"
    );
    assert!(
        patch_images::containers_named(fx.docker(), &dead_name)
            .await
            .is_empty()
    );
    assert_eq!(
        patch_images::containers_named(fx.docker(), &live_name)
            .await
            .len(),
        1
    );
    assert!(!cache.join(format!("work/abc-{dead}")).exists());
    assert!(
        cache
            .join(format!("work/def-{}", std::process::id()))
            .exists()
    );
    let options = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    fx.docker()
        .remove_container(&live, Some(options))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_patch_with_nothing_for_an_installed_package_is_the_base_plus_labels() {
    let Some(fx) = Fixture::new("patch_tests_only", BASE).await else {
        return;
    };
    let outcome = case_nothing_for_an_installed_package(&fx).await;
    let (reference, _) = image(&outcome);
    let layers = |i: bollard::models::ImageInspect| i.root_fs.unwrap().layers.unwrap();
    assert_eq!(
        layers(fx.docker().inspect_image(&reference).await.unwrap()),
        layers(fx.docker().inspect_image(BASE).await.unwrap()),
        "no files, no new layer"
    );
}

/// Issue 17: the hostile corpus (`tests/fuzz_corpus/patch`) through the Docker runtime. Its
/// paths lead from the scratch directory (cache at `<tmp>/cache`) to a victim on this host,
/// and from the image's target to a file the image has (`/opt/venv/.../vllm/sim.toml`): the
/// pre-image extraction used to write the image's copy over the host's file. Every patch is
/// refused before the engine is asked for anything, nothing on the host changes, and no
/// image is built.
#[tokio::test]
async fn the_hostile_corpus_changes_nothing_on_the_host() {
    let Some(fx) = Fixture::new("patch_hostile", BASE).await else {
        return;
    };
    let tmp = fx.dir.path();
    let victim = plant_victim(tmp);
    let before = snapshot(&tmp.join("venv"));
    for (name, text) in hostile_corpus(&victim) {
        let spec = fx.spec(&name, &text);
        let failure = build_patched(
            &fx.runtime,
            &spec,
            &fx.base,
            &ServerSource::Image {
                reference: fx.reference.clone(),
            },
            &tmp.join("cache"),
            &fx.log(&name),
        )
        .await
        .unwrap_err();
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
        assert!(!fx.image_exists(&fx.tag(&spec)).await, "{name}");
        fx.assert_no_helpers(&spec).await;
    }
    assert_eq!(snapshot(&tmp.join("venv")), before);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), BASE_SIM_TOML);
}

/// A base image whose package holds `vllm/shared -> /elsewhere`: a patch to
/// `vllm/shared/x.txt` would be COPYed through the link into `/elsewhere` of the derived
/// image. It is refused naming the link, and no image is built.
#[tokio::test]
async fn a_path_through_a_link_in_the_image_is_refused() {
    let Some(fx) = Fixture::new("patch_image_link", BASE).await else {
        return;
    };
    // The linked base: BASE plus the link and its target, from a context holding a symlink.
    let linked = "isobench-test/patch-base:linked";
    let mut builder = tar::Builder::new(Vec::new());
    let dockerfile = format!("FROM {BASE}\nCOPY site/ {SITE}/\nCOPY elsewhere/ /elsewhere/\n");
    for (name, bytes) in [
        ("Dockerfile", dockerfile.as_bytes()),
        ("elsewhere/x.txt", b"ORIGINAL\n".as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes).unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, "site/vllm/shared", "/elsewhere")
        .unwrap();
    let context = builder.into_inner().unwrap();
    let options = bollard::query_parameters::BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(linked.to_string()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut stream = fx.docker().build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(event) = futures_util::StreamExt::next(&mut stream).await {
        let info = event.unwrap();
        assert!(info.error.is_none(), "{:?}", info.error);
    }
    let base = fx.runtime.ensure_image(linked, |_| {}).await.unwrap();
    let patch = git_diff(
        &[("vllm/shared/x.txt", "ORIGINAL\n")],
        &[("vllm/shared/x.txt", Some("AGENT\n"))],
    );
    let spec = patch_spec(
        &fx.dir.path().join("patches"),
        "linked",
        &patch,
        ArmSource::Image {
            reference: linked.to_string(),
        },
    );
    let failure = build_patched(
        &fx.runtime,
        &spec,
        &base,
        &ServerSource::Image {
            reference: linked.to_string(),
        },
        &fx.dir.path().join("state/patched"),
        &fx.log("linked"),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.class, FailureClass::PatchFailed, "{failure}");
    assert!(
        failure
            .message
            .contains("`vllm/shared/x.txt` goes through the symbolic link `vllm/shared`"),
        "{}",
        failure.message
    );
    let tag = derived_image_tag(linked, &base.id, &spec);
    assert!(!fx.image_exists(&tag).await, "no image is built");
    let file = read_image_file(fx.docker(), linked, "/elsewhere/x.txt").await;
    assert_eq!(file.unwrap().bytes, b"ORIGINAL\n");
}
