//! `plan --check-env`: can this machine run the plan? Docker reachable, NVIDIA runtime present
//! where GPUs are requested through it, every image here or in its registry (looked up without
//! pulling), installations present, GPUs visible.

use crate::manifest::Campaign;
use crate::manifest::model::ArmSource;
use crate::manifest::types::RuntimeKind;
use crate::pipeline::expand::Dag;
use crate::runtime::{Availability, Runtime};

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
        match crate::runtime::docker::DockerRuntime::connect().await {
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
                Some(Runtime::Docker(d))
            }
            Err(f) => {
                report(false, format!("Docker Engine not reachable: {f}"));
                None
            }
        }
    } else {
        None
    };
    let process = Runtime::process(campaign.state_dir.join("processes"));
    for img in &dag.images {
        let (runtime, reference) = match &img.source {
            ArmSource::Image { reference } => (docker.as_ref(), reference.clone()),
            ArmSource::Path { root } => (Some(&process), root.display().to_string()),
            ArmSource::Patched(_) => continue,
        };
        let Some(runtime) = runtime else { continue };
        match runtime.image_available(&reference).await {
            Ok(Availability::Local { id }) => report(
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
            Ok(Availability::Registry { digest }) => report(
                true,
                format!("{reference}: in its registry ({digest}), will be pulled"),
            ),
            Ok(Availability::Missing) => report(
                false,
                format!("{reference}: not found here or in its registry"),
            ),
            Err(f) => report(false, format!("{reference}: {f}")),
        }
    }
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
