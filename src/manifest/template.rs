//! minijinja templates in strict mode, with errors located inside the manifest file.

use super::diag::{Collector, Source};
use minijinja::{Environment, UndefinedBehavior};
use std::collections::HashMap;
use std::ops::Range;

/// Variables a template may use, for the help line of an undefined-variable error.
pub const AVAILABLE: &str = "commit.{human,parent,short,parent_short,subject,model}, model.{name,hf,path,tokenizer,revision,served_name}, arm.{name,role,path,image}, images.{repo,registry}, repo, vars.*; in server commands also server.{max_model_len,gpus,vars}, port, isobench (this executable); models.*.{path,tokenizer} see only vars.*; env(\"NAME\", \"default\") everywhere";

/// Compiled templates keyed by their location in the manifest (e.g. `arms[2].image`).
pub struct Templates {
    env: Environment<'static>,
    /// location → (template source, span of the TOML string holding it)
    sites: HashMap<String, (String, Range<usize>)>,
    reported: std::collections::HashSet<(Range<usize>, String)>,
    /// Names `env()` read since the last [`Templates::take_env_reads`] (to warn when a value
    /// from the environment, often a secret, ends up on a command line).
    env_reads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(false);
        let env_reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reads = env_reads.clone();
        // `env("NAME", "default")` reads the environment of the machine that runs isobench.
        env.add_function(
            "env",
            move |name: String, default: Option<String>| -> Result<String, minijinja::Error> {
                if let Ok(mut reads) = reads.lock() {
                    reads.push(name.clone());
                }
                match std::env::var(&name) {
                    Ok(v) => Ok(v),
                    Err(_) => default.ok_or_else(|| {
                        minijinja::Error::new(
                            minijinja::ErrorKind::UndefinedError,
                            format!(
                                "environment variable `{name}` is not set and no default was given"
                            ),
                        )
                    }),
                }
            },
        );
        Templates {
            env,
            sites: HashMap::new(),
            reported: Default::default(),
            env_reads,
        }
    }

    /// The variable names `env()` read since the last call, in order, without repeats.
    pub fn take_env_reads(&self) -> Vec<String> {
        let mut names = self
            .env_reads
            .lock()
            .map(|mut reads| std::mem::take(&mut *reads))
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    /// Compiles the template at `site` once; reports a syntax error at its location.
    pub fn add(
        &mut self,
        site: &str,
        template: &str,
        span: Range<usize>,
        source: &Source,
        out: &mut Collector,
    ) -> bool {
        if self.sites.contains_key(site) {
            return true;
        }
        self.sites
            .insert(site.to_string(), (template.to_string(), span.clone()));
        match self
            .env
            .add_template_owned(site.to_string(), template.to_string())
        {
            Ok(()) => true,
            Err(e) => {
                self.report(site, &e, source, out);
                false
            }
        }
    }

    /// Renders the template at `site`; on error reports it (once per location and message).
    pub fn render<S: serde::Serialize>(
        &mut self,
        site: &str,
        ctx: S,
        source: &Source,
        out: &mut Collector,
    ) -> Option<String> {
        let tmpl = self.env.get_template(site).ok()?;
        match tmpl.render(ctx) {
            Ok(s) => Some(s),
            Err(e) => {
                self.report(site, &e, source, out);
                None
            }
        }
    }

    fn report(&mut self, site: &str, e: &minijinja::Error, source: &Source, out: &mut Collector) {
        let (template, string_span) = self.sites.get(site).cloned().unwrap_or_default();
        let span = e
            .range()
            .map(|r| map_into_file(&source.text, &string_span, &template, r))
            .unwrap_or(string_span.clone());
        let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        let (message, label, help) = match e.kind() {
            minijinja::ErrorKind::UndefinedError => (
                format!("template `{site}` uses an undefined variable{detail}"),
                "undefined here".to_string(),
                Some(format!("available: {AVAILABLE}")),
            ),
            minijinja::ErrorKind::SyntaxError => (
                format!("template `{site}` has a syntax error{detail}"),
                "syntax error".to_string(),
                None,
            ),
            kind => (
                format!("template `{site}` failed: {kind}{detail}"),
                "here".to_string(),
                None,
            ),
        };
        if self.reported.insert((span.clone(), message.clone())) {
            let d = out.error(source, span, message, label);
            if let Some(help) = help {
                d.with_help(help);
            }
        }
    }
}

/// Maps a byte range inside a template to the file, when the TOML string holds the template
/// verbatim (no escapes); otherwise points at the whole string.
fn map_into_file(
    text: &str,
    string_span: &Range<usize>,
    template: &str,
    range: Range<usize>,
) -> Range<usize> {
    let raw = match text.get(string_span.clone()) {
        Some(raw) => raw,
        None => return string_span.clone(),
    };
    let mut offset = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        1
    };
    if offset == 3 && raw[offset..].starts_with('\n') {
        offset += 1;
    }
    match raw.get(offset..offset + template.len()) {
        Some(inner) if inner == template => {
            let start = string_span.start + offset + range.start.min(template.len());
            let end = string_span.start + offset + range.end.min(template.len());
            start..end.max(start)
        }
        _ => string_span.clone(),
    }
}

/// Splits a rendered command line into arguments: whitespace separates, single and double
/// quotes group, backslash escapes the next character (outside single quotes).
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => current.push(ch),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch) => current.push(ch),
                            None => return Err("trailing backslash".into()),
                        },
                        Some(ch) => current.push(ch),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(ch) => {
                    in_word = true;
                    current.push(ch)
                }
                None => return Err("trailing backslash".into()),
            },
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                current.push(c)
            }
        }
    }
    if in_word {
        args.push(current);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_command("a  b 'c d' \"e \\\" f\" g\\ h").unwrap(),
            vec!["a", "b", "c d", "e \" f", "g h"]
        );
        assert_eq!(split_command("").unwrap(), Vec::<String>::new());
        assert_eq!(split_command("x ''").unwrap(), vec!["x", ""]);
        assert!(split_command("a 'b").is_err());
    }

    #[test]
    fn maps_template_ranges_into_the_file() {
        let text = "image = \"{{ repo }}:{{ commit.hmn }}\"\n";
        let span = 8..text.len() - 1;
        let template = "{{ repo }}:{{ commit.hmn }}";
        let r = template.find("commit.hmn").unwrap();
        let mapped = map_into_file(text, &span, template, r..r + 10);
        assert_eq!(&text[mapped], "commit.hmn");
    }
}
