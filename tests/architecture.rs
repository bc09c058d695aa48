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
/// composed by the CLI; nothing below the CLI reaches up into it.
#[test]
fn kept_apart_modules_do_not_reference_each_other() {
    let graph = import_graph();
    let mut forbidden = vec![("exec", "report"), ("report", "exec")];
    for module in graph.keys().filter(|m| *m != "cli") {
        forbidden.push((module.as_str(), "cli"));
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
