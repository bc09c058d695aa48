//! Pipeline definitions (`pipelines/*.toml`): which steps every session goes through.

use super::diag::{Collector, ManifestError, Source, did_you_mean};
use super::schema_check::SchemaChecker;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Built-in pipelines, embedded so the binary works from any directory.
pub const BUILTIN: &[(&str, &str)] = &[(
    "serve-bench",
    include_str!("../../pipelines/serve-bench.toml"),
)];

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
pub enum StepKind {
    #[serde(rename = "image.pull")]
    ImagePull,
    #[serde(rename = "image.patch")]
    ImagePatch,
    #[serde(rename = "server.start")]
    ServerStart,
    #[serde(rename = "server.ready")]
    ServerReady,
    #[serde(rename = "load.warmup")]
    LoadWarmup,
    #[serde(rename = "load.measure")]
    LoadMeasure,
    #[serde(rename = "server.stop")]
    ServerStop,
    #[serde(rename = "compare")]
    Compare,
    /// How the `image.pull` step is instantiated for an image with a build recipe
    /// (`[images.build]`): built from its commit. Not written in pipeline files.
    #[serde(skip)]
    ImageBuild,
    /// After an [`StepKind::ImageBuild`] with `push = true`: the built image pushed to its
    /// reference. Not written in pipeline files.
    #[serde(skip)]
    ImagePush,
}

/// What one instance of a step is about; decides how steps are instantiated and connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One per distinct image (or installation).
    Image,
    /// One per (commit, patched arm).
    Patch,
    /// One per (commit, arm, trial): a server's life.
    Session,
    /// One per session and load point.
    Point,
    /// One per commit.
    Commit,
}

impl StepKind {
    pub const ALL: [StepKind; 8] = [
        StepKind::ImagePull,
        StepKind::ImagePatch,
        StepKind::ServerStart,
        StepKind::ServerReady,
        StepKind::LoadWarmup,
        StepKind::LoadMeasure,
        StepKind::ServerStop,
        StepKind::Compare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKind::ImagePull => "image.pull",
            StepKind::ImagePatch => "image.patch",
            StepKind::ServerStart => "server.start",
            StepKind::ServerReady => "server.ready",
            StepKind::LoadWarmup => "load.warmup",
            StepKind::LoadMeasure => "load.measure",
            StepKind::ServerStop => "server.stop",
            StepKind::Compare => "compare",
            StepKind::ImageBuild => "image.build",
            StepKind::ImagePush => "image.push",
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            StepKind::ImagePull | StepKind::ImageBuild | StepKind::ImagePush => Scope::Image,
            StepKind::ImagePatch => Scope::Patch,
            StepKind::ServerStart
            | StepKind::ServerReady
            | StepKind::LoadWarmup
            | StepKind::ServerStop => Scope::Session,
            StepKind::LoadMeasure => Scope::Point,
            StepKind::Compare => Scope::Commit,
        }
    }

    /// Steps whose effect lasts only while their server runs: they are redone whenever their
    /// session must run, and are never cached on their own.
    pub fn is_ephemeral(self) -> bool {
        self.scope() == Scope::Session
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub steps: Vec<StepDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Step id, used in node addresses (`measure[...]`) and in `after`.
    pub id: String,
    /// Built-in step kind.
    pub kind: StepKind,
    /// Steps this one runs after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A validated pipeline: steps in a topological order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    /// Where it came from (`builtin:serve-bench` or a path).
    pub origin: String,
    pub steps: Vec<StepDef>,
    /// Hash of the pipeline text: a changed pipeline changes every key.
    pub hash: crate::util::hash::Hash,
}

impl Pipeline {
    pub fn step(&self, kind: StepKind) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.kind == kind)
    }

    pub fn has(&self, kind: StepKind) -> bool {
        self.step(kind).is_some()
    }

    /// The step id used in addresses for a kind (e.g. `measure`).
    pub fn id_of(&self, kind: StepKind) -> Option<&str> {
        self.step(kind).map(|s| s.id.as_str())
    }
}

/// Finds a pipeline by name (a file `pipelines/<name>.toml` next to the manifest, or a built-in)
/// or by path (anything ending in `.toml`).
pub fn locate(reference: &str, manifest_dir: &Path) -> Result<(String, String), String> {
    let candidates: Vec<PathBuf> = if reference.ends_with(".toml") {
        vec![manifest_dir.join(reference)]
    } else {
        vec![
            manifest_dir
                .join("pipelines")
                .join(format!("{reference}.toml")),
            manifest_dir
                .join("..")
                .join("pipelines")
                .join(format!("{reference}.toml")),
        ]
    };
    for path in &candidates {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok((path.display().to_string(), text));
        }
    }
    if let Some((name, text)) = BUILTIN.iter().find(|(name, _)| *name == reference) {
        return Ok((format!("builtin:{name}"), text.to_string()));
    }
    let mut known: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    for dir in [
        manifest_dir.join("pipelines"),
        manifest_dir.join("..").join("pipelines"),
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            known.extend(entries.flatten().filter_map(|e| {
                e.path()
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
            }));
        }
    }
    known.sort();
    known.dedup();
    let mut message = format!("no pipeline named `{reference}`");
    if let Some(guess) = did_you_mean(reference, known.iter().map(String::as_str)) {
        message.push_str(&format!("; did you mean `{guess}`?"));
    } else {
        message.push_str(&format!(" (known: {})", known.join(", ")));
    }
    Err(message)
}

/// Parses and validates a pipeline file, collecting every problem.
pub fn parse(origin: &str, text: &str) -> Result<Pipeline, ManifestError> {
    let source = Source::new(origin, text);
    let mut out = Collector::default();
    let (table, errors) = toml::de::DeTable::parse_recoverable(text);
    for e in errors {
        out.error(
            &source,
            e.span().unwrap_or(0..0),
            format!("TOML syntax: {}", e.message()),
            "here",
        );
    }
    out.finish()?;
    let schema =
        serde_json::to_value(schemars::schema_for!(PipelineFile)).expect("schema serialises");
    let value = toml::Spanned::new(
        table.span(),
        toml::de::DeValue::Table(table.get_ref().clone()),
    );
    SchemaChecker::new(&schema, &source).check(&value, &schema, "", &mut out);
    out.finish()?;
    let file: PipelineFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            out.error(
                &source,
                e.span().unwrap_or(0..0),
                e.message().to_string(),
                "here",
            );
            return Err(out.finish().expect_err("has an error"));
        }
    };
    let spans = super::super::manifest::spans::SpanIndex::build(&table);
    // Unique ids, one step per kind, known `after` references.
    let ids: Vec<&str> = file.steps.iter().map(|s| s.id.as_str()).collect();
    for (i, step) in file.steps.iter().enumerate() {
        if ids[..i].contains(&step.id.as_str()) {
            out.error(
                &source,
                spans.value(&format!("steps[{i}].id")),
                format!("duplicate step id `{}`", step.id),
                "defined twice",
            );
        }
        if let Some(j) = file.steps[..i].iter().position(|s| s.kind == step.kind) {
            out.error(
                &source,
                spans.value(&format!("steps[{i}].kind")),
                format!(
                    "step kind `{}` appears twice (steps `{}` and `{}`)",
                    step.kind.name(),
                    file.steps[j].id,
                    step.id
                ),
                "second step of this kind",
            );
        }
        for (k, dep) in step.after.iter().enumerate() {
            if !ids.contains(&dep.as_str()) {
                let d = out.error(
                    &source,
                    spans.value(&format!("steps[{i}].after[{k}]")),
                    format!(
                        "step `{}` runs after `{dep}`, which is not a step of this pipeline",
                        step.id
                    ),
                    "dangling reference",
                );
                if let Some(guess) = did_you_mean(dep, ids.iter().copied()) {
                    d.with_help(format!("did you mean `{guess}`?"));
                }
            } else if dep == &step.id {
                out.error(
                    &source,
                    spans.value(&format!("steps[{i}].after[{k}]")),
                    format!("step `{}` runs after itself", step.id),
                    "cycle",
                );
            }
        }
    }
    // The session steps need a start; a start needs a stop (a server must never be left running).
    let has = |k: StepKind| file.steps.iter().any(|s| s.kind == k);
    let needs_start = [
        StepKind::ServerReady,
        StepKind::LoadWarmup,
        StepKind::LoadMeasure,
        StepKind::ServerStop,
    ];
    for (i, step) in file.steps.iter().enumerate() {
        if needs_start.contains(&step.kind) && !has(StepKind::ServerStart) {
            out.error(
                &source,
                spans.value(&format!("steps[{i}].kind")),
                format!(
                    "step `{}` ({}) needs a `server.start` step in the pipeline",
                    step.id,
                    step.kind.name()
                ),
                "no server to act on",
            );
        }
        if step.kind == StepKind::ServerStart && !has(StepKind::ServerStop) {
            out.error(
                &source,
                spans.value(&format!("steps[{i}].kind")),
                "a pipeline with `server.start` must also have `server.stop`".to_string(),
                "server would never stop",
            );
        }
    }
    out.finish()?;
    // Cycles: a topological sort of the step graph.
    let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
    let idx: Vec<_> = (0..file.steps.len()).map(|i| graph.add_node(i)).collect();
    for (i, step) in file.steps.iter().enumerate() {
        for dep in &step.after {
            let j = ids.iter().position(|id| id == dep).expect("checked above");
            if i != j {
                graph.add_edge(idx[j], idx[i], ());
            }
        }
    }
    let order = match petgraph::algo::toposort(&graph, None) {
        Ok(order) => order,
        Err(cycle) => {
            let i = graph[cycle.node_id()];
            out.error(
                &source,
                spans.value(&format!("steps[{i}].after")),
                format!("the steps form a cycle through `{}`", file.steps[i].id),
                "cycle",
            );
            return Err(out.finish().expect_err("has an error"));
        }
    };
    // Order must respect the session's life: a step may not run before one of an earlier phase.
    let steps: Vec<StepDef> = order
        .into_iter()
        .map(|n| file.steps[graph[n]].clone())
        .collect();
    Ok(Pipeline {
        name: file.name,
        description: file.description,
        origin: origin.to_string(),
        steps,
        hash: crate::util::hash::Hash::of(text.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pipeline_is_valid_and_ordered() {
        let p = parse("builtin:serve-bench", BUILTIN[0].1).unwrap();
        let kinds: Vec<_> = p.steps.iter().map(|s| s.kind).collect();
        let pos = |k| kinds.iter().position(|x| *x == k).unwrap();
        assert!(pos(StepKind::ImagePull) < pos(StepKind::ServerStart));
        assert!(pos(StepKind::ServerStart) < pos(StepKind::LoadMeasure));
        assert!(pos(StepKind::LoadMeasure) < pos(StepKind::ServerStop));
        assert_eq!(p.id_of(StepKind::LoadMeasure), Some("measure"));
    }

    fn errors(text: &str) -> Vec<String> {
        parse("p.toml", text).unwrap_err().short_lines()
    }

    #[test]
    fn cycle_dangling_and_unknown_kind_are_located() {
        let text = "name = \"x\"\n[[steps]]\nid = \"a\"\nkind = \"server.start\"\nafter = [\"b\"]\n[[steps]]\nid = \"b\"\nkind = \"server.stop\"\nafter = [\"a\"]\n";
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("cycle"), "{e:?}");

        let e = errors(
            "name = \"x\"\n[[steps]]\nid = \"a\"\nkind = \"server.start\"\nafter = [\"pul\"]\n[[steps]]\nid = \"s\"\nkind = \"server.stop\"\n",
        );
        assert_eq!(
            e,
            vec!["p.toml:5:10: step `a` runs after `pul`, which is not a step of this pipeline"]
        );

        let e = errors("name = \"x\"\n[[steps]]\nid = \"a\"\nkind = \"server.strat\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("p.toml:4:8: `steps[0].kind`: expected one of"),
            "{e:?}"
        );
    }
}
