//! Execution: scheduler, sessions, journal writes, resume.
pub mod check_env;
pub mod patch;
pub mod record;
