//! What one request left behind: raw timestamps and counts, from which every metric follows.
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No response (connection refused, reset before the status line).
    Connect,
    /// A non-200 status.
    HttpStatus,
    /// The stream broke off (connection closed or body decoding failed mid-way).
    Disconnected,
    /// An event that is not JSON or not UTF-8.
    Malformed,
    /// The server sent an `error` object inside the stream.
    StreamError,
    /// HTTP 200, but not a single choice-bearing event.
    NoChoices,
    /// The per-request timeout struck.
    RequestTimeout,
    /// The run's timeout struck while the request was open.
    RunTimeout,
    /// The run's timeout struck before the request was sent.
    NotSent,
    /// The response went past a size limit (see `docs/loadgen.md`, "Limits"); reading stopped.
    ResponseTooLarge,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Malformed => "malformed",
            ErrorKind::StreamError => "stream_error",
            ErrorKind::NoChoices => "no_choices",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::RunTimeout => "run_timeout",
            ErrorKind::NotSent => "not_sent",
            ErrorKind::ResponseTooLarge => "response_too_large",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Times are seconds: `*_at_s` from the run's start, the others from this request's send time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestRecord {
    pub index: usize,
    /// When the arrival process wanted it released (0 with rate inf).
    pub scheduled_at_s: f64,
    /// When it was released to the concurrency queue.
    pub released_at_s: Option<f64>,
    /// When its bytes were handed to the connection (after client-side queueing).
    pub sent_at_s: Option<f64>,
    /// When its task finished (end of body, error, or timeout).
    pub finished_at_s: Option<f64>,
    pub http_status: Option<u16>,
    /// Response headers received.
    pub first_byte_s: Option<f64>,
    /// First event whose `choices` is non-empty (vLLM's TTFT).
    pub ttft_s: Option<f64>,
    /// First event with non-empty content (the older, content-only TTFT).
    pub first_content_s: Option<f64>,
    /// Arrival of every choice-bearing event.
    pub event_times_s: Vec<f64>,
    /// Events whose content was non-empty.
    pub content_events: u32,
    pub prompt_tokens_client: Option<u32>,
    pub prompt_tokens_server: Option<u32>,
    pub completion_tokens_server: Option<u32>,
    /// `data: [DONE]` arrived.
    pub done_received: bool,
    #[serde(skip)]
    pub generated_text: String,
    pub error: Option<RequestError>,
}

impl RequestRecord {
    pub(crate) fn new(
        index: usize,
        scheduled_at_s: f64,
        prompt_tokens_client: Option<u32>,
        expected_events: usize,
    ) -> Self {
        RequestRecord {
            index,
            scheduled_at_s,
            prompt_tokens_client,
            event_times_s: Vec::with_capacity(expected_events),
            ..RequestRecord::default()
        }
    }

    /// Records the first failure only (a timeout after a disconnect stays a disconnect).
    pub(crate) fn fail(&mut self, kind: ErrorKind, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(RequestError {
                kind,
                message: message.into(),
            });
        }
    }

    /// HTTP 200, at least one choice-bearing event, and no error.
    pub fn success(&self) -> bool {
        self.error.is_none() && self.ttft_s.is_some()
    }

    /// vLLM's `latency`: the last choice-bearing event (the usage chunk does not extend it).
    pub fn latency_s(&self) -> f64 {
        self.event_times_s.last().copied().unwrap_or(0.0)
    }

    /// vLLM's `itl` list: gaps between successive choice-bearing events.
    pub fn itls_s(&self) -> impl Iterator<Item = f64> + '_ {
        self.event_times_s.windows(2).map(|w| w[1] - w[0])
    }

    /// Time spent waiting for a concurrency slot.
    pub fn queue_time_s(&self) -> f64 {
        match (self.released_at_s, self.sent_at_s) {
            (Some(released), Some(sent)) => (sent - released).max(0.0),
            _ => 0.0,
        }
    }

    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .map(|e| e.message.as_str())
            .unwrap_or("")
    }
}
