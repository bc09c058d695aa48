//! Manifest text → typed, validated campaign (with located diagnostics).
pub mod types;
