//! `/v1/jobs` runs a body of any ingress dialect: an envelope's `url` names
//! the route whose dialect its `body` speaks. Translated to a provider that
//! speaks another dialect, passed through to one that speaks the same, and
//! the result kept in the caller's dialect, billed like any job.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, user};
use crate::jobs::{submit, submit_ok, upstream, wait_status};

#[tokio::test]
async fn messages_and_gemini_bodies_run_as_jobs_and_keep_their_dialect() {
    let env = TestEnv::start().await;
    let openai = upstream(&env, 0).await;
    let (_, key) = env.add_key("dialect-jobs").await;

    // A Messages body, translated for an OpenAI-compatible provider.
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/messages", "metadata": {"batch": "b1"},
               "body": {"model": "m", "max_tokens": 100, "system": "be brief",
                        "messages": [{"role": "user", "content": "summarise"}]}}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    let result = &job["result"];
    assert_eq!(result["type"], "message", "{job}");
    assert_eq!(result["role"], "assistant");
    assert_eq!(result["content"][0]["type"], "text");
    assert_eq!(result["content"][0]["text"], "done in the background");
    assert_eq!(result["usage"]["input_tokens"], 10);
    assert_eq!(result["usage"]["output_tokens"], 20);
    assert_eq!(job["metadata"]["batch"], "b1");
    assert_eq!(job["usage"]["total_tokens"], 30);
    // 10 prompt tokens at $1/M plus 20 completion tokens at $2/M.
    assert_eq!(job["cost_usd"], json!(0.00005));
    let sent: Value = openai.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );

    // A generateContent body, likewise.
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1beta/models/m:generateContent",
               "body": {"contents": [{"role": "user", "parts": [{"text": "summarise"}]}]}}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    let result = &job["result"];
    assert_eq!(
        result["candidates"][0]["content"]["parts"][0]["text"], "done in the background",
        "{job}"
    );
    assert_eq!(result["usageMetadata"]["promptTokenCount"], 10);
    assert_eq!(result["usageMetadata"]["candidatesTokenCount"], 20);

    // The chat form still works in an envelope, and bad envelopes are 400s.
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/chat/completions", "body": {"model": "m", "messages": user("hi")}}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    assert_eq!(job["result"]["object"], "chat.completion");
    for (body, param) in [
        (
            json!({"url": "/v1/audio/speech", "body": {"model": "m", "input": "x"}}),
            "url",
        ),
        (
            json!({"url": "/v1/messages", "body": {"model": "m", "max_tokens": 5,
            "stream": true, "messages": [{"role": "user", "content": "hi"}]}}),
            "stream",
        ),
        (
            json!({"url": "/v1beta/models/m:streamGenerateContent",
            "body": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}),
            "url",
        ),
    ] {
        let r = submit(&env, &key, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    assert_eq!(openai.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_messages_job_goes_verbatim_to_an_anthropic_provider() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig-1"},
                        {"type": "text", "text": "native answer"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 7}})))
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": mock.uri(), "models": ["claude-up"],
            "prices": {"claude-up": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("native-job").await;
    let body = json!({"model": "claude-up", "max_tokens": 64,
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]});
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/messages", "body": body.clone()}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    assert_eq!(
        job["result"]["content"][1]["text"], "native answer",
        "{job}"
    );
    assert_eq!(job["result"]["content"][0]["signature"], "sig-1");
    assert_eq!(job["usage"]["total_tokens"], 19);
    // The upstream got the caller's body: cache hints, thinking and
    // metadata untouched.
    let received = mock.received_requests().await.unwrap();
    let sent: Value = received[0].body_json().unwrap();
    assert_eq!(sent, body);
    assert_eq!(received[0].headers["x-api-key"], "sk-ant-upstream");
}
