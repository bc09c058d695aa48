//! `[images.build]`: the recipe rendered per arm into a [`BuildSpec`] — the source tree at the
//! arm's commit (looked up in the local clone, read-only), the Dockerfile and its content hash,
//! the rendered arguments. Unknown commits, a missing clone or Dockerfile, and two recipes for
//! one image reference are located errors here, not surprises at build time.

use super::{Ctx, Resolver};
use crate::manifest::model::{BuildSpec, DockerfileSource};
use crate::manifest::types::{BuildDef, BuildPolicy};
use crate::util;
use crate::util::git::read as git;
use std::collections::BTreeMap;
use std::path::Path;

/// What the resolver learnt of one (clone, commit): looked up once per campaign.
#[derive(Clone)]
pub(super) enum CommitLookup {
    Found { commit: String, tree: String },
    Unknown(String),
}

impl Resolver<'_> {
    /// Renders the recipe for the image `reference` of one arm and records it in
    /// `self.builds` (the same image from another arm must render the same recipe).
    pub(super) fn resolve_build(
        &mut self,
        def: &BuildDef,
        ctx: &Ctx,
        reference: &str,
        used_by: String,
    ) {
        let site = "images.build";
        let Some(repo_text) =
            self.render_field(&format!("{site}.source.repo"), &def.source.repo, ctx)
        else {
            return;
        };
        let repo = util::normalize_path(&self.manifest_dir.join(util::expand_tilde(&repo_text)));
        let Some((commit, tree)) = self.lookup_commit(&repo, &ctx.arm.commit, &used_by) else {
            return;
        };
        let Some(dockerfile_text) =
            self.render_field(&format!("{site}.dockerfile"), &def.dockerfile, ctx)
        else {
            return;
        };
        let Some((dockerfile, dockerfile_hash)) =
            self.locate_dockerfile(&repo, &commit, &dockerfile_text, &used_by)
        else {
            return;
        };
        let mut args = BTreeMap::new();
        for (name, template) in &def.args {
            let Some(value) = self.render_field(&format!("{site}.args.{name}"), template, ctx)
            else {
                return;
            };
            args.insert(name.clone(), value);
        }
        let spec = BuildSpec {
            reference: reference.to_string(),
            repo,
            commit,
            tree,
            dockerfile,
            dockerfile_hash,
            args,
            target: def.target.clone(),
            policy: def.policy.unwrap_or(BuildPolicy::Missing),
            push: def.push.unwrap_or(false),
            used_by: vec![used_by.clone()],
        };
        let conflict = match self.builds.get_mut(reference) {
            None => {
                self.builds.insert(reference.to_string(), spec);
                None
            }
            Some(existing) if same_recipe(existing, &spec) => {
                existing.used_by.push(used_by.clone());
                None
            }
            Some(existing) => Some((
                existing.used_by[0].clone(),
                existing.commit.clone(),
                spec.commit.clone(),
            )),
        };
        if let Some((first, first_commit, commit)) = conflict {
            {
                self.err(
                    site,
                    format!(
                        "image `{reference}` would be built twice from different sources: for {first} (commit {}) and for {used_by} (commit {})",
                        short(&first_commit),
                        short(&commit)
                    ),
                    "one image reference, two recipes",
                )
                .with_help("give each commit's arms distinct image tags, e.g. `{{ images.repo }}:{{ arm.commit }}`");
            }
        }
    }

    /// The full hash and tree id of `rev` in the clone; a located error if the clone or the
    /// commit is not there.
    fn lookup_commit(&mut self, repo: &Path, rev: &str, used_by: &str) -> Option<(String, String)> {
        let key = (repo.to_path_buf(), rev.to_string());
        let lookup = match self.commit_lookups.get(&key) {
            Some(found) => found.clone(),
            None => {
                let found = lookup_commit(repo, rev);
                self.commit_lookups.insert(key, found.clone());
                found
            }
        };
        match lookup {
            CommitLookup::Found { commit, tree } => Some((commit, tree)),
            CommitLookup::Unknown(why) => {
                if self.build_problems.insert(why.clone()) {
                    self.err("images.build.source.repo", format!("cannot build the image of {used_by}: {why}"), "source of the build")
                        .with_help("fetch the commit into the clone (`git fetch origin <commit>`), or set `build = false` on the arm to pull its image instead");
                }
                None
            }
        }
    }

    /// The Dockerfile: next to the manifest if that file exists, else inside the source tree at
    /// the commit; with the blake3 of its content.
    fn locate_dockerfile(
        &mut self,
        repo: &Path,
        commit: &str,
        path: &str,
        used_by: &str,
    ) -> Option<(DockerfileSource, util::hash::Hash)> {
        let beside = util::normalize_path(&self.manifest_dir.join(util::expand_tilde(path)));
        if beside.is_file() {
            return match std::fs::read(&beside) {
                Ok(bytes) => Some((
                    DockerfileSource::Manifest(beside),
                    util::hash::Hash::of(&bytes),
                )),
                Err(e) => {
                    self.err(
                        "images.build.dockerfile",
                        format!("cannot read the Dockerfile {}: {e}", beside.display()),
                        "Dockerfile",
                    );
                    None
                }
            };
        }
        let inside = path.trim_start_matches("./").to_string();
        match git(repo, &["cat-file", "blob", &format!("{commit}:{inside}")]) {
            Ok(bytes) => Some((
                DockerfileSource::Source(inside),
                util::hash::Hash::of(&bytes),
            )),
            Err(_) => {
                let why = format!(
                    "no Dockerfile `{path}`: neither {} nor `{inside}` in the source tree at {}",
                    beside.display(),
                    short(commit)
                );
                // Reported once per path: the same file is missing for every arm.
                if self.build_problems.insert(format!("dockerfile {path}")) {
                    self.err(
                        "images.build.dockerfile",
                        format!("{why} (for {used_by})"),
                        "not found",
                    );
                }
                None
            }
        }
    }
}

fn same_recipe(a: &BuildSpec, b: &BuildSpec) -> bool {
    a.tree == b.tree
        && a.dockerfile_hash == b.dockerfile_hash
        && a.args == b.args
        && a.target == b.target
        && a.repo == b.repo
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn lookup_commit(repo: &Path, rev: &str) -> CommitLookup {
    if !repo.is_dir() {
        return CommitLookup::Unknown(format!("no git clone at {}", repo.display()));
    }
    let parse = |spec: String| -> Result<String, String> {
        git(repo, &["rev-parse", "--verify", "--quiet", &spec])
            .map(|out| String::from_utf8_lossy(&out).trim().to_string())
    };
    match (
        parse(format!("{rev}^{{commit}}")),
        parse(format!("{rev}^{{tree}}")),
    ) {
        (Ok(commit), Ok(tree)) if !commit.is_empty() && !tree.is_empty() => {
            CommitLookup::Found { commit, tree }
        }
        (Err(e), _) if e.contains("not a git repository") => {
            CommitLookup::Unknown(format!("{} is not a git clone", repo.display()))
        }
        _ => CommitLookup::Unknown(format!(
            "commit {rev} is not in the clone at {}",
            repo.display()
        )),
    }
}
