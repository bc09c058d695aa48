//! Checks a parsed TOML tree (with spans) against the manifest's JSON Schema, collecting *every*
//! unknown key, wrong type, missing key and out-of-range number at once.
//!
//! Why a schema walk instead of serde alone: serde stops at the first error and loses the
//! location of most; the JSON Schema is generated from the same types (`schemars`), so this
//! check and the schema editors use can never disagree.

use super::diag::{Collector, Source, did_you_mean};
use serde_json::Value;
use toml::Spanned;
use toml::de::DeValue;

pub struct SchemaChecker<'a> {
    root: &'a Value,
    source: &'a Source,
}

impl<'a> SchemaChecker<'a> {
    pub fn new(root: &'a Value, source: &'a Source) -> SchemaChecker<'a> {
        SchemaChecker { root, source }
    }

    /// Checks `value` against `schema`; `path` names the place for messages (`commits[2].load`).
    pub fn check(
        &self,
        value: &Spanned<DeValue<'_>>,
        schema: &Value,
        path: &str,
        out: &mut Collector,
    ) {
        let schema = self.resolve(schema);
        let span = value.span();
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            self.check_alternatives(value, branches, path, out);
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            self.check_enum(value, allowed, path, out);
            return;
        }
        if let Some(constant) = schema.get("const") {
            self.check_enum(value, std::slice::from_ref(constant), path, out);
            return;
        }
        let types = schema_types(schema);
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, value.get_ref())) {
            let expected = types
                .iter()
                .filter(|t| *t != "null")
                .map(|t| toml_type_name(t))
                .collect::<Vec<_>>()
                .join(" or ");
            let found = value.get_ref().type_str();
            out.error(
                self.source,
                span,
                format!("`{path}`: expected {expected}, found {found}"),
                format!("expected {expected}"),
            );
            return;
        }
        match value.get_ref() {
            DeValue::Table(table) => self.check_table(table, span, schema, path, out),
            DeValue::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &format!("{path}[{i}]"), out);
                    }
                }
            }
            DeValue::Integer(int) => {
                if let Some(n) = parse_int(int.as_str(), int.radix()) {
                    self.check_range(n as f64, span, schema, path, out);
                }
            }
            DeValue::Float(float) => {
                if let Ok(n) = float.as_str().replace('_', "").parse::<f64>() {
                    self.check_range(n, span, schema, path, out);
                }
            }
            _ => {}
        }
    }

    fn check_table(
        &self,
        table: &toml::de::DeTable<'_>,
        span: std::ops::Range<usize>,
        schema: &Value,
        path: &str,
        out: &mut Collector,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (key, value) in table.iter() {
            let name: &str = key.get_ref().as_ref();
            let child_path = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            if let Some(prop) = properties.and_then(|p| p.get(name)) {
                self.check(value, prop, &child_path, out);
            } else {
                match additional {
                    Some(Value::Object(_)) => {
                        self.check(value, additional.expect("matched"), &child_path, out)
                    }
                    Some(Value::Bool(true)) => {}
                    _ if properties.is_none() && additional.is_none() => {}
                    _ => {
                        let known: Vec<&str> = properties
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        let place = if path.is_empty() {
                            "at the top level".to_string()
                        } else {
                            format!("in `{path}`")
                        };
                        let diag = out.error(
                            self.source,
                            key.span(),
                            format!("unknown key `{name}` {place}"),
                            "unknown key",
                        );
                        match did_you_mean(name, known.iter().copied()) {
                            Some(guess) => diag.with_help(format!("did you mean `{guess}`?")),
                            None => diag.with_help(format!("known keys: {}", known.join(", "))),
                        };
                    }
                }
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !table.iter().any(|(k, _)| k.get_ref().as_ref() == name) {
                    let place = if path.is_empty() {
                        "the manifest".to_string()
                    } else {
                        format!("`{path}`")
                    };
                    let label = format!("`{name}` is missing here");
                    let header = header_span(&self.source.text, span.clone());
                    out.error(
                        self.source,
                        header,
                        format!("{place} is missing the required key `{name}`"),
                        label,
                    );
                }
            }
        }
    }

    fn check_alternatives(
        &self,
        value: &Spanned<DeValue<'_>>,
        branches: &[Value],
        path: &str,
        out: &mut Collector,
    ) {
        // Alternatives that are all fixed strings form an enum: report the allowed values.
        let constants: Vec<Value> = branches
            .iter()
            .map(|b| self.resolve(b))
            .filter_map(|b| {
                b.get("const").cloned().or_else(|| {
                    b.get("enum")
                        .and_then(|e| e.as_array())
                        .and_then(|e| (e.len() == 1).then(|| e[0].clone()))
                })
            })
            .collect();
        if constants.len() == branches.len() {
            self.check_enum(value, &constants, path, out);
            return;
        }
        let mut best: Option<Collector> = None;
        for branch in branches {
            let branch = self.resolve(branch);
            let mut scratch = Collector::default();
            self.check(value, branch, path, &mut scratch);
            if scratch.is_empty() {
                return;
            }
            // Prefer the branch whose type matched (its errors are about the value's insides).
            let types = schema_types(branch);
            let type_ok =
                types.is_empty() || types.iter().any(|t| type_matches(t, value.get_ref()));
            if type_ok
                && best
                    .as_ref()
                    .is_none_or(|b| b.items.len() > scratch.items.len())
            {
                best = Some(scratch);
            }
        }
        match best {
            Some(collected) => out.items.extend(collected.items),
            None => {
                let mut expected: Vec<String> = branches
                    .iter()
                    .flat_map(|b| schema_types(self.resolve(b)))
                    .filter(|t| t != "null")
                    .map(|t| toml_type_name(&t).to_string())
                    .collect();
                expected.dedup();
                let expected = expected.join(" or ");
                let found = value.get_ref().type_str();
                out.error(
                    self.source,
                    value.span(),
                    format!("`{path}`: expected {expected}, found {found}"),
                    format!("expected {expected}"),
                );
            }
        }
    }

    fn check_enum(
        &self,
        value: &Spanned<DeValue<'_>>,
        allowed: &[Value],
        path: &str,
        out: &mut Collector,
    ) {
        let allowed_str: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        let ok = match value.get_ref() {
            DeValue::String(s) => allowed_str.contains(&s.as_ref()),
            _ => false,
        };
        if ok || allowed.iter().any(Value::is_null) && allowed_str.is_empty() {
            return;
        }
        let list = allowed_str
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let diag = out.error(
            self.source,
            value.span(),
            format!("`{path}`: expected one of {list}"),
            "not an allowed value",
        );
        if let Some(s) = value.get_ref().as_str()
            && let Some(guess) = did_you_mean(s, allowed_str.iter().copied())
        {
            diag.with_help(format!("did you mean `{guess}`?"));
        }
    }

    fn check_range(
        &self,
        n: f64,
        span: std::ops::Range<usize>,
        schema: &Value,
        path: &str,
        out: &mut Collector,
    ) {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.error(
                self.source,
                span.clone(),
                format!("`{path}`: must be at least {min}, found {n}"),
                format!("must be ≥ {min}"),
            );
        }
        if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64)
            && n <= min
        {
            out.error(
                self.source,
                span.clone(),
                format!("`{path}`: must be greater than {min}, found {n}"),
                format!("must be > {min}"),
            );
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.error(
                self.source,
                span,
                format!("`{path}`: must be at most {max}, found {n}"),
                format!("must be ≤ {max}"),
            );
        }
    }

    /// Follows `$ref` (`#/$defs/Name`) to the schema it names.
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        let mut current = schema;
        for _ in 0..16 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let pointer = reference.trim_start_matches('#');
                    match self.root.pointer(pointer) {
                        Some(target) => current = target,
                        None => return current,
                    }
                }
                None => return current,
            }
        }
        current
    }
}

fn schema_types(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn type_matches(schema_type: &str, value: &DeValue<'_>) -> bool {
    match schema_type {
        "string" => value.is_str(),
        "integer" => value.is_integer(),
        "number" => value.is_integer() || value.is_float(),
        "boolean" => value.is_bool(),
        "array" => value.is_array(),
        "object" => value.is_table(),
        _ => false,
    }
}

fn toml_type_name(schema_type: &str) -> &str {
    match schema_type {
        "object" => "table",
        "number" => "number",
        other => other,
    }
}

fn parse_int(text: &str, radix: u32) -> Option<i64> {
    let cleaned = text.replace('_', "");
    let digits = cleaned
        .trim_start_matches("0x")
        .trim_start_matches("0o")
        .trim_start_matches("0b");
    i64::from_str_radix(digits, radix).ok()
}

/// For a table spanning many lines, point at its first line (the `[[commits]]` header).
fn header_span(text: &str, span: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let start = span.start.min(text.len());
    let end = text[start..]
        .find('\n')
        .map_or(span.end, |i| (start + i).min(span.end.max(start)));
    start..end.max(start)
}
