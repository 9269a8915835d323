use super::*;
use proptest::prelude::*;

#[test]
fn a_string_input_is_one_user_message() {
    let t = to_chat(
        &json!({"model": "m", "input": "Hi", "instructions": "Be brief.",
        "max_output_tokens": 50, "temperature": 0.5, "stream": true}),
    )
    .unwrap();
    assert_eq!(
        t.body,
        json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"}],
            "max_tokens": 50, "temperature": 0.5, "stream": true,
            "stream_options": {"include_usage": true}})
    );
    assert!(t.stream);
    assert_eq!(t.native_only, None);
}

#[test]
fn items_become_messages_with_tool_calls_and_results() {
    let t = to_chat(&json!({"model": "m", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
    ]}))
    .unwrap();
    assert_eq!(
        t.body["messages"],
        json!([
            {"role": "system", "content": "rules"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
        ])
    );
}

#[test]
fn tools_choice_reasoning_and_format_translate() {
    let t = to_chat(&json!({"model": "m", "input": "x",
        "tools": [
            {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true},
            {"type": "web_search", "external_web_access": false},
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g", "parameters": {"type": "object"}}]},
            {"type": "custom", "name": "apply_patch", "description": "patch"}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": false,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "store": false, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
        "client_metadata": {"a": "b"}, "metadata": {"x": "y"}, "user": "u", "service_tier": "auto",
        "safety_identifier": "s", "truncation": "auto"}))
    .unwrap();
    assert_eq!(t.native_only, None);
    let names: Vec<_> = t.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f", "g", "apply_patch"]);
    assert_eq!(t.body["tools"][0]["function"]["strict"], true);
    assert_eq!(
        t.body["tools"][2]["function"]["parameters"]["required"],
        json!(["input"])
    );
    assert_eq!(
        t.body["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(t.body["parallel_tool_calls"], false);
    assert_eq!(t.body["reasoning_effort"], "high");
    assert_eq!(
        t.body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    for advisory in ["store", "include", "prompt_cache_key", "metadata", "user"] {
        assert!(t.body.get(advisory).is_none(), "{advisory}");
    }
    assert_eq!(
        custom_tools(&json!({"tools": [{"type": "custom", "name": "apply_patch"},
            {"type": "namespace", "name": "n", "tools": [{"type": "custom", "name": "c"}]}]})),
        ["apply_patch", "c"]
    );
}

#[test]
fn custom_tool_calls_round_trip_as_function_calls() {
    let t = to_chat(&json!({"model": "m", "input": [
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"}]}))
    .unwrap();
    assert_eq!(
        t.body["messages"][0]["tool_calls"][0]["function"],
        json!({"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"})
    );
    assert_eq!(t.body["messages"][1]["role"], "tool");
}

#[test]
fn what_chat_cannot_express_is_named() {
    for (body, field) in [
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "i"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "web_search"}}),
            "tool_choice",
        ),
    ] {
        assert_eq!(
            to_chat(&body).unwrap().native_only.as_deref(),
            Some(field),
            "{body}"
        );
    }
}

#[test]
fn invalid_bodies_name_their_field() {
    for (body, param) in [
        (json!([]), ""),
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 3}), "input"),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
            "text.format",
        ),
        (
            json!({"model": "m", "input": "x", "stream": "yes"}),
            "stream",
        ),
    ] {
        assert_eq!(to_chat(&body).unwrap_err().param, param, "{body}");
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("model"),
                        Just("input"),
                        Just("type"),
                        Just("role"),
                        Just("content"),
                        Just("text"),
                        Just("tools"),
                        Just("name"),
                        Just("call_id"),
                        Just("output"),
                        Just("tool_choice"),
                        Just("format"),
                        Just("reasoning"),
                        Just("image_url")
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn no_json_makes_translation_panic(body in any_json()) {
        let _ = to_chat(&body);
        let _ = custom_tools(&body);
    }
}
