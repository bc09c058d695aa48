//! `isobench images` against the real Docker Engine and real registries: images present here,
//! only in the local registry (127.0.0.1:5000), buildable from a recipe, missing; then a second
//! registry (Debian's `docker-registry`) with htpasswd auth, whose credentials come from a
//! Docker credential helper, and which without credentials reads "unauthorized".

mod apply_support;
mod common;
use apply_support::*;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use common::docker_env;
use common::git_repo::git;
use futures_util::StreamExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The engine, with the local registry answering; `None` (after SKIPPED) outside CI without.
async fn engine_or_skip(test: &str) -> Option<Docker> {
    if let Err(f) = isobench::runtime::docker::DockerRuntime::connect().await {
        docker_env::unavailable(test, &f.message);
        return None;
    }
    let registry = docker_env::registry();
    let probe = reqwest::Client::builder().no_proxy().build().unwrap();
    if let Err(err) = probe.get(format!("http://{registry}/v2/")).send().await {
        docker_env::unavailable(test, &format!("no registry at {registry} ({err})"));
        return None;
    }
    Some(Docker::connect_with_local_defaults().unwrap())
}

/// A tiny image (one file, distinct content) built here under `reference`.
async fn build_tiny(docker: &Docker, reference: &str) {
    let files = vec![
        (
            "Dockerfile".to_string(),
            b"FROM scratch\nCOPY f /f\nLABEL isobench.test=payload\n".to_vec(),
            0o644,
        ),
        ("f".to_string(), reference.as_bytes().to_vec(), 0o644),
    ];
    docker_env::build_tagged(docker, reference, &files).await;
}

/// Builds a tiny image, pushes it (with `credentials`, if any) and removes it here.
async fn push_tiny(docker: &Docker, reference: &str, credentials: DockerCredentials) {
    build_tiny(docker, reference).await;
    let (repo, tag) = reference.rsplit_once(':').unwrap();
    let options = bollard::query_parameters::PushImageOptions {
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let mut stream = docker.push_image(repo, Some(options), Some(credentials));
    while let Some(event) = stream.next().await {
        let info = event.unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
        assert!(
            info.error.is_none(),
            "pushing {reference}: {:?}",
            info.error
        );
    }
    docker_env::remove_local_image(docker, reference).await;
}

const SERVER: &str = r#"
[models.sim]
hf = "isobench/sim"
served_name = "sim"

[server]
runtime = "docker"
command = "/isobench sim --port {{ port }} --model sim"
gpus = 1

[load]
dataset = { input_len = 32, output_len = 16 }
num_prompts = 4

[resources]
gpus = [0]
gpu_mode = "env"
gpu_kind = "test-gpu"
"#;

const AGENT_PATCH: &str = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n";

/// A campaign of two commits whose baseline and human images are `{repo}:base-<short>` and
/// `{repo}:human-<short>`, plus an agent arm patching the baseline.
fn write_manifest(dir: &Path, repo: &str) -> String {
    std::fs::write(dir.join("agent.diff"), AGENT_PATCH).unwrap();
    let manifest = format!(
        r#"version = 1
name = "images-cli"

[[arms]]
name = "baseline"
image = "{repo}:base-{{{{ commit.short }}}}"

[[arms]]
name = "human"
image = "{repo}:human-{{{{ commit.short }}}}"

[[arms]]
name = "agent"
base = "baseline"
patch = "agent.diff"
{SERVER}
[[commits]]
human = "aaaa1111c0ffee00000000000000000000000001"
parent = "aaaa0000c0ffee00000000000000000000000001"
model = "sim"

[[commits]]
human = "bbbb2222c0ffee00000000000000000000000002"
parent = "bbbb0000c0ffee00000000000000000000000002"
model = "sim"
"#
    );
    let path = dir.join("m.toml");
    std::fs::write(&path, manifest).unwrap();
    path.display().to_string()
}

/// `(commit, arm) -> (status, patched_from)` of `isobench images --format json`.
fn statuses(json: &str) -> Vec<(String, String, String, Option<String>)> {
    let rows: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["commit"].as_str().unwrap().to_string(),
                r["arm"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["patched_from"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn row(
    commit: &str,
    arm: &str,
    status: &str,
    from: Option<&str>,
) -> (String, String, String, Option<String>) {
    (
        commit.into(),
        arm.into(),
        status.into(),
        from.map(str::to_string),
    )
}

async fn images(args: Vec<String>, env: Vec<(String, String)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        isobench_env(&args, &env)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_local_in_the_registry_or_missing() {
    let Some(docker) = engine_or_skip("images: local, registry, missing").await else {
        return;
    };
    let repo = format!(
        "{}/isobench-test/images-{}",
        docker_env::registry(),
        docker_env::unique_suffix()
    );
    let in_registry = format!("{repo}:base-aaaa1111");
    let local = format!("{repo}:human-aaaa1111");
    push_tiny(&docker, &in_registry, DockerCredentials::default()).await;
    build_tiny(&docker, &local).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &repo);

    let out = images(
        vec![
            "images".into(),
            manifest.clone(),
            "--format".into(),
            "json".into(),
        ],
        vec![],
    )
    .await;
    docker_env::remove_local_image(&docker, &local).await;
    // bbbb2222's images exist nowhere and have no recipe: exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert_eq!(
        statuses(&String::from_utf8_lossy(&out.stdout)),
        [
            row("aaaa1111", "baseline", "registry", None),
            row("aaaa1111", "human", "local", None),
            row("aaaa1111", "agent", "registry", Some("baseline")),
            row("bbbb2222", "baseline", "missing", None),
            row("bbbb2222", "human", "missing", None),
            row("bbbb2222", "agent", "missing", Some("baseline")),
        ]
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json[0]["digest"].as_str().unwrap().starts_with("sha256:"),
        "{json}"
    );
    assert!(
        json[1]["id"].as_str().unwrap().starts_with("sha256:"),
        "{json}"
    );
    assert_eq!(
        json[2]["image"].as_str(),
        Some(in_registry.as_str()),
        "the base's image"
    );

    // Text: one line per row under a header, the agent's base shown as derived by patch.
    build_tiny(&docker, &local).await;
    let out = images(vec!["images".into(), manifest], vec![]).await;
    docker_env::remove_local_image(&docker, &local).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(
        lines[0].starts_with("COMMIT") && lines[0].contains("STATUS"),
        "{text}"
    );
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(lines[1])[..4],
        ["aaaa1111", "baseline", &in_registry, "registry"]
    );
    assert_eq!(words(lines[2])[..4], ["aaaa1111", "human", &local, "local"]);
    assert!(
        lines[3].contains("derived by patch from baseline"),
        "{text}"
    );
    assert_eq!(words(lines[4])[3], "missing", "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_with_a_recipe_are_buildable_and_markdown_says_so() {
    let Some(_docker) = engine_or_skip("images: buildable").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    let mut hashes = Vec::new();
    for n in 0..2 {
        std::fs::write(src.join("f"), format!("{n}\n")).unwrap();
        git(&src, &["add", "f"]);
        git(&src, &["commit", "-q", "-m", &format!("c{n}")]);
        hashes.push(git(&src, &["rev-parse", "HEAD"]));
    }
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let repo = format!(
        "{}/isobench-test/images-built-{}",
        docker_env::registry(),
        docker_env::unique_suffix()
    );
    let manifest = format!(
        r#"version = 1
name = "images-built"

[images.build]
source = {{ repo = "src" }}
dockerfile = "Dockerfile"

[[arms]]
name = "baseline"
image = "{repo}:{{{{ arm.name }}}}-{{{{ arm.commit[:12] }}}}"

[[arms]]
name = "human"
image = "{repo}:{{{{ arm.name }}}}-{{{{ arm.commit[:12] }}}}"
{SERVER}
[[commits]]
human = "{}"
parent = "{}"
model = "sim"
"#,
        hashes[1], hashes[0]
    );
    let path = dir.path().join("m.toml");
    std::fs::write(&path, manifest).unwrap();
    let p = path.display().to_string();
    let out = images(
        vec!["images".into(), p, "--format".into(), "markdown".into()],
        vec![],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("| COMMIT | ARM | IMAGE | STATUS"),
        "{text}"
    );
    assert!(lines[1].starts_with("|---|"), "{text}");
    for (line, arm) in lines[2..].iter().zip(["baseline", "human"]) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cells[1], arm, "{text}");
        assert_eq!(cells[3], "buildable", "{text}");
    }
}

/// Debian's `docker-registry` on a free port with htpasswd auth; killed when dropped.
struct AuthRegistry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bcrypt htpasswd line: `htpasswd -Bbn` (apache2-utils) if installed, else Python's `crypt`
/// (Debian 12's python3, which scripts/ci-setup.sh installs, has it; 3.13 dropped it).
fn htpasswd_line(user: &str, password: &str) -> Option<String> {
    let run = |cmd: &mut Command| {
        let out = cmd.output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && text.contains(":$2")).then(|| text.trim().to_string())
    };
    run(Command::new("htpasswd").args(["-Bbn", user, password])).or_else(|| {
        let script = format!(
            "import crypt; print('{user}:' + crypt.crypt('{password}', crypt.mksalt(crypt.METHOD_BLOWFISH)))"
        );
        ["python3", "/usr/bin/python3"]
            .iter()
            .find_map(|python| run(Command::new(python).args(["-W", "ignore", "-c", &script])))
    })
}

async fn auth_registry(test: &str) -> Option<AuthRegistry> {
    let Some(line) = htpasswd_line("isobench", "s3cret-pw") else {
        docker_env::unavailable(
            test,
            "neither `htpasswd` nor python3 `crypt` makes bcrypt hashes",
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
    let port = isobench::runtime::free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: isobench-test\n    path: {htpasswd}\n",
        data = dir.path().join("data").display(),
        htpasswd = dir.path().join("htpasswd").display(),
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = match Command::new("docker-registry")
        .args([
            "serve",
            &dir.path().join("config.yml").display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            docker_env::unavailable(test, &format!("cannot start docker-registry: {e}"));
            return None;
        }
    };
    let registry = AuthRegistry {
        child,
        port,
        _dir: dir,
    };
    let probe = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..100 {
        if let Ok(r) = probe
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
        {
            assert_eq!(r.status(), 401, "the registry must ask for credentials");
            return Some(registry);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("docker-registry did not answer on port {port} within 10 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_a_helper_and_without_them_images_are_unauthorized() {
    let test = "images: registry with auth";
    let Some(docker) = engine_or_skip(test).await else {
        return;
    };
    let Some(registry) = auth_registry(test).await else {
        return;
    };
    let host = format!("127.0.0.1:{}", registry.port);
    let repo = format!("{host}/isobench-test/private");
    let credentials = DockerCredentials {
        username: Some("isobench".into()),
        password: Some("s3cret-pw".into()),
        serveraddress: Some(host.clone()),
        ..Default::default()
    };
    push_tiny(&docker, &format!("{repo}:base-aaaa1111"), credentials).await;

    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &repo);
    // The helper answers only for this registry, as `docker-credential-*` helpers do.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-isobenchtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread -r server\nif [ \"$1\" = get ] && [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"isobench\",\"Secret\":\"s3cret-pw\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let with_helper = dir.path().join("docker-config");
    std::fs::create_dir(&with_helper).unwrap();
    std::fs::write(
        with_helper.join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "isobenchtest"}}}}"#),
    )
    .unwrap();
    let without = dir.path().join("empty-config");
    std::fs::create_dir(&without).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |config: &Path| {
        let env = vec![
            ("PATH".to_string(), path.clone()),
            ("DOCKER_CONFIG".to_string(), config.display().to_string()),
        ];
        images(
            vec![
                "images".into(),
                manifest.clone(),
                "--format".into(),
                "json".into(),
            ],
            env,
        )
    };

    let out = run(&with_helper).await;
    assert!(
        !out.text().contains("s3cret-pw"),
        "a secret was printed: {}",
        out.text()
    );
    assert_eq!(
        statuses(&String::from_utf8_lossy(&out.stdout)),
        [
            row("aaaa1111", "baseline", "registry", None),
            row("aaaa1111", "human", "missing", None),
            row("aaaa1111", "agent", "registry", Some("baseline")),
            row("bbbb2222", "baseline", "missing", None),
            row("bbbb2222", "human", "missing", None),
            row("bbbb2222", "agent", "missing", Some("baseline")),
        ],
        "{}",
        out.text()
    );

    // Without credentials the registry cannot say whether it has an image: not "missing".
    let out = run(&without).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let rows = statuses(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rows.len(), 6, "{}", out.text());
    assert!(
        rows.iter()
            .all(|(_, _, status, _)| status == "unauthorized"),
        "{}",
        out.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_env_says_once_per_registry_that_it_is_unreachable() {
    let Some(_docker) = engine_or_skip("plan --check-env: unreachable registry").await else {
        return;
    };
    // A loopback port nothing listens on: the lookup is refused at once.
    let host = format!("127.0.0.1:{}", isobench::runtime::free_port());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &format!("{host}/isobench-test/nowhere"));
    let out = images(vec!["plan".into(), "--check-env".into(), manifest], vec![]).await;
    let text = out.text();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| (l.starts_with("ok ") || l.starts_with("FAIL")) && l.contains(&host))
        .collect();
    // Two commits × (baseline, human); the agent arms patch the baselines' images.
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "FAIL registry {host} unreachable: 4 images not checked"
        )),
        "{text}"
    );
}
