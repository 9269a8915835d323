//! OpenAI chat requests translated to Anthropic Messages, Gemini
//! `generateContent`, Bedrock Converse and Cohere v2 chat.
//!
//! Properties: random requests (text and content parts, images, system
//! prompts, tools, tool calls and their results, stop, max tokens, odd
//! fields, Unicode) translate without panicking, into a body or a clean
//! error; the messages' order, roles and text survive; tool-call ids, names
//! and arguments are carried through; the system prompt lands where the
//! provider wants it; no provider gets an empty text block.

use aigw_dispatcher::providers::{anthropic, bedrock, cohere, gemini};
use aigw_events::ErrorClass;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::strategies::{self, Message, Request};

/// Who a translated block speaks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    User,
    Assistant,
}

/// One block of a conversation, whatever the provider calls it.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Text(String),
    Image {
        media_type: String,
        data: String,
    },
    ImageUrl(String),
    Call {
        id: String,
        name: String,
        args: Value,
    },
    Result {
        id: String,
        text: String,
    },
}

/// OpenAI's text of a `content`: a string, or the `text` of every part.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn image_item(url: &str) -> Item {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return Item::Image {
            media_type: media_type.into(),
            data: data.into(),
        };
    }
    Item::ImageUrl(url.into())
}

/// The blocks of a user's `content`: non-empty text parts and images.
fn user_items(content: &Value) -> Vec<Item> {
    match content {
        Value::String(s) if !s.is_empty() => vec![Item::Text(s.clone())],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| Item::Text(t.into())),
                Some("image_url") => {
                    let i = p.get("image_url")?;
                    Some(image_item(i.get("url").unwrap_or(i).as_str()?))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn content_of(m: &Value) -> &Value {
    m.get("content").unwrap_or(&Value::Null)
}

/// What a request says, in order: its system texts (non-empty) and its
/// conversation as blocks.
fn expected(req: &Request) -> (Vec<String>, Vec<(Side, Item)>) {
    let mut system = Vec::new();
    let mut items = Vec::new();
    for m in &req.messages {
        let json = m.json();
        let content = content_of(&json);
        match m {
            Message::System { .. } => system.push(text_of(content)),
            Message::User { .. } => {
                items.extend(user_items(content).into_iter().map(|i| (Side::User, i)))
            }
            Message::Assistant { calls, .. } => {
                let text = text_of(content);
                if !text.is_empty() {
                    items.push((Side::Assistant, Item::Text(text)));
                }
                for c in calls {
                    items.push((
                        Side::Assistant,
                        Item::Call {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            args: c.args.clone(),
                        },
                    ));
                }
            }
            Message::Tool { call_id, .. } => items.push((
                Side::User,
                Item::Result {
                    id: call_id.clone(),
                    text: text_of(content),
                },
            )),
        }
    }
    system.retain(|s| !s.is_empty());
    (system, items)
}

/// A tool-call id as providers other than Gemini get it.
fn without_signature(id: &str) -> String {
    id.split("__thought__").next().unwrap_or(id).to_string()
}

fn strip_signatures(items: Vec<(Side, Item)>) -> Vec<(Side, Item)> {
    items
        .into_iter()
        .map(|(side, item)| {
            let item = match item {
                Item::Call { id, name, args } => Item::Call {
                    id: without_signature(&id),
                    name,
                    args,
                },
                Item::Result { id, text } => Item::Result {
                    id: without_signature(&id),
                    text,
                },
                other => other,
            };
            (side, item)
        })
        .collect()
}

/// `max_completion_tokens`, else `max_tokens`, when a non-negative integer.
fn max_tokens(req: &Request) -> Option<u64> {
    req.max_completion_tokens
        .as_ref()
        .and_then(Value::as_u64)
        .or_else(|| req.max_tokens.as_ref().and_then(Value::as_u64))
}

/// The stop sequences: a string, or the strings of a list (other items
/// are no stop sequence).
fn stop_list(req: &Request) -> Option<Value> {
    match req.stop.as_ref()? {
        Value::String(s) => Some(json!([s])),
        Value::Array(a) => {
            let strings: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            (!strings.is_empty()).then(|| json!(strings))
        }
        _ => None,
    }
}

/// Whether the request asks for JSON output.
fn json_mode(req: &Request) -> bool {
    matches!(
        req.response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str),
        Some("json_object" | "json_schema")
    )
}

fn tool_names(req: &Request) -> Vec<Value> {
    req.tools.iter().map(|t| json!(t.name)).collect()
}

/// Checks that the turns of `turns` alternate between two roles, that each
/// has blocks under `field`, and returns them as (role, block) pairs.
fn turns<'a>(turns: &'a Value, field: &str, assistant: &str) -> Vec<(Side, &'a Value)> {
    let turns = turns.as_array().expect("a list of turns");
    let mut out = Vec::new();
    let mut last = None;
    for t in turns {
        let side = match t["role"].as_str() {
            Some("user") => Side::User,
            Some(r) if r == assistant => Side::Assistant,
            other => panic!("unexpected role {other:?}"),
        };
        assert_ne!(last, Some(side), "two turns of one role in a row");
        last = Some(side);
        let blocks = t[field].as_array().expect("blocks");
        assert!(!blocks.is_empty(), "a turn without blocks");
        out.extend(blocks.iter().map(|b| (side, b)));
    }
    out
}

fn anthropic_items(out: &Value) -> Vec<(Side, Item)> {
    turns(&out["messages"], "content", "assistant")
        .into_iter()
        .map(|(side, b)| {
            let s = |v: &Value| v.as_str().expect("a string").to_string();
            let item = match b["type"].as_str() {
                Some("text") => Item::Text(s(&b["text"])),
                Some("image") if b["source"]["type"] == "base64" => Item::Image {
                    media_type: s(&b["source"]["media_type"]),
                    data: s(&b["source"]["data"]),
                },
                Some("image") => Item::ImageUrl(s(&b["source"]["url"])),
                Some("tool_use") => Item::Call {
                    id: s(&b["id"]),
                    name: s(&b["name"]),
                    args: b["input"].clone(),
                },
                Some("tool_result") => Item::Result {
                    id: s(&b["tool_use_id"]),
                    text: s(&b["content"]),
                },
                other => panic!("unexpected block {other:?}"),
            };
            (side, item)
        })
        .collect()
}

fn gemini_items(out: &Value) -> Vec<(Side, Item)> {
    turns(&out["contents"], "parts", "model")
        .into_iter()
        .map(|(side, p)| {
            let s = |v: &Value| v.as_str().expect("a string").to_string();
            let item = if let Some(t) = p.get("text") {
                Item::Text(s(t))
            } else if let Some(d) = p.get("inlineData") {
                Item::Image {
                    media_type: s(&d["mimeType"]),
                    data: s(&d["data"]),
                }
            } else if let Some(f) = p.get("fileData") {
                Item::ImageUrl(s(&f["fileUri"]))
            } else if let Some(c) = p.get("functionCall") {
                Item::Call {
                    id: p.get("thoughtSignature").map(s).unwrap_or_default(),
                    name: s(&c["name"]),
                    args: c["args"].clone(),
                }
            } else if let Some(r) = p.get("functionResponse") {
                Item::Result {
                    id: s(&r["name"]),
                    text: r["response"].to_string(),
                }
            } else {
                panic!("unexpected part {p}")
            };
            (side, item)
        })
        .collect()
}

/// What Gemini gets instead of ids: a call carries its thought signature;
/// a result carries the name of the latest earlier call with its id, and
/// its text as a JSON object.
fn gemini_expected(items: Vec<(Side, Item)>) -> Vec<(Side, Item)> {
    let mut names = std::collections::HashMap::new();
    items
        .into_iter()
        .map(|(side, item)| {
            let item = match item {
                Item::Call { id, name, args } => {
                    names.insert(id.clone(), name.clone());
                    let signature = id
                        .split_once("__thought__")
                        .map(|(_, sig)| sig.to_string())
                        .unwrap_or_default();
                    Item::Call {
                        id: signature,
                        name,
                        args,
                    }
                }
                Item::Result { id, text } => {
                    let response = match serde_json::from_str::<Value>(&text) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({ "content": text }),
                    };
                    Item::Result {
                        id: names.get(&id).cloned().unwrap_or_default(),
                        text: response.to_string(),
                    }
                }
                other => other,
            };
            (side, item)
        })
        .collect()
}

fn bedrock_items(out: &Value) -> Vec<(Side, Item)> {
    turns(&out["messages"], "content", "assistant")
        .into_iter()
        .map(|(side, b)| {
            let s = |v: &Value| v.as_str().expect("a string").to_string();
            let item = if let Some(t) = b.get("text") {
                Item::Text(s(t))
            } else if let Some(i) = b.get("image") {
                Item::Image {
                    media_type: s(&i["format"]),
                    data: s(&i["source"]["bytes"]),
                }
            } else if let Some(t) = b.get("toolUse") {
                Item::Call {
                    id: s(&t["toolUseId"]),
                    name: s(&t["name"]),
                    args: t["input"].clone(),
                }
            } else if let Some(r) = b.get("toolResult") {
                Item::Result {
                    id: s(&r["toolUseId"]),
                    text: s(&r["content"][0]["text"]),
                }
            } else {
                panic!("unexpected block {b}")
            };
            (side, item)
        })
        .collect()
}

fn bedrock_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn no_empty_text(items: &[(Side, Item)]) {
    for (_, item) in items {
        assert_ne!(item, &Item::Text(String::new()), "an empty text block");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn anthropic_requests_keep_the_conversation(req in strategies::request()) {
        let out = anthropic::to_anthropic(&req.json(), req.stream);
        let (system, items) = expected(&req);
        let got = anthropic_items(&out);
        no_empty_text(&got);
        prop_assert_eq!(got, strip_signatures(items));
        if system.is_empty() {
            prop_assert!(out.get("system").is_none());
        } else {
            prop_assert_eq!(&out["system"], &json!(system.join("\n\n")));
        }
        prop_assert_eq!(&out["model"], &json!(req.model));
        prop_assert_eq!(&out["max_tokens"], &json!(max_tokens(&req).unwrap_or(4096)));
        prop_assert_eq!(out.get("stop_sequences").cloned(), stop_list(&req));
        prop_assert_eq!(out.get("stream").is_some(), req.stream);
        let names: Vec<Value> = out["tools"].as_array().into_iter().flatten()
            .map(|t| t["name"].clone()).collect();
        let mut want = tool_names(&req);
        if json_mode(&req) {
            // JSON output is a forced tool, or one among the caller's.
            want.push(json!(anthropic::JSON_TOOL));
            let forced = &out["tool_choice"]["type"];
            prop_assert!(forced == "tool" || (forced == "any" && !req.tools.is_empty()), "{}", out["tool_choice"]);
        } else if req.tools.is_empty() {
            prop_assert!(out.get("tool_choice").is_none());
        }
        prop_assert_eq!(names, want);
    }

    #[test]
    fn gemini_requests_keep_the_conversation(req in strategies::request()) {
        let out = gemini::to_gemini(&req.json());
        let (system, items) = expected(&req);
        let got = gemini_items(&out);
        no_empty_text(&got);
        prop_assert_eq!(got, gemini_expected(items));
        if system.is_empty() {
            prop_assert!(out.get("systemInstruction").is_none());
        } else {
            prop_assert_eq!(
                &out["systemInstruction"],
                &json!({"parts": [{"text": system.join("\n\n")}]})
            );
        }
        let config = &out["generationConfig"];
        prop_assert_eq!(config.get("maxOutputTokens").cloned(), max_tokens(&req).map(|n| json!(n)));
        prop_assert_eq!(config.get("stopSequences").cloned(), stop_list(&req));
        prop_assert_eq!(config.get("responseMimeType").is_some(), json_mode(&req));
        let declarations: Vec<Value> = out.pointer("/tools/0/functionDeclarations")
            .and_then(Value::as_array).cloned().unwrap_or_default();
        let names: Vec<Value> = declarations.iter().map(|d| d["name"].clone()).collect();
        prop_assert_eq!(names, tool_names(&req));
        for d in &declarations {
            let schema = d["parameters"].to_string();
            prop_assert!(!schema.contains("\"additionalProperties\":") && !schema.contains("\"$schema\":"));
        }
    }

    #[test]
    fn bedrock_requests_keep_the_conversation_or_refuse_cleanly(req in strategies::request()) {
        let (system, items) = expected(&req);
        let refused = json_mode(&req) || items.iter().any(|(_, i)| match i {
            Item::ImageUrl(_) => true,
            Item::Image { media_type, .. } => bedrock_format(media_type).is_none(),
            _ => false,
        });
        match bedrock::to_converse(&req.json(), "p") {
            Err(e) => {
                prop_assert!(refused, "refused {:?}", e);
                prop_assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
            }
            Ok(out) => {
                prop_assert!(!refused);
                let items: Vec<(Side, Item)> = strip_signatures(items).into_iter().map(|(side, i)| match i {
                    Item::Image { media_type, data } => (side, Item::Image {
                        media_type: bedrock_format(&media_type).unwrap_or_default().into(),
                        data,
                    }),
                    other => (side, other),
                }).collect();
                let got = bedrock_items(&out);
                no_empty_text(&got);
                prop_assert_eq!(got, items);
                let system: Vec<Value> = system.iter().map(|t| json!({"text": t})).collect();
                prop_assert_eq!(out.get("system").cloned().unwrap_or(json!([])), json!(system));
                let config = &out["inferenceConfig"];
                prop_assert_eq!(config.get("maxTokens").cloned(), max_tokens(&req).map(|n| json!(n)));
                prop_assert_eq!(config.get("stopSequences").cloned(), stop_list(&req));
                let names: Vec<Value> = out.pointer("/toolConfig/tools").and_then(Value::as_array)
                    .into_iter().flatten().map(|t| t["toolSpec"]["name"].clone()).collect();
                prop_assert_eq!(names, tool_names(&req));
            }
        }
    }

    #[test]
    fn cohere_requests_keep_every_message_in_place(req in strategies::request()) {
        let out = cohere::to_cohere(&req.json(), req.stream);
        let got = out["messages"].as_array().expect("messages");
        prop_assert_eq!(got.len(), req.messages.len());
        for (m, g) in req.messages.iter().zip(got) {
            let json = m.json();
            let content = content_of(&json);
            match m {
                Message::System { .. } => {
                    prop_assert_eq!(g, &json!({"role": "system", "content": text_of(content)}));
                }
                Message::User { .. } => {
                    prop_assert_eq!(&g["role"], "user");
                    let only_text = user_items(content).iter().all(|i| matches!(i, Item::Text(_)));
                    if only_text {
                        prop_assert_eq!(&g["content"], &json!(text_of(content)));
                    } else {
                        prop_assert!(g["content"].is_array());
                    }
                }
                Message::Assistant { calls, .. } => {
                    prop_assert_eq!(&g["role"], "assistant");
                    let text = text_of(content);
                    prop_assert_eq!(g.get("content").cloned(), (!text.is_empty()).then(|| json!(text)));
                    let sent: Vec<(String, String, Value)> = g["tool_calls"].as_array().into_iter().flatten()
                        .map(|c| (
                            c["id"].as_str().unwrap().to_string(),
                            c["function"]["name"].as_str().unwrap().to_string(),
                            serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                        ))
                        .collect();
                    let wanted: Vec<(String, String, Value)> = calls.iter()
                        .map(|c| (without_signature(&c.id), c.name.clone(), c.args.clone()))
                        .collect();
                    prop_assert_eq!(sent, wanted);
                }
                Message::Tool { call_id, .. } => {
                    prop_assert_eq!(g, &json!({
                        "role": "tool",
                        "tool_call_id": without_signature(call_id),
                        "content": text_of(content),
                    }));
                }
            }
        }
        prop_assert_eq!(out.get("max_tokens").cloned(), max_tokens(&req).map(|n| json!(n)));
        prop_assert_eq!(out.get("stop_sequences").cloned(), stop_list(&req));
        prop_assert_eq!(out.get("stream").is_some(), req.stream);
    }

    /// Bodies of any shape: whatever the translators make of them, they do
    /// not panic, and Bedrock's refusals are the caller's 400.
    #[test]
    fn odd_bodies_translate_or_fail_cleanly(
        body in prop_oneof![
            strategies::request().prop_flat_map(|r| strategies::corrupted(r.json())),
            strategies::json_value(),
        ],
        stream in any::<bool>(),
    ) {
        let _ = anthropic::to_anthropic(&body, stream).to_string();
        let _ = gemini::to_gemini(&body).to_string();
        let _ = cohere::to_cohere(&body, stream).to_string();
        if let Err(e) = bedrock::to_converse(&body, "p") {
            prop_assert_eq!((e.status(), e.class()), (400, ErrorClass::Client));
        }
    }
}

// ------------------------------------------------------- regression tests

/// Found by the properties: OpenAI takes `"content": ""` and empty text
/// parts, but Anthropic, Bedrock and Gemini answer 400 to empty text blocks.
#[test]
fn empty_user_text_is_not_sent_as_an_empty_block() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": [
            {"type": "text", "text": ""},
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
    ]});
    let anthropic = anthropic::to_anthropic(&body, false);
    assert_eq!(
        anthropic["messages"],
        json!([
            {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
        ])
    );
    let gemini = gemini::to_gemini(&body);
    assert_eq!(
        gemini["contents"],
        json!([
            {"role": "model", "parts": [{"text": "hi"}]},
            {"role": "user", "parts": [
                {"text": "what is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
            ]},
        ])
    );
    let bedrock = bedrock::to_converse(&body, "p").unwrap();
    assert_eq!(
        bedrock["messages"],
        json!([
            {"role": "assistant", "content": [{"text": "hi"}]},
            {"role": "user", "content": [
                {"text": "what is this?"},
                {"image": {"format": "png", "source": {"bytes": "AAAA"}}},
            ]},
        ])
    );
}

/// Found by the properties: serde_json's default float parsing is not exact,
/// and a tool call's arguments are parsed to be sent as an object, so a
/// number in them could change in its last digit (995820830.4861313 became
/// ...312). The workspace enables serde_json's `float_roundtrip`.
#[test]
fn tool_call_arguments_keep_their_numbers_exactly() {
    let arguments = r#"{"x":995820830.4861313}"#;
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": arguments}}]},
    ]});
    let anthropic = anthropic::to_anthropic(&body, false);
    assert_eq!(
        anthropic["messages"][1]["content"][0]["input"].to_string(),
        arguments
    );
    let gemini = gemini::to_gemini(&body);
    assert_eq!(
        gemini["contents"][1]["parts"][0]["functionCall"]["args"].to_string(),
        arguments
    );
    let bedrock = bedrock::to_converse(&body, "p").unwrap();
    assert_eq!(
        bedrock["messages"][1]["content"][0]["toolUse"]["input"].to_string(),
        arguments
    );
}
