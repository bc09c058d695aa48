//! Just enough of a unified-diff parser to plan a patch before `git apply` runs it: which files
//! it touches (and how: modified, added, deleted, renamed), where each file's section starts and
//! ends (so a patch can be cut down to the files that apply to the target), and each hunk's
//! header and context size (for reject messages and fuzz levels).
//!
//! Hunks are consumed by their line counts, so a removed line that reads `-- x` (`--- x` in the
//! diff) is never mistaken for the next file's header. Git's extended headers (`new file mode`,
//! `rename from`, `GIT binary patch`, ...) and plain `diff -u` output are both understood.

/// How a file section changes its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modify,
    Add,
    Delete,
    Rename,
    Copy,
}

/// One hunk: its `@@ ... @@` line and how many unchanged lines surround the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    pub header: String,
    /// Context lines before the first change.
    pub leading: u32,
    /// Context lines after the last change.
    pub trailing: u32,
}

/// One file's section of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// The section's text, exactly as in the patch (a filtered patch is these texts joined).
    pub text: String,
    /// The path before the change, as the patch names it (with its `a/` prefix if any);
    /// `None` for an added file.
    pub old_raw: Option<String>,
    /// The path after the change; `None` for a deleted file.
    pub new_raw: Option<String>,
    /// Whether `old_raw`/`new_raw` came from lines that carry the `a/`/`b/` prefix
    /// (`---`/`+++`, `diff --git`) rather than from `rename from`-style lines (never prefixed).
    old_prefixed: bool,
    new_prefixed: bool,
    /// A `---` line was read for this section (a second one begins the next plain-diff file).
    saw_old_line: bool,
    pub kind: ChangeKind,
    /// A `Binary files ... differ` line or a `GIT binary patch`.
    pub binary: bool,
    pub hunks: Vec<Hunk>,
    /// Every name a header line of the section gives, with its line number: all of them are
    /// checked by [`check_path`], since `git apply` may act on any of them.
    named: Vec<(usize, String)>,
    /// The names on the `diff --git` line and its line number, to compare with `---`/`+++`.
    git_names: Option<(usize, String, Option<String>, Option<String>)>,
    /// Every `... mode <octal>` line: (line number, the line).
    modes: Vec<(usize, String)>,
}

/// One side of a file section: before the change or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

/// Git's extended header lines that name one side of a rename or copy.
const NAME_LINES: [(&str, ChangeKind, Side); 4] = [
    ("rename from ", ChangeKind::Rename, Side::Old),
    ("rename to ", ChangeKind::Rename, Side::New),
    ("copy from ", ChangeKind::Copy, Side::Old),
    ("copy to ", ChangeKind::Copy, Side::New),
];

impl FilePatch {
    /// A section that names nothing yet, beginning with `text`.
    fn empty(text: &str) -> FilePatch {
        FilePatch {
            text: text.to_string(),
            old_raw: None,
            new_raw: None,
            old_prefixed: true,
            new_prefixed: true,
            saw_old_line: false,
            kind: ChangeKind::Modify,
            binary: false,
            hunks: Vec::new(),
            named: Vec::new(),
            git_names: None,
            modes: Vec::new(),
        }
    }

    /// Records the name a line gives one side (`None`: `/dev/null`, so the file is added or
    /// deleted). `prefixed`: the line carries git's `a/`/`b/` (`---`/`+++`), unlike `rename
    /// from`-style lines. Every name is kept for [`check_path`].
    fn set_name(&mut self, side: Side, number: usize, name: Option<String>, prefixed: bool) {
        let (raw, raw_prefixed, absent) = match side {
            Side::Old => (&mut self.old_raw, &mut self.old_prefixed, ChangeKind::Add),
            Side::New => (
                &mut self.new_raw,
                &mut self.new_prefixed,
                ChangeKind::Delete,
            ),
        };
        match name {
            Some(name) => {
                self.named.push((number, name.clone()));
                *raw = Some(name);
                *raw_prefixed = prefixed;
            }
            None => {
                *raw = None;
                self.kind = absent;
            }
        }
    }

    /// The old path with `strip` leading components removed (`None` for added files).
    pub fn old_path(&self, strip: usize) -> Option<String> {
        self.old_raw
            .as_deref()
            .map(|p| strip_components(p, if self.old_prefixed { strip } else { 0 }))
    }

    /// The new path with `strip` leading components removed (`None` for deleted files).
    pub fn new_path(&self, strip: usize) -> Option<String> {
        self.new_raw
            .as_deref()
            .map(|p| strip_components(p, if self.new_prefixed { strip } else { 0 }))
    }

    /// The path a human calls this file: the new one, or the old one for deletions.
    pub fn display_path(&self, strip: usize) -> String {
        self.new_path(strip)
            .or_else(|| self.old_path(strip))
            .unwrap_or_default()
    }

    /// Every path the section names (old and new), stripped.
    pub fn paths(&self, strip: usize) -> Vec<String> {
        let mut paths: Vec<String> = self
            .old_path(strip)
            .into_iter()
            .chain(self.new_path(strip))
            .collect();
        paths.dedup();
        paths
    }
}

/// A parsed patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub files: Vec<FilePatch>,
}

impl Diff {
    /// Leading path components to strip: 1 when every prefixed path carries git's `a/` (old)
    /// or `b/` (new) prefix, as `git diff` writes them; 0 otherwise (`git diff --no-prefix`,
    /// paths relative to the root already).
    pub fn strip_level(&self) -> usize {
        let mut any = false;
        for f in &self.files {
            for (raw, prefixed, prefix) in [
                (&f.old_raw, f.old_prefixed, "a/"),
                (&f.new_raw, f.new_prefixed, "b/"),
            ] {
                if let (Some(raw), true) = (raw, prefixed) {
                    any = true;
                    if !raw.starts_with(prefix) {
                        return 0;
                    }
                }
            }
        }
        usize::from(any)
    }

    /// The largest number of context lines on one side of any hunk (3 for `git diff`): fuzz
    /// level `n` lets `git apply` drop up to `n` of them.
    pub fn max_context(&self) -> u32 {
        self.files
            .iter()
            .flat_map(|f| &f.hunks)
            .map(|h| h.leading.max(h.trailing))
            .max()
            .unwrap_or(0)
    }
}

/// Parses a unified diff. Text before the first file (a commit message, `git format-patch`
/// headers) is ignored. Errors name the line where the patch stops making sense.
pub fn parse(text: &str) -> Result<Diff, String> {
    let mut p = Parser::default();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let body = line.trim_end_matches(['\n', '\r']);
        if p.remaining.is_some() {
            p.hunk_line(number, line, body)?;
        } else if let Some(rest) = body.strip_prefix("diff --git ") {
            p.git_header(number, line, rest);
        } else if let Some(rest) = body.strip_prefix("--- ") {
            p.old_name(number, line, rest);
        } else {
            p.header_line(number, line, body)?;
        }
    }
    p.finish()
}

/// What [`parse`] carries from line to line.
#[derive(Default)]
struct Parser {
    files: Vec<FilePatch>,
    current: Option<FilePatch>,
    /// Lines of the hunk being read that are still to come: (old side, new side).
    remaining: Option<(u32, u32)>,
    /// Per hunk: context seen since the last change, and whether a change was seen yet.
    run_of_context: u32,
    seen_change: bool,
}

impl Parser {
    /// A line inside a hunk: counted against the hunk header's line counts.
    fn hunk_line(&mut self, number: usize, line: &str, body: &str) -> Result<(), String> {
        let (old_left, new_left) = self.remaining.as_mut().expect("inside a hunk");
        let file = self.current.as_mut().expect("a hunk belongs to a file");
        file.text.push_str(line);
        let hunk = file.hunks.last_mut().expect("a hunk is open");
        match body.as_bytes().first() {
            Some(b' ') | None => {
                // An empty line is a context line whose trailing space was stripped (git
                // accepts it, so do we).
                if *old_left == 0 || *new_left == 0 {
                    return Err(format!(
                        "line {number}: hunk `{}` has more lines than its header says",
                        hunk.header
                    ));
                }
                *old_left -= 1;
                *new_left -= 1;
                self.run_of_context += 1;
                if !self.seen_change {
                    hunk.leading += 1;
                }
            }
            Some(b'-') | Some(b'+') => {
                let side = if body.starts_with('-') {
                    &mut *old_left
                } else {
                    &mut *new_left
                };
                if *side == 0 {
                    return Err(format!(
                        "line {number}: hunk `{}` has more lines than its header says",
                        hunk.header
                    ));
                }
                *side -= 1;
                self.seen_change = true;
                self.run_of_context = 0;
            }
            Some(b'\\') => {} // "\ No newline at end of file"
            _ => {
                return Err(format!(
                    "line {number}: hunk `{}` ends early (expected {} more old and {} more new lines)",
                    hunk.header, old_left, new_left
                ));
            }
        }
        if *old_left == 0 && *new_left == 0 {
            hunk.trailing = self.run_of_context;
            self.remaining = None;
        }
        Ok(())
    }

    /// `diff --git a/x b/y`: a git file section begins.
    fn git_header(&mut self, number: usize, line: &str, rest: &str) {
        self.files.extend(self.current.take());
        let (old, new) = parse_git_header_names(rest);
        let mut file = FilePatch::empty(line);
        file.old_raw = old.clone();
        file.new_raw = new.clone();
        file.named = old
            .iter()
            .chain(new.iter())
            .map(|n| (number, n.clone()))
            .collect();
        file.git_names = Some((number, rest.to_string(), old, new));
        self.current = Some(file);
    }

    /// `--- name`: the old side's name. After a hunk (or with no file open) it begins a
    /// plain-diff file.
    fn old_name(&mut self, number: usize, line: &str, rest: &str) {
        let starts_new = match &self.current {
            None => true,
            Some(f) => f.saw_old_line || !f.hunks.is_empty(),
        };
        if starts_new {
            self.files.extend(self.current.take());
            self.current = Some(FilePatch::empty(""));
        }
        let file = self.current.as_mut().expect("just ensured");
        file.text.push_str(line);
        file.saw_old_line = true;
        file.set_name(Side::Old, number, diff_line_name(rest), true);
    }

    /// Any other line of a file section: `+++`, a hunk header, git's extended headers (modes,
    /// renames, copies, binary markers). Lines before the first file are ignored.
    fn header_line(&mut self, number: usize, line: &str, body: &str) -> Result<(), String> {
        let Some(file) = self.current.as_mut() else {
            return Ok(()); // preamble: commit message, format-patch headers
        };
        file.text.push_str(line);
        if let Some(rest) = body.strip_prefix("+++ ") {
            file.set_name(Side::New, number, diff_line_name(rest), true);
        } else if body.starts_with("@@ ") {
            let (old_count, new_count) = parse_hunk_counts(body)
                .ok_or_else(|| format!("line {number}: malformed hunk header `{body}`"))?;
            file.hunks.push(Hunk {
                header: body.to_string(),
                leading: 0,
                trailing: 0,
            });
            self.run_of_context = 0;
            self.seen_change = false;
            if old_count > 0 || new_count > 0 {
                self.remaining = Some((old_count, new_count));
            }
        } else if body.starts_with("new file mode ") {
            file.kind = ChangeKind::Add;
            file.old_raw = None;
            file.modes.push((number, body.to_string()));
        } else if body.starts_with("deleted file mode ") {
            file.kind = ChangeKind::Delete;
            file.new_raw = None;
            file.modes.push((number, body.to_string()));
        } else if body.starts_with("old mode ") || body.starts_with("new mode ") {
            file.modes.push((number, body.to_string()));
        } else if let Some((kind, side, name)) = NAME_LINES
            .iter()
            .find_map(|(prefix, kind, side)| Some((*kind, *side, body.strip_prefix(prefix)?)))
        {
            // Never prefixed: these lines name the paths as they are.
            file.kind = kind;
            file.set_name(side, number, Some(unquote(name)), false);
        } else if let Some(index) = body.strip_prefix("index ")
            && let Some((_, mode)) = index.split_once(' ')
        {
            // `index 1234..5678 120000`: the mode of an unchanged-mode file.
            file.modes.push((number, format!("index mode {mode}")));
        } else if body == "GIT binary patch"
            || (body.starts_with("Binary files ") && body.ends_with(" differ"))
        {
            file.binary = true;
        }
        Ok(())
    }

    /// End of text: no hunk may be left open, and every section must name a safe path.
    fn finish(mut self) -> Result<Diff, String> {
        if let Some((old_left, new_left)) = self.remaining {
            let file = self.current.as_ref().expect("a hunk belongs to a file");
            return Err(format!(
                "the patch ends inside hunk `{}` of {} ({old_left} old and {new_left} new lines missing)",
                file.hunks.last().map(|h| h.header.as_str()).unwrap_or("?"),
                file.display_path(0)
            ));
        }
        self.files.extend(self.current);
        for file in &self.files {
            if file.old_raw.is_none() && file.new_raw.is_none() {
                return Err(format!(
                    "a file section names no path: {}",
                    file.text.lines().next().unwrap_or("")
                ));
            }
            check_section(file)?;
        }
        Ok(Diff { files: self.files })
    }
}

/// The checks that keep an untrusted patch inside its target, done before any file is
/// touched: every name the section gives is a safe relative path ([`check_path`]), the
/// `---`/`+++` names agree with the `diff --git` line (else `git apply` would act on one file
/// and isobench prepare another), and no mode line makes the file anything but a regular file
/// (a symlink written by the patch could point anywhere).
fn check_section(file: &FilePatch) -> Result<(), String> {
    for (number, name) in &file.named {
        check_path(name).map_err(|why| {
            format!(
                "line {number}: unsafe path `{}`: {why}",
                name.escape_debug()
            )
        })?;
    }
    for (number, line) in &file.modes {
        let mode = line.rsplit(' ').next().unwrap_or("");
        let regular = u32::from_str_radix(mode, 8).is_ok_and(|m| m & 0o170000 == 0o100000);
        if !regular {
            let what = match u32::from_str_radix(mode, 8).map(|m| m & 0o170000) {
                Ok(0o120000) => "a symbolic link",
                Ok(0o160000) => "a submodule",
                _ => "something other than a regular file",
            };
            return Err(format!(
                "line {number}: `{}` makes {} {what}; patches may only change regular files",
                line.escape_debug(),
                file.display_path(0).escape_debug()
            ));
        }
    }
    if let Some((number, rest, git_old, git_new)) = &file.git_names {
        // Only names from `---`/`+++` lines are compared (`rename from` and friends are
        // unprefixed and checked on their own).
        let line_old = file.old_prefixed.then_some(file.old_raw.as_ref()).flatten();
        let line_new = file.new_prefixed.then_some(file.new_raw.as_ref()).flatten();
        // An unquoted `diff --git` line with spaces in its names can be split in more than one
        // way: the `---`/`+++` names agree when they are one of those splits.
        let joined = match (line_old, line_new) {
            (Some(o), Some(n)) => Some(format!("{o} {n}")),
            _ => None,
        };
        let agrees = |line: Option<&String>, git: &Option<String>| match (line, git) {
            (Some(l), Some(g)) => l == g || joined.as_deref() == Some(rest.as_str()),
            _ => true,
        };
        if !agrees(line_old, git_old) || !agrees(line_new, git_new) {
            return Err(format!(
                "line {number}: the `diff --git` line names `{}` but its `---`/`+++` lines name `{}` and `{}`",
                rest.escape_debug(),
                line_old
                    .map(String::as_str)
                    .unwrap_or("/dev/null")
                    .escape_debug(),
                line_new
                    .map(String::as_str)
                    .unwrap_or("/dev/null")
                    .escape_debug()
            ));
        }
    }
    Ok(())
}

/// Whether `path` (a name from a patch, before any prefix is stripped) is safe to join onto a
/// target directory: relative, normalised (no empty, `.` or `..` components, no trailing `/`),
/// without NUL or other control characters, without `\` or a drive letter (a Windows path),
/// without a `.git` component, and valid UTF-8 once unquoted. The error says why not.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("the path is empty");
    }
    if path.contains('\0') {
        return Err("it contains a NUL byte");
    }
    if path.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if path.contains('\u{FFFD}') {
        return Err("it is not valid UTF-8");
    }
    if path.starts_with('/') {
        return Err("it is absolute");
    }
    if path.contains('\\') {
        return Err("it contains `\\` (a Windows path separator)");
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err("it starts with a drive letter");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("it has an empty component (`//` or a trailing `/`)"),
            "." => return Err("it has a `.` component"),
            ".." => return Err("it has a `..` component, which leaves the target"),
            c if c.eq_ignore_ascii_case(".git") => {
                return Err("it has a `.git` component");
            }
            _ => {}
        }
    }
    Ok(())
}

/// The name on a `---`/`+++` line: `None` for `/dev/null`; a trailing tab and timestamp
/// (plain `diff -u`) removed; C-style quoting undone.
fn diff_line_name(rest: &str) -> Option<String> {
    let name = if rest.starts_with('"') {
        unquote(rest)
    } else {
        rest.split('\t').next().unwrap_or(rest).to_string()
    };
    (name != "/dev/null").then_some(name)
}

/// `a/x b/x` from a `diff --git` line. Quoted names are unambiguous; unquoted ones may contain
/// spaces, so the split that makes both sides name the same file (git's own rule) wins, else
/// the split at ` b/`.
fn parse_git_header_names(rest: &str) -> (Option<String>, Option<String>) {
    if rest.starts_with('"') {
        let (first, after) = split_quoted(rest);
        let second = after.trim_start();
        let second = if second.starts_with('"') {
            unquote(second)
        } else {
            second.to_string()
        };
        return (Some(first), Some(second));
    }
    if let Some(pos) = rest.find(" \"") {
        return (
            Some(rest[..pos].to_string()),
            Some(unquote(&rest[pos + 1..])),
        );
    }
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b' ' {
            let (a, b) = (&rest[..i], &rest[i + 1..]);
            if strip_components(a, 1) == strip_components(b, 1) {
                return (Some(a.to_string()), Some(b.to_string()));
            }
        }
    }
    match rest.find(" b/") {
        Some(pos) => (
            Some(rest[..pos].to_string()),
            Some(rest[pos + 1..].to_string()),
        ),
        None => (Some(rest.to_string()), Some(rest.to_string())),
    }
}

/// Splits `"quoted" rest` into the unquoted name and what follows the closing quote.
fn split_quoted(text: &str) -> (String, &str) {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return (unquote(&text[..=i]), &text[i + 1..]),
            _ => escaped = false,
        }
    }
    (unquote(text), "")
}

/// Undoes git's C-style quoting (`"a/t\303\244st\tx"`); unquoted text is returned as is.
pub fn unquote(text: &str) -> String {
    let Some(inner) = text.strip_prefix('"') else {
        return text.to_string();
    };
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => break,
            b'\\' if i + 1 < bytes.len() => {
                i += 1;
                match bytes[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'v' => out.push(11),
                    // Octal digits only: `\399` would overflow a byte.
                    d @ b'0'..=b'3'
                        if i + 2 < bytes.len()
                            && (b'0'..=b'7').contains(&bytes[i + 1])
                            && (b'0'..=b'7').contains(&bytes[i + 2]) =>
                    {
                        let value =
                            (d - b'0') * 64 + (bytes[i + 1] - b'0') * 8 + (bytes[i + 2] - b'0');
                        out.push(value);
                        i += 2;
                    }
                    other => out.push(other),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `@@ -a[,b] +c[,d] @@` → `(b, d)`; a missing count means 1.
fn parse_hunk_counts(header: &str) -> Option<(u32, u32)> {
    let rest = header.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let count = |range: &str| -> Option<u32> {
        match range.split_once(',') {
            Some((start, count)) => {
                start.parse::<u64>().ok()?;
                count.parse().ok()
            }
            None => {
                range.parse::<u64>().ok()?;
                Some(1)
            }
        }
    };
    Some((count(old)?, count(new)?))
}

/// `a/vllm/x.py` with 1 stripped → `vllm/x.py`. Stripping more components than there are
/// leaves the last one.
pub fn strip_components(path: &str, strip: usize) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let keep = parts.len().saturating_sub(strip).max(1).min(parts.len());
    parts[parts.len() - keep..].join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIT_DIFF: &str = "\
From 1234 Mon Sep 17 00:00:00 2001
Subject: [PATCH] faster

diff --git a/vllm/engine.py b/vllm/engine.py
index e8823e1..9e65d08 100644
--- a/vllm/engine.py
+++ b/vllm/engine.py
@@ -2,7 +2,7 @@ def step():
 2
 3
 4
-5
+five
 6
 7
 8
@@ -20,4 +20,3 @@ def other():
 20
--- removed line that looks like a header
 22
 23
diff --git a/vllm/new.py b/vllm/new.py
new file mode 100755
index 0000000..ce01362
--- /dev/null
+++ b/vllm/new.py
@@ -0,0 +1 @@
+hello
diff --git a/vllm/old.py b/vllm/old.py
deleted file mode 100644
index ce01362..0000000
--- a/vllm/old.py
+++ /dev/null
@@ -1 +0,0 @@
-hello
diff --git a/vllm/a.py b/vllm/b.py
similarity index 100%
rename from vllm/a.py
rename to vllm/b.py
diff --git a/csrc/k.cu b/csrc/k.cu
index 1..2 100644
Binary files a/csrc/k.cu and b/csrc/k.cu differ
-- 
2.47.3
";

    #[test]
    fn git_diff_sections_kinds_and_paths() {
        let diff = parse(GIT_DIFF).unwrap();
        assert_eq!(diff.strip_level(), 1);
        type Summary = (ChangeKind, Option<String>, Option<String>, usize, bool);
        let summary: Vec<Summary> = diff
            .files
            .iter()
            .map(|f| {
                (
                    f.kind,
                    f.old_path(1),
                    f.new_path(1),
                    f.hunks.len(),
                    f.binary,
                )
            })
            .collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            summary,
            vec![
                (
                    ChangeKind::Modify,
                    s("vllm/engine.py"),
                    s("vllm/engine.py"),
                    2,
                    false
                ),
                (ChangeKind::Add, None, s("vllm/new.py"), 1, false),
                (ChangeKind::Delete, s("vllm/old.py"), None, 1, false),
                (ChangeKind::Rename, s("vllm/a.py"), s("vllm/b.py"), 0, false),
                (ChangeKind::Modify, s("csrc/k.cu"), s("csrc/k.cu"), 0, true),
            ]
        );
        // The removed line `-- removed ...` stays inside its hunk.
        assert!(diff.files[0].text.contains("--- removed line"));
        assert_eq!(
            diff.files[0].hunks[1],
            Hunk {
                header: "@@ -20,4 +20,3 @@ def other():".into(),
                leading: 1,
                trailing: 2
            }
        );
        assert_eq!(diff.files[0].hunks[0].leading, 3);
        assert_eq!(diff.files[0].hunks[0].trailing, 3);
        assert_eq!(diff.max_context(), 3);
        // Sections joined give back the patch minus its preamble.
        let joined: String = diff.files.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(joined, GIT_DIFF[GIT_DIFF.find("diff --git").unwrap()..]);
    }

    #[test]
    fn plain_diff_u_with_timestamps_and_no_prefix() {
        let text = "\
--- vllm/x.py\t2024-01-01 00:00:00.000000000 +0000
+++ vllm/x.py\t2024-01-02 00:00:00.000000000 +0000
@@ -1,2 +1,2 @@
-a
+b
 c
--- vllm/y.py
+++ vllm/y.py
@@ -1 +1 @@
-a
+b
";
        let diff = parse(text).unwrap();
        assert_eq!(diff.strip_level(), 0);
        assert_eq!(diff.files.len(), 2);
        assert_eq!(diff.files[0].new_path(0).as_deref(), Some("vllm/x.py"));
        assert_eq!(diff.files[1].old_path(0).as_deref(), Some("vllm/y.py"));
        assert_eq!(diff.files[0].hunks[0].leading, 0);
        assert_eq!(diff.files[0].hunks[0].trailing, 1);
    }

    #[test]
    fn quoted_names_are_unquoted() {
        let text = "diff --git \"a/vllm/t\\303\\244st x.py\" \"b/vllm/t\\303\\244st x.py\"\n\
                    --- \"a/vllm/t\\303\\244st x.py\"\n\
                    +++ \"b/vllm/t\\303\\244st x.py\"\n\
                    @@ -1 +1 @@\n-a\n+b\n";
        let diff = parse(text).unwrap();
        assert_eq!(diff.files[0].new_path(1).as_deref(), Some("vllm/täst x.py"));
        assert_eq!(diff.strip_level(), 1);
    }

    #[test]
    fn mode_only_change_takes_names_from_the_git_line() {
        let text =
            "diff --git a/vllm/my file.sh b/vllm/my file.sh\nold mode 100644\nnew mode 100755\n";
        let diff = parse(text).unwrap();
        assert_eq!(
            diff.files[0].new_path(1).as_deref(),
            Some("vllm/my file.sh")
        );
        assert_eq!(
            diff.files[0].old_path(1).as_deref(),
            Some("vllm/my file.sh")
        );
    }

    #[test]
    fn truncated_or_overlong_hunks_are_errors() {
        let truncated = "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n";
        let err = parse(truncated).unwrap_err();
        assert!(err.contains("ends inside hunk `@@ -1,3 +1,3 @@`"), "{err}");
        let garbage = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\nGARBAGE\n";
        let err = parse(garbage).unwrap_err();
        assert!(err.starts_with("line 5: hunk"), "{err}");
        let overlong = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n-b\n+c\n";
        // After `-a` the old side is used up; `-b` cannot belong to the hunk... and `+c` would.
        assert!(
            parse(overlong)
                .unwrap_err()
                .contains("more lines than its header says")
        );
    }

    #[test]
    fn empty_text_has_no_files() {
        assert!(parse("").unwrap().files.is_empty());
        assert!(parse("just words\n").unwrap().files.is_empty());
    }

    /// The error for `text`, which must be refused.
    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(diff) => panic!("accepted: {diff:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn paths_that_leave_the_target_are_refused_naming_them() {
        let climb = "diff --git a/vllm/../../../victim.txt b/vllm/../../../victim.txt\n\
                     --- a/vllm/../../../victim.txt\n+++ b/vllm/../../../victim.txt\n\
                     @@ -1 +1 @@\n-x\n+y\n";
        let err = refused(climb);
        assert!(
            err.starts_with("line 1: unsafe path `a/vllm/../../../victim.txt`"),
            "{err}"
        );
        assert!(err.contains("`..`"), "{err}");
        // Plain `diff -u` names, absolute.
        let err = refused("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-x\n+y\n");
        assert!(err.contains("`/etc/passwd`: it is absolute"), "{err}");
        // Only on the `+++` line.
        let err = refused("--- a/x\n+++ b/../x\n@@ -1 +1 @@\n-x\n+y\n");
        assert!(err.starts_with("line 2: unsafe path `b/../x`"), "{err}");
    }

    #[test]
    fn quoted_escaped_windows_and_git_paths_are_refused() {
        for (name, why) in [
            // `\056\056` is `..` once unquoted.
            (r#""a/\056\056/x""#, "`..`"),
            (r#""a/x\000y""#, "NUL"),
            (r#""a/x\ny""#, "control character"),
            (r#""a/\377x""#, "UTF-8"),
            (r"a/..\..\x", "`\\`"),
            ("C:/Windows/x", "drive letter"),
            ("a//x", "empty component"),
            ("a/./x", "`.` component"),
            ("a/.git/hooks/pre-commit", "`.git`"),
            ("a/.GIT/config", "`.git`"),
        ] {
            let text = format!("--- {name}\n+++ {name}\n@@ -1 +1 @@\n-x\n+y\n");
            let err = refused(&text);
            assert!(
                err.contains("unsafe path") && err.contains(why),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn rename_and_copy_names_are_checked_too() {
        for (from, to) in [
            ("rename from ../../victim.txt", "rename to vllm/b.py"),
            ("rename from vllm/a.py", "rename to /tmp/victim.txt"),
            ("copy from vllm/../../x", "copy to vllm/b.py"),
            ("copy from vllm/a.py", "copy to \"vllm/\\056./x\""),
        ] {
            let text = format!(
                "diff --git a/vllm/a.py b/vllm/b.py\nsimilarity index 100%\n{from}\n{to}\n"
            );
            let err = refused(&text);
            assert!(err.contains("unsafe path"), "{text}: {err}");
        }
    }

    #[test]
    fn modes_other_than_regular_files_are_refused() {
        for (lines, what) in [
            (
                "new file mode 120000\nindex 0000000..1234567",
                "a symbolic link",
            ),
            ("old mode 100644\nnew mode 120000", "a symbolic link"),
            ("index 1234567..89abcde 120000", "a symbolic link"),
            ("deleted file mode 120000", "a symbolic link"),
            ("new file mode 160000", "a submodule"),
            ("new mode 40000", "something other than a regular file"),
            ("new mode 0644", "something other than a regular file"),
            ("new mode rwx", "something other than a regular file"),
        ] {
            let text = format!("diff --git a/vllm/x.py b/vllm/x.py\n{lines}\n");
            let err = refused(&text);
            assert!(err.contains(what), "{lines}: {err}");
        }
        // Regular modes are fine.
        let text = "diff --git a/vllm/x.sh b/vllm/x.sh\nold mode 100644\nnew mode 100755\n\
                    index 1234567..89abcde 100755\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn git_line_and_file_lines_must_name_the_same_files() {
        let text = "diff --git a/vllm/x.py b/vllm/x.py\n--- a/vllm/x.py\n+++ b/vllm/other.py\n\
                    @@ -1 +1 @@\n-x\n+y\n";
        let err = refused(text);
        assert!(
            err.starts_with("line 1: the `diff --git` line names `a/vllm/x.py b/vllm/x.py`"),
            "{err}"
        );
        assert!(err.contains("`b/vllm/other.py`"), "{err}");
        // Names with spaces split differently on the git line are still the same files.
        let text = "diff --git a/my x b/my y\n--- a/my x\n+++ b/my y\n@@ -1 +1 @@\n-x\n+y\n";
        let diff = parse(text).unwrap();
        assert_eq!(diff.files[0].new_path(1).as_deref(), Some("my y"));
    }

    #[test]
    fn overlong_octal_escapes_do_not_panic() {
        // `\399` is not an octal escape; it was once read as one and overflowed a byte.
        assert_eq!(unquote(r#""a\399""#), "a399");
        let text = "--- \"a/x\\399\"\n+++ \"b/x\\399\"\n@@ -1 +1 @@\n-x\n+y\n";
        assert_eq!(
            parse(text).unwrap().files[0].new_path(1).as_deref(),
            Some("x399")
        );
    }

    /// What every accepted path must be, checked independently of [`check_path`].
    fn assert_safe_path(path: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prop_assert;
        prop_assert!(!path.is_empty(), "empty path accepted");
        prop_assert!(!path.starts_with('/'), "absolute path accepted: {:?}", path);
        prop_assert!(!path.contains('\0'), "NUL accepted: {:?}", path);
        prop_assert!(!path.contains('\\'), "backslash accepted: {:?}", path);
        for component in path.split('/') {
            prop_assert!(
                !matches!(component, "" | "." | ".."),
                "component {:?} accepted in {:?}",
                component,
                path
            );
        }
        Ok(())
    }

    fn assert_accepted_paths_are_safe(
        diff: &Diff,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        for file in &diff.files {
            for raw in file.old_raw.iter().chain(file.new_raw.iter()) {
                assert_safe_path(raw)?;
            }
            for strip in 0..=2 {
                for path in file.paths(strip) {
                    assert_safe_path(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Pieces of near-valid patches: real header and hunk lines with hostile names and modes.
    fn near_valid_patch() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let component = prop::sample::select(vec![
            "vllm",
            "x.py",
            "a",
            "b",
            "..",
            ".",
            "",
            "C:",
            "..\\..",
            "\\056\\056",
            "\\000",
            "\\399",
            "\\303\\244",
            "my file",
            ".git",
            "\\n",
            "\t",
            "\u{0}",
            "~",
        ]);
        let path = (
            prop::sample::select(vec!["", "a/", "b/", "/", "\""]),
            prop::collection::vec(component, 1..5),
        )
            .prop_map(|(lead, parts)| {
                let body = parts.join("/");
                if lead == "\"" {
                    format!("\"a/{body}\"")
                } else {
                    format!("{lead}{body}")
                }
            });
        let mode = prop::sample::select(vec![
            "100644", "100755", "120000", "160000", "40000", "0644", "x",
        ]);
        let line = prop_oneof![
            (path.clone(), path.clone()).prop_map(|(a, b)| format!("diff --git {a} {b}")),
            path.clone().prop_map(|p| format!("--- {p}")),
            path.clone().prop_map(|p| format!("+++ {p}")),
            Just("--- /dev/null".to_string()),
            Just("+++ /dev/null".to_string()),
            path.clone().prop_map(|p| format!("rename from {p}")),
            path.clone().prop_map(|p| format!("rename to {p}")),
            path.clone().prop_map(|p| format!("copy from {p}")),
            path.clone().prop_map(|p| format!("copy to {p}")),
            mode.clone().prop_map(|m| format!("new file mode {m}")),
            mode.clone().prop_map(|m| format!("deleted file mode {m}")),
            mode.clone().prop_map(|m| format!("old mode {m}")),
            mode.clone().prop_map(|m| format!("new mode {m}")),
            mode.prop_map(|m| format!("index 1234567..89abcde {m}")),
            Just("GIT binary patch".to_string()),
            Just("literal 5".to_string()),
            (0u32..4, 0u32..4).prop_map(|(o, n)| format!("@@ -1,{o} +1,{n} @@")),
            Just("@@ -1 +1 @@".to_string()),
            Just("@@ -x +1 @@".to_string()),
            Just(" context".to_string()),
            Just("-removed".to_string()),
            Just("+added".to_string()),
            Just("\\ No newline at end of file".to_string()),
            Just(String::new()),
        ];
        prop::collection::vec(line, 0..24).prop_map(|lines| {
            let mut text = lines.join("\n");
            text.push('\n');
            text
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_paths_are_safe(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)
        ) {
            if let Ok(diff) = parse(&String::from_utf8_lossy(&bytes)) {
                assert_accepted_paths_are_safe(&diff)?;
                let _ = diff.strip_level();
                let _ = diff.max_context();
            }
        }

        #[test]
        fn near_valid_patches_never_panic_and_accepted_paths_are_safe(
            text in near_valid_patch()
        ) {
            if let Ok(diff) = parse(&text) {
                assert_accepted_paths_are_safe(&diff)?;
                // Every section of an accepted patch is a regular file change.
                for file in &diff.files {
                    proptest::prop_assert!(!file.text.contains("mode 120000"), "{}", text);
                }
            }
        }
    }

    #[test]
    fn strip_components_keeps_at_least_the_file_name() {
        assert_eq!(strip_components("a/vllm/x.py", 1), "vllm/x.py");
        assert_eq!(strip_components("a/vllm/x.py", 2), "x.py");
        assert_eq!(strip_components("x.py", 1), "x.py");
        assert_eq!(strip_components("vllm/x.py", 0), "vllm/x.py");
    }
}
