//! The module import graph follows the data flow (ARCHITECTURE.md): no cycle between top-level
//! modules, and the pairs the architecture keeps apart never reference each other. Checked from
//! the source text, so a new `use` that reaches back up the chain fails here with the files that
//! make the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module of a file under `src/` (`src/exec/apply.rs` → `exec`, `src/failure.rs` →
/// `failure`); the crate roots belong to no module.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every top-level module a source text names through `crate::` (plain and `crate::{a, b}`).
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        // `isobench::crate::` does not occur; `$crate::` (macros) refers to this crate as well.
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        rest = after;
    }
    found
}

fn source_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| e.into_path())
        .collect()
}

/// module → (referenced module → files making that reference).
fn import_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in source_files(&src) {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for target in referenced_modules(&text) {
            if target != module {
                let shown = file.strip_prefix(&src).unwrap().display().to_string();
                edges.entry(target).or_default().insert(shown);
            }
        }
    }
    graph
}

/// A cycle in the graph as the list of its modules, if there is one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_parser_sees_plain_and_grouped_imports() {
    let text = "use crate::manifest::Campaign;\nuse crate::{plan, state::State};\nlet x = crate::util::now();";
    let found: Vec<String> = referenced_modules(text).into_iter().collect();
    assert_eq!(found, ["manifest", "plan", "state", "util"]);
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    graph
        .entry("a".into())
        .or_default()
        .insert("b".into(), BTreeSet::new());
    graph
        .entry("b".into())
        .or_default()
        .insert("c".into(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
    graph
        .entry("c".into())
        .or_default()
        .insert("a".into(), BTreeSet::new());
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
}

#[test]
fn module_imports_have_no_cycle() {
    let graph = import_graph();
    assert!(graph.contains_key("manifest") && graph.contains_key("exec"));
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} -> {} ({:?})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!("module import cycle:\n  {}", edges.join("\n  "));
    }
}

/// Stages that must not know each other although no cycle joins them: `apply` and `report` are
/// composed by the CLI; nothing below the CLI reaches up into it; `telemetry` uses nothing
/// above `runtime`.
#[test]
fn kept_apart_modules_do_not_reference_each_other() {
    let graph = import_graph();
    let mut forbidden = vec![("exec", "report"), ("report", "exec")];
    for module in graph.keys().filter(|m| *m != "cli") {
        forbidden.push((module.as_str(), "cli"));
    }
    // Telemetry sits beside the runtime: it knows server handles, not campaigns or results.
    for above in [
        "exec", "report", "loadgen", "manifest", "pipeline", "plan", "state", "sim",
    ] {
        forbidden.push(("telemetry", above));
    }
    let mut found = Vec::new();
    for (from, to) in forbidden {
        if let Some(files) = graph.get(from).and_then(|e| e.get(to)) {
            found.push(format!("{from} -> {to} in {files:?}"));
        }
    }
    assert!(
        found.is_empty(),
        "forbidden module references:\n  {}",
        found.join("\n  ")
    );
}

/// Command-line parsing stays in `cli`: the library's types (report formats, load settings)
/// know nothing of clap, so they can be used without it.
#[test]
fn only_the_cli_uses_clap() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in source_files(&src) {
        let module = module_of(&src, &file);
        if module.is_none() || module.as_deref() == Some("cli") {
            continue;
        }
        let text = code_only(&std::fs::read_to_string(&file).unwrap());
        if text.contains("clap::") || text.contains("use clap") {
            found.push(file.display().to_string());
        }
    }
    assert!(found.is_empty(), "clap used outside src/cli: {found:?}");
}

// ---------------------------------------------------------------------------------------------
// Function length: no function in `src/` longer than `MAX_FN_LINES`, counted from its `fn` line
// to its closing brace, except the ones listed in `LONG_FNS` below.

const MAX_FN_LINES: usize = 150;

/// Functions allowed over [`MAX_FN_LINES`], each with its length when it was listed and a
/// comment saying why: the test fails if one grows past that, or once it is short enough (or
/// gone) and should leave the list, so the list can only shrink. Empty since issue 18's splits.
const LONG_FNS: &[(&str, &str, usize)] = &[];

/// `text` with comments, string literals and char literals blanked (newlines kept), so that
/// braces inside them are not counted. Lifetimes (`'a`) are left alone.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, span: &[char]| {
        out.extend(span.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        if rest.starts_with(&['/', '/']) {
            let end = rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(&['/', '*']) {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (0usize, 0usize);
            while j < rest.len() {
                if rest[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && rest[1..]
                .iter()
                .position(|&ch| ch != '#')
                .map(|h| rest[1 + h])
                == Some('"')
        {
            // Raw string r#"..."#: ends at a quote followed by as many hashes.
            let hashes = rest[1..].iter().take_while(|&&ch| ch == '#').count();
            let mut j = 2 + hashes;
            while j < rest.len()
                && !(rest[j] == '"'
                    && rest[j + 1..].iter().take_while(|&&ch| ch == '#').count() >= hashes)
            {
                j += 1;
            }
            let end = (j + 1 + hashes).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if c[i] == '"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != '"' {
                j += if rest[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if c[i] == '\'' && rest.get(1) == Some(&'\\') {
            // Escaped char literal: '\n', '\'', '\u{..}'.
            let end = rest[2..]
                .iter()
                .position(|&ch| ch == '\'')
                .map_or(rest.len(), |p| p + 3);
            blank(&mut out, &rest[..end]);
            i += end;
        } else if c[i] == '\'' && rest.get(2) == Some(&'\'') {
            blank(&mut out, &rest[..3]);
            i += 3;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Every function with a body in `text`: (name, length in lines from `fn` to the closing brace).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code = code_only(text);
    let b = code.as_bytes();
    let line_at = |pos: usize| code[..pos].matches('\n').count();
    let ident = |ch: u8| ch.is_ascii_alphanumeric() || ch == b'_';
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ").map(|p| p + from) {
        from = at + 3;
        if at > 0 && ident(b[at - 1]) {
            continue;
        }
        let name: String = code[at + 3..]
            .trim_start()
            .chars()
            .take_while(|&ch| ch.is_alphanumeric() || ch == '_')
            .collect();
        if name.is_empty() {
            continue; // `fn(u32) -> u32`, a pointer type
        }
        // The body starts at the first `{` outside brackets; a `;` there first: no body.
        let (mut depth, mut j) = (0i32, at);
        let open = loop {
            match b.get(j) {
                None => break None,
                Some(b'(' | b'[' | b'<') => depth += 1,
                Some(b')' | b']') => depth -= 1,
                // `->` is not a closing angle bracket.
                Some(b'>') if b[j - 1] != b'-' => depth -= 1,
                Some(b';') if depth <= 0 => break None,
                Some(b'{') if depth <= 0 => break Some(j),
                _ => {}
            }
            j += 1;
        };
        let Some(open) = open else { continue };
        let mut braces = 0;
        let mut close = open;
        for (k, &ch) in b.iter().enumerate().skip(open) {
            match ch {
                b'{' => braces += 1,
                b'}' => {
                    braces -= 1;
                    if braces == 0 {
                        close = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((name, line_at(close) - line_at(at) + 1));
    }
    found
}

#[test]
fn the_length_counter_skips_strings_comments_and_declarations() {
    let text = r##"
trait T { fn declared(&self) -> [u8; 4]; }
fn short(x: fn(u32) -> u32) -> &'static str {
    /* a } in /* a nested */ comment */ // and }
    let _c = '}';
    let _s = "}\"}";
    let _r = r#"}"#;
    "done"
}
"##;
    let found = function_lengths(text);
    assert_eq!(found, [("short".to_string(), 7)]);
}

#[test]
fn functions_are_at_most_150_lines_except_the_listed_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // (file, function) → its longest length (a name may occur more than once in a file).
    let mut lengths: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in source_files(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        for (name, len) in function_lengths(&text) {
            let e = lengths.entry((shown.clone(), name)).or_default();
            *e = (*e).max(len);
        }
    }
    assert!(lengths.len() > 500, "the parser found too few functions");
    let listed: BTreeMap<(String, String), usize> = LONG_FNS
        .iter()
        .map(|(f, n, l)| ((f.to_string(), n.to_string()), *l))
        .collect();
    let mut problems = Vec::new();
    for ((file, name), &len) in &lengths {
        match listed.get(&(file.clone(), name.clone())) {
            None if len > MAX_FN_LINES => problems.push(format!(
                "{file}::{name} is {len} lines (max {MAX_FN_LINES}): split it into named stages"
            )),
            Some(&allowed) if len > allowed => problems.push(format!(
                "{file}::{name} grew to {len} lines (listed in LONG_FNS at {allowed})"
            )),
            Some(_) if len <= MAX_FN_LINES => problems.push(format!(
                "{file}::{name} is {len} lines now: remove it from LONG_FNS"
            )),
            _ => {}
        }
    }
    for (file, name) in listed.keys() {
        if !lengths.contains_key(&(file.clone(), name.clone())) {
            problems.push(format!("{file}::{name} is gone: remove it from LONG_FNS"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
