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
//!   messages ahead of its other content. Images inside a tool result
//!   (a screenshot, an image file read) join that other content, as OpenAI
//!   chat has no images in tool messages.

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
                // An image (base64 or URL) cannot be a tool message's part
                // in OpenAI chat: it follows the turn's tool messages in the
                // user message. Other blocks (documents, images by file)
                // stay as parts, for the hold only (they make the request
                // native-only).
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
                                "image"
                                    if b.pointer("/source/type").and_then(Value::as_str)
                                        != Some("file") =>
                                {
                                    parts.push(image_part(b, &param)?);
                                }
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
mod tests;
