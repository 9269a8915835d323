//! Structured output and reasoning across dialects to native upstreams:
//! what a caller asks for in its dialect (`text.format` json_schema,
//! `thinkingConfig`, `response_format`, `reasoning_effort`) reaches an
//! Anthropic or Gemini upstream in that provider's own terms, and what
//! comes back lands in the caller's place: the JSON answer as the text,
//! thinking as reasoning, whole and streamed.

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse, sse_response};
use crate::harness::TestEnv;
use crate::responses::responses;

const SCHEMA_ANSWER: &str = r#"{"city":"Paris","sunny":true}"#;

/// An Anthropic upstream: a JSON-tool call when it is offered (whole or
/// streamed), else a thinking block and a text.
fn anthropic(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let json_tool = b["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["name"] == "aigw_json_answer");
    let usage = json!({"input_tokens": 30, "output_tokens": 12});
    if b["stream"] == true {
        let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 30, "output_tokens": 1}}});
        let events = [
            (Some("message_start"), start),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block":
                {"type": "tool_use", "id": "toolu_1", "name": "aigw_json_answer", "input": {}}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\","}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "\"sunny\":true}"}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 12}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ];
        assert!(json_tool, "only the JSON tool is streamed here");
        return sse_response(sse(&events, "\n"));
    }
    let content = if json_tool {
        json!([{"type": "tool_use", "id": "toolu_1", "name": "aigw_json_answer",
            "input": serde_json::from_str::<Value>(SCHEMA_ANSWER).unwrap()}])
    } else {
        json!([{"type": "thinking", "thinking": "Weighing it.", "signature": "sig"},
            {"type": "text", "text": "Sunny."}])
    };
    let stop = if json_tool { "tool_use" } else { "end_turn" };
    ResponseTemplate::new(200).set_body_json(json!({"id": "msg_1", "type": "message",
        "role": "assistant", "model": "claude-x", "content": content, "stop_reason": stop,
        "stop_sequence": null, "usage": usage}))
}

/// A Gemini upstream: a thought and a JSON text.
fn gemini(_: &Request) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Weighing it.", "thought": true}, {"text": SCHEMA_ANSWER}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10,
            "thoughtsTokenCount": 5, "totalTokenCount": 45},
        "modelVersion": "gemini-x"}))
}

async fn providers(env: &TestEnv) -> (MockServer, MockServer) {
    let claude = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(anthropic)
        .mount(&claude)
        .await;
    let google = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1beta/models/gemini-x:generateContent$"))
        .respond_with(gemini)
        .mount(&google)
        .await;
    for provider in [
        json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": claude.uri(), "models": ["claude-x"]}),
        json!({"name": "google", "preset": "gemini", "api_key": "g-upstream",
            "base_url": google.uri(), "models": ["gemini-x"]}),
    ] {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&provider)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    (claude, google)
}

/// Gemini's `generateContent` for `claude-x`, with `config` as its
/// `generationConfig`.
async fn generate(env: &TestEnv, key: &str, config: Value) -> reqwest::Response {
    env.http
        .post(env.url("/v1beta/models/claude-x:generateContent"))
        .header("x-goog-api-key", key)
        .json(
            &json!({"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
            "generationConfig": config}),
        )
        .send()
        .await
        .unwrap()
}

fn last_body(requests: &[Request]) -> Value {
    body(requests.last().expect("the upstream was called"))
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"], "additionalProperties": false})
}

#[tokio::test]
async fn a_json_schema_reaches_anthropic_as_a_forced_tool_and_returns_as_text() {
    let env = TestEnv::start().await;
    let (claude, _) = providers(&env).await;
    let (_, key) = env.add_key("cross").await;
    let request = json!({"model": "claude-x", "input": "Weather in Paris?",
        "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema(), "strict": true}}});

    let r = responses(&env, &key, &request).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let sent = last_body(&claude.received_requests().await.unwrap());
    assert_eq!(sent["tools"][0]["name"], "aigw_json_answer");
    assert_eq!(sent["tools"][0]["input_schema"], schema());
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "aigw_json_answer"})
    );
    assert!(sent.get("thinking").is_none(), "{sent}");
    assert_eq!(answer["status"], "completed", "{answer}");
    let output = answer["output"].as_array().unwrap();
    assert_eq!(
        output.len(),
        1,
        "the JSON is the message, no tool call: {answer}"
    );
    assert_eq!(output[0]["type"], "message");
    let text = output[0]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        serde_json::from_str::<Value>(SCHEMA_ANSWER).unwrap()
    );

    // Streamed: the tool's input arrives as text deltas.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let r = responses(&env, &key, &streamed).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, SCHEMA_ANSWER, "{text}");
    assert!(!text.contains("function_call"), "{text}");
    assert!(text.contains("event: response.completed"), "{text}");
}

#[tokio::test]
async fn a_gemini_thinking_budget_reaches_anthropic_as_thinking_and_returns_as_thoughts() {
    let env = TestEnv::start().await;
    let (claude, _) = providers(&env).await;
    let (_, key) = env.add_key("cross").await;
    let r = generate(
        &env,
        &key,
        json!({"temperature": 0, "maxOutputTokens": 20000,
            "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": true}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let sent = last_body(&claude.received_requests().await.unwrap());
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(sent["max_tokens"], 20000);
    assert!(
        sent.get("temperature").is_none(),
        "Anthropic refuses sampling settings with thinking: {sent}"
    );
    assert_eq!(
        answer["candidates"][0]["content"]["parts"],
        json!([{"text": "Weighing it.", "thought": true}, {"text": "Sunny."}])
    );

    // A cap too small for Anthropic's least budget: no thinking, and the
    // sampling settings stay.
    let r = generate(
        &env,
        &key,
        json!({"temperature": 0, "maxOutputTokens": 500,
            "thinkingConfig": {"thinkingBudget": 8192}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let sent = last_body(&claude.received_requests().await.unwrap());
    assert!(sent.get("thinking").is_none(), "{sent}");
    assert_eq!(sent["temperature"].as_f64(), Some(0.0), "{sent}");
}

#[tokio::test]
async fn chat_structured_output_and_effort_reach_gemini_in_its_terms() {
    let env = TestEnv::start().await;
    let (_, google) = providers(&env).await;
    let (_, key) = env.add_key("cross").await;
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({"model": "gemini-x", "messages": [{"role": "user", "content": "Weather?"}],
            "reasoning_effort": "low",
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "weather", "schema": schema(), "strict": true}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let sent = last_body(&google.received_requests().await.unwrap());
    let config = &sent["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({"type": "object", "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
            "required": ["city", "sunny"]}),
        "Gemini's schema subset: no additionalProperties"
    );
    assert_eq!(
        config["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], SCHEMA_ANSWER);
    assert_eq!(message["reasoning_content"], "Weighing it.");
}
