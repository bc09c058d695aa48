//! Small helpers shared by several stages.
pub mod fsx;
pub mod git;
pub mod hash;
pub mod term;

use std::time::Duration;

/// The longest duration any setting accepts (manifest and CLI). Deadlines are computed as
/// `Instant::now() + duration`, which panics on overflow (`500000000000y` did, inside a session
/// task); a week is far beyond any real readiness wait, run or interval.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `300s`, `5m`, `1h 30m`, `500ms` (humantime syntax), at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. `300s`, `5m` or `500ms`")
    })?;
    check_duration(text, d)
}

/// Refuses a duration above [`MAX_DURATION`], saying the maximum.
pub fn check_duration(text: &str, d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "`{}` is too long: durations are at most {} ({} s)",
            text.trim(),
            humantime::format_duration(MAX_DURATION),
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// Serialises a duration as seconds (f64), for JSON that people and scripts read.
pub fn serialize_duration_s<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Parses a size such as `16g`, `512m`, `1.5GiB` or a plain byte count into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. `16g` or `512m`"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown size unit `{unit}`; use k, m, g or t"
            ));
        }
    };
    Ok((value * multiplier as f64) as u64)
}

/// Environment variable names whose values must never be logged, hashed or written to state.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "KEY",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|s| upper.contains(s))
}

/// The value to show for an environment variable: secrets become `<redacted>`.
pub fn redact<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_name(name) {
        "<redacted>"
    } else {
        value
    }
}

/// The first `n` characters of `s` (never splits a character: user text such as a commit hash
/// from a manifest may be any UTF-8, and `&s[..n]` panics inside a multi-byte character).
pub fn prefix_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Expands a leading `~` to the home directory.
pub fn expand_tilde(path: &str) -> String {
    match (path.strip_prefix('~'), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{home}{rest}")
        }
        _ => path.to_string(),
    }
}

/// Removes `.` and `name/..` components lexically (no filesystem access), for display and for
/// stable paths in keys.
pub fn normalize_path(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return std::path::PathBuf::from(".");
    }
    out.iter().collect()
}

/// A path as it enters keys and addresses: relative to `base` (the manifest's directory) when
/// inside it, so moving a checkout or running from another directory changes nothing.
pub fn portable_path(path: &std::path::Path, base: &std::path::Path) -> String {
    let abs = |p: &std::path::Path| {
        normalize_path(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    };
    let (p, b) = (abs(path), abs(base));
    match p.strip_prefix(&b) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

/// RFC 3339 timestamp of now, in UTC, millisecond precision (journal entries of one second
/// must still order, and overlaps of parallel servers must be visible).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16g").unwrap(), 16 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3x").is_err());
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("300 seconds please").is_err());
        assert_eq!(parse_duration("7d").unwrap(), MAX_DURATION);
        let e = parse_duration("500000000000y").unwrap_err();
        assert!(e.contains("at most 7days"), "{e}");
        assert!(parse_duration("8d").is_err());
    }

    #[test]
    fn normalizes_paths() {
        use std::path::Path;
        assert_eq!(
            normalize_path(Path::new("manifests/../.isobench/3way")),
            Path::new(".isobench/3way")
        );
        assert_eq!(normalize_path(Path::new("./a/./b/../c")), Path::new("a/c"));
        assert_eq!(normalize_path(Path::new("../x")), Path::new("../x"));
        assert_eq!(normalize_path(Path::new("/a/../../b")), Path::new("/b"));
    }

    #[test]
    fn secrets_are_recognised() {
        assert!(is_secret_name("HF_TOKEN"));
        assert!(is_secret_name("openai_api_key"));
        assert!(!is_secret_name("HF_HUB_OFFLINE"));
        assert_eq!(redact("HF_TOKEN", "hf_abc"), "<redacted>");
        assert_eq!(redact("VLLM_USE_V1", "1"), "1");
    }

    #[test]
    fn prefixes_never_split_a_character() {
        assert_eq!(prefix_chars("0123456789abcdef", 12), "0123456789ab");
        assert_eq!(prefix_chars("abc", 12), "abc");
        assert_eq!(prefix_chars("ééééééééééééé", 12), "éééééééééééé");
        assert_eq!(prefix_chars("a😀b", 2), "a😀");
    }
}
