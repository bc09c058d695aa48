//! The native load generator: datasets, the streaming client, vLLM-identical metrics.
mod dataset;

pub use dataset::resolve_tokenizer_file;
