//! JSON: the [`Report`] model itself (schema `isobench.report`, `schema_version` 1), pretty-printed.
use crate::report::model::Report;

pub fn render(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report model serialises");
    text.push('\n');
    text
}

/// JSON Schema of the report (generated from the types), for consumers that validate.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).expect("a schema serialises")
}
