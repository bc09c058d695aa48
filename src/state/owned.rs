//! What this state directory owns outside itself, so that isobench never touches what another
//! state directory (or a person) made:
//!
//! - `state-id`: a random id created once per state directory. Servers are labelled with it
//!   (with the run id and host, see `runtime::Owner`), and cleanup selects by it, never by the
//!   campaign name, which two state directories may share.
//! - `pulled-images.json`: the images an `apply` of this state directory pulled (reference and
//!   local id). `disk_budget` pruning removes only these, never an image that was already on
//!   the host (a local-only tag could not be pulled back).
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const STATE_ID: &str = "state-id";
pub const PULLED_IMAGES: &str = "pulled-images.json";

/// The state directory's id, created on first use. Created with `create_new`, so two processes
/// that race on a fresh directory agree on one id.
pub fn state_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(STATE_ID);
    loop {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim();
                if is_valid_id(id) {
                    return Ok(id.to_string());
                }
                // A creator may be between create_new and its write; an id is 32 hex digits.
                if !text.is_empty() || modified_long_ago(&path) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} does not hold a state id (32 hex digits); restore it or delete it (servers of earlier runs are then no longer recognised as this state directory's)",
                            path.display()
                        ),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let id = format!("{:032x}", rand::random::<u128>());
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Ok(mut file) => {
                        file.write_all(format!("{id}\n").as_bytes())?;
                        file.sync_all()?;
                        return Ok(id);
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(err),
                }
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn modified_long_ago(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > std::time::Duration::from_secs(5))
}

/// One image this state directory pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledImage {
    /// As pulled (normalised: with a tag).
    pub reference: String,
    /// The local image id the pull produced: pruning skips the reference if it now names
    /// another image (re-tagged or re-pulled by someone else).
    pub id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PulledFile {
    images: Vec<PulledImage>,
}

/// The images recorded by [`record_pulled`]; none if the file is missing. Callers serialise
/// access (one `apply` per state directory holds the lock; within it, one mutex).
pub fn pulled_images(dir: &Path) -> std::io::Result<Vec<PulledImage>> {
    match std::fs::read(dir.join(PULLED_IMAGES)) {
        Ok(bytes) => serde_json::from_slice::<PulledFile>(&bytes)
            .map(|f| f.images)
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(PULLED_IMAGES).display()),
                )
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

fn write_pulled(dir: &Path, images: Vec<PulledImage>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(&PulledFile { images }).expect("json");
    crate::util::fsx::write_atomic(&dir.join(PULLED_IMAGES), &bytes)
}

/// Records that this state directory pulled `image` (replacing an older entry of its reference).
pub fn record_pulled(dir: &Path, image: PulledImage) -> std::io::Result<()> {
    let mut images = pulled_images(dir)?;
    images.retain(|i| i.reference != image.reference);
    images.push(image);
    write_pulled(dir, images)
}

/// Forgets `reference` (it was pruned).
pub fn forget_pulled(dir: &Path, reference: &str) -> std::io::Result<()> {
    let mut images = pulled_images(dir)?;
    let before = images.len();
    images.retain(|i| i.reference != reference);
    if images.len() == before {
        return Ok(());
    }
    write_pulled(dir, images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = state_id(dir.path()).unwrap();
        assert!(is_valid_id(&id), "{id}");
        assert_eq!(state_id(dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(state_id(other.path()).unwrap(), id);
        std::fs::write(dir.path().join(STATE_ID), "garbage\n").unwrap();
        let err = state_id(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not hold a state id"), "{err}");
    }

    #[test]
    fn pulled_images_are_recorded_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(pulled_images(dir.path()).unwrap().is_empty());
        let a = PulledImage {
            reference: "r/a:1".into(),
            id: "sha256:1".into(),
        };
        let b = PulledImage {
            reference: "r/b:1".into(),
            id: "sha256:2".into(),
        };
        record_pulled(dir.path(), a.clone()).unwrap();
        record_pulled(dir.path(), b.clone()).unwrap();
        let a2 = PulledImage {
            id: "sha256:3".into(),
            ..a.clone()
        };
        record_pulled(dir.path(), a2.clone()).unwrap();
        assert_eq!(pulled_images(dir.path()).unwrap(), vec![b.clone(), a2]);
        forget_pulled(dir.path(), "r/a:1").unwrap();
        assert_eq!(pulled_images(dir.path()).unwrap(), vec![b]);
    }
}
