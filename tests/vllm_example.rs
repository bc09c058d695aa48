//! `examples/vllm-cpu.toml` and its agent patch: the manifest resolves to what the real vLLM
//! campaign needs, and the patch applies to the installed vllm-cpu 0.31.0 it was written for.
//! The campaign itself runs in `scripts/ci-vllm-e2e.sh`.

use isobench::manifest;
use isobench::manifest::model::{ArmSource, PORT_PLACEHOLDER};
use isobench::manifest::types::RuntimeKind;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> PathBuf {
    repo().join("examples/vllm-cpu.toml")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("ISOBENCH_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/isobench"))
}

fn root(source: &ArmSource) -> &Path {
    match source.root() {
        ArmSource::Path { root } => root,
        other => panic!("expected an installation path, got {other:?}"),
    }
}

fn flag_value<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let at = argv
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing in {argv:?}"));
    &argv[at + 1]
}

/// In CI (`CI=true`) a missing set-up fails a test instead of skipping it, as for Docker.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[test]
fn example_resolves_to_two_releases_and_a_patched_baseline() {
    // Validation checks that the tokenizer exists: it is built by scripts/setup-vllm-cpu.sh,
    // which CI runs first (a missing model fails there).
    if !in_ci() && !cache_dir().join("models/tiny-llama").exists() {
        eprintln!("SKIPPED: the tiny model is not built (run scripts/setup-vllm-cpu.sh)");
        return;
    }
    let campaign =
        manifest::load_file(&example()).unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    assert_eq!(campaign.commits.len(), 1);
    let commit = &campaign.commits[0];
    assert!(commit.repeats >= 3, "repeats = {}", commit.repeats);
    assert_eq!(commit.server.runtime, RuntimeKind::Process);
    assert_eq!(commit.server.gpus, 0);

    let names: Vec<&str> = commit.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["baseline", "human", "agent"]);
    let cache = cache_dir();
    let [baseline, human, agent] = &commit.arms[..] else {
        unreachable!()
    };
    assert_eq!(
        root(&baseline.source),
        cache.join("vllm-cpu/venv-0.31.0"),
        "baseline = the 0.31.0 venv"
    );
    assert_eq!(root(&human.source), cache.join("vllm-cpu/venv-0.32.0"));
    let ArmSource::Patched(patch) = &agent.source else {
        panic!("agent arm is not a patch: {:?}", agent.source)
    };
    assert_eq!(patch.base_arm, "baseline");
    assert_eq!(root(&agent.source), cache.join("vllm-cpu/venv-0.31.0"));
    assert_eq!(
        patch.patch_path,
        repo().join("examples/patches/vllm-cpu/cpu-shm-reader-sleep.diff")
    );
    assert_eq!(patch.fuzz, 0, "the patch must apply strictly");

    for arm in &commit.arms {
        let venv = root(&arm.source);
        assert_eq!(
            Path::new(&arm.argv[0]),
            venv.join("bin/python"),
            "{}",
            arm.name
        );
        assert_eq!(
            &arm.argv[1..3],
            ["-m", "vllm.entrypoints.openai.api_server"]
        );
        assert_eq!(
            Path::new(flag_value(&arm.argv, "--model")),
            cache.join("models/tiny-llama")
        );
        assert_eq!(flag_value(&arm.argv, "--port"), PORT_PLACEHOLDER);
        assert_eq!(flag_value(&arm.argv, "--served-model-name"), "tiny");
        assert_eq!(flag_value(&arm.argv, "--dtype"), "float32");
        assert_eq!(
            arm.env.get("VLLM_CPU_KVCACHE_SPACE").map(String::as_str),
            Some("1")
        );
        assert_eq!(arm.env.get("HF_HUB_OFFLINE").map(String::as_str), Some("1"));
    }
    // Only the installation differs between arms.
    let without_python = |argv: &[String]| argv[1..].to_vec();
    assert_eq!(without_python(&baseline.argv), without_python(&human.argv));
    assert_eq!(without_python(&baseline.argv), without_python(&agent.argv));

    assert_eq!(commit.model.served_name, "tiny");
    let load = &commit.load;
    assert_eq!(
        (
            load.input_len,
            load.output_len,
            load.num_prompts,
            load.warmup
        ),
        (128, 32, 50, 10)
    );
    assert_eq!(load.points.len(), 1);
    assert_eq!(load.points[0].concurrency, 8);
    assert!(load.points[0].rate.as_f64().is_infinite());
    assert!(load.ignore_eos);
    assert_eq!(load.temperature, 0.0);
    assert_eq!(load.endpoint, "/v1/chat/completions");
}

/// `{{ env("ISOBENCH_CACHE_DIR", ...) }}` moves every installation path, seen through the CLI.
#[test]
fn plan_takes_the_cache_directory_from_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    // The tokenizer must exist for the manifest to validate; the model path is only passed on.
    let model = cache.path().join("models/tiny-llama");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["plan", "--detailed-exitcode", "--format", "json", "--state"])
        .arg(state.path())
        .arg(example())
        .env("ISOBENCH_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "plan exits 2 when there is work to do; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let addresses: Vec<&str> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    for venv in ["venv-0.31.0", "venv-0.32.0"] {
        let want = format!(
            "pull[path={}]",
            cache.path().join("vllm-cpu").join(venv).display()
        );
        assert!(
            addresses.contains(&want.as_str()),
            "{want} not in {addresses:?}"
        );
    }
    // 3 arms x 3 trials, one measure each; one patch; one compare.
    let count = |prefix: &str| addresses.iter().filter(|a| a.starts_with(prefix)).count();
    assert_eq!(
        (count("measure["), count("patch["), count("compare[")),
        (9, 1, 1)
    );
}

/// The patch is a unified diff relative to the package's parent directory that `git apply`
/// takes strictly, and the patched module still compiles. Needs the 0.31.0 venv from
/// `scripts/setup-vllm-cpu.sh`; skipped (with a line saying so) without it.
#[test]
fn agent_patch_applies_to_installed_vllm_cpu_0_31_0() {
    let venv = cache_dir().join("vllm-cpu/venv-0.31.0");
    let python = venv.join("bin/python");
    let relative = "vllm/distributed/device_communicators/shm_broadcast.py";
    let installed = venv.join("lib/python3.11/site-packages").join(relative);
    if !installed.exists() {
        // scripts/test.sh (CI) sets vLLM up first: there a missing venv is a failure.
        assert!(
            !in_ci(),
            "{} not found (CI=true: scripts/setup-vllm-cpu.sh must have run)",
            installed.display()
        );
        eprintln!(
            "SKIPPED: {} not found (run scripts/setup-vllm-cpu.sh)",
            installed.display()
        );
        return;
    }
    let patch = repo().join("examples/patches/vllm-cpu/cpu-shm-reader-sleep.diff");
    let copy = tempfile::tempdir().unwrap();
    let target = copy.path().join(relative);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&installed, &target).unwrap();

    let applied = Command::new("git")
        .arg("apply")
        .arg(&patch)
        .current_dir(copy.path())
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "git apply failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let patched = std::fs::read_to_string(&target).unwrap();
    assert_ne!(patched, std::fs::read_to_string(&installed).unwrap());
    assert!(
        patched.contains(
            "busy_loop_sleep_s=CPU_BUSY_LOOP_SLEEP_S if current_platform.is_cpu() else 0"
        )
    );

    let compiled = Command::new(&python)
        .args(["-m", "py_compile"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "patched module does not compile: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
}
