//! The OpenAI endpoints (`/v1/chat/completions`, embeddings, images,
//! speech, transcriptions): validate (see `validate`), admit, queue on
//! JetStream, relay the answer with what it cost (see `cost`).

use std::time::Duration;

use aigw_events::wire::{self, AnswerCost, DispatchRequest};
use aigw_runtime::bodies::{self, BodyError};
use aigw_runtime::registry::ResolveError;
use aigw_runtime::traces;
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::Caller;
use crate::cost::{self, Dialect};
use crate::error::ApiError;
use crate::idempotency::{self, Claim};
use crate::validate::{
    ChatRequest, MAX_AUDIO_BYTES, validate, validate_embeddings, validate_images,
    validate_moderations, validate_rerank, validate_speech, validate_transcription,
};
use crate::{AppState, RequestId, admission, attribution, relay};

/// `POST /v1/audio/transcriptions`: a multipart upload of up to
/// [`MAX_AUDIO_BYTES`], queued like a chat completion.
#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "inference",
    summary = "Transcription of an uploaded audio file",
    request_body(content = crate::openapi::schemas::TranscriptionRequest, content_type = "multipart/form-data"),
    responses((status = 200, description = "The text: JSON, or plain with `response_format: text`.", content((crate::openapi::schemas::Transcription = "application/json"), (String = "text/plain"))))
)]
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
    let attribution = attribution::resolve(&headers, None, None)?;
    queue_and_answer(&state, key, request, attribution, request_id.0).await
}

/// `POST /v1/images/generations`: queued and relayed like a chat completion.
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "inference",
    summary = "Image generation",
    request_body = crate::openapi::schemas::ImagesRequest,
    responses((status = 200, description = "The images.", body = crate::openapi::schemas::ImagesResponse))
)]
pub async fn images(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_images(&bytes)?;
    let attribution = attribution::of_body(&headers, &request.body)?;
    queue_and_answer(&state, key, request, attribution, request_id.0).await
}

/// `POST /v1/audio/speech`: queued like a chat completion; the answer is
/// the audio itself.
#[utoipa::path(
    post,
    path = "/v1/audio/speech",
    tag = "inference",
    summary = "Text to speech",
    request_body = crate::openapi::schemas::SpeechRequest,
    responses((status = 200, description = "The audio, in the requested format.", content((Vec<u8> = "audio/mpeg"), (Vec<u8> = "audio/ogg"), (Vec<u8> = "audio/aac"), (Vec<u8> = "audio/flac"), (Vec<u8> = "audio/wav"), (Vec<u8> = "audio/pcm"), (Vec<u8> = "application/octet-stream"))))
)]
pub async fn speech(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_speech(&bytes)?;
    let attribution = attribution::of_body(&headers, &request.body)?;
    queue_and_answer(&state, key, request, attribution, request_id.0).await
}

/// `POST /v1/embeddings`: queued and relayed like a chat completion.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "inference",
    summary = "Embeddings",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer.")),
    request_body = crate::openapi::schemas::EmbeddingsRequest,
    responses((status = 200, description = "The embeddings.", body = crate::openapi::schemas::EmbeddingsResponse))
)]
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_embeddings(&bytes)?;
    answer(
        &state,
        key,
        &headers,
        request,
        request_id.0,
        Inbound::openai(),
    )
    .await
}

/// `POST /v1/rerank`: queued and relayed like a chat completion.
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "inference",
    summary = "Rerank documents by relevance to a query (Cohere, Jina, SiliconFlow, Voyage)",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer.")),
    request_body = crate::openapi::schemas::RerankRequest,
    responses((status = 200, description = "The documents' scores, most relevant first.", body = crate::openapi::schemas::RerankResponse))
)]
pub async fn rerank(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_rerank(&bytes)?;
    answer(
        &state,
        key,
        &headers,
        request,
        request_id.0,
        Inbound::openai(),
    )
    .await
}

/// `POST /v2/rerank`: the path Cohere's SDKs (`ClientV2`) call, served as
/// `/v1/rerank` (whose answer is a superset of Cohere's).
#[utoipa::path(
    post,
    path = "/v2/rerank",
    tag = "inference",
    summary = "Rerank at the path Cohere's SDKs call: the same as /v1/rerank",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer.")),
    request_body = crate::openapi::schemas::RerankRequest,
    responses((status = 200, description = "The documents' scores, most relevant first.", body = crate::openapi::schemas::RerankResponse))
)]
pub async fn rerank_cohere_v2(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    rerank(state, request_id, caller, headers, body).await
}

/// `POST /v1/moderations`: queued and relayed like a chat completion.
#[utoipa::path(
    post,
    path = "/v1/moderations",
    tag = "inference",
    summary = "Classify text and images as OpenAI's moderation does",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer.")),
    request_body = crate::openapi::schemas::ModerationRequest,
    responses((status = 200, description = "One result per input.", body = crate::openapi::schemas::ModerationResponse))
)]
pub async fn moderations(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let request = validate_moderations(&bytes)?;
    answer(
        &state,
        key,
        &headers,
        request,
        request_id.0,
        Inbound::openai(),
    )
    .await
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

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "inference",
    summary = "A chat completion, plain or streamed as server-sent events",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer (not with `stream: true`).")),
    request_body = crate::openapi::schemas::ChatCompletionRequest,
    responses((status = 200, description = "The completion (JSON), or with `stream: true` its chunks as `data:` events ending with `data: [DONE]`.", content((crate::openapi::schemas::ChatCompletion = "application/json"), (String = "text/event-stream"))))
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let chat = validate(&bytes)?;
    answer(&state, key, &headers, chat, request_id.0, Inbound::openai()).await
}

/// How a request arrived, beyond its OpenAI chat form: its dialect, and
/// the caller's body when that is not OpenAI chat.
pub struct Inbound {
    /// How answers and errors are written.
    pub dialect: Dialect,
    /// The dialect as the dispatcher is told it.
    pub wire: wire::Dialect,
    /// The caller's body (sent on the wire instead of the translation).
    pub native_body: Option<serde_json::Value>,
    /// The caller's body as the bytes that arrived, when `native_body` is
    /// exactly them (sent instead of it, so a same-dialect upstream gets
    /// them byte for byte).
    pub native_raw: Option<aigw_events::raw_body::RawBody>,
    /// A field that only a target speaking `wire` natively can honour.
    pub native_only: Option<String>,
}

impl Inbound {
    /// An OpenAI request.
    pub fn openai() -> Self {
        Self {
            dialect: Dialect::OpenAi,
            wire: wire::Dialect::OpenaiChat,
            native_body: None,
            native_raw: None,
            native_only: None,
        }
    }
}

/// Answers a validated chat request of any dialect: with an
/// `Idempotency-Key`, a repeat gets the stored answer (see `idempotency`).
pub async fn answer(
    state: &AppState,
    key: std::sync::Arc<aigw_runtime::KeyEntry>,
    headers: &HeaderMap,
    chat: ChatRequest,
    id: Uuid,
    inbound: Inbound,
) -> Result<Response, ApiError> {
    let attribution = attribution::of_body(headers, &chat.body)?;
    let Some(idem) = idempotency::key_of(headers)? else {
        return queue_in(state, key, chat, attribution, id, inbound).await;
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
            cost,
        } => return Ok(idempotency::replay(request_id, status, body, cost)),
        Claim::InProgress => {
            return Err(ApiError::Conflict(
                "A request with this Idempotency-Key is still running.".into(),
            ));
        }
    }
    let key_id = key.id;
    let response = queue_in(state, key, chat, attribution, id, inbound)
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
    let cost = parts.extensions.get::<AnswerCost>().copied();
    let stored = idempotency::Stored {
        status: status.as_u16(),
        body: &bytes,
        cost,
    };
    if let Err(e) = idempotency::store(pool, key_id, &idem, id, stored).await {
        tracing::warn!(error = %e, "storing an idempotent answer");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Admits, queues and relays one OpenAI request.
async fn queue_and_answer(
    state: &AppState,
    key: std::sync::Arc<aigw_runtime::KeyEntry>,
    chat: ChatRequest,
    attribution: aigw_events::Attribution,
    id: Uuid,
) -> Result<Response, ApiError> {
    queue_in(state, key, chat, attribution, id, Inbound::openai()).await
}

/// A request with a field only its own dialect can express (`native_only`)
/// may go only where every target speaks that dialect natively: 400
/// naming the field otherwise.
pub(crate) fn natively_served(
    inbound: &Inbound,
    targets: &[aigw_runtime::Target],
    model: &str,
) -> Result<(), ApiError> {
    if let Some(field) = &inbound.native_only
        && let Some(t) = targets
            .iter()
            .find(|t| !t.provider.spec.speaks(&inbound.wire))
    {
        return Err(ApiError::BadRequest {
            message: format!(
                "'{field}' has no equivalent at provider {} (which serves `{model}`): send it to a model served natively.",
                t.provider.spec.name
            ),
            param: None,
            code: Some("unsupported_field"),
        });
    }
    Ok(())
}

/// Admits, queues and relays one request of any dialect.
async fn queue_in(
    state: &AppState,
    key: std::sync::Arc<aigw_runtime::KeyEntry>,
    chat: ChatRequest,
    attribution: aigw_events::Attribution,
    id: Uuid,
    inbound: Inbound,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    traces::attr(
        &span,
        "gen_ai.operation.name",
        chat.endpoint.gen_ai_operation(),
    );
    traces::attr(&span, "gen_ai.request.model", chat.model.clone());
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
    natively_served(&inbound, &targets, &chat.model)?;
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
    tracing::debug!(request_id = %id, "admitted");
    if let Some(upload) = &chat.upload {
        let stored = state
            .media
            .put(
                bodies::object_meta(&id.to_string(), state.client.max_payload()),
                &mut upload.as_ref(),
            )
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
    let mut message = DispatchRequest {
        request_id: id,
        key_id: key.id,
        reply_to,
        accepted_at: now,
        // The caller's own bytes where it has them (the dispatcher parses
        // them), else its body, else the OpenAI body.
        body: match inbound.native_raw {
            Some(_) => serde_json::Value::Null,
            None => inbound.native_body.unwrap_or(chat.body),
        },
        raw_body: inbound.native_raw,
        model: chat.model,
        stream: chat.stream,
        include_usage: chat.include_usage,
        provider: chat.provider,
        deadline: Some(deadline),
        reservation: admitted.reservation.clone(),
        rate_tokens: admitted.rate_tokens,
        endpoint: chat.endpoint,
        scopes: Some(admitted.scopes.clone()),
        body_object: None,
        project_id: admitted.project_id,
        team_id: admitted.team_id,
        rate_levels: admitted.rate_levels.clone(),
        rate_on_key: admitted.rate_on_key,
        attribution,
        dialect: inbound.wire,
        native_body: None,
        native_only: None,
    };
    if let Err(e) = publish(state, &mut message).await {
        if let Some(r) = &message.reservation {
            let _ = state.limiter.release_reservation(key.id, id, r).await;
        }
        return Err(e);
    }
    metrics::counter!("aigw_requests_accepted_total").increment(1);
    tracing::debug!(request_id = %id, "queued");

    let answer = async {
        let first = crate::lost_answer::first_frame(
            &state.stores.pool,
            id,
            &mut replies,
            state.request_timeout,
        )
        .await?;
        let kind = header_of(&first, wire::FRAME).unwrap_or_default();
        match kind.as_str() {
            wire::FRAME_RESPONSE => {
                full_response(&first, &mut replies, state.request_timeout, inbound.dialect).await
            }
            wire::FRAME_ERROR => {
                let mut response = relayed_error(&first, &mut replies, state.request_timeout)
                    .await?
                    .into_response();
                routing_headers(&mut response, &first);
                Ok(response)
            }
            wire::FRAME_START if message.stream => Ok(relay::sse_response(
                state,
                id,
                &first,
                replies,
                admitted.slot.take(),
                inbound.dialect,
            )),
            other => Err(ApiError::Internal(format!(
                "unexpected first frame {other:?}"
            ))),
        }
    }
    .await;
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    admitted.headers.apply(response.headers_mut());
    if traces::enabled() {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(provider) = header("x-aigw-provider") {
            traces::attr(&span, "aigw.provider", provider);
        }
        if let Some(n) = header("x-aigw-attempts").and_then(|n| n.parse::<i64>().ok()) {
            traces::attr(&span, "aigw.attempts", n);
        }
    }
    Ok(response)
}

/// A model or provider nobody serves, as the caller's 404 (a model name
/// that several deployments of one provider serve: a 400 naming them).
pub fn unresolved(e: ResolveError) -> ApiError {
    match e {
        ResolveError::AmbiguousModel { .. } => ApiError::BadRequest {
            message: e.to_string(),
            param: Some("model"),
            code: Some("ambiguous_model"),
        },
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

async fn publish(state: &AppState, message: &mut DispatchRequest) -> Result<(), ApiError> {
    publish_on(state, state.names.chat_subject(), message, "the request").await
}

/// Publishes `message` on `subject` with its request id as `Nats-Msg-Id`
/// (a retried publish is deduplicated) and waits for the PubAck. A body too
/// large for one NATS message goes to the bodies object store first and
/// `message` then names it instead (see `aigw_runtime::bodies`). A stream
/// that is full refuses it: 503 `queue_full`.
pub async fn publish_on(
    state: &AppState,
    subject: String,
    message: &mut DispatchRequest,
    what: &str,
) -> Result<(), ApiError> {
    let payload = bodies::message(&state.bodies, message, state.client.max_payload())
        .await
        .map_err(|e| match e {
            BodyError::Encode(e) => ApiError::internal(e),
            BodyError::Missing(_) | BodyError::Unavailable(_) => {
                ApiError::Unavailable(format!("storing the body of {what}: {e}"))
            }
        })?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", message.request_id.to_string().as_str());
    // The JetStream hop: a producer span whose context rides in the
    // message's headers (`traceparent`) to the dispatcher.
    let hop = if traces::enabled() {
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            otel.name = %format!("publish {}", traces::subject_template(&subject)),
        );
        traces::attr(&span, "messaging.system", "nats");
        traces::attr(&span, "messaging.operation.type", "send");
        traces::attr(&span, "messaging.destination.name", subject.clone());
        traces::attr(&span, "aigw.request_id", message.request_id.to_string());
        traces::inject_nats(&span, &mut headers);
        span
    } else {
        tracing::Span::none()
    };
    let queueing = |e: async_nats::jetstream::context::PublishError| {
        if aigw_runtime::nats::is_stream_full(&e) {
            ApiError::QueueFull(format!("queueing {what}: {e}"))
        } else {
            ApiError::Unavailable(format!("queueing {what}: {e}"))
        }
    };
    // Tried again through a stream's leader election (same message id, so
    // stored at most once), within a bound.
    let published = aigw_runtime::publish::publish_acked(
        &state.js,
        subject,
        headers,
        payload.into(),
        state.publish_retry,
    )
    .instrument(hop.clone())
    .await
    .map_err(queueing);
    if published.is_err() {
        traces::error(&hop, "publish_failed");
    }
    if published.is_err() {
        bodies::delete(&state.bodies, message).await;
    }
    published.map(drop)
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

/// The number of frames `msg`'s payload was split into (see [`wire::PARTS`]).
pub(crate) fn parts_of(msg: &async_nats::Message) -> usize {
    header_of(msg, wire::PARTS)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The whole payload of `first`: joined with the `part` frames that follow
/// it (same delivery, next sequence numbers) when it was split.
async fn joined(
    first: &async_nats::Message,
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<Bytes, ApiError> {
    let parts = parts_of(first);
    if parts == 1 {
        return Ok(first.payload.clone());
    }
    let delivery = header_of(first, wire::DELIVERY);
    let mut seq = header_of(first, wire::SEQ)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let mut whole = Vec::with_capacity(first.payload.len().saturating_mul(parts.min(64)));
    whole.extend_from_slice(&first.payload);
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
        whole.extend_from_slice(&part.payload);
    }
    Ok(Bytes::from(whole))
}

/// A whole answer: the `response` frame, joined with its `part` frames when
/// the body was split, with the cost the frame carries shown in OpenAI's
/// dialect (and kept in the response's extensions, for idempotent replays).
async fn full_response(
    msg: &async_nats::Message,
    replies: &mut async_nats::Subscriber,
    wait: Duration,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let body = joined(msg, replies, wait).await?;
    let content_type = header_of(msg, wire::CONTENT_TYPE)
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status_of(msg);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    routing_headers(&mut response, msg);
    if let Some(cost) = cost::of_frame(msg) {
        dialect.answer_headers(response.headers_mut(), cost);
        response.extensions_mut().insert(cost);
    }
    Ok(response)
}

/// An `error` frame (joined with its `part` frames) as the caller's error.
async fn relayed_error(
    msg: &async_nats::Message,
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<ApiError, ApiError> {
    Ok(ApiError::Relayed {
        status: status_of(msg),
        body: joined(msg, replies, wait).await?,
        retry_after: header_of(msg, wire::RETRY_AFTER),
    })
}
