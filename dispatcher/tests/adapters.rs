//! Every adapter against a wiremock server speaking that provider's wire
//! format: the request aigw sends (URL, headers, auth, body) and the OpenAI
//! answer or chunk stream it makes of the reply, usage included.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use aigw_dispatcher::adapter::{self, Answer, StreamItem};
use aigw_dispatcher::upstream::UpstreamError;
use aigw_events::ErrorClass;
use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_runtime::catalog::{self, PresetInput};
use aigw_runtime::crypto::{Binding, CredentialField, Sealer};
use aigw_runtime::egress::Egress;
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PROVIDER_ID: uuid::Uuid = uuid::Uuid::from_u128(1);

/// Output files are served by the local mocks.
fn egress() -> Egress {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Egress::new(true).unwrap()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn spec(kind: ProviderKind, base_url: &str, settings: &[(&str, &str)]) -> ProviderSpec {
    ProviderSpec {
        name: "p".into(),
        kind,
        base_url: base_url.into(),
        models: vec!["m".into()],
        sealed_credential: None,
        prices: BTreeMap::new(),
        preset: None,
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ProviderSpec::default()
    }
}

fn key(k: &str) -> SecretString {
    SecretString::from(k.to_string())
}

/// A request using every translated feature: system prompt, image, tools,
/// an earlier tool call and its result, stop, sampling, max tokens.
fn rich_request(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}],
        "tool_choice": "required",
        "stop": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 100,
    })
}

fn simple_request(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

async fn full(answer: Result<Answer, UpstreamError>) -> (Value, aigw_events::Usage) {
    match answer {
        Ok(Answer::Full { body, usage }) => (
            serde_json::from_slice(&body).unwrap(),
            usage.expect("usage"),
        ),
        Ok(Answer::Stream(_) | Answer::Media { .. } | Answer::Native(_)) => {
            panic!("expected a full answer")
        }
        Err(e) => panic!("upstream error: {e:?}"),
    }
}

/// The chunks of a stream, and whether it ended with `Done`.
async fn chunks(answer: Result<Answer, UpstreamError>) -> (Vec<Value>, bool) {
    let Ok(Answer::Stream(mut s)) = answer else {
        panic!("expected a stream");
    };
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            StreamItem::Data(d) => out.push(serde_json::from_str(&d).unwrap()),
            StreamItem::Done => return (out, true),
            StreamItem::Error(e) => panic!("stream error: {e:?}"),
        }
    }
    (out, false)
}

fn err(answer: Result<Answer, UpstreamError>) -> UpstreamError {
    match answer {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

/// Joins the text deltas and the tool calls of a chunk stream.
/// The usage object a translated answer carries, in OpenAI's shape:
/// totals, then [cached, cache writes 5 min, 1 h, reasoning].
fn openai_usage(prompt: u64, completion: u64, classes: [u64; 4]) -> Value {
    let [cached, write_5m, write_1h, reasoning] = classes;
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached,
            "cache_write_tokens": write_5m + write_1h,
            "cache_write_5m_tokens": write_5m, "cache_write_1h_tokens": write_1h},
        "completion_tokens_details": {"reasoning_tokens": reasoning}})
}

/// (content, tool calls as (id, name, arguments), finish reason, usage).
type Assembled = (String, Vec<(String, String, String)>, Option<String>, Value);

fn assemble(chunks: &[Value]) -> Assembled {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    let mut usage = Value::Null;
    for c in chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.push((
                    tc["id"].as_str().unwrap_or("").into(),
                    tc["function"]["name"].as_str().unwrap_or("").into(),
                    String::new(),
                ));
            }
            calls[i]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (text, calls, finish, usage)
}

async fn only_request(server: &MockServer) -> Request {
    let mut all = server.received_requests().await.unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn body_of(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

// ---------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_translates_request_and_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-5",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 1, "output_tokens": 12},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Anthropic, &server.uri(), &[]);
    let answer = adapter::chat(
        &http(),
        &p,
        Some(&key("sk-ant-test")),
        &rich_request("claude-sonnet-5"),
        false,
    )
    .await;
    let (body, usage) = full(answer).await;

    let sent = body_of(&only_request(&server).await);
    assert_eq!(
        sent,
        json!({
            "model": "claude-sonnet-5",
            "system": "Be brief.",
            "max_tokens": 100,
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                ]},
            ],
            "tools": [{"name": "get_weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "any"},
        })
    );

    assert_eq!(body["object"], "chat.completion");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(body["usage"], openai_usage(26, 12, [5, 1, 0, 0]));
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (26, 12));
    assert_eq!((usage.cached_tokens, usage.cache_write_5m_tokens), (5, 1));
}

#[tokio::test]
async fn anthropic_default_max_tokens() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1},
        })))
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Anthropic, &server.uri(), &[]);
    let (body, _) =
        full(adapter::chat(&http(), &p, Some(&key("k")), &simple_request("m"), false).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = body_of(&only_request(&server).await);
    assert_eq!(sent["max_tokens"], 4096);
    assert!(sent.get("system").is_none());
}

const ANTHROPIC_SSE: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" now.\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"get_weather\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":31}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

#[tokio::test]
async fn anthropic_stream_becomes_openai_chunks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "k"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(ANTHROPIC_SSE),
        )
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Anthropic, &server.uri(), &[]);
    let (chunks, done) = chunks(
        adapter::chat(
            &http(),
            &p,
            Some(&key("k")),
            &rich_request("claude-sonnet-5"),
            true,
        )
        .await,
    )
    .await;
    assert!(done);
    let sent = body_of(&only_request(&server).await);
    assert_eq!(sent["stream"], true);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["id"], "msg_s1");
    let (text, calls, finish, usage) = assemble(&chunks);
    assert_eq!(text, "Checking now.");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "toolu_9");
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].2).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(usage, openai_usage(25, 31, [0; 4]));
    // The usage chunk is last and has no choices, as OpenAI sends it.
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
}

#[tokio::test]
async fn anthropic_mid_stream_error_is_reported() {
    let server = MockServer::start().await;
    let sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"m\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Anthropic, &server.uri(), &[]);
    let Ok(Answer::Stream(mut s)) =
        adapter::chat(&http(), &p, Some(&key("k")), &simple_request("m"), true).await
    else {
        panic!("expected a stream")
    };
    assert!(matches!(s.next().await, Some(StreamItem::Data(_))));
    match s.next().await {
        Some(StreamItem::Error(e)) => {
            assert_eq!(e.class(), ErrorClass::StreamBroken);
            assert!(e.message.contains("Overloaded"));
        }
        other => panic!("{other:?}"),
    }
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn anthropic_errors_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-api-key", "limited"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}, "request_id": "req_1"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("x-api-key", "bad"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("x-api-key", "busy"))
        .respond_with(ResponseTemplate::new(529).set_body_json(
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("x-api-key", "client"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: field required"}}),
        ))
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Anthropic, &server.uri(), &[]);
    let call = |k: &'static str| {
        let p = p.clone();
        async move { err(adapter::chat(&http(), &p, Some(&key(k)), &simple_request("m"), false).await) }
    };
    let e = call("limited").await;
    assert_eq!((e.status(), e.class()), (429, ErrorClass::RateLimited));
    assert_eq!(e.retry_after.as_deref(), Some("7"));
    assert_eq!(e.error_type(), "rate_limit_error");
    let e = call("bad").await;
    assert_eq!((e.status(), e.error_type()), (502, "upstream_auth_error"));
    assert!(!e.message.contains("bad"));
    let e = call("busy").await;
    assert_eq!((e.status(), e.class()), (502, ErrorClass::Upstream));
    let e = call("client").await;
    assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
    assert!(e.message.contains("messages: field required"));
}

// ---------------------------------------------------------------- Gemini

#[tokio::test]
async fn gemini_translates_request_and_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(header("x-goog-api-key", "g-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "It is sunny."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}},
                ]},
                "finishReason": "STOP", "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 8, "thoughtsTokenCount": 4, "totalTokenCount": 42},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Gemini,
        &format!("{}/v1beta", server.uri()),
        &[],
    );
    let (body, usage) = full(
        adapter::chat(
            &http(),
            &p,
            Some(&key("g-key")),
            &rich_request("gemini-2.5-flash"),
            false,
        )
        .await,
    )
    .await;
    let req = only_request(&server).await;
    assert!(req.url.query().is_none(), "the key must not be in the URL");
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(
        body_of(&req),
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this image?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                ]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}]},
            ],
            "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        })
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["content"], "It is sunny.");
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Lyon\"}");
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (30, 12));
    // Thoughts are the reasoning part of the completion.
    assert_eq!(usage.reasoning_tokens, 4);
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        4
    );
}

#[tokio::test]
async fn gemini_stream_becomes_openai_chunks() {
    let server = MockServer::start().await;
    let sse = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 1},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 2},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\", \"args\": {\"a\": 1}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 5,\"totalTokenCount\": 14},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n";
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        ))
        .and(query_param("alt", "sse"))
        .and(header("x-goog-api-key", "g-key"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Gemini,
        &format!("{}/v1beta", server.uri()),
        &[],
    );
    let (chunks, done) = chunks(
        adapter::chat(
            &http(),
            &p,
            Some(&key("g-key")),
            &simple_request("gemini-2.5-flash"),
            true,
        )
        .await,
    )
    .await;
    assert!(done);
    let (text, calls, finish, usage) = assemble(&chunks);
    assert_eq!(text, "Hello");
    assert_eq!(
        calls,
        vec![("call_0".into(), "f".into(), "{\"a\":1}".into())]
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(usage, openai_usage(9, 5, [0; 4]));
}

/// Gemini 3 answers a later turn with 400 unless its function calls come
/// back with their `thoughtSignature`: the OpenAI tool-call id carries it.
#[tokio::test]
async fn gemini_thought_signatures_come_back_with_the_tool_calls() {
    let server = MockServer::start().await;
    let call = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
             "thoughtSignature": "c2lnLW9uZQ=="},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 5}});
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-3.5-flash:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&call))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-3.5-flash:streamGenerateContent",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(format!("data: {call}\r\n\r\n")),
        )
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Gemini,
        &format!("{}/v1beta", server.uri()),
        &[],
    );
    let ask = simple_request("gemini-3.5-flash");
    let (body, _) = full(adapter::chat(&http(), &p, Some(&key("k")), &ask, false).await).await;
    let calls = body["choices"][0]["message"]["tool_calls"].clone();
    let (chunks, _) = chunks(adapter::chat(&http(), &p, Some(&key("k")), &ask, true).await).await;
    let (_, streamed, _, _) = assemble(&chunks);
    assert_eq!(
        streamed.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        [
            calls[0]["id"].as_str().unwrap(),
            calls[1]["id"].as_str().unwrap()
        ]
    );

    // The caller sends the calls back as OpenAI tool calls with results.
    let ids: Vec<&str> = streamed.iter().map(|c| c.0.as_str()).collect();
    let follow_up = json!({"model": "gemini-3.5-flash", "messages": [
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": ids[0], "content": "{\"temp_c\": 3}"},
        {"role": "tool", "tool_call_id": ids[1], "content": "12:00"},
    ]});
    full(adapter::chat(&http(), &p, Some(&key("k")), &follow_up, false).await).await;
    let requests = server.received_requests().await.unwrap();
    let sent = body_of(requests.last().unwrap());
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
             "thoughtSignature": "c2lnLW9uZQ=="},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 3}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}},
        ]})
    );
}

/// A conversation begun on Gemini may move on (an alias, failover): other
/// providers get the tool-call ids without the signature (Anthropic and
/// Bedrock accept only letters, digits, `_` and `-`; Bedrock at most 64).
#[test]
fn other_providers_get_tool_call_ids_without_a_gemini_signature() {
    use aigw_dispatcher::providers::{anthropic, bedrock, cohere};
    let id = "call_0__thought__c2ln+bmF0/dXJl==";
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "3 °C"},
    ]});
    let a = anthropic::to_anthropic(&body, false);
    assert_eq!(a["messages"][1]["content"][0]["id"], "call_0");
    assert_eq!(a["messages"][2]["content"][0]["tool_use_id"], "call_0");
    let b = bedrock::to_converse(&body, "p").unwrap();
    assert_eq!(
        b["messages"][1]["content"][0]["toolUse"]["toolUseId"],
        "call_0"
    );
    assert_eq!(
        b["messages"][2]["content"][0]["toolResult"]["toolUseId"],
        "call_0"
    );
    let c = cohere::to_cohere(&body, false);
    assert_eq!(c["messages"][1]["tool_calls"][0]["id"], "call_0");
    assert_eq!(c["messages"][2]["tool_call_id"], "call_0");
}

#[tokio::test]
async fn gemini_errors_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}
        })))
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Gemini, &server.uri(), &[]);
    let e = err(adapter::chat(
        &http(),
        &p,
        Some(&key("secret-g")),
        &simple_request("m"),
        false,
    )
    .await);
    assert_eq!((e.status(), e.class()), (429, ErrorClass::RateLimited));
    assert!(e.message.contains("Resource has been exhausted"));
    assert!(!e.message.contains("secret-g"));
}

// ---------------------------------------------------------------- Azure

#[tokio::test]
async fn azure_uses_deployment_url_api_key_and_version() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/deployments/prod-gpt/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", "az-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-az", "object": "chat.completion", "created": 1, "model": "gpt-5.4",
            "prompt_filter_results": [],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop", "content_filter_results": {}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
        })))
        .expect(1)
        .mount(&server)
        .await;
    // The dispatcher sends the deployment a name resolved to as `model`.
    let p = spec(
        ProviderKind::Azure,
        &server.uri(),
        &[("api_version", "2024-10-21")],
    );
    let (body, usage) = full(
        adapter::chat(
            &http(),
            &p,
            Some(&key("az-key")),
            &simple_request("prod-gpt"),
            false,
        )
        .await,
    )
    .await;
    let req = only_request(&server).await;
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(body_of(&req), simple_request("prod-gpt"));
    assert_eq!(body["choices"][0]["message"]["content"], "Hi");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (4, 1));
}

#[tokio::test]
async fn azure_streams_and_maps_content_filter_errors() {
    let server = MockServer::start().await;
    let sse = "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5.4\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Yo\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5.4\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/openai/deployments/gpt-5.4/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", "az-key"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("api-key", "filtered"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"},
        }})))
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Azure, &server.uri(), &[]);
    let Ok(Answer::Stream(s)) = adapter::chat(
        &http(),
        &p,
        Some(&key("az-key")),
        &simple_request("gpt-5.4"),
        true,
    )
    .await
    else {
        panic!("expected a stream")
    };
    let items: Vec<StreamItem> = s.collect().await;
    assert!(matches!(items.last(), Some(StreamItem::Done)));
    // The filter-annotation chunk (no choices, empty id) is dropped.
    assert_eq!(items.len(), 3);
    let e = err(adapter::chat(
        &http(),
        &p,
        Some(&key("filtered")),
        &simple_request("gpt-5.4"),
        false,
    )
    .await);
    assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
    assert_eq!(e.code(), Some("content_filter"));
}

// ---------------------------------------------------------------- Cohere

#[tokio::test]
async fn cohere_translates_request_and_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/chat"))
        .and(header("authorization", "Bearer co-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "co-1",
            "finish_reason": "TOOL_CALL",
            "message": {
                "role": "assistant",
                "tool_plan": "I will call get_weather.",
                "tool_calls": [{"id": "get_weather_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}],
            },
            "usage": {"billed_units": {"input_tokens": 17, "output_tokens": 9}, "tokens": {"input_tokens": 700, "output_tokens": 30}},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Cohere, &server.uri(), &[]);
    let (body, usage) = full(
        adapter::chat(
            &http(),
            &p,
            Some(&key("co-key")),
            &rich_request("command-a-03-2025"),
            false,
        )
        .await,
    )
    .await;
    let sent = body_of(&only_request(&server).await);
    assert_eq!(
        sent,
        json!({
            "model": "command-a-03-2025",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "max_tokens": 100,
            "temperature": 0.5,
            "p": 0.9,
            "stop_sequences": ["END"],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": "REQUIRED",
        })
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "get_weather_abc");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (17, 9));
}

#[tokio::test]
async fn cohere_stream_becomes_openai_chunks() {
    let server = MockServer::start().await;
    let events = [
        json!({"type": "message-start", "id": "co-s", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
        json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
        json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}}),
        json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": " there"}}}}),
        json!({"type": "content-end", "index": 0}),
        json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}}}}),
        json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": "{\"x\":"}}}}}),
        json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": "2}"}}}}}),
        json!({"type": "tool-call-end", "index": 0}),
        json!({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 7}, "tokens": {"input_tokens": 100, "output_tokens": 9}}}}),
    ];
    let sse: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    Mock::given(method("POST"))
        .and(path("/v2/chat"))
        .and(header("authorization", "Bearer co-key"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Cohere, &server.uri(), &[]);
    let (chunks, done) = chunks(
        adapter::chat(
            &http(),
            &p,
            Some(&key("co-key")),
            &simple_request("c"),
            true,
        )
        .await,
    )
    .await;
    assert!(done);
    assert_eq!(body_of(&only_request(&server).await)["stream"], true);
    let (text, calls, finish, usage) = assemble(&chunks);
    assert_eq!(text, "Hi there");
    assert_eq!(calls, vec![("t1".into(), "f".into(), "{\"x\":2}".into())]);
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(usage, openai_usage(5, 7, [0; 4]));
}

#[tokio::test]
async fn cohere_errors_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "invalid request: model 'x' not found"})),
        )
        .mount(&server)
        .await;
    let p = spec(ProviderKind::Cohere, &server.uri(), &[]);
    let e = err(adapter::chat(&http(), &p, Some(&key("k")), &simple_request("x"), false).await);
    assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
    assert!(e.message.contains("model 'x' not found"));
}

// ---------------------------------------------------------------- Bedrock

fn frame(event: &str, payload: Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}

fn exception(kind: &str, message: &str) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let message = Message::new(json!({ "message": message }).to_string().into_bytes())
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(kind.to_string().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}

const BEDROCK_MODEL: &str = "global.anthropic.claude-sonnet-5-v1:0";

#[tokio::test]
async fn bedrock_converse_is_sigv4_signed_and_translated() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/model/global.anthropic.claude-sonnet-5-v1%3A0/converse",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Calling."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Rome"}}},
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 40, "outputTokens": 15, "totalTokens": 55},
            "metrics": {"latencyMs": 300},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Bedrock,
        &server.uri(),
        &[
            ("auth", "sigv4"),
            ("aws_access_key_id", "AKIDEXAMPLE"),
            ("region", "us-west-2"),
        ],
    );
    let (body, usage) = full(
        adapter::chat(
            &http(),
            &p,
            Some(&key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")),
            &rich_request(BEDROCK_MODEL),
            false,
        )
        .await,
    )
    .await;
    let req = only_request(&server).await;
    let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains("/us-west-2/bedrock/aws4_request"), "{auth}");
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date")
            || auth.contains("SignedHeaders=content-type;host;x-amz-date"),
        "{auth}"
    );
    assert!(!auth.contains("wJalr"));
    assert!(req.headers.get("x-amz-date").is_some());
    assert_eq!(
        body_of(&req),
        json!({
            "system": [{"text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is in this image?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                ]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                ]},
            ],
            "inferenceConfig": {"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "get_weather", "description": "Weather by city",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}],
                "toolChoice": {"any": {}},
            },
        })
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Calling.");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "tooluse_1");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Rome\"}"
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (40, 15));
}

#[tokio::test]
async fn bedrock_converse_stream_decodes_the_event_stream() {
    let server = MockServer::start().await;
    let mut stream = Vec::new();
    stream.extend(frame(
        "messageStart",
        json!({"role": "assistant", "p": "abc"}),
    ));
    stream.extend(frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "Sure"}}),
    ));
    stream.extend(frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": ", one sec."}}),
    ));
    stream.extend(frame("contentBlockStop", json!({"contentBlockIndex": 0})));
    stream.extend(frame(
        "contentBlockStart",
        json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_7", "name": "lookup"}}}),
    ));
    stream.extend(frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"q\":"}}}),
    ));
    stream.extend(frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"rust\"}"}}}),
    ));
    stream.extend(frame("contentBlockStop", json!({"contentBlockIndex": 1})));
    stream.extend(frame("messageStop", json!({"stopReason": "tool_use"})));
    stream.extend(frame(
        "metadata",
        json!({"usage": {"inputTokens": 11, "outputTokens": 22, "totalTokens": 33}, "metrics": {"latencyMs": 10}}),
    ));
    Mock::given(method("POST"))
        .and(path("/model/m-1/converse-stream"))
        .and(header("authorization", "Bearer br-api-key"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(stream, "application/vnd.amazon.eventstream"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Bedrock,
        &server.uri(),
        &[("auth", "bearer"), ("region", "us-east-1")],
    );
    let (chunks, done) = chunks(
        adapter::chat(
            &http(),
            &p,
            Some(&key("br-api-key")),
            &simple_request("m-1"),
            true,
        )
        .await,
    )
    .await;
    assert!(done);
    let (text, calls, finish, usage) = assemble(&chunks);
    assert_eq!(text, "Sure, one sec.");
    assert_eq!(
        calls,
        vec![("tu_7".into(), "lookup".into(), "{\"q\":\"rust\"}".into())]
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(usage, openai_usage(11, 22, [0; 4]));
}

#[tokio::test]
async fn bedrock_signs_the_session_token_of_temporary_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        })))
        .expect(2)
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Bedrock,
        &server.uri(),
        &[
            ("auth", "sigv4"),
            ("aws_access_key_id", "ASIAEXAMPLE"),
            ("region", "eu-central-1"),
        ],
    );
    let secret = key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    let token = key("IQoJb3JpZ2luX2VjEXAMPLE//token+=");
    let credentials = adapter::Credentials {
        api_key: Some(&secret),
        session_token: Some(&token),
    };
    full(adapter::chat_with(&http(), &p, credentials, &simple_request("m"), false).await).await;
    full(adapter::chat(&http(), &p, Some(&secret), &simple_request("m"), false).await).await;
    let requests = server.received_requests().await.unwrap();
    let header =
        |r: &Request, name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let with = &requests[0];
    assert_eq!(
        header(with, "x-amz-security-token").as_deref(),
        Some("IQoJb3JpZ2luX2VjEXAMPLE//token+=")
    );
    let auth = header(with, "authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains("x-amz-security-token"), "signed: {auth}");
    let without = &requests[1];
    assert_eq!(header(without, "x-amz-security-token"), None);
    assert!(
        !header(without, "authorization")
            .unwrap()
            .contains("x-amz-security-token")
    );
}

#[tokio::test]
async fn bedrock_stream_exception_and_http_errors() {
    let server = MockServer::start().await;
    let mut stream = frame("messageStart", json!({"role": "assistant"}));
    stream.extend(exception(
        "throttlingException",
        "Too many tokens, please wait.",
    ));
    Mock::given(method("POST"))
        .and(path("/model/m/converse-stream"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(stream, "application/vnd.amazon.eventstream"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/model/m/converse"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-amzn-ErrorType", "AccessDeniedException")
                .set_body_json(json!({"message": "You don't have access to the model with the specified model ID."})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/model/bad/converse"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "Malformed input request: extraneous key [foo]"})),
        )
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Bedrock,
        &server.uri(),
        &[("auth", "bearer"), ("region", "us-east-1")],
    );
    let Ok(Answer::Stream(mut s)) =
        adapter::chat(&http(), &p, Some(&key("k")), &simple_request("m"), true).await
    else {
        panic!("expected a stream")
    };
    assert!(matches!(s.next().await, Some(StreamItem::Data(_))));
    match s.next().await {
        Some(StreamItem::Error(e)) => {
            assert_eq!(e.class(), ErrorClass::StreamBroken);
            assert!(e.message.contains("throttlingException"));
        }
        other => panic!("{other:?}"),
    }
    let e = err(adapter::chat(&http(), &p, Some(&key("k")), &simple_request("m"), false).await);
    assert_eq!((e.status(), e.error_type()), (502, "upstream_auth_error"));
    let e = err(adapter::chat(&http(), &p, Some(&key("k")), &simple_request("bad"), false).await);
    assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
    assert!(e.message.contains("Malformed input request"));
    // An image by http URL cannot be sent to Bedrock: refused before any call.
    let image = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let e = err(adapter::chat(&http(), &p, Some(&key("k")), &image, false).await);
    assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
}

// ---------------------------------------------------------------- OpenAI-compatible deviations

#[tokio::test]
async fn mistral_and_groq_deviations_are_smoothed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })))
        .mount(&server)
        .await;
    let mut p = spec(
        ProviderKind::OpenaiCompatible,
        &format!("{}/v1", server.uri()),
        &[],
    );
    p.preset = Some("mistral".into());
    let req = json!({"model": "m", "seed": 7, "messages": [{"role": "user", "content": "x", "name": "bob"}], "logprobs": true});
    full(adapter::chat(&http(), &p, Some(&key("k")), &req, false).await).await;
    p.preset = Some("groq".into());
    full(adapter::chat(&http(), &p, Some(&key("k")), &req, false).await).await;
    let sent = server.received_requests().await.unwrap();
    let mistral = body_of(&sent[0]);
    assert_eq!(mistral["random_seed"], 7);
    assert!(mistral.get("seed").is_none());
    let groq = body_of(&sent[1]);
    assert!(groq.get("logprobs").is_none());
    assert!(groq["messages"][0].get("name").is_none());
    assert_eq!(groq["seed"], 7);
}

// ---------------------------------------------------------------- the whole catalog

/// A minimal valid answer in each wire format.
fn canned(kind: ProviderKind) -> ResponseTemplate {
    let body = match kind {
        ProviderKind::OpenaiCompatible | ProviderKind::Azure => json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }),
        ProviderKind::Anthropic => json!({
            "id": "msg", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "pong"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 2, "output_tokens": 1},
        }),
        ProviderKind::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "pong"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1},
        }),
        ProviderKind::Bedrock => json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "pong"}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 2, "outputTokens": 1},
        }),
        ProviderKind::Cohere => json!({
            "id": "co", "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "pong"}]},
            "usage": {"billed_units": {"input_tokens": 2, "output_tokens": 1}},
        }),
        ProviderKind::Stability => {
            json!({"image": "iVBORw0KGgo=", "finish_reason": "SUCCESS", "seed": 1})
        }
        ProviderKind::Elevenlabs => {
            return ResponseTemplate::new(200).set_body_raw(b"ID3audio".to_vec(), "audio/mpeg");
        }
        ProviderKind::Assemblyai => json!({"upload_url": "https://cdn.example/upload/1"}),
        ProviderKind::Replicate => json!({"id": "p1", "status": "starting"}),
        ProviderKind::Runway => json!({"id": "t1"}),
    };
    ResponseTemplate::new(200).set_body_json(body)
}

/// A media preset called through its media endpoint (its first model);
/// returns the model.
async fn call_media(spec: &ProviderSpec, key: &SecretString) -> String {
    let model = spec.models[0].clone();
    let answer = match spec.kind {
        ProviderKind::Stability | ProviderKind::Replicate | ProviderKind::Runway => {
            aigw_dispatcher::media::images(
                &http(),
                &egress(),
                spec,
                Some(key),
                &json!({"model": model, "prompt": "a lighthouse"}),
            )
            .await
        }
        ProviderKind::Elevenlabs => {
            aigw_dispatcher::media::speech(
                &http(),
                spec,
                Some(key),
                &json!({"model": model, "input": "pong", "voice": "voice-1"}),
            )
            .await
        }
        ProviderKind::Assemblyai => {
            aigw_dispatcher::media::transcriptions(
                &http(),
                spec,
                Some(key),
                &json!({"model": model, "response_format": "json",
                    "file": {"filename": "a.wav", "content_type": "audio/wav", "bytes": 4}}),
                bytes::Bytes::from_static(b"RIFF"),
            )
            .await
        }
        other => panic!("{other:?} is not a media kind"),
    };
    match answer {
        Ok(Answer::Media { usage, .. }) => {
            let units = match spec.kind {
                ProviderKind::Stability | ProviderKind::Replicate | ProviderKind::Runway => {
                    usage.images
                }
                ProviderKind::Elevenlabs => usage.characters,
                _ => usage.audio_seconds,
            };
            // One image, four characters ("pong"), two seconds of audio.
            let expected = match spec.kind {
                ProviderKind::Stability | ProviderKind::Replicate | ProviderKind::Runway => 1,
                ProviderKind::Elevenlabs => 4,
                _ => 2,
            };
            assert_eq!(units, expected, "{}", spec.name);
        }
        Ok(_) => panic!("expected a media answer"),
        Err(e) => panic!("upstream error: {e:?}"),
    }
    model
}

#[tokio::test]
async fn every_configurable_preset_works_with_only_its_key() {
    let sealer = Sealer::new(Some(&SecretString::from("m".repeat(32))));
    let catalog = catalog::catalog().expect("the shipped catalog is valid");
    let mut tried = 0;
    for preset in &catalog.preset {
        if !preset.configurable {
            let input = PresetInput {
                preset: preset.id.clone(),
                api_key: Some("k".into()),
                ..Default::default()
            };
            assert!(
                catalog::build_spec(&input, &sealer, PROVIDER_ID).is_err(),
                "{}",
                preset.id
            );
            continue;
        }
        let server = MockServer::start().await;
        let kind = preset.kind().unwrap();
        Mock::given(method("POST"))
            .respond_with(canned(kind))
            .expect(1)
            .mount(&server)
            .await;
        let api_key = format!("key-for-{}", preset.id);
        let mut input = PresetInput {
            preset: preset.id.clone(),
            api_key: Some(api_key.clone()),
            base_url: Some(server.uri()),
            ..Default::default()
        };
        for field in preset.required_fields() {
            match field.as_str() {
                "base_url" => {}
                "region" => input.region = Some("eu-west-1".into()),
                "account_id" => input.account_id = Some("acc-1".into()),
                other => panic!("{}: no test value for {other}", preset.id),
            }
        }
        if kind == ProviderKind::Azure {
            // Its deployments are what it serves.
            input.deployment = Some("dep-1".into());
        }
        let spec = catalog::build_spec(&input, &sealer, PROVIDER_ID)
            .unwrap_or_else(|e| panic!("{}: {e}", preset.id));
        assert_eq!(spec.kind, kind);
        assert!(!spec.models.is_empty());
        let opened = sealer
            .open(
                spec.sealed_credential.as_deref().unwrap(),
                &Binding::new(PROVIDER_ID, CredentialField::ApiKey),
            )
            .unwrap();
        if kind == ProviderKind::Assemblyai {
            // Submit and poll follow the upload.
            Mock::given(method("POST"))
                .and(path("/v2/transcript"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"id": "t1", "status": "queued"})),
                )
                .with_priority(1)
                .expect(1)
                .mount(&server)
                .await;
            Mock::given(method("GET"))
                .and(path("/v2/transcript/t1"))
                .respond_with(ResponseTemplate::new(200).set_body_json(
                    json!({"id": "t1", "status": "completed", "text": "pong", "audio_duration": 2}),
                ))
                .expect(1)
                .mount(&server)
                .await;
        }
        if matches!(kind, ProviderKind::Replicate | ProviderKind::Runway) {
            // The poll that follows the create.
            let done = if kind == ProviderKind::Replicate {
                json!({"id": "p1", "status": "succeeded", "output": ["https://cdn.example/a.webp"]})
            } else {
                json!({"id": "t1", "status": "SUCCEEDED", "output": ["https://cdn.example/a.png"]})
            };
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_body_json(done))
                .expect(1)
                .mount(&server)
                .await;
        }
        let model = if matches!(
            kind,
            ProviderKind::Stability
                | ProviderKind::Elevenlabs
                | ProviderKind::Assemblyai
                | ProviderKind::Replicate
                | ProviderKind::Runway
        ) {
            call_media(&spec, &opened).await
        } else {
            let model = spec.models[0].clone();
            let (body, usage) = full(
                adapter::chat(
                    &http(),
                    &spec,
                    Some(&opened),
                    &simple_request(&model),
                    false,
                )
                .await,
            )
            .await;
            assert_eq!(
                body["choices"][0]["message"]["content"], "pong",
                "{}",
                preset.id
            );
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2, 1));
            model
        };

        let req = if kind == ProviderKind::Assemblyai {
            let all = server.received_requests().await.unwrap();
            assert_eq!(all.len(), 3);
            for r in &all {
                assert_eq!(r.headers["authorization"], api_key.as_str());
            }
            all[0].clone()
        } else if matches!(kind, ProviderKind::Replicate | ProviderKind::Runway) {
            let all = server.received_requests().await.unwrap();
            assert_eq!(all.len(), 2);
            let poll = if kind == ProviderKind::Replicate {
                "/v1/predictions/p1"
            } else {
                for r in &all {
                    assert_eq!(r.headers["x-runway-version"], "2024-11-06");
                }
                "/v1/tasks/t1"
            };
            assert_eq!(all[1].url.path(), poll);
            assert_eq!(
                all[1].headers["authorization"],
                format!("Bearer {api_key}").as_str()
            );
            all[0].clone()
        } else {
            only_request(&server).await
        };
        let h = |name: &str| {
            req.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (auth_header, expected) = match preset.auth.as_str() {
            "bearer" => ("authorization", format!("Bearer {api_key}")),
            "x-api-key" => ("x-api-key", api_key.clone()),
            "x-goog-api-key" => ("x-goog-api-key", api_key.clone()),
            "api-key" => ("api-key", api_key.clone()),
            // Configured with only a key: a Bedrock API key, sent as Bearer.
            "sigv4-or-bearer" => ("authorization", format!("Bearer {api_key}")),
            "raw-key" => ("authorization", api_key.clone()),
            "xi-api-key" => ("xi-api-key", api_key.clone()),
            other => panic!("{}: unexpected auth {other}", preset.id),
        };
        assert_eq!(h(auth_header), Some(expected), "{}", preset.id);
        assert!(!req.url.as_str().contains(&api_key), "{}", preset.id);

        let preset_path = preset
            .base_url
            .as_deref()
            .unwrap()
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default()
            .replace("{account_id}", "acc-1");
        let expected_path = match kind {
            ProviderKind::OpenaiCompatible => format!("{preset_path}/chat/completions"),
            ProviderKind::Anthropic => "/v1/messages".into(),
            ProviderKind::Gemini => format!(
                "{preset_path}/models/{}:generateContent",
                percent_encode(&model)
            ),
            ProviderKind::Azure => "/openai/deployments/dep-1/chat/completions".into(),
            ProviderKind::Bedrock => format!("/model/{}/converse", percent_encode(&model)),
            ProviderKind::Cohere => "/v2/chat".into(),
            ProviderKind::Stability => format!("{preset_path}/stable-image/generate/core"),
            ProviderKind::Elevenlabs => "/v1/text-to-speech/voice-1".into(),
            ProviderKind::Assemblyai => "/v2/upload".into(),
            ProviderKind::Replicate => format!("{preset_path}/models/{model}/predictions"),
            ProviderKind::Runway => format!("{preset_path}/text_to_image"),
        };
        assert_eq!(req.url.path(), expected_path, "{}", preset.id);
        tried += 1;
    }
    // 29 presets, of which Midjourney cannot be configured; Stability,
    // ElevenLabs, AssemblyAI, Replicate and Runway are called through their
    // media endpoints.
    assert_eq!(tried, 28);
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn azure_v1_api_sends_the_deployment_as_model() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .and(header("api-key", "az-key"))
        .respond_with(canned(ProviderKind::Azure))
        .expect(1)
        .mount(&server)
        .await;
    let p = spec(
        ProviderKind::Azure,
        &format!("{}/openai/v1", server.uri()),
        &[],
    );
    full(
        adapter::chat(
            &http(),
            &p,
            Some(&key("az-key")),
            &simple_request("prod-gpt"),
            false,
        )
        .await,
    )
    .await;
    let req = only_request(&server).await;
    assert!(req.url.query().is_none());
    assert_eq!(body_of(&req)["model"], "prod-gpt");
}

#[tokio::test]
async fn replicate_errors_are_classified() {
    let body = json!({"model": "black-forest-labs/flux-schnell", "prompt": "x"});
    for (status, answer, caller, class) in [
        (
            401,
            json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}),
            502,
            ErrorClass::Upstream,
        ),
        (
            422,
            json!({"title": "Input validation failed", "detail": "- input.num_outputs: Must be less than or equal to 4", "status": 422}),
            422,
            ErrorClass::Client,
        ),
        (
            429,
            json!({"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429}),
            429,
            ErrorClass::RateLimited,
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(
                "/v1/models/black-forest-labs/flux-schnell/predictions",
            ))
            .respond_with(ResponseTemplate::new(status).set_body_json(&answer))
            .expect(1)
            .mount(&server)
            .await;
        let e = err(aigw_dispatcher::media::images(
            &http(),
            &egress(),
            &spec(
                ProviderKind::Replicate,
                &format!("{}/v1", server.uri()),
                &[],
            ),
            Some(&key("r8_k")),
            &body,
        )
        .await);
        assert_eq!((e.status(), e.class()), (caller, class), "{status}");
        // The provider's message is relayed, except for an authentication
        // failure (it may echo the credential).
        assert_eq!(
            e.message.contains(answer["detail"].as_str().unwrap()),
            status != 401,
            "{status}: {}",
            e.message
        );
    }
}
