//! Real vLLM output (0.32.0 on CPU, in `tests/loadgen_fixtures/`): the client must read vLLM's
//! streams byte for byte however they are split, and its result JSON must carry every key of
//! `vllm bench serve --save-result --save-detailed`.
mod loadgen_support;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use isobench::loadgen::sse::{SseEvent, SseParser};
use isobench::loadgen::{Backend, ClientConfig, LoadClient, RunConfig};
use loadgen_support::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

const CHAT: &str = include_str!("loadgen_fixtures/sample_chat_stream_0.32.0.txt");
const COMPLETIONS: &str = include_str!("loadgen_fixtures/sample_completions_stream_0.32.0.txt");
const VLLM_RESULT: &str = include_str!("loadgen_fixtures/vllm_bench_serve_0.32.0_result.json");

/// Serves the recorded streams, cut into pieces of `piece` bytes with a pause between them, so
/// events, lines and JSON straddle reads.
async fn replay_server(piece: usize, pause: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let text = if req.uri().path().ends_with("chat/completions") {
                            CHAT
                        } else {
                            COMPLETIONS
                        };
                        let pieces: Vec<Bytes> = text
                            .as_bytes()
                            .chunks(piece)
                            .map(Bytes::copy_from_slice)
                            .collect();
                        let stream = futures_util::stream::unfold(
                            pieces.into_iter(),
                            move |mut rest| async move {
                                let next = rest.next()?;
                                if !pause.is_zero() {
                                    tokio::time::sleep(pause).await;
                                }
                                Some((Ok::<_, Infallible>(Frame::data(next)), rest))
                            },
                        );
                        let mut response = hyper::Response::new(StreamBody::new(stream));
                        response
                            .headers_mut()
                            .insert("content-type", "text/event-stream".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

fn client(addr: SocketAddr) -> LoadClient {
    LoadClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        pool_size: 2,
        request_timeout: Duration::from_secs(30),
    })
    .unwrap()
}

/// The recorded chat stream's content, concatenated (what the client must reassemble).
fn recorded_text(stream: &str, field: &str) -> String {
    stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            let value: serde_json::Value = serde_json::from_str(data).unwrap();
            let choice = value["choices"].get(0)?.clone();
            let text = if field == "content" {
                choice["delta"]["content"].clone()
            } else {
                choice["text"].clone()
            };
            Some(text.as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_vllm_chat_stream_read_in_odd_pieces() {
    for piece in [1usize, 7, 61, 4096] {
        let addr = replay_server(
            piece,
            Duration::from_micros(if piece < 10 { 0 } else { 200 }),
        )
        .await;
        let ds = dataset(8, 64, 2, None);
        let run = RunConfig {
            model: "tiny".into(),
            ..run_config(Some(2))
        };
        let result = client(addr).run(&ds, &run, None).await.unwrap();
        assert_eq!(
            result.metrics.completed, 2,
            "piece {piece}: {:?}",
            result.records[0].error
        );
        for record in &result.records {
            assert_eq!(record.event_times_s.len(), 65, "role chunk + 64 tokens");
            assert_eq!(
                (record.prompt_tokens_server, record.completion_tokens_server),
                (Some(30), Some(64))
            );
            assert!(record.done_received);
            assert_eq!(record.generated_text, recorded_text(CHAT, "content"));
            assert!(record.first_content_s >= record.ttft_s);
        }
        assert_eq!(result.metrics.output_lens, vec![64, 64]);
        assert_eq!(
            result.metrics.input_lens,
            vec![30, 30],
            "server prompt counts win, as in vLLM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_vllm_completions_stream() {
    let addr = replay_server(13, Duration::from_micros(100)).await;
    let ds = dataset(8, 8, 1, None);
    let run = RunConfig {
        model: "tiny".into(),
        backend: Backend::OpenAi,
        endpoint: "/v1/completions".into(),
        ..run_config(Some(1))
    };
    let result = client(addr).run(&ds, &run, None).await.unwrap();
    let record = &result.records[0];
    assert!(record.success(), "{:?}", record.error);
    assert_eq!(
        record.event_times_s.len(),
        8,
        "no role chunk on completions"
    );
    assert_eq!(record.completion_tokens_server, Some(8));
    assert_eq!(record.generated_text, recorded_text(COMPLETIONS, "text"));
    assert_eq!(record.generated_text, "eddiraQuiQuiQuiQuiQui guvo xeerchth");
}

#[test]
fn the_parser_sees_every_recorded_event_whatever_the_read_size() {
    for size in 1..=97 {
        let mut parser = SseParser::new();
        let (mut data, mut done) = (0, 0);
        let mut sink = |event: SseEvent<'_>| match event {
            SseEvent::Data(text) => {
                assert!(
                    serde_json::from_str::<serde_json::Value>(text).is_ok(),
                    "size {size}: {text}"
                );
                data += 1;
            }
            SseEvent::Done => done += 1,
            SseEvent::InvalidUtf8(_) => panic!("size {size}: invalid UTF-8"),
            SseEvent::TooLarge(_) => panic!("size {size}: over the size limit"),
        };
        for piece in CHAT.as_bytes().chunks(size) {
            parser.feed(piece, &mut sink);
        }
        parser.finish(&mut sink);
        assert_eq!(
            (data, done),
            (66, 1),
            "size {size}: role + 64 tokens + usage, then [DONE]"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_json_has_every_key_of_vllm_bench_serve() {
    let _serial = SERIAL.lock().await;
    let vllm: serde_json::Value = serde_json::from_str(VLLM_RESULT).unwrap();
    let sim = isobench::sim::spawn(isobench::sim::SimConfig {
        ttft_ms: 2.0,
        itl_ms: 1.0,
        ..isobench::sim::SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let ds = dataset(16, 4, 5, None);
    let run = RunConfig {
        percentiles: vec![99.0],
        ..run_config(Some(2))
    };
    let result = client_for(&sim, 2).run(&ds, &run, None).await.unwrap();
    sim.shutdown().await;
    let metadata = vec![("commit".to_string(), "abc123".to_string())];
    let ours = result.to_json(true, &metadata);
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    };
    for (key, value) in vllm.as_object().unwrap() {
        let mine = ours
            .get(key)
            .unwrap_or_else(|| panic!("key `{key}` of vLLM's result is missing"));
        // `label` and `request_goodput` are null in both when unset; `tokenizer_id` is null here
        // (synthetic prompts).
        if !(value.is_null() || mine.is_null() || key == "tokenizer_id") {
            assert_eq!(kind(mine), kind(value), "type of `{key}`");
        }
    }
    assert_eq!(ours["request_rate"], "inf");
    assert_eq!(
        ours["commit"], "abc123",
        "metadata at top level, as vLLM does"
    );
    assert_eq!(ours["isobench"]["metadata"]["commit"], "abc123");
    assert_eq!(ours["itls"].as_array().unwrap().len(), 5);
    assert_eq!(ours["isobench"]["requests"].as_array().unwrap().len(), 5);
    // Without --save-detailed the per-request lists go (vLLM keeps latencies and queue_times).
    let brief = result.to_json(false, &[]);
    for key in [
        "input_lens",
        "output_lens",
        "ttfts",
        "itls",
        "start_times",
        "generated_texts",
        "errors",
    ] {
        assert!(brief.get(key).is_none(), "{key} only with detailed");
    }
    assert!(brief.get("latencies").is_some() && brief["isobench"].get("requests").is_none());
    // The text form loads back to the same keys and values (floats to the last digit aside),
    // keys in vLLM's order.
    let text = result.to_json_text(true, &metadata);
    let reloaded: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&reloaded), keys(&ours));
    assert_eq!(reloaded["completed"], ours["completed"]);
    assert!(
        (reloaded["mean_ttft_ms"].as_f64().unwrap() - ours["mean_ttft_ms"].as_f64().unwrap()).abs()
            < 1e-9
    );
    assert!(text.find("\"date\"").unwrap() < text.find("\"duration\"").unwrap());
    assert!(text.find("\"mean_ttft_ms\"").unwrap() < text.find("\"isobench\"").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_never_shadows_a_measured_key() {
    let _serial = SERIAL.lock().await;
    let sim = isobench::sim::spawn(isobench::sim::SimConfig {
        ttft_ms: 1.0,
        itl_ms: 1.0,
        ..isobench::sim::SimConfig::ephemeral()
    })
    .await
    .unwrap();
    let ds = dataset(16, 4, 3, None);
    let result = client_for(&sim, 2)
        .run(&ds, &run_config(Some(2)), None)
        .await
        .unwrap();
    sim.shutdown().await;
    let json = result.to_json(false, &[("completed".into(), "lies".into())]);
    assert_eq!(json["completed"], 3);
    assert_eq!(json["isobench"]["metadata"]["completed"], "lies");
}
