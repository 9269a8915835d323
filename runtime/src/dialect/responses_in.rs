//! OpenAI Responses requests (`POST /v1/responses`) as OpenAI chat bodies.
//!
//! Invariants:
//! - [`to_chat`] never panics, whatever the JSON; a body that is not a
//!   Responses request is a [`DialectError`] naming the field.
//! - Nothing that changes the answer is lost silently: what OpenAI chat
//!   cannot express (hosted tools other than web search, files by id,
//!   `input_file`, `item_reference`, `background`, `conversation`,
//!   `prompt`, `max_tool_calls`, `top_logprobs`, tool choices naming
//!   hosted tools or allowed-tool sets) is named in
//!   [`Translated::native_only`], and the ingress then refuses the request
//!   unless every target speaks the Responses API natively.
//! - Dropped, because they are advisory: `metadata`, `prompt_cache_key`,
//!   `prompt_cache_retention`, `safety_identifier`, `user`,
//!   `service_tier`, `include`, `client_metadata`, `truncation`, `store`
//!   (aigw's own business), `stream_options`, `text.verbosity`,
//!   `reasoning.summary`, `web_search` / `web_search_preview` tools (an
//!   offer the model may decline: without it the model answers from what
//!   it knows; Codex sends one on every turn), reasoning items of earlier
//!   turns (opaque to any other provider), and fields this module does not
//!   know.
//! - `namespace` tools (groups of function tools, as Codex sends its
//!   sub-agent tools) become their function tools, by their own names.
//! - `custom` tools (free-form input, such as Codex's `apply_patch`)
//!   become function tools taking one string, `input`; the answer's calls
//!   of them are rendered back as `custom_tool_call`s by the dispatcher
//!   ([`custom_tools`] says which names).
//! - Roles: `developer` and `system` become `system`. Function calls join
//!   the assistant turn before them, so tool results always follow the
//!   assistant turn that called them (OpenAI chat's order).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::DialectError;

/// A Responses request in OpenAI chat's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The OpenAI chat body (its `model` is the caller's).
    pub body: Value,
    pub model: String,
    pub stream: bool,
    /// The first field that changes the answer and that OpenAI chat cannot
    /// express, if any: only a Responses-native target may serve it.
    pub native_only: Option<String>,
}

/// The most tools (after namespaces are flattened) a request may declare.
pub const MAX_TOOLS: usize = 512;

#[derive(Deserialize)]
struct FunctionTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct CustomTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Format {
    Text,
    JsonObject,
    JsonSchema {
        #[serde(default)]
        name: Option<String>,
        schema: Value,
        #[serde(default)]
        strict: Option<bool>,
        #[serde(default)]
        description: Option<String>,
    },
}

fn field<T: for<'de> Deserialize<'de>>(v: &Value, param: &str) -> Result<T, DialectError> {
    T::deserialize(v).map_err(|e| DialectError::new(param, format!("'{param}' is invalid: {e}")))
}

fn string_of<'a>(v: &'a Value, key: &str, param: &str) -> Result<&'a str, DialectError> {
    v.get(key).and_then(Value::as_str).ok_or_else(|| {
        DialectError::new(
            format!("{param}.{key}"),
            format!("'{param}.{key}' must be a string."),
        )
    })
}

/// The names of the request's `custom` tools (namespaced ones included):
/// calls of them are answered as `custom_tool_call` items.
pub fn custom_tools(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let tools = body.get("tools").and_then(Value::as_array);
    for tool in tools.map(Vec::as_slice).unwrap_or_default() {
        let nested = tool.get("tools").and_then(Value::as_array);
        let inner = match tool.get("type").and_then(Value::as_str) {
            Some("namespace") => nested.map(Vec::as_slice).unwrap_or_default(),
            _ => std::slice::from_ref(tool),
        };
        for t in inner {
            if t.get("type").and_then(Value::as_str) == Some("custom")
                && let Some(name) = t.get("name").and_then(Value::as_str)
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The request's `input` as a list of items (a string is one user
/// message item, as OpenAI lists it); anything else is no items.
pub fn input_items(body: &Value) -> Vec<Value> {
    match body.get("input") {
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}]})],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// Continues a stored conversation: `body`'s `input` becomes the previous
/// response's input and output items, then its own.
pub fn expand(body: &mut Value, previous_input: &[Value], previous_output: &[Value]) {
    let own = input_items(body);
    let mut items = Vec::with_capacity(previous_input.len() + previous_output.len() + own.len());
    items.extend_from_slice(previous_input);
    items.extend_from_slice(previous_output);
    items.extend(own);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("input".into(), Value::Array(items));
    }
}

/// Translates a Responses body into an OpenAI chat body.
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
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(DialectError::new("stream", "'stream' must be a boolean.")),
    };
    let mut native_only: Option<String> = None;
    let mut refuse = |param: String| {
        native_only.get_or_insert(param);
    };

    let mut messages: Vec<Value> = Vec::new();
    match obj.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(_) => {
            return Err(DialectError::new(
                "instructions",
                "'instructions' must be a string.",
            ));
        }
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), &mut messages, &mut refuse)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(DialectError::new(
                "input",
                "'input' must be a string or an array of items.",
            ));
        }
    }
    if obj
        .get("input")
        .is_none_or(|i| i.is_null() || i.as_array().is_some_and(Vec::is_empty))
    {
        return Err(DialectError::new(
            "input",
            "'input' is required: a string or at least one item.",
        ));
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    match obj.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
            out.insert("max_tokens".into(), json!(n.as_u64().unwrap_or(1)));
        }
        Some(_) => {
            return Err(DialectError::new(
                "max_output_tokens",
                "'max_output_tokens' must be a positive integer.",
            ));
        }
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
    let functions = tools(obj.get("tools"), &mut refuse)?;
    if !functions.is_empty() {
        out.insert("tools".into(), Value::Array(functions));
    }
    if let Some(choice) = obj.get("tool_choice").filter(|c| !c.is_null()) {
        let choice = match choice {
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
                Some(choice.clone())
            }
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("function" | "custom") => {
                    let name = string_of(choice, "name", "tool_choice")?;
                    Some(json!({"type": "function", "function": {"name": name}}))
                }
                Some(_) => {
                    refuse("tool_choice".into());
                    None
                }
                None => {
                    return Err(DialectError::new(
                        "tool_choice",
                        "'tool_choice' must be 'auto', 'none', 'required' or an object with a 'type'.",
                    ));
                }
            },
            _ => {
                return Err(DialectError::new(
                    "tool_choice",
                    "'tool_choice' must be 'auto', 'none', 'required' or an object with a 'type'.",
                ));
            }
        };
        if let Some(choice) = choice.filter(|_| out.contains_key("tools")) {
            out.insert("tool_choice".into(), choice);
        }
    }
    match obj.get("parallel_tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(p)) => {
            if out.contains_key("tools") {
                out.insert("parallel_tool_calls".into(), Value::Bool(*p));
            }
        }
        Some(_) => {
            return Err(DialectError::new(
                "parallel_tool_calls",
                "'parallel_tool_calls' must be a boolean.",
            ));
        }
    }
    if let Some(reasoning) = obj.get("reasoning").filter(|r| !r.is_null()) {
        if !reasoning.is_object() {
            return Err(DialectError::new(
                "reasoning",
                "'reasoning' must be an object.",
            ));
        }
        match reasoning.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) => {
                out.insert("reasoning_effort".into(), Value::String(e.clone()));
            }
            Some(_) => {
                return Err(DialectError::new(
                    "reasoning.effort",
                    "'reasoning.effort' must be a string.",
                ));
            }
        }
    }
    if let Some(format) = obj
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
    {
        match field::<Format>(format, "text.format")? {
            Format::Text => {}
            Format::JsonObject => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Format::JsonSchema {
                name,
                schema,
                strict,
                description,
            } => {
                let mut spec =
                    json!({"name": name.unwrap_or_else(|| "output".into()), "schema": schema});
                if let Some(s) = strict {
                    spec["strict"] = Value::Bool(s);
                }
                if let Some(d) = description {
                    spec["description"] = Value::String(d);
                }
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": spec}),
                );
            }
        }
    }
    for name in [
        "background",
        "conversation",
        "prompt",
        "max_tool_calls",
        "top_logprobs",
    ] {
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

/// The request's tools as OpenAI chat function tools.
fn tools(
    tools: Option<&Value>,
    refuse: &mut impl FnMut(String),
) -> Result<Vec<Value>, DialectError> {
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| DialectError::new("tools", "'tools' must be an array."))?;
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            Some("namespace") => {
                let nested = tool.get("tools").and_then(Value::as_array).ok_or_else(|| {
                    DialectError::new(
                        format!("{param}.tools"),
                        format!("'{param}.tools' must be an array."),
                    )
                })?;
                for (j, inner) in nested.iter().enumerate() {
                    let param = format!("{param}.tools[{j}]");
                    match inner.get("type").and_then(Value::as_str) {
                        Some("function") => out.push(function_tool(inner, &param)?),
                        Some("custom") => out.push(custom_tool(inner, &param)?),
                        _ => refuse(format!("{param}.type")),
                    }
                }
            }
            Some("function") => out.push(function_tool(tool, &param)?),
            Some("custom") => out.push(custom_tool(tool, &param)?),
            Some(kind) if kind.starts_with("web_search") => {}
            Some(_) => refuse(format!("{param}.type")),
            None => {
                return Err(DialectError::new(
                    format!("{param}.type"),
                    format!("'{param}' must be a tool with a 'type'."),
                ));
            }
        }
        if out.len() > MAX_TOOLS {
            return Err(DialectError::new(
                "tools",
                format!("At most {MAX_TOOLS} tools may be declared."),
            ));
        }
    }
    Ok(out)
}

fn function_tool(tool: &Value, param: &str) -> Result<Value, DialectError> {
    let t: FunctionTool = field(tool, param)?;
    let mut function = json!({
        "name": t.name,
        "parameters": t.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(d) = t.description {
        function["description"] = Value::String(d);
    }
    if let Some(s) = t.strict {
        function["strict"] = Value::Bool(s);
    }
    Ok(json!({"type": "function", "function": function}))
}

fn custom_tool(tool: &Value, param: &str) -> Result<Value, DialectError> {
    let t: CustomTool = field(tool, param)?;
    let mut function = json!({
        "name": t.name,
        "parameters": {"type": "object", "properties": {"input": {"type": "string",
            "description": "The tool's whole free-form input."}}, "required": ["input"]},
    });
    if let Some(d) = t.description {
        function["description"] = Value::String(d);
    }
    Ok(json!({"type": "function", "function": function}))
}

/// Appends a tool call to the assistant turn just before, or to a new one.
fn push_call(messages: &mut Vec<Value>, call: Value) {
    if let Some(last) = messages.last_mut()
        && last["role"] == "assistant"
    {
        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => last["tool_calls"] = json!([call]),
        }
        return;
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

/// One input item as OpenAI chat messages.
fn input_item(
    item: &Value,
    param: &str,
    messages: &mut Vec<Value>,
    refuse: &mut impl FnMut(String),
) -> Result<(), DialectError> {
    if !item.is_object() {
        return Err(DialectError::new(
            param,
            format!("'{param}' must be an item object."),
        ));
    }
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => message_item(item, param, messages, refuse),
        Some("function_call") => {
            let call_id = string_of(item, "call_id", param)?;
            let name = string_of(item, "name", param)?;
            let arguments = item.get("arguments").and_then(Value::as_str).unwrap_or("");
            push_call(
                messages,
                json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}),
            );
            Ok(())
        }
        Some("custom_tool_call") => {
            let call_id = string_of(item, "call_id", param)?;
            let name = string_of(item, "name", param)?;
            let input = item.get("input").and_then(Value::as_str).unwrap_or("");
            let arguments = json!({"input": input}).to_string();
            push_call(
                messages,
                json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}),
            );
            Ok(())
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            let call_id = string_of(item, "call_id", param)?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for (k, part) in parts.iter().enumerate() {
                        match part.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => {
                                text.push_str(string_of(
                                    part,
                                    "text",
                                    &format!("{param}.output[{k}]"),
                                )?);
                            }
                            _ => refuse(format!("{param}.output[{k}].type")),
                        }
                    }
                    text
                }
                _ => {
                    return Err(DialectError::new(
                        format!("{param}.output"),
                        format!("'{param}.output' must be a string or content parts."),
                    ));
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            Ok(())
        }
        // Earlier turns' reasoning: opaque (encrypted) to other providers.
        Some("reasoning") => Ok(()),
        Some(_) => {
            refuse(format!("{param}.type"));
            Ok(())
        }
    }
}

/// A message item (`type: "message"`, or a bare `{role, content}`).
fn message_item(
    item: &Value,
    param: &str,
    messages: &mut Vec<Value>,
    refuse: &mut impl FnMut(String),
) -> Result<(), DialectError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => "user",
        Some("assistant") => "assistant",
        Some("system" | "developer") => "system",
        _ => {
            return Err(DialectError::new(
                format!("{param}.role"),
                format!("'{param}.role' must be 'user', 'assistant', 'system' or 'developer'."),
            ));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            let mut all_text = true;
            for (k, part) in parts.iter().enumerate() {
                let p = format!("{param}.content[{k}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        out.push(json!({"type": "text", "text": string_of(part, "text", &p)?}));
                    }
                    Some("refusal") => {
                        out.push(json!({"type": "text", "text": string_of(part, "refusal", &p)?}));
                    }
                    Some("input_image") if role == "user" => {
                        all_text = false;
                        match part.get("image_url").and_then(Value::as_str) {
                            Some(url) => {
                                let mut image = json!({"url": url});
                                if let Some(d) = part.get("detail").and_then(Value::as_str) {
                                    image["detail"] = Value::String(d.to_string());
                                }
                                out.push(json!({"type": "image_url", "image_url": image}));
                            }
                            // An image by file id lives at OpenAI.
                            None => refuse(format!("{p}.file_id")),
                        }
                    }
                    _ => refuse(format!("{p}.type")),
                }
            }
            if role != "user" || (all_text && out.len() <= 1) {
                let text: String = out
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                Value::String(text)
            } else {
                Value::Array(out)
            }
        }
        _ => {
            return Err(DialectError::new(
                format!("{param}.content"),
                format!("'{param}.content' must be a string or content parts."),
            ));
        }
    };
    messages.push(json!({"role": role, "content": content}));
    Ok(())
}

#[cfg(test)]
mod tests;
