//! Where each value of a TOML file is: `commits[3].model` → byte span. Semantic checks run on
//! plain typed structs and look their locations up here.
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

#[derive(Debug, Default)]
pub struct SpanIndex {
    entries: HashMap<String, (Range<usize>, Range<usize>)>,
}

impl SpanIndex {
    pub fn build(root: &Spanned<DeTable<'_>>) -> SpanIndex {
        let mut index = SpanIndex::default();
        index.walk_table(root.get_ref(), "");
        index
    }

    fn walk_table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let name: &str = key.get_ref().as_ref();
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            };
            self.walk_value(value, path, key.span());
        }
    }

    fn walk_value(&mut self, value: &Spanned<DeValue<'_>>, path: String, key_span: Range<usize>) {
        match value.get_ref() {
            DeValue::Table(t) => self.walk_table(t, &path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_value(item, format!("{path}[{i}]"), item.span());
                }
            }
            _ => {}
        }
        self.entries.insert(path, (key_span, value.span()));
    }

    /// Span of the value at `path`, or of the closest enclosing value that exists.
    pub fn value(&self, path: &str) -> Range<usize> {
        self.lookup(path).1
    }

    /// Span of the key at `path` (for an array element: the element), or the closest enclosing one.
    pub fn key(&self, path: &str) -> Range<usize> {
        self.lookup(path).0
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    fn lookup(&self, path: &str) -> (Range<usize>, Range<usize>) {
        let mut p = path;
        loop {
            if let Some(found) = self.entries.get(p) {
                return found.clone();
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (0..0, 0..0),
            }
        }
    }
}
