//! The streaming client: one keep-alive pool, one tokio task per request (so parsing spreads
//! over every core and one slow stream never delays another's timestamps), SSE parsed from raw
//! bytes with the arrival time taken before any parsing.
//!
//! Dispatch has two stages. The *arrival* stage releases requests at their times (all at once
//! for rate inf; otherwise gamma-distributed offsets drawn up front and slept to as absolute
//! times from the run's start). The *launch* stage takes released requests in FIFO order, waits
//! for a concurrency slot, and spawns the request. Each request records when it was scheduled,
//! released, sent and finished.
use bytes::Bytes;
use rand::SeedableRng;
use rand_distr::Distribution;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::audit::{AuditInputs, SchedulerProbe, audit, process_cpu_time};
use super::dataset::Dataset;
use super::record::{ErrorKind, RequestRecord};
use super::result::BenchResult;
use super::sse::{SseEvent, SseParser};
use super::{
    Backend, ClientConfig, LoadgenError, MAX_RESPONSE_EVENTS, MAX_RESPONSE_TEXT_BYTES, Progress,
    RunConfig,
};

/// Connections kept open beyond the concurrency. A finished request's connection returns to
/// the pool a moment after its body ends (hyper's connection task does it), and a request that
/// finds no idle connection in that moment opens a new one: without spares ~15 % of requests at
/// high request rates opened connections — load on the server under test that vLLM's client
/// does not cause.
pub(crate) fn pool_with_spares(concurrency: usize) -> usize {
    concurrency.max(1) + (concurrency / 4).min(64)
}

/// Bytes of a non-200 body kept in the error message.
const ERROR_BODY_LIMIT: usize = 1024;

/// One keep-alive pool, reused for warm-up and every measured run of one server session.
#[derive(Clone)]
pub struct LoadClient {
    http: reqwest::Client,
    config: ClientConfig,
    /// `Authorization: Bearer <key>` only when asked for by name ([`LoadClient::with_api_key_env`]);
    /// marked sensitive, never logged.
    auth: Option<HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmupSummary {
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    /// Extra one-token requests sent at once to open the remaining pool connections.
    pub connections_prewarmed: usize,
    pub first_error: Option<String>,
}

/// What the request stage needs, shared by all request tasks of a run.
struct RunShared {
    http: reqwest::Client,
    auth: Option<HeaderValue>,
    url: String,
    request_timeout: Duration,
    t0: Instant,
    deadline: Instant,
    progress: Option<Arc<Progress>>,
}

struct RequestSpec {
    body: Bytes,
    prompt_tokens_client: Option<u32>,
    expected_events: usize,
}

impl LoadClient {
    pub fn new(config: ClientConfig) -> Result<LoadClient, LoadgenError> {
        let base = reqwest::Url::parse(&config.base_url).map_err(|err| {
            LoadgenError::Config(format!("base URL `{}`: {err}", config.base_url))
        })?;
        if base.scheme() != "http" {
            return Err(LoadgenError::Config(format!(
                "base URL `{}`: only http:// is supported (servers under test are plain HTTP)",
                config.base_url
            )));
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool_with_spares(config.pool_size))
            .tcp_nodelay(true)
            .http1_only()
            // A benchmark must reach the server directly, whatever HTTP_PROXY says.
            .no_proxy()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|err| LoadgenError::Client(err.to_string()))?;
        // No credential unless one is asked for by name: the server under test may be an
        // agent-patched build, and an ambient OPENAI_API_KEY is not meant for it.
        Ok(LoadClient {
            http,
            config,
            auth: None,
        })
    }

    /// Sends `Authorization: Bearer $<name>` with every request. The variable must be set and
    /// non-empty; errors name the variable, never its value.
    pub fn with_api_key_env(mut self, name: &str) -> Result<LoadClient, LoadgenError> {
        let key = std::env::var(name).map_err(|_| {
            LoadgenError::Config(format!(
                "the API key variable `{name}` is not set (or not valid UTF-8)"
            ))
        })?;
        if key.trim().is_empty() {
            return Err(LoadgenError::Config(format!(
                "the API key variable `{name}` is empty"
            )));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            LoadgenError::Config(format!(
                "the API key in `{name}` has characters an HTTP header cannot carry"
            ))
        })?;
        value.set_sensitive(true);
        self.auth = Some(value);
        Ok(self)
    }

    /// Whether requests carry an `Authorization` header.
    pub fn sends_api_key(&self) -> bool {
        self.auth.is_some()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{}{}", self.config.base_url.trim_end_matches('/'), endpoint)
    }

    /// The first model the server lists on `/v1/models` (what vLLM's client does without --model).
    pub async fn first_served_model(&self) -> Result<String, LoadgenError> {
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Model>,
        }
        #[derive(Deserialize)]
        struct Model {
            id: String,
        }
        let url = self.url("/v1/models");
        let mut request = self.http.get(&url).timeout(Duration::from_secs(30));
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|err| LoadgenError::Client(format!("GET {url}: {}", describe(&err))))?;
        let body = response
            .bytes()
            .await
            .map_err(|err| LoadgenError::Client(format!("GET {url}: {}", describe(&err))))?;
        let models: Models = serde_json::from_slice(&body)
            .map_err(|err| LoadgenError::Client(format!("GET {url}: not a model list: {err}")))?;
        models
            .data
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| LoadgenError::Client(format!("{url} lists no model")))
    }

    /// Sends the dataset's first prompt until one request succeeds (vLLM's "initial test run").
    pub async fn wait_until_ready(
        &self,
        ds: &Dataset,
        run: &RunConfig,
        timeout: Duration,
    ) -> Result<(), LoadgenError> {
        let started = Instant::now();
        let spec = build_spec(run, ds, 0);
        loop {
            let shared = self.run_shared(run, Instant::now(), Duration::from_secs(60), None);
            let record = execute_request(Arc::new(shared), &spec, 0, 0.0, None).await;
            if record.success() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(LoadgenError::NotReady {
                    waited_s: waited.as_secs_f64(),
                    last_error: record.error_message().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_secs(1).min(timeout - waited)).await;
        }
    }

    fn run_shared(
        &self,
        run: &RunConfig,
        t0: Instant,
        timeout: Duration,
        progress: Option<Arc<Progress>>,
    ) -> RunShared {
        RunShared {
            http: self.http.clone(),
            auth: self.auth.clone(),
            url: self.url(&run.endpoint),
            request_timeout: self.config.request_timeout,
            t0,
            // A limit beyond any run (e.g. Duration::MAX) must not overflow the clock.
            deadline: t0
                .checked_add(timeout)
                .unwrap_or(t0 + Duration::from_secs(100 * 365 * 86_400)),
            progress,
        }
    }

    /// `n` requests (the dataset's prompts, cycled) at the run's concurrency, not measured; then,
    /// if the concurrency exceeds `n`, one-token requests all at once so the measured run finds
    /// every connection it needs already open.
    pub async fn warmup(
        &self,
        ds: &Dataset,
        n: usize,
        run: &RunConfig,
    ) -> Result<WarmupSummary, LoadgenError> {
        run.validate()?;
        if n == 0 {
            return Ok(WarmupSummary {
                requests: 0,
                completed: 0,
                failed: 0,
                duration_s: 0.0,
                connections_prewarmed: 0,
                first_error: None,
            });
        }
        let started = Instant::now();
        let specs: Vec<RequestSpec> = (0..n)
            .map(|i| build_spec(run, ds, i % ds.requests.len()))
            .collect();
        let concurrency = run.max_concurrency.unwrap_or(n).min(n);
        let schedule = Schedule::all_at_once(specs.len());
        let records = self
            .drive(run, specs, schedule, Some(concurrency), None)
            .await
            .0;
        let completed = records.iter().filter(|r| r.success()).count();
        let first_error = records
            .iter()
            .find(|r| !r.success())
            .map(|r| r.error_message().to_string());
        if completed == 0 {
            return Err(LoadgenError::WarmupFailed {
                attempted: n,
                first_error: first_error.unwrap_or_else(|| "no request succeeded".into()),
            });
        }
        let pool_target =
            pool_with_spares(run.max_concurrency.unwrap_or(0).min(self.config.pool_size));
        let mut prewarmed = 0;
        if pool_target > concurrency {
            let tiny: Vec<RequestSpec> = (0..pool_target).map(|_| tiny_spec(run)).collect();
            let schedule = Schedule::all_at_once(tiny.len());
            self.drive(run, tiny, schedule, None, None).await;
            prewarmed = pool_target;
        }
        Ok(WarmupSummary {
            requests: n,
            completed,
            failed: n - completed,
            duration_s: started.elapsed().as_secs_f64(),
            connections_prewarmed: prewarmed,
            first_error,
        })
    }

    /// One measured run: over the whole dataset, or for a time window ([`RunConfig::timed`]).
    /// Always returns what it measured: a run that hits its timeout comes back at the deadline
    /// with the open requests marked failed (see [`BenchResult::outcome`]). Errors are for
    /// settings that cannot run at all.
    pub async fn run(
        &self,
        ds: &Dataset,
        run: &RunConfig,
        progress: Option<Arc<Progress>>,
    ) -> Result<BenchResult, LoadgenError> {
        run.validate()?;
        if ds.requests.is_empty() {
            return Err(LoadgenError::Config("the dataset has no requests".into()));
        }
        let n = ds.requests.len();
        let specs: Vec<RequestSpec> = (0..n).map(|i| build_spec(run, ds, i)).collect();
        let schedule = match &run.timed {
            None => Schedule {
                count: n,
                offsets: arrival_offsets(n, run.request_rate, run.burstiness, run.seed),
                send_until: None,
            },
            Some(timed) => {
                let send_for = timed.ramp_up.saturating_add(timed.duration);
                // At a finite rate, arrivals drawn up front for the whole sending time (and a
                // little more: the scaling puts the last one at count/rate); at rate inf, a
                // closed loop that sends whenever a slot frees.
                let count = if run.request_rate.is_finite() {
                    (run.request_rate * send_for.as_secs_f64()).ceil() as usize + 1
                } else {
                    usize::MAX
                };
                Schedule {
                    count,
                    offsets: arrival_offsets(count, run.request_rate, run.burstiness, run.seed),
                    send_until: Some(send_for),
                }
            }
        };
        if let Some(progress) = &progress {
            // A timed run's total is not known in advance: 0 ("open").
            let total = if run.timed.is_some() { 0 } else { n };
            progress.total.store(total, Ordering::Relaxed);
        }
        let started_at = std::time::SystemTime::now();
        let probe = SchedulerProbe::start();
        let cpu_before = process_cpu_time();
        let (records, t0) = self
            .drive(run, specs, schedule, run.max_concurrency, progress)
            .await;
        let wall = t0.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_before);
        let probe = probe.finish().await;

        let timed_out = records.iter().any(|r| {
            matches!(
                r.error.as_ref().map(|e| e.kind),
                Some(ErrorKind::RunTimeout | ErrorKind::NotSent)
            )
        });
        let self_audit = audit(AuditInputs {
            records: &records,
            requested_rate: run.request_rate,
            probe,
            cpu,
            wall_s: wall.as_secs_f64(),
        });
        if let Some(timed) = &run.timed {
            return Ok(BenchResult::timed(
                run,
                ds,
                &self.config,
                records,
                *timed,
                timed_out,
                self_audit,
                started_at,
            ));
        }
        // vLLM's duration: from the start of dispatch to the end of the last request.
        let duration_s = records
            .iter()
            .filter_map(|r| r.finished_at_s)
            .fold(0.0, f64::max);
        Ok(BenchResult::new(
            run,
            ds,
            &self.config,
            records,
            duration_s,
            timed_out,
            self_audit,
            started_at,
        ))
    }

    /// Releases, queues and runs the scheduled requests (request `i` is `specs[i % len]`);
    /// returns their records in order and the start instant.
    async fn drive(
        &self,
        run: &RunConfig,
        specs: Vec<RequestSpec>,
        schedule: Schedule,
        max_concurrency: Option<usize>,
        progress: Option<Arc<Progress>>,
    ) -> (Vec<RequestRecord>, Instant) {
        let Schedule {
            count: n,
            offsets,
            send_until,
        } = schedule;
        let specs = Arc::new(specs);
        let spec_of = |index: usize| index % specs.len();
        let t0 = Instant::now();
        let shared = Arc::new(self.run_shared(run, t0, run.run_timeout, progress));
        let deadline = shared.deadline;
        // Timed runs send nothing from here on; fixed-count runs send until the deadline.
        let stop_sending = send_until
            .and_then(|d| t0.checked_add(d))
            .map_or(deadline, |s| s.min(deadline));

        // Arrival stage: a separate task, so waiting for concurrency never delays a release.
        // Fixed-count runs release into a queue that holds every request; a timed run at rate
        // inf releases one at a time (a closed loop: the next is released as the last one gets
        // its slot), so the queue never grows without end.
        let capacity = if send_until.is_some() && offsets.is_none() {
            1
        } else {
            n.clamp(1, 1 << 20)
        };
        let (released_tx, mut released_rx) = mpsc::channel::<(usize, f64)>(capacity);
        let arrivals = {
            let offsets = offsets.clone();
            tokio::spawn(async move {
                for index in 0..n {
                    if let Some(offsets) = &offsets {
                        // A tiny rate gives offsets beyond any clock (even `inf`), where
                        // `from_secs_f64` and `Instant + Duration` would panic: past the deadline.
                        let due = Duration::try_from_secs_f64(offsets[index])
                            .ok()
                            .and_then(|d| t0.checked_add(d));
                        let Some(due) = due.filter(|due| *due <= stop_sending) else {
                            break;
                        };
                        tokio::time::sleep_until(due).await;
                    }
                    let released_at = t0.elapsed().as_secs_f64();
                    if released_tx.send((index, released_at)).await.is_err() {
                        break;
                    }
                }
            })
        };

        // Launch stage: FIFO through the concurrency limit. Requests are released and launched
        // in index order, so `tasks[i]` and `released[i]` belong to request `i`.
        let semaphore = max_concurrency.map(|limit| Arc::new(Semaphore::new(limit)));
        let mut tasks: Vec<tokio::task::JoinHandle<RequestRecord>> = Vec::new();
        let mut released: Vec<f64> = Vec::new();
        while let Ok(Some((index, released_at))) =
            tokio::time::timeout_at(stop_sending, released_rx.recv()).await
        {
            debug_assert_eq!(index, released.len());
            released.push(released_at);
            let permit = match &semaphore {
                Some(semaphore) => {
                    match tokio::time::timeout_at(stop_sending, semaphore.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(permit)) => Some(permit),
                        _ => break,
                    }
                }
                None => None,
            };
            if Instant::now() >= stop_sending {
                break; // a slot that frees at the deadline is no reason to start a request
            }
            let shared = shared.clone();
            let specs = specs.clone();
            let spec = spec_of(index);
            let scheduled = offsets.as_ref().map_or(0.0, |o| o[index]);
            tasks.push(tokio::spawn(async move {
                let record =
                    execute_request(shared, &specs[spec], index, scheduled, Some(released_at))
                        .await;
                drop(permit); // the slot frees when the request is done
                record
            }));
        }
        arrivals.abort();

        let launched = tasks.len();
        // A timed run's unsent requests were never part of it; a fixed-count run's were.
        let unsent = if send_until.is_some() {
            0
        } else {
            n - launched
        };
        let mut records = Vec::with_capacity(launched + unsent);
        for (index, task) in tasks.into_iter().enumerate() {
            let record = task.await.unwrap_or_else(|err| panicked_record(index, err));
            records.push(record);
        }
        for index in launched..launched + unsent {
            let scheduled = offsets.as_ref().map_or(0.0, |o| o[index]);
            let mut record = RequestRecord::new(
                index,
                scheduled,
                specs[spec_of(index)].prompt_tokens_client,
                0,
            );
            record.released_at_s = released.get(index).copied();
            record.fail(
                ErrorKind::NotSent,
                "not sent: the run's timeout was reached first",
            );
            if let Some(progress) = &shared.progress {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
            records.push(record);
        }
        (records, t0)
    }
}

/// How many requests a run sends, and when.
struct Schedule {
    /// Requests at most.
    count: usize,
    /// Release times (s from the start) at a finite rate, one per request; None: all at once.
    offsets: Option<Vec<f64>>,
    /// Timed runs: nothing is sent after this long, and what was not sent leaves no record
    /// (a fixed-count run records it as `not_sent`).
    send_until: Option<Duration>,
}

impl Schedule {
    fn all_at_once(count: usize) -> Schedule {
        Schedule {
            count,
            offsets: None,
            send_until: None,
        }
    }
}

fn panicked_record(index: usize, err: tokio::task::JoinError) -> RequestRecord {
    let mut record = RequestRecord {
        index,
        ..RequestRecord::default()
    };
    record.fail(
        ErrorKind::Connect,
        format!("internal error: request task failed: {err}"),
    );
    record
}

/// Sends one request and reads its stream; every outcome ends up in the returned record.
async fn execute_request(
    shared: Arc<RunShared>,
    spec: &RequestSpec,
    index: usize,
    scheduled_at_s: f64,
    released_at_s: Option<f64>,
) -> RequestRecord {
    let mut record = RequestRecord::new(
        index,
        scheduled_at_s,
        spec.prompt_tokens_client,
        spec.expected_events,
    );
    record.released_at_s = released_at_s;
    let sent = Instant::now();
    record.sent_at_s = Some((sent - shared.t0).as_secs_f64());
    if let Some(progress) = &shared.progress {
        progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    let exchange = stream_response(&shared, spec.body.clone(), &mut record, sent);
    // One timer for both limits (a second Timeout layer would be polled on every read).
    let request_deadline = sent
        .checked_add(shared.request_timeout)
        .unwrap_or(shared.deadline);
    if tokio::time::timeout_at(request_deadline.min(shared.deadline), exchange)
        .await
        .is_err()
    {
        if request_deadline < shared.deadline {
            let limit = shared.request_timeout.as_secs_f64();
            record.fail(
                ErrorKind::RequestTimeout,
                format!("request timed out after {limit:.1} s"),
            );
        } else {
            record.fail(
                ErrorKind::RunTimeout,
                "cut off: the run's timeout was reached",
            );
        }
    }
    record.finished_at_s = Some(shared.t0.elapsed().as_secs_f64());
    if let Some(progress) = &shared.progress {
        if record.success() {
            progress.completed.fetch_add(1, Ordering::Relaxed);
            let tokens = record
                .completion_tokens_server
                .unwrap_or(record.content_events);
            progress
                .output_tokens
                .fetch_add(u64::from(tokens), Ordering::Relaxed);
        } else {
            progress.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    record
}

async fn stream_response(
    shared: &RunShared,
    body: Bytes,
    record: &mut RequestRecord,
    sent: Instant,
) {
    let mut request = shared
        .http
        .post(&shared.url)
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(auth) = &shared.auth {
        request = request.header(AUTHORIZATION, auth.clone());
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            record.fail(ErrorKind::Connect, describe(&err));
            return;
        }
    };
    record.first_byte_s = Some(sent.elapsed().as_secs_f64());
    let status = response.status();
    record.http_status = Some(status.as_u16());
    if status != reqwest::StatusCode::OK {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_LIMIT - body.len())]);
            if body.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
        record.fail(
            ErrorKind::HttpStatus,
            format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        );
        return;
    }
    let mut parser = SseParser::new();
    let mut sink = EventSink {
        record,
        sent,
        arrived: sent,
        stop: false,
    };
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                // The arrival time of every event in this read, taken before any parsing.
                sink.arrived = Instant::now();
                parser.feed(&bytes, &mut |event| sink.on_event(event));
                if sink.stop {
                    break;
                }
            }
            Ok(None) => {
                parser.finish(&mut |event| sink.on_event(event));
                break;
            }
            Err(err) => {
                sink.record.fail(
                    ErrorKind::Disconnected,
                    format!("stream broke off: {}", describe(&err)),
                );
                break;
            }
        }
    }
    if record.error.is_none() && record.ttft_s.is_none() {
        record.fail(
            ErrorKind::NoChoices,
            "Never received a valid chunk to calculate TTFT.",
        );
    }
}

/// Applies parsed events to the record.
struct EventSink<'a> {
    record: &'a mut RequestRecord,
    sent: Instant,
    arrived: Instant,
    /// A fatal event: stop reading (the connection is dropped, not reused).
    stop: bool,
}

impl EventSink<'_> {
    fn on_event(&mut self, event: SseEvent<'_>) {
        if self.stop {
            return;
        }
        let data = match event {
            SseEvent::Done => {
                self.record.done_received = true;
                return;
            }
            SseEvent::TooLarge(limit) => {
                self.too_large(format!("an SSE line or event exceeded {} MiB", limit >> 20));
                return;
            }
            SseEvent::InvalidUtf8(_) => {
                self.record
                    .fail(ErrorKind::Malformed, "SSE event is not valid UTF-8");
                self.stop = true;
                return;
            }
            SseEvent::Data(data) => data,
        };
        let chunk: StreamChunk<'_> = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(err) => {
                let shown: String = data.chars().take(120).collect();
                self.record.fail(
                    ErrorKind::Malformed,
                    format!("SSE event is not JSON ({err}): {shown}"),
                );
                self.stop = true;
                return;
            }
        };
        if let Some(error) = chunk.error {
            self.record.fail(
                ErrorKind::StreamError,
                format!("server error in stream: {error}"),
            );
            self.stop = true;
            return;
        }
        if chunk.choices.present {
            if self.record.event_times_s.len() >= MAX_RESPONSE_EVENTS {
                self.too_large(format!(
                    "more than {MAX_RESPONSE_EVENTS} choice-bearing events"
                ));
                return;
            }
            let at = (self.arrived - self.sent).as_secs_f64();
            if self.record.ttft_s.is_none() {
                self.record.ttft_s = Some(at);
            }
            self.record.event_times_s.push(at);
            if let Some(text) = chunk.choices.text.as_deref()
                && !text.is_empty()
            {
                if self.record.first_content_s.is_none() {
                    self.record.first_content_s = Some(at);
                }
                if self.record.generated_text.len() + text.len() > MAX_RESPONSE_TEXT_BYTES {
                    self.too_large(format!(
                        "more than {} MiB of generated text",
                        MAX_RESPONSE_TEXT_BYTES >> 20
                    ));
                    return;
                }
                self.record.content_events += 1;
                self.record.generated_text.push_str(text);
            }
        }
        if let Some(usage) = chunk.usage {
            if let Some(completion) = usage.completion_tokens {
                self.record.completion_tokens_server = Some(completion);
            }
            if let Some(prompt) = usage.prompt_tokens {
                self.record.prompt_tokens_server = Some(prompt);
            }
        }
    }
}

impl EventSink<'_> {
    /// Past a size limit: fail and stop reading (the connection is dropped).
    fn too_large(&mut self, what: String) {
        self.record.fail(
            ErrorKind::ResponseTooLarge,
            format!("response too large: {what}; stopped reading"),
        );
        self.stop = true;
    }
}

/// The few fields of a streamed chunk that matter, borrowed from the event text.
#[derive(Deserialize)]
struct StreamChunk<'a> {
    #[serde(default, borrow)]
    choices: FirstChoice<'a>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

/// `choices`: whether it is non-empty and the first choice's text; the rest is skipped without
/// building a Vec.
#[derive(Default)]
struct FirstChoice<'a> {
    present: bool,
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = FirstChoice<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of choices or null")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(FirstChoice::default())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(FirstChoice::default())
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Self::Value, S::Error> {
                let Some(first) = seq.next_element::<Choice<'a>>()? else {
                    return Ok(FirstChoice::default());
                };
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                let text = first.delta.and_then(|d| d.content).or(first.text);
                Ok(FirstChoice {
                    present: true,
                    text,
                })
            }
        }
        de.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// reqwest's message plus its causes (the useful part is usually the innermost).
fn describe(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The request body, serialised once before the run (not in the hot path).
fn build_spec(run: &RunConfig, ds: &Dataset, index: usize) -> RequestSpec {
    let request = &ds.requests[index];
    let body = match (&request.messages, &ds.extra_body) {
        (None, None) => request_body(run, &request.prompt, request.output_len),
        (messages, extra) => {
            let mut body = body_value(run, &request.prompt, request.output_len);
            if let (Some(messages), Backend::OpenAiChat) = (messages, run.backend) {
                body["messages"] = serde_json::json!(messages);
            }
            // Per-request options (`load.extra_body`); keys isobench sets are refused upstream.
            for (key, value) in extra.iter().flat_map(|e| e.iter()) {
                body[key] = value.clone();
            }
            Bytes::from(body.to_string())
        }
    };
    RequestSpec {
        body,
        prompt_tokens_client: request.prompt_len,
        // Room for every token as its own event plus the role chunk; no growth while streaming.
        expected_events: request.output_len as usize + 2,
    }
}

fn tiny_spec(run: &RunConfig) -> RequestSpec {
    RequestSpec {
        body: request_body(run, "Hi", 1),
        prompt_tokens_client: None,
        expected_events: 4,
    }
}

/// The JSON body, as in `vllm bench serve` plus `max_tokens` for servers that do not know
/// `max_completion_tokens` and an explicit `temperature`.
pub(crate) fn request_body(run: &RunConfig, prompt: &str, max_tokens: u32) -> Bytes {
    Bytes::from(body_value(run, prompt, max_tokens).to_string())
}

fn body_value(run: &RunConfig, prompt: &str, max_tokens: u32) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": run.model,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": run.temperature,
    });
    match run.backend {
        Backend::OpenAiChat => {
            body["messages"] = serde_json::json!([{"role": "user", "content": prompt}]);
            body["max_completion_tokens"] = max_tokens.into();
        }
        Backend::OpenAi => body["prompt"] = prompt.into(),
    }
    if run.ignore_eos {
        body["ignore_eos"] = true.into();
    }
    body
}

/// Arrival offsets (s from the run's start) for a finite rate: gamma-distributed gaps with
/// shape `burstiness` and mean 1/rate, accumulated, then scaled so the last arrival is at
/// n / rate exactly (as vLLM does, so the realised rate does not wander with the seed).
pub(crate) fn arrival_offsets(n: usize, rate: f64, burstiness: f64, seed: u64) -> Option<Vec<f64>> {
    if !rate.is_finite() || n == 0 {
        return None;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut offsets = Vec::with_capacity(n);
    let mut t = 0.0;
    let gamma = rand_distr::Gamma::new(burstiness, 1.0 / (rate * burstiness)).ok();
    for _ in 0..n {
        t += match (&gamma, burstiness.is_finite()) {
            (Some(gamma), true) => gamma.sample(&mut rng),
            _ => 1.0 / rate,
        };
        offsets.push(t);
    }
    if t > 0.0 {
        let scale = (n as f64 / rate) / t;
        offsets.iter_mut().for_each(|o| *o *= scale);
    }
    Some(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_end_at_n_over_rate_and_are_poisson_like() {
        let offsets = arrival_offsets(2000, 50.0, 1.0, 7).unwrap();
        assert!((offsets.last().unwrap() - 40.0).abs() < 1e-9);
        assert!(offsets.windows(2).all(|w| w[1] >= w[0]));
        let gaps: Vec<f64> = std::iter::once(offsets[0])
            .chain(offsets.windows(2).map(|w| w[1] - w[0]))
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential gaps: coefficient of variation 1 (a fixed grid would give 0).
        let cv = var.sqrt() / mean;
        assert!((0.9..1.1).contains(&cv), "cv {cv}");
        // Burstiness 4: gamma shape 4, cv = 1/sqrt(4) = 0.5.
        let smooth = arrival_offsets(2000, 50.0, 4.0, 7).unwrap();
        let gaps: Vec<f64> = smooth.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let cv = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt()
            / mean;
        assert!((0.45..0.55).contains(&cv), "cv {cv}");
        assert_eq!(arrival_offsets(5, f64::INFINITY, 1.0, 0), None);
        assert_eq!(
            arrival_offsets(3, 2.0, f64::INFINITY, 0).unwrap(),
            vec![0.5, 1.0, 1.5]
        );
    }

    #[test]
    fn message_lists_and_extra_body_reach_the_body() {
        let run = RunConfig {
            model: "tiny".into(),
            ..RunConfig::default()
        };
        let mut ds = crate::loadgen::build_dataset(
            &crate::loadgen::DatasetConfig {
                num_prompts: 1,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let history = vec![
            super::super::ChatMessage {
                role: "user".into(),
                content: "a".into(),
            },
            super::super::ChatMessage {
                role: "assistant".into(),
                content: "b".into(),
            },
        ];
        ds.requests[0].messages = Some(history);
        let extra = serde_json::json!({"top_k": 1, "response_format": {"type": "json_object"}});
        ds.extra_body = extra.as_object().cloned().map(Arc::new);
        let body: serde_json::Value =
            serde_json::from_slice(&build_spec(&run, &ds, 0).body).unwrap();
        assert_eq!(body["messages"][1]["content"], "b");
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
        assert_eq!(body["top_k"], 1);
        assert_eq!(body["response_format"]["type"], "json_object");
        assert_eq!(
            body["max_tokens"], ds.requests[0].output_len,
            "isobench's own fields stay"
        );
    }

    #[test]
    fn request_bodies_match_the_backend() {
        let run = RunConfig {
            model: "tiny".into(),
            ..RunConfig::default()
        };
        let chat: serde_json::Value = serde_json::from_slice(&request_body(&run, "hi", 7)).unwrap();
        assert_eq!(chat["messages"][0]["content"], "hi");
        assert_eq!(chat["messages"][0]["role"], "user");
        assert_eq!(
            (
                chat["max_tokens"].as_u64(),
                chat["max_completion_tokens"].as_u64()
            ),
            (Some(7), Some(7))
        );
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["ignore_eos"], true);
        assert_eq!(chat["temperature"], 0.0);
        let run = RunConfig {
            backend: Backend::OpenAi,
            ignore_eos: false,
            ..run
        };
        let completion: serde_json::Value =
            serde_json::from_slice(&request_body(&run, "hi", 7)).unwrap();
        assert_eq!(completion["prompt"], "hi");
        assert!(completion.get("messages").is_none() && completion.get("ignore_eos").is_none());
    }

    fn sink_over(events: &[&str]) -> RequestRecord {
        let mut record = RequestRecord::new(0, 0.0, None, 8);
        let sent = Instant::now();
        let mut sink = EventSink {
            record: &mut record,
            sent,
            arrived: sent,
            stop: false,
        };
        for (i, data) in events.iter().enumerate() {
            sink.arrived = sent + Duration::from_millis(10 * (i as u64 + 1));
            let event = if *data == "[DONE]" {
                SseEvent::Done
            } else {
                SseEvent::Data(data)
            };
            sink.on_event(event);
        }
        record
    }

    #[test]
    fn events_become_ttft_itl_latency_and_usage() {
        let record = sink_over(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"b\u00e9"}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":2}}"#,
            "[DONE]",
        ]);
        assert!(record.success());
        assert_eq!(record.ttft_s, Some(0.010), "the role-only chunk counts");
        assert_eq!(record.first_content_s, Some(0.020));
        assert_eq!(record.event_times_s, vec![0.010, 0.020, 0.030]);
        assert!(
            (record.latency_s() - 0.030).abs() < 1e-12,
            "the usage chunk does not extend latency"
        );
        assert_eq!(
            (record.prompt_tokens_server, record.completion_tokens_server),
            (Some(30), Some(2))
        );
        assert_eq!(record.generated_text, "abé");
        assert!(record.done_received);
    }

    #[test]
    fn completions_text_and_bad_events() {
        let record = sink_over(&[r#"{"choices":[{"index":0,"text":"x"},{"index":1,"text":"y"}]}"#]);
        assert_eq!(
            (record.generated_text.as_str(), record.content_events),
            ("x", 1)
        );
        let record = sink_over(&[r#"{"choices":[{"delta":{"content":"a"}}]}"#, "{not json"]);
        assert_eq!(record.error.as_ref().unwrap().kind, ErrorKind::Malformed);
        assert!(!record.success());
        let record = sink_over(&[r#"{"error":{"message":"boom"}}"#]);
        assert_eq!(record.error.as_ref().unwrap().kind, ErrorKind::StreamError);
        let record = sink_over(&[r#"{"choices":null,"usage":{"completion_tokens":3}}"#]);
        assert_eq!(
            (record.ttft_s, record.completion_tokens_server),
            (None, Some(3))
        );
    }
}
