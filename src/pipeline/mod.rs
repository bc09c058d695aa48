//! Pipelines (`pipelines/*.toml`) and the expansion of a campaign into a DAG of steps.
pub mod def;
pub mod expand;
