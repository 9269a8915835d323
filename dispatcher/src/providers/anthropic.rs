//! The Anthropic Messages adapter: OpenAI chat in, `/v1/messages` out, and
//! the answer (or its SSE event sequence) back into OpenAI's format.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::anthropic_wire::{Event, Message, WireUsage};
use super::{Call, Capabilities, NativeDialect, Provider, Reply};
use crate::answer::{Answer, StreamItem};
use crate::chat::request::{ChatRequest, Part, Role, ToolChoice};
use crate::convert::{self, Chunker, Completion, Translate};
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
    let (request_body, json_tool) = translate(body, stream);
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
            StreamState::new(name, model).with_json_tool(json_tool),
        )));
    }
    let parsed = upstream::read_json(response, name).await?;
    from_anthropic(&parsed, name, json_tool)
}

/// The tool that carries a JSON answer: Anthropic-compatible endpoints
/// constrain output to a schema only through a forced tool, whose input
/// aigw returns as the answer's text.
pub const JSON_TOOL: &str = "aigw_json_answer";

/// The thinking budget for `req`, if it asks for reasoning and Anthropic
/// can think here: the budget fits under the output cap (thinking counts
/// toward `max_tokens`, as reasoning does toward OpenAI's cap) and is at
/// least Anthropic's minimum, no tool is forced (forced tool use and
/// thinking exclude each other), and the conversation is not inside a tool
/// loop (Anthropic would want the loop's thinking blocks back, with
/// signatures an OpenAI client never returns).
pub(crate) fn thinking_budget(
    req: &ChatRequest,
    max_tokens: u64,
    forced_tool: bool,
) -> Option<u64> {
    let budget = req
        .effort()?
        .budget_tokens()?
        .min(max_tokens.saturating_sub(1));
    (budget >= MIN_THINKING_BUDGET && !forced_tool && !req.in_tool_loop()).then_some(budget)
}

/// Anthropic's smallest `thinking.budget_tokens`.
pub const MIN_THINKING_BUDGET: u64 = 1_024;

/// Translates an OpenAI chat request into an Anthropic Messages request.
///
/// `response_format` becomes the forced [`JSON_TOOL`], and
/// `reasoning_effort` a thinking budget (see [`thinking_budget`]); with
/// thinking on, `temperature` and `top_p` are left out, as Anthropic
/// requires.
pub fn to_anthropic(body: &Value, stream: bool) -> Value {
    translate(body, stream).0
}

/// [`to_anthropic`]'s request, and whether it offers the [`JSON_TOOL`]
/// (whose call is then the answer's text).
fn translate(body: &Value, stream: bool) -> (Value, bool) {
    let req = ChatRequest::read(body);
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let (role, blocks) = match m.role() {
            Role::System => {
                system.push(m.text());
                continue;
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m.tool_calls() {
                    let id = convert::call_id_without_signature(&call.id);
                    blocks.push(json!({"type": "tool_use", "id": id, "name": call.name,
                        "input": call.arguments}));
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = convert::call_id_without_signature(m.tool_call_id());
                (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": id,
                        "content": m.text(),
                    })],
                )
            }
            Role::User => ("user", user_blocks(m.parts())),
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
    let max_tokens = req.max_tokens().unwrap_or(convert::DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    if let Some(stop) = req.stop() {
        out.insert("stop_sequences".into(), json!(stop));
    }
    let mut tools: Vec<Value> = req
        .function_tools()
        .into_iter()
        .map(|tool| {
            let mut t = json!({"name": tool.name, "input_schema": tool.parameters});
            if let Some(d) = tool.description {
                t["description"] = Value::String(d);
            }
            t
        })
        .collect();
    let has_tools = !tools.is_empty();
    let json_output = req.json_output();
    let mut choice = if has_tools { req.tool_choice() } else { None };
    if let Some(output) = &json_output {
        let mut description =
            "Give your final answer by calling this tool: its input is the answer.".to_string();
        if let Some(name) = &output.name {
            description.push_str(&format!(" The answer is a {name}."));
        }
        tools.push(json!({"name": JSON_TOOL, "description": description,
            "input_schema": output.schema}));
        // The model answers through the JSON tool, or calls one of the
        // caller's tools first (a forced function stays forced).
        choice = match choice {
            Some(ToolChoice::Function(name)) => Some(ToolChoice::Function(name)),
            Some(ToolChoice::Auto | ToolChoice::Required) | None if has_tools => {
                Some(ToolChoice::Required)
            }
            _ => Some(ToolChoice::Function(JSON_TOOL.to_string())),
        };
    }
    let forced = matches!(choice, Some(ToolChoice::Required | ToolChoice::Function(_)));
    let thinking = thinking_budget(&req, max_tokens, forced);
    if thinking.is_none() {
        for field in ["temperature", "top_p"] {
            if let Some(v) = body.get(field).filter(|v| v.is_number()) {
                out.insert(field.into(), v.clone());
            }
        }
    }
    if let Some(budget) = thinking {
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = choice {
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
    (Value::Object(out), json_output.is_some())
}

fn user_blocks(parts: Vec<Part>) -> Vec<Value> {
    parts
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

/// The finish reason of an answer: a `tool_use` stop that called the
/// [`JSON_TOOL`] (`json_answered`) and none of the caller's tools
/// (`tool_calls`) is a plain stop.
fn answer_finish(stop_reason: Option<&str>, json_answered: bool, tool_calls: bool) -> &'static str {
    match finish_reason(stop_reason) {
        "tool_calls" if json_answered && !tool_calls => "stop",
        other => other,
    }
}

/// Anthropic's usage in aigw's token classes (see
/// [`WireUsage::to_usage`]).
pub fn usage(u: &Value) -> Usage {
    WireUsage::read(u).to_usage()
}

/// Translates an Anthropic message into an OpenAI `chat.completion`; with
/// `json_tool`, a call of the [`JSON_TOOL`] is the answer's text.
pub fn from_anthropic(v: &Value, provider: &str, json_tool: bool) -> Result<Answer, UpstreamError> {
    let message = Message::read(v);
    if message.kind.as_deref() == Some("error") {
        let text = message.error.message.as_deref().unwrap_or("error");
        return Err(broken(provider, text));
    }
    let blocks = message
        .content
        .ok_or_else(|| upstream::invalid_response(provider, 200))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let mut json_answered = false;
    for b in blocks {
        let name = b.name.as_deref().unwrap_or("");
        match b.kind.as_deref() {
            Some("text") => text.push_str(b.text.as_deref().unwrap_or("")),
            Some("thinking") => reasoning.push_str(b.thinking.as_deref().unwrap_or("")),
            Some("tool_use") if json_tool && name == JSON_TOOL => {
                json_answered = true;
                text.push_str(&b.input.unwrap_or_else(|| json!({})).to_string());
            }
            Some("tool_use") => tool_calls.push(convert::openai_tool_call(
                b.id.as_deref().unwrap_or(""),
                name,
                b.input.as_ref().unwrap_or(&json!({})),
            )),
            _ => {}
        }
    }
    let has_calls = !tool_calls.is_empty();
    Ok(Completion {
        id: message.id.unwrap_or_default(),
        model: message.model.unwrap_or_default(),
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls,
        finish_reason: answer_finish(message.stop_reason.as_deref(), json_answered, has_calls)
            .into(),
        usage: message.usage.as_ref().map(WireUsage::to_usage),
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
    /// Whether a [`JSON_TOOL`] call is the answer's text.
    json_tool: bool,
    /// The content block of that call, once it started.
    json_block: Option<u64>,
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
            json_tool: false,
            json_block: None,
        }
    }

    /// Streams a [`JSON_TOOL`] call's input as the answer's text.
    pub fn with_json_tool(mut self, json_tool: bool) -> Self {
        self.json_tool = json_tool;
        self
    }
}

impl Translate for StreamState {
    type Event = (String, String);

    fn feed(&mut self, (event, data): (String, String), out: &mut Vec<StreamItem>) {
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        let e = Event::read(&v);
        let at = e.index.unwrap_or(0);
        match e.kind.as_deref().unwrap_or(event.as_str()) {
            "message_start" => {
                if let Some(id) = e.message.id {
                    self.chunker.id = id;
                }
                if let Some(model) = e.message.model {
                    self.chunker.model = model;
                }
                self.usage = e
                    .message
                    .usage
                    .as_ref()
                    .map(WireUsage::to_usage)
                    .unwrap_or_default();
                out.push(self.chunker.role());
            }
            "content_block_start" => {
                let block = &e.content_block;
                if block.kind.as_deref() != Some("tool_use") {
                    return;
                }
                let name = block.name.as_deref().unwrap_or("");
                if self.json_tool && name == JSON_TOOL {
                    self.json_block = Some(at);
                    return;
                }
                let index = self.tools;
                self.tools += 1;
                self.tool_index.push((at, index));
                out.push(self.chunker.tool_start(
                    index,
                    block.id.as_deref().unwrap_or(""),
                    name,
                    "",
                ));
            }
            "content_block_delta" => {
                let delta = &e.delta;
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        out.push(self.chunker.text(delta.text.as_deref().unwrap_or("")))
                    }
                    Some("thinking_delta") => out.push(
                        self.chunker
                            .reasoning(delta.thinking.as_deref().unwrap_or("")),
                    ),
                    Some("input_json_delta") => {
                        let fragment = delta.partial_json.as_deref().unwrap_or("");
                        if self.json_block == Some(at) {
                            out.push(self.chunker.text(fragment));
                        } else if let Some((_, index)) =
                            self.tool_index.iter().find(|(b, _)| *b == at)
                        {
                            out.push(self.chunker.tool_args(*index, fragment));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = e.delta.stop_reason {
                    self.stop_reason = Some(r);
                }
                if let Some(u) = &e.usage {
                    // Cumulative counts: the last one wins.
                    if let Some(n) = u.output_tokens {
                        self.usage.completion_tokens = n;
                    }
                    if u.input_tokens.is_some() {
                        // The input side anew (with its cache classes).
                        self.usage = Usage {
                            completion_tokens: self.usage.completion_tokens,
                            ..u.to_usage()
                        };
                    }
                }
            }
            "message_stop" => {
                out.push(self.chunker.finish(answer_finish(
                    self.stop_reason.as_deref(),
                    self.json_block.is_some(),
                    self.tools > 0,
                )));
                out.push(self.chunker.usage(&self.usage));
                out.push(StreamItem::Done);
            }
            "error" => {
                let message = e.error.message.as_deref().unwrap_or("stream error");
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
