//! `plan --check-env`: can this machine run the plan? Docker reachable, NVIDIA runtime present
//! where GPUs are requested through it, every image here, in its registry (looked up without
//! pulling, through [`crate::runtime::registry`]) or buildable from its recipe, installations
//! present, GPUs visible. Also the per-arm image table of `isobench images` ([`image_rows`]).

use crate::manifest::Campaign;
use crate::manifest::model::ArmSource;
use crate::manifest::types::{BuildPolicy, RuntimeKind};
use crate::pipeline::expand::Dag;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::registry::{self, Lookup};
use crate::runtime::{Availability, Runtime};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Where one image (or installation) is, most useful answer first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Presence {
    /// On this host: the image id, or the canonical path of an installation.
    Local { id: String },
    /// Not here; its registry has it (manifest digest).
    Registry { digest: String },
    /// Neither here nor pullable, but `[images.build]` has a recipe for it.
    Buildable,
    /// Here nowhere, not in its registry, no recipe.
    Missing,
    /// Its registry refused the lookup: "missing" cannot be told from "no access".
    Unauthorized { message: String },
    /// Its registry could not be asked.
    Unreachable { registry: String, message: String },
}

impl Presence {
    /// The short word for tables and JSON.
    pub fn word(&self) -> &'static str {
        match self {
            Presence::Local { .. } => "local",
            Presence::Registry { .. } => "registry",
            Presence::Buildable => "buildable",
            Presence::Missing => "missing",
            Presence::Unauthorized { .. } => "unauthorized",
            Presence::Unreachable { .. } => "unreachable",
        }
    }

    /// Whether `apply` can get the image (use, pull or build it).
    pub fn obtainable(&self) -> bool {
        matches!(
            self,
            Presence::Local { .. } | Presence::Registry { .. } | Presence::Buildable
        )
    }
}

/// Finds `source` (an image or installation; patched sources are looked up by their root):
/// here, in its registry, buildable, or nowhere. `docker` is the engine, if reachable.
pub async fn locate(
    campaign: &Campaign,
    source: &ArmSource,
    docker: Option<&DockerRuntime>,
) -> Presence {
    let reference = match source.root() {
        ArmSource::Image { reference } => reference,
        ArmSource::Path { root } => {
            let process = Runtime::process(campaign.state_dir.join("processes"));
            return match process.image_available(&root.display().to_string()).await {
                Ok(Availability::Local { id }) => Presence::Local { id },
                _ => Presence::Missing,
            };
        }
        ArmSource::Patched(_) => unreachable!("root() follows patches"),
    };
    if let Some(docker) = docker
        && let Ok(Some(image)) = docker.local_image(reference).await
    {
        return Presence::Local { id: image.id };
    }
    let buildable = campaign
        .builds
        .get(reference)
        .is_some_and(|b| b.policy != BuildPolicy::Never);
    match registry::lookup(reference, docker).await {
        Lookup::Found { digest } => Presence::Registry { digest },
        _ if buildable => Presence::Buildable,
        Lookup::NotFound => Presence::Missing,
        Lookup::Unauthorized { message } => Presence::Unauthorized { message },
        Lookup::Unreachable { message } => Presence::Unreachable {
            registry: registry::ImageName::parse(reference).host,
            message,
        },
    }
}

/// One arm of one commit in `isobench images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    /// The commit's short hash.
    pub commit: String,
    pub arm: String,
    /// The image or installation the arm runs (for a patched arm: its base's).
    pub image: String,
    #[serde(flatten)]
    pub presence: Presence,
    /// For a patched arm: the arm whose image it patches (its own image is derived by `apply`).
    pub patched_from: Option<String>,
}

/// Every (commit, arm) with where its image is; each image is looked up once.
pub async fn image_rows(campaign: &Campaign, docker: Option<&DockerRuntime>) -> Vec<ImageRow> {
    let mut found: HashMap<ArmSource, Presence> = HashMap::new();
    let mut rows = Vec::new();
    for commit in &campaign.commits {
        for arm in &commit.arms {
            let root = arm.source.root().clone();
            let presence = match found.get(&root) {
                Some(p) => p.clone(),
                None => {
                    let p = locate(campaign, &root, docker).await;
                    found.insert(root.clone(), p.clone());
                    p
                }
            };
            rows.push(ImageRow {
                commit: commit.short.clone(),
                arm: arm.name.clone(),
                image: root.describe(),
                presence,
                patched_from: match &arm.source {
                    ArmSource::Patched(p) => Some(p.base_arm.clone()),
                    _ => None,
                },
            });
        }
    }
    rows
}

/// Prints one line per check (to stderr); returns whether all passed.
pub async fn check(campaign: &Campaign, dag: &Dag) -> bool {
    let mut ok = true;
    let mut report = |pass: bool, what: String| {
        eprintln!("{} {what}", if pass { "ok  " } else { "FAIL" });
        ok &= pass;
    };
    let kinds: std::collections::HashSet<RuntimeKind> =
        campaign.commits.iter().map(|c| c.server.runtime).collect();
    let needs_gpus = campaign
        .commits
        .iter()
        .map(|c| c.server.gpus)
        .max()
        .unwrap_or(0);

    let docker = if kinds.contains(&RuntimeKind::Docker) {
        match DockerRuntime::connect().await {
            Ok(d) => {
                match d.engine_info().await {
                    Ok(info) => {
                        report(
                            true,
                            format!(
                                "Docker Engine {} (API {})",
                                info.server_version, info.api_version
                            ),
                        );
                        if needs_gpus > 0 && !campaign.resources.gpu_env_only {
                            report(
                                info.nvidia_runtime,
                                format!(
                                    "NVIDIA container runtime {}",
                                    if info.nvidia_runtime {
                                        "present"
                                    } else {
                                        "missing (servers ask for GPUs; install nvidia-container-toolkit or set resources.gpu_mode = \"env\")"
                                    }
                                ),
                            );
                        }
                    }
                    Err(f) => report(false, format!("Docker Engine: {f}")),
                }
                Some(d)
            }
            Err(f) => {
                report(false, format!("Docker Engine not reachable: {f}"));
                None
            }
        }
    } else {
        None
    };
    check_images(campaign, dag, docker.as_ref(), &mut report).await;
    match super::gpu::detect(
        &campaign.resources.gpus,
        None,
        campaign.resources.gpu_kind.as_deref(),
    ) {
        Ok((inv, _)) => {
            let list = inv
                .gpus
                .iter()
                .map(|g| format!("{} {}", g.index, g.name))
                .collect::<Vec<_>>()
                .join(", ");
            let pass = needs_gpus == 0 || inv.gpus.len() >= needs_gpus as usize;
            report(
                pass,
                format!(
                    "GPUs: {} ({}){}",
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list
                    },
                    inv.source,
                    if pass {
                        String::new()
                    } else {
                        format!("; servers need {needs_gpus}")
                    }
                ),
            );
        }
        Err(e) => report(false, format!("GPUs: {e}")),
    }
    ok
}

/// One line per image; a registry that cannot be reached gets one line for all its images.
async fn check_images(
    campaign: &Campaign,
    dag: &Dag,
    docker: Option<&DockerRuntime>,
    report: &mut impl FnMut(bool, String),
) {
    let mut unreachable: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for img in &dag.images {
        let reference = match &img.source {
            // Without an engine, `check` has said so already; images cannot be looked at.
            ArmSource::Image { reference } if docker.is_some() => reference.clone(),
            ArmSource::Path { root } => root.display().to_string(),
            _ => continue,
        };
        match locate(campaign, &img.source, docker).await {
            Presence::Local { id } => report(
                true,
                format!(
                    "{reference}: present ({})",
                    if id.starts_with("sha256:") {
                        crate::util::prefix_chars(&id, 19)
                    } else {
                        "installed"
                    }
                ),
            ),
            Presence::Registry { digest } => report(
                true,
                format!("{reference}: in its registry ({digest}), will be pulled"),
            ),
            Presence::Buildable => report(
                true,
                format!("{reference}: not here or in its registry, will be built from its recipe"),
            ),
            Presence::Missing => report(
                false,
                format!("{reference}: not found here or in its registry"),
            ),
            Presence::Unauthorized { message } => report(
                false,
                format!("{reference}: its registry refused access ({message}); `docker login`?"),
            ),
            Presence::Unreachable { registry, message } => {
                let entry = unreachable.entry(registry).or_insert((0, message));
                entry.0 += 1;
            }
        }
    }
    for (registry, (count, message)) in unreachable {
        let images = if count == 1 { "image" } else { "images" };
        report(
            false,
            format!("registry {registry} unreachable: {count} {images} not checked ({message})"),
        );
    }
}
