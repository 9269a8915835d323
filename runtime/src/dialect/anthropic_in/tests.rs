//! Tests of the Anthropic to OpenAI chat translation.

use super::*;
use proptest::prelude::*;

fn chat(body: Value) -> Translated {
    to_chat(&body).unwrap()
}

#[test]
fn a_claude_code_request_translates_and_drops_only_hints() {
    let t = chat(json!({
        "model": "m", "max_tokens": 32000, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}}]},
        ],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}, "defer_loading": true}],
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "metadata": {"user_id": "u"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }));
    assert_eq!(t.native_only, None);
    assert!(t.stream);
    assert_eq!(
        t.body,
        json!({
            "model": "m", "max_tokens": 32000, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "You are Claude Code."},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "# Environment"},
            ],
            "tools": [{"type": "function", "function": {"name": "Bash", "description": "run", "parameters": {"type": "object"}}}],
            "reasoning_effort": "high",
        })
    );
}

#[test]
fn tool_round_trips_keep_openai_order() {
    let t = chat(json!({
        "model": "m", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "and tomorrow?"},
            ]},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "tools": [{"name": "get", "input_schema": {"type": "object"}}],
        "stop_sequences": ["END"],
    }));
    let m = &t.body["messages"];
    assert_eq!(
        m[1]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(m[1]["content"], "Checking.");
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
    );
    assert_eq!(m[3], json!({"role": "user", "content": "and tomorrow?"}));
    assert_eq!(t.body["tool_choice"], "required");
    assert_eq!(t.body["parallel_tool_calls"], false);
    assert_eq!(t.body["stop"], json!(["END"]));
}

#[test]
fn images_become_image_urls() {
    let t = chat(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        ]}]}),
    );
    let parts = &t.body["messages"][0]["content"];
    assert_eq!(parts[0]["image_url"]["url"], "data:image/png;base64,AAAA");
    assert_eq!(parts[1]["image_url"]["url"], "https://x/y.png");
}

#[test]
fn what_chat_cannot_express_is_named() {
    let base = |extra: Value| {
        let mut b =
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        to_chat(&b).unwrap().native_only
    };
    assert_eq!(base(json!({"top_k": 5})).as_deref(), Some("top_k"));
    assert_eq!(
        base(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})).as_deref(),
        Some("tools[0].type")
    );
    assert_eq!(
        base(
            json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})
        )
        .as_deref(),
        Some("messages[0].content[0]")
    );
    assert_eq!(base(json!({"metadata": {"user_id": "x"}})), None);
    // Such a block stays whole in its turn, so the hold counts it.
    let document = json!({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}});
    let t = chat(json!({"model": "m", "max_tokens": 1,
        "messages": [{"role": "user", "content": [document.clone()]}]}));
    assert_eq!(
        t.body["messages"],
        json!([{"role": "user", "content": [document]}])
    );
    let image = json!({"type": "image", "source": {"type": "file", "file_id": "file_1"}});
    let t = chat(json!({"model": "m", "max_tokens": 1, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": [{"type": "text", "text": "a screenshot"}, image.clone()]}]}]}));
    assert_eq!(
        t.native_only.as_deref(),
        Some("messages[1].content[0].content[1]")
    );
    assert_eq!(
        t.body["messages"][1],
        json!({"role": "tool", "tool_call_id": "t1",
            "content": [{"type": "text", "text": "a screenshot"}, image]})
    );
}

#[test]
fn structured_output_and_effort() {
    let t = chat(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    );
    assert_eq!(
        t.body["response_format"]["json_schema"]["schema"],
        json!({"type": "object"})
    );
    assert_eq!(t.body["reasoning_effort"], "low");
    assert_eq!(effort(LOW_EFFORT_BELOW), "medium");
    assert_eq!(effort(MEDIUM_EFFORT_BELOW), "high");
}

#[test]
fn malformed_bodies_name_their_field() {
    let err = |b: Value| to_chat(&b).unwrap_err().param;
    assert_eq!(err(json!([])), "");
    assert_eq!(err(json!({"max_tokens": 1, "messages": []})), "model");
    assert_eq!(
        err(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
        "max_tokens"
    );
    assert_eq!(
        err(json!({"model": "m", "max_tokens": 0, "messages": []})),
        "max_tokens"
    );
    assert_eq!(
        err(json!({"model": "m", "max_tokens": 1, "messages": []})),
        "messages"
    );
    assert_eq!(
        err(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]})),
        "messages[0].role"
    );
    assert_eq!(
        err(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": 5}]})),
        "messages[0].content"
    );
    assert_eq!(
        err(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "sometimes"}})
        ),
        "tool_choice"
    );
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("text"),
            Just("tool_use"),
            Just("tool_result"),
            Just("image"),
            Just("base64"),
            Just("enabled"),
            Just("x")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("model"),
                        Just("max_tokens"),
                        Just("messages"),
                        Just("role"),
                        Just("content"),
                        Just("type"),
                        Just("text"),
                        Just("source"),
                        Just("tools"),
                        Just("tool_choice"),
                        Just("thinking"),
                        Just("system"),
                        Just("input"),
                        Just("id"),
                        Just("name"),
                        Just("tool_use_id"),
                        Just("budget_tokens"),
                        Just("stop_sequences")
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn never_panics_and_always_yields_a_chat_body(body in any_json()) {
        if let Ok(t) = to_chat(&body) {
            prop_assert!(t.body["messages"].is_array());
            prop_assert!(t.body["max_tokens"].as_u64().is_some_and(|n| n >= 1));
            prop_assert_eq!(t.body["model"].as_str(), Some(t.model.as_str()));
        }
    }

    #[test]
    fn plain_conversations_keep_every_text(texts in prop::collection::vec("[a-z ]{0,12}", 1..6)) {
        let turns: Vec<Value> = texts.iter().enumerate().map(|(i, t)| json!({
            "role": if i % 2 == 0 { "user" } else { "assistant" },
            "content": [{"type": "text", "text": t}],
        })).collect();
        let t = to_chat(&json!({"model": "m", "max_tokens": 5, "messages": turns})).unwrap();
        let back: Vec<String> = t.body["messages"].as_array().unwrap().iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_string()).collect();
        let kept: Vec<String> = texts.iter().enumerate()
            .filter(|(i, t)| i % 2 == 0 || !t.is_empty())
            .map(|(_, t)| t.clone()).collect();
        prop_assert_eq!(back, kept);
    }
}

#[test]
fn images_in_tool_results_follow_the_tool_messages() {
    let t = chat(json!({"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": "Look at it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "shot.png"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"type": "text", "text": "What is it?"},
        ]},
    ]}));
    assert_eq!(t.native_only, None);
    assert_eq!(
        t.body["messages"].as_array().unwrap()[2..],
        [
            json!({"role": "tool", "tool_call_id": "t1", "content": "shot.png"}),
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "What is it?"},
            ]}),
        ]
    );
}
