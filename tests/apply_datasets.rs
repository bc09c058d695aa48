//! Workloads from files end to end: a `custom` JSONL campaign measured on real `isobench sim`
//! servers, then the file edited: `plan` names the change (`~ rerun (dataset changed)`) for
//! exactly the measurements, and only them.

mod apply_support;
use apply_support::*;

/// A chat message list and plain prompts with per-record output lengths (8 records: with seed 0
/// Python's shuffle orders them 4 1 5 2 0 3 | 7 6, so the message list, record 0, is measured
/// and 7 and 6 warm up).
fn jsonl(extra: &str) -> String {
    let mut lines = vec![
        r#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], "output_tokens": 5}"#
            .to_string(),
    ];
    lines.extend((1..8).map(|i| {
        format!(
            "{{\"prompt\": \"question {i} about the cache{extra}\", \"output_tokens\": {}}}",
            4 + i
        )
    }));
    lines.join("\n") + "\n"
}

#[test]
fn custom_dataset_is_measured_and_its_edit_reruns_the_measures() {
    let marker = unique("datasets");
    let dir = tempfile::tempdir().unwrap();
    for arm in ["baseline", "human"] {
        write_sim_config(
            dir.path(),
            &format!("srv/{arm}"),
            "ttft_ms = 2.0\nitl_ms = 1.0\n",
        );
    }
    std::fs::write(dir.path().join("prompts.jsonl"), jsonl("")).unwrap();
    let text = SimCampaign {
        load: r#"dataset = { name = "custom", path = "prompts.jsonl" }
num_prompts = 6
concurrency = 2
warmup = 2
timeout = "60s"
extra_body = { top_k = 1, response_format = { type = "json_object" } }
"#
        .to_string(),
        ..SimCampaign::marked(format!("datasets-{marker}"), &marker, 1)
    }
    .text();
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, &text).unwrap();
    let m = manifest.to_str().unwrap();

    let out = isobench(&["apply", "--plain", m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let state = dir.path().join(".isobench");
    let measures = Journal::read(&state).latest_with_prefix("measure[");
    assert_eq!(measures.len(), 2, "{measures:#?}");
    for e in measures.values() {
        assert_eq!(e["event"], "done", "{e}");
        let (path, _) = e["outputs"].as_object().unwrap().iter().next().unwrap();
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state.join(path)).unwrap()).unwrap();
        assert_eq!(result["completed"], 6, "{result}");
    }
    let plan = isobench(&["plan", "-v", m]);
    assert!(
        plan.text().contains("0 to run, 0 to rerun"),
        "{}",
        plan.text()
    );

    // The same settings, another file content: the measurements (and the compare after them)
    // run again, for that reason.
    std::fs::write(dir.path().join("prompts.jsonl"), jsonl(" and the kernel")).unwrap();
    let plan = isobench(&["plan", "-v", m]).text();
    let reruns: Vec<&str> = plan
        .lines()
        .filter(|l| l.trim_start().starts_with('~'))
        .collect();
    let measure_reruns: Vec<&&str> = reruns.iter().filter(|l| l.contains("measure[")).collect();
    assert_eq!(measure_reruns.len(), 2, "{plan}");
    assert!(
        measure_reruns
            .iter()
            .all(|l| l.contains("(dataset changed)")),
        "{plan}"
    );
    assert!(
        reruns
            .iter()
            .all(|l| l.contains("measure[") || l.contains("compare[")),
        "only the measurements and what reads them: {plan}"
    );
}
