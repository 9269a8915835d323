//! Native answers (Anthropic message, Gemini `GenerateContentResponse`,
//! Bedrock Converse, Cohere v2 chat) translated to OpenAI `chat.completion`.
//!
//! Properties: an answer random within the provider's schema becomes an
//! OpenAI answer that keeps its text, reasoning, tool calls (id, name,
//! arguments), finish reason and usage, whatever the token counts; any JSON
//! at all translates or fails cleanly, without a panic.

use aigw_dispatcher::adapter::Answer;
use aigw_dispatcher::providers::{anthropic, bedrock, cohere, gemini};
use aigw_dispatcher::upstream::UpstreamError;
use aigw_events::Usage;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::strategies::{self, count, json_object, name, text};

/// An answer's content as OpenAI should show it.
#[derive(Debug, Clone, Default)]
struct Expected {
    text: String,
    reasoning: String,
    /// (id, name, arguments as a JSON value).
    calls: Vec<(String, String, Value)>,
    finish: String,
    usage: Option<Usage>,
}

fn tokens(prompt: u64, completion: u64) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Default::default()
    })
}

fn sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
}

/// Checks an OpenAI answer against what it should say.
fn check(answer: Result<Answer, UpstreamError>, want: &Expected) -> Result<(), TestCaseError> {
    let (body, usage) = match answer {
        Ok(Answer::Full { body, usage }) => {
            (serde_json::from_slice::<Value>(&body).unwrap(), usage)
        }
        Ok(_) => return Err(TestCaseError::fail("not a full answer")),
        Err(e) => return Err(TestCaseError::fail(format!("refused: {e:?}"))),
    };
    prop_assert_eq!(&body["object"], "chat.completion");
    let choice = &body["choices"][0];
    let message = &choice["message"];
    prop_assert_eq!(&message["role"], "assistant");
    let content = if want.text.is_empty() && !want.calls.is_empty() {
        Value::Null
    } else {
        json!(want.text)
    };
    prop_assert_eq!(&message["content"], &content);
    prop_assert_eq!(
        message.get("reasoning_content").cloned(),
        (!want.reasoning.is_empty()).then(|| json!(want.reasoning))
    );
    let calls: Vec<(String, String, Value)> = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            assert_eq!(c["type"], "function");
            let args = c["function"]["arguments"]
                .as_str()
                .expect("arguments as a string");
            (
                c["id"].as_str().unwrap().to_string(),
                c["function"]["name"].as_str().unwrap().to_string(),
                serde_json::from_str(args).expect("arguments as JSON"),
            )
        })
        .collect();
    prop_assert_eq!(&calls, &want.calls);
    prop_assert_eq!(message.get("tool_calls").is_some(), !want.calls.is_empty());
    prop_assert_eq!(&choice["finish_reason"], &json!(want.finish));
    prop_assert_eq!(&usage, &want.usage);
    match &want.usage {
        Some(u) => prop_assert_eq!(
            &body["usage"],
            &json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
                "prompt_tokens_details": {
                    "cached_tokens": u.cached_tokens,
                    "cache_write_tokens": u.cache_write_5m_tokens.saturating_add(u.cache_write_1h_tokens),
                    "cache_write_5m_tokens": u.cache_write_5m_tokens,
                    "cache_write_1h_tokens": u.cache_write_1h_tokens,
                },
                "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            })
        ),
        None => prop_assert!(body.get("usage").is_none()),
    }
    Ok(())
}

/// A finish reason: one the provider documents, or anything.
fn reason(known: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => prop::sample::select(known).prop_map(|r| Some(r.to_string())),
        1 => Just(None),
        1 => text().prop_map(Some),
    ]
}

// ------------------------------------------------------------- Anthropic

#[derive(Debug, Clone)]
enum Block {
    Text(String),
    Thinking(String),
    ToolUse(String, String, Value),
    Other(Value),
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        4 => text().prop_map(Block::Text),
        1 => text().prop_map(Block::Thinking),
        2 => ("toolu_[a-zA-Z0-9]{1,8}", name(), json_object())
            .prop_map(|(id, name, input)| Block::ToolUse(id, name, input)),
        1 => prop_oneof![
            Just(json!({"type": "redacted_thinking", "data": "xyz"})),
            Just(json!({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}})),
            strategies::json_value(),
        ]
        .prop_map(Block::Other),
    ]
}

pub fn anthropic_finish(r: Option<&str>) -> &'static str {
    match r {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

const ANTHROPIC_REASONS: &[&str] = &[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
];

// ---------------------------------------------------------------- Gemini

#[derive(Debug, Clone)]
enum GeminiPart {
    Text {
        text: String,
        thought: bool,
    },
    Call {
        id: Option<String>,
        name: String,
        args: Value,
        signature: Option<String>,
    },
}

fn gemini_part() -> impl Strategy<Value = GeminiPart> {
    prop_oneof![
        3 => (text(), prop::bool::weighted(0.2))
            .prop_map(|(text, thought)| GeminiPart::Text { text, thought }),
        1 => (
            prop::option::of("[a-z0-9]{1,8}"),
            name(),
            json_object(),
            prop::option::of("[A-Za-z0-9+/=]{1,16}"),
        )
            .prop_map(|(id, name, args, signature)| GeminiPart::Call { id, name, args, signature }),
    ]
}

pub fn gemini_finish(r: Option<&str>, calls: bool) -> &'static str {
    match r {
        _ if calls => "tool_calls",
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        _ => "stop",
    }
}

const GEMINI_REASONS: &[&str] = &[
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "OTHER",
    "MALFORMED_FUNCTION_CALL",
];

// --------------------------------------------------------------- Bedrock

pub fn bedrock_finish(r: Option<&str>) -> &'static str {
    match r {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

const BEDROCK_REASONS: &[&str] = &[
    "end_turn",
    "tool_use",
    "max_tokens",
    "stop_sequence",
    "guardrail_intervened",
    "content_filtered",
    "model_context_window_exceeded",
];

// ---------------------------------------------------------------- Cohere

pub fn cohere_finish(r: Option<&str>) -> &'static str {
    match r {
        Some("MAX_TOKENS") => "length",
        Some("TOOL_CALL") => "tool_calls",
        Some("ERROR_TOXIC") => "content_filter",
        _ => "stop",
    }
}

const COHERE_REASONS: &[&str] = &[
    "COMPLETE",
    "STOP_SEQUENCE",
    "MAX_TOKENS",
    "TOOL_CALL",
    "ERROR",
    "ERROR_TOXIC",
];

/// Cohere's counts are read as numbers that may be floats.
pub fn as_float_count(n: u64) -> u64 {
    n as f64 as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn anthropic_answers_keep_text_calls_finish_and_usage(
        blocks in prop::collection::vec(block(), 0..6),
        stop in reason(ANTHROPIC_REASONS),
        usage in prop::option::of((count(), count(), count(), count())),
        id in text(),
    ) {
        let mut native = json!({
            "id": id, "type": "message", "role": "assistant", "model": "claude",
            "stop_reason": stop, "stop_sequence": null,
            "content": blocks.iter().map(|b| match b {
                Block::Text(t) => json!({"type": "text", "text": t}),
                Block::Thinking(t) => json!({"type": "thinking", "thinking": t, "signature": "s"}),
                Block::ToolUse(id, name, input) => json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                Block::Other(v) => v.clone(),
            }).collect::<Vec<_>>(),
        });
        let mut want = Expected {
            finish: anthropic_finish(stop.as_deref()).into(),
            ..Default::default()
        };
        for b in &blocks {
            match b {
                Block::Text(t) => want.text.push_str(t),
                Block::Thinking(t) => want.reasoning.push_str(t),
                Block::ToolUse(id, name, input) => want.calls.push((id.clone(), name.clone(), input.clone())),
                Block::Other(v) => match v["type"].as_str() {
                    Some("text") => want.text.push_str(v["text"].as_str().unwrap_or("")),
                    Some("thinking") => want.reasoning.push_str(v["thinking"].as_str().unwrap_or("")),
                    Some("tool_use") => return Err(TestCaseError::reject("a random tool_use")),
                    _ => {}
                },
            }
        }
        if let Some((input, output, read, write)) = usage {
            native["usage"] = json!({"input_tokens": input, "output_tokens": output,
                "cache_read_input_tokens": read, "cache_creation_input_tokens": write});
            want.usage = Some(Usage {
                cached_tokens: read,
                cache_write_5m_tokens: write,
                ..tokens(sum(&[input, read, write]), output).unwrap()
            });
        }
        check(anthropic::from_anthropic(&native, "p", false), &want)?;
    }

    #[test]
    fn gemini_answers_keep_text_calls_finish_and_usage(
        parts in prop::collection::vec(gemini_part(), 0..6),
        finish in reason(GEMINI_REASONS),
        usage in prop::option::of((count(), count(), count())),
    ) {
        let mut candidate = json!({"content": {"role": "model", "parts": parts.iter().map(|p| match p {
            GeminiPart::Text { text, thought: false } => json!({"text": text}),
            GeminiPart::Text { text, thought: true } => json!({"text": text, "thought": true}),
            GeminiPart::Call { id, name, args, signature } => {
                let mut call = json!({"name": name, "args": args});
                if let Some(id) = id { call["id"] = json!(id); }
                let mut part = json!({"functionCall": call});
                if let Some(sig) = signature { part["thoughtSignature"] = json!(sig); }
                part
            }
        }).collect::<Vec<_>>()}});
        if let Some(f) = &finish {
            candidate["finishReason"] = json!(f);
        }
        let mut native = json!({"candidates": [candidate], "modelVersion": "gemini-x"});
        let mut want = Expected::default();
        for p in &parts {
            match p {
                GeminiPart::Text { text, thought: false } => want.text.push_str(text),
                GeminiPart::Text { text, thought: true } => want.reasoning.push_str(text),
                GeminiPart::Call { id, name, args, signature } => {
                    let i = want.calls.len();
                    let mut id = id.clone().unwrap_or(format!("call_{i}"));
                    if let Some(sig) = signature {
                        id = format!("{id}__thought__{sig}");
                    }
                    want.calls.push((id, name.clone(), args.clone()));
                }
            }
        }
        want.finish = gemini_finish(finish.as_deref(), !want.calls.is_empty()).into();
        if let Some((prompt, candidates, thoughts)) = usage {
            native["usageMetadata"] = json!({"promptTokenCount": prompt,
                "candidatesTokenCount": candidates, "thoughtsTokenCount": thoughts});
            want.usage = Some(Usage {
                reasoning_tokens: thoughts,
                ..tokens(prompt, sum(&[candidates, thoughts])).unwrap()
            });
        }
        check(gemini::from_gemini(&native, "p", "id", "m"), &want)?;
    }

    #[test]
    fn bedrock_answers_keep_text_calls_finish_and_usage(
        blocks in prop::collection::vec(block(), 0..6),
        stop in reason(BEDROCK_REASONS),
        usage in prop::option::of((count(), count(), count(), count())),
    ) {
        let mut want = Expected {
            finish: bedrock_finish(stop.as_deref()).into(),
            ..Default::default()
        };
        let mut content = Vec::new();
        for b in &blocks {
            match b {
                Block::Text(t) => {
                    want.text.push_str(t);
                    content.push(json!({"text": t}));
                }
                Block::Thinking(t) => {
                    want.reasoning.push_str(t);
                    content.push(json!({"reasoningContent": {"reasoningText": {"text": t, "signature": "s"}}}));
                }
                Block::ToolUse(id, name, input) => {
                    want.calls.push((id.clone(), name.clone(), input.clone()));
                    content.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
                }
                // Blocks aigw does not read (documents, guard content...).
                Block::Other(_) => content.push(json!({"citationsContent": {"citations": []}})),
            }
        }
        let mut native = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "metrics": {"latencyMs": 10},
        });
        if let Some((input, output, read, write)) = usage {
            native["usage"] = json!({"inputTokens": input, "outputTokens": output,
                "cacheReadInputTokens": read, "cacheWriteInputTokens": write,
                "totalTokens": 0});
            want.usage = Some(Usage {
                cached_tokens: read,
                cache_write_5m_tokens: write,
                ..tokens(sum(&[input, read, write]), output).unwrap()
            });
        }
        check(bedrock::from_converse(&native, "p", "m"), &want)?;
    }

    #[test]
    fn cohere_answers_keep_text_calls_finish_and_usage(
        texts in prop::collection::vec(text(), 0..4),
        calls in prop::collection::vec(("[a-z0-9]{1,8}", name(), json_object()), 0..3),
        finish in reason(COHERE_REASONS),
        billed in prop::option::of((count(), count())),
        raw in prop::option::of((count(), count())),
    ) {
        let mut native = json!({
            "id": "c1",
            "finish_reason": finish,
            "message": {
                "role": "assistant",
                "content": texts.iter().map(|t| json!({"type": "text", "text": t})).collect::<Vec<_>>(),
                "tool_plan": "I will call a tool.",
                "tool_calls": calls.iter().map(|(id, name, args)| json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": args.to_string()},
                })).collect::<Vec<_>>(),
            },
        });
        let mut usage = serde_json::Map::new();
        if let Some((i, o)) = billed {
            usage.insert("billed_units".into(), json!({"input_tokens": i, "output_tokens": o}));
        }
        if let Some((i, o)) = raw {
            usage.insert("tokens".into(), json!({"input_tokens": i, "output_tokens": o}));
        }
        let want_usage = match (billed, raw) {
            (None, None) => None,
            _ => {
                let (i, o) = billed.or(raw).unwrap();
                tokens(as_float_count(i), as_float_count(o))
            }
        };
        if billed.is_some() || raw.is_some() {
            native["usage"] = json!(usage);
        }
        let want = Expected {
            text: texts.concat(),
            reasoning: String::new(),
            calls: calls.clone(),
            finish: cohere_finish(finish.as_deref()).into(),
            usage: want_usage,
        };
        check(cohere::from_cohere(&native, "p", "m"), &want)?;
    }

    /// Any JSON at all: a clean error or an OpenAI answer, never a panic.
    #[test]
    fn odd_answers_translate_or_fail_cleanly(v in strategies::json_value()) {
        for answer in [
            anthropic::from_anthropic(&v, "p", false),
            gemini::from_gemini(&v, "p", "id", "m"),
            bedrock::from_converse(&v, "p", "m"),
            cohere::from_cohere(&v, "p", "m"),
        ] {
            match answer {
                Ok(Answer::Full { body, .. }) => {
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    prop_assert!(body["choices"][0]["message"].is_object());
                }
                Ok(_) => prop_assert!(false, "not a full answer"),
                Err(e) => prop_assert!(e.status() >= 400),
            }
        }
    }
}

// ------------------------------------------------------- regression tests

/// Found by the properties: token counts near `u64::MAX` overflowed the sum
/// of prompt and cache tokens (a panic in debug builds, a wrapped count in
/// billing in release).
#[test]
fn huge_token_counts_saturate_instead_of_overflowing() {
    let max = u64::MAX;
    let anthropic = json!({"content": [], "usage": {"input_tokens": max, "output_tokens": max,
        "cache_read_input_tokens": 1, "cache_creation_input_tokens": 1}});
    let gemini = json!({"candidates": [], "usageMetadata": {"promptTokenCount": max,
        "candidatesTokenCount": max, "thoughtsTokenCount": 1}});
    let bedrock = json!({"output": {"message": {"content": []}},
        "usage": {"inputTokens": max, "outputTokens": max, "cacheReadInputTokens": 1}});
    for answer in [
        anthropic::from_anthropic(&anthropic, "p", false),
        gemini::from_gemini(&gemini, "p", "id", "m"),
        bedrock::from_converse(&bedrock, "p", "m"),
    ] {
        let Ok(Answer::Full { body, usage }) = answer else {
            panic!("not a full answer");
        };
        let usage = usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (max, max));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["usage"]["total_tokens"], json!(max));
    }
}
