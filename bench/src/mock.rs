//! A mock OpenAI-compatible upstream: small, realistic answers, optionally
//! after a fixed delay, so that what is measured is the gateway in front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use clap::Args;
use futures::StreamExt as _;
use serde_json::{Value, json};

#[derive(Debug, Clone, Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,

    /// Delay before each answer starts (simulated model latency), in ms.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,

    /// Delay between streamed chunks, in ms.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,

    /// Answer every chat request with this HTTP status (e.g. 500) and an
    /// OpenAI-shaped error: a failing upstream, for failover benchmarks.
    #[arg(long, value_parser = clap::value_parser!(u16).range(400..=599))]
    pub fail_status: Option<u16>,
}

#[derive(Default)]
struct Counters {
    chat: AtomicU64,
    streamed: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone)]
struct Mock {
    delay: Duration,
    chunk_delay: Duration,
    fail_status: Option<StatusCode>,
    counters: Arc<Counters>,
}

/// The answer's words, split the way a model would stream them.
const PIECES: [&str; 5] = ["Hello", "! How", " can I", " help you", " today?"];
const COMPLETION_TOKENS: u64 = 9;

pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    // Like real upstreams: no Nagle delay on small writes (streamed chunks).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    eprintln!("mock upstream listening on http://{addr}/v1");
    axum::serve(listener, router(&args))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn router(args: &MockArgs) -> Router {
    let state = Mock {
        delay: Duration::from_millis(args.delay_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        fail_status: args.fail_status.and_then(|s| StatusCode::from_u16(s).ok()),
        counters: Arc::new(Counters::default()),
    };
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/_bench/stats", get(stats))
        .with_state(state)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A rough token count of the prompt: about four characters a token.
fn prompt_tokens(body: &Value) -> u64 {
    let chars: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .map(str::len)
                .sum()
        })
        .unwrap_or(0);
    (chars as u64).div_ceil(4) + 8
}

fn usage(prompt: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": prompt + COMPLETION_TOKENS,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0 }
    })
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null }
    });
    (status, axum::Json(body)).into_response()
}

async fn chat(State(mock): State<Mock>, body: Bytes) -> Response {
    let n = mock.counters.chat.fetch_add(1, Ordering::Relaxed);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "We could not parse the JSON body.");
    };
    let Some(model) = req.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'model'.",
        );
    };
    if !mock.delay.is_zero() {
        tokio::time::sleep(mock.delay).await;
    }
    if let Some(status) = mock.fail_status {
        mock.counters.failed.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "error": { "message": "The server had an error while processing your request (aigw-bench --fail-status).", "type": "server_error", "param": null, "code": null }
        });
        return (status, axum::Json(body)).into_response();
    }
    let id = format!("chatcmpl-bench{n:012}");
    let created = now_secs();
    let prompt = prompt_tokens(&req);
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let answer = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": PIECES.concat(), "refusal": null },
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": usage(prompt),
            "service_tier": "default",
            "system_fingerprint": "fp_bench"
        });
        return axum::Json(answer).into_response();
    }

    mock.counters.streamed.fetch_add(1, Ordering::Relaxed);
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |choices: Value, usage: Value| {
        let v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": choices,
            "usage": usage,
        });
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut events = Vec::with_capacity(PIECES.len() + 4);
    events.push(chunk(
        json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }]),
        Value::Null,
    ));
    for piece in PIECES {
        events.push(chunk(
            json!([{ "index": 0, "delta": { "content": piece }, "logprobs": null, "finish_reason": null }]),
            Value::Null,
        ));
    }
    events.push(chunk(
        json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop" }]),
        Value::Null,
    ));
    if include_usage {
        events.push(chunk(json!([]), usage(prompt)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let body = if mock.chunk_delay.is_zero() {
        Body::from(events.concat())
    } else {
        let gap = mock.chunk_delay;
        let stream =
            futures::stream::iter(events.into_iter().enumerate()).then(move |(i, b)| async move {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                Ok::<_, std::convert::Infallible>(b)
            });
        Body::from_stream(stream)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response build failed"))
}

async fn models() -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [
            { "id": "bench-model", "object": "model", "created": 1_700_000_000, "owned_by": "aigw-bench" }
        ]
    }))
}

async fn stats(State(mock): State<Mock>) -> axum::Json<Value> {
    axum::Json(json!({
        "chat_requests": mock.counters.chat.load(Ordering::Relaxed),
        "streamed": mock.counters.streamed.load(Ordering::Relaxed),
        "failed": mock.counters.failed.load(Ordering::Relaxed),
    }))
}
