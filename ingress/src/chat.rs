//! `POST /v1/chat/completions`: validate, queue on JetStream, relay the answer.

use std::time::Duration;

use aigw_events::wire::{self, DispatchRequest, Endpoint};
use aigw_runtime::registry::ResolveError;
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::idempotency::{self, Claim};
use crate::{AppState, RequestId, admission, multipart, relay};

/// A chat request that passed validation.
#[derive(Debug, PartialEq)]
pub struct ChatRequest {
    /// The body to forward (aigw's own fields removed).
    pub body: Value,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub provider: Option<String>,
    pub endpoint: Endpoint,
    /// An uploaded file (transcriptions), stored in the media object store
    /// under the request id before the request is queued.
    pub upload: Option<Bytes>,
}

fn invalid(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::BadRequest {
        message: message.into(),
        param: Some(param),
        code: None,
    }
}

/// The body as a JSON object, and its required `model`.
fn object_with_model(bytes: &[u8]) -> Result<(Map<String, Value>, String), ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("We could not parse the JSON body of your request: {e}"),
        param: None,
        code: Some("invalid_json"),
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'model'.", "model"));
        }
        Some(_) => return Err(invalid("'model' must be a non-empty string.", "model")),
    };
    Ok((obj, model))
}

/// Removes aigw's own `provider` field (a pin, never forwarded upstream).
fn take_provider(obj: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    match obj.remove("provider") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) if !p.trim().is_empty() => Ok(Some(p)),
        Some(_) => Err(invalid(
            "'provider' must be a non-empty string.",
            "provider",
        )),
    }
}

/// Checks the shape OpenAI documents for the fields aigw relies on; every
/// other field passes through untouched.
pub fn validate(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
                let ok = m
                    .as_object()
                    .and_then(|o| o.get("role"))
                    .is_some_and(Value::is_string);
                if !ok {
                    return Err(invalid(
                        format!("'messages[{i}]' must be an object with a string 'role'."),
                        "messages",
                    ));
                }
            }
        }
        None | Some(Value::Null) => {
            return Err(invalid(
                "Missing required parameter: 'messages'.",
                "messages",
            ));
        }
        Some(Value::Array(_)) => {
            return Err(invalid("'messages' must not be empty.", "messages"));
        }
        Some(_) => return Err(invalid("'messages' must be an array.", "messages")),
    }
    check_type(&obj, "stream", "a boolean", Value::is_boolean)?;
    for field in ["max_tokens", "max_completion_tokens", "n"] {
        check_type(&obj, field, "a non-negative integer", Value::is_u64)?;
    }
    for field in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        check_type(&obj, field, "a number", Value::is_number)?;
    }
    check_type(&obj, "stream_options", "an object", Value::is_object)?;
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest {
        body: Value::Object(obj),
        model,
        stream,
        include_usage,
        provider,
        upload: None,
        endpoint: Endpoint::Chat,
    })
}

/// Checks an embeddings body: `model`, and `input` as a string or a
/// non-empty array; every other field passes through.
pub fn validate_embeddings(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("input") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'input'.", "input"));
        }
        Some(_) => {
            return Err(invalid(
                "'input' must be a non-empty string or array.",
                "input",
            ));
        }
    }
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest {
        body: Value::Object(obj),
        model,
        stream: false,
        include_usage: false,
        provider,
        upload: None,
        endpoint: Endpoint::Embeddings,
    })
}

/// Checks an image generation body (OpenAI's shape): `model`, a non-empty
/// `prompt`, `n` from 1 to 10, `size` as `WIDTHxHEIGHT` or `auto`, and
/// `response_format` `b64_json` or `url`; every other field passes through.
pub fn validate_images(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'prompt'.", "prompt"));
        }
        Some(_) => return Err(invalid("'prompt' must be a non-empty string.", "prompt")),
    }
    match obj.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64().is_some_and(|n| (1..=10).contains(&n)) => {}
        Some(_) => return Err(invalid("'n' must be an integer from 1 to 10.", "n")),
    }
    match obj.get("size") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "auto" || parse_size(s).is_some() => {}
        Some(_) => {
            return Err(invalid(
                "'size' must be 'auto' or WIDTHxHEIGHT, e.g. '1024x1024'.",
                "size",
            ));
        }
    }
    match obj.get("response_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "b64_json" || f == "url" => {}
        Some(_) => {
            return Err(invalid(
                "'response_format' must be 'b64_json' or 'url'.",
                "response_format",
            ));
        }
    }
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest {
        body: Value::Object(obj),
        model,
        stream: false,
        include_usage: false,
        provider,
        upload: None,
        endpoint: Endpoint::Images,
    })
}

/// `WIDTHxHEIGHT` with both sides positive.
pub fn parse_size(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once('x')?;
    let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

/// Formats of `/v1/audio/speech` answers, as OpenAI names them.
pub const SPEECH_FORMATS: &[&str] = &["mp3", "opus", "aac", "flac", "wav", "pcm"];

/// Checks a speech body (OpenAI's shape): `model`, `input` (1 to 4096
/// characters), `voice`, an optional `response_format` and `speed`.
pub fn validate_speech(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("input") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 4096 => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'input'.", "input"));
        }
        Some(_) => {
            return Err(invalid(
                "'input' must be a string of 1 to 4096 characters.",
                "input",
            ));
        }
    }
    match obj.get("voice") {
        Some(Value::String(v)) if !v.trim().is_empty() => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'voice'.", "voice"));
        }
        Some(_) => return Err(invalid("'voice' must be a non-empty string.", "voice")),
    }
    match obj.get("response_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if SPEECH_FORMATS.contains(&f.as_str()) => {}
        Some(_) => {
            return Err(invalid(
                format!(
                    "'response_format' must be one of {}.",
                    SPEECH_FORMATS.join(", ")
                ),
                "response_format",
            ));
        }
    }
    check_type(&obj, "speed", "a number", Value::is_number)?;
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest {
        body: Value::Object(obj),
        model,
        stream: false,
        include_usage: false,
        provider,
        upload: None,
        endpoint: Endpoint::Speech,
    })
}

/// Largest audio upload (`/v1/audio/transcriptions`), as OpenAI's.
pub const MAX_AUDIO_BYTES: usize = 25 * 1024 * 1024;

/// Formats of `/v1/audio/transcriptions` answers aigw produces.
pub const TRANSCRIPTION_FORMATS: &[&str] = &["json", "text"];

/// Checks a transcription form (OpenAI's shape): a non-empty `file`,
/// `model`, and optional `language`, `prompt`, `temperature`,
/// `response_format` (`json` or `text`). The body queued is JSON naming the
/// file; the audio itself travels through the media object store.
pub fn validate_transcription(content_type: &str, bytes: &Bytes) -> Result<ChatRequest, ApiError> {
    let fields = multipart::parse(content_type, bytes)
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    let text = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name && f.filename.is_none())
            .and_then(|f| f.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let model = text("model")
        .ok_or_else(|| invalid("Missing required parameter: 'model'.", "model"))?
        .to_string();
    let file = fields
        .iter()
        .find(|f| f.name == "file")
        .filter(|f| !f.data.is_empty())
        .ok_or_else(|| invalid("Missing required parameter: 'file'.", "file"))?;
    let format = text("response_format").unwrap_or("json");
    if !TRANSCRIPTION_FORMATS.contains(&format) {
        return Err(invalid(
            "'response_format' must be 'json' or 'text'.",
            "response_format",
        ));
    }
    let mut body = serde_json::json!({
        "model": model,
        "response_format": format,
        "file": {
            "filename": file.filename.clone().unwrap_or_else(|| "audio".into()),
            "content_type": file.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
            "bytes": file.data.len(),
            // What the budget holds: the longest the audio can last.
            "max_seconds": aigw_runtime::estimate::audio_seconds_upper(&file.data),
        },
    });
    for field in ["language", "prompt"] {
        if let Some(v) = text(field) {
            body[field] = Value::String(v.to_string());
        }
    }
    if let Some(t) = text("temperature") {
        let t: f64 = t
            .parse()
            .map_err(|_| invalid("'temperature' must be a number.", "temperature"))?;
        body["temperature"] = serde_json::json!(t);
    }
    Ok(ChatRequest {
        body,
        model,
        stream: false,
        include_usage: false,
        provider: text("provider").map(str::to_string),
        endpoint: Endpoint::Transcriptions,
        upload: Some(file.data.clone()),
    })
}

/// `POST /v1/audio/transcriptions`: a multipart upload of up to
/// [`MAX_AUDIO_BYTES`], queued like a chat completion.
pub async fn transcriptions(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(MAX_AUDIO_BYTES)
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request = validate_transcription(content_type, &bytes)?;
    queue_and_answer(&state, key, request, request_id.0).await
}

/// `POST /v1/images/generations`: queued and relayed like a chat completion.
pub async fn images(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_images(&bytes)?;
    queue_and_answer(&state, key, request, request_id.0).await
}

/// `POST /v1/audio/speech`: queued like a chat completion; the answer is
/// the audio itself.
pub async fn speech(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_speech(&bytes)?;
    queue_and_answer(&state, key, request, request_id.0).await
}

/// `POST /v1/embeddings`: queued and relayed like a chat completion.
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_embeddings(&bytes)?;
    queue_and_answer(&state, key, request, request_id.0).await
}

fn check_type(
    obj: &Map<String, Value>,
    field: &'static str,
    what: &str,
    ok: fn(&Value) -> bool,
) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if ok(v) => Ok(()),
        Some(_) => Err(invalid(format!("'{field}' must be {what}."), field)),
    }
}

/// Reads the body, turning the size limit into a 413.
pub fn body_bytes(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.max_body_bytes)
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let chat = validate(&bytes)?;
    let id = request_id.0;
    let Some(idem) = idempotency::key_of(&headers)? else {
        return queue_and_answer(&state, key, chat, id).await;
    };
    if chat.stream {
        return Err(ApiError::BadRequest {
            message: "'Idempotency-Key' is not supported with 'stream': true.".into(),
            param: Some("stream"),
            code: Some("invalid_idempotency_key"),
        });
    }
    let pool = &state.stores.pool;
    match idempotency::claim(pool, key.id, &idem, id, state.request_timeout).await? {
        Claim::Claimed => {}
        Claim::Done {
            request_id,
            status,
            body,
        } => return Ok(idempotency::replay(request_id, status, body)),
        Claim::InProgress => {
            return Err(ApiError::Conflict(
                "A request with this Idempotency-Key is still running.".into(),
            ));
        }
    }
    let key_id = key.id;
    let response = queue_and_answer(&state, key, chat, id)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let status = response.status();
    let keep = status.is_success()
        || (status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 425 | 429));
    if !keep {
        if let Err(e) = idempotency::release(pool, key_id, &idem, id).await {
            tracing::warn!(error = %e, "releasing an idempotency key");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    if let Err(e) = idempotency::store(pool, key_id, &idem, id, status.as_u16(), &bytes).await {
        tracing::warn!(error = %e, "storing an idempotent answer");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Admits, queues and relays one chat request.
async fn queue_and_answer(
    state: &AppState,
    key: std::sync::Arc<aigw_runtime::KeyEntry>,
    chat: ChatRequest,
    id: Uuid,
) -> Result<Response, ApiError> {
    // Fail fast on models nobody serves; the dispatcher resolves again.
    let targets = state
        .registry
        .resolve_fresh(&chat.model, chat.provider.as_deref())
        .await
        .map_err(unresolved)?;

    if !targets
        .iter()
        .any(|t| t.provider.spec.kind.serves(chat.endpoint))
    {
        return Err(ApiError::BadRequest {
            message: format!(
                "No provider of `{}` offers {} through aigw.",
                chat.model,
                chat.endpoint.path()
            ),
            param: Some("model"),
            code: Some("unsupported_endpoint"),
        });
    }
    if !targets
        .iter()
        .any(|t| t.provider.spec.kind.serves_body(chat.endpoint, &chat.body))
    {
        let max = targets
            .iter()
            .filter_map(|t| t.provider.spec.kind.max_images())
            .max()
            .unwrap_or(10);
        return Err(ApiError::BadRequest {
            message: format!(
                "The providers of `{}` make at most {max} images a request; ask for fewer with 'n'.",
                chat.model
            ),
            param: Some("n"),
            code: None,
        });
    }
    let mut admitted = admission::admit(
        state,
        &key,
        &chat.model,
        chat.endpoint,
        &chat.body,
        &targets,
        id,
    )
    .await?;
    if let Some(upload) = &chat.upload {
        let stored = state
            .media
            .put(id.to_string().as_str(), &mut upload.as_ref())
            .await;
        if let Err(e) = stored {
            if let Some(r) = &admitted.reservation {
                let _ = state.limiter.release_reservation(key.id, id, r).await;
            }
            return Err(ApiError::Unavailable(format!("storing the upload: {e}")));
        }
    }
    let reply_to = state.names.reply_subject(&id.simple().to_string());
    let mut replies = state
        .client
        .subscribe(reply_to.clone())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let now = Utc::now();
    let deadline =
        now + chrono::Duration::from_std(state.request_timeout).unwrap_or(chrono::Duration::MAX);
    let message = DispatchRequest {
        request_id: id,
        key_id: key.id,
        reply_to,
        accepted_at: now,
        body: chat.body,
        model: chat.model,
        stream: chat.stream,
        include_usage: chat.include_usage,
        provider: chat.provider,
        deadline: Some(deadline),
        reservation: admitted.reservation.clone(),
        rate_tokens: admitted.rate_tokens,
        endpoint: chat.endpoint,
    };
    if let Err(e) = publish(state, &message).await {
        if let Some(r) = &message.reservation {
            let _ = state.limiter.release_reservation(key.id, id, r).await;
        }
        return Err(e);
    }
    metrics::counter!("aigw_requests_accepted_total").increment(1);

    let answer = async {
        let first = next_frame(&mut replies, state.request_timeout).await?;
        let kind = header_of(&first, wire::FRAME).unwrap_or_default();
        match kind.as_str() {
            wire::FRAME_RESPONSE => {
                full_response(&first, &mut replies, state.request_timeout).await
            }
            wire::FRAME_ERROR => {
                let mut response = relayed_error(&first).into_response();
                routing_headers(&mut response, &first);
                Ok(response)
            }
            wire::FRAME_START if message.stream => Ok(relay::sse_response(
                state,
                id,
                &first,
                replies,
                admitted.slot.take(),
            )),
            other => Err(ApiError::Internal(format!(
                "unexpected first frame {other:?}"
            ))),
        }
    }
    .await;
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    admitted.headers.apply(response.headers_mut());
    Ok(response)
}

/// A model or provider nobody serves, as the caller's 404.
pub fn unresolved(e: ResolveError) -> ApiError {
    match e {
        ResolveError::UnknownProvider(_) | ResolveError::ProviderDisabled(_) => {
            ApiError::NotFound {
                message: e.to_string(),
                code: "provider_not_found",
            }
        }
        ResolveError::UnknownModel(_) => ApiError::NotFound {
            message: e.to_string(),
            code: "model_not_found",
        },
    }
}

async fn publish(state: &AppState, message: &DispatchRequest) -> Result<(), ApiError> {
    publish_on(state, state.names.chat_subject(), message, "the request").await
}

/// Publishes `message` on `subject` with its request id as `Nats-Msg-Id`
/// (a retried publish is deduplicated) and waits for the PubAck. A stream
/// that is full refuses it: 503 `queue_full`.
pub async fn publish_on(
    state: &AppState,
    subject: String,
    message: &DispatchRequest,
    what: &str,
) -> Result<(), ApiError> {
    let payload = serde_json::to_vec(message).map_err(ApiError::internal)?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", message.request_id.to_string().as_str());
    let queueing = |e: async_nats::jetstream::context::PublishError| {
        if aigw_runtime::nats::is_stream_full(&e) {
            ApiError::QueueFull(format!("queueing {what}: {e}"))
        } else {
            ApiError::Unavailable(format!("queueing {what}: {e}"))
        }
    };
    let ack = state
        .js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(queueing)?;
    ack.await.map_err(queueing)?;
    Ok(())
}

async fn next_frame(
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<async_nats::Message, ApiError> {
    match tokio::time::timeout(wait, replies.next()).await {
        Ok(Some(msg)) => Ok(msg),
        Ok(None) => Err(ApiError::Unavailable("reply subscription closed".into())),
        Err(_) => Err(ApiError::Timeout),
    }
}

pub(crate) fn header_of(msg: &async_nats::Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

fn status_of(msg: &async_nats::Message) -> StatusCode {
    header_of(msg, wire::STATUS)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

pub(crate) fn routing_headers(response: &mut Response, msg: &async_nats::Message) {
    for (frame_header, http_header) in [
        (wire::PROVIDER, "x-aigw-provider"),
        (wire::ATTEMPTS, "x-aigw-attempts"),
    ] {
        if let Some(v) = header_of(msg, frame_header).and_then(|v| HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(http_header, v);
        }
    }
}

/// A whole answer: the `response` frame, joined with its `part` frames when
/// the body was split.
async fn full_response(
    msg: &async_nats::Message,
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<Response, ApiError> {
    let parts = header_of(msg, wire::PARTS)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1);
    let body = if parts <= 1 {
        msg.payload.clone()
    } else {
        let delivery = header_of(msg, wire::DELIVERY);
        let mut seq = header_of(msg, wire::SEQ)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let mut body = Vec::with_capacity(parts * wire::PART_BYTES);
        body.extend_from_slice(&msg.payload);
        for _ in 1..parts {
            let part = next_frame(replies, wait).await?;
            seq += 1;
            let in_order = header_of(&part, wire::FRAME).as_deref() == Some(wire::FRAME_PART)
                && header_of(&part, wire::DELIVERY) == delivery
                && header_of(&part, wire::SEQ).and_then(|s| s.parse::<u64>().ok()) == Some(seq);
            if !in_order {
                return Err(ApiError::Unavailable(
                    "parts of the answer were lost".into(),
                ));
            }
            body.extend_from_slice(&part.payload);
        }
        Bytes::from(body)
    };
    let content_type = header_of(msg, wire::CONTENT_TYPE)
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status_of(msg);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    routing_headers(&mut response, msg);
    Ok(response)
}

fn relayed_error(msg: &async_nats::Message) -> ApiError {
    ApiError::Relayed {
        status: status_of(msg),
        body: msg.payload.clone(),
        retry_after: header_of(msg, wire::RETRY_AFTER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Result<ChatRequest, ApiError>) -> Option<&'static str> {
        match r {
            Err(ApiError::BadRequest { param, .. }) => param.or(Some("-")),
            Err(_) => Some("other"),
            Ok(_) => None,
        }
    }

    #[test]
    fn validation() {
        let ok = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1,"tools":[],"provider":"p"}"#;
        let parsed = validate(ok).unwrap();
        assert_eq!(parsed.model, "m");
        assert_eq!(parsed.provider.as_deref(), Some("p"));
        assert!(parsed.body.get("provider").is_none());
        assert_eq!(parsed.body["seed"], 1);
        assert_eq!(status(validate(b"{nope")), Some("-"));
        assert_eq!(status(validate(b"[]")), Some("-"));
        assert_eq!(
            status(validate(br#"{"messages":[{"role":"user"}]}"#)),
            Some("model")
        );
        assert_eq!(
            status(validate(br#"{"model":5,"messages":[{"role":"user"}]}"#)),
            Some("model")
        );
        assert_eq!(status(validate(br#"{"model":"m"}"#)), Some("messages"));
        assert_eq!(
            status(validate(br#"{"model":"m","messages":"hi"}"#)),
            Some("messages")
        );
        assert_eq!(
            status(validate(br#"{"model":"m","messages":[]}"#)),
            Some("messages")
        );
        assert_eq!(
            status(validate(br#"{"model":"m","messages":[1]}"#)),
            Some("messages")
        );
        assert_eq!(
            status(validate(
                br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#
            )),
            Some("stream")
        );
        assert_eq!(
            status(validate(
                br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#
            )),
            Some("max_tokens")
        );
        assert_eq!(
            status(validate(
                br#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#
            )),
            Some("temperature")
        );
        let s = validate(br#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert!(s.stream && s.include_usage);
    }

    #[test]
    fn media_validation() {
        let ok = validate_images(
            br#"{"model":"m","prompt":"a fox","n":2,"size":"1792x1024","response_format":"url","provider":"p"}"#,
        )
        .unwrap();
        assert_eq!(ok.endpoint, Endpoint::Images);
        assert_eq!(ok.provider.as_deref(), Some("p"));
        assert_eq!(ok.body["n"], 2);
        for (body, param) in [
            (&br#"{"prompt":"x"}"#[..], "model"),
            (br#"{"model":"m","prompt":" "}"#, "prompt"),
            (br#"{"model":"m","prompt":"x","n":11}"#, "n"),
            (br#"{"model":"m","prompt":"x","size":"0x5"}"#, "size"),
            (
                br#"{"model":"m","prompt":"x","response_format":1}"#,
                "response_format",
            ),
        ] {
            assert_eq!(status(validate_images(body)), Some(param));
        }
        assert!(validate_images(br#"{"model":"m","prompt":"x","size":"auto"}"#).is_ok());

        let ok =
            validate_speech(br#"{"model":"m","input":"hi","voice":"alloy","speed":1.2}"#).unwrap();
        assert_eq!(ok.endpoint, Endpoint::Speech);
        let long = format!(
            r#"{{"model":"m","input":"{}","voice":"v"}}"#,
            "a".repeat(4097)
        );
        for (body, param) in [
            (long.as_bytes(), "input"),
            (br#"{"model":"m","voice":"v"}"#, "input"),
            (br#"{"model":"m","input":"x"}"#, "voice"),
            (
                br#"{"model":"m","input":"x","voice":"v","response_format":"ogg"}"#,
                "response_format",
            ),
            (
                br#"{"model":"m","input":"x","voice":"v","speed":"fast"}"#,
                "speed",
            ),
        ] {
            assert_eq!(status(validate_speech(body)), Some(param));
        }
    }
}
