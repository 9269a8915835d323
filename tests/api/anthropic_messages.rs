//! Anthropic's Messages API (`/v1/messages`): through the official anthropic
//! Python SDK to an OpenAI-compatible upstream (translated both ways,
//! streaming and tools included) and to an Anthropic upstream (verbatim
//! both ways); errors in Anthropic's shape; and the same admission as
//! `/v1/chat/completions` (scopes, budgets), billed to the micro-dollar.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse, sse_response};
use crate::harness::{TestEnv, user};

/// An OpenAI-compatible upstream: a tool call when tools are offered and
/// no result came back yet (streamed: reasoning first, then the call's
/// arguments in two pieces), else a text answer; usage with cache reads so
/// the token classes show in Anthropic's usage.
pub(crate) fn openai_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap_or("m").to_string();
    let usage = json!({"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020,
        "prompt_tokens_details": {"cached_tokens": 600}});
    let messages = b["messages"].as_array().cloned().unwrap_or_default();
    let answered = messages.iter().any(|m| m["role"] == "tool");
    if b["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = if b.get("tools").is_some() && !answered {
            vec![
                (
                    None,
                    chunk(
                        json!({"role": "assistant", "reasoning_content": "Paris, then."}),
                        Value::Null,
                    ),
                ),
                (
                    None,
                    chunk(
                        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
                        Value::Null,
                    ),
                ),
                (
                    None,
                    chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                        Value::Null,
                    ),
                ),
                (None, chunk(json!({}), json!("tool_calls"))),
            ]
        } else {
            vec![
                (
                    None,
                    chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                ),
                (None, chunk(json!({"content": "pong"}), Value::Null)),
                (None, chunk(json!({"content": " streamed"}), Value::Null)),
                (None, chunk(json!({}), json!("stop"))),
            ]
        };
        events.push((
            None,
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [], "usage": usage}),
        ));
        return sse_response(sse(&events, "\n") + "data: [DONE]\n\n");
    }
    let message = if b.get("tools").is_some() && !answered {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    } else if answered {
        json!({"role": "assistant", "content": "It is sunny."})
    } else {
        json!({"role": "assistant", "content": "pong"})
    };
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "c1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage}))
}

/// A provider `oai` serving `gpt-x` at $2/$8 per million tokens, cache
/// reads at $0.50.
pub(crate) async fn openai_provider(env: &TestEnv, mock: &MockServer) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret", "models": ["gpt-x"],
            "prices": {"gpt-x": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0,
                "cached_input_usd_per_mtok": 0.5}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// 400 fresh input tokens at $2, 600 cache reads at $0.50, 20 output at $8.
pub(crate) const COST_MICROS: i64 = 800 + 300 + 160;

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the anthropic SDK into .tools/"
    );
    python
}

pub(crate) async fn run_sdk(env: &TestEnv, key: &str, model: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/anthropic_sdk.py");
    let (python, base, key, model) = (
        python(),
        env.base.clone(),
        key.to_string(),
        model.to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("ANTHROPIC_BASE_URL", base)
            .env("ANTHROPIC_API_KEY", key)
            .env("MODEL", model)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

pub(crate) async fn messages(env: &TestEnv, key: &str, body: &Value) -> reqwest::Response {
    env.http
        .post(env.url("/v1/messages?beta=true"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

pub(crate) fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// The event names of an SSE body, checking each `event:` line names its
/// data's `type`.
fn event_names(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("an event without its name: {e:?}"));
            let data: Value =
                serde_json::from_str(e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())
                    .unwrap();
            assert_eq!(data["type"], name, "{e}");
            name.to_string()
        })
        .collect()
}

/// What `tests/sdk/anthropic_sdk.py` prints when every call went right,
/// against either mock upstream (they answer alike, with the same usage, at
/// the prices of [`COST_MICROS`]).
pub(crate) fn assert_sdk_output(out: &str) {
    assert!(out.contains("message: pong\n"), "{out}");
    assert!(out.contains("stop: end_turn\n"), "{out}");
    assert!(
        out.contains(r#"usage: {"cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0}, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 600, "input_tokens": 400, "output_tokens": 20}"#),
        "{out}"
    );
    assert!(out.contains("cost header: 0.001260\n"), "{out}");
    assert!(
        out.contains("stream events: message_start,content_block_start,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop\n"),
        "{out}"
    );
    assert!(out.contains("stream text: pong streamed\n"), "{out}");
    assert!(out.contains("stream stop: end_turn\n"), "{out}");
    assert!(out.contains("stream usage: 400 20\n"), "{out}");
    assert!(
        out.contains(r#"tool call: get_weather {"city": "Paris"} tool_use"#),
        "{out}"
    );
    assert!(out.contains("tool answer: It is sunny.\n"), "{out}");
    assert!(
        out.contains(
            r#"stream tool call: thinking,tool_use get_weather {"city": "Paris"} tool_use"#
        ),
        "{out}"
    );
    assert!(out.contains("count: "), "{out}");
    assert!(out.contains("bad key: 401 authentication_error\n"), "{out}");
    assert!(
        out.contains("bad body: 400 invalid_request_error\n"),
        "{out}"
    );
}

#[tokio::test]
async fn the_anthropic_sdk_works_against_an_openai_upstream() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("sdk").await;
    let out = run_sdk(&env, &key, "gpt-x").await;
    assert_sdk_output(&out);

    // The tool round trip reached the upstream in OpenAI's shape.
    let requests = mock.received_requests().await.unwrap();
    let round_trip = requests
        .iter()
        .map(body)
        .find(|b| {
            b["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["role"] == "tool")
        })
        .expect("the tool result reached the upstream");
    let turns = round_trip["messages"].as_array().unwrap();
    assert_eq!(turns[1]["tool_calls"][0]["id"], "call_1", "{round_trip}");
    assert_eq!(
        turns[2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
    );
    assert_eq!(round_trip["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(round_trip["model"], "gpt-x");
    // The advisory system-block cache hint was dropped, the text kept.
    let first = body(&requests[0]);
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );

    // The exact stream, ping included, and what it was billed.
    let r = messages(
        &env,
        &key,
        &json!({"model": "gpt-x", "max_tokens": 50, "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    assert_eq!(
        event_names(&text),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ],
        "{text}"
    );
    assert!(text.contains(r#""cache_read_input_tokens":600"#), "{text}");
    let events = env.wait_recorded(&id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 1000, "{done}");
    assert_eq!(done["usage"]["cached_tokens"], 600, "{done}");
    assert_eq!(done["cost_micros"], COST_MICROS, "{done}");
}

#[tokio::test]
async fn anthropic_to_anthropic_is_verbatim_both_ways() {
    let env = TestEnv::start().await;
    let claude = MockServer::start().await;
    let usage = json!({"input_tokens": 100, "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 50});
    let answer = json!({"id": "msg_up", "type": "message", "role": "assistant",
        "model": "claude-haiku-4-5", "stop_reason": "end_turn", "stop_sequence": null,
        "content": [{"type": "thinking", "thinking": "hm", "signature": "sig-up"},
            {"type": "text", "text": "pong", "citations": null}],
        "usage": usage, "x_upstream_extra": true});
    let stream = sse(
        &[
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_up", "type": "message",
                    "role": "assistant", "model": "claude-haiku-4-5", "content": [],
                    "stop_reason": null, "stop_sequence": null, "usage": usage}}),
            ),
            (Some("ping"), json!({"type": "ping"})),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "signature_delta", "signature": "sig-up"}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 50}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ],
        "\n",
    );
    let (answer_for, stream_for) = (answer.clone(), stream.clone());
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(move |r: &Request| {
            if body(r)["stream"] == true {
                sse_response(stream_for.clone())
            } else {
                ResponseTemplate::new(200).set_body_json(answer_for.clone())
            }
        })
        .mount(&claude)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream", "base_url": claude.uri(),
            "models": ["claude-haiku-4-5"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/aliases")
        .json(&json!({"name": "claude-alias", "targets": [{"provider": "claude", "model": "claude-haiku-4-5"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("native").await;

    // What only Anthropic reads, and a field nobody knows yet.
    let sent = json!({
        "model": "claude-alias", "max_tokens": 2000,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "earlier", "signature": "sig-earlier"},
                {"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}]},
        ],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        "x_future_field": {"nested": [1, "two"]},
    });
    let r = env
        .http
        .post(env.url("/v1/messages"))
        .bearer_auth(&key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got, answer, "the answer comes back verbatim");
    let requests = claude.received_requests().await.unwrap();
    let upstream = &requests[0];
    let mut expected = sent.clone();
    expected["model"] = json!("claude-haiku-4-5");
    assert_eq!(body(upstream), expected, "only the model is renamed");
    assert_eq!(upstream.headers["x-api-key"], "sk-ant-upstream");
    assert_eq!(upstream.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        upstream.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert!(upstream.headers.get("authorization").is_none());
    let events = env.wait_recorded(&id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 5100, "{done}");
    assert_eq!(done["usage"]["cached_tokens"], 2000, "{done}");
    assert_eq!(done["usage"]["cache_write_5m_tokens"], 1000, "{done}");
    assert_eq!(done["usage"]["cache_write_1h_tokens"], 2000, "{done}");
    assert_eq!(done["usage"]["completion_tokens"], 50, "{done}");

    // Streamed: the upstream's events, byte for byte, but for the recorded
    // cost aigw adds to `message_delta`'s usage (`usage.cost_usd`).
    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    let r = messages(&env, &key, &streamed).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    let at = text
        .find("\"cost_usd\":")
        .expect("the cost in message_delta");
    let len = text[at..].find([',', '}']).unwrap();
    let cost: f64 = text[at + "\"cost_usd\":".len()..at + len].parse().unwrap();
    assert!(cost > 0.0, "{text}");
    let without = format!(
        "{}{}",
        &text[..at],
        text[at + len..].trim_start_matches(',')
    );
    assert_eq!(without, stream);
    let events = env.wait_recorded(&id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 5100, "{done}");
    assert_eq!(done["usage"]["completion_tokens"], 50, "{done}");
}

#[tokio::test]
async fn messages_are_held_to_the_same_admission_as_chat_completions() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let create = |settings: Value| {
        let env = &env;
        async move {
            let r = env
                .admin(reqwest::Method::POST, "/admin/api/keys")
                .json(&settings)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let b: Value = r.json().await.unwrap();
            b["key"].as_str().unwrap().to_string()
        }
    };
    let anthropic = json!({"model": "gpt-x", "max_tokens": 100, "messages": user("x")});
    let chat = json!({"model": "gpt-x", "max_tokens": 100, "messages": user("x")});

    // A key scoped to another model: refused on both routes.
    let scoped = create(json!({"name": "scoped", "allowed_models": ["other"]})).await;
    assert_eq!(env.chat(&scoped, chat.clone()).await.status(), 403);
    let r = messages(&env, &scoped, &anthropic).await;
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "permission_error", "{b}");
    let r = env
        .http
        .post(env.url("/v1/messages/count_tokens"))
        .header("x-api-key", &scoped)
        .json(&json!({"model": "gpt-x", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A budget below one worst case (100 output tokens at $8/M = 800 µ$
    // plus the input): refused on both routes, before any provider call.
    let calls = mock.received_requests().await.unwrap().len();
    let poor =
        create(json!({"name": "poor", "budget_usd": 0.0005, "budget_period": "total"})).await;
    let r = env.chat(&poor, chat.clone()).await;
    assert_eq!(r.status(), 429);
    let r = messages(&env, &poor, &anthropic).await;
    assert_eq!(r.status(), 429);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "rate_limit_error", "{b}");
    assert_eq!(mock.received_requests().await.unwrap().len(), calls);

    // An RPM of 1: the second request is refused, whichever route.
    let limited = create(json!({"name": "rpm", "rpm": 1})).await;
    assert_eq!(messages(&env, &limited, &anthropic).await.status(), 200);
    let r = env.chat(&limited, chat.clone()).await;
    assert_eq!(r.status(), 429);
    let r = messages(&env, &limited, &anthropic).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());

    // Errors in Anthropic's shape: bad key, bad JSON, bad body, a field the
    // target cannot express, an unknown model.
    let (_, key) = env.add_key("plain").await;
    let r = messages(&env, "aig_wrong", &anthropic).await;
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "authentication_error", "{b}");
    let r = env
        .http
        .post(env.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
    for (bad, names) in [
        (
            json!({"model": "gpt-x", "messages": user("x")}),
            "max_tokens",
        ),
        (
            json!({"model": "gpt-x", "max_tokens": 5, "top_k": 3, "messages": user("x")}),
            "top_k",
        ),
        (
            json!({"model": "gpt-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
            "messages[0].content[0]",
        ),
    ] {
        let r = messages(&env, &key, &bad).await;
        assert_eq!(r.status(), 400, "{bad}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");
    }
    let r = messages(
        &env,
        &key,
        &json!({"model": "nobody-serves-this", "max_tokens": 5, "messages": user("x")}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "not_found_error", "{b}");
}

#[tokio::test]
async fn a_request_translates_field_by_field_to_an_openai_upstream() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat sat"},
                "finish_reason": "length"}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 7, "total_tokens": 97}})))
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("fields").await;
    let r = messages(
        &env,
        &key,
        &json!({
            "model": "gpt-x", "max_tokens": 7, "temperature": 0.2, "top_p": 0.9,
            "stop_sequences": ["END"],
            "system": "Describe images.",
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "tag", "description": "Tag it", "input_schema": {"type": "object",
                "properties": {"tag": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "tag", "disable_parallel_tool_use": true},
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is this?"},
            ]}],
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let cost = r.headers()["x-aigw-cost-usd"].to_str().unwrap().to_string();
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["type"], "message");
    assert_eq!(got["role"], "assistant");
    assert_eq!(got["model"], "gpt-x");
    assert_eq!(
        got["content"],
        json!([{"type": "text", "text": "A cat sat"}])
    );
    assert_eq!(got["stop_reason"], "max_tokens");
    assert_eq!(got["usage"]["input_tokens"], 90);
    assert_eq!(got["usage"]["output_tokens"], 7);
    // 90 x $2/M + 7 x $8/M = 236 micro-dollars.
    assert_eq!(cost, "0.000236");

    let sent = body(&mock.received_requests().await.unwrap()[0]);
    assert_eq!(
        sent,
        json!({
            "model": "gpt-x", "max_tokens": 7, "temperature": 0.2, "top_p": 0.9,
            "stop": ["END"],
            "messages": [
                {"role": "system", "content": "Describe images."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "What is this?"},
                ]},
            ],
            "tools": [{"type": "function", "function": {"name": "tag", "description": "Tag it",
                "parameters": {"type": "object", "properties": {"tag": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "tag"}},
            "parallel_tool_calls": false,
        }),
        "the translation, with the advisory metadata dropped"
    );
}
