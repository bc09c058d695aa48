//! Applying a patch on the host with `git apply`, strictly by default.
//!
//! The patch is applied in a scratch directory that holds real copies of only the files it
//! touches (never the original install, never a hard link into it). Each try starts from a
//! fresh copy of those pre-images:
//!
//! 1. strict: every context line must match, and at the line the hunk names (an offset is a
//!    failure: the file is not the one the patch was made against);
//! 2. only when `patch_fuzz = n > 0`: offsets allowed, then up to 1, 2, ... n context lines
//!    ignored per side (`git apply -C<context - k>`, the same rule as GNU patch's fuzz). The first
//!    level that applies is the `fuzz_used` recorded in results.
//!
//! `git apply --reject -v` reports every hunk of every file (not just the first failure), which
//! is what a `patch_failed` message lists. Git runs hermetically: no user or system config, no
//! repository discovery above the scratch directory, C locale for parseable messages.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::PatchLog;
use crate::failure::{Failure, FailureClass};

/// What one `git apply` run reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitReport {
    pub success: bool,
    /// `(path, hunk number)` of every rejected hunk.
    pub rejected: Vec<(String, u32)>,
    /// `(path, hunk number, offset in lines)` of hunks that applied away from their line.
    pub offsets: Vec<(String, u32, i64)>,
    /// Hunks applied with fewer context lines than they carry.
    pub context_reduced: usize,
    /// `error:` lines other than per-hunk details (missing files, corrupt patch, ...).
    pub errors: Vec<String>,
}

/// Parses the output of `git apply -v --reject` (C locale).
pub fn parse_git_output(output: &str) -> GitReport {
    let mut report = GitReport::default();
    let mut current = String::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Checking patch ") {
            current = rest.trim_end_matches("...").to_string();
        } else if let Some(rest) = line.strip_prefix("Applying patch ") {
            // "Applying patch vllm/b.py with 1 reject..."
            if let Some((path, _)) = rest.rsplit_once(" with ") {
                current = path.to_string();
            }
        } else if let Some(rest) = line.strip_prefix("Rejected hunk #") {
            if let Ok(n) = rest.trim_end_matches('.').parse() {
                report.rejected.push((current.clone(), n));
            }
        } else if let Some(rest) = line.strip_prefix("Hunk #") {
            // "Hunk #1 succeeded at 4 (offset 2 lines)."
            let Some((n, rest)) = rest.split_once(' ') else {
                continue;
            };
            let offset = rest
                .split_once("(offset ")
                .and_then(|(_, o)| o.split_whitespace().next())
                .and_then(|o| o.parse::<i64>().ok());
            if let (Ok(n), Some(offset)) = (n.parse(), offset) {
                report.offsets.push((current.clone(), n, offset));
            }
        } else if line.starts_with("Context reduced to ") {
            report.context_reduced += 1;
        } else if let Some(rest) = line.strip_prefix("error: ") {
            // Per-hunk details; the `Rejected hunk` lines say the same per hunk.
            if !rest.starts_with("patch failed: ") && !rest.starts_with("while searching for:") {
                report.errors.push(rest.to_string());
            }
        }
    }
    report
}

/// The location `git` is run from: no repository above `workdir` may be found.
fn git_command(workdir: &Path) -> Command {
    let mut cmd = Command::new("git");
    let ceiling = workdir.parent().unwrap_or(workdir);
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("HOME", ceiling)
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd
}

/// Fails early, with advice, when `git` cannot be run.
pub fn check_git() -> Result<String, Failure> {
    let output = Command::new("git")
        .arg("--version")
        .env("LC_ALL", "C")
        .output()
        .map_err(|err| {
            Failure::new(
                FailureClass::Internal,
                format!(
                    "cannot run `git` ({err}): isobench applies patches with `git apply`; install git"
                ),
            )
        })?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// One `git apply -v --reject` in `dir`; `min_context = None` means all context must match.
pub fn git_apply(
    dir: &Path,
    patch: &Path,
    strip: usize,
    min_context: Option<u32>,
) -> Result<(GitReport, String, String), Failure> {
    let mut cmd = git_command(dir);
    cmd.args(["apply", "-v", "--reject", "--whitespace=nowarn"])
        .arg(format!("-p{strip}"));
    if let Some(c) = min_context {
        cmd.arg(format!("-C{c}"));
    }
    cmd.arg(patch);
    let printed = format!(
        "git apply -v --reject --whitespace=nowarn -p{strip}{} {}",
        min_context.map(|c| format!(" -C{c}")).unwrap_or_default(),
        patch.display()
    );
    let output = cmd.output().map_err(|err| {
        Failure::new(
            FailureClass::Internal,
            format!("cannot run `git apply`: {err}"),
        )
    })?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let mut report = parse_git_output(&text);
    report.success = output.status.success();
    Ok((report, text, printed))
}

/// Settings of one strict-then-tolerant application.
pub struct ApplyJob<'a> {
    /// Real copies of the files the patch touches, at their paths relative to the target.
    pub pre_images: &'a Path,
    /// Scratch space for the tries (`<work>/try-<n>`).
    pub work: &'a Path,
    /// The patch cut down to the files that apply here.
    pub patch: &'a Path,
    pub strip: usize,
    pub fuzz: u32,
    /// Largest context of any hunk (3 for `git diff`).
    pub max_context: u32,
    /// `(path as git prints it, hunk number)` → the hunk's `@@` line, for messages.
    pub hunk_header: &'a dyn Fn(&str, u32) -> Option<String>,
    /// How the target is named in messages.
    pub target: &'a str,
    /// The patch file, for messages.
    pub patch_name: &'a str,
}

/// The patched files and how much tolerance it took.
#[derive(Debug)]
pub struct Applied {
    pub dir: PathBuf,
    pub fuzz_used: Option<u32>,
}

/// Applies strictly, then (if allowed) with growing tolerance. Fails as `patch_failed` listing
/// every rejected file and hunk of the most tolerant try.
pub fn apply_with_tolerance(job: &ApplyJob, log: &PatchLog) -> Result<Applied, Failure> {
    // None = strict; Some(k) = offsets allowed and up to k context lines ignored.
    let mut levels: Vec<Option<u32>> = vec![None];
    if job.fuzz > 0 {
        levels.extend((0..=job.fuzz).map(Some));
    }
    let mut problems = Vec::new();
    for (attempt, level) in levels.iter().enumerate() {
        let dir = job.work.join(format!("try-{attempt}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_failure("clearing", &dir, e))?;
        }
        copy_dir_real(job.pre_images, &dir).map_err(|e| io_failure("copying", &dir, e))?;
        let min_context = level.map(|k| job.max_context.saturating_sub(k));
        let (report, output, command) = git_apply(&dir, job.patch, job.strip, min_context)?;
        log.line(&format!(
            "$ {command}   # {}",
            match level {
                None => "strict: exact context, no offsets".to_string(),
                Some(k) => format!("tolerant: offsets allowed, up to {k} context line(s) ignored"),
            }
        ));
        log.block(&output);
        let strict_offsets = level.is_none() && !report.offsets.is_empty();
        if report.success && !strict_offsets {
            if let Some(k) = level {
                log.line(&format!(
                    "applied with tolerance: fuzz {k} ({} hunk(s) at an offset, {} with reduced context)",
                    report.offsets.len(),
                    report.context_reduced
                ));
            } else {
                log.line("applied strictly");
            }
            return Ok(Applied {
                dir,
                fuzz_used: *level,
            });
        }
        problems = describe_problems(&report, job, level.is_none());
    }
    let mut message = format!(
        "patch {} does not apply to {}: {}",
        job.patch_name,
        job.target,
        problems.join("; ")
    );
    if job.fuzz == 0 {
        message.push_str(" (applied strictly; `patch_fuzz` allows offsets and fuzz)");
    }
    let mut failure = Failure::new(FailureClass::PatchFailed, message);
    failure.sample_log_line = problems.first().cloned();
    Err(failure)
}

fn describe_problems(report: &GitReport, job: &ApplyJob, strict: bool) -> Vec<String> {
    let mut problems: Vec<String> = report
        .errors
        .iter()
        .map(|e| e.trim_end_matches('.').to_string())
        .collect();
    for (path, n) in &report.rejected {
        problems.push(match (job.hunk_header)(path, *n) {
            Some(header) => format!("{path}: hunk #{n} `{header}` rejected"),
            None => format!("{path}: hunk #{n} rejected"),
        });
    }
    if strict && report.rejected.is_empty() && report.errors.is_empty() {
        for (path, n, offset) in &report.offsets {
            problems.push(format!(
                "{path}: hunk #{n} matches only {} line(s) {} where the patch puts it",
                offset.abs(),
                if *offset > 0 { "below" } else { "above" }
            ));
        }
    }
    if problems.is_empty() {
        problems.push("git apply failed (see the log)".into());
    }
    problems
}

/// Copies a directory tree with real copies (no links), keeping file modes.
pub fn copy_dir_real(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).expect("below from");
        let dest = to.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

pub fn io_failure(what: &str, path: &Path, err: std::io::Error) -> Failure {
    Failure::new(
        FailureClass::Internal,
        format!("{what} {}: {err}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_output_lists_rejects_offsets_and_file_errors() {
        let output = "\
Checking patch vllm/a.py...
Hunk #1 succeeded at 4 (offset 2 lines).
Hunk #2 succeeded at 20 (offset -1 line).
Checking patch vllm/b.py...
error: while searching for:
7
8

error: patch failed: vllm/b.py:7
Checking patch vllm/missing.py...
error: vllm/missing.py: No such file or directory
Context reduced to (2/2) to apply fragment at 8
Applied patch vllm/a.py cleanly.
Applying patch vllm/b.py with 2 rejects...
Hunk #1 applied cleanly.
Rejected hunk #2.
Rejected hunk #3.
";
        let report = parse_git_output(output);
        assert_eq!(
            report.rejected,
            vec![("vllm/b.py".to_string(), 2), ("vllm/b.py".to_string(), 3)]
        );
        assert_eq!(
            report.offsets,
            vec![
                ("vllm/a.py".to_string(), 1, 2),
                ("vllm/a.py".to_string(), 2, -1)
            ]
        );
        assert_eq!(
            report.errors,
            vec!["vllm/missing.py: No such file or directory".to_string()]
        );
        assert_eq!(report.context_reduced, 1);
    }
}
