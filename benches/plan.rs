//! Planning speed on a large generated campaign: 1000 commits × 4 arms × 3 trials, including
//! TOML parsing, validation, template rendering, expansion, key hashing and the state diff.
//!
//!     cargo bench --bench plan
//!
//! Prints the median of 7 runs per phase. Target: well under a second (< 0.3 s) in total.
use std::time::{Duration, Instant};

fn generate(dir: &std::path::Path, commits: usize) -> std::path::PathBuf {
    let mut m = String::from(
        r#"version = 1
name = "big"
repeats = 3
[images]
repo = "acme/vllm"
[[arms]]
name = "baseline"
image = "{{ images.repo }}:baseline-{{ commit.parent[:12] }}"
[[arms]]
name = "human"
image = "{{ images.repo }}:{{ commit.human }}"
[[arms]]
name = "agent-claude"
base = "baseline"
patch = "patches/claude/{{ commit.short }}.diff"
[[arms]]
name = "agent-codex"
base = "baseline"
patch = "patches/codex/{{ commit.short }}.diff"
[models.m]
hf = "org/model"
[server]
command = "python3 -m vllm.entrypoints.openai.api_server --model {{ model.hf }} --port {{ port }} --max-model-len {{ server.max_model_len }}"
max_model_len = 4096
"#,
    );
    for agent in ["claude", "codex"] {
        std::fs::create_dir_all(dir.join("patches").join(agent)).unwrap();
    }
    for i in 0..commits {
        let human = format!("{:08x}{:032x}", i as u32 + 0x1000_0000, i * 7919);
        let parent = format!("{:040x}", i * 104_729 + 1);
        m.push_str(&format!(
            "[[commits]]\nhuman = \"{human}\"\nparent = \"{parent}\"\nmodel = \"m\"\n"
        ));
        for agent in ["claude", "codex"] {
            std::fs::write(
                dir.join("patches")
                    .join(agent)
                    .join(format!("{}.diff", &human[..8])),
                format!("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-{i}\n+{agent}\n"),
            )
            .unwrap();
        }
    }
    let path = dir.join("big.toml");
    std::fs::write(&path, m).unwrap();
    path
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = generate(dir.path(), 1000);
    let (mut load, mut expand, mut diff, mut total) = (vec![], vec![], vec![], vec![]);
    let mut nodes = 0;
    for _ in 0..7 {
        let t0 = Instant::now();
        let campaign = isobench::manifest::load_file(&path).unwrap();
        let t1 = Instant::now();
        let dag = isobench::pipeline::expand::expand(&campaign, None);
        let t2 = Instant::now();
        let state = isobench::state::State::load(&campaign.state_dir).unwrap();
        let plan = isobench::plan::plan(&campaign, &dag, &state, &Default::default());
        let t3 = Instant::now();
        nodes = plan.nodes.len();
        load.push(t1 - t0);
        expand.push(t2 - t1);
        diff.push(t3 - t2);
        total.push(t3 - t0);
    }
    println!("plan: 1000 commits × 4 arms × 3 trials = {nodes} nodes");
    println!(
        "  load+validate+render  {:>8.1} ms",
        median(load).as_secs_f64() * 1e3
    );
    println!(
        "  expand+keys           {:>8.1} ms",
        median(expand).as_secs_f64() * 1e3
    );
    println!(
        "  state diff            {:>8.1} ms",
        median(diff).as_secs_f64() * 1e3
    );
    println!(
        "  total (median of 7)   {:>8.1} ms",
        median(total).as_secs_f64() * 1e3
    );
}
