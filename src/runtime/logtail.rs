//! Reading the end of a server log, for crash classification.
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The last `max_bytes` of the file at `path` as text (invalid UTF-8 replaced), starting at a
/// line boundary when the file was cut. A missing file reads as empty: a server that crashed
/// before writing anything has no log.
pub fn read_log_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::with_capacity((len - start) as usize);
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    if start > 0 {
        // Drop the partial first line.
        match text.find('\n') {
            Some(newline) => text[newline + 1..].to_string(),
            None => text.into_owned(),
        }
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_starts_at_a_line_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        std::fs::write(&path, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(
            read_log_tail(&path, 1 << 20),
            "first line\nsecond line\nthird\n"
        );
        // 12 bytes reach back into "second line": that partial line is dropped.
        assert_eq!(read_log_tail(&path, 12), "third\n");
        assert_eq!(read_log_tail(&dir.path().join("missing.log"), 100), "");
    }
}
