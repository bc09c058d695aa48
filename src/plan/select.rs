//! `--commit` / `--arm`: plan or apply part of a campaign (the seed's single-commit mode,
//! Terraform's `-target`). The campaign is narrowed before it is expanded, so the selected arms
//! keep exactly the nodes (and keys) they have in the whole campaign — their own pulls and
//! patches included — and nothing else is planned, run or required: a human-only run needs no
//! baseline image.
use crate::manifest::model::Campaign;
use crate::manifest::pipeline::StepKind;

/// What `--commit` and `--arm` asked for (empty: everything).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub commits: Vec<String>,
    pub arms: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.arms.is_empty()
    }
}

/// The outcome, for the plan's header line and `--format json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Targeted {
    /// Short names of the selected commits, in manifest order.
    pub commits: Vec<String>,
    /// Selected arm names (all arms when `--arm` was not given).
    pub arms: Vec<String>,
    pub total_commits: usize,
    pub total_arms: usize,
    /// Whether the per-commit compare steps were left out (they need every arm).
    pub compare_skipped: bool,
}

impl Targeted {
    /// `Targeting 1 of 44 commits (015069b0), 1 of 3 arms (human); compare skipped.`
    pub fn line(&self) -> String {
        let list = |v: &[String]| {
            if v.len() <= 6 {
                v.join(", ")
            } else {
                format!("{}, … {} more", v[..5].join(", "), v.len() - 5)
            }
        };
        format!(
            "Targeting {} of {} commit(s) ({}), {} of {} arm(s) ({}){}: other nodes are not planned.",
            self.commits.len(),
            self.total_commits,
            list(&self.commits),
            self.arms.len(),
            self.total_arms,
            list(&self.arms),
            if self.compare_skipped {
                "; per-commit compare skipped (it needs every arm)"
            } else {
                ""
            }
        )
    }
}

/// Narrows `campaign` to the selection. A commit selector matches a prefix of the human commit
/// hash or the commit's short name; an arm selector an arm's name. Unknown selectors are an
/// error that lists the valid values.
pub fn apply(campaign: &mut Campaign, sel: &Selection) -> Result<Option<Targeted>, String> {
    if sel.is_empty() {
        return Ok(None);
    }
    let total_commits = campaign.commits.len();
    let total_arms = campaign.arms.len();
    for c in &sel.commits {
        let c = c.trim();
        if c.is_empty()
            || !campaign
                .commits
                .iter()
                .any(|k| k.human.starts_with(c) || k.short == c)
        {
            return Err(format!(
                "--commit `{c}` matches no commit of the manifest; valid: {}",
                campaign
                    .commits
                    .iter()
                    .map(|k| k.short.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for a in &sel.arms {
        if !campaign.arms.iter().any(|x| &x.name == a) {
            return Err(format!(
                "--arm `{a}` is not an arm of the manifest; valid: {}",
                campaign
                    .arms
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if !sel.commits.is_empty() {
        campaign.commits.retain(|k| {
            sel.commits
                .iter()
                .any(|c| k.human.starts_with(c.trim()) || k.short == c.trim())
        });
    }
    let compare_skipped = !sel.arms.is_empty();
    if compare_skipped {
        for k in &mut campaign.commits {
            k.arms.retain(|a| sel.arms.contains(&a.name));
            k.absent.retain(|a| sel.arms.contains(&a.arm));
        }
        // A compare over some arms would record a partial comparison under the commit's
        // compare address; leave it to a full apply (or `isobench report`).
        campaign
            .pipeline
            .steps
            .retain(|s| s.kind != StepKind::Compare);
    }
    let arms = if sel.arms.is_empty() {
        campaign.arms.iter().map(|a| a.name.clone()).collect()
    } else {
        campaign
            .arms
            .iter()
            .filter(|a| sel.arms.contains(&a.name))
            .map(|a| a.name.clone())
            .collect()
    };
    Ok(Some(Targeted {
        commits: campaign.commits.iter().map(|k| k.short.clone()).collect(),
        arms,
        total_commits,
        total_arms,
        compare_skipped,
    }))
}
