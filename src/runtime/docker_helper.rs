//! Helper containers: containers made from an image only to read its files or to ask it one
//! question, never to serve. A [`Helper`] is *created* and never started: the engine's archive
//! API reads single files, directory listings and the whole filesystem export out of it, so only
//! what is asked for leaves the image. [`run_once`] starts a short-lived container without
//! network and returns its output (e.g. the image's own Python saying where a package is).
//!
//! Every helper is labelled with its owner ([`helper_labels`]: `<host>:<pid>`), so one that a
//! killed process left behind can be found and removed ([`cleanup_helpers`]). Used by
//! `exec::patch` (the `image.patch` step); nothing here knows about patches.
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use crate::failure::{Failure, FailureClass};

/// Label keys of helper containers (named for the `image.patch` step, their first user; kept as
/// they are so that helpers of older versions are still cleaned up).
pub mod labels {
    /// On every helper and probe container: `true`.
    pub const HELPER: &str = "isobench.patch.helper";
    /// `<host>:<pid>` of the isobench process that made it; [`super::cleanup_helpers`] removes
    /// those whose process is gone.
    pub const OWNER: &str = "isobench.patch.owner";
}

/// Largest single file or directory read out of an image.
const FETCH_LIMIT: usize = 512 << 20;

/// The labels of a helper made by this process on `host`.
pub fn helper_labels(host: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::HELPER.to_string(), "true".to_string()),
        (
            labels::OWNER.to_string(),
            format!("{host}:{}", std::process::id()),
        ),
    ])
}

/// Removes helper containers that an isobench process on `this_host` left behind when it was
/// killed (its pid is gone). Those of live processes are kept: another apply may be using them
/// right now. Returns the names removed.
pub async fn cleanup_helpers(docker: &Docker, this_host: &str) -> Result<Vec<String>, Failure> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{}=true", labels::HELPER)],
        )])),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| internal(format!("listing patch helper containers: {e}")))?;
    let mut removed = Vec::new();
    for container in containers {
        let owner = container
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::OWNER))
            .cloned()
            .unwrap_or_default();
        let gone = match owner.rsplit_once(':') {
            Some((host, pid)) if host == this_host => !Path::new(&format!("/proc/{pid}")).exists(),
            _ => false,
        };
        if gone && let Some(id) = container.id {
            remove_container(docker, &id).await;
            removed.extend(container.names.unwrap_or_default());
        }
    }
    Ok(removed)
}

/// Removes a container, running or not, with its anonymous volumes; errors are ignored (it may
/// be gone already).
pub async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let _ = docker.remove_container(id, Some(options)).await;
}

/// A file (or the first entry of whatever is at a path) read from a helper.
#[derive(Debug)]
pub struct FileEntry {
    /// What the entry is; only [`tar::EntryType::Regular`] carries file content.
    pub kind: tar::EntryType,
    pub bytes: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// A container created (never started) from an image, to read the image's files. Call
/// [`Helper::remove`] when done.
pub struct Helper<'a> {
    docker: &'a Docker,
    id: String,
}

impl<'a> Helper<'a> {
    /// Creates the helper from `image` (an id or reference), named `name`, without network.
    pub async fn create(
        docker: &'a Docker,
        image: &str,
        name: String,
        labels: HashMap<String, String>,
    ) -> Result<Helper<'a>, Failure> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            // Never started; an entrypoint only because the engine wants a command to create.
            entrypoint: Some(vec!["/isobench-patch-helper".to_string()]),
            cmd: Some(Vec::new()),
            labels: Some(labels),
            network_disabled: Some(true),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let id = docker
            .create_container(Some(options), body)
            .await
            .map(|r| r.id)
            .map_err(|err| internal(format!("creating a helper container from {image}: {err}")))?;
        Ok(Helper { docker, id })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn remove(self) {
        remove_container(self.docker, &self.id).await;
    }

    /// The type flag of the path's tar header (`b'5'` directory, `b'0'` file, `b'2'` symlink),
    /// `None` if it does not exist. Reads only the first header, then drops the stream.
    pub async fn head_kind(&self, path: &str) -> Result<Option<u8>, Failure> {
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self.docker.download_from_container(&self.id, Some(options));
        let mut head: Vec<u8> = Vec::new();
        while head.len() < 512 {
            match stream.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                Some(Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                })) => return Ok(None),
                Some(Err(err)) => {
                    return Err(internal(format!("reading {path} from the image: {err}")));
                }
                None => break,
            }
        }
        Ok(head.get(156).copied().or(Some(0)))
    }

    /// The whole archive of `path` (404 → `None`), at most [`FETCH_LIMIT`] bytes.
    async fn download(&self, path: &str) -> Result<Option<Vec<u8>>, Failure> {
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self.docker.download_from_container(&self.id, Some(options));
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > FETCH_LIMIT {
                        return Err(internal(format!(
                            "{path} in the image is larger than {} MiB",
                            FETCH_LIMIT >> 20
                        )));
                    }
                }
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(err) => return Err(internal(format!("reading {path} from the image: {err}"))),
            }
        }
        Ok(Some(bytes))
    }

    /// The first entry of the archive of `path` (for a file: the file), `None` if nothing is
    /// there. The caller decides what a non-regular entry means.
    pub async fn fetch_file(&self, path: &str) -> Result<Option<FileEntry>, Failure> {
        let Some(archive) = self.download(path).await? else {
            return Ok(None);
        };
        let bad = |e: std::io::Error| internal(format!("reading the archive of {path}: {e}"));
        let mut archive = tar::Archive::new(archive.as_slice());
        let mut entries = archive.entries().map_err(bad)?;
        let Some(entry) = entries.next() else {
            return Ok(None);
        };
        let mut entry = entry.map_err(bad)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(bad)? & 0o7777;
        let uid = header.uid().map_err(bad)?;
        let gid = header.gid().map_err(bad)?;
        let mut bytes = Vec::new();
        if kind == tar::EntryType::Regular {
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(bad)?;
        }
        Ok(Some(FileEntry {
            kind,
            bytes,
            mode,
            uid,
            gid,
        }))
    }

    /// Names and owners of the regular files directly in directory `path` whose names `keep`
    /// accepts; empty if it does not exist.
    pub async fn list_files(
        &self,
        path: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, (u64, u64))>, Failure> {
        let Some(archive) = self.download(path).await? else {
            return Ok(Vec::new());
        };
        files_in_archive(&archive, keep)
            .map_err(|e| internal(format!("reading the archive of {path}: {e}")))
    }

    /// Streams the helper's filesystem export (tar headers only are looked at) and returns what
    /// `select` makes of each entry's path (`/`-relative, without a leading `./` or `/`).
    pub async fn scan_export(
        &self,
        select: fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, Failure> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
        let scanner = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx: &mut rx,
                current: bytes::Bytes::new(),
            };
            let mut archive = tar::Archive::new(reader);
            let mut found = Vec::new();
            for entry in archive.entries()? {
                let entry = entry?;
                let path = entry.path()?.to_string_lossy().into_owned();
                let path = path.trim_start_matches("./").trim_start_matches('/');
                found.extend(select(path));
            }
            Ok::<_, std::io::Error>(found)
        });
        let mut stream = self.docker.export_container(&self.id);
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(std::io::Error::other);
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        scanner
            .await
            .map_err(|e| internal(format!("the scan task failed: {e}")))?
            .map_err(|e| internal(format!("reading the image's filesystem export: {e}")))
    }
}

/// The regular files directly in the directory an archive from the engine holds, with their
/// owners. Their names may become paths on this host, so only single names `keep` accepts
/// count; links and nested entries are left out.
pub fn files_in_archive(
    archive: &[u8],
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<Vec<(String, (u64, u64))>> {
    let mut archive = tar::Archive::new(archive);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // Entries are `<dir name>/<file>`; only direct children that are files count.
        let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
        if parts.len() == 2
            && entry.header().entry_type() == tar::EntryType::Regular
            && keep(parts[1])
        {
            let owner = (entry.header().uid()?, entry.header().gid()?);
            names.push((parts[1].to_string(), owner));
        }
    }
    Ok(names)
}

/// A blocking reader over chunks sent from async code.
struct ChannelReader<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// How a [`run_once`] container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOnce {
    /// The engine could not start it (e.g. the command is not in the image): the error.
    NotStarted(String),
    /// It did not exit within the time given.
    TimedOut,
    /// It exited: its stdout and stderr.
    Finished(String),
}

/// Runs `argv` once in a new container of `image` without network, waits up to `timeout`, and
/// removes the container whatever happened.
pub async fn run_once(
    docker: &Docker,
    image: &str,
    argv: Vec<String>,
    name: String,
    labels: HashMap<String, String>,
    timeout: Duration,
) -> Result<RunOnce, Failure> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv),
        cmd: Some(Vec::new()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name),
        ..Default::default()
    };
    let id = match docker.create_container(Some(options), body).await {
        Ok(r) => r.id,
        Err(err) => return Err(internal(format!("creating a probe container: {err}"))),
    };
    let outcome = async {
        if let Err(err) = docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            return RunOnce::NotStarted(err.to_string());
        }
        let wait = async {
            let mut stream = docker.wait_container(&id, None::<WaitContainerOptions>);
            while stream.next().await.is_some() {}
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            return RunOnce::TimedOut;
        }
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut output = String::new();
        let mut logs = docker.logs(&id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        RunOnce::Finished(output)
    }
    .await;
    remove_container(docker, &id).await;
    Ok(outcome)
}

fn internal(message: impl Into<String>) -> Failure {
    Failure::new(FailureClass::Internal, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_listings_keep_direct_regular_files_the_caller_accepts() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_uid(7);
            header.set_gid(8);
            header.set_cksum();
            builder
                .append_data(&mut header, name, std::io::empty())
                .unwrap();
        };
        add("dir/", tar::EntryType::Directory);
        add("dir/a.pyc", tar::EntryType::Regular);
        add("dir/b.pyc", tar::EntryType::Regular);
        add("dir/sub/c.pyc", tar::EntryType::Regular);
        let archive = builder.into_inner().unwrap();
        assert_eq!(
            files_in_archive(&archive, |n| n != "b.pyc").unwrap(),
            vec![("a.pyc".to_string(), (7, 8))]
        );
    }
}
