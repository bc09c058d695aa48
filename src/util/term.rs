//! Terminal styling that respects `NO_COLOR` and only colours real terminals.
use std::borrow::Cow;
use std::io::IsTerminal;

/// Text from outside (a server's error message or log line, a commit subject) made safe to
/// print: control characters (C0 except tab and newline, DEL, C1 — ESC and CSI start terminal
/// escape sequences) and bidirectional overrides (which reorder what a reader sees) become a
/// visible `\u{..}` escape, so a hostile server cannot move the cursor, recolour, retitle or
/// clear the terminal, or write hyperlinks into the live view and reports.
pub fn printable(s: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] for one line: newlines and tabs become spaces as well.
pub fn printable_line(s: &str) -> Cow<'_, str> {
    match printable(s) {
        Cow::Borrowed(b) if !b.contains(['\n', '\r', '\t']) => Cow::Borrowed(b),
        other => Cow::Owned(other.replace(['\n', '\t'], " ")),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset (https://no-color.org).
    pub fn for_stdout() -> Style {
        Style {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal(),
        }
    }

    pub fn plain() -> Style {
        Style { color: false }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn cyan(&self, s: &str) -> String {
        self.paint("36", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// Writes `text` to stdout, ignoring errors. `apply` ignores SIGPIPE so that a closed pipe
/// (`isobench apply … | head`) cannot kill it mid-campaign with servers running; `print!`
/// would then panic on EPIPE instead, so the campaign's output goes through here.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Like [`out`], for stderr (a line; the newline is added).
pub fn err_line(text: &str) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert!(matches!(printable("plain é 😀\tok\n"), Cow::Borrowed(_)));
        let hostile = "boom\x1b[2J\x1b]0;pwned\x07\u{9b}31m\r\x7f\u{202E}gnp.exe";
        let shown = printable(hostile);
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{202E}'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "boom\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{9b}31m\\u{d}\\u{7f}\\u{202e}gnp.exe"
        );
        assert_eq!(printable_line("a\nb\tc\x1b"), "a b c\\u{1b}");
    }
}
