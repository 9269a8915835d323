//! OpenAI's Responses API (`/v1/responses`) translated for an
//! OpenAI-compatible upstream: through the official openai Python SDK
//! (plain, streamed, a function tool round trip), the exact event
//! sequence with the recorded cost, what reaches the upstream, what is
//! refused by name, and the same admission and billing as chat.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::acceptance::body;
use crate::anthropic_messages::{COST_MICROS, openai_provider, openai_upstream, request_id};
use crate::harness::TestEnv;

pub(crate) async fn upstream() -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    mock
}

pub(crate) async fn responses(env: &TestEnv, key: &str, body: &Value) -> reqwest::Response {
    env.http
        .post(env.url("/v1/responses"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The events of an SSE body, checking each `event:` line names its
/// data's `type` and that sequence numbers count from 0.
fn events(text: &str) -> Vec<Value> {
    let all: Vec<Value> = text
        .split("\n\n")
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
            data
        })
        .collect();
    for (n, e) in all.iter().enumerate() {
        assert_eq!(e["sequence_number"], json!(n), "{text}");
    }
    all
}

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the openai SDK into .tools/"
    );
    python
}

pub(crate) async fn run_sdk(env: &TestEnv, key: &str, model: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/responses_sdk.py");
    let (python, base, key, model) = (
        python(),
        format!("{}/v1", env.base),
        key.to_string(),
        model.to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("OPENAI_BASE_URL", base)
            .env("OPENAI_API_KEY", key)
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

#[tokio::test]
async fn the_openai_sdk_responses_work_against_an_openai_upstream() {
    let env = TestEnv::start().await;
    let mock = upstream().await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("sdk").await;
    let out = run_sdk(&env, &key, "gpt-x").await;
    for line in [
        "plain: pong\n",
        "plain id: True response completed\n",
        "usage: 1000 20 1020 600 0\n",
        "cost header: 0.001260\n",
        "stream events: response.created,response.in_progress,response.output_item.added,response.content_part.added,response.output_text.delta,response.output_text.delta,response.output_text.done,response.content_part.done,response.output_item.done,response.completed\n",
        "stream text: pong streamed | pong streamed\n",
        "stream usage: 1000 20\n",
        "stream cost: 0.00126\n",
        "tool call: get_weather {\"city\":\"Paris\"} call_1\n",
        "tool answer: It is sunny.\n",
        "stream tool call: reasoning,function_call get_weather {\"city\":\"Paris\"}\n",
        "continued: It is sunny. True\n",
        "retrieved: True It is sunny.\n",
        "input items: message,function_call,function_call_output False\n",
        "deleted: 404\n",
        "bad key: 401\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(
        out.contains("refused: 400 'tools[0].type' has no equivalent"),
        "{out}"
    );

    // What reached the upstream: OpenAI chat, the round trip in its order.
    let requests = mock.received_requests().await.unwrap();
    let first = body(&requests[0]);
    assert_eq!(
        first["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}])
    );
    assert_eq!(first["max_tokens"], 100);
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
}

#[tokio::test]
async fn a_stream_is_the_responses_event_sequence_billed_like_chat() {
    let env = TestEnv::start().await;
    let mock = upstream().await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("stream").await;
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-x", "stream": true, "input": "Weather?",
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
                {"type": "web_search"}],
            "store": false, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
            "client_metadata": {"a": "b"}, "metadata": {"m": "n"}, "safety_identifier": "s"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    let events = events(&text);
    let names: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ],
        "{text}"
    );
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["id"], format!("resp_{}", id.replace('-', "")));
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 600);
    assert_eq!(done["usage"]["cost_usd"], json!(COST_MICROS as f64 / 1e6));
    assert_eq!(done["output"][1]["arguments"], "{\"city\":\"Paris\"}");

    // Translated for the upstream; the advisory fields and the web search
    // offer dropped.
    let sent = body(&mock.received_requests().await.unwrap()[0]);
    assert_eq!(sent["reasoning_effort"], "low");
    assert_eq!(
        sent["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}})
    );
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1);
    for dropped in [
        "store",
        "include",
        "prompt_cache_key",
        "client_metadata",
        "metadata",
    ] {
        assert!(sent.get(dropped).is_none(), "{dropped}: {sent}");
    }
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    // Recorded and billed as any chat completion.
    let recorded = env.wait_recorded(&id).await;
    let completed = &recorded.last().unwrap().1["RequestCompleted"];
    assert_eq!(completed["usage"]["prompt_tokens"], 1000, "{completed}");
    assert_eq!(completed["cost_micros"], COST_MICROS, "{completed}");
}

#[tokio::test]
async fn what_cannot_be_translated_is_refused_in_openai_shape() {
    let env = TestEnv::start().await;
    let mock = upstream().await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("refused").await;
    for (body, needle) in [
        (
            json!({"model": "gpt-x", "input": "x", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}),
            "'tools[0].type'",
        ),
        (
            json!({"model": "gpt-x", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]}),
            "'input[0].content[0].type'",
        ),
        (json!({"model": "gpt-x"}), "'input'"),
        (
            json!({"model": "gpt-x", "input": "x", "max_output_tokens": -1}),
            "'max_output_tokens'",
        ),
    ] {
        let r = responses(&env, &key, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
    }
    let r = env
        .http
        .post(env.url("/v1/responses"))
        .json(&json!({"model": "gpt-x", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    assert!(mock.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn budgets_holds_and_idempotency_are_chats() {
    let env = TestEnv::start().await;
    let mock = upstream().await;
    openai_provider(&env, &mock).await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "half-a-dollar", "budget_usd": 0.5, "budget_period": "total"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // A million output tokens at $8 per million is over the budget: the
    // worst-case hold refuses it before any call.
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "x", "max_output_tokens": 1_000_000}),
    )
    .await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    assert!(mock.received_requests().await.unwrap().is_empty());

    // A repeat with the same Idempotency-Key gets the stored answer.
    let send = || {
        env.http
            .post(env.url("/v1/responses"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "responses-once")
            .json(&json!({"model": "gpt-x", "input": "x", "max_output_tokens": 100}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["output"][0]["content"][0]["text"], "pong");
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_stream_that_fails_midway_ends_with_error_then_response_failed() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"}, "finish_reason": null}]});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(crate::acceptance::sse_response(format!(
            "data: {chunk}\n\ndata: {{\"error\":{{\"message\":\"upstream exploded\"}}}}\n\n"
        )))
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("cut").await;
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "x", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    let data_of = |event: &str| -> Value {
        serde_json::from_str(
            event
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap()
    };
    // As OpenAI ends a failed stream: `error`, then `response.failed`.
    let [.., error, failed] = events[..] else {
        panic!("{text}")
    };
    assert!(error.starts_with("event: error\ndata: "), "{text}");
    let data = data_of(error);
    assert_eq!(data["type"], "error");
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .contains("upstream exploded"),
        "{data}"
    );
    assert!(
        failed.starts_with("event: response.failed\ndata: "),
        "{text}"
    );
    let failed = data_of(failed);
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(
        failed["response"]["id"],
        format!("resp_{}", uuid::Uuid::parse_str(&r_id).unwrap().simple())
    );
    assert!(
        failed["response"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream exploded"),
        "{failed}"
    );
    assert!(text.contains("event: response.output_text.delta"), "{text}");
    assert!(!text.contains("response.completed"), "{text}");
}
