//! Hostile servers against the real client over real sockets: a tiny HTTP/1.1 server in the test
//! that answers one request with an endless `data:` line or an endless stream of valid chunks
//! and every other request normally, or records the `Authorization` header it receives.
//! Memory must stay bounded, the hostile request must fail as `response_too_large`, the others
//! must still be measured, and no credential may be sent unless asked for by name.
mod loadgen_support;

use isobench::loadgen::{
    ClientConfig, ErrorKind, LoadClient, MAX_EVENT_BYTES, MAX_RESPONSE_TEXT_BYTES, RunConfig,
};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with the first request it receives (every later one is answered with
/// a short, valid stream).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Hostile {
    /// `data: {"choices":[{"delta":{"content":"aaaa…` without end.
    EndlessLine,
    /// Valid chunks of 1 kB of content each, without end.
    EndlessChunks,
    /// Valid chunks with empty content (timestamps only), without end.
    EndlessEmptyChunks,
    /// Nobody: every request is answered normally.
    None,
}

struct Server {
    base_url: String,
    /// The `Authorization` header of each request, in arrival order.
    auth: Arc<Mutex<Vec<Option<String>>>>,
    /// Bytes written to the hostile request's connection before the client dropped it.
    hostile_bytes: Arc<AtomicUsize>,
}

async fn serve(hostile: Hostile) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let auth = Arc::new(Mutex::new(Vec::new()));
    let hostile_bytes = Arc::new(AtomicUsize::new(0));
    let count = Arc::new(AtomicUsize::new(0));
    let (a, h) = (auth.clone(), hostile_bytes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (auth, hostile_bytes, count) = (a.clone(), h.clone(), count.clone());
            tokio::spawn(async move {
                let _ = answer(socket, hostile, auth, hostile_bytes, count).await;
            });
        }
    });
    Server {
        base_url,
        auth,
        hostile_bytes,
    }
}

/// Reads one request (headers and a Content-Length body) and answers it; the connection closes
/// after the response, which ends the body for the client.
async fn answer(
    mut socket: TcpStream,
    hostile: Hostile,
    auth: Arc<Mutex<Vec<Option<String>>>>,
    hostile_bytes: Arc<AtomicUsize>,
    count: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    auth.lock().unwrap().push(header("authorization"));
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        )
        .await?;
    let first = count.fetch_add(1, Ordering::SeqCst) == 0;
    if !first || hostile == Hostile::None {
        let mut body = String::from(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        );
        for word in ["one", " two", " three"] {
            body.push_str(&format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\n"
            ));
        }
        body.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        socket.write_all(body.as_bytes()).await?;
        return socket.shutdown().await;
    }
    // The hostile answer: write until the client hangs up (a write error ends it).
    let block: Vec<u8> = match hostile {
        Hostile::EndlessLine => {
            socket
                .write_all(b"data: {\"choices\":[{\"delta\":{\"content\":\"")
                .await?;
            vec![b'a'; 64 * 1024]
        }
        Hostile::EndlessChunks => {
            let event = format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
                "b".repeat(1024)
            );
            event.repeat(64).into_bytes()
        }
        Hostile::EndlessEmptyChunks => "data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\n"
            .repeat(2048)
            .into_bytes(),
        Hostile::None => unreachable!(),
    };
    loop {
        socket.write_all(&block).await?;
        hostile_bytes.fetch_add(block.len(), Ordering::Relaxed);
    }
}

fn client(server: &Server, request_timeout: Duration) -> LoadClient {
    LoadClient::new(ClientConfig {
        base_url: server.base_url.clone(),
        pool_size: 2,
        request_timeout,
    })
    .unwrap()
}

fn run_config() -> RunConfig {
    RunConfig {
        model: "hostile".into(),
        max_concurrency: Some(2),
        run_timeout: Duration::from_secs(120),
        ..RunConfig::default()
    }
}

/// This process's resident memory (kB), from /proc/self/status.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The memory checks measure this whole process: one hostile server at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs 6 requests (concurrency 2) of which the first meets `hostile`; returns the records and
/// how much the process's RSS grew meanwhile (MB).
async fn run_against(
    hostile: Hostile,
    request_timeout: Duration,
) -> (Vec<isobench::loadgen::RequestRecord>, f64, usize) {
    let server = serve(hostile).await;
    let ds = loadgen_support::dataset(16, 3, 6, None);
    // Without the limits the hostile request would run until this timeout, growing all along.
    let client = client(&server, request_timeout);
    let before = rss_kb();
    let peak = Arc::new(AtomicUsize::new(before as usize));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let result = client.run(&ds, &run_config(), None).await.unwrap();
    sampler.abort();
    peak.fetch_max(rss_kb() as usize, Ordering::Relaxed);
    let grown_mb = (peak.load(Ordering::Relaxed) as f64 - before as f64) / 1024.0;
    let sent = server.hostile_bytes.load(Ordering::Relaxed);
    eprintln!("{hostile:?}: RSS grew by {grown_mb:.1} MB; the server wrote {sent} bytes");
    (result.records, grown_mb, sent)
}

/// Exactly one request (whichever the server saw first) failed as `response_too_large`, naming
/// `what`; every other one was measured normally. Returns the failed one.
fn the_one_that_failed<'a>(
    records: &'a [isobench::loadgen::RequestRecord],
    what: &str,
) -> &'a isobench::loadgen::RequestRecord {
    let failed: Vec<_> = records.iter().filter(|r| !r.success()).collect();
    assert_eq!(failed.len(), 1, "one failed request: {failed:#?}");
    let hostile = failed[0];
    let error = hostile.error.as_ref().unwrap();
    assert_eq!(
        error.kind,
        ErrorKind::ResponseTooLarge,
        "{what}: {}",
        error.message
    );
    assert!(
        error.message.contains(what),
        "message names the limit: {}",
        error.message
    );
    for record in records.iter().filter(|r| r.index != hostile.index) {
        assert_eq!(record.generated_text, "one two three");
        assert_eq!(record.completion_tokens_server, Some(3));
    }
    assert!(hostile.generated_text.len() <= MAX_RESPONSE_TEXT_BYTES);
    hostile
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_data_line_fails_one_request_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let (records, grown_mb, sent) = run_against(Hostile::EndlessLine, Duration::from_secs(8)).await;
    // The line buffer is at most 4 MiB (plus one read); a generous bound for allocator slack.
    // (Without the limit it grew by ~350 MB here within the 8 s request timeout, and on.)
    assert!(grown_mb < 64.0, "RSS grew by {grown_mb:.0} MB");
    let hostile = the_one_that_failed(&records, "SSE line or event exceeded 4 MiB");
    // It stopped reading right after the limit, long before the request timeout.
    let finished = hostile.finished_at_s.unwrap();
    assert!(finished < 4.0, "gave up after {finished:.1} s");
    assert!(
        sent >= MAX_EVENT_BYTES,
        "the server sent {sent} bytes, at least the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_valid_chunks_stop_at_the_stored_text_limit() {
    let _serial = SERIAL.lock().await;
    let (records, grown_mb, sent) =
        run_against(Hostile::EndlessChunks, Duration::from_secs(8)).await;
    let hostile = the_one_that_failed(&records, "MiB of generated text");
    // Everything up to the limit was kept (1 kB per event), nothing beyond.
    assert!(
        hostile.generated_text.len() > MAX_RESPONSE_TEXT_BYTES - 1024,
        "{} bytes kept",
        hostile.generated_text.len()
    );
    assert!(sent > MAX_RESPONSE_TEXT_BYTES);
    assert!(grown_mb < 64.0, "RSS grew by {grown_mb:.0} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_empty_chunks_stop_at_the_event_limit() {
    let _serial = SERIAL.lock().await;
    let (records, grown_mb, _) =
        run_against(Hostile::EndlessEmptyChunks, Duration::from_secs(120)).await;
    let hostile = the_one_that_failed(&records, "choice-bearing events");
    assert_eq!(
        hostile.event_times_s.len(),
        isobench::loadgen::MAX_RESPONSE_EVENTS
    );
    assert!(grown_mb < 64.0, "RSS grew by {grown_mb:.0} MB");
}

const SECRET: &str = "sk-isobench-test-4f1c9e";

fn bench(server: &Server, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_isobench"));
    command
        .args([
            "bench",
            "--base-url",
            &server.base_url,
            "--model",
            "hostile",
            "--random-input-len",
            "8",
            "--random-output-len",
            "3",
            "--num-prompts",
            "2",
            "--max-concurrency",
            "1",
            "--num-warmups",
            "0",
            "--ready-check-timeout-sec",
            "0",
            "--disable-tqdm",
        ])
        .args(extra)
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn sent_auth(server: &Server) -> Vec<Option<String>> {
    server.auth.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_is_sent_unless_asked_for_by_name() {
    // `isobench bench` with OPENAI_API_KEY in its environment: nothing is sent.
    let server = serve(Hostile::None).await;
    let out = bench(&server, &[], &[("OPENAI_API_KEY", SECRET)]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        sent_auth(&server),
        vec![None, None],
        "no Authorization header"
    );
    assert!(
        stderr.contains("--api-key-env OPENAI_API_KEY"),
        "says how to send it: {stderr}"
    );

    // Asked for by name: every request carries it, and the output never shows it.
    let server = serve(Hostile::None).await;
    let dir = tempfile::tempdir().unwrap();
    let out = bench(
        &server,
        &[
            "--api-key-env",
            "BENCH_KEY",
            "--save-result",
            "--save-detailed",
            "--result-dir",
            dir.path().to_str().unwrap(),
            "--result-filename",
            "r.json",
        ],
        &[("BENCH_KEY", SECRET), ("OPENAI_API_KEY", "sk-not-this-one")],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let bearer = Some(format!("Bearer {SECRET}"));
    assert_eq!(sent_auth(&server), vec![bearer.clone(), bearer]);
    let saved = std::fs::read_to_string(dir.path().join("r.json")).unwrap();
    for text in [&*stdout, &*stderr, &saved] {
        assert!(!text.contains(SECRET), "the key leaked: {text}");
    }

    // Asked for, but not set: a clear error naming the variable, before any request.
    let server = serve(Hostile::None).await;
    let out = bench(&server, &["--api-key-env", "BENCH_KEY_UNSET"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`BENCH_KEY_UNSET` is not set"), "{stderr}");
    assert!(sent_auth(&server).is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_client_sends_a_key_only_when_given_a_name() {
    let server = serve(Hostile::None).await;
    let ds = loadgen_support::dataset(8, 3, 2, None);
    let plain = client(&server, Duration::from_secs(10));
    assert!(!plain.sends_api_key());
    let result = plain.run(&ds, &run_config(), None).await.unwrap();
    assert_eq!(result.outcome(), isobench::loadgen::RunOutcome::Ok);
    // The variable this test reads is its own: no other test sets or reads it.
    // SAFETY: set before any thread of this test reads the environment through `with_api_key_env`.
    unsafe { std::env::set_var("ISOBENCH_HOSTILE_TEST_KEY", SECRET) };
    let keyed = client(&server, Duration::from_secs(10))
        .with_api_key_env("ISOBENCH_HOSTILE_TEST_KEY")
        .unwrap();
    assert!(keyed.sends_api_key());
    keyed.run(&ds, &run_config(), None).await.unwrap();
    let bearer = Some(format!("Bearer {SECRET}"));
    assert_eq!(sent_auth(&server), vec![None, None, bearer.clone(), bearer]);
    let Err(err) = client(&server, Duration::from_secs(10)).with_api_key_env("ISOBENCH_UNSET_9")
    else {
        panic!("an unset variable is an error")
    };
    assert!(err.to_string().contains("`ISOBENCH_UNSET_9` is not set"));
}
