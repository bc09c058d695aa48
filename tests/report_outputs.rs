//! Output equivalence end to end: `isobench sim` servers (process runtime) of which the agent's
//! generates other words from a known token on; `apply`, then `report` finds exactly that.

mod apply_support;
use apply_support::*;
use serde_json::Value;
use std::path::Path;

/// The simulator's words (`sim::stream::VOCAB`) and those of a diverged server.
const SIM_WORDS: [&str; 16] = [
    "the", "model", "says", "hello", "token", "stream", "fast", "bench", "vllm", "data", "value",
    "line", "server", "sim", "test", "word",
];
const DIVERGED_WORDS: [&str; 8] = [
    "other", "changed", "skipped", "wrong", "answer", "differs", "here", "now",
];

/// The agent's answers part from the others' at this token (0-based).
const DIVERGE_AT: u32 = 5;

/// A word-level tokenizer in which every simulator word is one token, so a divergence at the
/// simulator's token k is at token k of this tokenizer too.
fn write_word_tokenizer(path: &Path) {
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in SIM_WORDS.iter().chain(&DIVERGED_WORDS).enumerate() {
        vocab.insert(w.to_string(), (i + 1).into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    });
    std::fs::write(path, tokenizer.to_string()).unwrap();
}

fn comparison<'a>(report: &'a Value, candidate: &str, reference: &str) -> &'a Value {
    report["commits"][0]["points"][0]["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["candidate"] == candidate && c["reference"] == reference)
        .unwrap_or_else(|| panic!("no {candidate} vs {reference} in {report}"))
}

fn report_json(manifest: &Path) -> Value {
    let out = isobench(&["report", manifest.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_agent_that_generates_other_text_is_flagged_at_the_exact_token() {
    let marker = unique("outputs");
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tok/tokenizer.json");
    std::fs::create_dir_all(tokenizer.parent().unwrap()).unwrap();
    write_word_tokenizer(&tokenizer);
    for arm in ["baseline", "human", "agent"] {
        let diverge = if arm == "agent" {
            format!("diverge_after_tokens = {DIVERGE_AT}\n")
        } else {
            String::new()
        };
        write_sim_config(
            dir.path(),
            &format!("srv/{arm}"),
            &format!("ttft_ms = 5.0\nitl_ms = 1.0\n{diverge}"),
        );
    }
    let text = SimCampaign {
        arms: vec!["baseline", "human", "agent"],
        ..SimCampaign::marked(format!("outputs-{marker}"), &marker, 2)
    }
    .text()
    .replacen(
        "served_name = \"sim\"\n",
        "served_name = \"sim\"\ntokenizer = \"tok/tokenizer.json\"\n",
        1,
    );
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, &text).unwrap();

    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(no_server_left(&marker), "a sim process survived");

    let report = report_json(&manifest);
    // 16 prompts in each of 2 rounds.
    let human = &comparison(&report, "human", "baseline")["outputs"];
    assert_eq!(human["finding"], "identical", "{human}");
    assert_eq!(human["summary"], "identical");
    assert_eq!(
        (human["compared"].as_u64(), human["identical"].as_u64()),
        (Some(32), Some(32))
    );
    assert_eq!(human["unit"], "tokens");
    assert_eq!(human["marks_verdict"], false);
    // The floor: the baseline's trial 2 against its trial 1, all identical.
    assert_eq!(human["floor"]["arm"], "baseline");
    assert_eq!(human["floor"]["identical_fraction"], 1.0);
    assert_eq!(human["floor"]["compared"], 16);

    for reference in ["baseline", "human"] {
        let agent = &comparison(&report, "agent", reference)["outputs"];
        assert_eq!(agent["finding"], "diverged", "{agent}");
        assert_eq!(
            agent["summary"],
            format!("diverged: 32/32 requests, first at token {DIVERGE_AT}")
        );
        assert_eq!(agent["first_divergence"], DIVERGE_AT);
        assert_eq!(agent["mean_common_prefix"], f64::from(DIVERGE_AT));
        assert_eq!(agent["identical_fraction"], 0.0);
        assert_eq!(agent["marks_verdict"], true);
        let example = &agent["examples"][0];
        assert_eq!(example["at"], DIVERGE_AT);
        assert_eq!(
            example["reference"],
            " the model says hello token stream fast bench vllm data value line s…"
        );
        assert_eq!(
            example["candidate"],
            " the model says hello token differs here now other changed skipped w…"
        );
    }
    let tally = report["summary"]["tallies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "agent_vs_baseline")
        .unwrap();
    assert_eq!(tally["outputs_diverged"], 1);

    // Every renderer marks the agent's verdict and shows the diverged text, escaped.
    let results = dir.path().join(format!("results/outputs-{marker}"));
    let md = std::fs::read_to_string(results.join("report.md")).unwrap();
    assert!(md.contains("⚠ outputs diverged"), "{md}");
    assert!(
        md.contains(&format!(
            "diverged: 32/32 requests, first at token {DIVERGE_AT}"
        )),
        "{md}"
    );
    assert!(
        md.contains("`\" the model says hello token differs here"),
        "{md}"
    );
    let terminal = isobench(&["report", manifest.to_str().unwrap()]).text();
    assert!(terminal.contains("⚠ outputs diverged"), "{terminal}");
    assert!(terminal.contains("divergent outputs"), "{terminal}");
    let html = std::fs::read_to_string(results.join("report.html")).unwrap();
    assert!(html.contains("⚠ outputs diverged"), "{html}");
    // The agent-vs-human difference chart labels the agent's bar too.
    assert!(html.contains(">11111111 ⚠ outputs diverged<"), "{html}");
    let csv = std::fs::read_to_string(results.join("report.csv")).unwrap();
    assert!(
        csv.contains(&format!(
            "outputs,11111111,conc=4,agent,baseline,outputs,,0,{DIVERGE_AT},1,32,tokens,diverged+marked"
        )),
        "{csv}"
    );
    assert!(
        csv.contains("outputs,11111111,conc=4,human,baseline,outputs,,1,,1,32,tokens,identical\n"),
        "{csv}"
    );
    // The seed-compatible files are still written as before.
    assert!(
        results
            .join("baseline_benchmark_results/11111111_baseline_result.json")
            .exists()
    );

    // `[check.outputs] mode = "off"`: not compared, nothing marked; the measurements stay valid
    // (the check is the report's, not part of any key).
    std::fs::write(
        &manifest,
        format!("{text}\n[check.outputs]\nmode = \"off\"\n"),
    )
    .unwrap();
    let report = report_json(&manifest);
    let agent = &comparison(&report, "agent", "baseline")["outputs"];
    assert_eq!(agent["finding"], "not_checked", "{agent}");
    assert_eq!(agent["marks_verdict"], false);
    assert_eq!(agent["mode"], "off");
}
