//! Makespan of 12 simulated servers (Docker images from the local registry) on 4 declared GPUs:
//! isobench's scheduler vs one server after another (as the seed ran them) vs the ideal bound
//! (total server-seconds / 4 + the longest pull).
//!
//!     scripts/ci-setup.sh && cargo bench --bench makespan
//!
//! Each session measures 40 requests of 64 tokens at concurrency 8 from a sim whose tokens are
//! 15 ms apart (~1.3 s of measurement plus start, readiness, warm-up and stop).
#[path = "../tests/apply_support/mod.rs"]
mod apply_support;
#[path = "../tests/common/mod.rs"]
mod common;

use apply_support::{Journal, OutputText, isobench};
use common::docker_env::{self, Sim};
use std::time::Instant;

const ITL_IMAGE: Sim = Sim::Slow;

fn manifest(campaign: &str, image: &str) -> String {
    let mut m = format!(
        r#"version = 1
name = "{campaign}"
repeats = 2
[models.sim]
hf = "isobench/sim"
served_name = "sim"
[server]
runtime = "docker"
command = "/isobench sim --config /etc/isobench/sim.toml --host 0.0.0.0 --port {{{{ port }}}} --model sim --itl-ms 15"
gpus = 1
ready = {{ path = "/health", timeout = "30s", interval = "100ms" }}
[load]
dataset = {{ input_len = 32, output_len = 64 }}
num_prompts = 40
concurrency = 8
warmup = 2
[resources]
gpus = [0, 1, 2, 3]
gpu_mode = "env"
[[arms]]
name = "baseline"
image = "{image}"
[[arms]]
name = "human"
image = "{image}"
[[arms]]
name = "agent"
role = "agent"
image = "{image}"
"#
    );
    for c in 0..2 {
        m.push_str(&format!(
            "[[commits]]\nhuman = \"{:040x}\"\nparent = \"{:040x}\"\nmodel = \"sim\"\n",
            0xc000 + c,
            0xd000 + c
        ));
    }
    m
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(docker) = rt.block_on(docker_env::docker_or_skip("makespan bench")) else {
        return;
    };
    let image = ITL_IMAGE.reference();
    let mut results = Vec::new();
    for (label, extra) in [
        ("isobench (4 GPUs)", vec![]),
        ("one after another", vec!["--max-parallel", "1"]),
    ] {
        rt.block_on(docker_env::remove_local_image(docker.client(), &image));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            manifest(&format!("makespan-{}", std::process::id()), &image),
        )
        .unwrap();
        let mut args = vec!["apply", "--plain", "--no-report", path.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let t0 = Instant::now();
        let out = isobench(&args);
        let wall = t0.elapsed().as_secs_f64();
        assert_eq!(out.status.code(), Some(0), "{}", out.text());
        let journal = Journal::read(&dir.path().join(".isobench"));
        let sessions = journal.session_intervals();
        assert_eq!(sessions.len(), 12);
        let server_seconds: f64 = sessions.iter().map(|(a, b)| b - a).sum();
        let pull = pull_seconds(&journal);
        results.push((
            label,
            wall,
            server_seconds,
            pull,
            apply_support::max_overlap(&sessions),
        ));
    }
    println!("makespan: 12 servers (sim image, ~1.3 s of measurement each) on 4 declared GPUs");
    for (label, wall, server_s, pull, overlap) in &results {
        println!(
            "  {label:<20} makespan {wall:6.1} s   server-seconds {server_s:5.1}   pull {pull:4.1} s   max parallel {overlap}"
        );
    }
    let (_, _, server_s, pull, _) = results[0];
    println!(
        "  {:<20} makespan {:6.1} s   (server-seconds / 4 + longest pull)",
        "ideal bound",
        server_s / 4.0 + pull
    );
}

fn pull_seconds(j: &Journal) -> f64 {
    let t = |e: &serde_json::Value| {
        humantime::parse_rfc3339(e["t"].as_str().unwrap())
            .unwrap()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let started = j
        .entries
        .iter()
        .find(|e| e["event"] == "started" && e["addr"].as_str().unwrap().starts_with("pull["));
    let done = j
        .entries
        .iter()
        .find(|e| e["event"] == "done" && e["addr"].as_str().unwrap().starts_with("pull["));
    match (started, done) {
        (Some(a), Some(b)) => t(b) - t(a),
        _ => 0.0,
    }
}
