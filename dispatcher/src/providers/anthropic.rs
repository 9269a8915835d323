//! The Anthropic Messages adapter: OpenAI chat in, `/v1/messages` out, and
//! the answer (or its SSE event sequence) back into OpenAI's format.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::{Call, Capabilities, NativeDialect, Provider, Reply};
use crate::answer::{Answer, StreamItem};
use crate::convert::{self, Chunker, Completion, Part, ToolChoice, Translate};
use crate::upstream;
use crate::upstream::{UpstreamError, broken};
use aigw_events::wire::Endpoint;

/// The Anthropic Messages API: chat, and Messages natively.
pub struct Anthropic;

impl Provider for Anthropic {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Chat],
            native: &[NativeDialect::AnthropicMessages],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "anthropic".into()
    }

    fn chat<'a>(&'a self, call: Call<'a>, body: &'a Value, stream: bool) -> Reply<'a> {
        Box::pin(chat(call.http, call.spec, call.api_key(), body, stream))
    }
}

/// The long-standing API version; it still accepts sampling parameters.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub async fn chat(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let name = provider.name.as_str();
    let url = format!("{}/v1/messages", provider.base_url.trim_end_matches('/'));
    let request_body = to_anthropic(body, stream);
    let mut request = http
        .post(url)
        .header("anthropic-version", ANTHROPIC_VERSION)
        .json(&request_body);
    if let Some(key) = api_key {
        request = request.header("x-api-key", key.expose_secret());
    }
    if stream {
        request = request.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let response = upstream::send(request, name).await?;
    if stream {
        let events = upstream::sse::provider_events(response, name.to_string());
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        return Ok(Answer::Stream(convert::translate(
            events,
            StreamState::new(name, model),
        )));
    }
    let parsed = upstream::read_json(response, name).await?;
    from_anthropic(&parsed, name)
}

/// Translates an OpenAI chat request into an Anthropic Messages request.
pub fn to_anthropic(body: &Value, stream: bool) -> Value {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let empty = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(convert::text_of(content));
                continue;
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = convert::text_of(content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for (id, name, input) in convert::tool_calls_of(m) {
                    let id = convert::call_id_without_signature(&id);
                    blocks
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let id = convert::call_id_without_signature(id);
                (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": id,
                        "content": convert::text_of(content),
                    })],
                )
            }
            _ => ("user", user_blocks(content)),
        };
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants alternating roles: merge neighbours of one role.
        convert::push_turn(&mut messages, role, "content", blocks);
    }

    let mut out = Map::new();
    out.insert(
        "model".into(),
        body.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages));
    out.insert(
        "max_tokens".into(),
        json!(convert::max_tokens(body).unwrap_or(convert::DEFAULT_MAX_TOKENS)),
    );
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    if let Some(stop) = convert::stop_list(body) {
        out.insert("stop_sequences".into(), Value::Array(stop));
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = body.get(field).filter(|v| v.is_number()) {
            out.insert(field.into(), v.clone());
        }
    }
    let tools = convert::function_tools(body);
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|(name, description, parameters)| {
                let mut t = json!({"name": name, "input_schema": parameters});
                if let Some(d) = description {
                    t["description"] = Value::String(d);
                }
                t
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = convert::tool_choice(body) {
            let choice = match choice {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
            };
            out.insert("tool_choice".into(), choice);
        }
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Value::Object(out)
}

fn user_blocks(content: &Value) -> Vec<Value> {
    convert::parts_of(content)
        .into_iter()
        .map(|p| match p {
            Part::Text(text) => json!({"type": "text", "text": text}),
            Part::InlineImage { media_type, data } => json!({
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }),
            Part::ImageUrl(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
        })
        .collect()
}

/// `stop_reason` to OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, and pause_turn (the turn ended early; the
        // text so far is the answer).
        _ => "stop",
    }
}

/// Anthropic's usage: its `input_tokens` excludes cache reads and writes,
/// so prompt tokens are the three together, with the reads and writes as
/// their classes. Writes are split by lifetime when `cache_creation` tells
/// it (all 5-minute otherwise). Thinking is not reported apart from output.
pub fn usage(u: &Value) -> Usage {
    let read = convert::u64_at(u, &["cache_read_input_tokens"]);
    let written = convert::u64_at(u, &["cache_creation_input_tokens"]);
    let (write_5m, write_1h) = match u.get("cache_creation").filter(|c| c.is_object()) {
        Some(c) => {
            let hour = convert::u64_at(c, &["ephemeral_1h_input_tokens"]);
            // Writes the split does not account for are 5-minute ones.
            let five = convert::u64_at(c, &["ephemeral_5m_input_tokens"])
                .max(written.saturating_sub(hour));
            (five, hour)
        }
        None => (written, 0),
    };
    Usage {
        prompt_tokens: convert::token_sum([
            convert::u64_at(u, &["input_tokens"]),
            read,
            write_5m.saturating_add(write_1h).max(written),
        ]),
        completion_tokens: convert::u64_at(u, &["output_tokens"]),
        cached_tokens: read,
        cache_write_5m_tokens: write_5m,
        cache_write_1h_tokens: write_1h,
        ..Default::default()
    }
}

/// Translates an Anthropic message into an OpenAI `chat.completion`.
pub fn from_anthropic(v: &Value, provider: &str) -> Result<Answer, UpstreamError> {
    if v.get("type").and_then(Value::as_str) == Some("error") {
        let message = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("error");
        return Err(broken(provider, message));
    }
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| upstream::invalid_response(provider, 200))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(convert::openai_tool_call(
                b.get("id").and_then(Value::as_str).unwrap_or(""),
                b.get("name").and_then(Value::as_str).unwrap_or(""),
                b.get("input").unwrap_or(&json!({})),
            )),
            _ => {}
        }
    }
    Ok(Completion {
        id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls,
        finish_reason: finish_reason(v.get("stop_reason").and_then(Value::as_str)).into(),
        usage: v.get("usage").map(usage),
    }
    .into_answer())
}

/// Turns Anthropic's SSE events into OpenAI chunks.
pub struct StreamState {
    provider: String,
    chunker: Chunker,
    /// Content-block index to OpenAI tool-call index.
    tool_index: Vec<(u64, usize)>,
    tools: usize,
    usage: Usage,
    stop_reason: Option<String>,
}

impl StreamState {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_string(),
            chunker: Chunker::new("", model),
            tool_index: Vec::new(),
            tools: 0,
            usage: Usage::default(),
            stop_reason: None,
        }
    }
}

impl Translate for StreamState {
    type Event = (String, String);

    fn feed(&mut self, (event, data): (String, String), out: &mut Vec<StreamItem>) {
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.as_str());
        match kind {
            "message_start" => {
                let m = &v["message"];
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    self.chunker.id = id.to_string();
                }
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    self.chunker.model = model.to_string();
                }
                self.usage = usage(&m["usage"]);
                out.push(self.chunker.role());
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = self.tools;
                    self.tools += 1;
                    self.tool_index
                        .push((v.get("index").and_then(Value::as_u64).unwrap_or(0), index));
                    out.push(self.chunker.tool_start(
                        index,
                        block.get("id").and_then(Value::as_str).unwrap_or(""),
                        block.get("name").and_then(Value::as_str).unwrap_or(""),
                        "",
                    ));
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        out.push(self.chunker.text(delta["text"].as_str().unwrap_or("")))
                    }
                    Some("thinking_delta") => out.push(
                        self.chunker
                            .reasoning(delta["thinking"].as_str().unwrap_or("")),
                    ),
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some((_, index)) = self.tool_index.iter().find(|(b, _)| *b == block)
                        {
                            out.push(
                                self.chunker.tool_args(
                                    *index,
                                    delta["partial_json"].as_str().unwrap_or(""),
                                ),
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_string());
                }
                // Cumulative counts: the last one wins.
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.completion_tokens = n;
                }
                if v.pointer("/usage/input_tokens").is_some() {
                    // The input side anew (with its cache classes).
                    self.usage = Usage {
                        completion_tokens: self.usage.completion_tokens,
                        ..usage(&v["usage"])
                    };
                }
            }
            "message_stop" => {
                out.push(
                    self.chunker
                        .finish(finish_reason(self.stop_reason.as_deref())),
                );
                out.push(self.chunker.usage(&self.usage));
                out.push(StreamItem::Done);
            }
            "error" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("stream error");
                out.push(StreamItem::Error(broken(&self.provider, message)));
            }
            // ping, content_block_stop and unknown events.
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(broken(
            &self.provider,
            "the stream ended before message_stop",
        )));
    }
}
