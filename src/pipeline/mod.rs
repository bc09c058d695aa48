//! The expansion of a campaign into a DAG of steps (the step graphs themselves, `pipelines/*.toml`,
//! are read with the manifest: `manifest::pipeline`).
pub mod expand;
