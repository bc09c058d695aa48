//! Readiness polling with crash detection, the same for every runtime.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Runtime, ServerHandle, read_log_tail};
use crate::failure::{CrashCause, Failure, FailureClass};

/// How much of the log classification reads.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // A proxy from the environment must not sit between us and a local server.
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client without TLS or proxies always builds")
    })
}

pub(super) async fn wait_ready(
    runtime: &Runtime,
    handle: &ServerHandle,
    path: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<Duration, Failure> {
    let url = join_url(&handle.base_url, path);
    // Validation bounds `timeout`; saturating anyway, as an overflow here panics a session task.
    let now = Instant::now();
    let deadline = now
        .checked_add(timeout)
        .unwrap_or(now + crate::util::MAX_DURATION);
    let mut last_answer = String::from("no answer yet");
    loop {
        if let Some(code) = runtime.exited(handle).await {
            return Err(crashed(runtime, handle, code).await);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(startup_timeout(handle, timeout, &last_answer));
        }
        // A server that accepts but never answers must not hold us past the deadline.
        let per_request = interval.max(Duration::from_secs(2)).min(remaining);
        match client().get(&url).timeout(per_request).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                return Ok(handle.started_at.elapsed());
            }
            Ok(response) => last_answer = format!("HTTP {}", response.status().as_u16()),
            Err(err) if err.is_timeout() => last_answer = "request timed out".into(),
            Err(err) if err.is_connect() => last_answer = "connection refused".into(),
            Err(err) => last_answer = format!("request failed: {err}"),
        }
        let pause = interval.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

fn join_url(base_url: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A `crashed` failure for a server that exited with `code`, classified from its log.
pub(super) async fn crashed(runtime: &Runtime, handle: &ServerHandle, code: i64) -> Failure {
    if let Runtime::Docker(docker) = runtime {
        // The log stream may still be copying the last lines.
        docker
            .wait_logs_flushed(handle, Duration::from_secs(5))
            .await;
    }
    let tail = read_log_tail(&handle.log_path, LOG_TAIL_BYTES);
    let cause = CrashCause::from_log(Some(code), &tail);
    let mut failure = Failure::new(
        FailureClass::Crashed,
        format!(
            "server {} exited with code {code} before it was ready",
            handle.name
        ),
    );
    failure.cause = Some(cause);
    failure.sample_log_line = CrashCause::sample_line(&tail);
    failure.log_path = Some(handle.log_path.display().to_string());
    failure
}

fn startup_timeout(handle: &ServerHandle, timeout: Duration, last_answer: &str) -> Failure {
    let tail = read_log_tail(&handle.log_path, LOG_TAIL_BYTES);
    let mut failure = Failure::new(
        FailureClass::StartupTimeout,
        format!(
            "server {} not ready after {} (last answer: {last_answer})",
            handle.name,
            // Whole milliseconds: "2s 500ms", not nanosecond noise.
            humantime::format_duration(Duration::from_millis(timeout.as_millis() as u64))
        ),
    );
    failure.sample_log_line = tail
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect());
    failure.log_path = Some(handle.log_path.display().to_string());
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_with_exactly_one_slash() {
        assert_eq!(join_url("http://h:1", "/health"), "http://h:1/health");
        assert_eq!(join_url("http://h:1/", "health"), "http://h:1/health");
        assert_eq!(
            join_url("http://h:1/", "/v1/models"),
            "http://h:1/v1/models"
        );
    }
}
