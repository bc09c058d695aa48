//! The SSE parser against nasty input: the committed corpus (`tests/fuzz_corpus/sse/*`) on
//! every run, arbitrary chunkings, arbitrary bytes, and oversized lines and events. A stream
//! from a server is untrusted: the parser must never panic, must give the same events however
//! the bytes arrive, and must keep its memory bounded.
use isobench::loadgen::sse::{MAX_EVENT_BYTES, SseEvent, SseParser};
use proptest::prelude::*;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Data(String),
    Done,
    Invalid(Vec<u8>),
    TooLarge(usize),
}

/// Feeds `pieces` in order to a parser with `limit`; the events and the largest buffer seen.
fn collect_with(limit: usize, pieces: &[&[u8]]) -> (Vec<Owned>, usize) {
    let mut parser = SseParser::with_limit(limit);
    let mut events = Vec::new();
    let mut sink = |event: SseEvent<'_>| {
        events.push(match event {
            SseEvent::Data(text) => Owned::Data(text.to_string()),
            SseEvent::Done => Owned::Done,
            SseEvent::InvalidUtf8(bytes) => Owned::Invalid(bytes.to_vec()),
            SseEvent::TooLarge(limit) => Owned::TooLarge(limit),
        })
    };
    let mut peak = 0;
    for piece in pieces {
        parser.feed(piece, &mut sink);
        peak = peak.max(parser.buffered_capacity());
    }
    parser.finish(&mut sink);
    (events, peak)
}

fn collect(pieces: &[&[u8]]) -> Vec<Owned> {
    collect_with(MAX_EVENT_BYTES, pieces).0
}

fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.to_vec();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in points {
        pieces.push(&bytes[last..p]);
        last = p;
    }
    pieces.push(&bytes[last..]);
    pieces
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/sse");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn corpus_gives_the_same_events_however_it_is_split() {
    for (name, bytes) in corpus() {
        let whole = collect(&[&bytes]);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect(&singles), whole, "{name}: byte by byte");
        for cut in [1, 2, 3, 7, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            let cut = cut.min(bytes.len());
            assert_eq!(
                collect(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "{name}: cut at {cut}"
            );
        }
    }
}

#[test]
fn corpus_events_are_as_expected() {
    let corpus: std::collections::HashMap<String, Vec<u8>> = corpus().into_iter().collect();
    let events = |name: &str| collect(&[&corpus[name]]);
    assert_eq!(
        events("multi_line_event.sse"),
        vec![Owned::Data("one\ntwo\n\n four".into())]
    );
    assert_eq!(
        events("mixed_line_endings.sse"),
        vec![
            Owned::Data("a".into()),
            Owned::Data("b".into()),
            Owned::Data("c".into()),
            Owned::Done
        ]
    );
    // Only exactly `[DONE]` ends the stream; a second space is part of the value.
    assert_eq!(
        events("done_with_spaces.sse"),
        vec![Owned::Data(" [DONE]".into()), Owned::Done]
    );
    assert_eq!(events("comments_only.sse"), vec![]);
    assert_eq!(events("cr_at_end.sse"), vec![Owned::Data("x".into())]);
    assert_eq!(
        events("invalid_utf8.sse"),
        vec![
            Owned::Invalid(vec![0xff, 0xfe]),
            Owned::Invalid(vec![0xc3]),
            Owned::Data("ok".into())
        ]
    );
    assert_eq!(
        events("split_multibyte.sse"),
        vec![Owned::Data("数据😀".into())]
    );
}

#[test]
fn an_oversized_line_or_event_ends_the_stream_with_bounded_memory() {
    let limit = 64 * 1024;
    // One endless line, fed in reads of 8 kB: one TooLarge, then nothing.
    let line: Vec<u8> = [
        b"data: ".as_slice(),
        &vec![b'a'; 10 * limit],
        b"\n\ndata: late\n\n",
    ]
    .concat();
    let pieces: Vec<&[u8]> = line.chunks(8192).collect();
    let (events, peak) = collect_with(limit, &pieces);
    assert_eq!(events, vec![Owned::TooLarge(limit)]);
    assert!(peak <= 2 * limit + 8192, "buffers peaked at {peak} bytes");
    // In one read: the same.
    let (events, _) = collect_with(limit, &[&line]);
    assert_eq!(events, vec![Owned::TooLarge(limit)]);
    // Many short data lines that make one huge event.
    let event: Vec<u8> = (0..100)
        .flat_map(|_| [b"data: ".as_slice(), &vec![b'b'; 4096], b"\n"].concat())
        .chain(*b"\n")
        .collect();
    let (events, peak) = collect_with(limit, &event.chunks(1000).collect::<Vec<_>>());
    assert_eq!(events, vec![Owned::TooLarge(limit)]);
    assert!(peak <= 2 * limit + 8192, "buffers peaked at {peak} bytes");
    // Lines of exactly the limit (`data: ` included) pass, one after another; one byte more
    // does not.
    let line_of =
        |value_len: usize| [b"data: ".as_slice(), &vec![b'c'; value_len], b"\n\n"].concat();
    let ok = line_of(limit - 6).repeat(3);
    let (events, _) = collect_with(limit, &ok.chunks(5000).collect::<Vec<_>>());
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Owned::Data(d) if d.len() == limit - 6))
    );
    let over = line_of(limit - 5);
    assert_eq!(
        collect_with(limit, &over.chunks(5000).collect::<Vec<_>>()).0,
        vec![Owned::TooLarge(limit)]
    );
}

#[test]
fn the_default_limit_is_a_few_mib() {
    assert_eq!(MAX_EVENT_BYTES, 4 << 20);
    let line = [
        b"data: ".as_slice(),
        &vec![b'x'; MAX_EVENT_BYTES + 1],
        b"\n\n",
    ]
    .concat();
    let pieces: Vec<&[u8]> = line.chunks(16 * 1024).collect();
    let (events, peak) = collect_with(MAX_EVENT_BYTES, &pieces);
    assert_eq!(events, vec![Owned::TooLarge(MAX_EVENT_BYTES)]);
    assert!(peak <= 2 * MAX_EVENT_BYTES + 16 * 1024);
}

/// A model of a well-formed stream: what any correct parser must produce.
fn render(events: &[(Vec<String>, bool)], eol: &str) -> (String, Vec<Owned>) {
    let mut text = String::new();
    let mut want = Vec::new();
    for (lines, comment) in events {
        if *comment {
            text.push_str(": keep-alive");
            text.push_str(eol);
        }
        for line in lines {
            text.push_str("data: ");
            text.push_str(line);
            text.push_str(eol);
        }
        text.push_str(eol);
        if !lines.is_empty() {
            let joined = lines.join("\n");
            want.push(if joined == "[DONE]" {
                Owned::Done
            } else {
                Owned::Data(joined)
            });
        }
    }
    (text, want)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_chunking_of_a_valid_stream_gives_the_same_events(
        events in prop::collection::vec(
            (prop::collection::vec("[a-z{}\":,é😀数 \\[\\]]{0,16}", 0..3), any::<bool>()), 0..10),
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        // A value's leading space is the optional one after the colon: not part of the data.
        let events: Vec<(Vec<String>, bool)> = events
            .into_iter()
            .map(|(lines, c)| (lines.into_iter().map(|l| l.trim_start().to_string()).collect(), c))
            .collect();
        let (text, want) = render(&events, eol);
        let bytes = text.as_bytes();
        let points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        prop_assert_eq!(collect(&split_at_points(bytes, &points)), want.clone());
        prop_assert_eq!(collect(&[bytes]), want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        limit in 1usize..256,
    ) {
        let points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        let pieces = split_at_points(&bytes, &points);
        // With the real limit: chunking never changes the events.
        prop_assert_eq!(collect(&pieces), collect(&[&bytes]));
        // With a tiny limit: never more than one TooLarge, and it is the last event.
        let (events, peak) = collect_with(limit, &pieces);
        prop_assert_eq!(&events, &collect_with(limit, &[&bytes]).0);
        let too_large = events.iter().filter(|e| matches!(e, Owned::TooLarge(_))).count();
        prop_assert!(too_large <= 1);
        if too_large == 1 {
            prop_assert_eq!(events.last(), Some(&Owned::TooLarge(limit)));
        }
        for e in &events {
            if let Owned::Data(d) = e {
                prop_assert!(d.len() <= limit);
            }
        }
        let longest_piece = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
        // Both buffers stay within the limit (a Vec may double past it) plus one read.
        prop_assert!(peak <= 4 * limit + 2 * longest_piece + 64, "peak {}", peak);
    }
}
