//! Helpers shared by integration tests. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod docker_env;
pub mod git_repo;
pub mod slurm_env;
