//! Streams on `/v1/messages`, event by event: an OpenAI-compatible
//! upstream's reasoning and tool call rendered as Anthropic's `thinking`
//! and `tool_use` blocks (`input_json_delta`), and a stream that fails
//! midway ending in Anthropic's `error` event (with the upstream's error
//! type when it was Anthropic's), never in `message_stop`.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::acceptance::{sse, sse_response};
use crate::anthropic_messages::openai_upstream;
use crate::harness::{TestEnv, user};

/// The events of an SSE body as (name, data), checking that each `event:`
/// line names its data's `type`.
fn events(text: &str) -> Vec<(String, Value)> {
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
            (name.to_string(), data)
        })
        .collect()
}

async fn stream(env: &TestEnv, key: &str, body: Value) -> String {
    let r = env
        .http
        .post(env.url("/v1/messages"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    r.text().await.unwrap()
}

#[tokio::test]
async fn reasoning_and_tool_calls_stream_as_anthropic_blocks() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    env.add_provider("oai", &format!("{}/v1", mock.uri()), &["gpt-x"])
        .await;
    let (_, key) = env.add_key("streams").await;
    let text = stream(
        &env,
        &key,
        json!({"model": "gpt-x", "max_tokens": 100, "stream": true, "messages": user("Weather?"),
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}),
    )
    .await;
    let got = events(&text);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ],
        "{text}"
    );
    assert_eq!(got[2].1["content_block"]["type"], "thinking", "{text}");
    assert_eq!(
        got[3].1["delta"],
        json!({"type": "thinking_delta", "thinking": "Paris, then."})
    );
    assert_eq!(
        got[5].1,
        json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}})
    );
    assert_eq!(got[6].1["index"], 1);
    assert_eq!(got[6].1["delta"]["type"], "input_json_delta");
    let input: Value =
        serde_json::from_str(got[6].1["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"city": "Paris"}));
    assert_eq!(got[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(got[8].1["usage"]["input_tokens"], 400, "{text}");
    assert_eq!(got[8].1["usage"]["cache_read_input_tokens"], 600, "{text}");
    assert_eq!(got[8].1["usage"]["output_tokens"], 20, "{text}");
}

#[tokio::test]
async fn a_stream_that_fails_midway_ends_in_an_anthropic_error_event() {
    let env = TestEnv::start().await;
    // An Anthropic upstream that is overloaded after its first events.
    let claude = MockServer::start().await;
    let overloaded = sse(
        &[
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_up", "type": "message",
                    "role": "assistant", "model": "claude-haiku-4-5", "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            ),
            (Some("ping"), json!({"type": "ping"})),
            (
                Some("error"),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ],
        "\n",
    );
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(sse_response(overloaded))
        .mount(&claude)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": claude.uri(), "models": ["claude-haiku-4-5"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // An OpenAI-compatible upstream whose stream is cut after one text delta.
    let oai = MockServer::start().await;
    let cut = sse(
        &[(
            None,
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"},
                    "finish_reason": null}]}),
        )],
        "\n",
    );
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(sse_response(cut))
        .mount(&oai)
        .await;
    env.add_provider("oai", &format!("{}/v1", oai.uri()), &["gpt-x"])
        .await;
    let (_, key) = env.add_key("streams").await;

    for (model, names, kind) in [
        (
            "claude-haiku-4-5",
            vec!["message_start", "ping", "error"],
            "overloaded_error",
        ),
        (
            "gpt-x",
            vec![
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "error",
            ],
            "api_error",
        ),
    ] {
        let text = stream(
            &env,
            &key,
            json!({"model": model, "max_tokens": 50, "stream": true, "messages": user("hi")}),
        )
        .await;
        let got = events(&text);
        let got_names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(got_names, names, "{model}: {text}");
        let error = &got.last().unwrap().1;
        assert_eq!(error["error"]["type"], kind, "{model}: {text}");
        assert!(error["error"]["message"].is_string(), "{text}");
    }
}

#[tokio::test]
async fn a_stream_s_message_delta_carries_the_recorded_cost() {
    let env = TestEnv::start().await;
    // An Anthropic-native upstream (the catalog prices claude-haiku-4-5)…
    let claude = MockServer::start().await;
    let native = sse(
        &[
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_up", "type": "message",
                    "role": "assistant", "model": "claude-haiku-4-5", "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 1200, "output_tokens": 1}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                    "stop_sequence": null}, "usage": {"output_tokens": 300}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ],
        "\n",
    );
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(sse_response(native))
        .mount(&claude)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": claude.uri(), "models": ["claude-haiku-4-5"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // …and a priced OpenAI-compatible one, translated.
    let oai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&oai)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "oai", "base_url": format!("{}/v1", oai.uri()),
            "api_key": "sk-upstream", "models": ["gpt-x"],
            "prices": {"gpt-x": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 4.0,
                                 "cached_input_usd_per_mtok": 0.1}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (key_id, key) = env.add_key("costs").await;

    for model in ["claude-haiku-4-5", "gpt-x"] {
        let text = stream(
            &env,
            &key,
            json!({"model": model, "max_tokens": 400, "stream": true, "messages": user("hi")}),
        )
        .await;
        let got = events(&text);
        let delta = &got
            .iter()
            .find(|(n, _)| n == "message_delta")
            .unwrap_or_else(|| panic!("{model}: no message_delta in {text}"))
            .1;
        let shown = delta["usage"]["cost_usd"]
            .as_f64()
            .unwrap_or_else(|| panic!("{model}: no cost in {delta}"));
        assert!(shown > 0.0, "{model}: {delta}");
        // Exactly what the request log records for it.
        let recorded = crate::harness::wait_until(std::time::Duration::from_secs(30), || async {
            let cost: Option<i64> = sqlx::query_scalar(
                "SELECT cost_micros FROM request_log WHERE key_id = $1::uuid AND model = $2
                   AND status = 'succeeded'",
            )
            .bind(&key_id)
            .bind(model)
            .fetch_optional(&env.pool)
            .await
            .unwrap()
            .flatten();
            cost.is_some()
        });
        recorded.await;
        let micros: i64 = sqlx::query_scalar(
            "SELECT cost_micros FROM request_log WHERE key_id = $1::uuid AND model = $2",
        )
        .bind(&key_id)
        .bind(model)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!((shown * 1e6).round() as i64, micros, "{model}: {delta}");
        // Every other event is as rendered: no cost anywhere else.
        for (name, data) in &got {
            if name != "message_delta" {
                assert!(!data.to_string().contains("cost_usd"), "{name}: {data}");
            }
        }
    }
}
