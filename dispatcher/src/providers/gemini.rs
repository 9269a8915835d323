//! The Google Gemini adapter: OpenAI chat in, `generateContent` /
//! `streamGenerateContent?alt=sse` out, answers back in OpenAI's format. The
//! key goes in the `x-goog-api-key` header, never in the URL.

use std::collections::HashMap;

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::gemini_wire::{Response, UsageMetadata};
use super::{Call, Capabilities, NativeDialect, Provider, Reply};
use crate::answer::{Answer, StreamItem};
use crate::chat::request::{ChatRequest, Part, Role, ToolChoice};
use crate::convert::{self, Chunker, Completion, Translate};
use crate::embeddings;
use crate::upstream;
use crate::upstream::{UpstreamError, broken};
use aigw_events::wire::Endpoint;

/// Google Gemini: chat and embeddings, and generateContent natively.
pub struct Gemini;

impl Provider for Gemini {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Chat, Endpoint::Embeddings],
            native: &[NativeDialect::GeminiGenerate],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "gcp.gemini".into()
    }

    fn chat<'a>(&'a self, call: Call<'a>, body: &'a Value, stream: bool) -> Reply<'a> {
        Box::pin(chat(call.http, call.spec, call.api_key(), body, stream))
    }

    fn embeddings<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        Box::pin(embeddings(call, body))
    }
}

pub async fn chat(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let name = provider.name.as_str();
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let model = model.strip_prefix("models/").unwrap_or(model);
    let model_path = convert::path_segment(model);
    let base = provider.base_url.trim_end_matches('/');
    let url = if stream {
        format!("{base}/models/{model_path}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{model_path}:generateContent")
    };
    let mut request = http.post(url).json(&to_gemini(body));
    if let Some(key) = api_key {
        request = request.header("x-goog-api-key", key.expose_secret());
    }
    let response = upstream::send(request, name).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    if stream {
        let events = upstream::sse::provider_events(response, name.to_string());
        return Ok(Answer::Stream(convert::translate(
            events,
            StreamState::new(name, &id, model),
        )));
    }
    let parsed = upstream::read_json(response, name).await?;
    from_gemini(&parsed, name, &id, model)
}

/// The OpenAI tool-call id of the `index`-th function call of an answer.
///
/// Gemini 3 refuses (400) a later turn whose function calls lack the
/// `thoughtSignature` it gave them, and OpenAI clients echo only a call's id,
/// name and arguments: the id carries the signature there and back.
pub fn openai_call_id(id: Option<&str>, index: usize, signature: Option<&str>) -> String {
    let id = id.map_or_else(|| format!("call_{index}"), str::to_string);
    match signature {
        Some(sig) => format!("{id}{}{sig}", convert::THOUGHT_SIGNATURE_MARK),
        None => id,
    }
}

/// The thought signature an OpenAI tool-call id carries, if any.
fn signature_of(call_id: &str) -> Option<&str> {
    call_id
        .split_once(convert::THOUGHT_SIGNATURE_MARK)
        .map(|(_, sig)| sig)
        .filter(|sig| !sig.is_empty())
}

/// A JSON Schema in the OpenAPI subset Gemini's `parameters` and
/// `responseSchema` take: the keys it refuses dropped (`$schema`,
/// `additionalProperties`, `strict`), and a nullable type list
/// (`["string", "null"]`, what OpenAI's strict schemas use) as the type
/// with `nullable: true`.
pub fn schema_for_gemini(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out: Map<String, Value> = o
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "$schema" | "additionalProperties" | "strict")
                })
                .map(|(k, v)| (k.clone(), schema_for_gemini(v)))
                .collect();
            if let Some(Value::Array(types)) = o.get("type") {
                let nullable = types.iter().any(|t| t == "null");
                let mut named = types.iter().filter(|t| *t != "null");
                match (named.next(), named.next()) {
                    (Some(t), None) => {
                        out.insert("type".into(), t.clone());
                    }
                    // Several types: Gemini's subset has one per schema.
                    _ => {
                        out.remove("type");
                    }
                }
                if nullable {
                    out.insert("nullable".into(), Value::Bool(true));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(schema_for_gemini).collect()),
        other => other.clone(),
    }
}

/// The largest `thinkingBudget` every thinking Gemini model takes.
pub const MAX_THINKING_BUDGET: u64 = 24_576;

/// Translates an OpenAI chat request into a Gemini `generateContent` body:
/// `response_format` becomes `responseSchema` (JSON out), and
/// `reasoning_effort` a `thinkingConfig` budget (`none` is 0) with the
/// thoughts included, to come back as reasoning.
pub fn to_gemini(body: &Value) -> Value {
    let mut system: Vec<String> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini matches tool results by function name, not call id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let req = ChatRequest::read(body);
    for m in &req.messages {
        let (role, parts) = match m.role() {
            Role::System => {
                system.push(m.text());
                continue;
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m.tool_calls() {
                    let mut part =
                        json!({"functionCall": {"name": call.name, "args": call.arguments}});
                    if let Some(sig) = signature_of(&call.id) {
                        part["thoughtSignature"] = Value::String(sig.to_string());
                    }
                    parts.push(part);
                    call_names.insert(call.id, call.name);
                }
                ("model", parts)
            }
            Role::Tool => {
                let name = call_names
                    .get(m.tool_call_id())
                    .cloned()
                    .unwrap_or_default();
                let text = m.text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            Role::User => ("user", user_parts(m.parts())),
        };
        if parts.is_empty() {
            continue;
        }
        convert::push_turn(&mut contents, role, "parts", parts);
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if !system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    let mut config = Map::new();
    if let Some(n) = req.max_tokens() {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = body.get("temperature").filter(|v| v.is_number()) {
        config.insert("temperature".into(), t.clone());
    }
    if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
        config.insert("topP".into(), p.clone());
    }
    if let Some(stop) = req.stop() {
        config.insert("stopSequences".into(), json!(stop));
    }
    if let Some(output) = req.json_output() {
        config.insert("responseMimeType".into(), json!("application/json"));
        config.insert("responseSchema".into(), schema_for_gemini(&output.schema));
    }
    if let Some(effort) = req.effort() {
        let budget = effort
            .budget_tokens()
            .map_or(0, |b| b.min(MAX_THINKING_BUDGET));
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": budget > 0}),
        );
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    let tools = req.function_tools();
    if !tools.is_empty() {
        let declarations: Vec<Value> = tools
            .into_iter()
            .map(|tool| {
                let mut d =
                    json!({"name": tool.name, "parameters": schema_for_gemini(&tool.parameters)});
                if let Some(desc) = tool.description {
                    d["description"] = Value::String(desc);
                }
                d
            })
            .collect();
        out.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        if let Some(choice) = req.tool_choice() {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Function(name) => {
                    json!({"mode": "ANY", "allowedFunctionNames": [name]})
                }
            };
            out.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": config }),
            );
        }
    }
    Value::Object(out)
}

fn user_parts(parts: Vec<Part>) -> Vec<Value> {
    parts
        .into_iter()
        .map(|p| match p {
            Part::Text(text) => json!({"text": text}),
            Part::InlineImage { media_type, data } => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            Part::ImageUrl(url) => json!({
                "fileData": {"mimeType": convert::media_type_of_url(&url), "fileUri": url}
            }),
        })
        .collect()
}

/// `finishReason` to OpenAI's `finish_reason`.
pub fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match reason {
        _ if has_tool_calls => "tool_calls",
        Some("MAX_TOKENS") => "length",
        Some("SAFETY")
        | Some("RECITATION")
        | Some("BLOCKLIST")
        | Some("PROHIBITED_CONTENT")
        | Some("SPII")
        | Some("IMAGE_SAFETY") => "content_filter",
        _ => "stop",
    }
}

/// `usageMetadata`: the prompt count includes the cached content
/// (`cachedContentTokenCount`, its class); completion counts thinking
/// tokens too (`thoughtsTokenCount`, reported apart: the reasoning class).
/// See [`UsageMetadata::to_usage`].
pub fn usage(u: &Value) -> Usage {
    UsageMetadata::read(u).to_usage()
}

/// Translates a `GenerateContentResponse` into an OpenAI `chat.completion`.
pub fn from_gemini(
    v: &Value,
    provider: &str,
    id: &str,
    model: &str,
) -> Result<Answer, UpstreamError> {
    if v.get("candidates").is_none() && v.get("promptFeedback").is_none() {
        return Err(upstream::invalid_response(provider, 200));
    }
    let response = Response::read(v);
    let model = response
        .model_version
        .clone()
        .unwrap_or_else(|| model.to_string());
    let usage = response
        .usage_metadata
        .as_ref()
        .map(UsageMetadata::to_usage);
    let parts = response.parts();
    let tool_calls: Vec<Value> = parts
        .calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let call_id = openai_call_id(call.id.as_deref(), i, call.thought_signature.as_deref());
            convert::openai_tool_call(&call_id, &call.name, &call.args)
        })
        .collect();
    Ok(Completion {
        id: id.to_string(),
        model,
        content: (!parts.text.is_empty() || tool_calls.is_empty()).then_some(parts.text),
        reasoning: (!parts.thoughts.is_empty()).then_some(parts.thoughts),
        finish_reason: finish_reason(parts.finish.as_deref(), !tool_calls.is_empty()).into(),
        tool_calls,
        usage,
    }
    .into_answer())
}

/// Turns Gemini's SSE responses (each holding only new parts) into chunks.
pub struct StreamState {
    provider: String,
    chunker: Chunker,
    started: bool,
    tools: usize,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamState {
    pub fn new(provider: &str, id: &str, model: &str) -> Self {
        Self {
            provider: provider.to_string(),
            chunker: Chunker::new(id, model),
            started: false,
            tools: 0,
            finish: None,
            usage: None,
        }
    }
}

impl Translate for StreamState {
    type Event = (String, String);

    fn feed(&mut self, (_, data): (String, String), out: &mut Vec<StreamItem>) {
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        if let Some(err) = v.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("stream error");
            out.push(StreamItem::Error(broken(&self.provider, message)));
            return;
        }
        let response = Response::read(&v);
        if !self.started {
            self.started = true;
            if let Some(m) = &response.model_version {
                self.chunker.model = m.clone();
            }
            out.push(self.chunker.role());
        }
        if let Some(u) = &response.usage_metadata {
            self.usage = Some(u.to_usage());
        }
        let parts = response.parts();
        if !parts.thoughts.is_empty() {
            out.push(self.chunker.reasoning(&parts.thoughts));
        }
        if !parts.text.is_empty() {
            out.push(self.chunker.text(&parts.text));
        }
        for call in parts.calls {
            let index = self.tools;
            self.tools += 1;
            let call_id =
                openai_call_id(call.id.as_deref(), index, call.thought_signature.as_deref());
            out.push(
                self.chunker
                    .tool_start(index, &call_id, &call.name, &call.args.to_string()),
            );
        }
        if parts.finish.is_some() {
            self.finish = parts.finish;
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) {
        // Gemini ends a stream by closing it; one without a finishReason broke.
        let Some(reason) = self.finish.as_deref() else {
            out.push(StreamItem::Error(broken(
                &self.provider,
                "the stream ended without a finish reason",
            )));
            return;
        };
        out.push(
            self.chunker
                .finish(finish_reason(Some(reason), self.tools > 0)),
        );
        if let Some(u) = &self.usage {
            out.push(self.chunker.usage(u));
        }
        out.push(StreamItem::Done);
    }
}
/// `/v1/embeddings` as `batchEmbedContents`.
async fn embeddings(call: Call<'_>, body: &Value) -> Result<Answer, UpstreamError> {
    let (http, provider, api_key) = (call.http, call.spec, call.api_key());
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let model = model.strip_prefix("models/").unwrap_or(model);
    let url = format!(
        "{}/models/{}:batchEmbedContents",
        provider.base_url.trim_end_matches('/'),
        convert::path_segment(model)
    );
    let mut request = http.post(url).json(&embeddings::to_gemini(body, model)?);
    if let Some(key) = api_key {
        request = request.header("x-goog-api-key", key.expose_secret());
    }
    let response = upstream::send(request, &provider.name).await?;
    let parsed = upstream::read_json(response, &provider.name).await?;
    // Gemini reports no token counts: the dispatcher estimates (flagged).
    embeddings::answer(&parsed, body, model, None, &provider.name)
}
