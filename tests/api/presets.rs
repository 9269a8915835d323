//! Presets through the real HTTP API: configured with only a key (pointed at
//! mocks by a base_url override), used through aigw, costs in /stats.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, user, wait_until};

async fn add_preset(env: &TestEnv, body: Value) -> reqwest::Response {
    env.admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_catalog_lists_29_presets_and_refuses_midjourney() {
    let env = TestEnv::start().await;
    let all: Value = env
        .admin(reqwest::Method::GET, "/admin/api/presets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 29);
    let china: Value = env
        .admin(reqwest::Method::GET, "/admin/api/presets?category=china")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(china["data"].as_array().unwrap().len(), 8);
    let r = add_preset(&env, json!({"preset": "midjourney", "api_key": "x"})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("api"),
        "{body}"
    );
    let r = add_preset(&env, json!({"preset": "no-such-thing", "api_key": "x"})).await;
    assert_eq!(r.status(), 400);
    let r = add_preset(&env, json!({"preset": "azure", "api_key": "x"})).await;
    assert_eq!(r.status(), 400, "azure needs its resource and deployment");
}

#[tokio::test]
async fn deepseek_and_anthropic_presets_with_only_a_key() {
    let env = TestEnv::start().await;
    let deepseek = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header("authorization", "Bearer sk-deepseek"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "d1", "object": "chat.completion", "created": 1, "model": "deepseek-v4-flash",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "深度求索"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}
        })))
        .expect(1)
        .mount(&deepseek)
        .await;
    let anthropic = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 50, "output_tokens": 20}
        })))
        .expect(1)
        .mount(&anthropic)
        .await;
    let r = add_preset(
        &env,
        json!({"preset": "deepseek", "api_key": "sk-deepseek", "base_url": deepseek.uri()}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = add_preset(
        &env,
        json!({"preset": "anthropic", "api_key": "sk-ant", "base_url": anthropic.uri()}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["preset"], "anthropic");
    assert_eq!(created["has_credential"], true);
    let (_, key) = env.add_key("presets").await;

    let r = env
        .chat(
            &key,
            json!({"model": "deepseek-v4-flash", "messages": user("你好")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "deepseek");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "深度求索");

    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = env
        .chat(
            &key,
            json!({"model": "claude-haiku-4-5", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"}], "tools": tools}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], 50);
    let sent: Value = anthropic.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["tools"][0]["name"], "get_weather");

    // Costs from the catalog prices: DeepSeek 1000 x $0.14/M + 1000 x $0.28/M
    // = 420 micro-dollars; Claude Haiku 50 x $1/M + 20 x $5/M = 150.
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 2
    })
    .await;
    let stats = env.stats(&key).await;
    assert_eq!(stats["totals"]["cost_micros"], 570, "{stats}");
}

/// Temporary AWS credentials expire: PATCH renews them in place, and the
/// next calls are signed with the new ones.
#[tokio::test]
async fn bedrock_temporary_credentials_are_renewed_with_patch() {
    let env = TestEnv::start().await;
    let bedrock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
        })))
        .mount(&bedrock)
        .await;
    let r = add_preset(
        &env,
        json!({"preset": "bedrock", "base_url": bedrock.uri(), "region": "us-east-1",
            "aws_access_key_id": "ASIAFIRST", "aws_secret_access_key": "first-secret",
            "aws_session_token": "first-token", "models": ["amazon.nova-pro-v1:0"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let path = format!("/admin/api/providers/{}", created["id"].as_str().unwrap());
    let (_, key) = env.add_key("bedrock").await;
    // Chats once; returns the (key id, session token) Bedrock got.
    let chat = || async {
        let r = env
            .chat(
                &key,
                json!({"model": "amazon.nova-pro-v1:0", "messages": user("hi")}),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let sent = bedrock.received_requests().await.unwrap();
        let last = sent.last().unwrap();
        let header = |name: &str| {
            last.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let auth = header("authorization").unwrap();
        let key_id = auth.split("Credential=").nth(1).unwrap();
        let key_id = key_id.split('/').next().unwrap().to_string();
        (key_id, header("x-amz-security-token"))
    };
    let signed =
        |key_id: &str, token: Option<&str>| (key_id.to_string(), token.map(str::to_string));
    assert_eq!(chat().await, signed("ASIAFIRST", Some("first-token")));

    let r = env
        .admin(reqwest::Method::PATCH, &path)
        .json(&json!({"aws_access_key_id": "ASIASECOND",
            "aws_secret_access_key": "second-secret", "aws_session_token": "second-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("second-secret") && !text.contains("second-token"));
    // The dispatcher picks the change up a moment later.
    let second = signed("ASIASECOND", Some("second-token"));
    wait_until(Duration::from_secs(10), || async { chat().await == second }).await;

    let r = env
        .admin(reqwest::Method::PATCH, &path)
        .json(&json!({"aws_session_token": ""}))
        .send()
        .await
        .unwrap();
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["has_session_token"], false);
    let without = signed("ASIASECOND", None);
    wait_until(Duration::from_secs(10), || async {
        chat().await == without
    })
    .await;

    // Only a Bedrock provider that signs with AWS keys takes them.
    let r = add_preset(&env, json!({"preset": "deepseek", "api_key": "sk-x"})).await;
    let deepseek: Value = r.json().await.unwrap();
    let r = env
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/api/providers/{}", deepseek["id"].as_str().unwrap()),
        )
        .json(&json!({"aws_session_token": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
