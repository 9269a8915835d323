//! Gemini `generateContent` requests (`POST /v1beta/models/{model}:...`)
//! as OpenAI chat bodies.
//!
//! Invariants:
//! - [`to_chat`] never panics, whatever the JSON; a body that is not a
//!   `GenerateContentRequest` is a [`DialectError`] naming the field.
//! - The model and streaming come from the path, never the body.
//! - Nothing that changes the answer is lost silently: what OpenAI chat
//!   cannot express (`cachedContent`, server tools such as
//!   `googleSearch` or `codeExecution`, non-image files, executable code
//!   parts, non-text `responseModalities`, `text/x.enum` output, logprobs)
//!   is named in [`Translated::native_only`], and the ingress then refuses
//!   the request unless every target speaks Gemini natively. (Such a part
//!   leaves a `[kind]` placeholder, so the translation stays valid for
//!   admission.)
//! - Dropped, because they are advisory: `generationConfig.topK` (a
//!   sampling hint Gemini CLI sends on every request: refusing it would
//!   lock the CLI out), `safetySettings` (a target without Gemini's
//!   filters has none to tune), `labels`, thought parts
//!   and `thoughtSignature`s of earlier turns (only Gemini can check
//!   them), `thinkingConfig.includeThoughts`, and fields this module does
//!   not know.
//! - Gemini calls may lack ids: a `functionCall` without one gets
//!   `call_{turn}_{part}`, and a `functionResponse` is paired with the
//!   earliest unanswered call of its id, else of its name (Gemini's
//!   pairing by name and order).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::DialectError;

/// A Gemini request in OpenAI chat's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The OpenAI chat body (its `model` is the caller's).
    pub body: Value,
    /// The first field that changes the answer and that OpenAI chat cannot
    /// express, if any: only a Gemini-native target may serve it.
    pub native_only: Option<String>,
}

/// `thinkingBudget` below this is `reasoning_effort: low`.
pub const LOW_EFFORT_BELOW: i64 = 4_096;
/// `thinkingBudget` below this (and not low) is `medium`; above, `high`.
pub const MEDIUM_EFFORT_BELOW: i64 = 16_384;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default)]
    contents: Option<Vec<Content>>,
    #[serde(default, alias = "system_instruction")]
    system_instruction: Option<Content>,
    #[serde(default)]
    tools: Option<Vec<Map<String, Value>>>,
    #[serde(default, alias = "tool_config")]
    tool_config: Option<ToolConfig>,
    #[serde(default, alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    #[serde(default, alias = "cached_content")]
    cached_content: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Content {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(default, alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default, alias = "top_p")]
    top_p: Option<f64>,
    #[serde(default, alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(default, alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
    #[serde(default, alias = "candidate_count")]
    candidate_count: Option<u64>,
    #[serde(default, alias = "presence_penalty")]
    presence_penalty: Option<f64>,
    #[serde(default, alias = "frequency_penalty")]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default, alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(default, alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(default, alias = "response_json_schema")]
    response_json_schema: Option<Value>,
    #[serde(default, alias = "response_modalities")]
    response_modalities: Option<Vec<String>>,
    #[serde(default, alias = "response_logprobs")]
    response_logprobs: Option<bool>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default, alias = "thinking_config")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    #[serde(default, alias = "thinking_budget")]
    thinking_budget: Option<i64>,
    #[serde(default, alias = "thinking_level")]
    thinking_level: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default, alias = "parameters_json_schema")]
    parameters_json_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    #[serde(alias = "mime_type")]
    mime_type: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    #[serde(default, alias = "mime_type")]
    mime_type: Option<String>,
    #[serde(alias = "file_uri")]
    file_uri: String,
}

#[derive(Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
struct FunctionResponse {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    response: Option<Value>,
}

fn field<T: for<'de> Deserialize<'de>>(v: &Value, param: &str) -> Result<T, DialectError> {
    T::deserialize(v).map_err(|e| DialectError::new(param, format!("'{param}' is invalid: {e}")))
}

/// Gemini's OpenAPI-subset schema (`"type": "OBJECT"`) as JSON Schema
/// (`"type": "object"`); a JSON Schema passes unchanged.
pub fn json_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => Value::String(t.to_ascii_lowercase()),
                        ("properties", Value::Object(props)) => Value::Object(
                            props
                                .iter()
                                .map(|(name, s)| (name.clone(), json_schema(s)))
                                .collect(),
                        ),
                        _ => json_schema(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(json_schema).collect()),
        other => other.clone(),
    }
}

/// The OpenAI `reasoning_effort` of a `thinkingConfig`, if it sets one
/// (a budget of -1 is dynamic and 0 turns thinking off: neither names an
/// effort).
fn reasoning_effort(t: &ThinkingConfig) -> Option<&'static str> {
    if let Some(level) = t.thinking_level.as_deref() {
        return match level.to_ascii_lowercase().as_str() {
            "minimal" => Some("minimal"),
            "low" => Some("low"),
            "medium" => Some("medium"),
            "high" => Some("high"),
            _ => None,
        };
    }
    match t.thinking_budget {
        Some(b) if b <= 0 => None,
        Some(b) if b < LOW_EFFORT_BELOW => Some("low"),
        Some(b) if b < MEDIUM_EFFORT_BELOW => Some("medium"),
        Some(_) => Some("high"),
        None => None,
    }
}

/// Translates a Gemini `GenerateContentRequest` for `model` into an
/// OpenAI chat body.
pub fn to_chat(body: &Value, model: &str, stream: bool) -> Result<Translated, DialectError> {
    if !body.is_object() {
        return Err(DialectError::new(
            "",
            "The request body must be a JSON object.",
        ));
    }
    if model.is_empty() {
        return Err(DialectError::new("model", "The model name is empty."));
    }
    let request: Request = field(body, "request")?;
    let mut native_only: Option<String> = None;
    let mut refuse = |param: String| {
        native_only.get_or_insert(param);
    };
    if request.cached_content.is_some() {
        refuse("cachedContent".into());
    }

    let mut messages = Vec::new();
    if let Some(system) = &request.system_instruction {
        let text: Vec<&str> = system
            .parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let text = text.join("\n");
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let contents = match &request.contents {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(DialectError::new(
                "contents",
                "'contents' is required and must be a non-empty array.",
            ));
        }
    };
    // Calls not yet answered: (id, name).
    let mut pending: Vec<(String, String)> = Vec::new();
    for (t, turn) in contents.iter().enumerate() {
        let role = turn.role.as_deref().unwrap_or("user");
        let at = |p: usize| format!("contents[{t}].parts[{p}]");
        match role {
            "model" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (p, part) in turn.parts.iter().enumerate() {
                    if let Some(call) = part.get("functionCall") {
                        let call: FunctionCall = field(call, &format!("{}.functionCall", at(p)))?;
                        let id = call
                            .id
                            .filter(|id| !id.is_empty())
                            .unwrap_or_else(|| format!("call_{t}_{p}"));
                        let args = call.args.unwrap_or_else(|| json!({}));
                        calls.push(json!({"id": id, "type": "function",
                            "function": {"name": call.name, "arguments": args.to_string()}}));
                        pending.push((id, call.name));
                    } else if part.get("thought").and_then(Value::as_bool) == Some(true) {
                        // An earlier turn's thoughts: advisory.
                    } else if let Some(s) = part.get("text").and_then(Value::as_str) {
                        text.push_str(s);
                    } else if let Some(kind) = unexpressible(part) {
                        refuse(format!("{}.{kind}", at(p)));
                        text.push_str(&format!("[{kind}]"));
                    }
                }
                let mut message = json!({"role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
                if !calls.is_empty() {
                    message["tool_calls"] = Value::Array(calls);
                }
                messages.push(message);
            }
            "user" | "function" | "tool" => {
                let mut results = Vec::new();
                let mut content = Vec::new();
                for (p, part) in turn.parts.iter().enumerate() {
                    let param = at(p);
                    if let Some(r) = part.get("functionResponse") {
                        let r: FunctionResponse = field(r, &format!("{param}.functionResponse"))?;
                        let by_id =
                            r.id.as_deref()
                                .and_then(|id| pending.iter().position(|(pid, _)| pid == id));
                        let found =
                            by_id.or_else(|| pending.iter().position(|(_, n)| *n == r.name));
                        let Some(found) = found else {
                            return Err(DialectError::new(
                                format!("{param}.functionResponse"),
                                format!(
                                    "'{param}.functionResponse' answers no earlier functionCall named '{}'.",
                                    r.name
                                ),
                            ));
                        };
                        let (id, _) = pending.remove(found);
                        let response = r.response.unwrap_or_else(|| json!({}));
                        results.push(json!({"role": "tool", "tool_call_id": id,
                            "content": response.to_string()}));
                    } else if let Some(s) = part.get("text").and_then(Value::as_str) {
                        if part.get("thought").and_then(Value::as_bool) != Some(true) {
                            content.push(json!({"type": "text", "text": s}));
                        }
                    } else if let Some(blob) = part.get("inlineData") {
                        let blob: Blob = field(blob, &format!("{param}.inlineData"))?;
                        if blob.mime_type.starts_with("image/") {
                            content.push(json!({"type": "image_url", "image_url": {
                                "url": format!("data:{};base64,{}", blob.mime_type, blob.data)}}));
                        } else {
                            refuse(format!("{param}.inlineData"));
                            content.push(json!({"type": "text", "text": "[inlineData]"}));
                        }
                    } else if let Some(file) = part.get("fileData") {
                        let file: FileData = field(file, &format!("{param}.fileData"))?;
                        let image = file
                            .mime_type
                            .as_deref()
                            .is_some_and(|m| m.starts_with("image/"));
                        let fetchable = file.file_uri.starts_with("https://")
                            || file.file_uri.starts_with("http://");
                        if image && fetchable {
                            content.push(
                                json!({"type": "image_url", "image_url": {"url": file.file_uri}}),
                            );
                        } else {
                            refuse(format!("{param}.fileData"));
                            content.push(json!({"type": "text", "text": "[fileData]"}));
                        }
                    } else if let Some(kind) = unexpressible(part) {
                        refuse(format!("{param}.{kind}"));
                        content.push(json!({"type": "text", "text": format!("[{kind}]")}));
                    }
                }
                messages.extend(results);
                if !content.is_empty() {
                    let content = match content.as_slice() {
                        [one] if one["type"] == "text" => one["text"].clone(),
                        _ => Value::Array(content),
                    };
                    messages.push(json!({"role": "user", "content": content}));
                }
            }
            other => {
                return Err(DialectError::new(
                    format!("contents[{t}].role"),
                    format!("'contents[{t}].role' must be 'user' or 'model', not '{other}'."),
                ));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut functions = Vec::new();
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        for (name, value) in tool {
            match name.as_str() {
                "functionDeclarations" | "function_declarations" => {
                    let param = format!("tools[{i}].functionDeclarations");
                    let declarations: Vec<FunctionDeclaration> = field(value, &param)?;
                    for d in declarations {
                        let parameters = d
                            .parameters_json_schema
                            .or_else(|| d.parameters.as_ref().map(json_schema))
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                        let mut function = json!({"name": d.name, "parameters": parameters});
                        if let Some(desc) = d.description {
                            function["description"] = Value::String(desc);
                        }
                        functions.push(json!({"type": "function", "function": function}));
                    }
                }
                other => refuse(format!("tools[{i}].{other}")),
            }
        }
    }
    if !functions.is_empty() {
        out.insert("tools".into(), Value::Array(functions));
        let calling = request
            .tool_config
            .and_then(|c| c.function_calling_config)
            .unwrap_or_default();
        let allowed = calling.allowed_function_names.unwrap_or_default();
        let choice = match calling
            .mode
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("AUTO" | "MODE_UNSPECIFIED" | "VALIDATED") => None,
            Some("NONE") => Some(json!("none")),
            Some("ANY") => match allowed.as_slice() {
                [one] => Some(json!({"type": "function", "function": {"name": one}})),
                _ => Some(json!("required")),
            },
            Some(_) => {
                return Err(DialectError::new(
                    "toolConfig.functionCallingConfig.mode",
                    "'toolConfig.functionCallingConfig.mode' must be AUTO, ANY, NONE or VALIDATED.",
                ));
            }
        };
        if allowed.len() > 1 {
            refuse("toolConfig.functionCallingConfig.allowedFunctionNames".into());
        }
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
    }
    if let Some(config) = request.generation_config {
        generation(&config, &mut out, &mut refuse)?;
    }
    Ok(Translated {
        body: Value::Object(out),
        native_only,
    })
}

/// The kind of a part OpenAI chat cannot carry, if `part` is one.
fn unexpressible(part: &Map<String, Value>) -> Option<&'static str> {
    [
        "executableCode",
        "codeExecutionResult",
        "inlineData",
        "fileData",
        "videoMetadata",
    ]
    .into_iter()
    .find(|k| part.contains_key(*k))
}

fn generation(
    config: &GenerationConfig,
    out: &mut Map<String, Value>,
    refuse: &mut impl FnMut(String),
) -> Result<(), DialectError> {
    let p = |name: &str| format!("generationConfig.{name}");
    if let Some(t) = config.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(t) = config.top_p {
        out.insert("top_p".into(), json!(t));
    }
    if let Some(n) = config.max_output_tokens {
        out.insert("max_tokens".into(), json!(n));
    }
    if let Some(stop) = config.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(stop));
    }
    match config.candidate_count {
        Some(0) => {
            return Err(DialectError::new(
                p("candidateCount"),
                "'generationConfig.candidateCount' must be at least 1.",
            ));
        }
        Some(1) | None => {}
        Some(n) => {
            out.insert("n".into(), json!(n));
        }
    }
    if let Some(v) = config.presence_penalty {
        out.insert("presence_penalty".into(), json!(v));
    }
    if let Some(v) = config.frequency_penalty {
        out.insert("frequency_penalty".into(), json!(v));
    }
    if let Some(v) = config.seed {
        out.insert("seed".into(), json!(v));
    }
    if config.response_logprobs == Some(true) || config.logprobs.is_some() {
        refuse(p("responseLogprobs"));
    }
    if config
        .response_modalities
        .iter()
        .flatten()
        .any(|m| !m.eq_ignore_ascii_case("TEXT"))
    {
        refuse(p("responseModalities"));
    }
    let schema = config
        .response_json_schema
        .clone()
        .or_else(|| config.response_schema.as_ref().map(json_schema));
    match config.response_mime_type.as_deref() {
        None | Some("text/plain") => {
            if schema.is_some() {
                return Err(DialectError::new(
                    p("responseSchema"),
                    "'generationConfig.responseSchema' needs 'responseMimeType': 'application/json'.",
                ));
            }
        }
        Some("application/json") => {
            let format = match schema {
                Some(schema) => json!({"type": "json_schema",
                    "json_schema": {"name": "response", "schema": schema}}),
                None => json!({"type": "json_object"}),
            };
            out.insert("response_format".into(), format);
        }
        Some(_) => refuse(p("responseMimeType")),
    }
    if let Some(effort) = config.thinking_config.as_ref().and_then(reasoning_effort) {
        out.insert("reasoning_effort".into(), json!(effort));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chat(body: Value) -> Translated {
        to_chat(&body, "gemini-x", false).unwrap()
    }

    #[test]
    fn text_system_and_config_translate() {
        let t = chat(json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "earlier", "thought": true, "thoughtSignature": "s"}, {"text": "hello"}]},
                {"parts": [{"text": "again"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}],
            "generationConfig": {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 64,
                "stopSequences": ["END"], "candidateCount": 2, "seed": 7, "topK": 64,
                "thinkingConfig": {"thinkingBudget": 8000, "includeThoughts": true}},
            "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
            "labels": {"team": "a"},
        }));
        assert_eq!(t.native_only, None);
        assert_eq!(
            t.body,
            json!({"model": "gemini-x", "messages": [
                {"role": "system", "content": "Be brief.\nBe kind."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
                "temperature": 0.5, "top_p": 0.9, "max_tokens": 64, "stop": ["END"], "n": 2,
                "seed": 7, "reasoning_effort": "medium"})
        );
        let streamed = to_chat(
            &json!({"contents": [{"parts": [{"text": "x"}]}]}),
            "m",
            true,
        )
        .unwrap();
        assert_eq!(streamed.body["stream"], true);
        assert_eq!(streamed.body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn tools_and_their_round_trip_translate() {
        let t = chat(json!({
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig"},
                    {"functionCall": {"id": "c9", "name": "get_time", "args": {}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_time", "response": {"t": "noon"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
                {"name": "get_time", "parametersJsonSchema": {"type": "object"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        }));
        assert_eq!(t.native_only, None);
        let m = &t.body["messages"];
        assert_eq!(m[1]["tool_calls"][0]["id"], "call_1_0");
        assert_eq!(
            m[1]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(m[1]["tool_calls"][1]["id"], "c9");
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "c9", "content": "{\"t\":\"noon\"}"})
        );
        assert_eq!(m[3]["tool_call_id"], "call_1_0");
        assert_eq!(
            t.body["tools"][0]["function"]["parameters"],
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
        );
        assert_eq!(
            t.body["tools"][1]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(
            t.body["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        );
        // An answer to no call is refused, naming the part.
        let e = to_chat(
            &json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}),
            "m",
            false,
        )
        .unwrap_err();
        assert_eq!(e.param, "contents[0].parts[0].functionResponse");
    }

    #[test]
    fn structured_output_becomes_a_json_schema_format() {
        let t = chat(json!({"contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"responseMimeType": "application/json",
                "responseSchema": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}}}}));
        assert_eq!(
            t.body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema":
                {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}}})
        );
        let t = chat(json!({"contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"responseMimeType": "application/json"}}));
        assert_eq!(t.body["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn thinking_maps_to_an_effort() {
        for (config, effort) in [
            (json!({"thinkingBudget": 1024}), Some("low")),
            (json!({"thinkingBudget": 30000}), Some("high")),
            (json!({"thinkingBudget": -1}), None),
            (json!({"thinkingBudget": 0}), None),
            (json!({"thinkingLevel": "HIGH"}), Some("high")),
        ] {
            let t = chat(json!({"contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"thinkingConfig": config}}));
            assert_eq!(
                t.body.get("reasoning_effort").and_then(Value::as_str),
                effort
            );
        }
    }

    #[test]
    fn what_openai_cannot_express_is_named() {
        for (body, named) in [
            (
                json!({"cachedContent": "cachedContents/1"}),
                "cachedContent",
            ),
            (
                json!({"tools": [{"googleSearch": {}}]}),
                "tools[0].googleSearch",
            ),
            (
                json!({"generationConfig": {"responseModalities": ["IMAGE"]}}),
                "generationConfig.responseModalities",
            ),
            (
                json!({"generationConfig": {"responseMimeType": "text/x.enum"}}),
                "generationConfig.responseMimeType",
            ),
        ] {
            let mut body = body;
            body["contents"] = json!([{"parts": [{"text": "x"}]}]);
            assert_eq!(chat(body).native_only.as_deref(), Some(named));
        }
        let t = chat(json!({"contents": [{"parts": [{"text": "x"},
            {"inlineData": {"mimeType": "application/pdf", "data": "AAAA"}}]}]}));
        assert_eq!(
            t.native_only.as_deref(),
            Some("contents[0].parts[1].inlineData")
        );
    }

    #[test]
    fn bad_bodies_name_their_field() {
        for (body, param) in [
            (json!([]), ""),
            (json!({}), "contents"),
            (json!({"contents": []}), "contents"),
            (
                json!({"contents": [{"role": "system", "parts": []}]}),
                "contents[0].role",
            ),
            (json!({"contents": "hi"}), "request"),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 0}}),
                "generationConfig.candidateCount",
            ),
        ] {
            assert_eq!(
                to_chat(&body, "m", false).unwrap_err().param,
                param,
                "{body}"
            );
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z/]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("contents"),
                            Just("parts"),
                            Just("role"),
                            Just("text"),
                            Just("functionCall"),
                            Just("functionResponse"),
                            Just("name"),
                            Just("id"),
                            Just("inlineData"),
                            Just("tools"),
                            Just("functionDeclarations"),
                            Just("generationConfig"),
                            Just("responseSchema"),
                            Just("type")
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
        fn no_json_makes_it_panic(body in any_json()) {
            let _ = to_chat(&body, "m", false);
        }
    }
}
