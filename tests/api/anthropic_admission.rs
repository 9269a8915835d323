//! Admission on `/v1/messages` beyond what `anthropic_messages.rs` checks:
//! worst-case budget holds for what only an Anthropic-native provider
//! reads (a document, unreadable to the OpenAI translation admission works
//! on, is still held as a whole file, so a key cannot send more than its
//! budget covers through this route), and `Idempotency-Key`.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::anthropic_messages::{messages, openai_upstream};
use crate::harness::{TestEnv, user};

#[tokio::test]
async fn a_document_is_held_as_a_whole_file() {
    let env = TestEnv::start().await;
    let claude = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}})))
        .mount(&claude)
        .await;
    // A model the catalog does not know, so no context window caps the hold.
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": claude.uri(), "models": ["claude-x"],
            "prices": {"claude-x": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "half-a-dollar", "budget_usd": 0.5, "budget_period": "total"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    // A plain message fits the budget.
    let r = messages(
        &env,
        &key,
        &json!({"model": "claude-x", "max_tokens": 10, "messages": user("hi")}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A PDF by URL is a few bytes here, but up to 500,000 tokens ($1.00) at
    // the provider: refused before any call.
    let calls = claude.received_requests().await.unwrap().len();
    let r = messages(
        &env,
        &key,
        &json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "text", "text": "Summarize."}]}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "rate_limit_error", "{b}");
    assert_eq!(claude.received_requests().await.unwrap().len(), calls);
}

#[tokio::test]
async fn an_idempotent_message_runs_and_bills_once() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .expect(1)
        .mount(&mock)
        .await;
    env.add_provider("oai", &format!("{}/v1", mock.uri()), &["gpt-x"])
        .await;
    let (_, key) = env.add_key("idem").await;
    let send = |body: serde_json::Value| {
        env.http
            .post(env.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("Idempotency-Key", "msg-once-1")
            .json(&body)
            .send()
    };
    let body = json!({"model": "gpt-x", "max_tokens": 10, "messages": user("hi")});
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["type"], "message");
    let again = send(body).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    // Not with a stream: refused in Anthropic's shape.
    let r =
        send(json!({"model": "gpt-x", "max_tokens": 10, "stream": true, "messages": user("hi")}))
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
}
