//! The Amazon Bedrock adapter: OpenAI chat in, Converse / ConverseStream out,
//! signed with SigV4 (`aws-sigv4`) or a Bedrock API key; the binary
//! `application/vnd.amazon.eventstream` answer is decoded with
//! `aws-smithy-eventstream` and turned into OpenAI chunks.

use std::time::SystemTime;

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;
use futures::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::bedrock_wire::{Event, Response, WireUsage};
use super::{Call, Capabilities, Provider, Reply};
use crate::answer::{Answer, Credentials, StreamItem};
use crate::chat::request::{ChatRequest, Part, Role, ToolChoice};
use crate::convert::{self, Chunker, Completion, Translate};
use crate::upstream;
use crate::upstream::{UpstreamError, UpstreamErrorKind, broken};
use aigw_events::wire::Endpoint;

/// Amazon Bedrock Converse: chat.
pub struct Bedrock;

impl Provider for Bedrock {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Chat],
            native: &[],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "aws.bedrock".into()
    }

    fn chat<'a>(&'a self, call: Call<'a>, body: &'a Value, stream: bool) -> Reply<'a> {
        Box::pin(chat(call.http, call.spec, call.credentials, body, stream))
    }
}

/// SigV4 service name for the Bedrock runtime.
const SERVICE: &str = "bedrock";

pub async fn chat(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    credentials: Credentials<'_>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let name = provider.name.as_str();
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let model_path = convert::path_segment(model);
    let url = format!(
        "{}/model/{model_path}/{}",
        provider.base_url.trim_end_matches('/'),
        if stream {
            "converse-stream"
        } else {
            "converse"
        }
    );
    let payload = serde_json::to_vec(&to_converse(body, name)?)
        .map_err(|_| upstream::invalid_response(name, 0))?;
    let key = credentials
        .api_key
        .ok_or_else(|| upstream::misconfigured(name, "no credential"))?;
    let mut request = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if stream {
        request = request.header(
            reqwest::header::ACCEPT,
            "application/vnd.amazon.eventstream",
        );
    }
    if provider.setting("auth") == Some("sigv4") {
        let access_key_id = provider
            .setting("aws_access_key_id")
            .ok_or_else(|| upstream::misconfigured(name, "no aws_access_key_id"))?;
        let region = provider
            .setting("region")
            .ok_or_else(|| upstream::misconfigured(name, "no region"))?;
        let aws = AwsCredentials {
            access_key_id,
            secret_access_key: key,
            session_token: credentials.session_token,
            region,
        };
        for (header, value) in sigv4_headers(&url, &payload, &aws, SystemTime::now(), name)? {
            request = request.header(header, value);
        }
    } else {
        request = request.bearer_auth(key.expose_secret());
    }
    let response = upstream::send(request.body(payload), name)
        .await
        .map_err(model_error_is_upstream)?;
    if stream {
        let frames = event_frames(response, name.to_string());
        return Ok(Answer::Stream(convert::translate(
            frames,
            StreamState::new(name, model),
        )));
    }
    let parsed = upstream::read_json(response, name).await?;
    from_converse(&parsed, name, model)
}

/// What SigV4 signs with.
pub struct AwsCredentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a SecretString,
    /// Temporary credentials only; sent as `x-amz-security-token` (signed).
    pub session_token: Option<&'a SecretString>,
    pub region: &'a str,
}

/// The SigV4 headers (`authorization`, `x-amz-date`, and with a session
/// token `x-amz-security-token`) for one JSON POST to Bedrock.
pub fn sigv4_headers(
    url: &str,
    payload: &[u8],
    aws: &AwsCredentials<'_>,
    time: SystemTime,
    provider: &str,
) -> Result<Vec<(String, String)>, UpstreamError> {
    let identity = aws_credential_types::Credentials::new(
        aws.access_key_id,
        aws.secret_access_key.expose_secret(),
        aws.session_token.map(|t| t.expose_secret().to_string()),
        None,
        "aigw",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(aws.region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| upstream::misconfigured(provider, "cannot sign requests"))?
        .into();
    let headers = [("content-type", "application/json")];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(payload),
    )
    .map_err(|_| upstream::misconfigured(provider, "cannot sign requests"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|_| upstream::misconfigured(provider, "cannot sign requests"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Bedrock's 424 (`ModelErrorException`) is the model failing, not the caller.
fn model_error_is_upstream(mut e: UpstreamError) -> UpstreamError {
    if e.upstream_status == Some(424)
        && let UpstreamErrorKind::Rejected { code, .. } = &mut e.kind
    {
        e.kind = UpstreamErrorKind::Failed { code: code.take() };
    }
    e
}

fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// The thinking budget of a request to a Claude model on Bedrock, under
/// the same conditions as at Anthropic (`anthropic::thinking_budget`);
/// other Bedrock models have no common reasoning setting, so
/// `reasoning_effort` goes nowhere for them (listed in the README).
fn claude_thinking_budget(body: &Value, req: &ChatRequest, forced_tool: bool) -> Option<u64> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if !model.contains("anthropic.") && !model.contains("claude") {
        return None;
    }
    let max_tokens = req.max_tokens().unwrap_or(convert::DEFAULT_MAX_TOKENS);
    super::anthropic::thinking_budget(req, max_tokens, forced_tool)
}

/// Translates an OpenAI chat request into a Converse request.
pub fn to_converse(body: &Value, provider: &str) -> Result<Value, UpstreamError> {
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let req = ChatRequest::read(body);
    if req.json_output().is_some() {
        return Err(upstream::unsupported(
            provider,
            "'response_format' (JSON output) has no equivalent in Bedrock's Converse API",
        ));
    }
    for m in &req.messages {
        let (role, blocks) = match m.role() {
            Role::System => {
                let text = m.text();
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    blocks.push(json!({"text": text}));
                }
                for call in m.tool_calls() {
                    let id = convert::call_id_without_signature(&call.id);
                    blocks.push(json!({"toolUse": {"toolUseId": id, "name": call.name,
                        "input": call.arguments}}));
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = convert::call_id_without_signature(m.tool_call_id());
                (
                    "user",
                    vec![json!({"toolResult": {
                        "toolUseId": id,
                        "content": [{"text": m.text()}],
                    }})],
                )
            }
            Role::User => {
                let mut blocks = Vec::new();
                for part in m.parts() {
                    blocks.push(match part {
                        Part::Text(text) => json!({"text": text}),
                        Part::InlineImage { media_type, data } => {
                            let format = image_format(&media_type).ok_or_else(|| {
                                upstream::unsupported(
                                    provider,
                                    &format!("images of type {media_type} are not supported"),
                                )
                            })?;
                            json!({"image": {"format": format, "source": {"bytes": data}}})
                        }
                        Part::ImageUrl(_) => {
                            return Err(upstream::unsupported(
                                provider,
                                "Bedrock takes images only as base64 data: URLs",
                            ));
                        }
                    });
                }
                ("user", blocks)
            }
        };
        if blocks.is_empty() {
            continue;
        }
        convert::push_turn(&mut messages, role, "content", blocks);
    }

    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let mut config = Map::new();
    if let Some(n) = req.max_tokens() {
        config.insert("maxTokens".into(), json!(n));
    }
    let tools = req.function_tools();
    let choice = req.tool_choice();
    let forced =
        !tools.is_empty() && matches!(choice, Some(ToolChoice::Required | ToolChoice::Function(_)));
    let thinking = claude_thinking_budget(body, &req, forced);
    if thinking.is_none() {
        if let Some(t) = body.get("temperature").filter(|v| v.is_number()) {
            config.insert("temperature".into(), t.clone());
        }
        if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
            config.insert("topP".into(), p.clone());
        }
    }
    if let Some(budget) = thinking {
        // Thinking counts toward the cap, which must then be explicit.
        config
            .entry("maxTokens")
            .or_insert_with(|| json!(convert::DEFAULT_MAX_TOKENS));
        out.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
    }
    if let Some(stop) = req.stop() {
        config.insert("stopSequences".into(), json!(stop));
    }
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|tool| {
                let mut spec = json!({"name": tool.name, "inputSchema": {"json": tool.parameters}});
                if let Some(d) = tool.description {
                    spec["description"] = Value::String(d);
                }
                json!({ "toolSpec": spec })
            })
            .collect();
        let mut tool_config = json!({ "tools": tools });
        // Converse has no "none": leave the choice out (the model decides).
        match choice {
            Some(ToolChoice::Auto) => tool_config["toolChoice"] = json!({"auto": {}}),
            Some(ToolChoice::Required) => tool_config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Function(name)) => {
                tool_config["toolChoice"] = json!({"tool": {"name": name}})
            }
            Some(ToolChoice::None) | None => {}
        }
        out.insert("toolConfig".into(), tool_config);
    }
    Ok(Value::Object(out))
}

/// `stopReason` to OpenAI's `finish_reason`.
pub fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened") | Some("content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// Converse usage: `inputTokens` excludes cache reads and writes, so prompt
/// tokens are the three together, with the reads and writes as their
/// classes (writes as 5-minute ones: Converse does not tell their lifetime).
/// See [`WireUsage::to_usage`].
pub fn usage(u: &Value) -> Usage {
    WireUsage::read(u).to_usage()
}

/// Translates a Converse response into an OpenAI `chat.completion`.
pub fn from_converse(v: &Value, provider: &str, model: &str) -> Result<Answer, UpstreamError> {
    let mut response = Response::read(v);
    let blocks = response
        .content()
        .ok_or_else(|| upstream::invalid_response(provider, 200))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        if let Some(t) = &b.text {
            text.push_str(t);
        } else if let Some(t) = b.reasoning() {
            reasoning.push_str(t);
        } else if let Some(tool) = &b.tool_use {
            tool_calls.push(convert::openai_tool_call(
                tool.tool_use_id.as_deref().unwrap_or(""),
                tool.name.as_deref().unwrap_or(""),
                tool.input.as_ref().unwrap_or(&json!({})),
            ));
        }
    }
    Ok(Completion {
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        model: model.to_string(),
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls,
        finish_reason: finish_reason(response.stop_reason.as_deref()).into(),
        usage: response.usage.as_ref().map(WireUsage::to_usage),
    }
    .into_answer())
}

/// One decoded event-stream frame: message type, event (or exception) type,
/// JSON payload.
#[derive(Debug, Clone)]
pub struct Frame {
    pub message_type: String,
    pub event_type: String,
    pub payload: Value,
}

fn header(message: &Message, name: &str) -> String {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// Decodes the binary event stream of a ConverseStream response.
pub fn event_frames(
    response: reqwest::Response,
    provider: String,
) -> impl Stream<Item = Result<Frame, UpstreamError>> + Send + 'static {
    decode_frames(response.bytes_stream(), provider)
}

/// Largest event-stream frame read. ConverseStream frames are small JSON
/// events: a prelude announcing more is corrupt, not a reason to buffer.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// A frame's fixed part: total length, headers length and prelude CRC (4
/// bytes each), and the message CRC at the end.
const MIN_FRAME: usize = 16;

/// The length of the frame `buf` starts with, once its first 4 bytes are in;
/// `Err` when that length is impossible.
fn frame_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    Some(if (MIN_FRAME..=MAX_FRAME).contains(&len) {
        Ok(len)
    } else {
        Err(())
    })
}

/// Decodes event-stream frames from raw body chunks. The frames do not
/// depend on how the body is cut into chunks; a body cut anywhere inside a
/// frame, or corrupt (bad length or CRC), ends with an error.
pub fn decode_frames<S, E>(
    body: S,
    provider: String,
) -> impl Stream<Item = Result<Frame, UpstreamError>> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
{
    struct St<S> {
        body: std::pin::Pin<Box<S>>,
        buf: BytesMut,
        provider: String,
        over: bool,
    }
    let state = St {
        body: Box::pin(body),
        buf: BytesMut::new(),
        provider,
        over: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.over {
                return None;
            }
            match frame_len(&st.buf) {
                Some(Ok(len)) if st.buf.len() >= len => {
                    let bytes = st.buf.split_to(len).freeze();
                    if let Ok(message) = read_message_from(bytes) {
                        return Some((Ok(frame_of(&message)), st));
                    }
                    st.over = true;
                    let e = broken(&st.provider, "the event stream is corrupt");
                    return Some((Err(e), st));
                }
                Some(Err(())) => {
                    st.over = true;
                    let e = broken(&st.provider, "the event stream is corrupt");
                    return Some((Err(e), st));
                }
                Some(Ok(_)) | None => {}
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.buf.extend_from_slice(&chunk),
                Some(Err(_)) => {
                    st.over = true;
                    let e = broken(&st.provider, "the stream broke");
                    return Some((Err(e), st));
                }
                None => {
                    st.over = true;
                    if !st.buf.is_empty() {
                        let e = broken(&st.provider, "the stream ended mid-frame");
                        return Some((Err(e), st));
                    }
                    return None;
                }
            }
        }
    })
}

fn frame_of(message: &Message) -> Frame {
    let payload = serde_json::from_slice(message.payload()).unwrap_or(Value::Null);
    let mut event_type = header(message, ":event-type");
    let message_type = header(message, ":message-type");
    if message_type == "exception" {
        event_type = header(message, ":exception-type");
    }
    Frame {
        message_type,
        event_type,
        payload,
    }
}

/// Turns ConverseStream events into OpenAI chunks.
pub struct StreamState {
    provider: String,
    chunker: Chunker,
    /// Content-block index to OpenAI tool-call index.
    tool_index: Vec<(u64, usize)>,
    stop_reason: Option<String>,
}

impl StreamState {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_string(),
            chunker: Chunker::new(format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()), model),
            tool_index: Vec::new(),
            stop_reason: None,
        }
    }
}

impl Translate for StreamState {
    type Event = Frame;

    fn feed(&mut self, frame: Frame, out: &mut Vec<StreamItem>) {
        let e = Event::read(&frame.payload);
        if frame.message_type == "exception" || frame.message_type == "error" {
            let message = e.message().unwrap_or(frame.event_type.as_str());
            out.push(StreamItem::Error(broken(
                &self.provider,
                &format!("{}: {message}", frame.event_type),
            )));
            return;
        }
        let block = e.content_block_index.unwrap_or(0);
        match frame.event_type.as_str() {
            "messageStart" => out.push(self.chunker.role()),
            "contentBlockStart" => {
                if let Some(tool) = e.started_tool() {
                    let index = self.tool_index.len();
                    self.tool_index.push((block, index));
                    out.push(self.chunker.tool_start(
                        index,
                        tool.tool_use_id.as_deref().unwrap_or(""),
                        tool.name.as_deref().unwrap_or(""),
                        "",
                    ));
                }
            }
            "contentBlockDelta" => {
                let delta = &e.delta;
                if let Some(t) = &delta.text {
                    out.push(self.chunker.text(t));
                } else if let Some(t) = delta.reasoning() {
                    out.push(self.chunker.reasoning(t));
                } else if let Some(fragment) = delta.tool_input()
                    && let Some((_, index)) = self.tool_index.iter().find(|(b, _)| *b == block)
                {
                    out.push(self.chunker.tool_args(*index, fragment));
                }
            }
            "messageStop" => {
                self.stop_reason = e.stop_reason;
                out.push(
                    self.chunker
                        .finish(finish_reason(self.stop_reason.as_deref())),
                );
            }
            "metadata" => {
                if let Some(u) = &e.usage {
                    out.push(self.chunker.usage(&u.to_usage()));
                }
                out.push(StreamItem::Done);
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) {
        if self.stop_reason.is_some() {
            // messageStop came but no metadata: the answer is complete.
            out.push(StreamItem::Done);
        } else {
            out.push(StreamItem::Error(broken(
                &self.provider,
                "the stream ended before messageStop",
            )));
        }
    }
}
