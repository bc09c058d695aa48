//! `isobench schema`: the manifest JSON Schema.
use crate::manifest;
use miette::Result;
use std::process::ExitCode;

pub fn run_schema() -> Result<ExitCode> {
    println!("{}", schema_text());
    Ok(ExitCode::SUCCESS)
}

/// The committed `schemas/manifest.schema.json` must equal this text.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&manifest::schema()).expect("schema serialises")
}
