//! Shared by the `patch_*` tests: real `git diff` patches, a vLLM-like installed package whose
//! `vllm/sim.toml` is the `isobench sim` latency model, patch specs, and a short measurement
//! with the load generator library.
//!
//! Include with `#[path = "common/patch_fixtures.rs"] mod patch_fixtures;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use isobench::loadgen::{self, ClientConfig, DatasetConfig, LoadClient, RunConfig};
use isobench::manifest::model::{ArmSource, PatchSpec};

/// The latency model of the base: 40 ms to the first token, 8 ms between tokens.
pub const BASE_SIM_TOML: &str = "\
# isobench sim latency model (stands in for vLLM's speed)
host = \"0.0.0.0\"
port = 8000
model = \"sim\"
ttft_ms = 40.0
itl_ms = 8.0
";

/// The agent's "optimisation": half the TTFT and half the inter-token latency.
pub const FASTER_SIM_TOML: &str = "\
# isobench sim latency model (stands in for vLLM's speed)
host = \"0.0.0.0\"
port = 8000
model = \"sim\"
ttft_ms = 20.0
itl_ms = 4.0
";

/// Output tokens per request in [`measure`].
pub const OUTPUT_TOKENS: u32 = 32;

/// Expected end-to-end latency of one request, in ms, for a sim config.
pub fn e2e_ms(ttft_ms: f64, itl_ms: f64) -> f64 {
    ttft_ms + (OUTPUT_TOKENS - 1) as f64 * itl_ms
}

/// 40 numbered lines, so hunks have distinct context.
pub fn engine_py() -> String {
    (1..=40).map(|i| format!("line_{i} = {i}\n")).collect()
}

/// `engine_py` with lines `n` replaced by `new`.
pub fn engine_py_with(changes: &[(usize, &str)]) -> String {
    (1..=40)
        .map(|i| match changes.iter().find(|(n, _)| *n == i) {
            Some((_, text)) => format!("{text}\n"),
            None => format!("line_{i} = {i}\n"),
        })
        .collect()
}

/// The files of the installed package, relative to site-packages.
pub fn package_files() -> Vec<(&'static str, String)> {
    vec![
        ("vllm/__init__.py", "VALUE = 'base'\n".to_string()),
        ("vllm/engine.py", engine_py()),
        ("vllm/sim.toml", BASE_SIM_TOML.to_string()),
        ("vllm/gone.py", "GONE = True\n".to_string()),
        (
            "vllm/__pycache__/__init__.cpython-311.pyc",
            "stale bytecode".to_string(),
        ),
        (
            "vllm/__pycache__/engine.cpython-311.pyc",
            "stale bytecode".to_string(),
        ),
        (
            "vllm-0.0.0.dist-info/METADATA",
            "Name: vllm\nVersion: 0.0.0\n".to_string(),
        ),
        ("torch/__init__.py", "TORCH = 1\n".to_string()),
    ]
}

/// Real `git diff` output (with `a/` and `b/` prefixes, new files included) between two trees
/// of a repository; `None` content deletes a file.
pub fn git_diff(before: &[(&str, &str)], after: &[(&str, Option<&str>)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q"]);
    for (path, text) in before {
        write(&dir.path().join(path), text);
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "base"]);
    for (path, text) in after {
        match text {
            Some(text) => write(&dir.path().join(path), text),
            None => std::fs::remove_file(dir.path().join(path)).unwrap(),
        }
    }
    git(&["add", "-A"]);
    git(&["diff", "--cached"])
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes `text` as a patch file and returns the arm's patch spec over `base`.
pub fn patch_spec(dir: &Path, name: &str, text: &str, base: ArmSource) -> PatchSpec {
    let path = dir.join(format!("{name}.diff"));
    write(&path, text);
    PatchSpec {
        base_arm: "baseline".into(),
        base,
        patch_hash: isobench::util::hash::file_hash(&path).unwrap(),
        patch_path: path,
        target: None,
        fuzz: 0,
        rebuild: None,
    }
}

/// The patch that makes the sim twice as fast, as an agent would write it (from the repo root).
pub fn faster_patch() -> String {
    git_diff(
        &[("vllm/sim.toml", BASE_SIM_TOML)],
        &[("vllm/sim.toml", Some(FASTER_SIM_TOML))],
    )
}

/// A short measurement: a few warm-up requests, then 48 requests at concurrency 8 with
/// [`OUTPUT_TOKENS`] tokens each.
pub async fn measure(base_url: &str) -> loadgen::BenchResult {
    let client = LoadClient::new(ClientConfig {
        base_url: base_url.to_string(),
        pool_size: 8,
        request_timeout: Duration::from_secs(30),
    })
    .unwrap();
    let dataset = loadgen::build_dataset(
        &DatasetConfig {
            input_len: 32,
            output_len: OUTPUT_TOKENS,
            num_prompts: 48,
            ..DatasetConfig::default()
        },
        None,
    )
    .unwrap();
    let run = RunConfig {
        model: "sim".into(),
        max_concurrency: Some(8),
        run_timeout: Duration::from_secs(60),
        ..RunConfig::default()
    };
    client.warmup(&dataset, 4, &run).await.unwrap();
    client.run(&dataset, &run, None).await.unwrap()
}

/// Starts a server, measures it once it is ready, and stops it (also when it never got ready).
pub async fn serve_and_measure(
    runtime: &isobench::runtime::Runtime,
    spec: &isobench::runtime::ServerSpec,
    ready_timeout: Duration,
    poll: Duration,
) -> loadgen::BenchResult {
    let handle = runtime.start(spec).await.unwrap();
    let ready = runtime
        .wait_ready(&handle, "/health", ready_timeout, poll)
        .await;
    let result = match ready {
        Ok(_) => Some(measure(&handle.base_url).await),
        Err(_) => None,
    };
    runtime.stop(&handle, Duration::from_secs(5)).await.unwrap();
    result.expect("the server became ready")
}

/// Every file below `dir` with its content hash, inode and mtime: what "untouched" means.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, String, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let meta = entry.metadata().unwrap();
            let hash = isobench::util::hash::file_hash(entry.path()).unwrap();
            out.push((
                entry.path().to_path_buf(),
                hash.to_string(),
                meta.ino(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            ));
        }
    }
    out
}

/// The agent (the faster sim model) beats the base (the base model) by the configured amount:
/// output throughput about `e2e(base) / e2e(agent)` = 2×, and each server's mean end-to-end
/// latency what its model says. (TPOT is not checked: on a loaded machine a late token is sent
/// together with the next, which moves time from TPOT into TTFT; the end-to-end time stays.)
pub fn assert_faster_by_the_configured_amount(
    base: &loadgen::BenchResult,
    agent: &loadgen::BenchResult,
) {
    assert_eq!(base.metrics.failed + agent.metrics.failed, 0);
    let (base_e2e, agent_e2e) = (e2e_ms(40.0, 8.0), e2e_ms(20.0, 4.0));
    let expected = base_e2e / agent_e2e; // 2.0
    let speedup = agent.metrics.output_throughput / base.metrics.output_throughput;
    eprintln!(
        "measured: base {:.0} tok/s (E2E {:.1} ms), agent {:.0} tok/s (E2E {:.1} ms): speedup {speedup:.2}, expected {expected:.2}",
        base.metrics.output_throughput,
        base.metrics.e2el.mean,
        agent.metrics.output_throughput,
        agent.metrics.e2el.mean
    );
    // Load on the machine delays both servers alike, which pulls the ratio a little towards 1;
    // an unapplied patch would give 1.
    assert!(
        (expected * 0.8..=expected * 1.1).contains(&speedup),
        "speedup {speedup:.2}, expected about {expected:.2}"
    );
    for (who, measured, configured) in [
        ("base", base.metrics.e2el.mean, base_e2e),
        ("agent", agent.metrics.e2el.mean, agent_e2e),
    ] {
        // Never faster than its model; slower only by scheduling delays.
        assert!(
            (configured * 0.97..=configured * 1.5).contains(&measured),
            "{who}: mean E2E {measured:.1} ms, its model says {configured:.1} ms"
        );
    }
}

/// Where the hostile corpus (`tests/fuzz_corpus/patch/*.diff`) aims, relative to a test's temp
/// directory: its paths climb from `<tmp>/<x>/lib/python3.11/site-packages/vllm` (the process
/// fixture's target, and the scratch `pre/vllm` of a cache at `<tmp>/cache`) up to `<tmp>`.
pub const VICTIM_REL: &str = "venv/lib/python3.11/site-packages/vllm/sim.toml";

/// The hostile patches, `(file name, text)`, sorted, with `@VICTIM@` replaced by `victim` (an
/// absolute path).
pub fn hostile_corpus(victim: &Path) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/patch");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "diff"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                text.replace("@VICTIM@", &victim.display().to_string()),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "the corpus is in {}", dir.display());
    out
}

/// A victim directory `<tmp>/venv` outside every target, with the file the corpus aims at.
pub fn plant_victim(tmp: &Path) -> PathBuf {
    let victim = tmp.join(VICTIM_REL);
    write(&victim, BASE_SIM_TOML);
    write(&tmp.join("venv/victim.txt"), "VICTIM\n");
    victim
}
