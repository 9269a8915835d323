//! Anthropic Messages requests (`POST /v1/messages`) as OpenAI chat bodies.
//!
//! Invariants:
//! - [`to_chat`] never panics, whatever the JSON; a body that is not a
//!   Messages request is a [`DialectError`] naming the field.
//! - Nothing that changes the answer is lost silently: what OpenAI chat
//!   cannot express (server tools, documents, `top_k`, MCP servers, ...)
//!   is named in [`Translated::native_only`], and the ingress then refuses
//!   the request unless every target speaks Anthropic natively. Such a
//!   block stays in the translation as it came (a user turn's part, an
//!   assistant turn's text), since that translation is then only used to
//!   admit the request: its worst-case budget hold counts the block (a
//!   document as a whole file, an image as an image, anything else by its
//!   bytes), never a placeholder's few bytes.
//! - Dropped, because they are advisory: `cache_control` on any block,
//!   `metadata`, `context_management`, `output_config.effort`,
//!   `service_tier`, `thinking` of type `adaptive`, thinking blocks of
//!   earlier turns (a signature only Anthropic can check), `citations`
//!   settings, and fields this module does not know.
//! - Tool results come right after the assistant turn that called them
//!   (OpenAI's order): a user turn's `tool_result` blocks become `tool`
//!   messages ahead of its other content.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::DialectError;

/// An Anthropic request in OpenAI chat's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The OpenAI chat body (its `model` is the caller's).
    pub body: Value,
    pub model: String,
    pub stream: bool,
    /// The first field that changes the answer and that OpenAI chat cannot
    /// express, if any: only an Anthropic-native target may serve it.
    pub native_only: Option<String>,
}

/// `thinking.budget_tokens` below this is `reasoning_effort: low`.
pub const LOW_EFFORT_BELOW: u64 = 4_096;
/// `thinking.budget_tokens` below this (and not low) is `medium`; above, `high`.
pub const MEDIUM_EFFORT_BELOW: u64 = 16_384;

#[derive(Deserialize)]
struct Tool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

/// `thinking` of type `enabled` (the other types, `disabled`, `adaptive`
/// and any newer one, leave the effort to the model).
#[derive(Deserialize)]
struct EnabledThinking {
    budget_tokens: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputFormat {
    JsonSchema { schema: Value },
}

fn field<T: for<'de> Deserialize<'de>>(v: &Value, param: &str) -> Result<T, DialectError> {
    T::deserialize(v).map_err(|e| DialectError::new(param, format!("'{param}' is invalid: {e}")))
}

/// Translates an Anthropic Messages body into an OpenAI chat body.
pub fn to_chat(body: &Value) -> Result<Translated, DialectError> {
    let obj = body
        .as_object()
        .ok_or_else(|| DialectError::new("", "The request body must be a JSON object."))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(DialectError::new(
                "model",
                "'model' is required and must be a non-empty string.",
            ));
        }
    };
    let max_tokens = match obj.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.as_u64().unwrap_or(1),
        _ => {
            return Err(DialectError::new(
                "max_tokens",
                "'max_tokens' is required and must be a positive integer.",
            ));
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(DialectError::new("stream", "'stream' must be a boolean.")),
    };
    let mut native_only: Option<String> = None;
    let mut refuse = |param: String| {
        native_only.get_or_insert(param);
    };

    let mut messages = Vec::new();
    if let Some(system) = obj.get("system").filter(|s| !s.is_null()) {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = match obj.get("messages") {
        Some(Value::Array(turns)) if !turns.is_empty() => turns,
        _ => {
            return Err(DialectError::new(
                "messages",
                "'messages' is required and must be a non-empty array.",
            ));
        }
    };
    for (i, turn) in turns.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = turn.get("role").and_then(Value::as_str);
        let content = turn.get("content").unwrap_or(&Value::Null);
        match role {
            Some("user") => user_turn(content, &param, &mut messages, &mut refuse)?,
            Some("assistant") => assistant_turn(content, &param, &mut messages, &mut refuse)?,
            // A system message mid-conversation (Claude Code sends them).
            Some("system") => {
                let text = system_text(content).map_err(|_| {
                    DialectError::new(
                        format!("{param}.content"),
                        format!("'{param}.content' must be a string or text blocks."),
                    )
                })?;
                messages.push(json!({"role": "system", "content": text}));
            }
            _ => {
                return Err(DialectError::new(
                    format!("{param}.role"),
                    format!("'{param}.role' must be 'user', 'assistant' or 'system'."),
                ));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for name in ["temperature", "top_p"] {
        match obj.get(name) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => {
                out.insert(name.into(), v.clone());
            }
            Some(_) => {
                return Err(DialectError::new(
                    name,
                    format!("'{name}' must be a number."),
                ));
            }
        }
    }
    match obj.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => {
            return Err(DialectError::new(
                "stop_sequences",
                "'stop_sequences' must be an array of strings.",
            ));
        }
    }
    let mut parallel = None;
    if let Some(tools) = obj.get("tools").filter(|t| !t.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| DialectError::new("tools", "'tools' must be an array."))?;
        let mut functions = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            let param = format!("tools[{i}]");
            let tool: Tool = field(tool, &param)?;
            if tool.kind.as_deref().is_some_and(|k| k != "custom") {
                // Server tools (web search, code execution, bash, ...) run
                // at Anthropic.
                refuse(format!("{param}.type"));
                continue;
            }
            let mut function = json!({
                "name": tool.name,
                "parameters": tool.input_schema.unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = tool.description {
                function["description"] = Value::String(d);
            }
            functions.push(json!({"type": "function", "function": function}));
        }
        if !functions.is_empty() {
            out.insert("tools".into(), Value::Array(functions));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|c| !c.is_null()) {
        let (choice, disable) = match field::<ToolChoice>(choice, "tool_choice")? {
            ToolChoice::Auto {
                disable_parallel_tool_use,
            } => (json!("auto"), disable_parallel_tool_use),
            ToolChoice::Any {
                disable_parallel_tool_use,
            } => (json!("required"), disable_parallel_tool_use),
            ToolChoice::Tool {
                name,
                disable_parallel_tool_use,
            } => (
                json!({"type": "function", "function": {"name": name}}),
                disable_parallel_tool_use,
            ),
            ToolChoice::None => (json!("none"), None),
        };
        if out.contains_key("tools") {
            out.insert("tool_choice".into(), choice);
        }
        parallel = disable.map(|d| !d);
    }
    if let Some(p) = parallel.filter(|_| out.contains_key("tools")) {
        out.insert("parallel_tool_calls".into(), Value::Bool(p));
    }
    if let Some(thinking) = obj.get("thinking").filter(|t| !t.is_null()) {
        match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let t: EnabledThinking = field(thinking, "thinking")?;
                out.insert("reasoning_effort".into(), json!(effort(t.budget_tokens)));
            }
            Some(_) => {}
            None => {
                return Err(DialectError::new(
                    "thinking",
                    "'thinking' must be an object with a 'type'.",
                ));
            }
        }
    }
    let format = obj
        .get("output_format")
        .filter(|f| !f.is_null())
        .map(|f| (f, "output_format"))
        .or_else(|| {
            obj.get("output_config")
                .and_then(|c| c.get("format"))
                .filter(|f| !f.is_null())
                .map(|f| (f, "output_config.format"))
        });
    if let Some((format, param)) = format {
        let OutputFormat::JsonSchema { schema } = field(format, param)?;
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
        );
    }
    for name in ["top_k", "mcp_servers", "container"] {
        if obj.get(name).is_some_and(|v| !v.is_null()) {
            refuse(name.to_string());
        }
    }
    Ok(Translated {
        body: Value::Object(out),
        model,
        stream,
        native_only,
    })
}

/// `thinking.budget_tokens` as OpenAI's `reasoning_effort`.
pub fn effort(budget_tokens: u64) -> &'static str {
    if budget_tokens < LOW_EFFORT_BELOW {
        "low"
    } else if budget_tokens < MEDIUM_EFFORT_BELOW {
        "medium"
    } else {
        "high"
    }
}

fn system_text(system: &Value) -> Result<String, DialectError> {
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    _ => {
                        return Err(DialectError::new(
                            format!("system[{i}]"),
                            format!("'system[{i}]' must be a text block."),
                        ));
                    }
                }
            }
            Ok(texts.join("\n\n"))
        }
        _ => Err(DialectError::new(
            "system",
            "'system' must be a string or an array of text blocks.",
        )),
    }
}

/// A turn's content as blocks (a string is one text block).
fn blocks<'a>(content: &'a Value, param: &str) -> Result<Vec<&'a Value>, DialectError> {
    match content {
        Value::String(_) => Ok(vec![content]),
        Value::Array(blocks) => Ok(blocks.iter().collect()),
        _ => Err(DialectError::new(
            format!("{param}.content"),
            format!("'{param}.content' must be a string or an array of content blocks."),
        )),
    }
}

fn block_type<'a>(block: &'a Value, param: &str) -> Result<&'a str, DialectError> {
    block.get("type").and_then(Value::as_str).ok_or_else(|| {
        DialectError::new(param, format!("'{param}' must be a block with a 'type'."))
    })
}

fn text_of<'a>(block: &'a Value, param: &str) -> Result<&'a str, DialectError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| DialectError::new(param, format!("'{param}.text' must be a string.")))
}

fn image_part(block: &Value, param: &str) -> Result<Value, DialectError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match field::<ImageSource>(source, &format!("{param}.source"))? {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url,
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn user_turn(
    content: &Value,
    param: &str,
    messages: &mut Vec<Value>,
    refuse: &mut impl FnMut(String),
) -> Result<(), DialectError> {
    let mut parts = Vec::new();
    for (j, block) in blocks(content, param)?.into_iter().enumerate() {
        let param = format!("{param}.content[{j}]");
        if let Value::String(s) = block {
            parts.push(json!({"type": "text", "text": s}));
            continue;
        }
        match block_type(block, &param)? {
            "text" => parts.push(json!({"type": "text", "text": text_of(block, &param)?})),
            "image" => {
                if block.pointer("/source/type").and_then(Value::as_str) == Some("file") {
                    parts.push(block.clone());
                    refuse(format!("{param}.source"));
                    continue;
                }
                parts.push(image_part(block, &param)?);
            }
            "tool_result" => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        DialectError::new(
                            format!("{param}.tool_use_id"),
                            format!("'{param}.tool_use_id' must be a string."),
                        )
                    })?;
                // Blocks other than text (images, documents) stay as parts,
                // for the hold only (they make the request native-only).
                let mut kept = Vec::new();
                let text = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => {
                        let mut texts = Vec::new();
                        for (k, b) in inner.iter().enumerate() {
                            let param = format!("{param}.content[{k}]");
                            match block_type(b, &param)? {
                                "text" => texts.push(text_of(b, &param)?),
                                _ => {
                                    kept.push(b.clone());
                                    refuse(param);
                                }
                            }
                        }
                        texts.join("\n")
                    }
                    Some(_) => {
                        return Err(DialectError::new(
                            format!("{param}.content"),
                            format!("'{param}.content' must be a string or an array of blocks."),
                        ));
                    }
                };
                let text = if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                let content = if kept.is_empty() {
                    Value::String(text)
                } else {
                    let mut parts = vec![json!({"type": "text", "text": text})];
                    parts.append(&mut kept);
                    Value::Array(parts)
                };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            // Documents, search results and anything newer: only Anthropic
            // reads them (kept whole, for the hold).
            _ => {
                parts.push(block.clone());
                refuse(param);
            }
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
                only["text"].clone()
            }
            _ => Value::Array(parts),
        };
        messages.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn assistant_turn(
    content: &Value,
    param: &str,
    messages: &mut Vec<Value>,
    refuse: &mut impl FnMut(String),
) -> Result<(), DialectError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks(content, param)?.into_iter().enumerate() {
        let param = format!("{param}.content[{j}]");
        if let Value::String(s) = block {
            text.push_str(s);
            continue;
        }
        match block_type(block, &param)? {
            "text" => text.push_str(text_of(block, &param)?),
            "tool_use" => {
                let (Some(id), Some(name)) = (
                    block.get("id").and_then(Value::as_str),
                    block.get("name").and_then(Value::as_str),
                ) else {
                    return Err(DialectError::new(
                        param.clone(),
                        format!("'{param}' needs a string 'id' and 'name'."),
                    ));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // Earlier reasoning: its signature means nothing elsewhere.
            "thinking" | "redacted_thinking" => {}
            // Server tool calls and their results: kept whole, for the hold.
            _ => {
                text.push_str(&block.to_string());
                refuse(param);
            }
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
        if text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    messages.push(message);
    Ok(())
}

#[cfg(test)]
mod tests {
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
            let mut b = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            to_chat(&b).unwrap().native_only
        };
        assert_eq!(base(json!({"top_k": 5})).as_deref(), Some("top_k"));
        assert_eq!(
            base(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
                .as_deref(),
            Some("tools[0].type")
        );
        assert_eq!(
            base(json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})).as_deref(),
            Some("messages[0].content[0]")
        );
        assert_eq!(base(json!({"metadata": {"user_id": "x"}})), None);
        // Such a block stays whole in its turn, so the hold counts it.
        let document =
            json!({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}});
        let t = chat(json!({"model": "m", "max_tokens": 1,
            "messages": [{"role": "user", "content": [document.clone()]}]}));
        assert_eq!(
            t.body["messages"],
            json!([{"role": "user", "content": [document]}])
        );
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}});
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
            err(
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]})
            ),
            "messages[0].role"
        );
        assert_eq!(
            err(
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": 5}]})
            ),
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
}
