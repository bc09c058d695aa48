//! Agent arms end to end through `isobench apply` on the real Docker Engine: the base image's
//! server reads its latency model from a file; one agent's patch makes it ~2× faster, another's
//! changes nothing measurable, a third's does not apply, a fourth touches CUDA sources.
mod apply_support;
mod common;
#[path = "common/patch_fixtures.rs"]
mod patch_fixtures;
#[path = "common/patch_images.rs"]
mod patch_images;

use apply_support::*;
use common::docker_env::{CampaignGuard, containers_of};
use patch_fixtures::{BASE_SIM_TOML, FASTER_SIM_TOML, git_diff};
use patch_images::{BASE, SITE, docker_or_skip};

const COMMIT: &str = "abcdef0123456789abcdef0123456789abcdef01";

fn manifest(campaign: &str) -> String {
    format!(
        r#"version = 1
name = "{campaign}"
repeats = 2

[[arms]]
name = "baseline"
image = "{BASE}"

[[arms]]
name = "agent-claude"
base = "baseline"
patch = "patches/claude/{{{{ commit.short }}}}.diff"

[[arms]]
name = "agent-codex"
base = "baseline"
patch = "patches/codex/{{{{ commit.short }}}}.diff"

[[arms]]
name = "agent-broken"
base = "baseline"
patch = "patches/broken/{{{{ commit.short }}}}.diff"

[[arms]]
name = "agent-cuda"
base = "baseline"
patch = "patches/cuda/{{{{ commit.short }}}}.diff"

[models.sim]
hf = "isobench/sim"
served_name = "sim"

[server]
runtime = "docker"
command = "/isobench sim --config {SITE}/vllm/sim.toml --host 0.0.0.0 --port {{{{ port }}}} --model sim"
gpus = 1
ready = {{ path = "/health", timeout = "20s", interval = "100ms" }}

[load]
dataset = {{ input_len = 32, output_len = 32 }}
num_prompts = 16
concurrency = 4
warmup = 2

[resources]
gpus = [0, 1]
gpu_mode = "env"

[[commits]]
human = "{COMMIT}"
parent = "0123456789abcdef0123456789abcdef01234567"
model = "sim"
"#
    )
}

fn write_patch(dir: &std::path::Path, agent: &str, text: &str) {
    let path = dir
        .join("patches")
        .join(agent)
        .join(format!("{}.diff", &COMMIT[..8]));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_become_derived_images_built_once_and_measured() {
    let Some(docker) = docker_or_skip("patch apply").await else {
        return;
    };
    let guard = CampaignGuard::new("patch-apply");
    let dir = tempfile::tempdir().unwrap();
    let sim = "vllm/sim.toml";
    // Claude halves the latency model; Codex only edits a comment; the broken patch expects a
    // line the file does not have; the CUDA one touches a kernel source.
    write_patch(
        dir.path(),
        "claude",
        &git_diff(&[(sim, BASE_SIM_TOML)], &[(sim, Some(FASTER_SIM_TOML))]),
    );
    write_patch(
        dir.path(),
        "codex",
        &git_diff(
            &[(sim, BASE_SIM_TOML)],
            &[(
                sim,
                Some(&BASE_SIM_TOML.replace("stands in for", "a stand-in for")),
            )],
        ),
    );
    let wrong_base = BASE_SIM_TOML.replace("itl_ms = 8.0", "itl_ms = 9.0");
    write_patch(
        dir.path(),
        "broken",
        &git_diff(
            &[(sim, &wrong_base)],
            &[(
                sim,
                Some(&wrong_base.replace("ttft_ms = 40.0", "ttft_ms = 1.0")),
            )],
        ),
    );
    write_patch(
        dir.path(),
        "cuda",
        &git_diff(
            &[("csrc/attention.cu", "// kernel\n")],
            &[("csrc/attention.cu", Some("// faster kernel\n"))],
        ),
    );
    let path = dir.path().join("m.toml");
    std::fs::write(&path, manifest(&guard.campaign)).unwrap();
    let p = path.to_str().unwrap().to_string();

    let p1 = p.clone();
    let out = tokio::task::spawn_blocking(move || isobench(&["apply", "--plain", &p1]))
        .await
        .unwrap();
    let text = out.text();
    assert_eq!(
        out.status.code(),
        Some(1),
        "two agents fail, the rest completes:\n{text}"
    );
    let state = dir.path().join(".isobench");
    let j = Journal::read(&state);
    let patches = j.latest_with_prefix("patch[");
    let patch =
        |agent: &str| patches[&format!("patch[commit={},arm={agent}]", &COMMIT[..8])].clone();
    assert_eq!(patch("agent-claude")["event"], "done");
    assert_eq!(patch("agent-claude")["info"]["reused"], false);
    assert_eq!(patch("agent-codex")["event"], "done");
    assert_eq!(patch("agent-broken")["failure"]["class"], "patch_failed");
    assert!(
        patch("agent-broken")["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("vllm/sim.toml"),
        "{}",
        patch("agent-broken")
    );
    assert_eq!(patch("agent-cuda")["failure"]["class"], "needs_rebuild");
    // Nothing was measured for the failed agents: their measurements carry the patch failure.
    let m = j.latest_with_prefix("measure[");
    let tput = |arm: &str| -> Vec<f64> {
        m.iter()
            .filter(|(a, _)| a.contains(&format!("arm={arm},")))
            .map(|(_, e)| e["info"]["output_throughput"].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    for arm in ["agent-broken", "agent-cuda"] {
        for (a, e) in m.iter().filter(|(a, _)| a.contains(&format!("arm={arm},"))) {
            assert_eq!(e["event"], "failed", "{a}");
            assert!(e["outputs"].is_null(), "{a} has results");
        }
    }
    // Claude's image is ~2× faster (half the latency model); Codex's is the same speed.
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (base, claude, codex) = (
        mean(tput("baseline")),
        mean(tput("agent-claude")),
        mean(tput("agent-codex")),
    );
    assert!(
        (1.6..2.4).contains(&(claude / base)),
        "claude {claude:.0} vs baseline {base:.0}"
    );
    assert!(
        (0.85..1.15).contains(&(codex / base)),
        "codex {codex:.0} vs baseline {base:.0}"
    );
    // Each derived image was built once, labelled with the patch hash, and runs as the arm's server.
    let starts: Vec<String> = j
        .latest_with_prefix("start[")
        .iter()
        .filter(|(a, _)| a.contains("arm=agent-claude"))
        .map(|(_, e)| e["info"]["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[0], starts[1],
        "both trials ran the same derived image"
    );
    assert!(
        containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty()
    );

    // Measure again: the derived images are reused, not rebuilt.
    let out = tokio::task::spawn_blocking(move || {
        isobench(&["apply", "--plain", "--rerun", "measure*agent-c*", &p])
    })
    .await
    .unwrap();
    let text = out.text();
    assert!(
        text.contains("patch 0abcdef0 agent-claude: reused")
            || text.contains("agent-claude: reused"),
        "{text}"
    );
    let j2 = Journal::read(&state);
    let again: Vec<String> = j2
        .latest_with_prefix("start[")
        .iter()
        .filter(|(a, _)| a.contains("arm=agent-claude"))
        .map(|(_, e)| e["info"]["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(again, starts, "the same image id was measured again");
    assert!(
        containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty()
    );
}
