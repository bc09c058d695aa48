//! One `apply` per state directory: an exclusive lock on `<state>/lock` (std's `File::try_lock`,
//! which is `flock` on Unix), whose content names the holder. The kernel drops the lock when the holder dies (even by `kill -9`), so a crash
//! never leaves a lock that blocks the next run; `isobench unlock` exists for the cases flock
//! cannot see (a hung holder, a lock file copied between machines).

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub since: String,
    pub command: String,
    #[serde(default)]
    pub run: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {} (`{}`, run {})",
            self.pid, self.host, self.since, self.command, self.run
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state directory {dir} is locked by {holder}")]
    Held { dir: PathBuf, holder: Box<Holder> },
    #[error("the state directory {dir} is locked by another process (holder unknown)")]
    HeldUnknown { dir: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held lock; dropping it releases the lock (and the file says nobody holds it).
#[derive(Debug)]
pub struct LockGuard {
    file: std::fs::File,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn try_flock(file: &std::fs::File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Takes the lock or says who has it.
pub fn acquire(dir: &Path, holder: &Holder) -> Result<LockGuard, LockError> {
    let path = dir.join("lock");
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    if !try_flock(&file).map_err(io)? {
        return Err(match read_holder(dir) {
            Some(holder) => LockError::Held {
                dir: dir.to_path_buf(),
                holder: Box::new(holder),
            },
            None => LockError::HeldUnknown {
                dir: dir.to_path_buf(),
            },
        });
    }
    let text = serde_json::to_vec_pretty(holder).expect("holder serialises");
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(&text).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(LockGuard { file })
}

pub fn read_holder(dir: &Path) -> Option<Holder> {
    let mut text = String::new();
    std::fs::File::open(dir.join("lock"))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

#[derive(Debug, PartialEq)]
pub enum UnlockOutcome {
    /// There was no lock file.
    NotLocked,
    /// The file named a holder that is gone; it was removed.
    ClearedStale(Option<Holder>),
}

/// Clears a stale lock, refusing while a live process holds it (unless `force`).
pub fn unlock(dir: &Path, force: bool) -> Result<UnlockOutcome, String> {
    let path = dir.join("lock");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UnlockOutcome::NotLocked),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let holder = read_holder(dir);
    let free = try_flock(&file).map_err(|e| format!("cannot test the lock: {e}"))?;
    if !free && !force {
        let who = holder
            .as_ref()
            .map_or("an unknown process".to_string(), |h| h.to_string());
        let alive = holder.as_ref().is_some_and(|h| {
            h.host == hostname() && Path::new(&format!("/proc/{}", h.pid)).exists()
        });
        return Err(if alive {
            format!(
                "the lock is held by a live process: {who}; stop it first (or pass --force if you are sure it is stuck)"
            )
        } else {
            format!("the lock is held by {who}; pass --force to clear it anyway")
        });
    }
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    Ok(UnlockOutcome::ClearedStale(holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            since: "now".into(),
            command: "test".into(),
            run: "r1".into(),
        }
    }

    #[test]
    fn second_acquire_names_the_holder_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let guard = acquire(dir.path(), &me()).unwrap();
        match acquire(dir.path(), &me()) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder.pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(
            unlock(dir.path(), false)
                .unwrap_err()
                .contains("live process")
        );
        drop(guard);
        let again = acquire(dir.path(), &me());
        assert!(again.is_ok());
    }

    #[test]
    fn unlock_clears_a_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let stale = Holder {
            pid: 999_999_999,
            host: "elsewhere".into(),
            since: "then".into(),
            command: "apply".into(),
            run: "old".into(),
        };
        std::fs::write(dir.path().join("lock"), serde_json::to_vec(&stale).unwrap()).unwrap();
        assert_eq!(
            unlock(dir.path(), false).unwrap(),
            UnlockOutcome::ClearedStale(Some(stale))
        );
        assert_eq!(unlock(dir.path(), false).unwrap(), UnlockOutcome::NotLocked);
    }
}
