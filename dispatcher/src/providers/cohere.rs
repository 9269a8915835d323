//! The Cohere v2 provider: chat (OpenAI chat in, `/v2/chat` out, answers
//! and typed stream events back in OpenAI's format), embeddings
//! (`/v2/embed`) and rerank (`/v2/rerank`).

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::cohere_wire::{Event, Response, WireUsage};
use super::{Call, Capabilities, Provider, Reply};
use crate::answer::{Answer, StreamItem};
use crate::chat::request::{ChatRequest, Part, Role, ToolChoice};
use crate::convert::{self, Chunker, Completion, Translate};
use crate::embeddings;
use crate::rerank;
use crate::upstream::{self, UpstreamError, broken};
use aigw_events::wire::Endpoint;

/// Cohere v2: chat, embeddings and rerank.
pub struct Cohere;

impl Provider for Cohere {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Chat, Endpoint::Embeddings, Endpoint::Rerank],
            native: &[],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "cohere".into()
    }

    fn chat<'a>(&'a self, call: Call<'a>, body: &'a Value, stream: bool) -> Reply<'a> {
        Box::pin(chat(call.http, call.spec, call.api_key(), body, stream))
    }

    fn embeddings<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        Box::pin(embeddings(call, body))
    }

    fn rerank<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        Box::pin(rerank(call, body))
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
    let url = format!("{}/v2/chat", provider.base_url.trim_end_matches('/'));
    let mut request = http.post(url).json(&to_cohere(body, stream));
    if let Some(key) = api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    if stream {
        request = request.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let response = upstream::send(request, name).await?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if stream {
        let events = upstream::sse::provider_events(response, name.to_string());
        return Ok(Answer::Stream(convert::translate(
            events,
            StreamState::new(name, model),
        )));
    }
    let parsed = upstream::read_json(response, name).await?;
    from_cohere(&parsed, name, model)
}

/// Translates an OpenAI chat request into a Cohere v2 chat request
/// (`response_format` as Cohere's `json_object` with its `json_schema`).
pub fn to_cohere(body: &Value, stream: bool) -> Value {
    let req = ChatRequest::read(body);
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| match m.role() {
            Role::System => json!({"role": "system", "content": m.text()}),
            Role::Assistant => {
                let mut out = json!({"role": "assistant"});
                let text = m.text();
                if !text.is_empty() {
                    out["content"] = Value::String(text);
                }
                let calls: Vec<Value> = m
                    .tool_calls()
                    .iter()
                    .map(|call| {
                        let id = convert::call_id_without_signature(&call.id);
                        convert::openai_tool_call(id, &call.name, &call.arguments)
                    })
                    .collect();
                if !calls.is_empty() {
                    out["tool_calls"] = Value::Array(calls);
                }
                out
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": convert::call_id_without_signature(m.tool_call_id()),
                "content": m.text(),
            }),
            Role::User => {
                let parts = m.parts();
                let only_text = parts.iter().all(|p| matches!(p, Part::Text(_)));
                let content = if only_text {
                    Value::String(m.text())
                } else {
                    Value::Array(
                        parts
                            .into_iter()
                            .map(|p| match p {
                                Part::Text(t) => json!({"type": "text", "text": t}),
                                Part::InlineImage { media_type, data } => json!({
                                    "type": "image_url",
                                    "image_url": {"url": format!("data:{media_type};base64,{data}")},
                                }),
                                Part::ImageUrl(url) => {
                                    json!({"type": "image_url", "image_url": {"url": url}})
                                }
                            })
                            .collect(),
                    )
                };
                json!({"role": "user", "content": content})
            }
        })
        .collect();

    let mut out = Map::new();
    out.insert(
        "model".into(),
        body.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.max_tokens() {
        out.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = body.get("temperature").filter(|v| v.is_number()) {
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
        out.insert("p".into(), p.clone());
    }
    if let Some(seed) = body.get("seed").filter(|v| v.is_number()) {
        out.insert("seed".into(), seed.clone());
    }
    if let Some(stop) = req.stop() {
        out.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(output) = req.json_output() {
        out.insert(
            "response_format".into(),
            json!({"type": "json_object", "json_schema": output.schema}),
        );
    }
    let tools = req.function_tools();
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|tool| {
                let mut f = json!({"name": tool.name, "parameters": tool.parameters});
                if let Some(d) = tool.description {
                    f["description"] = Value::String(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        // Cohere has only REQUIRED and NONE; auto is the default.
        match req.tool_choice() {
            Some(ToolChoice::Required) | Some(ToolChoice::Function(_)) => {
                out.insert("tool_choice".into(), json!("REQUIRED"));
            }
            Some(ToolChoice::None) => {
                out.insert("tool_choice".into(), json!("NONE"));
            }
            _ => {}
        }
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Value::Object(out)
}

/// Cohere's `finish_reason` to OpenAI's.
pub fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some("TOOL_CALL") => "tool_calls",
        Some("ERROR_TOXIC") => "content_filter",
        _ => "stop",
    }
}

/// Billed units when present (what is paid for), else raw token counts
/// (see [`WireUsage::to_usage`]).
pub fn usage(u: &Value) -> Usage {
    WireUsage::read(u).to_usage()
}

/// Translates a Cohere v2 chat response into an OpenAI `chat.completion`.
pub fn from_cohere(v: &Value, provider: &str, model: &str) -> Result<Answer, UpstreamError> {
    let response = Response::read(v);
    let message = response
        .message
        .as_ref()
        .ok_or_else(|| upstream::invalid_response(provider, 200))?;
    let text = message.text();
    let tool_calls: Vec<Value> = message
        .tool_calls
        .iter()
        .map(|c| {
            convert::openai_tool_call(
                c.id.as_deref().unwrap_or(""),
                c.function.name.as_deref().unwrap_or(""),
                c.function.arguments.as_ref().unwrap_or(&json!("{}")),
            )
        })
        .collect();
    Ok(Completion {
        id: response.id.clone().unwrap_or_default(),
        model: model.to_string(),
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
        reasoning: None,
        tool_calls,
        finish_reason: finish_reason(response.finish_reason.as_deref()).into(),
        usage: response.usage.as_ref().map(WireUsage::to_usage),
    }
    .into_answer())
}

/// Turns Cohere's typed stream events into OpenAI chunks.
pub struct StreamState {
    provider: String,
    chunker: Chunker,
    /// Cohere's tool-call index to OpenAI's (they count the same way, but
    /// only calls, so keep our own counter).
    tools: Vec<(u64, usize)>,
}

impl StreamState {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_string(),
            chunker: Chunker::new("", model),
            tools: Vec::new(),
        }
    }

    fn tool_index(&mut self, cohere_index: u64) -> usize {
        if let Some((_, i)) = self.tools.iter().find(|(c, _)| *c == cohere_index) {
            return *i;
        }
        let i = self.tools.len();
        self.tools.push((cohere_index, i));
        i
    }
}

impl Translate for StreamState {
    type Event = (String, String);

    fn feed(&mut self, (event, data): (String, String), out: &mut Vec<StreamItem>) {
        if data.trim() == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        let e = Event::read(&v);
        let index = e.index.unwrap_or(0);
        match e.kind.as_deref().unwrap_or(event.as_str()) {
            "message-start" => {
                if let Some(id) = e.id {
                    self.chunker.id = id;
                }
                out.push(self.chunker.role());
            }
            "content-delta" => {
                if let Some(t) = e.delta.text() {
                    out.push(self.chunker.text(t));
                }
            }
            "tool-call-start" => {
                let call = e.delta.tool_call();
                let i = self.tool_index(index);
                out.push(self.chunker.tool_start(
                    i,
                    call.id.as_deref().unwrap_or(""),
                    call.function.name.as_deref().unwrap_or(""),
                    call.arguments_text().unwrap_or(""),
                ));
            }
            "tool-call-delta" => {
                if let Some(a) = e.delta.tool_call().arguments_text() {
                    let i = self.tool_index(index);
                    out.push(self.chunker.tool_args(i, a));
                }
            }
            "message-end" => {
                if let Some(err) = &e.delta.error {
                    out.push(StreamItem::Error(broken(&self.provider, err)));
                    return;
                }
                out.push(
                    self.chunker
                        .finish(finish_reason(e.delta.finish_reason.as_deref())),
                );
                if let Some(u) = &e.delta.usage {
                    out.push(self.chunker.usage(&u.to_usage()));
                }
                out.push(StreamItem::Done);
            }
            // tool-plan-delta, citations, content-start/end, tool-call-end.
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(broken(
            &self.provider,
            "the stream ended before message-end",
        )));
    }
}
/// `/v1/embeddings` as `/v2/embed`.
async fn embeddings(call: Call<'_>, body: &Value) -> Result<Answer, UpstreamError> {
    let (http, provider, api_key) = (call.http, call.spec, call.api_key());
    let url = format!("{}/v2/embed", provider.base_url.trim_end_matches('/'));
    let mut request = http.post(url).json(&embeddings::to_cohere(body)?);
    if let Some(key) = api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    let response = upstream::send(request, &provider.name).await?;
    let parsed = upstream::read_json(response, &provider.name).await?;
    let usage = parsed.get("meta").map(usage);
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    embeddings::answer(&parsed, body, model, usage, &provider.name)
}

async fn rerank(call: Call<'_>, body: &Value) -> Result<Answer, UpstreamError> {
    let (http, provider, api_key) = (call.http, call.spec, call.api_key());
    if let Some(field) = rerank::untranslatable_for_cohere(body) {
        return Err(upstream::unsupported(&provider.name, &field));
    }
    let url = format!("{}/v2/rerank", provider.base_url.trim_end_matches('/'));
    let mut request = http.post(url).json(&rerank::to_cohere(body));
    if let Some(key) = api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    let response = upstream::send(request, &provider.name).await?;
    let parsed = upstream::read_json(response, &provider.name).await?;
    rerank::answer(&parsed, body, &provider.name)
}
