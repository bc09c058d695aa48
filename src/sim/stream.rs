//! The streamed response body: a small state machine that writes SSE events into one reusable
//! buffer at their scheduled times. No task per request, no channel, no allocation per token:
//! `BytesMut::split` hands out the written bytes and reclaims the space once hyper has sent them.
use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::server::{RunningGuard, Shared};

/// Words the simulator "generates". ASCII without JSON escapes, so they are copied verbatim.
pub(crate) const VOCAB: [&str; 16] = [
    " the", " model", " says", " hello", " token", " stream", " fast", " bench", " vllm", " data",
    " value", " line", " server", " sim", " test", " word",
];

/// Events that are all due are written into one frame, up to this many bytes, so a zero-delay
/// server is limited by the network stack rather than by per-frame overhead.
const COALESCE_LIMIT: usize = 32 * 1024;

fn is_due(at: Instant) -> bool {
    at <= Instant::now()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completions,
}

/// A fault that strikes one stream half-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFault {
    None,
    Disconnect,
    Malformed,
    Stall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Content,
    Usage,
    Done,
    End,
}

/// Everything one stream needs to know, decided by the request handler.
pub(crate) struct StreamPlan {
    pub api: Api,
    /// `data: {"id":...,"choices":[` — the part every event of this stream shares.
    pub prefix: String,
    pub completion_tokens: u32,
    pub prompt_tokens: u32,
    pub finish_reason: &'static str,
    pub send_usage: bool,
    pub fault: StreamFault,
    /// When the first chunk is due.
    pub first_at: Instant,
    /// Seed of this stream's jitter generator.
    pub rng_seed: u64,
}

pub(crate) struct SimStream {
    shared: Arc<Shared>,
    plan: StreamPlan,
    phase: Phase,
    /// Tokens already sent.
    sent_tokens: u32,
    /// Content chunks already sent.
    sent_chunks: u32,
    total_chunks: u32,
    next_at: Instant,
    rng: SplitMix64,
    buf: BytesMut,
    _running: RunningGuard,
}

impl SimStream {
    pub(crate) fn new(shared: Arc<Shared>, plan: StreamPlan, running: RunningGuard) -> SimStream {
        let per_chunk = shared.config.tokens_per_chunk;
        let total_chunks = plan.completion_tokens.div_ceil(per_chunk);
        let phase = if plan.api == Api::Chat && shared.config.role_chunk {
            Phase::Role
        } else {
            Phase::Content
        };
        SimStream {
            next_at: plan.first_at,
            rng: SplitMix64(plan.rng_seed),
            buf: BytesMut::with_capacity(4096),
            phase,
            sent_tokens: 0,
            sent_chunks: 0,
            total_chunks,
            shared,
            plan,
            _running: running,
        }
    }

    /// Writes the next event into `buf` and advances; returns false at the end of the stream.
    /// Err means "cut the connection now" (the disconnect fault).
    fn write_next(&mut self) -> Result<bool, ()> {
        match self.phase {
            Phase::Role => {
                self.buf.extend_from_slice(self.plan.prefix.as_bytes());
                self.buf.extend_from_slice(
                    br#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
                );
                self.buf.extend_from_slice(b"\n\n");
                // The first content chunk follows at once (same scheduled time).
                self.phase = Phase::Content;
            }
            Phase::Content => {
                let half = self.total_chunks / 2;
                if self.sent_chunks == half && self.plan.fault != StreamFault::None {
                    match self.plan.fault {
                        StreamFault::Disconnect => {
                            self.shared.stats.disconnects.inc();
                            return Err(());
                        }
                        StreamFault::Malformed => {
                            // Truncated JSON, as a broken proxy or a server bug would send it.
                            self.buf.extend_from_slice(b"data: {\"id\":\"broken\",\"choices\":[{\"delta\":{\"content\":\"tru\n\n");
                            self.shared.stats.malformed.inc();
                            self.plan.fault = StreamFault::None;
                            return Ok(true);
                        }
                        StreamFault::Stall => {
                            self.shared.stats.stalls.inc();
                            self.plan.fault = StreamFault::None;
                            let stall = self.shared.scaled_ms(self.shared.config.stall_ms);
                            self.next_at += stall;
                            return Ok(true);
                        }
                        StreamFault::None => {}
                    }
                }
                let per_chunk = self.shared.config.tokens_per_chunk;
                let tokens = per_chunk.min(self.plan.completion_tokens - self.sent_tokens);
                self.buf.extend_from_slice(self.plan.prefix.as_bytes());
                let (open, close) = match self.plan.api {
                    Api::Chat => (
                        &br#"{"index":0,"delta":{"content":""#[..],
                        &br#""},"logprobs":null,"finish_reason":"#[..],
                    ),
                    Api::Completions => (
                        &br#"{"index":0,"text":""#[..],
                        &br#"","logprobs":null,"finish_reason":"#[..],
                    ),
                };
                self.buf.extend_from_slice(open);
                for i in 0..tokens {
                    let word = self.shared.word((self.sent_tokens + i) as usize);
                    self.buf.extend_from_slice(word.as_bytes());
                }
                self.buf.extend_from_slice(close);
                self.sent_tokens += tokens;
                self.sent_chunks += 1;
                self.shared.stats.generation_tokens.add(u64::from(tokens));
                if self.sent_chunks == self.total_chunks {
                    self.buf.extend_from_slice(b"\"");
                    self.buf
                        .extend_from_slice(self.plan.finish_reason.as_bytes());
                    self.buf.extend_from_slice(b"\"}]}\n\n");
                    self.phase = if self.plan.send_usage {
                        Phase::Usage
                    } else {
                        Phase::Done
                    };
                } else {
                    self.buf.extend_from_slice(b"null}]}\n\n");
                    let gap = self.shared.gap_ms(&mut self.rng);
                    self.next_at += gap;
                }
            }
            Phase::Usage => {
                self.buf.extend_from_slice(self.plan.prefix.as_bytes());
                let prompt = self.plan.prompt_tokens;
                let completion = self.sent_tokens;
                // Writing into BytesMut cannot fail.
                let _ = write!(
                    BufWriter(&mut self.buf),
                    r#"],"usage":{{"prompt_tokens":{prompt},"total_tokens":{},"completion_tokens":{completion}}}}}"#,
                    prompt + completion
                );
                self.buf.extend_from_slice(b"\n\n");
                self.phase = Phase::Done;
            }
            Phase::Done => {
                self.buf.extend_from_slice(b"data: [DONE]\n\n");
                self.shared.stats.completed.inc();
                self.phase = Phase::End;
            }
            Phase::End => return Ok(false),
        }
        Ok(true)
    }
}

impl Body for SimStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.phase == Phase::End {
                return Poll::Ready(None);
            }
            // Wait for the next event's scheduled time (only if it is still ahead).
            if !is_due(this.next_at) && this.shared.timer.wake_at(this.next_at, cx.waker()) {
                return Poll::Pending;
            }
            // Write every event that is due, then hand them over as one frame.
            loop {
                match this.write_next() {
                    Err(()) => {
                        this.phase = Phase::End;
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "isobench sim: simulated mid-stream disconnect",
                        ))));
                    }
                    Ok(false) => break,
                    Ok(true) => {}
                }
                if this.phase == Phase::End
                    || this.buf.len() >= COALESCE_LIMIT
                    || !is_due(this.next_at)
                {
                    break;
                }
            }
            if !this.buf.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
            }
            // Nothing written (a stall moved the schedule): wait again.
        }
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::End && self.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// `fmt::Write` for `BytesMut` without going through `String`.
struct BufWriter<'a>(&'a mut BytesMut);

impl std::fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A tiny, fast, seedable generator for per-gap jitter (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}
