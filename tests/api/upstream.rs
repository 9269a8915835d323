//! A streaming OpenAI-compatible upstream with controllable timing and
//! failures (wiremock answers whole bodies at once; these tests need chunks
//! spread over time and connections that break mid-stream).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Script {
    /// Content pieces, one chunk each.
    pub pieces: Vec<String>,
    /// Pause before each chunk.
    pub delay: Duration,
    /// Send the usage chunk and `[DONE]` at the end.
    pub finish: bool,
    /// Break the connection after this many content chunks.
    pub break_after: Option<usize>,
}

#[derive(Clone)]
struct Shared {
    script: Script,
    seen: Arc<Mutex<Vec<Value>>>,
}

pub struct StreamingUpstream {
    /// Base URL to configure as a provider (`.../v1`).
    pub base_url: String,
    pub seen: Arc<Mutex<Vec<Value>>>,
}

fn chunk(model: &str, delta: Value, finish: Value) -> String {
    json!({
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
    .to_string()
}

async fn chat(State(shared): State<Shared>, body: axum::Json<Value>) -> Response {
    shared.seen.lock().unwrap().push(body.0.clone());
    let model = body.0["model"].as_str().unwrap_or("m").to_string();
    let script = shared.script.clone();
    let stream = async_stream(model, script);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    model: String,
    script: Script,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let total = script.pieces.len();
    futures::stream::unfold(0usize, move |i| {
        let (model, script) = (model.clone(), script.clone());
        async move {
            if script.break_after == Some(i) {
                tokio::time::sleep(script.delay).await;
                return Some((Err(std::io::Error::other("upstream broke")), usize::MAX));
            }
            if i < total {
                tokio::time::sleep(script.delay).await;
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": script.pieces[i]})
                } else {
                    json!({"content": script.pieces[i]})
                };
                let data = chunk(&model, delta, Value::Null);
                return Some((Ok(Bytes::from(format!("data: {data}\n\n"))), i + 1));
            }
            if i == total && script.finish {
                let last = chunk(&model, json!({}), json!("stop"));
                let usage = json!({
                    "id": "chatcmpl-stream", "object": "chat.completion.chunk",
                    "created": 1_764_000_000, "model": model, "choices": [],
                    "usage": {"prompt_tokens": 11, "completion_tokens": total, "total_tokens": 11 + total}
                });
                let text = format!("data: {last}\n\ndata: {usage}\n\ndata: [DONE]\n\n");
                return Some((Ok(Bytes::from(text)), i + 1));
            }
            None
        }
    })
}

pub async fn start(script: Script) -> StreamingUpstream {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        script,
        seen: seen.clone(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    StreamingUpstream {
        base_url: format!("http://{addr}/v1"),
        seen,
    }
}
