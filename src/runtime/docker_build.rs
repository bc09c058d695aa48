//! Image builds and pushes through the Engine API (`[images.build]`, `exec::build`): a build
//! context streamed from memory, the build's output handed line by line to the caller, the
//! push with the registry credentials the Docker CLI would use.
//!
//! The classic builder runs each step in a container of its own; with `forcerm` those are
//! removed whether the step succeeds or not, and when the client goes away (Ctrl-C, `kill -9`
//! of isobench) the engine cancels the build and removes them too, so an interrupted build
//! leaves at most dangling layers in the build cache — which the next build reuses.

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptions, PushImageOptions};
use futures_util::StreamExt;

use super::docker::DockerRuntime;
use crate::failure::{Failure, FailureClass};

/// What to build: the context (a tar archive) and how to read it.
pub struct BuildRequest {
    /// The tag the image gets: the arm's image reference.
    pub reference: String,
    pub context: bytes::Bytes,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Labels on the built image (the recipe's key, the commit), so a later run can tell its
    /// own build from a prebuilt image.
    pub labels: BTreeMap<String, String>,
}

/// A local image as far as builds care: its id, labels and size.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub size: Option<u64>,
}

/// How many of the build's last output lines a `build_failed` message carries.
const TAIL_LINES: usize = 12;

impl DockerRuntime {
    /// The local image `reference` names, if any.
    pub async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, Failure> {
        match self.client().inspect_image(reference).await {
            Ok(image) => Ok(Some(LocalImage {
                id: image.id.unwrap_or_default(),
                labels: image.config.and_then(|c| c.labels).unwrap_or_default(),
                size: image.size.and_then(|s| u64::try_from(s).ok()),
            })),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(Failure::new(
                FailureClass::Internal,
                format!("inspecting image {reference}: {err}"),
            )),
        }
    }

    /// Builds and tags the image; every line of the build's output goes to `on_line` as it
    /// arrives. A failed step is `build_failed` with the output's last lines.
    pub async fn build(
        &self,
        request: BuildRequest,
        mut on_line: impl FnMut(&str) + Send,
    ) -> Result<(), Failure> {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            t: Some(request.reference.clone()),
            target: request.target.clone().unwrap_or_default(),
            rm: true,
            forcerm: true,
            buildargs: Some(request.args.into_iter().collect()),
            labels: Some(request.labels.into_iter().collect()),
            ..Default::default()
        };
        let mut stream =
            self.client()
                .build_image(options, None, Some(bollard::body_full(request.context)));
        let mut tail: std::collections::VecDeque<String> = Default::default();
        let mut keep = |line: &str, tail: &mut std::collections::VecDeque<String>| {
            on_line(line);
            if !line.trim().is_empty() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.trim_end().to_string());
            }
        };
        while let Some(event) = stream.next().await {
            let error = match event {
                Ok(info) => {
                    for text in [info.stream.as_deref(), info.status.as_deref()]
                        .into_iter()
                        .flatten()
                    {
                        for line in text.lines() {
                            keep(line, &mut tail);
                        }
                    }
                    match info.error_detail.and_then(|d| d.message).or(info.error) {
                        Some(error) => error,
                        None => continue,
                    }
                }
                Err(err) => err.to_string(),
            };
            keep(&format!("ERROR: {error}"), &mut tail);
            return Err(build_failure(&request.reference, &error, &tail));
        }
        Ok(())
    }

    /// Pushes `reference` (a tag this engine has) to its registry; returns the manifest digest
    /// the registry reported.
    pub async fn push(
        &self,
        reference: &str,
        mut on_status: impl FnMut(&str) + Send,
    ) -> Result<Option<String>, Failure> {
        let (repository, tag) = match reference.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (reference, "latest"),
        };
        let options = PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        // The engine wants an auth header on every push, empty when there are no credentials.
        let credentials = super::docker_auth::for_reference(reference).unwrap_or_default();
        let mut stream = self
            .client()
            .push_image(repository, Some(options), Some(credentials));
        let mut digest = None;
        while let Some(event) = stream.next().await {
            let failure = |message: String| {
                Failure::new(
                    FailureClass::PushFailed,
                    format!("pushing {reference}: {message}"),
                )
            };
            let info = event.map_err(|e| failure(e.to_string()))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message).or(info.error) {
                return Err(failure(error));
            }
            if let Some(status) = info.status.as_deref() {
                on_status(status);
                if let Some(d) = status.split("digest: ").nth(1) {
                    digest = d.split_whitespace().next().map(str::to_string);
                }
            }
        }
        Ok(digest)
    }
}

fn build_failure(
    reference: &str,
    error: &str,
    tail: &std::collections::VecDeque<String>,
) -> Failure {
    let last: Vec<&str> = tail.iter().map(String::as_str).collect();
    let mut failure = Failure::new(
        FailureClass::BuildFailed,
        format!(
            "building {reference}: {}\nlast lines of the build:\n  {}",
            error.trim(),
            last.join("\n  ")
        ),
    );
    failure.sample_log_line = Some(error.trim().to_string());
    failure
}
