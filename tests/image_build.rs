//! Images built from commits (`[images.build]`) on the real Docker Engine, pushed to the real
//! local registry: a git repository whose commits change a sim server's latency file, a
//! campaign with no prebuilt image, builds keyed by content, a failing build, `kill -9` in the
//! middle of a build.

mod apply_support;
mod common;
use apply_support::*;
use common::docker_env::{self, CampaignGuard};
use common::git_repo::git;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SLOW: &str = "ttft_ms = 40.0\nitl_ms = 8.0\n";
const FAST: &str = "ttft_ms = 10.0\nitl_ms = 2.0\n";

/// Commits `sim.toml` (or deletes it, with `None`) and returns the new commit's hash.
fn commit_sim(repo: &Path, sim: Option<&str>, message: &str) -> String {
    let file = repo.join("sim.toml");
    match sim {
        Some(text) => {
            std::fs::write(&file, format!("host = \"0.0.0.0\"\nport = 8000\n{text}")).unwrap();
            git(repo, &["add", "sim.toml"]);
        }
        None => {
            git(repo, &["rm", "-q", "sim.toml"]);
        }
    }
    std::fs::write(repo.join("README"), message).unwrap();
    git(repo, &["add", "README"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// A base image with the isobench binary (for the sim) and a shell with `sleep` for `RUN`
/// steps, built locally under a tag of its own.
async fn build_base(docker: &bollard::Docker, tag: &str) {
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![(
        "Dockerfile".into(),
        b"FROM scratch\nCOPY rootfs/ /\nLABEL isobench.test=build-base\n".to_vec(),
        0o644,
    )];
    let mut host_files = docker_env::rootfs_files().unwrap();
    for tool in ["/bin/sh", "/bin/sleep"] {
        let real = std::fs::canonicalize(tool).unwrap();
        host_files.push((format!("rootfs{tool}"), real.display().to_string()));
        let ldd = Command::new("ldd").arg(&real).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let target = line.split("=>").last().unwrap_or(line).trim();
            let path = target.split(" (").next().unwrap_or("").trim();
            if path.starts_with('/') {
                host_files.push((format!("rootfs{path}"), path.to_string()));
            }
        }
    }
    host_files.sort();
    host_files.dedup_by(|a, b| a.0 == b.0);
    for (name, host) in host_files {
        files.push((name, std::fs::read(&host).unwrap(), 0o755));
    }
    docker_env::build_tagged(docker, tag, &files).await;
}

const DOCKERFILE: &str =
    "ARG BASE\nFROM ${BASE}\nARG SLEEP=0\nCOPY sim.toml /etc/isobench/sim.toml\nRUN sleep $SLEEP\n";

struct Fixture {
    dir: tempfile::TempDir,
    repo_name: String,
    base: String,
}

impl Fixture {
    fn manifest_path(&self) -> String {
        self.dir.path().join("m.toml").display().to_string()
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join(".isobench")
    }

    /// The campaign: every arm's image built from its commit; baseline images with
    /// `Dockerfile.base`, human images with `Dockerfile.human`.
    fn write_manifest(&self, campaign: &str, commits: &[(&str, &str)], sleep: &str) {
        let mut m = format!(
            r#"version = 1
name = "{campaign}"
repeats = 1

[images]
registry = "{registry}"
repo = "{repo}"

[images.build]
source = {{ repo = "src" }}
dockerfile = "{{{{ 'Dockerfile.human' if arm.role == 'human' else 'Dockerfile.base' }}}}"
args = {{ BASE = "{base}", SLEEP = "{sleep}" }}
push = true

{sim_server}

[load]
dataset = {{ input_len = 32, output_len = 16 }}
num_prompts = 16
concurrency = 4
warmup = 2
timeout = "60s"

[resources]
gpus = [0, 1]
gpu_mode = "env"
gpu_kind = "test-gpu"

[[arms]]
name = "baseline"
image = "{{{{ repo }}}}:{{{{ arm.name }}}}-{{{{ arm.commit[:12] }}}}"

[[arms]]
name = "human"
image = "{{{{ repo }}}}:{{{{ arm.name }}}}-{{{{ arm.commit[:12] }}}}"
"#,
            sim_server = docker_env::SIM_MODEL_AND_SERVER,
            registry = docker_env::registry(),
            repo = self.repo_name,
            base = self.base,
        );
        for (parent, human) in commits {
            m.push_str(&format!(
                "\n[[commits]]\nhuman = \"{human}\"\nparent = \"{parent}\"\nmodel = \"sim\"\n"
            ));
        }
        std::fs::write(self.manifest_path(), m).unwrap();
    }
}

async fn fixture(docker: &bollard::Docker, name: &str) -> Fixture {
    let suffix = docker_env::unique_suffix();
    let base = format!("isobench-test/build-base:{name}-{suffix}");
    build_base(docker, &base).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    for file in ["Dockerfile.base", "Dockerfile.human"] {
        std::fs::write(dir.path().join(file), DOCKERFILE).unwrap();
    }
    Fixture {
        dir,
        repo_name: format!("isobench-test/built-{name}-{suffix}"),
        base,
    }
}

/// Tags of `repository` in the local registry.
async fn registry_tags(repository: &str) -> Vec<String> {
    let url = format!(
        "http://{}/v2/{repository}/tags/list",
        docker_env::registry()
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = client.get(url).send().await.unwrap().text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut tags: Vec<String> = json["tags"]
        .as_array()
        .map(|t| t.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Journal entries of one commit's measures (by the commit's short hash).
fn measures_of(
    journal: &Journal,
    commit: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    journal.latest_with_prefix(&format!("measure[commit={}", &commit[..8]))
}

fn apply(path: &str) -> std::process::Output {
    isobench(&["apply", "--plain", path])
}

async fn remove_images(docker: &bollard::Docker, fx: &Fixture, tags: &[String]) {
    for tag in tags {
        let reference = format!("{}/{}:{tag}", docker_env::registry(), fx.repo_name);
        docker_env::remove_local_image(docker, &reference).await;
    }
    docker_env::remove_local_image(docker, &fx.base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_images_are_built_pushed_measured_cached_and_rebuilt_exactly_when_their_dockerfile_changes()
 {
    let Some(docker) = docker_env::docker_or_skip("image builds").await else {
        return;
    };
    let guard = CampaignGuard::new("build");
    let fx = fixture(docker.client(), "main").await;
    let src = fx.dir.path().join("src");
    let p = commit_sim(&src, Some(SLOW), "parent: slow");
    let h1 = commit_sim(&src, Some(FAST), "human 1: faster");
    let h2 = commit_sim(&src, Some(SLOW), "human 2: slower again");
    let path = fx.manifest_path();
    fx.write_manifest(&guard.campaign, &[(&p, &h1), (&h1, &h2)], "0");

    // 1. Nothing exists: plan says so, apply builds four images, pushes them, measures.
    let plan = isobench(&["plan", &path]);
    let plan_text = plan.text();
    assert_eq!(plan_text.matches("image missing").count(), 4, "{plan_text}");
    let out = apply(&path);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&fx.state());
    let builds = journal.latest_with_prefix("build[");
    assert_eq!(builds.len(), 4, "{builds:#?}");
    for e in builds.values() {
        assert_eq!(e["event"], "done", "{e}");
        assert_eq!(e["info"]["outcome"], "built", "{e}");
    }
    let pushes = journal.latest_with_prefix("push[");
    assert_eq!(pushes.len(), 4);
    assert!(pushes.values().all(|e| e["event"] == "done"), "{pushes:#?}");
    let tags = registry_tags(&fx.repo_name).await;
    let short = |c: &str| c[..12].to_string();
    let mut expected = vec![
        format!("baseline-{}", short(&p)),
        format!("baseline-{}", short(&h1)),
        format!("human-{}", short(&h1)),
        format!("human-{}", short(&h2)),
    ];
    expected.sort();
    assert_eq!(tags, expected);
    // The build log is kept in the attempt directory.
    let logs: Vec<_> = walkdir::WalkDir::new(fx.state().join("attempts"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "build.log")
        .collect();
    assert_eq!(logs.len(), 4);
    let log = std::fs::read_to_string(logs[0].path()).unwrap();
    assert!(log.contains("COPY sim.toml"), "{log}");

    // The verdicts follow the commits: human 1 made the server faster, human 2 slower.
    let c1 = measures_of(&journal, &h1);
    let c2 = measures_of(&journal, &h2);
    assert_eq!(c1.len() + c2.len(), 4);
    let (b1, h1_tput) = (
        mean_throughput(&c1, "baseline").0,
        mean_throughput(&c1, "human").0,
    );
    let (b2, h2_tput) = (
        mean_throughput(&c2, "baseline").0,
        mean_throughput(&c2, "human").0,
    );
    assert!(
        h1_tput > 1.5 * b1,
        "commit 1: human {h1_tput} vs baseline {b1}"
    );
    assert!(
        b2 > 1.5 * h2_tput,
        "commit 2: human {h2_tput} vs baseline {b2}"
    );
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty()
    );

    // 2. A second apply builds nothing and measures nothing.
    let before = Journal::read(&fx.state()).entries.len();
    let out = apply(&path);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let after = Journal::read(&fx.state());
    assert_eq!(after.entries.len(), before, "{}", out.text());

    // 3. Editing the human Dockerfile rebuilds exactly the two human images (and measures
    //    them again); the baseline images stay.
    std::fs::write(
        fx.dir.path().join("Dockerfile.human"),
        format!("{DOCKERFILE}LABEL edited=yes\n"),
    )
    .unwrap();
    let plan_text = isobench(&["plan", &path]).text();
    let changed = |step: &str| {
        plan_text
            .lines()
            .filter(|l| l.contains(step) && l.contains("Dockerfile changed"))
            .count()
    };
    assert_eq!(changed("build[image="), 2, "{plan_text}");
    assert_eq!(changed("push[image="), 2, "{plan_text}");
    let out = apply(&path);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&fx.state());
    assert_eq!(journal.count_event_prefix("done", "build[image="), 6);
    for (addr, e) in journal.latest_with_prefix("build[") {
        let attempt = e["attempt"].as_u64().unwrap();
        let human = addr.contains(":human-");
        assert_eq!(attempt, if human { 2 } else { 1 }, "{addr}: {e}");
    }
    let rerun: Vec<_> = journal
        .entries
        .iter()
        .skip(before)
        .filter(|e| e["event"] == "done" && e["addr"].as_str().unwrap().starts_with("measure["))
        .map(|e| e["addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rerun.len(), 2, "{rerun:?}");
    assert!(rerun.iter().all(|a| a.contains("arm=human")), "{rerun:?}");

    // 4. A commit whose build fails (its tree has no sim.toml): `build_failed` with the build's
    //    last lines; its baseline is still built and measured.
    let broken = commit_sim(&src, None, "human 3: deletes the sim config");
    fx.write_manifest(
        &guard.campaign,
        &[(&p, &h1), (&h1, &h2), (&h2, &broken)],
        "0",
    );
    let out = apply(&path);
    assert_ne!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&fx.state());
    let failed = journal.latest_with_prefix(&format!(
        "build[image={}/{}:human-{}",
        docker_env::registry(),
        fx.repo_name,
        short(&broken)
    ));
    let failed = failed
        .values()
        .next()
        .expect("the broken build is journaled");
    assert_eq!(failed["event"], "failed", "{failed}");
    assert_eq!(failed["failure"]["class"], "build_failed", "{failed}");
    let message = failed["failure"]["message"].as_str().unwrap();
    assert!(message.contains("sim.toml"), "{message}");
    assert!(
        failed["failure"]["log_path"]
            .as_str()
            .unwrap()
            .ends_with("build.log")
    );
    let c3 = measures_of(&journal, &broken);
    let baseline_done = c3
        .iter()
        .filter(|(a, e)| a.contains("arm=baseline") && e["event"] == "done")
        .count();
    assert_eq!(baseline_done, 1, "{c3:#?}");
    let human_failed: Vec<_> = c3
        .iter()
        .filter(|(a, _)| a.contains("arm=human"))
        .map(|(_, e)| e["failure"]["class"].clone())
        .collect();
    assert_eq!(
        human_failed,
        vec![serde_json::json!("build_failed")],
        "{c3:#?}"
    );
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty()
    );
    // The report says how every arm got its image: built ones with their build time, the
    // broken one first with its failure.
    let report = isobench(&["report", "--format", "json", &path]);
    let json: serde_json::Value =
        serde_json::from_slice(&report.stdout).unwrap_or_else(|e| panic!("{e}: {}", report.text()));
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 6, "{images:#?}");
    let row = |commit: &str, arm: &str| {
        images
            .iter()
            .find(|r| r["commit"] == commit[..8] && r["arm"] == arm)
            .unwrap_or_else(|| panic!("no image row for {commit} {arm}: {images:#?}"))
            .clone()
    };
    assert_eq!(row(&broken, "human")["status"], "failed");
    assert!(
        row(&broken, "human")["detail"]
            .as_str()
            .unwrap()
            .starts_with("build_failed: ")
    );
    assert_eq!(row(&broken, "baseline")["status"], "built");
    assert_eq!(
        row(&h1, "human")["image"],
        format!(
            "{}/{}:human-{}",
            docker_env::registry(),
            fx.repo_name,
            short(&h1)
        )
    );
    let markdown = isobench(&["report", "--format", "markdown", &path]).text();
    let at = markdown
        .find("### Images")
        .unwrap_or_else(|| panic!("{markdown}"));
    let table = &markdown[at..];
    let first_row = table.lines().nth(4).unwrap_or_default();
    assert!(
        first_row.contains("failed"),
        "failures come first:\n{table}"
    );
    let mut all_tags = registry_tags(&fx.repo_name).await;
    all_tags.push(format!("human-{}", short(&broken)));
    remove_images(docker.client(), &fx, &all_tags).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_build_leaves_nothing_and_the_next_apply_rebuilds_only_that_image() {
    let Some(docker) = docker_env::docker_or_skip("image build kill -9").await else {
        return;
    };
    let guard = CampaignGuard::new("build-kill");
    let fx = fixture(docker.client(), "kill").await;
    let src = fx.dir.path().join("src");
    let p = commit_sim(&src, Some(SLOW), "parent");
    let h = commit_sim(&src, Some(FAST), "human");
    // The human image's build sleeps 8 s in a RUN step: long enough to be killed in it.
    fx.write_manifest(
        &guard.campaign,
        &[(&p, &h)],
        "{{ '8' if arm.role == 'human' else '0' }}",
    );
    let path = fx.manifest_path();
    let state = fx.state();
    let human_build = format!(
        "build[image={}/{}:human-{}",
        docker_env::registry(),
        fx.repo_name,
        &h[..12]
    );
    let baseline_build = format!(
        "build[image={}/{}:baseline-",
        docker_env::registry(),
        fx.repo_name
    );
    // Killed once the baseline image is built and the human build is inside its RUN step.
    let logs_root = state.join("attempts");
    let output = kill_when(&["apply", "--plain", &path], &state, |j| {
        j.any("done", &baseline_build)
            && j.any("started", &human_build)
            && walkdir::WalkDir::new(&logs_root)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_name() == "build.log")
                .any(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.contains("RUN sleep") && t.contains("Running in"))
                })
    });
    // The engine cancels the build when its client is gone: no build container is left.
    let mut left = Vec::new();
    for _ in 0..100 {
        left = build_containers(docker.client()).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "build containers left: {left:?}\n{output}");
    let tag = format!(
        "{}/{}:human-{}",
        docker_env::registry(),
        fx.repo_name,
        &h[..12]
    );
    assert!(
        docker.image_id(&tag).await.is_none(),
        "a killed build tagged its image"
    );

    // The next apply rebuilds the human image (attempt 2) and not the baseline one.
    let plan_text = isobench(&["plan", &path]).text();
    assert!(plan_text.contains("interrupted"), "{plan_text}");
    let out = apply(&path);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&state);
    let builds = journal.latest_with_prefix("build[");
    for (addr, e) in &builds {
        assert_eq!(e["event"], "done", "{addr}");
        let attempts = if addr.contains(":human-") { 2 } else { 1 };
        assert_eq!(e["attempt"].as_u64(), Some(attempts), "{addr}: {e}");
    }
    assert_eq!(journal.count_event_prefix("started", &baseline_build), 1);
    assert_eq!(measures_of(&journal, &h).len(), 2);
    assert!(
        docker_env::containers_of(docker.client(), &guard.campaign)
            .await
            .is_empty()
    );
    let tags = registry_tags(&fx.repo_name).await;
    remove_images(docker.client(), &fx, &tags).await;
}

/// Containers of classic-builder steps still running `sleep` (what a killed build could leak).
async fn build_containers(docker: &bollard::Docker) -> Vec<String> {
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.command
                .as_deref()
                .is_some_and(|cmd| cmd.contains("sleep $SLEEP"))
        })
        .map(|c| c.id.unwrap_or_default())
        .collect()
}
