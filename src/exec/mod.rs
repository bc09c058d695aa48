//! Execution: `apply` — scheduler (GPUs, pulls, patches, sessions), journal writes, resume.
pub mod apply;
pub mod build;
pub mod check_env;
pub mod cluster;
pub mod context;
pub mod events;
pub mod gpu;
pub mod live;
pub mod pairing;
pub mod patch;
pub mod placement;
pub mod record;
pub mod session;

pub use apply::{ApplyError, ApplyOptions, ApplySummary, apply};

/// What a `compare` node writes (`compare.json`: one commit's arms side by side). The caller
/// supplies it, so that `exec` runs comparisons without depending on the report module: the CLI
/// composes `apply` and `report`.
pub trait Comparer: Send + Sync {
    /// The comparison of `commit` (an index into `campaign.commits`) from the recorded state, as
    /// the bytes of `compare.json`.
    fn compare(
        &self,
        campaign: &crate::manifest::Campaign,
        dag: &crate::pipeline::expand::Dag,
        state: &crate::state::State,
        commit: usize,
    ) -> Result<Vec<u8>, String>;
}
pub use crate::manifest::model::Isolate;
