//! Manifest text → [`Campaign`]: syntax, schema, references, templates, drift — every problem
//! collected and located before anything runs.

mod build;

use super::defaults as d;
use super::diag::{Collector, Diagnostic, ManifestError, Source, Warning, did_you_mean};
use super::model::*;
use super::schema_check::SchemaChecker;
use super::spans::SpanIndex;
use super::template::{Templates, split_command};
use super::types::*;
use crate::util;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The manifest's JSON Schema (generated from [`ManifestFile`]).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ManifestFile)).expect("schema serialises")
}

/// Loads, checks and resolves a manifest file.
pub fn load_file(path: &Path) -> Result<Campaign, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ManifestError::whole_file(
            &path.display().to_string(),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    load_str(&path.display().to_string(), &text, dir)
}

/// Loads a manifest from text; relative paths resolve against `manifest_dir`.
pub fn load_str(name: &str, text: &str, manifest_dir: &Path) -> Result<Campaign, ManifestError> {
    let source = Source::new(name, text);
    let mut out = Collector::default();

    // 1. Syntax (every error the parser can recover from).
    let (table, errors) = toml::de::DeTable::parse_recoverable(text);
    for e in &errors {
        out.error(
            &source,
            e.span().unwrap_or(0..0),
            format!("TOML syntax: {}", e.message().trim()),
            "here",
        );
    }
    if !errors.is_empty() {
        return Err(out.finish().expect_err("has errors"));
    }

    // 2. Shape: unknown keys, types, ranges, required keys — all of them.
    let schema = schema();
    let root = toml::Spanned::new(
        table.span(),
        toml::de::DeValue::Table(table.get_ref().clone()),
    );
    SchemaChecker::new(&schema, &source).check(&root, &schema, "", &mut out);
    if !out.is_empty() {
        return Err(out.finish().expect_err("has errors"));
    }
    let file: ManifestFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            out.error(
                &source,
                e.span().unwrap_or(0..0),
                e.message().trim().to_string(),
                "here",
            );
            return Err(out.finish().expect_err("has errors"));
        }
    };

    // 3. Meaning.
    let spans = SpanIndex::build(&table);
    let mut r = Resolver {
        source: &source,
        spans: &spans,
        out,
        manifest_dir: manifest_dir.to_path_buf(),
        templates: Templates::new(),
        model_files: BTreeMap::new(),
        warnings: Vec::new(),
        warned_env: HashSet::new(),
        builds: BTreeMap::new(),
        commit_lookups: HashMap::new(),
        build_problems: HashSet::new(),
        dataset_checks: HashMap::new(),
    };
    let campaign = r.resolve(&file);
    r.out.finish()?;
    let mut campaign = campaign.expect("no errors means a campaign");
    campaign.warnings = r.warnings;
    Ok(campaign)
}

struct Resolver<'a> {
    source: &'a Source,
    spans: &'a SpanIndex,
    out: Collector,
    manifest_dir: PathBuf,
    templates: Templates,
    /// Rendered file locations of each model (by key), from [`Resolver::check_models`].
    model_files: BTreeMap<String, ModelFiles>,
    /// Risky but valid: shown by `validate`, `plan` and `apply`, never fatal.
    warnings: Vec<Warning>,
    /// (template site, variable) pairs already warned about.
    warned_env: HashSet<(String, String)>,
    /// `[images.build]` rendered per image reference ([`Resolver::resolve_build`]).
    builds: BTreeMap<String, super::model::BuildSpec>,
    /// (clone, revision) → what git said, so each is looked up once per campaign.
    commit_lookups: HashMap<(PathBuf, String), build::CommitLookup>,
    /// Build problems already reported: one missing clone is one error, not one per arm.
    build_problems: HashSet<String>,
    /// Dataset files checked (first record), so commits sharing one report it once.
    dataset_checks: HashMap<String, bool>,
}

/// A model's `path` and `tokenizer` after templating and `~` expansion.
#[derive(Default, Clone)]
struct ModelFiles {
    path: Option<String>,
    tokenizer: Option<PathBuf>,
}

/// What model fields may use: they are the same for every commit and arm.
#[derive(Serialize)]
struct ModelFieldCtx<'a> {
    vars: &'a BTreeMap<String, String>,
}

/// One arm, checked once for the whole campaign.
struct ArmPlan<'f> {
    def: &'f ArmDef,
    index: usize,
    role: ArmRole,
}

#[derive(Serialize)]
struct CommitCtx<'a> {
    human: &'a str,
    parent: &'a str,
    short: &'a str,
    parent_short: &'a str,
    subject: &'a str,
    model: &'a str,
}

#[derive(Serialize)]
struct ModelCtx<'a> {
    name: &'a str,
    hf: &'a str,
    path: &'a str,
    tokenizer: &'a str,
    revision: &'a str,
    served_name: &'a str,
}

#[derive(Serialize, Clone)]
struct ArmCtx {
    name: String,
    role: ArmRole,
    path: String,
    image: String,
    /// The commit the arm's code is at: the human commit for `human`, the parent otherwise.
    commit: String,
}

impl ArmCtx {
    /// Where the arm's server comes from, as templates see it: `arm.image` or `arm.path` (a
    /// patched arm shows its base's).
    fn locate(&mut self, source: &ArmSource) {
        match source.root() {
            ArmSource::Image { reference } => self.image = reference.clone(),
            ArmSource::Path { root } => self.path = root.display().to_string(),
            ArmSource::Patched(_) => {}
        }
    }
}

#[derive(Serialize)]
struct ServerCtx<'a> {
    max_model_len: Option<u32>,
    gpus: u32,
    vars: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Ctx<'a> {
    commit: &'a CommitCtx<'a>,
    model: &'a ModelCtx<'a>,
    arm: &'a ArmCtx,
    images: &'a Images,
    repo: &'a str,
    vars: &'a BTreeMap<String, String>,
    server: &'a ServerCtx<'a>,
    port: &'a str,
    isobench: &'a str,
}

impl<'a> Resolver<'a> {
    /// `env()` in the server command puts the variable's value into argv, where `ps`, the
    /// server log and `docker inspect` show it to anyone: warn once per site and variable.
    fn warn_env_in_argv(&mut self, site: &str) {
        for name in self.templates.take_env_reads() {
            if !self.warned_env.insert((site.to_string(), name.clone())) {
                continue;
            }
            let secret = if util::is_secret_name(&name) {
                " (its name looks like a secret)"
            } else {
                ""
            };
            let mut d = Diagnostic {
                source: self.source.clone(),
                message: format!(
                    "`{site}` renders env(\"{name}\") into the server's command line{secret}: \
                     its value is visible in `ps`, in the server log and in `docker inspect`"
                ),
                span: self.spans.value(site),
                label: "env() value in argv".into(),
                help: None,
            };
            d.with_help(format!(
                "pass secrets as environment variables instead: `[server.env] {name} = \"${{{name}}}\"` \
                 is read from isobench's environment when the server starts and is never logged or \
                 hashed; servers read their secrets from the environment (vLLM: `HF_TOKEN`, and \
                 `VLLM_API_KEY` instead of `--api-key`)"
            ));
            self.warnings.push(Warning(d));
        }
    }

    fn err(
        &mut self,
        path: &str,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut super::diag::Diagnostic {
        let span = self.spans.value(path);
        self.out.error(self.source, span, message, label)
    }

    /// Renders the template written at manifest field `site` (compiled once per site); errors
    /// are reported against the field's span.
    fn render_field<S: Serialize>(&mut self, site: &str, template: &str, ctx: S) -> Option<String> {
        let span = self.spans.value(site);
        if !self
            .templates
            .add(site, template, span, self.source, &mut self.out)
        {
            return None;
        }
        self.templates.render(site, ctx, self.source, &mut self.out)
    }

    fn resolve(&mut self, file: &ManifestFile) -> Option<Campaign> {
        if file.version != 1 {
            self.err(
                "version",
                format!("unsupported manifest version {}", file.version),
                "only version 1 exists",
            )
            .with_help("set `version = 1`");
        }
        if file.name.trim().is_empty() {
            self.err("name", "the campaign name is empty", "empty");
        }
        let pipeline = self.resolve_pipeline(file);
        let arms = self.check_arms(file);
        self.check_models(file);
        self.check_server_settings(&file.server, "server");
        self.check_load_settings(&file.load, "load");
        let mut resources = self.resolve_resources(file);
        let cluster = self.resolve_cluster(file, &mut resources);
        if let Some(c) = file.compare.confidence
            && !(c > 0.5 && c < 1.0)
        {
            self.err(
                "compare.confidence",
                format!("confidence must be between 0.5 and 1, found {c}"),
                "out of range",
            );
        }
        if file.commits.is_empty() {
            self.err("commits", "the manifest lists no commits", "empty")
                .with_help("add a `[[commits]]` table with `human`, `parent` and `model`");
        }
        let shorts = self.check_commit_hashes(file);
        let mut commits = Vec::with_capacity(file.commits.len());
        for (i, c) in file.commits.iter().enumerate() {
            if !is_hash(&c.human) || !is_hash(&c.parent) {
                continue; // reported; rendering its templates would only add follow-on errors
            }
            if let Some(commit) = self.resolve_commit(file, i, c, &shorts[i], &arms, &resources) {
                commits.push(commit);
            }
        }
        if cluster.is_some() && !self.builds.is_empty() {
            self.err("images.build", "image builds are not supported with `[cluster]` yet: each Slurm job gets its image on its node", "build recipe with a cluster")
                .with_help("build and push the images once with this manifest on one host (without `[cluster]`, with `push = true`); the cluster's jobs then pull them");
        }
        let pipeline = pipeline?;
        let results_dir = util::normalize_path(
            &self.manifest_dir.join(
                file.results
                    .clone()
                    .unwrap_or_else(|| format!("results/{}", file.name)),
            ),
        );
        let state_dir = util::normalize_path(
            &self.manifest_dir.join(
                file.state
                    .clone()
                    .unwrap_or_else(|| d::STATE_DIR.to_string()),
            ),
        );
        Some(Campaign {
            name: file.name.clone(),
            description: file.description.clone(),
            manifest_path: self
                .manifest_dir
                .join(Path::new(&self.source.name).file_name().unwrap_or_default()),
            manifest_dir: self.manifest_dir.clone(),
            pipeline,
            results_dir,
            state_dir,
            arms: arms
                .iter()
                .map(|a| ArmInfo {
                    name: a.def.name.clone(),
                    role: a.role,
                })
                .collect(),
            commits,
            resources,
            compare: super::model::CompareSettings {
                confidence: file.compare.confidence.unwrap_or(d::CONFIDENCE),
                threshold_pct: file.compare.threshold_pct,
                outputs: file.check.outputs.mode.unwrap_or_default(),
            },
            cluster,
            builds: std::mem::take(&mut self.builds),
            warnings: Vec::new(),
        })
    }

    fn resolve_pipeline(&mut self, file: &ManifestFile) -> Option<super::pipeline::Pipeline> {
        let reference = file.pipeline.as_deref().unwrap_or(d::PIPELINE);
        match super::pipeline::locate(reference, &self.manifest_dir) {
            Ok((origin, text)) => match super::pipeline::parse(&origin, &text) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.out.items.extend(e.diagnostics);
                    None
                }
            },
            Err(message) => {
                self.err("pipeline", message, "unknown pipeline");
                None
            }
        }
    }

    fn check_arms<'f>(&mut self, file: &'f ManifestFile) -> Vec<ArmPlan<'f>> {
        let names: Vec<&str> = file.arms.iter().map(|a| a.name.as_str()).collect();
        let mut plans = Vec::new();
        if file.arms.is_empty() {
            self.err("arms", "the manifest defines no arms", "empty")
                .with_help("add `[[arms]]` tables: at least a `baseline`");
        }
        for (i, arm) in file.arms.iter().enumerate() {
            let p = format!("arms[{i}]");
            if names[..i].contains(&arm.name.as_str()) {
                self.err(
                    &format!("{p}.name"),
                    format!("duplicate arm name `{}`", arm.name),
                    "defined twice",
                );
            }
            if arm.name.is_empty()
                || !arm
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                self.err(&format!("{p}.name"), format!("arm name `{}` must be non-empty and use only letters, digits, `-`, `_`, `.`", arm.name), "invalid name");
            }
            let ways = [
                arm.image.is_some(),
                arm.path.is_some(),
                arm.base.is_some() || arm.patch.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if ways != 1 {
                self.err(&p, format!("arm `{}` must get its server in exactly one way", arm.name), if ways == 0 { "no image, path or patch" } else { "more than one way" })
                    .with_help("give it `image` (docker), `path` (process runtime), or `base` + `patch` (an agent patch over another arm)");
            }
            if arm.base.is_some() != arm.patch.is_some() {
                let missing = if arm.base.is_some() { "patch" } else { "base" };
                self.err(
                    &p,
                    format!(
                        "arm `{}` has `{}` without `{missing}`",
                        arm.name,
                        if missing == "patch" { "base" } else { "patch" }
                    ),
                    format!("`{missing}` missing"),
                );
            }
            if let Some(base) = &arm.base {
                if !names.contains(&base.as_str()) {
                    let e = self.err(
                        &format!("{p}.base"),
                        format!("arm `{}` is based on unknown arm `{base}`", arm.name),
                        "unknown arm",
                    );
                    if let Some(g) = did_you_mean(base, names.iter().copied()) {
                        e.with_help(format!("did you mean `{g}`?"));
                    }
                } else if base == &arm.name {
                    self.err(
                        &format!("{p}.base"),
                        format!("arm `{}` is based on itself", arm.name),
                        "cycle",
                    );
                }
            }
            if (arm.patch_target.is_some() || arm.patch_fuzz.is_some() || arm.rebuild.is_some())
                && arm.patch.is_none()
            {
                self.err(
                    &p,
                    format!("arm `{}` sets patch options but has no `patch`", arm.name),
                    "patch options without a patch",
                );
            }
            let inferred = match arm.name.as_str() {
                "baseline" => Some(ArmRole::Baseline),
                "human" => Some(ArmRole::Human),
                _ if arm.patch.is_some() => Some(ArmRole::Agent),
                _ => None,
            };
            let role = match (arm.role, inferred) {
                (Some(r), _) => r,
                (None, Some(r)) => r,
                (None, None) => {
                    self.err(
                        &format!("{p}.name"),
                        format!("cannot tell the role of arm `{}`", arm.name),
                        "role unknown",
                    )
                    .with_help("add `role = \"baseline\"`, `\"human\"` or `\"agent\"`");
                    ArmRole::Agent
                }
            };
            plans.push(ArmPlan {
                def: arm,
                index: i,
                role,
            });
        }
        // Cycles through `base` chains longer than one.
        for arm in &file.arms {
            let mut seen = vec![arm.name.as_str()];
            let mut current = arm;
            while let Some(base) = &current.base {
                if seen.contains(&base.as_str()) {
                    if base != &arm.name || seen.len() > 1 {
                        let i = file
                            .arms
                            .iter()
                            .position(|a| a.name == arm.name)
                            .unwrap_or(0);
                        if base != &current.name {
                            self.err(
                                &format!("arms[{i}].base"),
                                format!(
                                    "arms form a cycle through `base`: {} → {base}",
                                    seen.join(" → ")
                                ),
                                "cycle",
                            );
                        }
                    }
                    break;
                }
                seen.push(base);
                match file.arms.iter().find(|a| &a.name == base) {
                    Some(next) => current = next,
                    None => break,
                }
            }
        }
        let baselines: Vec<&ArmPlan> = plans
            .iter()
            .filter(|p| p.role == ArmRole::Baseline)
            .collect();
        if baselines.len() > 1 {
            let i = baselines[1].index;
            self.err(
                &format!("arms[{i}]"),
                "more than one arm has the baseline role",
                "second baseline",
            );
        } else if baselines.is_empty() && !file.arms.is_empty() {
            self.err("arms", "no arm has the baseline role", "no baseline")
                .with_help("name an arm `baseline` or give it `role = \"baseline\"`");
        }
        plans
    }

    fn check_models(&mut self, file: &ManifestFile) {
        for (key, model) in &file.models {
            if model.hf.trim().is_empty() {
                self.err(
                    &format!("models.{key}.hf"),
                    format!("model `{key}` has an empty `hf` name"),
                    "empty",
                );
            }
            // Local files move with the machine (`{{ env("ISOBENCH_CACHE_DIR", "~/.cache") }}`),
            // so these two fields are templates too.
            let ctx = ModelFieldCtx { vars: &file.vars };
            let mut files = ModelFiles::default();
            if let Some(path) = &model.path {
                files.path = self
                    .render_field(&format!("models.{key}.path"), path, &ctx)
                    .map(|p| util::expand_tilde(&p));
            }
            if let Some(tok) = &model.tokenizer {
                let site = format!("models.{key}.tokenizer");
                if let Some(rendered) = self.render_field(&site, tok, &ctx) {
                    let p = self.manifest_dir.join(util::expand_tilde(&rendered));
                    if !p.exists() {
                        self.err(&site, format!("tokenizer `{rendered}` of model `{key}` does not exist ({})", p.display()), "not found")
                            .with_help("give a `tokenizer.json` or a directory holding one; without it prompts are synthetic text");
                    }
                    files.tokenizer = Some(p);
                }
            }
            self.model_files.insert(key.clone(), files);
        }
    }

    fn check_server_settings(&mut self, s: &ServerSettings, p: &str) {
        if let Some(ready) = &s.ready {
            if let Some(path) = &ready.path
                && !path.starts_with('/')
            {
                self.err(
                    &format!("{p}.ready.path"),
                    format!("readiness path `{path}` must start with `/`"),
                    "not a path",
                );
            }
            for (name, value) in [("timeout", &ready.timeout), ("interval", &ready.interval)] {
                if let Some(v) = value
                    && let Err(e) = util::parse_duration(v)
                {
                    self.err(&format!("{p}.ready.{name}"), e.clone(), duration_label(&e));
                }
            }
        }
        if let Some(shm) = &s.shm_size
            && let Err(e) = util::parse_size(shm)
        {
            self.err(&format!("{p}.shm_size"), e, "not a size");
        }
        if let Some(ipc) = &s.ipc
            && !(ipc == "host"
                || ipc == "private"
                || ipc == "shareable"
                || ipc == "none"
                || ipc.starts_with("container:"))
        {
            self.err(
                &format!("{p}.ipc"),
                format!("unknown IPC mode `{ipc}`"),
                "unknown mode",
            )
            .with_help("use `host`, `private`, `shareable` or `none`");
        }
        if let Some(volumes) = &s.volumes {
            for (i, v) in volumes.iter().enumerate() {
                let parts: Vec<&str> = v.split(':').collect();
                if parts.len() < 2
                    || parts.len() > 3
                    || parts[0].is_empty()
                    || !parts[1].starts_with('/')
                    || (parts.len() == 3 && !["ro", "rw"].contains(&parts[2]))
                {
                    self.err(
                        &format!("{p}.volumes[{i}]"),
                        format!("volume `{v}` is not `host:/container[:ro|rw]`"),
                        "bad volume",
                    );
                }
            }
        }
    }

    fn check_load_settings(&mut self, l: &LoadSettings, p: &str) {
        if let Some(e) = &l.endpoint
            && !e.starts_with('/')
        {
            self.err(
                &format!("{p}.endpoint"),
                format!("endpoint `{e}` must start with `/`"),
                "not a path",
            );
        }
        for key in l.extra_body.iter().flat_map(|m| m.keys()) {
            if OWNED_BODY_KEYS.contains(&key.as_str()) {
                self.err(
                    &format!("{p}.extra_body.{key}"),
                    format!("`{key}` is set by isobench; `extra_body` may not override it"),
                    "owned by isobench",
                )
                .with_help("use the load setting for it (e.g. `temperature`, `ignore_eos`), or leave it out");
            }
        }
        if let Some(r) = l.dataset.as_ref().and_then(|ds| ds.range_ratio)
            && !(0.0..1.0).contains(&r)
        {
            self.err(
                &format!("{p}.dataset.range_ratio"),
                format!("range_ratio must be in [0, 1), found {r}"),
                "out of range",
            );
        }
        if let Some(c) = &l.concurrency {
            self.check_list(&format!("{p}.concurrency"), c, |v| {
                (*v == 0).then(|| ("concurrency must be at least 1".to_string(), "zero"))
            });
        }
        if let Some(rates) = &l.request_rate {
            self.check_list(&format!("{p}.request_rate"), rates, |v| {
                parse_rate(v).err().map(|e| (e, "bad rate"))
            });
        }
        if let Some(b) = l.burstiness
            && b <= 0.0
        {
            self.err(
                &format!("{p}.burstiness"),
                format!("burstiness must be positive, found {b}"),
                "not positive",
            );
        }
        if let Some(t) = l.temperature
            && t < 0.0
        {
            self.err(
                &format!("{p}.temperature"),
                format!("temperature must not be negative, found {t}"),
                "negative",
            );
        }
        if let Some(name) = &l.api_key_env
            && !is_env_name(name)
        {
            // The value is not repeated: it may be the key itself, pasted by mistake.
            self.err(
                &format!("{p}.api_key_env"),
                "api_key_env must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                "not a variable name",
            )
            .with_help(
                "name the variable that holds the key, e.g. `OPENAI_API_KEY`, not the key itself",
            );
        }
        if let Some(Ok(d)) = l.duration.as_deref().map(util::parse_duration)
            && d.is_zero()
        {
            self.err(
                &format!("{p}.duration"),
                "a timed run's duration must be longer than 0 s",
                "zero",
            );
        }
        if l.ramp_up.is_some() && l.duration.is_none() {
            self.err(
                &format!("{p}.ramp_up"),
                "ramp_up only applies to a timed run",
                "without duration",
            )
            .with_help("add `duration = \"60s\"` (a time-based window), or remove ramp_up");
        }
        for (name, value) in [
            ("timeout", &l.timeout),
            ("request_timeout", &l.request_timeout),
            ("duration", &l.duration),
            ("ramp_up", &l.ramp_up),
        ] {
            if let Some(v) = value
                && let Err(e) = util::parse_duration(v)
            {
                self.err(&format!("{p}.{name}"), e.clone(), duration_label(&e));
            }
        }
    }

    /// A value-or-list field: not empty, every element valid (`check` says what is wrong with
    /// one), no element twice. Errors point at the element when it is a list.
    fn check_list<T: PartialEq + std::fmt::Display>(
        &mut self,
        path: &str,
        list: &OneOrMany<T>,
        check: impl Fn(&T) -> Option<(String, &'static str)>,
    ) {
        let values: Vec<&T> = match list {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(vs) => vs.iter().collect(),
        };
        let field = path.rsplit('.').next().unwrap_or(path);
        if values.is_empty() {
            self.err(path, format!("{field} list is empty"), "empty");
        }
        for (i, v) in values.iter().enumerate() {
            let at = if matches!(list, OneOrMany::Many(_)) {
                format!("{path}[{i}]")
            } else {
                path.to_string()
            };
            if let Some((message, label)) = check(v) {
                self.err(&at, message, label);
            } else if values[..i].contains(v) {
                self.err(&at, format!("{field} {v} is listed twice"), "duplicate");
            }
        }
    }

    fn resolve_resources(&mut self, file: &ManifestFile) -> ResourceSettings {
        let r = &file.resources;
        let gpus = match &r.gpus {
            None => GpuInventory::Auto,
            Some(GpuInventorySetting::Mode(m)) if m == "auto" => GpuInventory::Auto,
            Some(GpuInventorySetting::Mode(m)) => {
                self.err(
                    "resources.gpus",
                    format!("`gpus` must be \"auto\" or a list of indices, found \"{m}\""),
                    "unknown",
                )
                .with_help("e.g. `gpus = [0, 1]`");
                GpuInventory::Auto
            }
            Some(GpuInventorySetting::Declared(list)) => {
                let mut seen = HashSet::new();
                for (i, g) in list.iter().enumerate() {
                    if !seen.insert(g) {
                        self.err(
                            &format!("resources.gpus[{i}]"),
                            format!("GPU {g} is declared twice"),
                            "duplicate",
                        );
                    }
                }
                GpuInventory::Declared(list.clone())
            }
        };
        let gpu_env_only = match r.gpu_mode.as_deref() {
            None | Some("device-request") => false,
            Some("env") => true,
            Some(other) => {
                self.err(
                    "resources.gpu_mode",
                    format!("unknown GPU mode `{other}`"),
                    "unknown",
                )
                .with_help(
                    "use `device-request` (NVIDIA runtime) or `env` (CUDA_VISIBLE_DEVICES only)",
                );
                false
            }
        };
        let isolate = match (r.isolate.as_deref(), r.isolate_measure) {
            (None, None) => Isolate::default(),
            (None, Some(true)) => Isolate::Exclusive,
            (None, Some(false)) => Isolate::None,
            (Some(text), old) => match Isolate::parse(text) {
                Some(policy) => {
                    if old.is_some_and(|o| o != (policy == Isolate::Exclusive)) {
                        self.err(
                            "resources.isolate_measure",
                            format!("contradicts `isolate = \"{text}\"`"),
                            "conflicting",
                        )
                        .with_help("drop `isolate_measure`: `isolate` replaces it");
                    }
                    policy
                }
                None => {
                    self.err(
                        "resources.isolate",
                        format!("unknown isolation policy `{text}`"),
                        "unknown",
                    )
                    .with_help("use `exclusive`, `paired` or `none`");
                    Isolate::default()
                }
            },
        };
        let gpu_idle_wait =
            match util::parse_duration(r.gpu_idle_wait.as_deref().unwrap_or(d::GPU_IDLE_WAIT)) {
                Ok(v) => v,
                Err(e) => {
                    self.err("resources.gpu_idle_wait", e.clone(), duration_label(&e));
                    std::time::Duration::from_secs(120)
                }
            };
        let disk_budget = match r.disk_budget.as_deref().map(util::parse_size) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                self.err("resources.disk_budget", e, "not a size");
                None
            }
            None => None,
        };
        ResourceSettings {
            gpus,
            gpu_kind: r.gpu_kind.clone(),
            gpu_env_only,
            gpu_idle_memory_mib: r.gpu_idle_memory_mib.unwrap_or(d::GPU_IDLE_MEMORY_MIB),
            gpu_idle_wait,
            isolate,
            pull_parallelism: r.pull_parallelism.unwrap_or(d::PULL_PARALLELISM).max(1),
            disk_budget,
            telemetry_hz: self.telemetry_hz(r.telemetry_hz),
        }
    }

    /// `resources.telemetry_hz`: 0 (off) up to [`d::TELEMETRY_HZ_MAX`].
    fn telemetry_hz(&mut self, hz: Option<u32>) -> u32 {
        match hz {
            None => d::TELEMETRY_HZ,
            Some(hz) if hz <= d::TELEMETRY_HZ_MAX => hz,
            Some(hz) => {
                self.err(
                    "resources.telemetry_hz",
                    format!("{hz} samples per second is more than NVML's counters change"),
                    "too high",
                )
                .with_help(format!("use at most {}", d::TELEMETRY_HZ_MAX));
                d::TELEMETRY_HZ
            }
        }
    }

    /// `[cluster]`: every knob checked with its location. A typed GRES (`gpu:h100`) names the
    /// GPU model for keys unless `resources.gpu_kind` does, so the controller (which has no
    /// GPUs), the jobs and `report` compute the same keys.
    fn resolve_cluster(
        &mut self,
        file: &ManifestFile,
        resources: &mut ResourceSettings,
    ) -> Option<super::model::ClusterSettings> {
        let c = file.cluster.as_ref()?;
        let mut out = ClusterSettings::default();
        // One check per knob, in the order of the diagnostics they report.
        if let Some(backend) = self.cluster_backend(c) {
            out.backend = backend;
        }
        self.check_cluster_names(c);
        out.partition = c.partition.clone();
        out.account = c.account.clone();
        out.qos = c.qos.clone();
        out.constraint = c.constraint.clone();
        out.time_limit = self.cluster_time_limit(c);
        if let Some(d) = self.cluster_poll_interval(c) {
            out.poll_interval = d;
        }
        if let Some((gres, gpu_kind)) = self.cluster_gres(c) {
            out.gres = gres;
            if let Some(kind) = gpu_kind
                && resources.gpu_kind.is_none()
            {
                resources.gpu_kind = Some(kind);
            }
        }
        self.check_sbatch_args(c);
        out.sbatch_args = c.sbatch_args.clone().unwrap_or_default();
        if let Some(placement) = self.cluster_placement(c) {
            out.placement = placement;
        }
        out.retries = c.retries.unwrap_or(out.retries);
        // Patched arms run too: the process runtime's patched tree is built by the controller
        // into the (shared) state directory, a Docker arm's derived image on each job's node
        // (`exec::cluster`, docs/cluster.md).
        Some(out)
    }

    /// `cluster.backend`; `None` keeps the default (local), also after reporting an unknown one.
    fn cluster_backend(&mut self, c: &ClusterDef) -> Option<ClusterBackend> {
        match c.backend.as_deref() {
            None | Some("local") => None,
            Some("slurm") => Some(ClusterBackend::Slurm),
            Some(other) => {
                self.err(
                    "cluster.backend",
                    format!("unknown cluster backend `{other}`"),
                    "unknown",
                )
                .with_help("use `local` (this host) or `slurm`");
                None
            }
        }
    }

    /// Partition, account, QoS and constraint go to `sbatch` as single words: a space would
    /// split the option.
    fn check_cluster_names(&mut self, c: &ClusterDef) {
        for (field, value) in [
            ("partition", &c.partition),
            ("account", &c.account),
            ("qos", &c.qos),
            ("constraint", &c.constraint),
        ] {
            if let Some(v) = value
                && (v.trim().is_empty() || v.chars().any(char::is_whitespace))
            {
                self.err(
                    &format!("cluster.{field}"),
                    format!("`{field}` must be one word, found {v:?}"),
                    "not a Slurm name",
                );
            }
        }
    }

    /// `cluster.time_limit`: Slurm counts whole minutes, so anything shorter is an error rather
    /// than a silent round-up.
    fn cluster_time_limit(&mut self, c: &ClusterDef) -> Option<std::time::Duration> {
        let t = c.time_limit.as_ref()?;
        match util::parse_duration(t) {
            Ok(d) if d.as_secs() >= 60 => Some(d),
            Ok(_) => {
                self.err(
                    "cluster.time_limit",
                    "a Slurm time limit is at least one minute",
                    "too short",
                )
                .with_help("Slurm counts time limits in whole minutes, e.g. `time_limit = \"2m\"`");
                None
            }
            Err(e) => {
                self.err("cluster.time_limit", e, "not a duration");
                None
            }
        }
    }

    /// `cluster.poll_interval`: a zero interval would spin on `squeue`.
    fn cluster_poll_interval(&mut self, c: &ClusterDef) -> Option<std::time::Duration> {
        let t = c.poll_interval.as_ref()?;
        match util::parse_duration(t) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err("cluster.poll_interval", "must be positive", "zero");
                None
            }
            Err(e) => {
                self.err("cluster.poll_interval", e, "not a duration");
                None
            }
        }
    }

    /// `cluster.gres`: a name or `name:type`, never a count (that comes from `server.gpus`).
    /// Returns the GRES and, for a typed one, the type, which may name the GPU model for keys.
    fn cluster_gres(&mut self, c: &ClusterDef) -> Option<(String, Option<String>)> {
        let g = c.gres.as_ref()?;
        let parts: Vec<&str> = g.split(':').collect();
        let word = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        };
        if parts.len() > 2 || !parts.iter().all(|p| word(p)) {
            self.err(
                "cluster.gres",
                format!("`gres` must be a GRES name or name:type, found {g:?}"),
                "not a GRES name",
            )
            .with_help(
                "e.g. `gres = \"gpu\"` or `gres = \"gpu:h100\"`; the count comes from `server.gpus`",
            );
            None
        } else if parts.len() == 2 && parts[1].chars().all(|ch| ch.is_ascii_digit()) {
            self.err(
                "cluster.gres",
                format!("`gres` names the GPU type, not a count: {g:?}"),
                "a count",
            )
            .with_help("set the GPUs per session with `server.gpus` (per campaign or per commit)");
            None
        } else {
            let kind = (parts.len() == 2).then(|| parts[1].to_string());
            Some((g.clone(), kind))
        }
    }

    /// `cluster.sbatch_args`: options isobench sets itself would make a job isobench cannot
    /// follow or bill, so they are refused.
    fn check_sbatch_args(&mut self, c: &ClusterDef) {
        const OWN: &[&str] = &[
            "--job-name",
            "-J",
            "--output",
            "-o",
            "--error",
            "-e",
            "--gres",
            "--gpus",
            "-G",
            "--time",
            "-t",
            "--comment",
            "--parsable",
            "--wrap",
            "--array",
            "-a",
            "--nodes",
            "-N",
            "--chdir",
            "-D",
        ];
        for (i, a) in c.sbatch_args.iter().flatten().enumerate() {
            let name = a.split('=').next().unwrap_or(a);
            if OWN.contains(&name) {
                self.err(
                    &format!("cluster.sbatch_args[{i}]"),
                    format!("`{name}` is set by isobench for every session job"),
                    "reserved",
                )
                .with_help("use `cluster.time_limit`, `cluster.gres` and `server.gpus` instead");
            } else if !a.starts_with('-') {
                self.err(
                    &format!("cluster.sbatch_args[{i}]"),
                    format!("{a:?} is not an option; write `--name=value` as one element"),
                    "not an option",
                );
            }
        }
    }

    /// `cluster.placement`; `None` keeps the default (spread), also after reporting an unknown one.
    fn cluster_placement(&mut self, c: &ClusterDef) -> Option<Placement> {
        match c.placement.as_deref() {
            None | Some("spread") => None,
            Some("same-node") => Some(Placement::SameNode),
            Some(other) => {
                self.err(
                    "cluster.placement",
                    format!("unknown placement `{other}`"),
                    "unknown",
                )
                .with_help("use `spread` or `same-node`");
                None
            }
        }
    }

    /// Hash syntax, duplicates, and unambiguous short forms (8 characters, longer on a clash).
    fn check_commit_hashes(&mut self, file: &ManifestFile) -> Vec<String> {
        for (i, c) in file.commits.iter().enumerate() {
            for (field, value) in [("human", &c.human), ("parent", &c.parent)] {
                if !is_hash(value) {
                    self.err(&format!("commits[{i}].{field}"), format!("`{value}` is not a git commit hash"), "not a hash")
                        .with_help("use the full 40-character hexadecimal hash (at least 7 characters where only a short one is known)");
                }
            }
            if c.human.eq_ignore_ascii_case(&c.parent) {
                self.err(
                    &format!("commits[{i}].parent"),
                    "a commit cannot be its own parent",
                    "same as `human`",
                );
            }
            for (j, earlier) in file.commits[..i].iter().enumerate() {
                let (a, b) = (
                    c.human.to_ascii_lowercase(),
                    earlier.human.to_ascii_lowercase(),
                );
                if a.starts_with(&b) || b.starts_with(&a) {
                    let (line, _) = self
                        .source
                        .line_col(self.spans.value(&format!("commits[{j}].human")).start);
                    self.err(
                        &format!("commits[{i}].human"),
                        format!(
                            "commit {} is listed twice",
                            crate::util::prefix_chars(&c.human, 12)
                        ),
                        "duplicate commit",
                    )
                    .with_help(format!(
                        "first listed at line {line}; merge the two entries"
                    ));
                }
            }
        }
        let mut len = 8;
        loop {
            let shorts: Vec<String> = file
                .commits
                .iter()
                .map(|c| c.human.to_ascii_lowercase().chars().take(len).collect())
                .collect();
            let unique: HashSet<&String> = shorts.iter().collect();
            if unique.len() == shorts.len() || len >= 40 {
                return shorts;
            }
            len += 4;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_commit(
        &mut self,
        file: &ManifestFile,
        i: usize,
        c: &CommitDef,
        short: &str,
        arms: &[ArmPlan],
        resources: &ResourceSettings,
    ) -> Option<Commit> {
        let p = format!("commits[{i}]");
        let model_def = self.commit_model_def(file, c, &p)?;
        self.check_commit_arm_names(c, arms, &p);
        let empty = ServerSettings::default();
        let commit_server = c.server.as_ref().unwrap_or(&empty);
        if c.server.is_some() {
            self.check_server_settings(commit_server, &format!("{p}.server"));
        }
        if let Some(load) = &c.load {
            self.check_load_settings(load, &format!("{p}.load"));
        }
        let server_settings = merge_server(commit_server, &file.server);
        let load = self.resolve_load(c.load.as_ref(), &file.load, &format!("{p}.load"))?;
        let server = self.resolve_server(&server_settings, &p, c.server.is_some(), resources)?;
        let model = self.commit_model(c, model_def);

        // The template contexts every arm's command is rendered with.
        let parent_short: String = c.parent.chars().take(short.len().max(8)).collect();
        let commit_ctx = CommitCtx {
            human: &c.human,
            parent: &c.parent,
            short,
            parent_short: &parent_short,
            subject: c.subject.as_deref().unwrap_or(""),
            model: &c.model,
        };
        let tokenizer_str = model
            .tokenizer
            .as_ref()
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let model_ctx = ModelCtx {
            name: &c.model,
            hf: &model.hf,
            path: &model.path,
            tokenizer: &tokenizer_str,
            revision: model.revision.as_deref().unwrap_or(""),
            served_name: &model.served_name,
        };
        let repo = image_repo(&file.images);
        let empty_vars = BTreeMap::new();
        let server_ctx = ServerCtx {
            max_model_len: server_settings.max_model_len,
            gpus: server.gpus,
            vars: server_settings.vars.as_ref().unwrap_or(&empty_vars),
        };
        let command_site = self.command_template(file, commit_server, &p)?;

        let mut resolved_arms: Vec<CommitArm> = Vec::new();
        let mut absent: Vec<AbsentArm> = Vec::new();
        let mut normalized: Vec<(String, String, String)> = Vec::new(); // (arm, normalized command, normalized env)
        for arm in arms {
            let def = arm.def;
            if let Some(unlisted) = unlisted_arm(c, def) {
                absent.push(unlisted);
                continue;
            }
            let mut arm_ctx = ArmCtx {
                name: def.name.clone(),
                role: arm.role,
                path: String::new(),
                image: String::new(),
                commit: arm_commit(c, arm.role),
            };
            let source = match self.arm_source(
                file,
                arms,
                arm,
                &commit_ctx,
                &model_ctx,
                &repo,
                &arm_ctx,
                &mut Vec::new(),
                server.runtime,
            ) {
                Some(Ok(s)) => s,
                Some(Err(reason)) => {
                    absent.push(AbsentArm {
                        arm: def.name.clone(),
                        reason,
                    });
                    continue;
                }
                None => continue, // error already reported
            };
            arm_ctx.locate(&source);
            let ctx = Ctx {
                commit: &commit_ctx,
                model: &model_ctx,
                arm: &arm_ctx,
                images: &file.images,
                repo: &repo,
                vars: &file.vars,
                server: &server_ctx,
                port: PORT_PLACEHOLDER,
                isobench: EXE_PLACEHOLDER,
            };
            if let (Some(recipe), ArmSource::Image { reference }) = (&file.images.build, &source)
                && def.build != Some(false)
            {
                self.resolve_build(recipe, &ctx, reference, format!("{short} {}", def.name));
            }
            let Some((line, mut argv)) = self.render_command(&command_site, &ctx) else {
                continue;
            };
            argv.extend(server_settings.args.clone().unwrap_or_default());
            let normalized_command = normalize_for_drift(&line, &arm_ctx);
            argv.extend(def.args.iter().cloned());
            let mut env = server.env.clone();
            env.extend(def.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            normalized.push((
                def.name.clone(),
                normalized_command,
                format!("{:?}", server.env),
            ));
            resolved_arms.push(CommitArm {
                name: def.name.clone(),
                role: arm.role,
                source,
                argv,
                env,
                declared_args: def.args.clone(),
                declared_env: def.env.clone(),
            });
        }
        self.check_arm_drift(&normalized, &command_site, short);
        self.check_gpu_request(resources, server.gpus, commit_server, &p, short);
        Some(Commit {
            human: c.human.to_ascii_lowercase(),
            parent: c.parent.to_ascii_lowercase(),
            short: short.to_string(),
            subject: c.subject.clone(),
            model_key: c.model.clone(),
            model,
            repeats: c.repeats.or(file.repeats).unwrap_or(d::REPEATS).max(1),
            server,
            load,
            arms: resolved_arms,
            absent,
        })
    }

    /// The commit's entry in `[models]`; `None` after reporting an unknown name (with a
    /// suggestion or the list), since nothing of the commit can be resolved without it.
    fn commit_model_def<'f>(
        &mut self,
        file: &'f ManifestFile,
        c: &CommitDef,
        p: &str,
    ) -> Option<&'f ModelDef> {
        if let Some(m) = file.models.get(&c.model) {
            return Some(m);
        }
        let e = self.err(
            &format!("{p}.model"),
            format!("unknown model `{}`", c.model),
            "not in [models]",
        );
        match did_you_mean(&c.model, file.models.keys().map(String::as_str)) {
            Some(g) => e.with_help(format!("did you mean `{g}`?")),
            None => e.with_help(format!(
                "defined models: {}",
                file.models.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        };
        None
    }

    /// A commit's `arms` may only name arms of `[[arms]]`: a typo would silently drop an arm.
    fn check_commit_arm_names(&mut self, c: &CommitDef, arms: &[ArmPlan], p: &str) {
        let Some(only) = &c.arms else {
            return;
        };
        for (k, name) in only.iter().enumerate() {
            if !arms.iter().any(|a| &a.def.name == name) {
                let e = self.err(
                    &format!("{p}.arms[{k}]"),
                    format!("commit lists unknown arm `{name}`"),
                    "unknown arm",
                );
                if let Some(g) = did_you_mean(name, arms.iter().map(|a| a.def.name.as_str())) {
                    e.with_help(format!("did you mean `{g}`?"));
                }
            }
        }
    }

    /// The commit's model as its servers see it: the local files found for `[models]` (see
    /// `check_models`), else the hub id.
    fn commit_model(&self, c: &CommitDef, model_def: &ModelDef) -> Model {
        let files = self.model_files.get(&c.model).cloned().unwrap_or_default();
        let path = files.path.unwrap_or_else(|| model_def.hf.clone());
        Model {
            hf: model_def.hf.clone(),
            // Unless told otherwise, vLLM serves a model under the name it was started with.
            served_name: model_def
                .served_name
                .clone()
                .unwrap_or_else(|| path.clone()),
            path,
            tokenizer: files.tokenizer,
            revision: model_def.revision.clone(),
        }
    }

    /// Compiles the commit's server command template and returns its site, the name errors are
    /// reported under: the commit's own, else the campaign's, else the default. `None` when
    /// the template does not compile (reported).
    fn command_template(
        &mut self,
        file: &ManifestFile,
        commit_server: &ServerSettings,
        p: &str,
    ) -> Option<String> {
        let (command_site, command_text, command_span) = if let Some(cmd) = &commit_server.command {
            (
                format!("{p}.server.command"),
                cmd.clone(),
                self.spans.value(&format!("{p}.server.command")),
            )
        } else if let Some(cmd) = &file.server.command {
            (
                "server.command".to_string(),
                cmd.clone(),
                self.spans.value("server.command"),
            )
        } else {
            (
                "server.command (default)".to_string(),
                d::SERVER_COMMAND.to_string(),
                self.spans.value("server"),
            )
        };
        self.templates
            .add(
                &command_site,
                &command_text,
                command_span,
                self.source,
                &mut self.out,
            )
            .then_some(command_site)
    }

    /// One arm's server command: rendered and split into arguments. `None` after reporting
    /// why it cannot run (template error, nothing left, bad quoting).
    fn render_command(&mut self, command_site: &str, ctx: &Ctx) -> Option<(String, Vec<String>)> {
        self.templates.take_env_reads();
        let rendered = self
            .templates
            .render(command_site, ctx, self.source, &mut self.out);
        self.warn_env_in_argv(command_site);
        let line = rendered?;
        match split_command(&line) {
            Ok(a) if !a.is_empty() => Some((line, a)),
            Ok(_) => {
                self.out.error(
                    self.source,
                    self.spans.value(command_site),
                    "the server command renders to nothing",
                    "empty command",
                );
                None
            }
            Err(e) => {
                self.out.error(
                    self.source,
                    self.spans.value(command_site),
                    format!("the server command does not split into arguments: {e}"),
                    "bad quoting",
                );
                None
            }
        }
    }

    /// Same configuration for every arm: after masking what an arm may declare (its own name,
    /// image, path, args, env), the rendered commands must be identical. `normalized` holds
    /// (arm, normalized command, normalized env) per arm.
    fn check_arm_drift(
        &mut self,
        normalized: &[(String, String, String)],
        command_site: &str,
        short: &str,
    ) {
        if let Some((first_arm, first_cmd, _)) = normalized.first().cloned() {
            for (arm_name, cmd, _) in normalized.iter().skip(1) {
                if cmd != &first_cmd {
                    let site = command_site.to_string();
                    self.out
                        .error(self.source, self.spans.value(&site), format!("commit {short}: the server command differs between arms `{first_arm}` and `{arm_name}` beyond their declared fields"), "renders differently per arm")
                        .with_help(format!("arms of one commit may differ only in their image/path/patch and their declared `args`/`env`; `{first_arm}`: `{first_cmd}`, `{arm_name}`: `{cmd}`"));
                    break;
                }
            }
        }
    }

    /// GPUs the servers ask for must exist (where `resources.gpus` declares them): reported
    /// here rather than as a session that can never be scheduled.
    fn check_gpu_request(
        &mut self,
        resources: &ResourceSettings,
        gpus: u32,
        commit_server: &ServerSettings,
        p: &str,
        short: &str,
    ) {
        if let GpuInventory::Declared(list) = &resources.gpus
            && gpus as usize > list.len()
        {
            let at = if commit_server.gpus.is_some() {
                format!("{p}.server.gpus")
            } else {
                "server.gpus".to_string()
            };
            self.err(&at, format!("unsatisfiable GPU request: commit {short} needs {} GPUs per server, only {} declared", gpus, list.len()), "more GPUs than declared")
                .with_help("lower `gpus` or declare more in `resources.gpus`");
        }
    }

    /// The source of an arm for one commit: `Some(Ok)`, `Some(Err(reason))` when the arm is
    /// absent for this commit (no patch file), `None` after reporting an error.
    #[allow(clippy::too_many_arguments)]
    fn arm_source(
        &mut self,
        file: &ManifestFile,
        arms: &[ArmPlan],
        arm: &ArmPlan,
        commit: &CommitCtx,
        model: &ModelCtx,
        repo: &str,
        arm_ctx: &ArmCtx,
        chain: &mut Vec<String>,
        runtime: RuntimeKind,
    ) -> Option<Result<ArmSource, String>> {
        let def = arm.def;
        let p = format!("arms[{}]", arm.index);
        if chain.contains(&def.name) {
            return None; // cycle, reported in check_arms
        }
        chain.push(def.name.clone());
        let vars = &file.vars;
        let empty = BTreeMap::new();
        let server_ctx = ServerCtx {
            max_model_len: None,
            gpus: 0,
            vars: &empty,
        };
        let ctx = Ctx {
            commit,
            model,
            arm: arm_ctx,
            images: &file.images,
            repo,
            vars,
            server: &server_ctx,
            port: PORT_PLACEHOLDER,
            isobench: EXE_PLACEHOLDER,
        };
        if let Some(image) = &def.image {
            if runtime == RuntimeKind::Process {
                self.err(&format!("{p}.image"), format!("arm `{}` has an `image`, but the server runtime is `process`", def.name), "image with process runtime")
                    .with_help("process servers run from an installation: give the arm a `path` (e.g. a venv), or set `server.runtime = \"docker\"`");
                return None;
            }
            let site = format!("{p}.image");
            let reference = self.render_field(&site, image, &ctx)?;
            if let Err(why) = check_image_reference(&reference) {
                self.err(&site, format!("arm `{}` renders to an invalid image reference `{reference}` for commit {}: {why}", def.name, commit.short), "invalid image reference");
                return None;
            }
            return Some(Ok(ArmSource::Image { reference }));
        }
        if let Some(path) = &def.path {
            if runtime == RuntimeKind::Docker {
                self.err(
                    &format!("{p}.path"),
                    format!(
                        "arm `{}` has a `path`, but the server runtime is `docker`",
                        def.name
                    ),
                    "path with docker runtime",
                )
                .with_help(
                    "docker servers run from an `image`; or set `server.runtime = \"process\"`",
                );
                return None;
            }
            let site = format!("{p}.path");
            let rendered = self.render_field(&site, path, &ctx)?;
            return Some(Ok(ArmSource::Path {
                root: util::normalize_path(&self.manifest_dir.join(util::expand_tilde(&rendered))),
            }));
        }
        let (Some(base_name), Some(patch)) = (&def.base, &def.patch) else {
            return None;
        };
        let base = arms.iter().find(|a| &a.def.name == base_name)?;
        let base_ctx = ArmCtx {
            name: base.def.name.clone(),
            role: base.role,
            path: String::new(),
            image: String::new(),
            commit: arm_ctx.commit.clone(),
        };
        let base_source = match self.arm_source(
            file, arms, base, commit, model, repo, &base_ctx, chain, runtime,
        )? {
            Ok(s) => s,
            Err(reason) => {
                return Some(Err(format!(
                    "its base arm `{base_name}` is absent ({reason})"
                )));
            }
        };
        let site = format!("{p}.patch");
        let rendered = self.render_field(&site, patch, &ctx)?;
        let patch_path =
            util::normalize_path(&self.manifest_dir.join(util::expand_tilde(&rendered)));
        let patch_hash = match crate::util::hash::file_hash(&patch_path) {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(Err(format!("no patch file {rendered}")));
            }
            Err(e) => return Some(Err(format!("cannot read patch file {rendered}: {e}"))),
        };
        Some(Ok(ArmSource::Patched(Box::new(PatchSpec {
            base_arm: base_name.clone(),
            base: base_source,
            patch_path,
            patch_hash,
            target: def.patch_target.clone(),
            fuzz: def.patch_fuzz.unwrap_or(0),
            rebuild: def.rebuild.clone(),
        }))))
    }

    fn resolve_server(
        &mut self,
        s: &ServerSettings,
        commit_path: &str,
        _has_override: bool,
        _resources: &ResourceSettings,
    ) -> Option<Server> {
        let ready = s.ready.clone().unwrap_or_default();
        let ready_timeout =
            util::parse_duration(ready.timeout.as_deref().unwrap_or(d::READY_TIMEOUT)).ok()?;
        let ready_interval =
            util::parse_duration(ready.interval.as_deref().unwrap_or(d::READY_INTERVAL)).ok()?;
        let _ = commit_path;
        Some(Server {
            runtime: s.runtime.unwrap_or(d::RUNTIME),
            port: s.port.unwrap_or(d::CONTAINER_PORT),
            ready_path: ready.path.unwrap_or_else(|| d::READY_PATH.to_string()),
            ready_timeout,
            ready_interval,
            gpus: s.gpus.unwrap_or(d::GPUS_PER_SERVER),
            shm_size: s.shm_size.as_deref().and_then(|v| util::parse_size(v).ok()),
            ipc: s.ipc.clone(),
            env: s.env.clone().unwrap_or_default(),
            volumes: s
                .volumes
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|v| util::expand_tilde(v))
                .collect(),
            metrics_path: match s.metrics_path.as_deref() {
                None => Some(d::METRICS_PATH.to_string()),
                Some("") => None,
                Some(p) => Some(p.to_string()),
            },
        })
    }

    /// `load.duration` / `load.ramp_up`, commit over campaign; the window plus its ramp-up must
    /// end before the step's timeout, so that requests open at the window's end can finish.
    fn resolve_timed(
        &mut self,
        c: &LoadSettings,
        campaign: &LoadSettings,
        path: &str,
        timeout: std::time::Duration,
    ) -> Option<Option<TimedLoad>> {
        let (duration, at) = match (&c.duration, &campaign.duration) {
            (Some(d), _) => (d, format!("{path}.duration")),
            (None, Some(d)) => (d, "load.duration".to_string()),
            (None, None) => return Some(None),
        };
        let duration = util::parse_duration(duration).ok()?;
        let ramp_up = util::parse_duration(
            c.ramp_up
                .as_deref()
                .or(campaign.ramp_up.as_deref())
                .unwrap_or(d::RAMP_UP),
        )
        .ok()?;
        if ramp_up.saturating_add(duration) >= timeout {
            self.err(
                &at,
                format!(
                    "ramp-up + duration ({:.0} s) must be shorter than the measure step's timeout ({:.0} s)",
                    ramp_up.saturating_add(duration).as_secs_f64(),
                    timeout.as_secs_f64()
                ),
                "window too long",
            )
            .with_help("raise `load.timeout`, or shorten the window: requests open at its end need time to finish");
            return None;
        }
        Some(Some(TimedLoad { ramp_up, duration }))
    }

    /// `load.dataset`: the workload, commit fields over campaign fields. A file workload's file
    /// must exist and its first record be well-formed (read only that far: `plan` stays fast on
    /// a large file); checked once per file.
    fn resolve_workload(
        &mut self,
        cds: &DatasetSettings,
        pds: &DatasetSettings,
        commit_has_dataset: bool,
        path: &str,
        num_prompts: u32,
        backend: Backend,
    ) -> Option<ResolvedWorkload> {
        use crate::loadgen::Workload;
        // Where a merged field is located: the commit's own section if it sets it.
        let site = |set_by_commit: bool, field: &str| {
            if set_by_commit && commit_has_dataset {
                format!("{path}.dataset.{field}")
            } else {
                format!("load.dataset.{field}")
            }
        };
        let name = cds.name.or(pds.name).unwrap_or(DatasetName::Random);
        let output_len = cds.output_len.or(pds.output_len);
        let multi_turn = cds.multi_turn.or(pds.multi_turn).unwrap_or(false);
        let file = cds.path.as_ref().or(pds.path.as_ref());
        let name_site = site(cds.name.is_some(), "name");
        match (name.has_file(), file) {
            (true, None) => {
                self.err(&name_site, format!("the {name:?} dataset needs `dataset.path`").to_lowercase(), "no file")
                    .with_help("give the dataset file, e.g. `path = \"ShareGPT_V3_unfiltered_cleaned_split.json\"`");
                return None;
            }
            (false, Some(_)) => {
                self.err(
                    &site(cds.path.is_some(), "path"),
                    "only the `sharegpt` and `custom` datasets read a file",
                    "not used",
                );
                return None;
            }
            _ => {}
        }
        if multi_turn && (!name.has_file() || backend == Backend::OpenAi) {
            self.err(
                &site(cds.multi_turn.is_some(), "multi_turn"),
                "multi-turn conversations need a `sharegpt` or `custom` dataset and the `openai-chat` backend",
                "not applicable",
            );
            return None;
        }
        let mut prefix_len = cds.prefix_len.or(pds.prefix_len).unwrap_or(d::PREFIX_LEN);
        let workload = match (name, file) {
            (DatasetName::Random, _) => Workload::Random,
            (DatasetName::PrefixRepetition, _) => {
                prefix_len = cds
                    .prefix_len
                    .or(pds.prefix_len)
                    .unwrap_or(d::PREFIX_REPETITION_PREFIX_LEN);
                let num_prefixes = cds
                    .num_prefixes
                    .or(pds.num_prefixes)
                    .unwrap_or(d::PREFIX_REPETITION_NUM_PREFIXES);
                if num_prefixes == 0 || num_prompts < num_prefixes {
                    self.err(
                        &site(cds.num_prefixes.is_some(), "num_prefixes"),
                        format!("num_prefixes ({num_prefixes}) must be between 1 and num_prompts ({num_prompts})"),
                        "too many prefixes",
                    );
                    return None;
                }
                Workload::PrefixRepetition {
                    suffix_len: cds
                        .suffix_len
                        .or(pds.suffix_len)
                        .unwrap_or(d::PREFIX_REPETITION_SUFFIX_LEN),
                    num_prefixes,
                }
            }
            (DatasetName::Sharegpt | DatasetName::Custom, Some(file)) => {
                let path = self.manifest_dir.join(util::expand_tilde(file));
                if name == DatasetName::Sharegpt {
                    Workload::Sharegpt {
                        path,
                        output_len,
                        multi_turn,
                    }
                } else {
                    Workload::Custom {
                        path,
                        output_len,
                        multi_turn,
                    }
                }
            }
            (DatasetName::Sharegpt | DatasetName::Custom, None) => unreachable!("checked above"),
        };
        self.check_dataset_file(&workload, &site(cds.path.is_some(), "path"))?;
        let output_len = match name {
            DatasetName::PrefixRepetition => output_len.unwrap_or(d::PREFIX_REPETITION_OUTPUT_LEN),
            _ => output_len.unwrap_or(d::OUTPUT_LEN),
        };
        Some(ResolvedWorkload {
            workload,
            prefix_len,
            output_len,
        })
    }

    /// A dataset file's existence and first record, once per file and output-length setting.
    fn check_dataset_file(
        &mut self,
        workload: &crate::loadgen::Workload,
        site: &str,
    ) -> Option<()> {
        if workload.path().is_none() {
            return Some(());
        }
        let key = format!("{workload:?}");
        if let Some(&ok) = self.dataset_checks.get(&key) {
            return ok.then_some(());
        }
        let result = crate::loadgen::check_dataset_file(workload);
        self.dataset_checks.insert(key, result.is_ok());
        if let Err(e) = result {
            self.err(site, e, "bad dataset file")
                .with_help("`sharegpt`: the ShareGPT JSON array; `custom`: JSONL, one {\"prompt\": …, \"output_tokens\": n} per line");
            return None;
        }
        Some(())
    }

    /// `path` locates the commit's own load section (its settings win over the campaign's).
    fn resolve_load(
        &mut self,
        commit: Option<&LoadSettings>,
        campaign: &LoadSettings,
        path: &str,
    ) -> Option<Load> {
        let empty = LoadSettings::default();
        let c = commit.unwrap_or(&empty);
        let backend = c.backend.or(campaign.backend).unwrap_or(d::BACKEND);
        let default_endpoint = match backend {
            Backend::OpenAiChat => d::CHAT_ENDPOINT,
            Backend::OpenAi => d::COMPLETIONS_ENDPOINT,
        };
        let ds_empty = DatasetSettings::default();
        let cds = c.dataset.as_ref().unwrap_or(&ds_empty);
        let pds = campaign.dataset.as_ref().unwrap_or(&ds_empty);
        let concurrency = c
            .concurrency
            .clone()
            .or_else(|| campaign.concurrency.clone())
            .map(|v| v.to_vec())
            .unwrap_or_else(|| vec![d::CONCURRENCY]);
        let rates: Vec<Rate> = c
            .request_rate
            .clone()
            .or_else(|| campaign.request_rate.clone())
            .map(|v| v.to_vec())
            .unwrap_or_else(|| vec![RateValue::Text("inf".into())])
            .iter()
            .map(|r| parse_rate(r).ok())
            .collect::<Option<Vec<_>>>()?;
        let mut points = Vec::new();
        for &conc in &concurrency {
            for &rate in &rates {
                points.push(LoadPoint {
                    concurrency: conc,
                    rate,
                    search: None,
                });
            }
        }
        let timeout = util::parse_duration(
            c.timeout
                .as_deref()
                .or(campaign.timeout.as_deref())
                .unwrap_or(d::TIMEOUT),
        )
        .ok()?;
        let request_timeout = match c
            .request_timeout
            .as_deref()
            .or(campaign.request_timeout.as_deref())
        {
            Some(t) => util::parse_duration(t).ok()?,
            None => timeout,
        };
        let timed = self.resolve_timed(c, campaign, path, timeout)?;
        let num_prompts = c
            .num_prompts
            .or(campaign.num_prompts)
            .unwrap_or(d::NUM_PROMPTS);
        let ds =
            self.resolve_workload(cds, pds, c.dataset.is_some(), path, num_prompts, backend)?;
        let slo = self.resolve_slo(c, campaign, path)?;
        let percentiles = self.resolve_percentiles(c, campaign, path)?;
        if let Some(search) = self.resolve_search(c, campaign, path, slo, num_prompts)? {
            // A search alone measures only the search; with a concurrency or rate list given,
            // the fixed points come first (the curve) and the search after them.
            let fixed_given = c.concurrency.is_some()
                || campaign.concurrency.is_some()
                || c.request_rate.is_some()
                || campaign.request_rate.is_some();
            if !fixed_given {
                points.clear();
            }
            points.push(LoadPoint {
                concurrency: match search.over {
                    crate::loadgen::search::Over::Concurrency => search.hi as u32,
                    crate::loadgen::search::Over::Rate => d::CONCURRENCY,
                },
                rate: Rate::Infinite,
                search: Some(search),
            });
        }
        Some(Load {
            slo,
            percentiles,
            workload: ds.workload,
            extra_body: merge_extra_body(campaign, c),
            timed,
            backend,
            endpoint: c
                .endpoint
                .clone()
                .or_else(|| campaign.endpoint.clone())
                .unwrap_or_else(|| default_endpoint.to_string()),
            input_len: cds.input_len.or(pds.input_len).unwrap_or(d::INPUT_LEN),
            output_len: ds.output_len,
            range_ratio: cds
                .range_ratio
                .or(pds.range_ratio)
                .unwrap_or(d::RANGE_RATIO),
            prefix_len: ds.prefix_len,
            num_prompts,
            points,
            burstiness: c
                .burstiness
                .or(campaign.burstiness)
                .unwrap_or(d::BURSTINESS),
            warmup: c.warmup.or(campaign.warmup).unwrap_or(d::WARMUP),
            timeout,
            request_timeout,
            seed: c.seed.or(campaign.seed).unwrap_or(d::SEED),
            ignore_eos: c
                .ignore_eos
                .or(campaign.ignore_eos)
                .unwrap_or(d::IGNORE_EOS),
            temperature: c
                .temperature
                .or(campaign.temperature)
                .unwrap_or(d::TEMPERATURE),
            api_key_env: c
                .api_key_env
                .clone()
                .or_else(|| campaign.api_key_env.clone()),
        })
    }
}

impl Resolver<'_> {
    /// `[load.slo]`, the commit's table over the campaign's (whole tables: objectives are read
    /// together). Each objective must be a positive number of milliseconds.
    fn resolve_slo(
        &mut self,
        c: &LoadSettings,
        campaign: &LoadSettings,
        path: &str,
    ) -> Option<crate::loadgen::Goodput> {
        let (slo, at) = match (&c.slo, &campaign.slo) {
            (Some(s), _) => (s, format!("{path}.slo")),
            (None, Some(s)) => (s, "load.slo".to_string()),
            (None, None) => return Some(crate::loadgen::Goodput::default()),
        };
        let mut ok = true;
        for (name, value) in [
            ("ttft_ms", slo.ttft_ms),
            ("tpot_ms", slo.tpot_ms),
            ("e2el_ms", slo.e2el_ms),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0)
            {
                self.err(
                    &format!("{at}.{name}"),
                    format!("`{name}` must be a positive number of milliseconds, not {v}"),
                    "not a latency",
                );
                ok = false;
            }
        }
        if slo.ttft_ms.is_none() && slo.tpot_ms.is_none() && slo.e2el_ms.is_none() {
            self.err(
                &at,
                "an SLO table needs at least one of `ttft_ms`, `tpot_ms`, `e2el_ms`",
                "empty",
            )
            .with_help("e.g. `slo = { ttft_ms = 500, tpot_ms = 50 }`");
            ok = false;
        }
        ok.then_some(crate::loadgen::Goodput {
            ttft_ms: slo.ttft_ms,
            tpot_ms: slo.tpot_ms,
            e2el_ms: slo.e2el_ms,
        })
    }

    /// `load.percentiles`: each in (0, 100), default [50, 99].
    fn resolve_percentiles(
        &mut self,
        c: &LoadSettings,
        campaign: &LoadSettings,
        path: &str,
    ) -> Option<Vec<f64>> {
        let (list, at) = match (&c.percentiles, &campaign.percentiles) {
            (Some(p), _) => (p, format!("{path}.percentiles")),
            (None, Some(p)) => (p, "load.percentiles".to_string()),
            (None, None) => return Some(vec![50.0, 99.0]),
        };
        if let Some(bad) = list
            .iter()
            .find(|p| !(p.is_finite() && **p > 0.0 && **p < 100.0))
        {
            self.err(
                &at,
                format!("percentile {bad} is not between 0 and 100 (exclusive)"),
                "not a percentile",
            )
            .with_help("e.g. `percentiles = [50, 90, 99]`");
            return None;
        }
        let mut list = list.clone();
        list.sort_by(f64::total_cmp);
        list.dedup();
        Some(list)
    }

    /// `[load.search]`: needs SLOs to search against, a valid range, and probes no larger than
    /// the measured dataset (they send its first prompts).
    fn resolve_search(
        &mut self,
        c: &LoadSettings,
        campaign: &LoadSettings,
        path: &str,
        slo: crate::loadgen::Goodput,
        num_prompts: u32,
    ) -> Option<Option<crate::loadgen::search::Search>> {
        use crate::loadgen::search::{Over, Search};
        let (s, at) = match (&c.search, &campaign.search) {
            (Some(s), _) => (s, format!("{path}.search")),
            (None, Some(s)) => (s, "load.search".to_string()),
            (None, None) => return Some(None),
        };
        if !slo.is_set() {
            self.err(&at, "a search needs SLOs to search against", "no `load.slo`")
                .with_help("add e.g. `[load.slo]` with `ttft_ms = 500`: the search finds the highest load at which they hold");
            return None;
        }
        let over = match s.over {
            SearchOver::Rate => Over::Rate,
            SearchOver::Concurrency => Over::Concurrency,
        };
        let [lo, hi] = s.range;
        let whole = |v: f64| v.fract() == 0.0;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi)
            || (over == Over::Concurrency && !(whole(lo) && whole(hi)))
        {
            let what = match over {
                Over::Rate => "two request rates, low < high, both > 0",
                Over::Concurrency => {
                    "two whole numbers of requests in flight, low < high, both ≥ 1"
                }
            };
            self.err(
                &format!("{at}.range"),
                format!("`range` must be {what}"),
                "bad range",
            )
            .with_help("e.g. `range = [1, 64]`");
            return None;
        }
        let tolerance = s.tolerance.unwrap_or(d::SEARCH_TOLERANCE);
        if !(tolerance.is_finite() && tolerance > 0.0) {
            self.err(
                &format!("{at}.tolerance"),
                "`tolerance` must be > 0 (e.g. 0.1 for 10 %)",
                "bad tolerance",
            );
            return None;
        }
        let attainment = s.attainment.unwrap_or(d::SEARCH_ATTAINMENT);
        if !(attainment > 0.0 && attainment <= 1.0) {
            self.err(
                &format!("{at}.attainment"),
                "`attainment` is a fraction of requests, in (0, 1]",
                "bad attainment",
            );
            return None;
        }
        let probe_prompts = s.num_prompts.unwrap_or(num_prompts);
        if probe_prompts == 0 || probe_prompts > num_prompts {
            self.err(
                &format!("{at}.num_prompts"),
                format!("probes send the measured dataset's first prompts: `num_prompts` must be between 1 and load.num_prompts ({num_prompts})"),
                "too many",
            );
            return None;
        }
        Some(Some(Search {
            over,
            lo,
            hi,
            tolerance,
            attainment,
            num_prompts: probe_prompts,
            slo,
        }))
    }
}

/// `load.extra_body`: the campaign's fields, then the commit's (a commit's key wins).
fn merge_extra_body(
    campaign: &LoadSettings,
    commit: &LoadSettings,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    if campaign.extra_body.is_none() && commit.extra_body.is_none() {
        return None;
    }
    let mut out = campaign.extra_body.clone().unwrap_or_default();
    for (k, v) in commit.extra_body.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Some(out)
}

/// Request-body keys isobench sets itself: `load.extra_body` may not override them (they are
/// what the measurement is defined by, or set through their own settings).
const OWNED_BODY_KEYS: [&str; 9] = [
    "model",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "ignore_eos",
];

/// The workload as resolved: what it is, and the lengths [`Load`] keeps flat.
struct ResolvedWorkload {
    workload: crate::loadgen::Workload,
    prefix_len: u32,
    output_len: u32,
}

/// An arm the commit's `arms` leaves out is absent for it (shown as such), not an error.
fn unlisted_arm(c: &CommitDef, def: &ArmDef) -> Option<AbsentArm> {
    let only = c.arms.as_ref()?;
    (!only.contains(&def.name)).then(|| AbsentArm {
        arm: def.name.clone(),
        reason: "not listed in this commit's `arms`".into(),
    })
}

/// The image repository templates see as `repo`: `images.registry` and `images.repo` joined.
fn image_repo(images: &Images) -> String {
    match (&images.registry, &images.repo) {
        (Some(reg), Some(repo)) => format!("{}/{repo}", reg.trim_end_matches('/')),
        (None, Some(repo)) => repo.clone(),
        (_, None) => String::new(),
    }
}

/// Commit settings over campaign settings, field by field; `env` and `vars` merge by key and
/// `args` concatenate (campaign first).
fn merge_server(commit: &ServerSettings, campaign: &ServerSettings) -> ServerSettings {
    let merge_map = |a: &Option<BTreeMap<String, String>>,
                     b: &Option<BTreeMap<String, String>>|
     -> Option<BTreeMap<String, String>> {
        match (a, b) {
            (None, None) => None,
            _ => {
                let mut m = b.clone().unwrap_or_default();
                m.extend(a.clone().unwrap_or_default());
                Some(m)
            }
        }
    };
    let ready = match (&commit.ready, &campaign.ready) {
        (Some(c), Some(p)) => Some(ReadySettings {
            path: c.path.clone().or(p.path.clone()),
            timeout: c.timeout.clone().or(p.timeout.clone()),
            interval: c.interval.clone().or(p.interval.clone()),
        }),
        (c, p) => c.clone().or(p.clone()),
    };
    let args = match (&campaign.args, &commit.args) {
        (None, None) => None,
        (a, b) => Some(
            a.iter()
                .flatten()
                .chain(b.iter().flatten())
                .cloned()
                .collect(),
        ),
    };
    ServerSettings {
        runtime: commit.runtime.or(campaign.runtime),
        command: commit.command.clone().or(campaign.command.clone()),
        port: commit.port.or(campaign.port),
        max_model_len: commit.max_model_len.or(campaign.max_model_len),
        args,
        ready,
        gpus: commit.gpus.or(campaign.gpus),
        shm_size: commit.shm_size.clone().or(campaign.shm_size.clone()),
        ipc: commit.ipc.clone().or(campaign.ipc.clone()),
        env: merge_map(&commit.env, &campaign.env),
        volumes: commit.volumes.clone().or(campaign.volumes.clone()),
        vars: merge_map(&commit.vars, &campaign.vars),
        metrics_path: commit
            .metrics_path
            .clone()
            .or(campaign.metrics_path.clone()),
    }
}

fn parse_rate(v: &RateValue) -> Result<Rate, String> {
    match v {
        RateValue::Number(n) if *n > 0.0 && n.is_finite() => Ok(Rate::PerSecond(*n)),
        RateValue::Number(n) => Err(format!("request rate must be positive, found {n}")),
        RateValue::Text(t) if t == "inf" => Ok(Rate::Infinite),
        RateValue::Text(t) => Err(format!(
            "request rate must be a number of requests per second or \"inf\", found \"{t}\""
        )),
    }
}

fn is_hash(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what a shell accepts as a variable name.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces what an arm may legitimately differ in (its name, image, path) with placeholders.
/// The commit an arm's code is at: the human commit for `human`, the parent for the baseline
/// and for agents (whose patches apply to the baseline).
fn arm_commit(c: &CommitDef, role: ArmRole) -> String {
    match role {
        ArmRole::Human => c.human.to_ascii_lowercase(),
        ArmRole::Baseline | ArmRole::Agent => c.parent.to_ascii_lowercase(),
    }
}

fn normalize_for_drift(rendered: &str, arm: &ArmCtx) -> String {
    let mut s = rendered.to_string();
    for (value, placeholder) in [
        (&arm.image, "<arm.image>"),
        (&arm.path, "<arm.path>"),
        (&arm.name, "<arm.name>"),
        (&arm.commit, "<arm.commit>"),
    ] {
        if value.len() >= 2 {
            s = s.replace(value.as_str(), placeholder);
        }
    }
    s
}

/// A plausible Docker image reference: `[host[:port]/]path[:tag][@digest]`.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("empty".into());
    }
    if reference.chars().any(|c| c.is_whitespace()) {
        return Err("contains whitespace".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, dgst)) => (n, Some(dgst)),
        None => (reference, None),
    };
    if let Some(dg) = digest
        && !dg.starts_with("sha256:")
    {
        return Err("digest must start with `sha256:`".into());
    }
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
            || tag.starts_with(['.', '-']))
    {
        return Err(format!(
            "invalid tag `{tag}` (letters, digits, `_`, `.`, `-`; at most 128)"
        ));
    }
    let mut parts = name.split('/').collect::<Vec<_>>();
    if parts.len() > 1
        && (parts[0].contains(':') || parts[0].contains('.') || parts[0] == "localhost")
    {
        parts.remove(0); // registry host
    }
    for part in parts {
        if part.is_empty()
            || !part.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' || c == '-'
            })
        {
            return Err(format!(
                "invalid repository component `{part}` (lowercase letters, digits, `_`, `.`, `-`)"
            ));
        }
    }
    Ok(())
}

/// The span label of a bad duration: unreadable, or beyond `util::MAX_DURATION`.
fn duration_label(message: &str) -> &'static str {
    if message.contains("too long") {
        "too long"
    } else {
        "not a duration"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        assert!(check_image_reference("anonymous/vllm-baseline:baseline-fbefc8a78d22").is_ok());
        assert!(check_image_reference("127.0.0.1:5000/isobench-test/sim:fast").is_ok());
        assert!(check_image_reference("vllm/vllm-openai@sha256:abc").is_ok());
        assert!(check_image_reference("Anonymous/x:1").is_err());
        assert!(check_image_reference("x: y").is_err());
        assert!(check_image_reference("x:").is_err());
    }

    #[test]
    fn hashes() {
        assert!(is_hash("015069b01741e9ecb9e604c7fe87fbdfc306ebe5"));
        assert!(is_hash("fbefc8a78d22"));
        assert!(!is_hash("abc"));
        assert!(!is_hash("zz5069b0"));
    }
}
