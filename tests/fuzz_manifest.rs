//! The manifest loader against nasty input: the committed corpus
//! (`tests/fuzz_corpus/manifest/*.toml`) on every run, arbitrary bytes, and mutated valid
//! manifests. Whatever the text, `load_str` must return a campaign or located diagnostics
//! (a span inside the text, on character boundaries, a non-empty message) — never panic.
use isobench::manifest::{self, ManifestError};
use proptest::prelude::*;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Loads `text`; panics (with the input's name) if the loader panics or a diagnostic is not
/// located inside the text.
fn load_checked(name: &str, text: &str) -> Result<manifest::Campaign, ManifestError> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        manifest::load_str("m.toml", text, Path::new("/nonexistent-isobench-dir"))
    }));
    let result = match result {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("the loader panicked on {name}: {why}")
        }
    };
    if let Err(e) = &result {
        assert!(
            !e.diagnostics.is_empty(),
            "{name}: an error without diagnostics"
        );
        for d in &e.diagnostics {
            assert!(!d.message.trim().is_empty(), "{name}: empty message");
            assert!(
                d.span.start <= d.span.end && d.span.end <= text.len(),
                "{name}: span {:?} outside the text ({} bytes): {}",
                d.span,
                text.len(),
                d.message
            );
            // The one-line form computes line and column: it must work for every span.
            let short = d.short();
            assert!(short.starts_with("m.toml:"), "{name}: {short}");
        }
    }
    result
}

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/manifest");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

#[test]
fn every_corpus_manifest_loads_or_gives_located_diagnostics() {
    for (name, text) in corpus() {
        let _ = load_checked(&name, &text);
    }
}

/// Issue 17 item 10: a non-ASCII commit hash listed twice made the duplicate message slice
/// `&human[..12]` inside a character and panic.
#[test]
fn a_non_ascii_commit_hash_listed_twice_is_diagnosed_not_a_panic() {
    let corpus: std::collections::HashMap<_, _> = corpus().into_iter().collect();
    let text = &corpus["non_ascii_hash_twice.toml"];
    let err = load_checked("non_ascii_hash_twice.toml", text).unwrap_err();
    let lines = err.short_lines();
    assert!(
        lines.iter().any(|l| l.contains("is not a git commit hash")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("commit aééééééééééé is listed twice")),
        "the duplicate is named by its first 12 characters: {lines:#?}"
    );
}

#[test]
fn api_key_env_must_be_a_name_and_is_not_echoed() {
    let corpus: std::collections::HashMap<_, _> = corpus().into_iter().collect();
    let err = load_checked(
        "api_key_env_value_pasted.toml",
        &corpus["api_key_env_value_pasted.toml"],
    )
    .unwrap_err();
    let lines = err.short_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("api_key_env must be an environment variable name"));
    assert!(!lines[0].contains("sk-proj"), "the value is not repeated");
}

/// The valid manifests that ship with isobench: the seeds for mutation.
fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds: Vec<String> = ["examples/quickstart.toml", "manifests/3way.toml"]
        .iter()
        .map(|p| std::fs::read_to_string(root.join(p)).unwrap())
        .collect();
    seeds
}

/// Characters that matter to TOML, templates, hashes and byte offsets.
const NASTY: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    "\n",
    "\r",
    "#",
    "\\",
    "{{",
    "}}",
    "{%",
    "é",
    "😀",
    "数",
    "\u{301}",
    "\u{202e}",
    "\u{1b}",
    "\0",
    ".",
    ",",
    "0",
    "-1",
    "1e999",
    "nan",
    "inf",
    "[[",
    "]]",
    "\"\"\"",
    "'''",
    "{{ env(\"HOME\") }}",
    "{{ commit.human[:12] }}",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, usize),
    Delete(prop::sample::Index, usize),
    Replace(prop::sample::Index, usize),
    Duplicate(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let nasty = 0..NASTY.len();
    prop_oneof![
        (any::<prop::sample::Index>(), nasty.clone()).prop_map(|(i, n)| Mutation::Insert(i, n)),
        (any::<prop::sample::Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<prop::sample::Index>(), nasty).prop_map(|(i, n)| Mutation::Replace(i, n)),
        (any::<prop::sample::Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

/// Applies `m` at a character boundary (the loader takes `&str`).
fn apply(text: &mut String, m: &Mutation) {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let at = |i: &prop::sample::Index| boundaries[i.index(boundaries.len())];
    let end_after = |start: usize, n: usize| {
        text[start..]
            .char_indices()
            .nth(n)
            .map_or(text.len(), |(i, _)| start + i)
    };
    match m {
        Mutation::Insert(i, n) => text.insert_str(at(i), NASTY[*n]),
        Mutation::Delete(i, n) => {
            let start = at(i);
            let end = end_after(start, *n);
            text.replace_range(start..end, "");
        }
        Mutation::Replace(i, n) => {
            let start = at(i);
            let end = end_after(start, 1);
            text.replace_range(start..end, NASTY[*n]);
        }
        Mutation::Duplicate(i, n) => {
            let start = at(i);
            let end = end_after(start, *n);
            let piece = text[start..end].to_string();
            text.insert_str(end, &piece);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn mutated_valid_manifests_never_panic(
        seed in 0usize..2,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = seeds()[seed].clone();
        for m in &mutations {
            apply(&mut text, m);
        }
        let _ = load_checked(&format!("{mutations:?}"), &text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_checked("arbitrary bytes", &text);
    }

    #[test]
    fn arbitrary_toml_shaped_text_never_panics(
        text in "(\\[\\[?[a-z.]{1,12}\\]\\]?\n|[a-z_]{1,10} = (\"[^\"\\\\]{0,20}\"|[0-9.e-]{1,6}|\\[\\]|true|\\{\\})\n){0,20}"
    ) {
        let _ = load_checked("toml-shaped", &text);
    }
}
