//! Manifest text → typed, validated [`Campaign`] with located diagnostics.
//!
//! `types` is what users write (and the JSON Schema); `resolve` checks it and produces `model`,
//! the resolved campaign every later stage uses.
pub mod defaults;
pub mod diag;
pub mod model;
pub mod pipeline;
pub mod resolve;
pub mod schema_check;
pub mod spans;
pub mod template;
pub mod types;

pub use diag::ManifestError;
pub use model::Campaign;
pub use resolve::{load_file, load_str, schema};
