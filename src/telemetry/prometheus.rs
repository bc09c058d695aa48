//! The server's Prometheus endpoint during a measurement: scraped at the window's start and
//! end (counter and histogram deltas) and periodically in between (gauges), with vLLM's metric
//! names mapped across versions.
//!
//! The text exposition format is parsed here rather than with the `prometheus-parse` crate:
//! its sample pattern takes metric names as `\w+`, so vLLM's `vllm:`-prefixed names do not
//! parse, and a label value holding `}` cuts the sample short; it also pulls `regex` and
//! `chrono` for a format of a dozen rules. This parser is strict: a line it cannot read is an
//! error naming the line, never a silently dropped sample.

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The series as Prometheus writes it (labels in their order): the raw file's keys.
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses the text exposition format (version 0.0.4, and OpenMetrics' `# EOF`). Comment lines
/// (`# HELP`, `# TYPE`, others) are skipped: the names say what a series is.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_sample(line).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?);
    }
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .char_indices()
        .find(|(_, c)| !is_name_char(*c))
        .map_or(line.len(), |(i, _)| i);
    let name = &line[..name_end];
    if !name.starts_with(is_name_start) {
        return Err(format!("no metric name at the start of `{line}`"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("`{value}` is not a sample value"))?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
        && ts.parse::<f64>().is_err()
    {
        return Err(format!("`{ts}` is not a timestamp"));
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected `{extra}` after the timestamp"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"}` → the labels and what follows the closing brace. Values may hold escaped
/// `\\`, `\"` and `\n`, and any other character (`}` and `,` included).
type Labels<'a> = (Vec<(String, String)>, &'a str);

fn parse_labels(mut s: &str) -> Result<Labels<'_>, String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let name_end = s
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(s.len(), |(i, _)| i);
        let name = &s[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("bad label name at `{s}`"));
        }
        s = s[name_end..].trim_start();
        s = s
            .strip_prefix("=\"")
            .ok_or_else(|| format!("label `{name}` has no quoted value"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label `{name}`'s value is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => {
                        return Err(format!(
                            "bad escape `\\{}` in label `{name}`",
                            other.map_or(String::new(), |(_, c)| c.to_string())
                        ));
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label `{name}`"));
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// What a mapped metric is, and so how a window summarises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic: the window's delta.
    Counter,
    /// Sampled: mean and max over the window's scrapes (summed over engines).
    Gauge,
    /// A fraction per engine: averaged over engines, then mean and max.
    Fraction,
    /// `_sum` and `_count` deltas → the window's mean.
    Histogram,
}

/// A metric isobench reads, and the names vLLM versions gave it (first found wins).
#[derive(Debug, Clone, Copy)]
pub struct Mapped {
    pub key: &'static str,
    pub kind: Kind,
    pub names: &'static [&'static str],
}

/// vLLM's metric names across versions: V0 (`gpu_`-prefixed cache metrics) and V1.
pub const VLLM_METRICS: &[Mapped] = &[
    Mapped {
        key: "kv_cache_usage",
        kind: Kind::Fraction,
        names: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    },
    Mapped {
        key: "requests_running",
        kind: Kind::Gauge,
        names: &["vllm:num_requests_running"],
    },
    Mapped {
        key: "requests_waiting",
        kind: Kind::Gauge,
        names: &["vllm:num_requests_waiting"],
    },
    Mapped {
        key: "preemptions",
        kind: Kind::Counter,
        names: &["vllm:num_preemptions_total", "vllm:num_preemptions"],
    },
    Mapped {
        key: "prefix_cache_queries",
        kind: Kind::Counter,
        names: &[
            "vllm:prefix_cache_queries_total",
            "vllm:gpu_prefix_cache_queries_total",
        ],
    },
    Mapped {
        key: "prefix_cache_hits",
        kind: Kind::Counter,
        names: &[
            "vllm:prefix_cache_hits_total",
            "vllm:gpu_prefix_cache_hits_total",
        ],
    },
    Mapped {
        key: "generation_tokens",
        kind: Kind::Counter,
        names: &["vllm:generation_tokens_total"],
    },
    Mapped {
        key: "prompt_tokens",
        kind: Kind::Counter,
        names: &["vllm:prompt_tokens_total"],
    },
    Mapped {
        key: "requests_finished",
        kind: Kind::Counter,
        names: &["vllm:request_success_total"],
    },
    Mapped {
        key: "ttft",
        kind: Kind::Histogram,
        names: &["vllm:time_to_first_token_seconds"],
    },
    Mapped {
        key: "queue_time",
        kind: Kind::Histogram,
        names: &["vllm:request_queue_time_seconds"],
    },
    Mapped {
        key: "e2e_latency",
        kind: Kind::Histogram,
        names: &["vllm:e2e_request_latency_seconds"],
    },
    Mapped {
        key: "inter_token_latency",
        kind: Kind::Histogram,
        names: &[
            "vllm:inter_token_latency_seconds",
            "vllm:time_per_output_token_seconds",
        ],
    },
];

/// One scrape's value of a mapped metric: a number, or a histogram's sum and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    Value(f64),
    Histogram { sum: f64, count: f64 },
}

/// The mapped metrics of one scrape: key → (the vLLM name found, its reading). Series of one
/// name are added over their labels (engines, finish reasons); a fraction is averaged.
pub fn map_vllm(samples: &[Sample]) -> BTreeMap<&'static str, (&'static str, Reading)> {
    let mut out = BTreeMap::new();
    for m in VLLM_METRICS {
        for name in m.names {
            if let Some(reading) = read(samples, name, m.kind) {
                out.insert(m.key, (*name, reading));
                break;
            }
        }
    }
    out
}

fn read(samples: &[Sample], name: &str, kind: Kind) -> Option<Reading> {
    fn of<'a>(samples: &'a [Sample], n: &str) -> impl Iterator<Item = &'a Sample> {
        let n = n.to_string();
        samples.iter().filter(move |s| s.name == n)
    }
    match kind {
        Kind::Histogram => {
            let sums: Vec<f64> = of(samples, &format!("{name}_sum"))
                .map(|s| s.value)
                .collect();
            let counts: Vec<f64> = of(samples, &format!("{name}_count"))
                .map(|s| s.value)
                .collect();
            (!counts.is_empty()).then(|| Reading::Histogram {
                sum: sums.iter().sum(),
                count: counts.iter().sum(),
            })
        }
        Kind::Fraction => {
            let v: Vec<f64> = of(samples, name).map(|s| s.value).collect();
            (!v.is_empty()).then(|| Reading::Value(v.iter().sum::<f64>() / v.len() as f64))
        }
        Kind::Counter | Kind::Gauge => {
            // prometheus_client exposes a counter `x` as `x_total` and, beside it, `x_created`
            // (a timestamp): only the named series count.
            let v: Vec<f64> = of(samples, name)
                .filter(|s| s.label("le").is_none())
                .map(|s| s.value)
                .collect();
            (!v.is_empty()).then(|| Reading::Value(v.iter().sum()))
        }
    }
}

/// Why a scrape gave nothing: the summary's `reason`.
async fn scrape(client: &reqwest::Client, url: &str) -> Result<Vec<Sample>, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let text = response
        .text()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    parse(&text).map_err(|e| format!("GET {url}: not the Prometheus text format: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One scrape, as the raw series file keeps it.
struct Scrape {
    t: f64,
    mapped: BTreeMap<&'static str, (&'static str, Reading)>,
}

/// Where and how often to scrape.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// The endpoint's full URL, e.g. `http://127.0.0.1:8000/metrics`.
    pub url: String,
    /// Gauge scrapes between the first and the last.
    pub interval: Duration,
    /// The raw series (JSONL: one line per scrape with every sample).
    pub raw_path: PathBuf,
}

/// Scrapes during a measured window: [`ServerMetricsRecorder::start`] at its start,
/// [`ServerMetricsRecorder::finish`] at its end.
pub struct ServerMetricsRecorder {
    inner: Result<Running, String>,
}

struct Running {
    client: reqwest::Client,
    config: ScrapeConfig,
    first: Scrape,
    stop: tokio::sync::oneshot::Sender<()>,
    ticks: tokio::task::JoinHandle<Ticks>,
}

#[derive(Default)]
struct Ticks {
    scrapes: Vec<Scrape>,
    failed: usize,
    last_error: Option<String>,
    raw: Option<std::io::BufWriter<std::fs::File>>,
    raw_error: Option<String>,
}

impl Ticks {
    fn write_raw(&mut self, t: f64, phase: &str, samples: &[Sample]) {
        let Some(raw) = self.raw.as_mut() else {
            return;
        };
        // The first and last scrape keep every series; the periodic ones leave out histogram
        // buckets (90 % of a vLLM page of ~39 kB: a minute at 1 Hz would otherwise write over
        // 2 MB per measurement), whose window deltas the first and last give.
        let series: serde_json::Map<String, Value> = samples
            .iter()
            .filter(|s| phase != "tick" || !s.name.ends_with("_bucket"))
            .map(|s| (s.series(), finite_or_text(s.value)))
            .collect();
        let line = json!({"t": t, "phase": phase, "samples": series});
        if let Err(e) = writeln!(raw, "{line}") {
            self.raw_error = Some(e.to_string());
            self.raw = None;
        }
    }
}

/// JSON has no infinities: `+Inf` buckets' bounds and NaN values are kept as their text.
fn finite_or_text(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("+Inf")
    } else {
        json!("-Inf")
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl ServerMetricsRecorder {
    /// Takes the first scrape now; a server that does not answer it (404, refused, not the
    /// format) has no server metrics for this window, with the reason.
    pub async fn start(config: ScrapeConfig) -> ServerMetricsRecorder {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                return ServerMetricsRecorder {
                    inner: Err(format!("HTTP client: {e}")),
                };
            }
        };
        let t = unix_now();
        let samples = match scrape(&client, &config.url).await {
            Ok(s) => s,
            Err(reason) => return ServerMetricsRecorder { inner: Err(reason) },
        };
        let mut ticks = Ticks {
            raw: std::fs::File::create(&config.raw_path)
                .map(std::io::BufWriter::new)
                .map_err(|e| format!("{}: {e}", config.raw_path.display()))
                .ok(),
            ..Ticks::default()
        };
        if ticks.raw.is_none() {
            ticks.raw_error = Some(format!("cannot create {}", config.raw_path.display()));
        }
        ticks.write_raw(t, "start", &samples);
        let first = Scrape {
            t,
            mapped: map_vllm(&samples),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let ticks = tokio::spawn(tick(client.clone(), config.clone(), ticks, stopped));
        ServerMetricsRecorder {
            inner: Ok(Running {
                client,
                config,
                first,
                stop,
                ticks,
            }),
        }
    }

    /// Takes the last scrape and summarises the window: the `isobench.telemetry.server` object.
    pub async fn finish(self) -> Value {
        let run = match self.inner {
            Ok(r) => r,
            Err(reason) => return super::absent(&reason),
        };
        let _ = run.stop.send(());
        let mut ticks = run.ticks.await.unwrap_or_default();
        let t = unix_now();
        let last = match scrape(&run.client, &run.config.url).await {
            Ok(samples) => {
                ticks.write_raw(t, "end", &samples);
                Scrape {
                    t,
                    mapped: map_vllm(&samples),
                }
            }
            Err(reason) => {
                return super::absent(&format!("the window's last scrape failed: {reason}"));
            }
        };
        if let Some(mut raw) = ticks.raw.take()
            && let Err(e) = raw.flush()
        {
            ticks.raw_error = Some(e.to_string());
        }
        let summary = summarise(&run.first, &ticks.scrapes, &last);
        let mut value = serde_json::to_value(summary).expect("plain data serialises");
        value["url"] = json!(run.config.url);
        value["failed_scrapes"] = json!(ticks.failed);
        if let Some(e) = ticks.last_error {
            value["last_scrape_error"] = json!(e);
        }
        if let Some(e) = ticks.raw_error {
            value["raw_error"] = json!(e);
        }
        value
    }
}

/// The periodic scrapes until told to stop; a failed one is counted, never fatal.
async fn tick(
    client: reqwest::Client,
    config: ScrapeConfig,
    mut ticks: Ticks,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Ticks {
    let every = config.interval.max(Duration::from_millis(50));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return ticks,
            _ = timer.tick() => {}
        }
        let t = unix_now();
        let scraped = tokio::select! {
            _ = &mut stop => return ticks,
            s = scrape(&client, &config.url) => s,
        };
        match scraped {
            Ok(samples) => {
                ticks.write_raw(t, "tick", &samples);
                ticks.scrapes.push(Scrape {
                    t,
                    mapped: map_vllm(&samples),
                });
            }
            Err(e) => {
                ticks.failed += 1;
                ticks.last_error = Some(e);
            }
        }
    }
}

/// A gauge over the window's scrapes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GaugeSummary {
    pub mean: f64,
    pub max: f64,
}

/// A histogram's window: observations, their sum, and the mean (seconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistogramDelta {
    pub count: f64,
    pub sum_s: f64,
    pub mean_s: Option<f64>,
}

/// The `isobench.telemetry.server` object of an answered endpoint.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerSummary {
    pub available: bool,
    pub window_s: f64,
    /// Scrapes that gave samples (first and last included).
    pub scrapes: usize,
    /// Mapped key → the vLLM name this server uses for it.
    pub names: BTreeMap<String, String>,
    /// Mapped keys this server has none of (an older or newer vLLM, or another server).
    pub missing: Vec<String>,
    pub counters: BTreeMap<String, f64>,
    pub gauges: BTreeMap<String, GaugeSummary>,
    pub histograms: BTreeMap<String, HistogramDelta>,
    /// Prefix-cache hits / queries over the window.
    pub prefix_cache_hit_rate: Option<f64>,
    /// Counters that went down (the server restarted): no delta for them.
    pub reset: Vec<String>,
}

fn summarise(first: &Scrape, ticks: &[Scrape], last: &Scrape) -> ServerSummary {
    let mut s = ServerSummary {
        available: true,
        window_s: last.t - first.t,
        scrapes: ticks.len() + 2,
        names: BTreeMap::new(),
        missing: Vec::new(),
        counters: BTreeMap::new(),
        gauges: BTreeMap::new(),
        histograms: BTreeMap::new(),
        prefix_cache_hit_rate: None,
        reset: Vec::new(),
    };
    let all: Vec<&Scrape> = std::iter::once(first)
        .chain(ticks)
        .chain(std::iter::once(last))
        .collect();
    for m in VLLM_METRICS {
        let (Some((name, start)), Some((_, end))) =
            (first.mapped.get(m.key), last.mapped.get(m.key))
        else {
            s.missing.push(m.key.to_string());
            continue;
        };
        s.names.insert(m.key.to_string(), name.to_string());
        match (m.kind, start, end) {
            (Kind::Counter, Reading::Value(a), Reading::Value(b)) if b >= a => {
                s.counters.insert(m.key.to_string(), b - a);
            }
            (
                Kind::Histogram,
                Reading::Histogram { sum: s0, count: c0 },
                Reading::Histogram { sum: s1, count: c1 },
            ) if c1 >= c0 => {
                let (count, sum_s) = (c1 - c0, s1 - s0);
                let mean_s = (count > 0.0).then(|| sum_s / count);
                s.histograms.insert(
                    m.key.to_string(),
                    HistogramDelta {
                        count,
                        sum_s,
                        mean_s,
                    },
                );
            }
            (Kind::Gauge | Kind::Fraction, _, _) => {
                let v: Vec<f64> = all
                    .iter()
                    .filter_map(|sc| match sc.mapped.get(m.key) {
                        Some((_, Reading::Value(v))) => Some(*v),
                        _ => None,
                    })
                    .collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                s.gauges
                    .insert(m.key.to_string(), GaugeSummary { mean, max });
            }
            _ => s.reset.push(m.key.to_string()),
        }
    }
    if let (Some(q), Some(h)) = (
        s.counters.get("prefix_cache_queries"),
        s.counters.get("prefix_cache_hits"),
    ) && *q > 0.0
    {
        s.prefix_cache_hit_rate = Some(h / q);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_names_labels_and_special_values() {
        let text = "# HELP vllm:num_requests_running Number of requests.\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n\
            vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"a}b,c\\\"d\\\\\"} 7 1700000000000\n\
            plain 1e-3\n\
            nan_metric NaN\n\
            # EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "vllm:num_requests_running");
        assert_eq!(
            s[0].labels,
            [
                ("engine".to_string(), "0".to_string()),
                ("model_name".to_string(), "m".to_string())
            ]
        );
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("le"), Some("+Inf"));
        assert_eq!(s[1].label("model_name"), Some("a}b,c\"d\\"));
        assert_eq!(s[1].value, 7.0);
        assert_eq!(s[2].value, 0.001);
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn rejects_what_it_cannot_read_with_the_line() {
        for (text, line) in [
            ("ok 1\n{x=\"1\"} 2\n", 2),
            ("a{b=\"1} 2\n", 1),
            ("a{b=1} 2\n", 1),
            ("a 1\nb\n", 2),
            ("a one\n", 1),
            ("a 1 2 3\n", 1),
            ("a{b=\"\\q\"} 1\n", 1),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    fn scrape_of(t: f64, text: &str) -> Scrape {
        Scrape {
            t,
            mapped: map_vllm(&parse(text).unwrap()),
        }
    }

    #[test]
    fn maps_v0_and_v1_names_and_summarises_a_window() {
        // V0 names at the start and end, two engines' series added.
        let v0 = |tokens: u32, hits: u32, usage: f64, running: u32| {
            format!(
                "vllm:gpu_cache_usage_perc{{engine=\"0\"}} {usage}\n\
                 vllm:gpu_cache_usage_perc{{engine=\"1\"}} {usage}\n\
                 vllm:num_requests_running{{engine=\"0\"}} {running}\n\
                 vllm:num_requests_running{{engine=\"1\"}} 1\n\
                 vllm:generation_tokens_total{{engine=\"0\"}} {tokens}\n\
                 vllm:generation_tokens_created{{engine=\"0\"}} 1700000000\n\
                 vllm:gpu_prefix_cache_queries_total 100\n\
                 vllm:gpu_prefix_cache_hits_total {hits}\n\
                 vllm:time_to_first_token_seconds_bucket{{le=\"0.1\"}} {tokens}\n\
                 vllm:time_to_first_token_seconds_sum {}\n\
                 vllm:time_to_first_token_seconds_count {tokens}\n",
                f64::from(tokens) * 0.05
            )
        };
        let first = scrape_of(10.0, &v0(10, 5, 0.2, 1));
        let mid = scrape_of(11.0, &v0(30, 5, 0.6, 5));
        let last = scrape_of(12.5, &v0(50, 5, 0.4, 0));
        let s = summarise(&first, &[mid], &last);
        assert_eq!(s.window_s, 2.5);
        assert_eq!(s.scrapes, 3);
        assert_eq!(s.names["kv_cache_usage"], "vllm:gpu_cache_usage_perc");
        assert_eq!(s.counters["generation_tokens"], 40.0);
        assert_eq!(s.counters["prefix_cache_hits"], 0.0);
        // Queries did not move: no hit rate out of 0/0.
        assert_eq!(s.prefix_cache_hit_rate, None);
        let usage = &s.gauges["kv_cache_usage"];
        assert!((usage.mean - 0.4).abs() < 1e-12 && usage.max == 0.6);
        assert_eq!(
            s.gauges["requests_running"],
            // Engine 1 runs one request throughout: (2 + 6 + 1) / 3.
            GaugeSummary {
                mean: 3.0,
                max: 6.0
            }
        );
        let ttft = &s.histograms["ttft"];
        assert_eq!(ttft.count, 40.0);
        assert!((ttft.mean_s.unwrap() - 0.05).abs() < 1e-12);
        assert!(s.missing.contains(&"preemptions".to_string()));

        // V1 names map to the same keys.
        let v1 = scrape_of(
            0.0,
            "vllm:kv_cache_usage_perc 0.5\nvllm:prefix_cache_queries_total 8\nvllm:num_preemptions_total 2\n",
        );
        assert_eq!(
            v1.mapped["kv_cache_usage"],
            ("vllm:kv_cache_usage_perc", Reading::Value(0.5))
        );
        assert_eq!(
            v1.mapped["prefix_cache_queries"].0,
            "vllm:prefix_cache_queries_total"
        );
        assert_eq!(v1.mapped["preemptions"].1, Reading::Value(2.0));
    }

    #[test]
    fn a_counter_that_went_down_has_no_delta() {
        let s = summarise(
            &scrape_of(0.0, "vllm:generation_tokens_total 100\n"),
            &[],
            &scrape_of(1.0, "vllm:generation_tokens_total 3\n"),
        );
        assert_eq!(s.reset, ["generation_tokens"]);
        assert!(s.counters.is_empty());
    }
}
