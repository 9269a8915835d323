//! Same dialect to same dialect is a passthrough byte for byte: the
//! upstream gets the very bytes the caller sent (key order, whitespace,
//! escapes and number spellings included), apart from the model's, also
//! when the body is too large for one NATS message and waits in the
//! object store.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv};

/// A provider of `preset` at `mock`, serving `model`, and an alias to it.
async fn provider_and_alias(env: &TestEnv, preset: &str, mock: &MockServer, model: &str) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "up", "preset": preset, "api_key": "upstream-secret",
            "base_url": mock.uri(), "models": [model]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/aliases")
        .json(&json!({"name": "alias", "targets": [{"provider": "up", "model": model}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// A body no serializer writes: keys out of order, spaces and a newline,
/// an escaped and a raw non-ASCII character, `1.0` and `1e-05`, and a
/// `"model"` key nested where it must not be touched.
fn odd_messages_body(model: &str, filler: &str) -> String {
    format!(
        "{{ \"messages\" : [{{\"role\":\"user\",\"content\":[{{\"type\":\"text\",\"text\":\"caf\\u00e9 und Stra\u{df}e {filler}\",\"cache_control\":{{\"type\":\"ephemeral\"}}}}]}}],\n  \"temperature\":1.0, \"top_p\":1e-05,\"model\":\"{model}\",\"max_tokens\":64,\"metadata\":{{\"user_id\":\"u\",\"model\":\"not me\"}} }}"
    )
}

#[tokio::test]
async fn anthropic_bodies_reach_an_anthropic_upstream_byte_for_byte_but_the_model() {
    let env = TestEnv::with(Options {
        max_body_bytes: 10 * 1024 * 1024,
        ..Default::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}})))
        .mount(&mock)
        .await;
    provider_and_alias(&env, "anthropic", &mock, "claude-haiku-4-5").await;
    let (_, key) = env.add_key("bytes").await;
    // A small body, and one over a NATS message (1 MiB), which waits in
    // the object store.
    for filler in ["", &"x".repeat(1_500_000)] {
        let sent = odd_messages_body("alias", filler);
        let r = env
            .http
            .post(env.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(sent.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let requests = mock.received_requests().await.unwrap();
        let got = String::from_utf8(requests.last().unwrap().body.clone()).unwrap();
        let expected = sent.replace("\"model\":\"alias\"", "\"model\":\"claude-haiku-4-5\"");
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "the upstream body differs from the caller's"
        );
    }
}

#[tokio::test]
async fn gemini_bodies_reach_a_gemini_upstream_byte_for_byte() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-real:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6}})))
        .mount(&mock)
        .await;
    provider_and_alias(&env, "gemini", &mock, "gemini-real").await;
    let (_, key) = env.add_key("bytes").await;
    let sent = "{\"generationConfig\":{\"temperature\":1.0,\"topP\":1e-05},\n \"contents\" : [{\"role\":\"user\",\"parts\":[{\"text\":\"caf\\u00e9\"}]}], \"safetySettings\":[] }";
    let r = env
        .http
        .post(env.url("/v1beta/models/alias:generateContent"))
        .header("x-goog-api-key", &key)
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["candidates"][0]["content"]["parts"][0]["text"], "ok");
    let requests = mock.received_requests().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&requests[0].body), sent);
}
