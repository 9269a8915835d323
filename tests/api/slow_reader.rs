//! A client that reads a streamed answer too slowly is cut off with an error
//! event, never handed a silently truncated stream.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, sse_data, user};

/// More chunks than NATS keeps for a subscriber that falls behind (64 Ki
/// messages), so a relay that left its frames in the subscription would
/// lose some.
const CHUNKS: usize = 80_000;

/// An OpenAI stream of `CHUNKS` chunks, chunk `i` saying `"{i} "`, sent all
/// at once.
fn long_stream() -> String {
    let mut body = String::with_capacity(CHUNKS * 160);
    for i in 0..CHUNKS {
        let chunk = json!({
            "id": "chatcmpl-long", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": format!("{i} ")}, "finish_reason": null}],
        });
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let last = json!({
        "id": "chatcmpl-long", "object": "chat.completion.chunk", "created": 1_764_000_000,
        "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": CHUNKS, "total_tokens": CHUNKS + 3},
    });
    body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    body
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_stream_or_an_error_event_at_its_end() {
    let env = TestEnv::with(Options {
        sse_buffer_bytes: 256 * 1024,
        // Relaying 80,000 chunks takes seconds on a loaded machine; the
        // harness's 5 s limit on a whole provider call would end the stream
        // upstream ("the stream stalled") before the reader is judged.
        upstream_timeout: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(long_stream(), "text/event-stream"))
        .mount(&mock)
        .await;
    env.add_provider("fast", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("slow-reader").await;

    // A client with a small receive buffer (so the kernel holds little of
    // the stream for it) that asks, then reads nothing for a while. HTTP/1.0:
    // the body is whatever comes until the connection closes.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = env.base.trim_start_matches("http://").parse().unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let body = json!({"model": "m", "messages": user("count"), "stream": true}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The response head comes once the stream has started.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let request_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap()
        .to_string();

    // The request's outcome is stored (it ended upstream) before the client
    // reads on.
    let events = env.wait_recorded(&request_id).await;

    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stream never ended");
    let data = sse_data(&String::from_utf8_lossy(&rest));

    // Whatever came is the answer's beginning, chunk after chunk, nothing
    // skipped...
    let last = data.last().unwrap();
    let chunks = &data[..data.len() - 1];
    for (i, chunk) in chunks.iter().enumerate() {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        let content = chunk["choices"][0]["delta"]["content"].as_str();
        if i < CHUNKS {
            assert_eq!(content, Some(format!("{i} ").as_str()), "chunk {i}");
        }
    }
    // ...and it ends with [DONE] after the whole answer, or with an error
    // event; then the upstream call was stopped.
    if last == "[DONE]" {
        assert!(
            chunks.len() > CHUNKS,
            "[DONE] after {} chunks",
            chunks.len()
        );
        assert!(events.iter().any(|(t, _)| t == "RequestCompleted"));
    } else {
        let error: Value = serde_json::from_str(last).unwrap();
        assert_eq!(error["error"]["code"], "slow_reader", "{error}");
        assert!(chunks.len() < CHUNKS);
        let failed = &events.last().unwrap().1["RequestFailed"];
        assert_eq!(failed["status"], 499, "{events:?}");
    }
}
