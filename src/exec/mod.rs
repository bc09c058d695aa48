//! Execution: `apply` — scheduler (GPUs, pulls, patches, sessions), journal writes, resume.
pub mod apply;
pub mod check_env;
pub mod context;
pub mod gpu;
pub mod live;
pub mod pairing;
pub mod patch;
pub mod placement;
pub mod record;
pub mod results;
pub mod session;

pub use apply::{ApplyError, ApplyOptions, ApplySummary, apply};

pub use crate::manifest::model::Isolate;
