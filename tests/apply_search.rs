//! `[load.search]` end to end on real `isobench sim` servers whose capacity is exactly known:
//! `max_num_seqs` slots, each request holding one for `ttft + (output − 1) · itl` ms, and a
//! request that finds no free slot waiting (its TTFT includes the wait). So
//! - the highest concurrency at which TTFT stays under an SLO far above the unloaded TTFT is
//!   `max_num_seqs` exactly, and
//! - the highest rate is the slots' capacity, `max_num_seqs / occupancy` requests/s, which a
//!   finite probe can only find within a band (stated below).

mod apply_support;
use apply_support::*;
use serde_json::Value;
use std::path::Path;

/// 20 output tokens, 10 ms apart after a 10 ms first token: a slot is held 200 ms.
fn sim(seqs: u32) -> String {
    format!("ttft_ms = 10.0\nitl_ms = 10.0\nmax_num_seqs = {seqs}\n")
}

/// The `isobench.search` block and the journal entry of every search step.
fn searches(state: &Path) -> Vec<(String, Value, Value)> {
    let journal = Journal::read(state);
    journal
        .latest_with_prefix("measure[")
        .into_iter()
        .filter(|(address, _)| address.contains("search="))
        .map(|(address, entry)| {
            assert_eq!(entry["event"], "done", "{address}: {entry}");
            let outputs = entry["outputs"].as_object().unwrap();
            let result_path = outputs
                .keys()
                .find(|p| p.ends_with("result.json"))
                .expect("a result.json");
            let result: Value =
                serde_json::from_str(&std::fs::read_to_string(state.join(result_path)).unwrap())
                    .unwrap();
            let search = result["isobench"]["search"].clone();
            // Every probe's own result is kept beside it.
            let probes = search["probes"].as_array().unwrap().len();
            for i in 1..=probes {
                assert!(
                    outputs
                        .keys()
                        .any(|p| p.ends_with(&format!("probe-{i}.json"))),
                    "{address}: probe {i} of {probes} not recorded: {outputs:?}"
                );
            }
            (address, search, result)
        })
        .collect()
}

#[test]
fn concurrency_search_finds_each_servers_slot_count_exactly() {
    let marker = unique("search-conc");
    let dir = tempfile::tempdir().unwrap();
    write_sim_config(dir.path(), "srv/baseline", &sim(4));
    write_sim_config(dir.path(), "srv/human", &sim(6));
    let manifest = dir.path().join("m.toml");
    let campaign = SimCampaign {
        load: r#"dataset = { input_len = 16, output_len = 20 }
num_prompts = 24
concurrency = [2, 8]
warmup = 2
timeout = "60s"
slo = { ttft_ms = 100 }
search = { over = "concurrency", range = [1, 16] }
"#
        .into(),
        ..SimCampaign::marked(marker.clone(), &marker, 1)
    };
    std::fs::write(&manifest, campaign.text()).unwrap();

    let plan = isobench(&["plan", manifest.to_str().unwrap()]);
    let plan_text = plan.text();
    assert_eq!(plan.status.code(), Some(0), "{plan_text}");
    assert!(
        plan_text.contains("search=concurrency") && plan_text.contains("at most 6 probes"),
        "the plan names the search and its probe budget:\n{plan_text}"
    );

    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let state = dir.path().join(".isobench");
    let found = searches(&state);
    assert_eq!(found.len(), 2, "{found:#?}");
    for (address, search, result) in &found {
        let want = if address.contains("arm=human") {
            6.0
        } else {
            4.0
        };
        assert_eq!(search["over"], "concurrency");
        assert_eq!(search["outcome"], "bracketed", "{address}: {search}");
        assert_eq!(search["found"], want, "{address}: {search:#}");
        assert_eq!(search["bracket"][1], want + 1.0, "{address}");
        let probes = search["probes"].as_array().unwrap();
        assert!(probes.len() <= 6, "{address}: {} probes", probes.len());
        // The recorded top-level metrics are those of the probe at the answer.
        assert_eq!(result["max_concurrency"], want, "{address}");
        assert_eq!(result["completed"], 24, "{address}");
        for p in probes {
            let passed = p["passed"].as_bool().unwrap();
            assert_eq!(
                passed,
                p["value"].as_f64().unwrap() <= want,
                "{address}: {p}"
            );
            // A probe over the slot count has requests waiting ≥ one slot's 200 ms.
            if !passed {
                assert!(p["p99_ttft_ms"].as_f64().unwrap() > 150.0, "{p}");
            }
        }
    }
    // The fixed points were measured too (the curve), before the search.
    let measures = Journal::read(&state).latest_with_prefix("measure[");
    assert_eq!(measures.len(), 6, "{:?}", measures.keys());
    assert!(no_server_left(&marker));

    // A second apply measures nothing again: a search is cached like any step.
    let again = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0), "{}", again.text());
    let journal = Journal::read(&state);
    assert_eq!(
        journal.count_event_prefix("started", "measure["),
        6,
        "nothing re-measured"
    );
}

#[test]
fn rate_search_finds_the_capacity_within_its_band() {
    let marker = unique("search-rate");
    let dir = tempfile::tempdir().unwrap();
    // 4 slots × 200 ms: 20 requests/s.
    write_sim_config(dir.path(), "srv/baseline", &sim(4));
    let manifest = dir.path().join("m.toml");
    let campaign = SimCampaign {
        arms: vec!["baseline"],
        load: r#"dataset = { input_len = 16, output_len = 20 }
num_prompts = 40
warmup = 2
timeout = "60s"
burstiness = 50.0
slo = { ttft_ms = 100 }
search = { over = "rate", range = [8, 64], tolerance = 0.1 }
"#
        .into(),
        ..SimCampaign::marked(marker.clone(), &marker, 1)
    };
    std::fs::write(&manifest, campaign.text()).unwrap();
    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let found = searches(&dir.path().join(".isobench"));
    assert_eq!(found.len(), 1);
    let (_, search, _) = &found[0];
    assert_eq!(search["outcome"], "bracketed", "{search:#}");
    assert_eq!(search["max_probes"], 7);
    let probes = search["probes"].as_array().unwrap();
    assert!(probes.len() <= 7, "{} probes", probes.len());
    let (pass, fail) = (
        search["bracket"][0].as_f64().unwrap(),
        search["bracket"][1].as_f64().unwrap(),
    );
    assert!(
        fail / pass <= 1.1 + 1e-9,
        "bracket [{pass}, {fail}] wider than 10 %"
    );
    // The band: at a rate r above the capacity c the k-th of 40 requests waits about
    // k · (1/c − 1/r) s, so 40 requests reveal an overload only beyond ≈ 1.07 c (the SLO leaves
    // 90 ms for waiting); gamma arrivals (burstiness 50: ±14 % gaps) can fail a probe a little
    // below c. Hence: the answer lies in [0.8 c, 1.1 c].
    assert!(
        (16.0..=22.0).contains(&pass),
        "found {pass} req/s for a 20 req/s server: {search:#}"
    );
    // Self-audit: every probe released its requests at the rate it asked for — the client was
    // not the bottleneck of what it measured.
    for p in probes {
        let (asked, got) = (
            p["requested_rate"].as_f64().unwrap(),
            p["achieved_rate"].as_f64().unwrap(),
        );
        assert!(
            (got / asked - 1.0).abs() < 0.1,
            "probe at {asked} req/s released {got} req/s"
        );
        assert_eq!(p["concurrency"], Value::Null, "rate probes have no limit");
    }
    assert!(no_server_left(&marker));
}
