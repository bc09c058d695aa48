//! Located diagnostics: every problem of a file is collected, then shown together with miette.

use miette::{LabeledSpan, NamedSource, SourceCode};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A source file diagnostics point into (a manifest or a pipeline).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: Arc<str>,
    named: Arc<NamedSource<String>>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Source {
        let (name, text): (String, Arc<str>) = (name.into(), text.into());
        let named = Arc::new(NamedSource::new(name.clone(), text.to_string()));
        Source { name, text, named }
    }

    /// 1-based line and column of a byte offset (column counted in characters).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        // A span computed by arithmetic may end inside a multi-byte character: back off.
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }
}

/// One problem, located by a byte span in its source.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub source: Source,
    pub message: String,
    pub span: Range<usize>,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    /// `file:line:col: message` — the one-line form used in tests and logs.
    pub fn short(&self) -> String {
        let (line, col) = self.source.line_col(self.span.start);
        format!("{}:{}:{}: {}", self.source.name, line, col, self.message)
    }

    pub fn line_col(&self) -> (usize, usize) {
        self.source.line_col(self.span.start)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&*self.source.named as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let len = self.span.end.saturating_sub(self.span.start);
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(self.label.clone()), (self.span.start, len)),
        )))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// Collects diagnostics for a source.
#[derive(Debug, Default)]
pub struct Collector {
    pub items: Vec<Diagnostic>,
}

impl Collector {
    pub fn error(
        &mut self,
        source: &Source,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.items.push(Diagnostic {
            source: source.clone(),
            message: message.into(),
            span,
            label: label.into(),
            help: None,
        });
        self.items.last_mut().expect("just pushed")
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Fails with every collected diagnostic, in file order, if there are any.
    pub fn finish(&mut self) -> Result<(), ManifestError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let mut items = std::mem::take(&mut self.items);
        items.sort_by(|a, b| {
            a.source
                .name
                .cmp(&b.source.name)
                .then(a.span.start.cmp(&b.span.start))
        });
        Err(ManifestError { diagnostics: items })
    }
}

/// A diagnostic shown as a warning: the manifest is valid, but something in it is risky.
#[derive(Debug, Clone)]
pub struct Warning(pub Diagnostic);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Warning {}

impl miette::Diagnostic for Warning {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Warning)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.0.labels()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.help()
    }
}

impl Diagnostic {
    pub fn with_help(&mut self, help: impl Into<String>) -> &mut Diagnostic {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in a manifest (and the pipeline it names), shown together.
#[derive(Debug)]
pub struct ManifestError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ManifestError {
    /// An error about a file as a whole (cannot read it, for example).
    pub fn whole_file(name: &str, message: String) -> ManifestError {
        let source = Source::new(name, "");
        ManifestError {
            diagnostics: vec![Diagnostic {
                source,
                message,
                span: 0..0,
                label: String::new(),
                help: None,
            }],
        }
    }

    /// The one-line forms, for tests and logs.
    pub fn short_lines(&self) -> Vec<String> {
        self.diagnostics.iter().map(Diagnostic::short).collect()
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .diagnostics
            .first()
            .map(|d| d.source.name.as_str())
            .unwrap_or("manifest");
        match self.diagnostics.len() {
            1 => write!(f, "{file}: 1 error"),
            n => write!(f, "{file}: {n} errors"),
        }
    }
}

impl std::error::Error for ManifestError {}

impl miette::Diagnostic for ManifestError {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.diagnostics
                .iter()
                .map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}

/// Closest candidate by edit distance, for "did you mean" help lines.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
