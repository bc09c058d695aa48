//! Command-line conventions: every subcommand and flag has help text, shell completions and man
//! pages come from the same clap definitions.
use std::process::Command;

fn isobench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_isobench"))
        .args(args)
        .output()
        .unwrap()
}

/// Walks the whole clap tree: a subcommand without an about, or an argument without help, shows
/// up as a blank entry in `--help` and in the man page.
#[test]
fn no_subcommand_or_flag_has_an_empty_help() {
    fn walk(cmd: &clap::Command, path: &str, blank: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                blank.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if name.ends_with(" help") {
                continue;
            }
            let about = sub.get_about().map(|h| h.to_string()).unwrap_or_default();
            if about.trim().is_empty() {
                blank.push(name.clone());
            }
            walk(sub, &name, blank);
        }
    }
    let mut blank = Vec::new();
    walk(&isobench::cli::command(), "isobench", &mut blank);
    assert!(blank.is_empty(), "entries without help: {blank:#?}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "_isobench()"),
        ("zsh", "#compdef isobench"),
        ("fish", "complete -c isobench"),
    ] {
        let out = isobench(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        // Generated from the definitions: new flags are in, without anyone editing a script.
        assert!(text.contains("detailed-exitcode"), "{shell}");
        assert!(
            text.contains("--commit") || text.contains("commit"),
            "{shell}"
        );
    }
    let bash = String::from_utf8(isobench(&["completions", "bash"]).stdout).unwrap();
    let checked = Command::new("bash")
        .arg("-n")
        .arg("-c")
        .arg(&bash)
        .output()
        .expect("bash runs");
    assert!(
        checked.status.success(),
        "the bash completion script does not parse: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn man_pages_from_the_clap_definitions() {
    let out = isobench(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH isobench"),
        "{page}"
    );
    assert!(page.contains(".TH isobench 1"), "{page}");
    let apply = String::from_utf8(isobench(&["man", "apply"]).stdout).unwrap();
    assert!(apply.contains(".TH isobench-apply 1"), "{apply}");
    assert!(apply.contains("events"), "{apply}");
    let bad = isobench(&["man", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no subcommand `nope`") && err.contains("apply"),
        "{err}"
    );
}
