//! The HTTP side of the simulator: accept loop, routing, request handling, statistics.
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::config::SimConfig;
use super::stream::{Api, SimStream, SplitMix64, StreamFault, StreamPlan, VOCAB};
use super::timer::HiResTimer;

/// Any configured delay is capped at a day, so absurd values cannot overflow the clock.
const MAX_DELAY_MS: f64 = 86_400_000.0;

/// Largest request body accepted (a long prompt is a few hundred KiB).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: String, message: String },
    /// The configured fail-at-start message (the CLI prints it and exits 1).
    #[error("{0}")]
    FailAtStart(String),
}

/// Counters since start (a snapshot; also exported on `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Generation requests that passed validation (each gets an index for fault selection).
    pub requests: u64,
    /// Streams (or plain responses) that ran to their end.
    pub completed: u64,
    pub http_500: u64,
    pub disconnects: u64,
    pub malformed: u64,
    pub stalls: u64,
    /// Requests rejected before generation (bad JSON, unknown model, not ready).
    pub rejected: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Requests generating right now.
    pub running: u64,
    /// TCP connections accepted (a keep-alive client opens few).
    pub connections: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: Counter,
    pub completed: Counter,
    pub http_500: Counter,
    pub disconnects: Counter,
    pub malformed: Counter,
    pub stalls: Counter,
    pub rejected: Counter,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub connections: Counter,
    /// Requests waiting for admission (`max_num_seqs`) now: `vllm:num_requests_waiting`.
    pub waiting: AtomicU64,
    /// `vllm:time_to_first_token_seconds`: each request's scheduled TTFT (admission wait,
    /// prefill and scaling included), in nanoseconds so sums stay exact.
    pub ttft: Histogram,
}

/// vLLM's TTFT buckets (seconds).
const TTFT_BUCKETS: [f64; 17] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0,
];

#[derive(Debug, Default)]
pub(crate) struct Histogram {
    count: Counter,
    sum_ns: Counter,
    /// Observations at or below each of [`TTFT_BUCKETS`] (cumulative, as exposed).
    buckets: [Counter; TTFT_BUCKETS.len()],
}

impl Histogram {
    fn observe(&self, d: Duration) {
        self.count.inc();
        self.sum_ns.add(d.as_nanos() as u64);
        let secs = d.as_secs_f64();
        for (bound, counter) in TTFT_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                counter.inc();
            }
        }
    }

    fn exposition(&self, name: &str, label: &str, out: &mut String) {
        out.push_str(&format!("# TYPE {name} histogram\n"));
        for (bound, counter) in TTFT_BUCKETS.iter().zip(&self.buckets) {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{bound:?}\",{label}}} {}\n",
                counter.get()
            ));
        }
        let count = self.count.get();
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\",{label}}} {count}\n"));
        out.push_str(&format!("{name}_count{{{label}}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum{{{label}}} {:?}\n",
            self.sum_ns.get() as f64 / 1e9
        ));
    }
}

/// State shared by every connection of one server process.
/// Words of a diverged server (`diverge_after_tokens`): none of them is in [`VOCAB`], so the
/// text differs from the first diverged token on.
const DIVERGED_VOCAB: [&str; 8] = [
    " other", " changed", " skipped", " wrong", " answer", " differs", " here", " now",
];

pub(crate) struct Shared {
    pub config: SimConfig,
    pub speed_factor: f64,
    pub stats: Stats,
    pub timer: Arc<HiResTimer>,
    ready_at: Instant,
    tokenizer: Option<tokenizers::Tokenizer>,
    running: AtomicU64,
    admission: Option<Arc<Semaphore>>,
    shutdown: watch::Sender<bool>,
    crashed: watch::Sender<bool>,
    created_unix: u64,
    next_id: AtomicU64,
    /// Start of the low-discrepancy fault sequence (depends on the seed).
    fault_offset: f64,
}

impl Shared {
    fn slowdown(&self) -> f64 {
        let running = self.running.load(Ordering::Relaxed).max(1);
        1.0 + self.config.concurrency_slowdown * (running - 1) as f64
    }

    /// The word generated as token `i` of every answer (the usual vocabulary, or the diverged
    /// one from `diverge_after_tokens` on).
    pub(crate) fn word(&self, i: usize) -> &'static str {
        let diverged = self
            .config
            .diverge_after_tokens
            .is_some_and(|k| i >= k as usize);
        let vocab: &[&str] = if diverged { &DIVERGED_VOCAB } else { &VOCAB };
        vocab[i % vocab.len()]
    }

    /// A configured delay as it applies now: times the speed factor and the slowdown.
    pub(crate) fn scaled_ms(&self, ms: f64) -> Duration {
        let ms = (ms * self.speed_factor * self.slowdown()).clamp(0.0, MAX_DELAY_MS);
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// The next inter-chunk gap: `itl_ms ± jitter_ms` (uniform, clamped at 0), scaled.
    pub(crate) fn gap_ms(&self, rng: &mut SplitMix64) -> Duration {
        let jitter = self.config.jitter_ms;
        let ms = if jitter > 0.0 {
            (self.config.itl_ms + jitter * (2.0 * rng.next_f64() - 1.0)).max(0.0)
        } else {
            self.config.itl_ms
        };
        self.scaled_ms(ms)
    }

    fn is_ready(&self) -> bool {
        Instant::now() >= self.ready_at
    }

    /// Which fault, if any, strikes generation request number `index`. A golden-ratio sequence
    /// spreads the faults evenly, so N requests see ⌊N · rate⌉ ± 1 of each kind.
    fn fault_for(&self, index: u64) -> Fault {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let u = (self.fault_offset + index as f64 * GOLDEN).fract();
        let c = &self.config;
        let mut edge = c.error_rate;
        if u < edge {
            return Fault::Http500;
        }
        edge += c.disconnect_rate;
        if u < edge {
            return Fault::Stream(StreamFault::Disconnect);
        }
        edge += c.malformed_rate;
        if u < edge {
            return Fault::Stream(StreamFault::Malformed);
        }
        edge += c.stall_rate;
        if u < edge {
            return Fault::Stream(StreamFault::Stall);
        }
        Fault::Stream(StreamFault::None)
    }

    fn count_prompt_tokens(&self, prompt: &PromptText<'_>) -> u32 {
        let count_text = |text: &str| -> u32 {
            match &self.tokenizer {
                Some(tokenizer) => tokenizer
                    .encode(text, false)
                    .map(|enc| enc.len() as u32)
                    .unwrap_or(0),
                None => (text.chars().count() as f64 / self.config.chars_per_token).ceil() as u32,
            }
        };
        match prompt {
            PromptText::Chat(contents) => contents
                .iter()
                .map(|text| count_text(text) + self.config.chat_template_tokens)
                .sum(),
            PromptText::Completion(texts) => texts.iter().map(|t| count_text(t)).sum(),
            PromptText::TokenIds(n) => *n,
        }
    }

    fn trigger_crash(&self) {
        self.crashed.send_replace(true);
        self.shutdown.send_replace(true);
    }

    fn snapshot(&self) -> SimStats {
        let s = &self.stats;
        SimStats {
            requests: s.requests.get(),
            completed: s.completed.get(),
            http_500: s.http_500.get(),
            disconnects: s.disconnects.get(),
            malformed: s.malformed.get(),
            stalls: s.stalls.get(),
            rejected: s.rejected.get(),
            prompt_tokens: s.prompt_tokens.get(),
            generation_tokens: s.generation_tokens.get(),
            running: self.running.load(Ordering::Relaxed),
            connections: s.connections.get(),
        }
    }
}

enum Fault {
    Http500,
    Stream(StreamFault),
}

/// Counts a request as running (for the slowdown) until the response is done or dropped.
pub(crate) struct RunningGuard {
    shared: Arc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl RunningGuard {
    fn new(shared: Arc<Shared>, permit: Option<OwnedSemaphorePermit>) -> RunningGuard {
        shared.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard {
            shared,
            _permit: permit,
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running simulator. Dropping it stops the server too.
pub struct SimHandle {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `http://ADDR`, ready to use as a client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This process's speed factor (1.0 without `speed_noise_pct`).
    pub fn speed_factor(&self) -> f64 {
        self.shared.speed_factor
    }

    pub fn stats(&self) -> SimStats {
        self.shared.snapshot()
    }

    /// Resolves when the simulated crash (`crash_after`) has happened.
    pub async fn crashed(&self) {
        let mut rx = self.shared.crashed.subscribe();
        let _ = rx.wait_for(|crashed| *crashed).await;
    }

    /// Stops accepting, closes every connection, and waits until the port is released.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Starts a simulator on the current tokio runtime.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    config.validate().map_err(SimError::Config)?;
    if let Some(message) = &config.fail_at_start {
        return Err(SimError::FailAtStart(message.clone()));
    }
    let tokenizer = match &config.tokenizer {
        Some(path) => {
            let file = crate::loadgen::resolve_tokenizer_file(path).ok_or_else(|| {
                SimError::Tokenizer {
                    path: path.display().to_string(),
                    message: "no tokenizer.json there".into(),
                }
            })?;
            Some(
                tokenizers::Tokenizer::from_file(&file).map_err(|err| SimError::Tokenizer {
                    path: file.display().to_string(),
                    message: err.to_string(),
                })?,
            )
        }
        None => None,
    };
    let speed_factor = draw_speed_factor(config.speed_noise_pct, config.speed_noise_seed);
    let bind_addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&bind_addr)
        .await
        .map_err(|source| SimError::Bind {
            addr: bind_addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: bind_addr,
        source,
    })?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (crashed, _) = watch::channel(false);
    let now = Instant::now();
    let shared = Arc::new(Shared {
        ready_at: now + Duration::from_secs_f64(config.slow_start_s.min(MAX_DELAY_MS / 1000.0)),
        admission: (config.max_num_seqs > 0).then(|| Arc::new(Semaphore::new(config.max_num_seqs))),
        fault_offset: SplitMix64(config.seed).next_f64(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        next_id: AtomicU64::new(0),
        running: AtomicU64::new(0),
        stats: Stats::default(),
        timer: HiResTimer::start().map_err(|source| SimError::Bind {
            addr: "timer thread".into(),
            source,
        })?,
        tokenizer,
        speed_factor,
        shutdown,
        crashed,
        config,
    });
    let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
    Ok(SimHandle {
        addr,
        shared,
        accept_task: Some(accept_task),
    })
}

/// One multiplicative factor per process from N(1, pct/100), kept within [0.2, 5].
fn draw_speed_factor(noise_pct: f64, seed: Option<u64>) -> f64 {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    if noise_pct <= 0.0 {
        return 1.0;
    }
    let normal = match rand_distr::Normal::new(1.0, noise_pct / 100.0) {
        Ok(normal) => normal,
        Err(_) => return 1.0,
    };
    let factor = match seed {
        Some(seed) => normal.sample(&mut rand::rngs::StdRng::seed_from_u64(seed)),
        None => normal.sample(&mut rand::rng()),
    };
    factor.clamp(0.2, 5.0)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => {
                // Streams still waiting on the timer are dropped with their connections.
                shared.timer.stop();
                return;
            }
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("isobench sim: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.stats.connections.inc();
        let shared = shared.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service_shared = shared.clone();
            let service =
                hyper::service::service_fn(move |req| handle(service_shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection closes the socket at once (also what a crash does).
                _ = conn_shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

/// Response body: a fixed buffer or a timed stream (an enum, so no boxing per response).
pub(crate) enum SimBody {
    Full(Option<Bytes>),
    Stream(Box<SimStream>),
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(stream) => Pin::new(stream.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(bytes) => bytes.is_none(),
            SimBody::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Full(Some(body.into())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<SimBody> {
    respond(status, "application/json", value.to_string())
}

/// An error body shaped like vLLM's (`{"error": {message, type, param, code}}`).
fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<SimBody> {
    json_response(
        status,
        &serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": status.as_u16()}}),
    )
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path();
    if path == "/metrics" && method == Method::GET {
        return Ok(respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus_text(&shared),
        ));
    }
    if !shared.is_ready() {
        shared.stats.rejected.inc();
        return Ok(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "server is starting",
        ));
    }
    if path.starts_with("/v1/")
        && let Some(key) = &shared.config.api_key
    {
        let expected = format!("Bearer {key}");
        let given = req.headers().get(hyper::header::AUTHORIZATION);
        if given.is_none_or(|v| v.as_bytes() != expected.as_bytes()) {
            shared.stats.rejected.inc();
            // vLLM's answer to a missing or wrong key.
            return Ok(json_response(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "Unauthorized"}),
            ));
        }
    }
    let response = match (method, path) {
        (Method::GET, "/health") => respond(StatusCode::OK, "application/json", Bytes::new()),
        (Method::GET, "/version") => json_response(
            StatusCode::OK,
            &serde_json::json!({"version": concat!("isobench-sim-", env!("CARGO_PKG_VERSION"))}),
        ),
        (Method::GET, "/v1/models") => models_response(&shared),
        (Method::POST, "/v1/chat/completions") => generate(shared, req, Api::Chat).await,
        (Method::POST, "/v1/completions") => generate(shared, req, Api::Completions).await,
        _ => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"detail": "Not Found"}),
        ),
    };
    Ok(response)
}

fn models_response(shared: &Shared) -> Response<SimBody> {
    let data: Vec<serde_json::Value> = shared
        .config
        .model
        .iter()
        .map(|name| {
            serde_json::json!({"id": name, "object": "model", "created": shared.created_unix,
                               "owned_by": "isobench-sim", "root": name, "parent": null})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    )
}

#[derive(Deserialize)]
struct GenerationRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    prompt: Option<serde_json::Value>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The text a prompt consists of, borrowed from the parsed request.
enum PromptText<'a> {
    Chat(Vec<&'a str>),
    Completion(Vec<&'a str>),
    TokenIds(u32),
}

fn prompt_text(api: Api, request: &GenerationRequest) -> Result<PromptText<'_>, String> {
    match api {
        Api::Chat => {
            let messages = request.messages.as_ref().ok_or("`messages` is required")?;
            let mut contents = Vec::with_capacity(messages.len());
            for message in messages {
                match &message.content {
                    serde_json::Value::String(text) => contents.push(text.as_str()),
                    serde_json::Value::Array(parts) => {
                        for part in parts {
                            if let Some(text) = part.get("text").and_then(|t| t.as_str()) {
                                contents.push(text);
                            }
                        }
                    }
                    serde_json::Value::Null => contents.push(""),
                    _ => return Err("message `content` must be a string or a list of parts".into()),
                }
            }
            Ok(PromptText::Chat(contents))
        }
        Api::Completions => match request.prompt.as_ref().ok_or("`prompt` is required")? {
            serde_json::Value::String(text) => Ok(PromptText::Completion(vec![text.as_str()])),
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_u64()) => {
                Ok(PromptText::TokenIds(items.len() as u32))
            }
            serde_json::Value::Array(items) => Ok(PromptText::Completion(
                items.iter().filter_map(|i| i.as_str()).collect(),
            )),
            _ => Err("`prompt` must be a string or a list".into()),
        },
    }
}

async fn generate(shared: Arc<Shared>, req: Request<Incoming>, api: Api) -> Response<SimBody> {
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            shared.stats.rejected.inc();
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("cannot read body: {err}"),
            );
        }
    };
    let request: GenerationRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            shared.stats.rejected.inc();
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("invalid JSON body: {err}"),
            );
        }
    };
    let model = match &request.model {
        Some(name) if !shared.config.model.contains(name) => {
            shared.stats.rejected.inc();
            return error_response(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("The model `{name}` does not exist."),
            );
        }
        Some(name) => name.clone(),
        None => shared.config.model[0].clone(),
    };
    let prompt = match prompt_text(api, &request) {
        Ok(prompt) => prompt,
        Err(message) => {
            shared.stats.rejected.inc();
            return error_response(StatusCode::BAD_REQUEST, "BadRequestError", &message);
        }
    };

    let index = shared.stats.requests.0.fetch_add(1, Ordering::Relaxed);
    if let Some(limit) = shared.config.crash_after
        && index >= limit
    {
        shared.trigger_crash();
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "server crashed",
        );
    }
    let stream_fault = match shared.fault_for(index) {
        Fault::Http500 => {
            shared.stats.http_500.inc();
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "isobench sim: simulated internal server error",
            );
        }
        Fault::Stream(fault) => fault,
    };

    let prompt_tokens = shared.count_prompt_tokens(&prompt);
    shared.stats.prompt_tokens.add(u64::from(prompt_tokens));
    let requested = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(shared.config.default_max_tokens)
        .max(1);
    let (completion_tokens, finish_reason) = match shared.config.eos_after_tokens {
        Some(eos) if !request.ignore_eos && eos < requested => (eos.max(1), "stop"),
        _ => (requested, "length"),
    };

    // Admission (max_num_seqs): waiting here delays the response, so it counts into TTFT.
    let arrived = Instant::now();
    let permit = match &shared.admission {
        Some(semaphore) => {
            shared.stats.waiting.fetch_add(1, Ordering::Relaxed);
            let permit = semaphore.clone().acquire_owned().await.ok();
            shared.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            permit
        }
        None => None,
    };
    let running = RunningGuard::new(shared.clone(), permit);
    let ttft = shared.scaled_ms(
        shared.config.ttft_ms + shared.config.prefill_ms_per_token * f64::from(prompt_tokens),
    );
    let first_at = Instant::now() + ttft;
    shared.stats.ttft.observe(first_at - arrived);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let rng_seed = shared.config.seed ^ index.wrapping_mul(0x2545_F491_4F6C_DD1D);

    if !request.stream {
        return plain_response(
            &shared,
            api,
            &model,
            id,
            prompt_tokens,
            completion_tokens,
            finish_reason,
            first_at,
            rng_seed,
            running,
        )
        .await;
    }
    let send_usage = shared.config.usage
        && request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    let (id_prefix, object) = match api {
        Api::Chat => ("chatcmpl", "chat.completion.chunk"),
        Api::Completions => ("cmpl", "text_completion"),
    };
    let model_json = serde_json::Value::String(model).to_string();
    let prefix = format!(
        r#"data: {{"id":"{id_prefix}-{id:016x}","object":"{object}","created":{},"model":{model_json},"choices":["#,
        shared.created_unix
    );
    let plan = StreamPlan {
        api,
        prefix,
        completion_tokens,
        prompt_tokens,
        finish_reason,
        send_usage,
        fault: stream_fault,
        first_at,
        rng_seed,
    };
    let stream = SimStream::new(shared, plan, running);
    let mut response = Response::new(SimBody::Stream(Box::new(stream)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

/// `stream: false`: wait for the whole generation, then answer with one JSON document.
#[allow(clippy::too_many_arguments)]
async fn plain_response(
    shared: &Arc<Shared>,
    api: Api,
    model: &str,
    id: u64,
    prompt_tokens: u32,
    completion_tokens: u32,
    finish_reason: &str,
    first_at: Instant,
    rng_seed: u64,
    running: RunningGuard,
) -> Response<SimBody> {
    let chunks = completion_tokens.div_ceil(shared.config.tokens_per_chunk);
    let mut rng = SplitMix64(rng_seed);
    let mut end = first_at;
    for _ in 1..chunks {
        end += shared.gap_ms(&mut rng);
    }
    shared.timer.sleep_until(end).await;
    drop(running);
    let text: String = (0..completion_tokens as usize)
        .map(|i| shared.word(i))
        .collect();
    shared
        .stats
        .generation_tokens
        .add(u64::from(completion_tokens));
    shared.stats.completed.inc();
    let usage = serde_json::json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                                   "completion_tokens": completion_tokens});
    let body = match api {
        Api::Chat => serde_json::json!({
            "id": format!("chatcmpl-{id:016x}"), "object": "chat.completion", "created": shared.created_unix,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage,
        }),
        Api::Completions => serde_json::json!({
            "id": format!("cmpl-{id:016x}"), "object": "text_completion", "created": shared.created_unix,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage,
        }),
    };
    json_response(StatusCode::OK, &body)
}

/// Prometheus text: isobench's own names plus the few `vllm:` series tools commonly scrape.
fn prometheus_text(shared: &Shared) -> String {
    let s = shared.snapshot();
    let model = &shared.config.model[0];
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "isobench_sim_requests_total",
        "counter",
        "Generation requests received.",
        s.requests.to_string(),
    );
    metric(
        "isobench_sim_requests_completed_total",
        "counter",
        "Responses finished.",
        s.completed.to_string(),
    );
    metric(
        "isobench_sim_requests_running",
        "gauge",
        "Requests generating now.",
        s.running.to_string(),
    );
    metric(
        "isobench_sim_requests_rejected_total",
        "counter",
        "Requests rejected (400/404/503).",
        s.rejected.to_string(),
    );
    metric(
        "isobench_sim_prompt_tokens_total",
        "counter",
        "Prompt tokens received.",
        s.prompt_tokens.to_string(),
    );
    metric(
        "isobench_sim_generation_tokens_total",
        "counter",
        "Tokens generated.",
        s.generation_tokens.to_string(),
    );
    metric(
        "isobench_sim_connections_total",
        "counter",
        "TCP connections accepted.",
        s.connections.to_string(),
    );
    metric(
        "isobench_sim_speed_factor",
        "gauge",
        "This process's speed factor.",
        shared.speed_factor.to_string(),
    );
    out.push_str("# HELP isobench_sim_faults_total Faults injected.\n# TYPE isobench_sim_faults_total counter\n");
    for (kind, value) in [
        ("http_500", s.http_500),
        ("disconnect", s.disconnects),
        ("malformed", s.malformed),
        ("stall", s.stalls),
    ] {
        out.push_str(&format!(
            "isobench_sim_faults_total{{kind=\"{kind}\"}} {value}\n"
        ));
    }
    let label = format!("{{model_name=\"{model}\"}}");
    out.push_str(&format!(
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{label} {}\n\
         # TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{label} {}\n\
         # TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{label} {}\n",
        s.running, s.prompt_tokens, s.generation_tokens
    ));
    // The rest of what isobench's telemetry maps (docs/telemetry.md), from exact counters.
    out.push_str(&format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{label} {}\n\
         # TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total{label} 0\n\
         # TYPE vllm:request_success_total counter\nvllm:request_success_total{label} {}\n",
        shared.stats.waiting.load(Ordering::Relaxed),
        s.completed
    ));
    shared.stats.ttft.exposition(
        "vllm:time_to_first_token_seconds",
        &format!("model_name=\"{model}\""),
        &mut out,
    );
    out
}
