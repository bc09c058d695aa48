//! Secrets in manifests (issue 17, items 6 and 14): `env()` rendered into the server's command
//! line is warned about by `validate`/`plan` (argv is visible in `ps`, the server log and
//! `docker inspect`), `[server.env]` with `${NAME}` is not; `load.api_key_env` names a variable
//! and only its name is kept.
use isobench::manifest;
use std::path::Path;
use std::process::Command;

const MANIFEST: &str = r#"version = 1
name = "secrets"
repeats = 1

[[arms]]
name = "baseline"
image = "acme/vllm:{{ commit.parent[:12] }}"

[[arms]]
name = "human"
image = "acme/vllm:{{ commit.human }}"

[models.m]
hf = "org/model"

[server]
command = "serve {{ model.hf }} --port {{ port }} COMMAND_TAIL"
SERVER_ENV

[load]
num_prompts = 4
LOAD_TAIL

[[commits]]
human = "015069b01741e9ecb9e604c7fe87fbdfc306ebe5"
parent = "fbefc8a78d22"
model = "m"

[[commits]]
human = "1111111111111111111111111111111111111111"
parent = "2222222222222222222222222222222222222222"
model = "m"
"#;

fn manifest(command_tail: &str, server_env: &str, load_tail: &str) -> String {
    MANIFEST
        .replace("COMMAND_TAIL", command_tail)
        .replace("SERVER_ENV", server_env)
        .replace("LOAD_TAIL", load_tail)
}

fn load(text: &str) -> manifest::Campaign {
    manifest::load_str("m.toml", text, Path::new("/nonexistent-isobench-dir"))
        .unwrap_or_else(|e| panic!("{:#?}", e.short_lines()))
}

#[test]
fn env_in_the_server_command_is_warned_about_once_per_variable() {
    let text = manifest(
        r#"--hf-token {{ env(\"ISOBENCH_TEST_HF_TOKEN\", \"unset\") }} --x {{ env(\"ISOBENCH_TEST_PLAIN\", \"1\") }}"#,
        "",
        "",
    );
    let campaign = load(&text);
    // Two commits × two arms render the command four times: one warning per variable.
    let messages: Vec<String> = campaign.warnings.iter().map(|w| w.0.short()).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].contains(r#"env("ISOBENCH_TEST_HF_TOKEN")"#),
        "{messages:#?}"
    );
    assert!(messages[0].contains("looks like a secret"));
    assert!(messages[0].contains("`ps`"));
    // Located at the command, with help that shows the safe form.
    let line = text
        .lines()
        .position(|l| l.starts_with("command ="))
        .unwrap()
        + 1;
    assert!(
        messages[0].starts_with(&format!("m.toml:{line}:")),
        "{messages:#?}"
    );
    let help = campaign.warnings[0].0.help.clone().unwrap();
    assert!(
        help.contains(r#"[server.env] ISOBENCH_TEST_HF_TOKEN = "${ISOBENCH_TEST_HF_TOKEN}""#),
        "{help}"
    );
    assert!(messages[1].contains(r#"env("ISOBENCH_TEST_PLAIN")"#));
    assert!(!messages[1].contains("looks like a secret"));
}

#[test]
fn secrets_passed_as_environment_variables_are_not_warned_about() {
    let campaign = load(&manifest("", "env = { HF_TOKEN = \"${HF_TOKEN}\" }", ""));
    assert!(campaign.warnings.is_empty());
    // env() elsewhere (an image name) does not reach argv: no warning either.
    let text = manifest("", "", "").replace(
        "acme/vllm:{{ commit.human }}",
        r#"{{ env(\"ISOBENCH_TEST_REGISTRY\", \"acme\") }}/vllm:{{ commit.human }}"#,
    );
    assert!(load(&text).warnings.is_empty());
}

#[test]
fn api_key_env_is_resolved_by_name() {
    let campaign = load(&manifest("", "", "api_key_env = \"OPENAI_API_KEY\""));
    for commit in &campaign.commits {
        assert_eq!(commit.load.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    }
    assert_eq!(
        load(&manifest("", "", "")).commits[0].load.api_key_env,
        None
    );
}

#[test]
fn validate_and_plan_print_the_warning_and_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        manifest(
            r#"--api-key {{ env(\"ISOBENCH_TEST_API_KEY\", \"none\") }}"#,
            "",
            "",
        ),
    )
    .unwrap();
    for command in ["validate", "plan"] {
        let out = Command::new(env!("CARGO_BIN_EXE_isobench"))
            .arg(command)
            .arg(&path)
            .env("ISOBENCH_TEST_API_KEY", "sk-very-secret-value")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // A warning never fails `validate` or `plan` (exit 0; `plan --detailed-exitcode` alone
        // gives 2 for pending work).
        assert_eq!(out.status.code(), Some(0), "{command}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(r#"env("ISOBENCH_TEST_API_KEY")"#) && stderr.contains("docker inspect"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("[server.env]"),
            "{command}: the help: {stderr}"
        );
        // The warning names the variable; it never prints the value.
        assert!(
            !stderr.contains("sk-very-secret-value") && !stdout.contains("sk-very-secret-value")
        );
    }
}
