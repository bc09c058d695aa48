//! Server-Sent Events from raw bytes, as they arrive.
//!
//! Lines end in `\n`, `\r\n` or `\r` (also when the `\r` and the `\n` arrive in different
//! reads); a blank line ends an event; lines starting with `:` are comments; `data:` lines (one
//! optional space after the colon) are joined with `\n`; other fields are ignored. Bytes are only
//! decoded once an event is complete, so a multi-byte UTF-8 character split across two reads is
//! never seen half. Buffers are reused: no allocation per event once they have grown.
//!
//! Memory is bounded: a line or an event's data longer than the parser's limit
//! ([`MAX_EVENT_BYTES`] by default) ends the stream with [`SseEvent::TooLarge`] instead of
//! growing without end (one endless `data:` line from a hostile server once took a run from
//! 200 MB to 1.3 GB in 7 s). After that every further byte is ignored.

/// Longest line, and longest event data, accepted: far above any real chunk (vLLM's chunks are
/// a few hundred bytes; with top-20 logprobs a few kB).
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// One complete event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEvent<'a> {
    /// A `data` payload (not `[DONE]`).
    Data(&'a str),
    /// `data: [DONE]`.
    Done,
    /// A payload that is not valid UTF-8.
    InvalidUtf8(&'a [u8]),
    /// A line or an event exceeded the limit (bytes); the parser ignores the rest of the stream.
    TooLarge(usize),
}

#[derive(Debug)]
pub struct SseParser {
    /// Bytes of a line whose end has not arrived yet.
    partial_line: Vec<u8>,
    /// The data of the event being assembled.
    data: Vec<u8>,
    has_data: bool,
    /// The previous read ended with `\r`: a `\n` at the start of the next one belongs to it.
    skip_lf: bool,
    /// Bytes a line or an event's data may have.
    limit: usize,
    /// The limit was hit: everything after is ignored.
    overflowed: bool,
}

impl Default for SseParser {
    fn default() -> SseParser {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// A parser that gives up on lines or events longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> SseParser {
        SseParser {
            partial_line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            skip_lf: false,
            limit,
            overflowed: false,
        }
    }

    /// Whether the limit was hit (the stream is abandoned).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes the parser's buffers hold (capacity), for tests of the memory bound.
    pub fn buffered_capacity(&self) -> usize {
        self.partial_line.capacity() + self.data.capacity()
    }

    /// Feeds one read's bytes; calls `on_event` for every event they complete.
    pub fn feed(&mut self, chunk: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.overflowed {
            return;
        }
        // An empty read says nothing, not even that a `\n` after a pending `\r` is not coming.
        if chunk.is_empty() {
            return;
        }
        let mut rest = chunk;
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let terminator = rest[end];
            if self.partial_line.len() + end > self.limit {
                self.overflow(on_event);
                return;
            }
            if self.partial_line.is_empty() {
                self.process_line(&rest[..end], on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial_line);
                line.extend_from_slice(&rest[..end]);
                self.process_line(&line, on_event);
                if self.overflowed {
                    return; // `line` (and its capacity) goes with it
                }
                line.clear();
                self.partial_line = line;
            }
            if self.overflowed {
                return;
            }
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        // One comparison per read (not per byte) keeps the bound off the hot path.
        if self.partial_line.len() + rest.len() > self.limit {
            self.overflow(on_event);
            return;
        }
        self.partial_line.extend_from_slice(rest);
    }

    fn overflow(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        self.overflowed = true;
        // Give the memory back now: the request may stay open until its timeout.
        self.partial_line = Vec::new();
        self.data = Vec::new();
        self.has_data = false;
        on_event(SseEvent::TooLarge(self.limit));
    }

    /// End of the stream: a last line without its terminator and an event without its blank
    /// line are still delivered (servers that close right after the last event exist).
    pub fn finish(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.overflowed {
            return;
        }
        if !self.partial_line.is_empty() {
            let line = std::mem::take(&mut self.partial_line);
            self.process_line(&line, on_event);
        }
        self.dispatch(on_event);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive pings)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            return; // event:, id:, retry: and unknown fields do not matter here
        }
        if self.data.len() + value.len() + 1 > self.limit {
            self.overflow(on_event);
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if !self.has_data {
            return;
        }
        self.has_data = false;
        match std::str::from_utf8(&self.data) {
            Ok("[DONE]") => on_event(SseEvent::Done),
            Ok(text) => on_event(SseEvent::Data(text)),
            Err(_) => on_event(SseEvent::InvalidUtf8(&self.data)),
        }
        self.data.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Data(String),
        Done,
        Invalid(Vec<u8>),
        TooLarge(usize),
    }

    fn collect(pieces: &[&[u8]]) -> Vec<Owned> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut sink = |event: SseEvent<'_>| {
            events.push(match event {
                SseEvent::Data(text) => Owned::Data(text.to_string()),
                SseEvent::Done => Owned::Done,
                SseEvent::InvalidUtf8(bytes) => Owned::Invalid(bytes.to_vec()),
                SseEvent::TooLarge(limit) => Owned::TooLarge(limit),
            })
        };
        for piece in pieces {
            parser.feed(piece, &mut sink);
        }
        parser.finish(&mut sink);
        events
    }

    fn data(text: &str) -> Owned {
        Owned::Data(text.to_string())
    }

    const VLLM_LIKE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                             data: {\"choices\":[{\"delta\":{\"content\":\"h\u{e9}llo \u{1F600}\"}}]}\n\n\
                             : keep-alive\n\n\
                             data: {\"choices\":[],\"usage\":{\"completion_tokens\":1}}\n\n\
                             data: [DONE]\n\n";

    #[test]
    fn parses_a_vllm_like_stream() {
        let events = collect(&[VLLM_LIKE.as_bytes()]);
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(&events[1], Owned::Data(t) if t.contains("h\u{e9}llo \u{1F600}")));
        assert_eq!(events[3], Owned::Done);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let bytes = VLLM_LIKE.as_bytes();
        let whole = collect(&[bytes]);
        for cut in 0..=bytes.len() {
            assert_eq!(
                collect(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        // Also byte by byte (every multi-byte character straddles reads).
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect(&singles), whole);
    }

    #[test]
    fn crlf_and_cr_line_endings_even_when_split() {
        let crlf = "data: a\r\n\r\ndata: b\r\n\r\ndata: [DONE]\r\n\r\n";
        let want = vec![data("a"), data("b"), Owned::Done];
        assert_eq!(collect(&[crlf.as_bytes()]), want);
        for cut in 0..=crlf.len() {
            assert_eq!(
                collect(&[&crlf.as_bytes()[..cut], &crlf.as_bytes()[cut..]]),
                want,
                "cut {cut}"
            );
        }
        assert_eq!(
            collect(&[b"data: a\r\rdata: b\r\r"]),
            vec![data("a"), data("b")]
        );
        // An empty read between the `\r` and its `\n` (the fuzzer found this one) changes
        // nothing: the `\n` still ends the same line, not a blank one that would split the event.
        assert_eq!(
            collect(&[b"data: a\r", b"", b"\ndata: b\r\n\r\n"]),
            vec![data("a\nb")]
        );
    }

    #[test]
    fn multi_line_data_comments_and_other_fields() {
        let text = "event: message\nid: 7\ndata: line1\ndata:line2\n: ping\nretry: 10\n\n";
        assert_eq!(collect(&[text.as_bytes()]), vec![data("line1\nline2")]);
        // A field name alone means an empty value; a blank line alone dispatches nothing.
        assert_eq!(collect(&[b"\n\ndata\n\n"]), vec![data("")]);
    }

    #[test]
    fn missing_done_and_missing_final_blank_line_still_deliver() {
        assert_eq!(
            collect(&[b"data: {\"a\":1}\n\ndata: {\"b\":2}"]),
            vec![data("{\"a\":1}"), data("{\"b\":2}")]
        );
        assert_eq!(collect(&[b"data: x\n"]), vec![data("x")]);
    }

    #[test]
    fn invalid_utf8_is_reported_not_dropped() {
        let events = collect(&[b"data: \xff\xfe\n\ndata: ok\n\n"]);
        assert_eq!(events, vec![Owned::Invalid(vec![0xff, 0xfe]), data("ok")]);
    }

    // Arbitrary chunkings of well-formed streams are checked against a model of the stream in
    // tests/fuzz_sse.rs (more cuts, a wider alphabet, and the whole stream as one chunk too).
    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300),
                                cut in any::<prop::sample::Index>()) {
            let at = cut.index(bytes.len() + 1);
            let split = collect(&[&bytes[..at], &bytes[at..]]);
            prop_assert_eq!(split, collect(&[&bytes]));
        }
    }
}
