//! Every malformed manifest gets a located diagnostic: file, line, column, message (and a help
//! line where one helps). Each case asserts the message and where it points.

mod common;

use isobench::manifest::{self, ManifestError};
use std::path::Path;

const BASE: &str = r#"version = 1
name = "t"
repeats = 2

[images]
repo = "acme/vllm"

[[arms]]
name = "baseline"
image = "{{ images.repo }}:baseline-{{ commit.parent[:12] }}"

[[arms]]
name = "human"
image = "{{ images.repo }}:{{ commit.human }}"

[models.qwen]
hf = "Qwen/Qwen3-1.7B"

[server]
command = "serve {{ model.hf }} --port {{ port }}"

[load]
num_prompts = 10

[[commits]]
human = "015069b01741e9ecb9e604c7fe87fbdfc306ebe5"
parent = "fbefc8a78d22"
model = "qwen"
"#;

fn load(text: &str) -> Result<manifest::Campaign, ManifestError> {
    manifest::load_str("m.toml", text, Path::new("/nonexistent-dir"))
}

/// The one-line forms `m.toml:LINE:COL: message` of every diagnostic.
fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.short_lines(),
    }
}

fn helps(text: &str) -> Vec<String> {
    load(text)
        .unwrap_err()
        .diagnostics
        .iter()
        .filter_map(|d| d.help.clone())
        .collect()
}

/// Asserts exactly one diagnostic, at `line:col`, whose message contains `needle`.
fn one(text: &str, at: &str, needle: &str) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one diagnostic, got {e:#?}");
    assert!(
        e[0].starts_with(&format!("m.toml:{at}: ")),
        "expected location {at}, got {}",
        e[0]
    );
    assert!(e[0].contains(needle), "expected `{needle}` in {}", e[0]);
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_manifest_is_valid() {
    let c = load(BASE).unwrap();
    assert_eq!(c.commits.len(), 1);
    assert_eq!(c.commits[0].arms.len(), 2);
    assert_eq!(c.commits[0].short, "015069b0");
    assert_eq!(
        c.commits[0].arms[0].source.describe(),
        "acme/vllm:baseline-fbefc8a78d22"
    );
}

#[test]
fn d01_malformed_toml() {
    // The parser may report follow-on errors of one typo; the first points at it.
    let e = errors(&replace("repeats = 2", "repeats = = 2"));
    assert!(e[0].starts_with("m.toml:3:11: TOML syntax"), "{e:#?}");
    assert!(e.iter().all(|l| l.contains("TOML syntax")), "{e:#?}");
}

#[test]
fn d02_unknown_top_level_key_with_suggestion() {
    one(
        &replace("repeats = 2", "repeat = 2"),
        "3:1",
        "unknown key `repeat` at the top level",
    );
    assert!(
        helps(&replace("repeats = 2", "repeat = 2"))
            .contains(&"did you mean `repeats`?".to_string())
    );
}

#[test]
fn d03_unknown_key_in_commit() {
    let text = replace("model = \"qwen\"", "modle = \"qwen\"");
    let e = errors(&text);
    // The misspelt key, and the key it should have been.
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e.iter()
            .any(|l| l.starts_with("m.toml:28:1: unknown key `modle` in `commits[0]`")),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("`commits[0]` is missing the required key `model`")),
        "{e:#?}"
    );
    assert!(helps(&text).contains(&"did you mean `model`?".to_string()));
}

#[test]
fn d04_wrong_type() {
    one(
        &replace("repeats = 2", "repeats = \"2\""),
        "3:11",
        "`repeats`: expected integer, found string",
    );
}

#[test]
fn d05_missing_required_key() {
    one(
        &replace("parent = \"fbefc8a78d22\"\n", ""),
        "25:1",
        "`commits[0]` is missing the required key `parent`",
    );
}

#[test]
fn d06_unknown_model_reference() {
    let text = replace("model = \"qwen\"", "model = \"qwne\"");
    one(&text, "28:9", "unknown model `qwne`");
    assert!(helps(&text).contains(&"did you mean `qwen`?".to_string()));
}

#[test]
fn d07_unknown_base_arm() {
    let text = with(
        "\n[[arms]]\nname = \"agent\"\nbase = \"basline\"\npatch = \"p/{{ commit.short }}.diff\"\n",
    );
    one(
        &text,
        "32:8",
        "arm `agent` is based on unknown arm `basline`",
    );
    assert!(helps(&text).contains(&"did you mean `baseline`?".to_string()));
}

#[test]
fn d08_unknown_pipeline() {
    let text = replace("repeats = 2", "repeats = 2\npipeline = \"serve-bnch\"");
    one(
        &text,
        "4:12",
        "no pipeline named `serve-bnch`; did you mean `serve-bench`?",
    );
}

#[test]
fn d09_duplicate_commit() {
    let text = with(
        "\n[[commits]]\nhuman = \"015069b01741e9ecb9e604c7fe87fbdfc306ebe5\"\nparent = \"fbefc8a78d22\"\nmodel = \"qwen\"\n",
    );
    one(&text, "31:9", "commit 015069b01741 is listed twice");
    assert!(
        helps(&text)
            .iter()
            .any(|h| h.contains("first listed at line 26"))
    );
}

#[test]
fn d10_bad_hash() {
    one(
        &replace("parent = \"fbefc8a78d22\"", "parent = \"main~1\""),
        "27:10",
        "`main~1` is not a git commit hash",
    );
}

#[test]
fn d11_zero_repeats() {
    one(
        &replace("repeats = 2", "repeats = 0"),
        "3:11",
        "`repeats`: must be at least 1, found 0",
    );
}

#[test]
fn d12_negative_num_prompts() {
    one(
        &replace("num_prompts = 10", "num_prompts = -5"),
        "23:15",
        "`load.num_prompts`: must be at least 1, found -5",
    );
}

#[test]
fn d13_zero_concurrency_in_list() {
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\nconcurrency = [1, 0, 64]",
        ),
        "24:19",
        "concurrency must be at least 1",
    );
}

#[test]
fn d14_undefined_template_variable_points_into_the_string() {
    let text = replace(
        "{{ images.repo }}:{{ commit.human }}",
        "{{ images.repo }}:{{ commit.hman }}",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    // Line 14, column of `commit.hman` inside the string.
    let col = "image = \"{{ images.repo }}:{{ ".len() + 1;
    assert!(
        e[0].starts_with(&format!(
            "m.toml:14:{col}: template `arms[1].image` uses an undefined variable"
        )),
        "{e:#?}"
    );
    assert!(helps(&text)[0].contains("commit.{human,parent,short"));
}

#[test]
fn d15_template_syntax_error() {
    one(
        &replace("serve {{ model.hf }}", "serve {{ model.hf }"),
        "20:30",
        "template `server.command` has a syntax error",
    );
}

#[test]
fn d16_config_drift_between_arms() {
    let text = replace(
        "serve {{ model.hf }}",
        "serve {% if arm.name == 'human' %}other/model{% else %}{{ model.hf }}{% endif %}",
    );
    one(
        &text,
        "20:11",
        "the server command differs between arms `baseline` and `human` beyond their declared fields",
    );
    assert!(helps(&text)[0].contains("declared `args`/`env`"));
}

#[test]
fn d17_unsatisfiable_gpu_request() {
    let text = replace(
        "num_prompts = 10",
        "num_prompts = 10\n[resources]\ngpus = [0, 1]",
    )
    .replace("--port {{ port }}\"", "--port {{ port }}\"\ngpus = 4");
    one(
        &text,
        "21:8",
        "unsatisfiable GPU request: commit 015069b0 needs 4 GPUs per server, only 2 declared",
    );
}

#[test]
fn d18_arm_with_two_sources() {
    one(
        &replace(
            "name = \"human\"\n",
            "name = \"human\"\npath = \"/opt/venv\"\n",
        ),
        "12:1",
        "arm `human` must get its server in exactly one way",
    );
}

#[test]
fn d19_duplicate_arm_name() {
    let text = with("\n[[arms]]\nname = \"human\"\nimage = \"x/y:z\"\n");
    // Arms are declared after [[commits]] here, so the duplicate is at line 31.
    one(&text, "31:8", "duplicate arm name `human`");
}

#[test]
fn d20_bad_duration() {
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\ntimeout = \"ten minutes\"",
        ),
        "24:11",
        "`ten minutes` is not a duration",
    );
}

#[test]
fn d21_bad_request_rate() {
    let text = replace(
        "num_prompts = 10",
        "num_prompts = 10\nrequest_rate = \"fast\"",
    );
    one(
        &text,
        "24:16",
        "request rate must be a number of requests per second or \"inf\", found \"fast\"",
    );
}

#[test]
fn d22_unsupported_version() {
    one(
        &replace("version = 1", "version = 2"),
        "1:11",
        "unsupported manifest version 2",
    );
}

#[test]
fn d23_zero_input_len() {
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\ndataset = { input_len = 0 }",
        ),
        "24:25",
        "`load.dataset.input_len`: must be at least 1, found 0",
    );
}

#[test]
fn d24_negative_temperature() {
    one(
        &replace("num_prompts = 10", "num_prompts = 10\ntemperature = -0.5"),
        "24:15",
        "temperature must not be negative",
    );
}

#[test]
fn d25_unknown_backend_with_suggestion() {
    let text = replace(
        "num_prompts = 10",
        "num_prompts = 10\nbackend = \"openai-chta\"",
    );
    one(
        &text,
        "24:11",
        "`load.backend`: expected one of `openai-chat`, `openai`",
    );
    assert!(helps(&text).contains(&"did you mean `openai-chat`?".to_string()));
}

#[test]
fn d26_endpoint_without_slash() {
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\nendpoint = \"v1/chat/completions\"",
        ),
        "24:12",
        "endpoint `v1/chat/completions` must start with `/`",
    );
}

#[test]
fn d27_invalid_rendered_image_reference() {
    let text = replace("repo = \"acme/vllm\"", "repo = \"Acme/VLLM\"");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("m.toml:10:9: arm `baseline` renders to an invalid image reference `Acme/VLLM:baseline-fbefc8a78d22`"), "{e:#?}");
}

#[test]
fn d28_commit_is_its_own_parent() {
    one(
        &replace(
            "parent = \"fbefc8a78d22\"",
            "parent = \"015069b01741e9ecb9e604c7fe87fbdfc306ebe5\"",
        ),
        "27:10",
        "a commit cannot be its own parent",
    );
}

#[test]
fn d29_image_with_process_runtime() {
    let text = replace("[server]\n", "[server]\nruntime = \"process\"\n");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with(
            "m.toml:10:9: arm `baseline` has an `image`, but the server runtime is `process`"
        ),
        "{e:#?}"
    );
}

#[test]
fn d30_no_baseline_role() {
    let text = replace("name = \"baseline\"", "name = \"base\"\nrole = \"human\"");
    let e = errors(&text);
    assert!(
        e.iter()
            .any(|l| l.contains("more than one arm") || l.contains("no arm has the baseline role")),
        "{e:#?}"
    );
}

#[test]
fn d31_unknown_arm_in_commit_arms() {
    let text = replace(
        "model = \"qwen\"",
        "model = \"qwen\"\narms = [\"baseline\", \"humn\"]",
    );
    one(&text, "29:21", "commit lists unknown arm `humn`");
}

#[test]
fn d32_bad_volume_and_shm() {
    let text = replace(
        "[server]\n",
        "[server]\nshm_size = \"lots\"\nvolumes = [\"/data\"]\n",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("m.toml:20:12: `lots` is not a size"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("m.toml:21:12: volume `/data` is not `host:/container[:ro|rw]`"),
        "{e:#?}"
    );
}

#[test]
fn d33_all_errors_are_reported_together() {
    let text = replace("repeats = 2", "repeats = 0\nbogus = true")
        .replace("num_prompts = 10", "num_prompts = \"ten\"");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    // In file order.
    assert!(
        e[0].contains("repeats")
            && e[1].contains("unknown key `bogus`")
            && e[2].contains("num_prompts"),
        "{e:#?}"
    );
}

#[test]
fn d34_never_a_panic_on_garbage() {
    for garbage in [
        "",
        "\u{0}",
        "[[[",
        "version = 1\n[[commits]]\nhuman = 5",
        "arms = 3",
        "[models]\nx = 1",
    ] {
        let e = load(garbage).unwrap_err();
        assert!(!e.diagnostics.is_empty());
        for d in &e.diagnostics {
            assert!(!d.message.is_empty());
        }
    }
}

#[test]
fn d35_rendered_miette_report_names_file_line_and_help() {
    let text = replace("model = \"qwen\"", "model = \"qwne\"");
    let report = miette::Report::new(load(&text).unwrap_err());
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut rendered, report.as_ref())
        .unwrap();
    assert!(rendered.contains("m.toml:28:9"), "{rendered}");
    assert!(rendered.contains("unknown model `qwne`"), "{rendered}");
    assert!(rendered.contains("did you mean `qwen`?"), "{rendered}");
}

#[test]
fn d36_duplicate_list_values() {
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\nconcurrency = [1, 16, 16]",
        ),
        "24:23",
        "concurrency 16 is listed twice",
    );
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\nrequest_rate = [4.0, \"inf\", 4.0]",
        ),
        "24:29",
        "request_rate 4 is listed twice",
    );
}

#[test]
fn d37_model_file_fields_are_templates_with_vars_only() {
    // A model's files are the same for every commit and arm: `commit.*` is undefined there, and
    // the error points into the `tokenizer` string.
    let text = replace(
        "hf = \"Qwen/Qwen3-1.7B\"",
        "hf = \"Qwen/Qwen3-1.7B\"\ntokenizer = \"tok/{{ commit.short }}\"",
    );
    let col = "tokenizer = \"tok/{{ ".len() + 1;
    one(
        &text,
        &format!("18:{col}"),
        "template `models.qwen.tokenizer` uses an undefined variable",
    );
    // `vars` render; a tokenizer that does not exist is reported under its rendered name.
    let text = format!(
        "vars = {{ where = \"nowhere\" }}\n{}",
        replace(
            "hf = \"Qwen/Qwen3-1.7B\"",
            "hf = \"Qwen/Qwen3-1.7B\"\ntokenizer = \"{{ vars.where }}/tok\"",
        )
    );
    one(
        &text,
        "19:13",
        "tokenizer `nowhere/tok` of model `qwen` does not exist",
    );
}

#[test]
fn model_path_template_reaches_the_server_command_and_the_served_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let text = format!(
        "vars = {{ models = \"{}\" }}\n{}",
        dir.path().display(),
        replace(
            "hf = \"Qwen/Qwen3-1.7B\"",
            "hf = \"Qwen/Qwen3-1.7B\"\npath = \"{{ vars.models }}/qwen\"\ntokenizer = \"{{ vars.models }}\"",
        )
        .replace("serve {{ model.hf }}", "serve {{ model.path }}")
    );
    let campaign = load(&text).unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    let commit = &campaign.commits[0];
    let expected = format!("{}/qwen", dir.path().display());
    assert_eq!(commit.arms[0].argv[1], expected);
    // vLLM serves under the `--model` it was given unless told otherwise.
    assert_eq!(commit.model.served_name, expected);
    assert_eq!(commit.model.tokenizer.as_deref(), Some(dir.path()));
}

#[test]
fn d38_timed_window_settings() {
    let timed = |extra: &str| replace("num_prompts = 10", &format!("num_prompts = 10\n{extra}"));
    one(
        &timed("duration = \"60s\"\ntimeout = \"50s\""),
        "24:12",
        "ramp-up + duration (65 s) must be shorter than the measure step's timeout (50 s)",
    );
    one(
        &timed("ramp_up = \"5s\""),
        "24:11",
        "ramp_up only applies to a timed run",
    );
    one(
        &timed("duration = \"0s\""),
        "24:12",
        "duration must be longer than 0 s",
    );
    one(
        &timed("duration = \"a minute\""),
        "24:12",
        "`a minute` is not a duration",
    );
    let c = load(&timed("duration = \"30s\"\nramp_up = \"2s\"")).unwrap();
    let t = c.commits[0].load.timed.expect("timed");
    assert_eq!(
        (t.ramp_up.as_secs(), t.duration.as_secs()),
        (2, 30),
        "{t:?}"
    );
    let c = load(&timed("duration = \"30s\"")).unwrap();
    assert_eq!(
        c.commits[0].load.timed.unwrap().ramp_up.as_secs(),
        5,
        "default ramp-up"
    );
    assert!(load(BASE).unwrap().commits[0].load.timed.is_none());
}

/// `[images.build]`: the recipe is rendered per arm against a real git clone next to the
/// manifest; what cannot be built is a located error at `plan`, not a surprise at build time.
#[test]
fn d39_build_recipes_are_checked_against_the_clone() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let git = |args: &[&str]| common::git_repo::git(&src, args);
    git(&["init", "-q"]);
    std::fs::create_dir(src.join("docker")).unwrap();
    std::fs::write(src.join("docker/Dockerfile"), "FROM scratch\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "parent"]);
    let parent = git(&["rev-parse", "HEAD"]);
    std::fs::write(src.join("x"), "1").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "human"]);
    let human = git(&["rev-parse", "HEAD"]);
    let tree = git(&["rev-parse", "HEAD^{tree}"]);

    let manifest = |build: &str, image: &str, commit_human: &str| {
        BASE.replace(
            "repo = \"acme/vllm\"\n",
            &format!("repo = \"acme/vllm\"\n\n[images.build]\n{build}\n"),
        )
        .replace(
            "image = \"{{ images.repo }}:baseline-{{ commit.parent[:12] }}\"",
            &format!("image = \"{image}\""),
        )
        .replace(
            "image = \"{{ images.repo }}:{{ commit.human }}\"",
            &format!("image = \"{image}\""),
        )
        .replace("015069b01741e9ecb9e604c7fe87fbdfc306ebe5", commit_human)
        .replace("fbefc8a78d22", &parent[..12])
    };
    let per_arm = "{{ images.repo }}:{{ arm.name }}-{{ arm.commit[:12] }}";
    let recipe = "source = { repo = \"src\" }\ndockerfile = \"docker/Dockerfile\"\nargs = { VLLM_COMMIT = \"{{ arm.commit }}\" }\ntarget = \"serve\"";
    let load_here = |text: &str| manifest::load_str("m.toml", text, dir.path());
    let located = |text: &str, needle: &str, field: &str| {
        let e = load_here(text).unwrap_err().short_lines();
        assert_eq!(e.len(), 1, "{e:#?}");
        let line = text.lines().position(|l| l.starts_with(field)).unwrap() + 1;
        assert!(
            e[0].starts_with(&format!("m.toml:{line}:")),
            "{e:?} (want line {line})"
        );
        assert!(e[0].contains(needle), "{e:?}");
    };

    // Valid: each arm's image at its own commit, arguments rendered per arm.
    let c = load_here(&manifest(recipe, per_arm, &human)).unwrap();
    assert_eq!(c.builds.len(), 2, "{:#?}", c.builds);
    let baseline = &c.builds[&format!("acme/vllm:baseline-{}", &parent[..12])];
    let human_build = &c.builds[&format!("acme/vllm:human-{}", &human[..12])];
    assert_eq!(
        baseline.commit, parent,
        "the short parent is resolved in the clone"
    );
    assert_eq!(baseline.args["VLLM_COMMIT"], parent[..12].to_string());
    assert_eq!(human_build.commit, human);
    assert_eq!(human_build.tree, tree);
    assert_eq!(human_build.target.as_deref(), Some("serve"));
    // `build = false` leaves an arm to be pulled.
    let opted_out = manifest(recipe, per_arm, &human)
        .replace("name = \"human\"\n", "name = \"human\"\nbuild = false\n");
    assert_eq!(load_here(&opted_out).unwrap().builds.len(), 1);

    // A commit the clone does not have.
    let unknown = "1234567890123456789012345678901234567890";
    located(
        &manifest(recipe, per_arm, unknown),
        &format!("commit {unknown} is not in the clone"),
        "source = ",
    );
    // No clone at all.
    located(
        &manifest(&recipe.replace("\"src\"", "\"nowhere\""), per_arm, &human),
        "no git clone at",
        "source = ",
    );
    // A Dockerfile neither next to the manifest nor in the source tree.
    located(
        &manifest(
            &recipe.replace("docker/Dockerfile", "Dockerfile.gone"),
            per_arm,
            &human,
        ),
        "no Dockerfile `Dockerfile.gone`",
        "dockerfile = ",
    );
    // One reference for two commits' trees: built twice from different sources.
    located(
        &manifest(recipe, "acme/vllm:same", &human),
        "would be built twice from different sources",
        "[images.build]",
    );
}

/// `[check.outputs] mode`: `exact`, `floor` (the default) or `off`; a wrong value is pointed
/// at, with the nearest name suggested.
#[test]
fn d40_outputs_check_mode() {
    use isobench::manifest::types::OutputsMode;
    let text = with("\n[check.outputs]\nmode = \"exakt\"\n");
    let line = text.lines().count();
    one(
        &text,
        &format!("{line}:8"),
        "`check.outputs.mode`: expected one of `exact`, `floor`, `off`",
    );
    assert!(helps(&text).contains(&"did you mean `exact`?".to_string()));
    let unknown = with("\n[check.outputs]\nmod = \"exact\"\n");
    assert!(
        errors(&unknown)[0].contains("mod"),
        "{:?}",
        errors(&unknown)
    );
    assert_eq!(load(BASE).unwrap().compare.outputs, OutputsMode::Floor);
    for (value, mode) in [
        ("exact", OutputsMode::Exact),
        ("floor", OutputsMode::Floor),
        ("off", OutputsMode::Off),
    ] {
        let c = load(&with(&format!("\n[check.outputs]\nmode = \"{value}\"\n"))).unwrap();
        assert_eq!(c.compare.outputs, mode);
    }
}

/// Dataset files are checked at `plan` (open, first record), located at the `path` written;
/// the rest of the file is not read there.
#[test]
fn d45_dataset_files_missing_or_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let load_here = |text: &str| manifest::load_str("m.toml", text, dir.path());
    let dataset = |line: &str| replace("num_prompts = 10", &format!("num_prompts = 10\n{line}"));
    let located = |text: &str, needle: &str| {
        let e = load_here(text).unwrap_err().short_lines();
        assert_eq!(e.len(), 1, "{e:#?}");
        let line = text.lines().position(|l| l.starts_with("dataset")).unwrap() + 1;
        assert!(
            e[0].starts_with(&format!("m.toml:{line}:")),
            "{e:?} (want line {line})"
        );
        assert!(e[0].contains(needle), "{e:?}");
    };
    located(
        &dataset(r#"dataset = { name = "sharegpt", path = "gone.json" }"#),
        "cannot open",
    );
    // A ShareGPT file that is an object, not a list of entries.
    std::fs::write(dir.path().join("obj.json"), r#"{"conversations": []}"#).unwrap();
    located(
        &dataset(r#"dataset = { name = "sharegpt", path = "obj.json" }"#),
        "is not a ShareGPT file",
    );
    // Only the first record is read: a later broken line is not a plan-time error.
    std::fs::write(
        dir.path().join("p.jsonl"),
        "{\"prompt\": \"a\", \"output_tokens\": 3}\nnot json\n",
    )
    .unwrap();
    let ok = load_here(&dataset(
        r#"dataset = { name = "custom", path = "p.jsonl" }"#,
    ))
    .unwrap();
    assert_eq!(ok.commits[0].load.workload.name(), "custom");
    assert_eq!(
        ok.commits[0].load.workload.path(),
        Some(dir.path().join("p.jsonl").as_path())
    );
    std::fs::write(dir.path().join("bad.jsonl"), "{\"text\": \"a\"}\n").unwrap();
    located(
        &dataset(r#"dataset = { name = "custom", path = "bad.jsonl" }"#),
        "bad.jsonl:1: the record has no `prompt`",
    );
    std::fs::write(dir.path().join("nolen.jsonl"), "{\"prompt\": \"a\"}\n").unwrap();
    located(
        &dataset(r#"dataset = { name = "custom", path = "nolen.jsonl" }"#),
        "no `output_tokens` and `dataset.output_len` is not set",
    );
    assert!(
        load_here(&dataset(
            r#"dataset = { name = "custom", path = "nolen.jsonl", output_len = 8 }"#
        ))
        .is_ok()
    );
}

#[test]
fn d46_dataset_settings_that_do_not_fit_the_workload() {
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\ndataset = { name = \"sharegpt\" }",
        ),
        "24:20",
        "the sharegpt dataset needs `dataset.path`",
    );
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\ndataset = { path = \"x.json\" }",
        ),
        "24:20",
        "only the `sharegpt` and `custom` datasets read a file",
    );
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\ndataset = { name = \"prefix_repetition\", num_prefixes = 20 }",
        ),
        "24:56",
        "num_prefixes (20) must be between 1 and num_prompts (10)",
    );
    one(
        &replace(
            "num_prompts = 10",
            "num_prompts = 10\ndataset = { multi_turn = true }",
        ),
        "24:26",
        "multi-turn conversations need a `sharegpt` or `custom` dataset",
    );
    let c = load(&replace(
        "num_prompts = 10",
        "num_prompts = 10\ndataset = { name = \"prefix_repetition\", num_prefixes = 5 }",
    ))
    .unwrap();
    let l = &c.commits[0].load;
    assert_eq!((l.prefix_len, l.output_len), (256, 128), "vLLM's defaults");
    assert_eq!(
        l.workload,
        isobench::loadgen::Workload::PrefixRepetition {
            suffix_len: 256,
            num_prefixes: 5
        }
    );
}

/// `load.extra_body`: passed through, the same for every arm, except the fields isobench sets.
#[test]
fn d47_extra_body_may_not_override_owned_fields() {
    let extra = |t: &str| {
        replace(
            "num_prompts = 10",
            &format!("num_prompts = 10\nextra_body = {t}"),
        )
    };
    one(
        &extra("{ top_k = 1, stream = false }"),
        "24:36",
        "`stream` is set by isobench; `extra_body` may not override it",
    );
    let c = load(&extra(
        "{ top_k = 1, response_format = { type = \"json_object\" } }",
    ))
    .unwrap();
    let body = c.commits[0].load.extra_body.as_ref().unwrap();
    assert_eq!(body["top_k"], 1);
    assert_eq!(body["response_format"]["type"], "json_object");
}

#[test]
fn d48_slo_percentiles_and_search_settings() {
    let in_load = |lines: &str| replace("num_prompts = 10", &format!("num_prompts = 10\n{lines}"));
    // A search needs SLOs; the diagnostic points at the search table.
    one(
        &in_load(r#"search = { over = "rate", range = [1, 64] }"#),
        "24:10",
        "a search needs SLOs",
    );
    let slo = "slo = { ttft_ms = 500 }\n";
    one(
        &in_load(&format!(
            r#"{slo}search = {{ over = "rate", range = [64, 1] }}"#
        )),
        "25:35",
        "`range` must be two request rates, low < high",
    );
    one(
        &in_load(&format!(
            r#"{slo}search = {{ over = "concurrency", range = [1.5, 8] }}"#
        )),
        "25:42",
        "two whole numbers of requests in flight",
    );
    one(
        &in_load(&format!(
            r#"{slo}search = {{ over = "rate", range = [1, 8], num_prompts = 11 }}"#
        )),
        "25:57",
        "between 1 and load.num_prompts (10)",
    );
    one(
        &in_load(&format!(
            r#"{slo}search = {{ over = "rate", range = [1, 8], attainment = 1.5 }}"#
        )),
        "25:56",
        "`attainment` is a fraction of requests",
    );
    one(
        &in_load("slo = { ttft_ms = -5 }"),
        "24:19",
        "`ttft_ms` must be a positive number of milliseconds",
    );
    one(&in_load("slo = {}"), "24:7", "at least one of `ttft_ms`");
    one(
        &in_load("percentiles = [50, 100]"),
        "24:15",
        "percentile 100 is not between 0 and 100",
    );
    // Unknown keys in the new tables get the schema's diagnostic, with a suggestion.
    let typo = in_load(&format!(
        r#"{slo}search = {{ over = "rate", range = [1, 8], tolerence = 0.1 }}"#
    ));
    one(&typo, "25:43", "unknown key `tolerence` in `load.search`");
    assert!(
        helps(&typo).iter().any(|h| h.contains("tolerance")),
        "{:?}",
        helps(&typo)
    );
    // A valid search: one more load point after none given explicitly (the search alone).
    let c = load(&in_load(&format!(
        "{slo}search = {{ over = \"concurrency\", range = [1, 16] }}"
    )))
    .unwrap();
    let points = &c.commits[0].load.points;
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].label(), "search=concurrency");
    assert_eq!(points[0].search.unwrap().max_probes(), 6);
    // With a concurrency list, the fixed points come first and the search after them.
    let c = load(&in_load(&format!(
        "concurrency = [2, 8]\n{slo}search = {{ over = \"rate\", range = [1, 64] }}"
    )))
    .unwrap();
    let labels: Vec<String> = c.commits[0].load.points.iter().map(|p| p.label()).collect();
    assert_eq!(labels, ["conc=2", "conc=8", "search=rate"]);
    assert_eq!(c.commits[0].load.slo.ttft_ms, Some(500.0));
    assert_eq!(c.commits[0].load.percentiles, [50.0, 99.0]);
}
