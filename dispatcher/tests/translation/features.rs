//! Structured output (`response_format`) and reasoning (`reasoning_effort`)
//! in each native adapter's terms, and the cases where a provider cannot
//! take them together with something else.

use aigw_dispatcher::answer::Answer;
use aigw_dispatcher::providers::{anthropic, bedrock, cohere, gemini};
use aigw_events::ErrorClass;
use serde_json::{Value, json};

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false})
}

fn json_schema() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "thing", "schema": schema()}})
}

const TOOL: &str =
    r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]"#;

fn tools() -> Value {
    serde_json::from_str(TOOL).unwrap()
}

#[test]
fn anthropic_thinks_within_the_cap_and_drops_sampling_for_it() {
    let out = anthropic::to_anthropic(
        &chat(
            json!({"reasoning_effort": "high", "max_completion_tokens": 30000,
            "temperature": 0.2, "top_p": 0.9}),
        ),
        false,
    );
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 24576})
    );
    assert_eq!(out["max_tokens"], 30000, "thinking counts within the cap");
    assert!(out.get("temperature").is_none() && out.get("top_p").is_none());
    // The budget shrinks to fit under the cap, and the default cap counts.
    let out = anthropic::to_anthropic(&chat(json!({"reasoning_effort": "high"})), false);
    assert_eq!(out["thinking"]["budget_tokens"], 4095);
    // Where Anthropic cannot think, sampling settings stay.
    for extra in [
        json!({"reasoning_effort": "high", "max_tokens": 1000, "temperature": 0.2}),
        json!({"reasoning_effort": "none", "temperature": 0.2}),
        json!({"reasoning_effort": "medium", "temperature": 0.2, "tools": tools(),
            "tool_choice": "required"}),
        json!({"reasoning_effort": "medium", "temperature": 0.2, "response_format": json_schema()}),
    ] {
        let out = anthropic::to_anthropic(&chat(extra.clone()), false);
        assert!(out.get("thinking").is_none(), "{extra} gave {out}");
        assert_eq!(out["temperature"], 0.2, "{extra}");
    }
}

#[test]
fn anthropic_does_not_think_inside_a_tool_loop() {
    let messages = json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]);
    let out = anthropic::to_anthropic(
        &chat(json!({"messages": messages, "tools": tools(), "reasoning_effort": "low"})),
        false,
    );
    assert!(out.get("thinking").is_none(), "{out}");
    let mut closed = messages.as_array().unwrap().clone();
    closed.push(json!({"role": "assistant", "content": "ok"}));
    closed.push(json!({"role": "user", "content": "again"}));
    let out = anthropic::to_anthropic(
        &chat(json!({"messages": closed, "tools": tools(), "reasoning_effort": "low"})),
        false,
    );
    assert_eq!(out["thinking"]["budget_tokens"], 2048);
}

#[test]
fn anthropic_json_output_is_a_forced_tool_or_one_among_the_callers() {
    let out = anthropic::to_anthropic(&chat(json!({"response_format": json_schema()})), false);
    assert_eq!(
        out["tools"],
        json!([{"name": anthropic::JSON_TOOL, "input_schema": schema(),
            "description": "Give your final answer by calling this tool: its input is the answer. The answer is a thing."}])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": anthropic::JSON_TOOL})
    );
    let out = anthropic::to_anthropic(
        &chat(json!({"response_format": {"type": "json_object"}, "tools": tools()})),
        false,
    );
    assert_eq!(out["tools"][1]["input_schema"], json!({"type": "object"}));
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
    let out = anthropic::to_anthropic(
        &chat(json!({"response_format": json_schema(), "tools": tools(),
            "tool_choice": {"type": "function", "function": {"name": "f"}}})),
        false,
    );
    assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "f"}));
    let out = anthropic::to_anthropic(
        &chat(json!({"response_format": json_schema(), "tools": tools(), "tool_choice": "none"})),
        false,
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": anthropic::JSON_TOOL})
    );
}

#[tokio::test]
async fn anthropic_answers_through_the_json_tool_as_text() {
    let message = json!({"id": "msg_1", "type": "message", "model": "claude-x",
        "content": [{"type": "tool_use", "id": "t1", "name": anthropic::JSON_TOOL, "input": {"a": "b"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}});
    let read = |json_tool| match anthropic::from_anthropic(&message, "p", json_tool) {
        Ok(Answer::Full { body, .. }) => serde_json::from_slice::<Value>(&body).unwrap(),
        _ => panic!("a full answer"),
    };
    let answer = read(true);
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["content"], r#"{"a":"b"}"#);
    assert!(choice["message"].get("tool_calls").is_none(), "{answer}");
    assert_eq!(choice["finish_reason"], "stop");
    // Without JSON output asked for, a tool of that name is a tool call.
    let answer = read(false);
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn gemini_takes_a_schema_and_a_thinking_budget() {
    let out = gemini::to_gemini(&chat(
        json!({"response_format": json_schema(), "reasoning_effort": "xhigh"}),
    ));
    let config = &out["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({"type": "object", "properties": {"a": {"type": "string"}}})
    );
    assert_eq!(
        config["thinkingConfig"],
        json!({"thinkingBudget": gemini::MAX_THINKING_BUDGET, "includeThoughts": true})
    );
    let out = gemini::to_gemini(&chat(json!({"reasoning_effort": "none"})));
    assert_eq!(
        out["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 0, "includeThoughts": false})
    );
    let out = gemini::to_gemini(&chat(json!({"reasoning_effort": "sideways"})));
    assert!(out.get("generationConfig").is_none(), "{out}");
}

#[test]
fn gemini_schemas_keep_to_its_subset() {
    let schema = json!({"$schema": "x", "type": "object", "additionalProperties": false,
        "properties": {"a": {"type": ["string", "null"]}, "b": {"type": ["integer", "string"]},
            "c": {"type": "array", "items": {"type": ["null", "number"]}}}});
    assert_eq!(
        gemini::schema_for_gemini(&schema),
        json!({"type": "object", "properties": {
            "a": {"type": "string", "nullable": true},
            "b": {},
            "c": {"type": "array", "items": {"type": "number", "nullable": true}}}})
    );
}

#[test]
fn bedrock_refuses_json_output_and_thinks_only_on_claude() {
    let e =
        bedrock::to_converse(&chat(json!({"response_format": json_schema()})), "p").unwrap_err();
    assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
    assert!(e.message.contains("'response_format'"), "{e:?}");
    let mut claude = chat(json!({"reasoning_effort": "medium", "temperature": 0.5}));
    claude["model"] = json!("global.anthropic.claude-sonnet-5-v1:0");
    let out = bedrock::to_converse(&claude, "p").unwrap();
    assert_eq!(
        out["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 4095}})
    );
    assert_eq!(out["inferenceConfig"]["maxTokens"], 4096);
    assert!(out["inferenceConfig"].get("temperature").is_none());
    let mut nova = chat(json!({"reasoning_effort": "medium", "temperature": 0.5}));
    nova["model"] = json!("amazon.nova-pro-v1:0");
    let out = bedrock::to_converse(&nova, "p").unwrap();
    assert!(out.get("additionalModelRequestFields").is_none());
    assert_eq!(out["inferenceConfig"]["temperature"], 0.5);
}

#[test]
fn cohere_takes_the_schema_in_its_json_object() {
    let out = cohere::to_cohere(&chat(json!({"response_format": json_schema()})), false);
    assert_eq!(
        out["response_format"],
        json!({"type": "json_object", "json_schema": schema()})
    );
    let out = cohere::to_cohere(&chat(json!({"response_format": {"type": "text"}})), false);
    assert!(out.get("response_format").is_none());
}
