//! Read-only git plumbing over a local clone (`[images.build]` sources): `git -C <clone>`, and
//! only commands that read (rev-parse, cat-file, archive): never its working tree, index or refs.
use std::path::Path;
use std::process::Command;

/// Runs `git -C repo <args>` and returns its stdout; stderr as the error.
pub fn read(repo: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}
