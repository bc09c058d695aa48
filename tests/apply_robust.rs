//! No input or failure may hang `apply`, leak a server or corrupt the journal (issue 17, items
//! 4, 8, 9, 13, 16). Real `isobench sim` servers under the process runtime, the real binary,
//! real files; a full disk is a real size-limited tmpfs (needs root; with `CI=true` a missing
//! mount fails the test instead of skipping it).

mod apply_support;
use apply_support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// 1 commit × 2 arms × `repeats` trials on 2 declared GPUs (two servers at a time).
fn campaign(marker: &str, repeats: u32) -> String {
    SimCampaign::marked(format!("robust-{marker}"), marker, repeats).text()
}

/// A campaign directory with both arms' simulator configs; returns (dir, manifest path).
fn setup(marker: &str, repeats: u32, sim_toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for arm in ["baseline", "human"] {
        write_sim_config(dir.path(), &format!("srv/{arm}"), sim_toml);
    }
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, campaign(marker, repeats)).unwrap();
    let m = manifest.to_str().unwrap().to_string();
    (dir, m)
}

const FAST: &str = "ttft_ms = 5.0\nitl_ms = 2.0\n";

fn all_measures_done(state: &Path, n: usize) {
    let m = Journal::read(state).latest_with_prefix("measure[");
    assert_eq!(m.len(), n, "{m:#?}");
    assert!(m.values().all(|e| e["event"] == "done"), "{m:#?}");
}

// ---------------------------------------------------------------------------------------------
// Item 4: durations are bounded; a panicking task is an `internal` failure, not a hang.

#[test]
fn every_duration_beyond_the_maximum_is_a_located_diagnostic() {
    let base = campaign("diag", 1);
    let cases = [
        // (replace, with, line:col of the value, ...)
        (
            r#"timeout = "20s", interval"#,
            r#"timeout = "500000000000y", interval"#,
        ),
        (r#"interval = "50ms""#, r#"interval = "8d""#),
        (r#"timeout = "60s""#, r#"timeout = "1000000h""#),
        (
            r#"timeout = "60s""#,
            r#"timeout = "60s"
request_timeout = "9999d""#,
        ),
        (
            r#"gpu_kind = "test-gpu""#,
            r#"gpu_kind = "test-gpu"
gpu_idle_wait = "100y""#,
        ),
    ];
    for (from, to) in cases {
        assert!(base.contains(from), "{from}");
        let text = base.replacen(from, to, 1);
        let err = isobench::manifest::load_str("m.toml", &text, Path::new("/nonexistent"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {to}"));
        let lines = err.short_lines();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        // Located at the offending value's line, and naming the maximum.
        let value = to.lines().last().unwrap();
        let value_line = text.lines().position(|l| l.contains(value)).unwrap() + 1;
        assert!(
            lines[0].starts_with(&format!("m.toml:{value_line}:")),
            "{to}: {lines:#?}"
        );
        assert!(
            lines[0].contains("too long") && lines[0].contains("at most 7days"),
            "{lines:#?}"
        );
    }
    // The maximum itself is accepted.
    let ok = base.replacen(r#"timeout = "60s""#, r#"timeout = "7d""#, 1);
    isobench::manifest::load_str("m.toml", &ok, Path::new("/nonexistent")).unwrap();
}

/// The CLI refuses it too (`plan` exits 1 with the located message, no panic).
#[test]
fn plan_refuses_a_huge_ready_timeout() {
    let marker = unique("huge");
    let (dir, m) = setup(&marker, 1, FAST);
    let text = std::fs::read_to_string(&m).unwrap().replacen(
        r#"timeout = "20s""#,
        r#"timeout = "500000000000y""#,
        1,
    );
    std::fs::write(&m, text).unwrap();
    // Bounded: before the fix the overflow panicked the session task and apply hung.
    let (code, text) = run_bounded(&["apply", "--plain", &m], &[], Duration::from_secs(60));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("at most 7days"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(no_server_left(&marker), "{text}");
    assert!(!dir.path().join(".isobench/journal.jsonl").exists());
}

/// A session task that panics after its server started (the test hook
/// `ISOBENCH_TEST_PANIC_AT`, debug builds only) fails its nodes as `internal`, its server is
/// stopped, the other sessions are measured, and apply ends.
#[test]
fn a_panicking_session_is_an_internal_failure_and_its_server_is_stopped() {
    let marker = unique("panic");
    let (dir, m) = setup(&marker, 2, FAST);
    let state = dir.path().join(".isobench");
    let at = "ready[commit=11111111,arm=human,trial=1]";
    let t0 = Instant::now();
    let (code, text) = run_bounded(
        &["apply", "--plain", &m],
        &[("ISOBENCH_TEST_PANIC_AT", at)],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert!(
        no_server_left(&marker),
        "the panicked session's server leaked"
    );
    let j = Journal::read(&state);
    // Its server had started (so there was one to stop) ...
    let start = &j.latest_with_prefix("start[commit=11111111,arm=human,trial=1]");
    assert_eq!(
        start.values().next().unwrap()["event"],
        "done",
        "{start:#?}"
    );
    // ... and the session's unfinished nodes are `internal` failures.
    for prefix in [at, "measure[commit=11111111,arm=human,trial=1"] {
        let e = j.latest_with_prefix(prefix);
        let e = e.values().next().unwrap_or_else(|| panic!("{prefix}"));
        assert_eq!(e["event"], "failed", "{e}");
        assert_eq!(e["failure"]["class"], "internal", "{e}");
        assert!(
            e["failure"]["message"]
                .as_str()
                .unwrap()
                .contains("session task failed"),
            "{e}"
        );
    }
    // Every other session was measured.
    let measures = j.latest_with_prefix("measure[");
    assert_eq!(measures.len(), 4);
    assert_eq!(
        measures.values().filter(|e| e["event"] == "done").count(),
        3,
        "{measures:#?}"
    );
    // Resume measures the failed one.
    let out = isobench(&["apply", "--plain", &m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    all_measures_done(&state, 4);
    assert!(no_server_left(&marker));
}

/// A pull task that panics fails the sessions that needed it; apply still ends.
#[test]
fn a_panicking_pull_fails_its_sessions_and_apply_ends() {
    let marker = unique("pullpanic");
    let (dir, m) = setup(&marker, 1, FAST);
    let state = dir.path().join(".isobench");
    let (code, text) = run_bounded(
        &["apply", "--plain", &m],
        &[("ISOBENCH_TEST_PANIC_AT", "pull[path=srv/human]")],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(1), "{text}");
    let j = Journal::read(&state);
    let pull = j.latest_with_prefix("pull[path=srv/human]");
    assert_eq!(pull.len(), 1, "{pull:#?}");
    let pull = pull.values().next().unwrap();
    assert_eq!(pull["failure"]["class"], "internal", "{pull}");
    let measures = j.latest_with_prefix("measure[");
    for (addr, e) in &measures {
        let want = if addr.contains("arm=human") {
            "failed"
        } else {
            "done"
        };
        assert_eq!(e["event"], want, "{addr}: {e}");
    }
    assert!(no_server_left(&marker));
}

// ---------------------------------------------------------------------------------------------
// Item 8: a full disk stops every server, says so, and the journal stays readable.

/// A size-limited tmpfs, unmounted on drop. `None` when mounting is not possible here.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").is_err(),
                "cannot mount a tmpfs (root needed)"
            );
            eprintln!("skipped: cannot mount a tmpfs (root needed)");
            return None;
        }
        Some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the filesystem: writes until ENOSPC.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a leaked server holding a log open there must not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// The journal's own writer on a full disk: an append cut short part way leaves a torn line;
/// once space is back, the next append starts on a fresh line and is readable.
#[test]
fn a_journal_append_after_a_torn_write_is_readable() {
    use isobench::state::{Entry, Event, Journal, State};
    let Some(fs) = Tmpfs::mount("64k") else {
        return;
    };
    let entry = |addr: &str, event: Event, attempt: u32| Entry {
        v: 1,
        t: "2026-01-01T00:00:00Z".into(),
        addr: addr.into(),
        event,
        key: "k".repeat(200), // long lines: the cut falls inside one
        attempt,
        components: Default::default(),
        outputs: Default::default(),
        failure: None,
        run: "r".into(),
        info: None,
    };
    let dir = fs.path().join("state");
    let mut j = Journal::open(&dir).unwrap();
    j.append(&entry("a", Event::Done, 1)).unwrap();
    let filler = fs.fill();
    // Appends fill the journal's last page, then one is cut short.
    let mut n = 0;
    while j
        .append(&entry(&format!("x{n}"), Event::Started, 1))
        .is_ok()
    {
        n += 1;
        assert!(n < 1000, "the disk never filled");
    }
    let len = std::fs::metadata(dir.join("journal.jsonl")).unwrap().len();
    std::fs::remove_file(filler).unwrap();
    j.append(&entry("b", Event::Done, 2)).unwrap();
    let s = State::load(&dir).unwrap();
    assert_eq!(s.get("a").unwrap().event, Event::Done);
    assert_eq!(
        s.get("b").map(|e| e.attempt),
        Some(2),
        "the entry after the torn write was lost (journal {len} bytes at the cut)"
    );
}

/// The disk fills while two servers measure: apply stops both, exits 1 with a clear error, and
/// once space is back the next apply resumes and completes.
#[test]
fn a_full_disk_stops_every_server_says_so_and_resume_works() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let marker = unique("full");
    // ~1 s per measurement, so the disk fills while both servers run.
    let (_dir, m) = setup(&marker, 1, "ttft_ms = 20.0\nitl_ms = 40.0\n");
    let state = fs.path().join("state");
    let s = state.to_str().unwrap();
    let (mut child, log) =
        spawn_isobench_logged(&["apply", "--plain", "--no-report", "--state", s, &m]);
    wait_for(&state, Duration::from_secs(60), |j| {
        j.any("started", "measure[")
    });
    let filler = fs.fill();
    let status = wait_child(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(log).unwrap();
    let status = status.unwrap_or_else(|| panic!("apply did not end on a full disk:\n{text}"));
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot write the journal") && text.contains("No space left on device"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        no_server_left(&marker),
        "a server survived the full disk:\n{text}"
    );
    // Space is back: the run resumes and completes.
    std::fs::remove_file(filler).unwrap();
    let out = isobench(&["apply", "--plain", "--no-report", "--state", s, &m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    all_measures_done(&state, 2);
    assert!(no_server_left(&marker));
}

// ---------------------------------------------------------------------------------------------
// Item 9: a closed output pipe does not kill apply.

#[test]
fn apply_into_a_closed_pipe_finishes_the_campaign() {
    let marker = unique("pipe");
    let (dir, m) = setup(&marker, 2, FAST);
    let state = dir.path().join(".isobench");
    let status_file = dir.path().join("apply.status");
    // `head -1` exits after the first line; every later write of apply meets a closed pipe.
    for redirect in ["2>&1", "2>/dev/null"] {
        let _ = std::fs::remove_dir_all(&state);
        let script = format!(
            "'{}' apply --plain '{m}' {redirect} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}} > '{}'",
            env!("CARGO_BIN_EXE_isobench"),
            status_file.display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", out.text());
        let code = std::fs::read_to_string(&status_file).unwrap();
        assert_eq!(code.trim(), "0", "apply {redirect} | head -1 exited {code}");
        all_measures_done(&state, 4);
        assert!(no_server_left(&marker), "{redirect}: a server was left");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 13: a deleted or edited result is noticed by plan and measured again by apply.

#[test]
fn a_deleted_or_edited_result_is_incomplete_and_measured_again() {
    let marker = unique("result");
    let (dir, m) = setup(&marker, 2, FAST);
    let state = dir.path().join(".isobench");
    assert_eq!(
        isobench(&["apply", "--plain", "--no-report", &m])
            .status
            .code(),
        Some(0)
    );
    let j = Journal::read(&state);
    let measures = j.latest_with_prefix("measure[");
    let result_of = |addr: &str| {
        let e = &measures[addr];
        state.join(e["outputs"].as_object().unwrap().keys().next().unwrap())
    };
    let addrs: Vec<String> = measures.keys().cloned().collect();
    let (deleted, edited) = (&addrs[0], &addrs[1]);
    std::fs::remove_file(result_of(deleted)).unwrap();
    let path = result_of(edited);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"completed\": 16", "\"completed\": 15", 1),
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(&path).unwrap(), text, "edit took");

    // 2: changes pending (`--detailed-exitcode`; plain `plan` exits 0 on success).
    let plan = isobench(&["plan", "--detailed-exitcode", "--verbose", &m]);
    assert_eq!(plan.status.code(), Some(2), "{}", plan.text());
    let p = plan.text();
    assert!(
        p.lines().any(|l| l.contains(deleted.as_str())
            && l.contains("! incomplete")
            && l.contains("(result missing)")),
        "{p}"
    );
    assert!(
        p.lines().any(|l| l.contains(edited.as_str())
            && l.contains("! incomplete")
            && l.contains("(result changed)")),
        "{p}"
    );

    let out = isobench(&["apply", "--plain", "--no-report", &m]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let after = Journal::read(&state);
    let remeasured: Vec<&str> = after.entries[j.entries.len()..]
        .iter()
        .filter(|e| e["event"] == "started" && e["addr"].as_str().unwrap().starts_with("measure["))
        .map(|e| e["addr"].as_str().unwrap())
        .collect();
    let mut want = vec![deleted.as_str(), edited.as_str()];
    want.sort();
    let mut got = remeasured.clone();
    got.sort();
    assert_eq!(got, want);
    all_measures_done(&state, 4);
    let plan = isobench(&["plan", "--detailed-exitcode", &m]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "nothing pending: {}",
        plan.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Item 16: an attempt counter at u32::MAX is a clear error, not a wrap or a panic.

#[test]
fn an_attempt_counter_at_its_maximum_is_a_clear_error() {
    let marker = unique("attempt");
    let (dir, m) = setup(&marker, 1, FAST);
    let state = dir.path().join(".isobench");
    assert_eq!(
        isobench(&["apply", "--plain", "--no-report", &m])
            .status
            .code(),
        Some(0)
    );
    // Hand-edit: the last entry of one measurement says it started at attempt u32::MAX.
    let j = Journal::read(&state);
    let (addr, e) = j.latest_with_prefix("measure[").into_iter().next().unwrap();
    let mut edited = e.clone();
    edited["event"] = "started".into();
    edited["attempt"] = u32::MAX.into();
    let mut text = std::fs::read_to_string(state.join("journal.jsonl")).unwrap();
    text.push_str(&format!("{edited}\n"));
    std::fs::write(state.join("journal.jsonl"), text).unwrap();

    let out = isobench(&["apply", "--plain", "--no-report", &m]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let t = out.text();
    assert!(
        t.contains(&addr) && t.contains("attempt 4294967295") && !t.contains("panicked"),
        "{t}"
    );
    assert!(no_server_left(&marker));
}
