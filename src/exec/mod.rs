//! Execution: `apply` — scheduler (GPUs, pulls, patches, sessions), journal writes, resume.
pub mod apply;
pub mod check_env;
pub mod cluster;
pub mod context;
pub mod gpu;
pub mod live;
pub mod patch;
pub mod record;
pub mod results;
pub mod session;

pub use apply::{ApplyError, ApplyOptions, ApplySummary, apply};
