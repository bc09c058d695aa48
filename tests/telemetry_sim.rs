//! Telemetry of a campaign's measurements against real `isobench sim` servers (process
//! runtime): the server's Prometheus deltas match the client's own counts exactly, the raw
//! series lands in the attempt directory, and a server without the endpoint is recorded as
//! absent while the measurement stays fine.

mod apply_support;
use apply_support::*;

type Measured = Vec<(serde_json::Value, std::path::PathBuf)>;

/// Runs a two-arm, one-trial sim campaign with `server_lines` in `[server]`; returns its
/// directory, and each measurement's result JSON and attempt directory.
fn campaign(marker: &str, server_lines: &str) -> (tempfile::TempDir, Measured) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for arm in ["baseline", "human"] {
        write_sim_config(
            &dir,
            &format!("srv/{arm}"),
            "ttft_ms = 20.0\nitl_ms = 1.0\n",
        );
    }
    let text = SimCampaign {
        server_env: format!("env = {{ ISOBENCH_TEST_MARKER = \"{marker}\" }}\n{server_lines}"),
        ..SimCampaign::marked(format!("telemetry-{marker}"), marker, 1)
    }
    .text();
    let manifest = dir.join("m.toml");
    std::fs::write(&manifest, text).unwrap();
    let out = isobench(&["apply", "--plain", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(no_server_left(marker), "a sim process survived");
    let state = dir.join(".isobench");
    let measures = Journal::read(&state).latest_with_prefix("measure[");
    assert_eq!(measures.len(), 2);
    let measured = measures
        .values()
        .map(|e| {
            assert_eq!(e["event"], "done", "{e}");
            let (rel, _) = e["outputs"].as_object().unwrap().iter().next().unwrap();
            let path = state.join(rel);
            let result = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (result, path.parent().unwrap().to_path_buf())
        })
        .collect();
    (tmp, measured)
}

#[test]
fn server_metric_deltas_equal_the_clients_counts() {
    let marker = unique("telemetry");
    let (tmp, measured) = campaign(&marker, "");
    for (result, dir) in measured {
        let t = &result["isobench"]["telemetry"];
        let server = &t["server"];
        assert_eq!(server["available"], true, "{t:#}");
        let counters = &server["counters"];
        // Exact: the first scrape precedes the measured run, the last follows its end.
        let n = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        assert_eq!(
            n(&counters["generation_tokens"]),
            n(&result["total_output_tokens"]),
            "{t:#}"
        );
        assert_eq!(n(&counters["generation_tokens"]), 256.0);
        assert_eq!(
            n(&counters["prompt_tokens"]),
            n(&result["total_input_tokens"]),
            "{t:#}"
        );
        assert_eq!(
            n(&counters["requests_finished"]),
            n(&result["completed"]),
            "{t:#}"
        );
        assert_eq!(n(&counters["requests_finished"]), 16.0);
        assert_eq!(n(&counters["preemptions"]), 0.0);
        assert_eq!(server["histograms"]["ttft"]["count"], 16.0);
        assert_eq!(
            server["names"]["generation_tokens"],
            "vllm:generation_tokens_total"
        );
        assert_eq!(
            server["names"]["requests_waiting"],
            "vllm:num_requests_waiting"
        );
        // A sim has no KV cache: named as missing, not invented.
        assert!(
            server["missing"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == "kv_cache_usage"),
            "{server:#}"
        );
        // The fidelity check: the client's TTFT includes the server's (20 ms scheduled, plus
        // the HTTP round trip), never less.
        let d = &t["derived"];
        let server_ttft = d["server_mean_ttft_ms"].as_f64().unwrap();
        let client_ttft = d["client_mean_ttft_ms"].as_f64().unwrap();
        assert!(server_ttft >= 20.0, "{d:#}");
        let gap = d["ttft_gap_ms"].as_f64().unwrap();
        assert!(
            (0.0..50.0).contains(&gap),
            "client {client_ttft} ms vs server {server_ttft} ms"
        );
        // The sim's process group is read from procfs.
        assert_eq!(t["host"]["available"], true, "{t:#}");
        let cpu = t["host"]["cpu_s"].as_f64().unwrap();
        let per_token = d["cpu_s_per_output_token"].as_f64().unwrap();
        assert!((per_token * 256.0 - cpu).abs() < 1e-9, "{d:#}");
        // No NVIDIA driver here: absent, with the reason; energy is then absent too.
        assert_eq!(t["gpu"]["available"], false);
        assert!(
            t["gpu"]["reason"].as_str().unwrap().starts_with("NVML"),
            "{t:#}"
        );
        assert!(d["j_per_output_token"].is_null());
        // The raw series: the window's first and last scrape, every sample kept.
        let raw = std::fs::read_to_string(dir.join("server-metrics.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = raw
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.first().unwrap()["phase"], "start");
        assert_eq!(lines.last().unwrap()["phase"], "end");
        let key = "vllm:generation_tokens_total{model_name=\"sim\"}";
        let delta = lines.last().unwrap()["samples"][key].as_f64().unwrap()
            - lines[0]["samples"][key].as_f64().unwrap();
        assert_eq!(delta, 256.0);
    }
    // The report: the server's TTFT per arm, never compared (energy and CPU per token are
    // compared: src/report/quality.rs checks that; a sim's CPU time over a window this short
    // can be 0 clock ticks, which the report counts as no data).
    let report_path = tmp
        .path()
        .join(format!("results/telemetry-{marker}/report.json"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let point = &report["commits"][0]["points"][0];
    for arm in point["arms"].as_array().unwrap() {
        assert!(arm["metrics"]["server_mean_ttft_ms"].is_object(), "{arm:#}");
        // No GPU here: no energy figures at all, rather than zeros.
        assert!(arm["metrics"]["j_per_output_token"].is_null(), "{arm:#}");
    }
    let comparison = &point["comparisons"][0]["metrics"];
    assert!(
        comparison["output_throughput"].is_object(),
        "{comparison:#}"
    );
    assert!(
        comparison["server_mean_ttft_ms"].is_null(),
        "{comparison:#}"
    );
    // Markdown shows the per-arm telemetry table.
    let md = std::fs::read_to_string(report_path.with_file_name("report.md")).unwrap();
    assert!(md.contains("Telemetry (server, GPU, host"), "{md}");
    assert!(md.contains("server TTFT mean (ms)"), "{md}");
    let warnings = report["quality"]["warnings"].to_string();
    assert!(
        warnings.contains("GPU telemetry absent in 2 of 2 trial(s): NVML"),
        "{warnings}"
    );
}

#[test]
fn a_server_without_the_endpoint_is_absent_and_measured_all_the_same() {
    let marker = unique("telemetry-404");
    let (_tmp, measured) = campaign(&marker, "metrics_path = \"/no-metrics-here\"\n");
    for (result, dir) in measured {
        assert_eq!(result["completed"], 16);
        let server = &result["isobench"]["telemetry"]["server"];
        assert_eq!(server["available"], false);
        let reason = server["reason"].as_str().unwrap();
        assert!(
            reason.contains("/no-metrics-here") && reason.contains("404"),
            "{reason}"
        );
        assert!(!dir.join("server-metrics.jsonl").exists());
    }
    let marker = unique("telemetry-off");
    let (_tmp, measured) = campaign(&marker, "metrics_path = \"\"\n");
    for (result, _) in measured {
        let server = &result["isobench"]["telemetry"]["server"];
        assert_eq!(server["available"], false);
        assert!(
            server["reason"].as_str().unwrap().contains("not scraped"),
            "{server}"
        );
    }
}
