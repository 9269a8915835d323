//! The official anthropic Python SDK through aigw to an Anthropic-native
//! upstream: the same script and the same expectations as against an
//! OpenAI-compatible one (`anthropic_messages.rs`), with the requests
//! reaching the upstream verbatim (cache hints, thinking signatures and
//! tool results included) and billed by token class.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse, sse_response};
use crate::anthropic_messages::{COST_MICROS, assert_sdk_output, messages, request_id, run_sdk};
use crate::harness::{TestEnv, user};

/// The thinking signature the upstream signs its streamed reasoning with.
const SIGNATURE: &str = "EqQBCkYIBxgCKkBsig";

/// Anthropic's answer to one request, like `openai_upstream`'s: a tool call
/// when tools are offered and no result came back yet (streamed: signed
/// thinking first, then the call's input in two pieces), else a text.
fn anthropic_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap_or("m").to_string();
    let usage = json!({"input_tokens": 400, "cache_read_input_tokens": 600,
        "cache_creation_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 20});
    let answered = b["messages"].as_array().is_some_and(|ms| {
        ms.iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .any(|block| block["type"] == "tool_result")
    });
    let tools = b.get("tools").is_some();
    if b["stream"] != true {
        let (content, stop) = if tools && !answered {
            (
                json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                    "input": {"city": "Paris"}}]),
                "tool_use",
            )
        } else if answered {
            (
                json!([{"type": "text", "text": "It is sunny."}]),
                "end_turn",
            )
        } else {
            (json!([{"type": "text", "text": "pong"}]), "end_turn")
        };
        return ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_up", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage}));
    }
    let delta = |index: u64, delta: Value| {
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let start = |index: u64, block: Value| {
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    };
    let stop = |index: u64| {
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": index}),
        )
    };
    let (blocks, reason) = if tools && !answered {
        (
            vec![
                start(
                    0,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                ),
                delta(
                    0,
                    json!({"type": "thinking_delta", "thinking": "Paris, then."}),
                ),
                delta(
                    0,
                    json!({"type": "signature_delta", "signature": SIGNATURE}),
                ),
                stop(0),
                start(
                    1,
                    json!({"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}),
                ),
                delta(
                    1,
                    json!({"type": "input_json_delta", "partial_json": "{\"city\":"}),
                ),
                delta(
                    1,
                    json!({"type": "input_json_delta", "partial_json": "\"Paris\"}"}),
                ),
                stop(1),
            ],
            "tool_use",
        )
    } else {
        (
            vec![
                start(0, json!({"type": "text", "text": ""})),
                delta(0, json!({"type": "text_delta", "text": "pong"})),
                delta(0, json!({"type": "text_delta", "text": " streamed"})),
                stop(0),
            ],
            "end_turn",
        )
    };
    let mut events = vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_up", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": usage}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
    ];
    events.extend(blocks);
    events.push((
        Some("message_delta"),
        json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
            "usage": {"output_tokens": 20}}),
    ));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse_response(sse(&events, "\n"))
}

#[tokio::test]
async fn the_anthropic_sdk_works_against_an_anthropic_upstream() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(anthropic_upstream)
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": mock.uri(), "models": ["claude-haiku-4-5"],
            "prices": {"claude-haiku-4-5": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0,
                "cached_input_usd_per_mtok": 0.5}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("sdk-native").await;
    let out = run_sdk(&env, &key, "claude-haiku-4-5").await;
    assert_sdk_output(&out);

    let requests = mock.received_requests().await.unwrap();
    // The system block's cache hint, dropped for OpenAI, reached Anthropic.
    let first = body(&requests[0]);
    assert_eq!(
        first["system"],
        json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
    );
    // The tool result went back in Anthropic's own shape, after the SDK's
    // own echo of the tool_use block.
    let round_trip = requests
        .iter()
        .map(body)
        .find(|b| b.to_string().contains("\"tool_result\""))
        .expect("the tool result reached the upstream");
    let turns = round_trip["messages"].as_array().unwrap();
    assert_eq!(turns[1]["content"][0]["id"], "toolu_1", "{round_trip}");
    assert_eq!(
        turns[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"})
    );
    assert!(
        requests
            .iter()
            .all(|r| r.headers["x-api-key"] == "sk-ant-upstream")
    );

    // The signed thinking streams through untouched, and the stream is
    // billed by its token classes.
    let r = messages(
        &env,
        &key,
        &json!({"model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
            "messages": user("Weather?"),
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!(
            r#"{{"signature":"{SIGNATURE}","type":"signature_delta"}}"#
        )),
        "{text}"
    );
    let events = env.wait_recorded(&id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 1000, "{done}");
    assert_eq!(done["usage"]["cached_tokens"], 600, "{done}");
    assert_eq!(done["cost_micros"], COST_MICROS, "{done}");
}
