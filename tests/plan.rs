//! `plan`: the DAG diffed against recorded state, with one action and reason per node.

use isobench::exec::record;
use isobench::manifest;
use isobench::manifest::pipeline::StepKind;
use isobench::pipeline::expand::{self, Dag};
use isobench::plan::{self, Action, PlanOptions};
use isobench::state::{Event, Journal, State};
use std::path::Path;

const MANIFEST: &str = r#"version = 1
name = "plan-test"
repeats = 2

[[arms]]
name = "baseline"
image = "acme/vllm:baseline-{{ commit.parent[:12] }}"

[[arms]]
name = "human"
image = "acme/vllm:{{ commit.human }}"

[[arms]]
name = "agent-x"
base = "baseline"
patch = "patches/{{ commit.short }}.diff"

[models.m]
hf = "org/model"

[server]
command = "serve {{ model.hf }} --port {{ port }}"

[[commits]]
human = "1111111111111111111111111111111111111111"
parent = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
model = "m"

[[commits]]
human = "2222222222222222222222222222222222222222"
parent = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
model = "m"
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(manifest: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("patches")).unwrap();
        std::fs::write(
            dir.path().join("patches/11111111.diff"),
            "--- a/x\n+++ b/x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("m.toml"), manifest).unwrap();
        Fixture { dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("m.toml")
    }

    fn write(&self, manifest: &str) {
        std::fs::write(self.path(), manifest).unwrap();
    }

    fn load(&self) -> (manifest::Campaign, Dag, State) {
        let campaign = manifest::load_file(&self.path()).unwrap();
        let state = State::load(&campaign.state_dir).unwrap();
        let dag = expand::expand(&campaign, None);
        (campaign, dag, state)
    }

    fn plan(&self) -> (manifest::Campaign, Dag, plan::Plan) {
        let (campaign, dag, state) = self.load();
        let p = plan::plan(&campaign, &dag, &state, &PlanOptions::default());
        (campaign, dag, p)
    }

    /// Records every node as done, as a completed apply would.
    fn mark_all_done(&self) {
        let (campaign, dag, _) = self.load();
        let mut j = Journal::open(&campaign.state_dir).unwrap();
        for idx in dag.graph.node_indices() {
            j.append(&record::entry(&dag.graph[idx], Event::Done, 1, "run-1"))
                .unwrap();
        }
    }
}

fn actions(dag: &Dag, p: &plan::Plan, f: impl Fn(&str) -> bool) -> Vec<(String, Action, String)> {
    dag.graph
        .node_indices()
        .filter(|i| f(&dag.graph[*i].address))
        .map(|i| {
            (
                dag.graph[i].address.clone(),
                p.action(i),
                p.get(i).reason.clone(),
            )
        })
        .collect()
}

#[test]
fn fresh_campaign_runs_everything_and_shares_pulls() {
    let f = Fixture::new(MANIFEST);
    let (campaign, dag, p) = f.plan();
    // Commit 1 has 3 arms (its patch exists); commit 2 has 2 (no patch file): the plan says why.
    assert_eq!(campaign.commits[0].arms.len(), 3);
    assert_eq!(campaign.commits[1].arms.len(), 2);
    assert_eq!(campaign.commits[1].absent[0].arm, "agent-x");
    assert_eq!(
        campaign.commits[1].absent[0].reason,
        "no patch file patches/22222222.diff"
    );
    // Both commits share the baseline image: one pull node for it.
    let pulls: Vec<_> = dag
        .pulls
        .iter()
        .map(|i| dag.graph[*i].address.clone())
        .collect();
    assert_eq!(pulls.len(), 3, "{pulls:?}");
    assert!(pulls.contains(&"pull[image=acme/vllm:baseline-aaaaaaaaaaaa]".to_string()));
    // 5 sessions × 2 trials = 10 sessions, each start/ready/warmup/measure/stop; 1 patch; 2 compares.
    assert_eq!(dag.sessions.len(), 10);
    assert_eq!(p.counts.run, 3 + 1 + 10 * 5 + 2);
    assert_eq!(p.counts.cached, 0);
    assert_eq!(p.counts.absent_arms, 1);
    assert!(p.nodes.iter().all(|n| n.action == Action::Run));
}

#[test]
fn trials_interleave_across_arms() {
    let f = Fixture::new(MANIFEST);
    let (campaign, dag, _) = f.plan();
    let order: Vec<String> = dag
        .sessions
        .iter()
        .filter(|s| s.commit == 0)
        .map(|s| format!("{}{}", campaign.commits[0].arms[s.arm].name, s.trial))
        .collect();
    assert_eq!(
        order,
        [
            "baseline1",
            "human1",
            "agent-x1",
            "baseline2",
            "human2",
            "agent-x2"
        ]
    );
}

#[test]
fn everything_done_is_cached_and_exit_code_zero() {
    let f = Fixture::new(MANIFEST);
    f.mark_all_done();
    let (_, _, p) = f.plan();
    assert_eq!(p.counts.pending(), 0, "{:?}", p.counts);
    assert_eq!(p.counts.cached, p.nodes.len());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
        .arg("plan")
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn adding_a_commit_runs_exactly_its_nodes() {
    let f = Fixture::new(MANIFEST);
    f.mark_all_done();
    f.write(&format!("{MANIFEST}\n[[commits]]\nhuman = \"3333333333333333333333333333333333333333\"\nparent = \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\nmodel = \"m\"\n"));
    let (_, dag, p) = f.plan();
    let pending = actions(&dag, &p, |_| true)
        .into_iter()
        .filter(|(_, a, _)| *a != Action::Cached)
        .collect::<Vec<_>>();
    assert!(!pending.is_empty());
    for (addr, action, reason) in &pending {
        assert!(
            addr.contains("commit=33333333")
                || addr == "pull[image=acme/vllm:baseline-bbbbbbbbbbbb]"
                || addr == "pull[image=acme/vllm:3333333333333333333333333333333333333333]",
            "unexpected {addr} {action:?} {reason}"
        );
        assert_eq!(*action, Action::Run, "{addr}");
    }
    // 2 pulls, 2 arms × 2 trials × 5 steps, 1 compare.
    assert_eq!(pending.len(), 2 + 20 + 1);
    let plan = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
            .arg("plan")
            .args(extra)
            .arg(f.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    // As `terraform plan`: 0 on success (so `set -e` scripts go on), 2 for pending changes only
    // with `--detailed-exitcode`.
    assert_eq!(plan(&[]).status.code(), Some(0));
    let out = plan(&["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Plan: 23 to run, 0 to rerun, 0 incomplete,"),
        "{text}"
    );
}

#[test]
fn changing_one_commits_load_reruns_exactly_its_measures() {
    let f = Fixture::new(MANIFEST);
    f.mark_all_done();
    let changed = MANIFEST.replacen(
        "model = \"m\"\n\n[[commits]]",
        "model = \"m\"\nload = { num_prompts = 50 }\n\n[[commits]]",
        1,
    );
    assert_ne!(changed, MANIFEST);
    f.write(&changed);
    let (_, dag, p) = f.plan();
    for (addr, action, reason) in actions(&dag, &p, |_| true) {
        let node = dag.get(&addr).unwrap();
        let in_commit1 = addr.contains("commit=11111111");
        match (node.kind, in_commit1) {
            (StepKind::LoadMeasure, true) => {
                assert_eq!(action, Action::Rerun, "{addr}");
                assert_eq!(reason, "load changed");
            }
            (
                StepKind::LoadWarmup
                | StepKind::ServerStart
                | StepKind::ServerReady
                | StepKind::ServerStop,
                true,
            ) => assert_eq!(action, Action::Run, "{addr}"),
            (StepKind::Compare, true) => assert_eq!(action, Action::Rerun, "{addr}"),
            _ => assert_eq!(action, Action::Cached, "{addr} {reason}"),
        }
    }
}

#[test]
fn server_and_patch_changes_are_named() {
    let f = Fixture::new(MANIFEST);
    f.mark_all_done();
    f.write(&MANIFEST.replace("--port {{ port }}\"", "--port {{ port }} --enforce-eager\""));
    let (_, dag, p) = f.plan();
    let reasons: Vec<String> = actions(&dag, &p, |a| a.starts_with("measure["))
        .into_iter()
        .map(|(_, _, r)| r)
        .collect();
    assert!(
        reasons.iter().all(|r| r == "server args changed"),
        "{reasons:?}"
    );

    f.write(MANIFEST);
    std::fs::write(
        f.dir.path().join("patches/11111111.diff"),
        "--- a/x\n+++ b/x\n@@ changed @@\n",
    )
    .unwrap();
    let (_, dag, p) = f.plan();
    let agent = actions(&dag, &p, |a| {
        a.starts_with("measure[") && a.contains("arm=agent-x")
    });
    assert_eq!(agent.len(), 2);
    assert!(
        agent
            .iter()
            .all(|(_, a, r)| *a == Action::Rerun && r == "patch changed"),
        "{agent:?}"
    );
    let patch = actions(&dag, &p, |a| a.starts_with("patch["));
    assert_eq!(patch[0].1, Action::Rerun);
    assert_eq!(patch[0].2, "patch changed");
    let others = actions(&dag, &p, |a| {
        a.starts_with("measure[") && !a.contains("arm=agent-x")
    });
    assert!(
        others.iter().all(|(_, a, _)| *a == Action::Cached),
        "{others:?}"
    );
}

#[test]
fn interrupted_failed_and_orphaned_nodes() {
    let f = Fixture::new(MANIFEST);
    f.mark_all_done();
    let (campaign, dag, _) = f.load();
    let mut j = Journal::open(&campaign.state_dir).unwrap();
    let m1 = dag
        .get("measure[commit=11111111,arm=human,trial=1,conc=16]")
        .unwrap();
    j.append(&record::entry(m1, Event::Started, 2, "run-2"))
        .unwrap();
    let m2 = dag
        .get("measure[commit=11111111,arm=human,trial=2,conc=16]")
        .unwrap();
    j.append(&record::failed(
        m2,
        2,
        "run-2",
        isobench::failure::Failure::new(isobench::failure::FailureClass::Crashed, "boom"),
    ))
    .unwrap();
    drop(j);
    // Drop the second commit from the manifest: its recorded nodes are orphaned, not deleted.
    let one_commit = MANIFEST
        .split("\n[[commits]]\nhuman = \"2222")
        .next()
        .unwrap()
        .to_string();
    f.write(&one_commit);
    let (_, dag, p) = f.plan();
    let a1 = dag.index["measure[commit=11111111,arm=human,trial=1,conc=16]"];
    assert_eq!(p.action(a1), Action::Incomplete);
    assert_eq!(p.get(a1).reason, "interrupted (attempt 2)");
    let a2 = dag.index["measure[commit=11111111,arm=human,trial=2,conc=16]"];
    assert_eq!(p.action(a2), Action::Run);
    assert_eq!(p.get(a2).reason, "failed before: crashed");
    assert!(!p.orphaned.is_empty());
    assert!(
        p.orphaned
            .iter()
            .all(|o| o.address.contains("22222222") || o.address.contains("image=acme/vllm:2222")),
        "{:?}",
        p.orphaned
    );
    assert!(
        p.orphaned
            .iter()
            .all(|o| o.reason == "no longer in manifest; results kept")
    );
    // The human sessions of both trials run again; nothing else.
    let pending: Vec<_> = actions(&dag, &p, |_| true)
        .into_iter()
        .filter(|(_, a, _)| a.executes())
        .map(|(a, _, _)| a)
        .collect();
    assert!(
        pending
            .iter()
            .all(|a| a.contains("arm=human") || a.starts_with("compare[")),
        "{pending:?}"
    );
}

#[test]
fn keys_ignore_state_dir_and_depend_on_gpu_kind() {
    let f = Fixture::new(MANIFEST);
    let (c1, d1, _) = f.load();
    f.write(&MANIFEST.replace(
        "repeats = 2",
        "repeats = 2\nstate = \"elsewhere/state\"\nresults = \"elsewhere/results\"",
    ));
    let (c2, d2, _) = f.load();
    assert_ne!(c1.state_dir, c2.state_dir);
    for idx in d1.graph.node_indices() {
        let a = &d1.graph[idx];
        let b = d2.get(&a.address).expect("same addresses");
        assert_eq!(a.key, b.key, "{}", a.address);
    }
    let h100 = expand::expand(&c1, Some("NVIDIA H100 80GB HBM3"));
    let m = "measure[commit=11111111,arm=human,trial=1,conc=16]";
    assert_ne!(h100.get(m).unwrap().key, d1.get(m).unwrap().key);
    // Trials are distinct measurements.
    assert_ne!(
        d1.get(m).unwrap().key,
        d1.get("measure[commit=11111111,arm=human,trial=2,conc=16]")
            .unwrap()
            .key
    );
}

#[test]
fn concurrency_list_expands_inside_one_session() {
    let f = Fixture::new(&MANIFEST.replace(
        "[server]",
        "[load]\nconcurrency = [1, 16]\nrequest_rate = [\"inf\", 4.0]\n\n[server]",
    ));
    let (_, dag, _) = f.plan();
    let s = &dag.sessions[0];
    let addrs: Vec<&str> = s
        .measures
        .iter()
        .map(|m| dag.graph[*m].address.as_str())
        .collect();
    assert_eq!(
        addrs,
        [
            "measure[commit=11111111,arm=baseline,trial=1,conc=1]",
            "measure[commit=11111111,arm=baseline,trial=1,conc=1,rate=4]",
            "measure[commit=11111111,arm=baseline,trial=1,conc=16]",
            "measure[commit=11111111,arm=baseline,trial=1,conc=16,rate=4]",
        ]
    );
    // One server session holds all four measure points: one start, one stop.
    assert_eq!(
        s.nodes
            .iter()
            .filter(|n| dag.graph[**n].kind == StepKind::ServerStart)
            .count(),
        1
    );
}

#[test]
fn json_and_dot_outputs() {
    let f = Fixture::new(MANIFEST);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["plan", "--format", "json", "--detailed-exitcode"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["summary"]["run"], 56);
    assert_eq!(v["absent"][0]["arm"], "agent-x");
    let node = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == "start[commit=11111111,arm=agent-x,trial=1]")
        .unwrap();
    assert_eq!(node["kind"], "server.start");
    assert_eq!(node["action"], "run");
    let deps: Vec<&str> = node["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        deps,
        [
            "patch[commit=11111111,arm=agent-x]",
            "pull[image=acme/vllm:baseline-aaaaaaaaaaaa]"
        ]
    );
    let dot = std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["plan", "--graph", "dot"])
        .arg(f.path())
        .output()
        .unwrap();
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph isobench {"));
    assert_eq!(dot.matches(" -> ").count(), {
        let (_, dag, _) = f.plan();
        dag.graph.edge_count()
    });
}

#[test]
fn plan_is_pure_and_leaves_no_state() {
    let f = Fixture::new(MANIFEST);
    let _ = f.plan();
    assert!(!Path::new(&f.dir.path().join(".isobench")).exists());
}

#[test]
fn shipped_manifests_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let campaign = manifest::load_file(&root.join("manifests/3way.toml")).unwrap();
    assert_eq!(campaign.commits.len(), 44);
    let dag = expand::expand(&campaign, None);
    let state = State::default();
    let p = plan::plan(&campaign, &dag, &state, &PlanOptions::default());
    assert_eq!(
        p.counts.absent_arms, 44,
        "no agent patches are shipped: every agent arm is absent"
    );
    // The 70B model cannot fit one GPU: its commit's servers get 4 GPUs and the command passes
    // them to vLLM as tensor parallelism; every other commit keeps 1 GPU and the seed's 4096.
    let has = |c: &isobench::manifest::model::Commit, a: &str, b: &str| {
        c.arms[0].argv.windows(2).any(|w| w == [a, b])
    };
    for c in &campaign.commits {
        let gpus = if c.model.hf == "meta-llama/Llama-2-70b-hf" {
            4
        } else {
            1
        };
        assert_eq!(c.server.gpus, gpus, "{}", c.short);
        assert!(
            has(c, "--tensor-parallel-size", &gpus.to_string()),
            "{}: {:?}",
            c.short,
            c.arms[0].argv
        );
        assert!(has(c, "--max-model-len", "4096"), "{}", c.short);
    }
    assert_eq!(
        campaign
            .commits
            .iter()
            .filter(|c| c.server.gpus == 4)
            .count(),
        1
    );
    // The seed's results layout by default.
    assert!(
        campaign
            .results_dir
            .ends_with("manifests/iso_bench_results_3way_claude_code"),
        "{}",
        campaign.results_dir.display()
    );
    // The generator and the manifest agree.
    let generated = std::process::Command::new("python3")
        .arg(root.join("scripts/gen-3way-manifest.py"))
        .arg(root.join("../shared/data/iso-bench-vllm-commits.csv"))
        .output();
    if let Ok(out) = generated
        && out.status.success()
    {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(root.join("manifests/3way.toml")).unwrap(),
            "manifests/3way.toml is not what scripts/gen-3way-manifest.py writes"
        );
    }
    // The examples name local files that their set-up scripts create under `~` (the vLLM
    // example's tokenizer): validate them against a home where those exist, so the verdict
    // does not depend on whether this machine ran the set-up.
    let home = tempfile::tempdir().unwrap();
    let tokenizer = home.path().join(".cache/isobench/models/tiny-llama");
    std::fs::create_dir_all(&tokenizer).unwrap();
    std::fs::write(tokenizer.join("tokenizer.json"), "{}").unwrap();
    let mut examples = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            examples += 1;
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
                .args(["validate", path.to_str().unwrap()])
                .env("HOME", home.path())
                .env_remove("ISOBENCH_CACHE_DIR")
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}{}",
                path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(examples >= 3, "only {examples} example manifests found");
}

/// Shipped manifests start with the schema directive taplo / Even Better TOML read
/// (`#:schema <relative path>`), pointing at the committed schema, and still load.
#[test]
fn shipped_manifests_carry_the_editor_schema_directive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = root
        .join("schemas/manifest.schema.json")
        .canonicalize()
        .unwrap();
    let mut manifests = vec![root.join("manifests/3way.toml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "toml") {
            manifests.push(entry.path());
        }
    }
    for path in &manifests {
        let text = std::fs::read_to_string(path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let target = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{}: first line is {first:?}", path.display()));
        assert_eq!(
            path.parent()
                .unwrap()
                .join(target)
                .canonicalize()
                .ok()
                .as_ref(),
            Some(&schema),
            "{}: {target}",
            path.display()
        );
    }
    // The loader takes the directive (a TOML comment) as it is.
    manifest::load_file(&root.join("manifests/3way.toml")).unwrap();
}

#[test]
fn committed_schema_is_current() {
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/manifest.schema.json"),
    )
    .unwrap();
    let current = isobench::cli::schema::schema_text();
    assert!(
        committed.trim_end() == current.trim_end(),
        "schemas/manifest.schema.json is stale: run `cargo run -- schema > schemas/manifest.schema.json`"
    );
}

fn plan_json_with(f: &Fixture, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["plan", "--format", "json"])
        .args(extra)
        .arg(f.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, stderr)
}

fn addresses(plan: &serde_json::Value) -> Vec<String> {
    plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect()
}

/// The seed's single-commit mode: `--commit 11111111 --arm human` plans exactly that arm's
/// pull and sessions, nothing of the baseline (a human-only run does not need its image).
#[test]
fn commit_and_arm_selectors_plan_only_the_selected_arm() {
    let f = Fixture::new(MANIFEST);
    let (code, plan, stderr) = plan_json_with(&f, &["--commit", "1111", "--arm", "human"]);
    assert_eq!(code, Some(0), "{stderr}");
    let addrs = addresses(&plan);
    assert_eq!(
        addrs.len(),
        1 + 2 * 5,
        "one pull + 2 trials × start/ready/warmup/measure/stop: {addrs:#?}"
    );
    assert!(
        addrs.contains(
            &"pull[image=acme/vllm:1111111111111111111111111111111111111111]".to_string()
        )
    );
    assert!(
        addrs
            .iter()
            .all(|a| a.starts_with("pull[") || a.contains("commit=11111111,arm=human")),
        "{addrs:#?}"
    );
    assert!(!addrs.iter().any(|a| a.contains("baseline")), "{addrs:#?}");
    assert_eq!(plan["target"]["commits"], serde_json::json!(["11111111"]));
    assert_eq!(plan["target"]["arms"], serde_json::json!(["human"]));
    assert_eq!(plan["target"]["total_commits"], 2);
    assert_eq!(plan["target"]["compare_skipped"], true);

    // An agent arm still gets its own base image pull and its patch, not the baseline's runs.
    let (_, plan, _) = plan_json_with(&f, &["--commit", "11111111", "--arm", "agent-x"]);
    let addrs = addresses(&plan);
    assert!(addrs.contains(&"pull[image=acme/vllm:baseline-aaaaaaaaaaaa]".to_string()));
    assert!(addrs.contains(&"patch[commit=11111111,arm=agent-x]".to_string()));
    assert!(
        !addrs.iter().any(|a| a.contains("arm=baseline")),
        "{addrs:#?}"
    );

    // Repeatable flags; the short name selects as well as a hash prefix; without --arm every
    // arm of the selected commits, and the compare too.
    let (_, plan, _) = plan_json_with(&f, &["--commit", "22222222", "--commit", "1111111111"]);
    assert_eq!(
        plan["summary"]["run"], 56,
        "both commits: the whole campaign"
    );
    assert_eq!(plan["target"]["compare_skipped"], false);
    let (_, plan, _) = plan_json_with(&f, &["--arm", "human", "--arm", "baseline"]);
    let addrs = addresses(&plan);
    assert!(addrs.iter().any(|a| a.contains("arm=baseline")));
    assert!(!addrs.iter().any(|a| a.contains("agent-x")));
    assert!(!addrs.iter().any(|a| a.starts_with("compare[")));

    // The text plan says what is targeted in its first line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(["plan", "--commit", "1111", "--arm", "human"])
        .arg(f.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "Targeting 1 of 2 commit(s) (11111111), 1 of 3 arm(s) (human); per-commit compare skipped (it needs every arm): other nodes are not planned.\n"
        ),
        "{text}"
    );
}

#[test]
fn unknown_selectors_fail_with_the_valid_values() {
    let f = Fixture::new(MANIFEST);
    // miette wraps long messages and draws a margin: compare the words.
    let words = |s: &str| {
        s.replace('│', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (code, _, stderr) = plan_json_with(&f, &["--commit", "deadbeef"]);
    let stderr = words(&stderr);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "--commit `deadbeef` matches no commit of the manifest; valid: 11111111, 22222222"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = plan_json_with(&f, &["--arm", "codex"]);
    let stderr = words(&stderr);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "--arm `codex` is not an arm of the manifest; valid: baseline, human, agent-x"
        ),
        "{stderr}"
    );
}

/// With a selection, recorded nodes of other commits are not "orphaned" (they are still in the
/// manifest), and cached nodes of the selection stay cached.
#[test]
fn a_selection_does_not_orphan_the_rest() {
    let f = Fixture::new(MANIFEST);
    f.mark_all_done();
    let (code, plan, stderr) = plan_json_with(&f, &["--commit", "2222", "--arm", "human"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(plan["summary"]["orphaned"], 0);
    assert_eq!(plan["orphaned"].as_array().unwrap().len(), 0);
    assert_eq!(plan["summary"]["run"], 0);
    assert_eq!(plan["summary"]["cached"], 11);
}
