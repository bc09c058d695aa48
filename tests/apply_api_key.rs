//! `load.api_key_env` end to end (issue 17, item 6): `isobench apply` with the process runtime
//! against `isobench sim` servers that, like vLLM with `VLLM_API_KEY`, answer 401 to `/v1/*`
//! requests without the right bearer key. The key reaches the server only when the manifest
//! names its variable; `OPENAI_API_KEY` in isobench's environment is never sent; the value
//! appears nowhere in the state directory or the results.

mod apply_support;
use apply_support::*;
use std::path::Path;

const KEY: &str = "sk-e2e-5c0ffee-not-for-agents";

fn manifest(name: &str, api_key_env: Option<&str>) -> String {
    let api_key_env = api_key_env
        .map(|n| format!("api_key_env = \"{n}\""))
        .unwrap_or_default();
    SimCampaign {
        name: name.to_string(),
        repeats: 1,
        arms: vec!["baseline", "human"],
        arm_path: "srv/{arm}",
        sim_args: "--host 127.0.0.1 --port {{ port }} --model sim --ttft-ms 1 --itl-ms 1",
        // The server's own key, from isobench's environment (never on its command line).
        server_env: "env = { VLLM_API_KEY = \"${ISOBENCH_E2E_SERVER_KEY}\" }\n".to_string(),
        load: format!(
            "dataset = {{ input_len = 16, output_len = 4 }}\nnum_prompts = 4\nconcurrency = 2\nwarmup = 1\ntimeout = \"30s\"\n{api_key_env}\n"
        ),
        gpus: "[0]",
        commits: vec!['1'],
    }
    .text()
}

fn apply(dir: &Path, text: &str) -> std::process::Output {
    for arm in ["baseline", "human"] {
        std::fs::create_dir_all(dir.join("srv").join(arm)).unwrap();
    }
    let path = dir.join("m.toml");
    std::fs::write(&path, text).unwrap();
    isobench_env(
        &["apply", "--plain", "--no-report", path.to_str().unwrap()],
        &[
            ("ISOBENCH_E2E_SERVER_KEY", KEY),
            ("ISOBENCH_E2E_CLIENT_KEY", KEY),
            // What `vllm bench serve` would send: isobench must not.
            ("OPENAI_API_KEY", KEY),
        ],
    )
}

/// Every file under `dir`, for a search of the secret.
fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn assert_no_secret(dir: &Path, out: &std::process::Output) {
    assert!(!out.text().contains(KEY), "the key in apply's output");
    for file in all_files(&dir.join(".isobench")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "the key in {}",
            file.display()
        );
    }
}

#[test]
fn the_key_is_sent_only_when_the_manifest_names_its_variable() {
    // Not named: OPENAI_API_KEY is set but not sent, so the server refuses every request.
    let dir = tempfile::tempdir().unwrap();
    let out = apply(dir.path(), &manifest("no-key", None));
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let journal = Journal::read(&dir.path().join(".isobench"));
    let warmups = journal.latest_with_prefix("warmup[");
    assert_eq!(warmups.len(), 2, "{warmups:#?}");
    for e in warmups.values() {
        assert_eq!(e["event"], "failed", "{e}");
        assert!(
            e["failure"]["message"].as_str().unwrap().contains("401"),
            "{e}"
        );
    }
    assert_no_secret(dir.path(), &out);

    // Named: every request carries it and every measurement succeeds.
    let dir = tempfile::tempdir().unwrap();
    let out = apply(
        dir.path(),
        &manifest("with-key", Some("ISOBENCH_E2E_CLIENT_KEY")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let journal = Journal::read(&dir.path().join(".isobench"));
    let measures = journal.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 2);
    assert!(
        measures.values().all(|e| e["event"] == "done"),
        "{measures:#?}"
    );
    assert_no_secret(dir.path(), &out);
}
