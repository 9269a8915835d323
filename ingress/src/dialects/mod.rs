//! The ingress dialects: the APIs callers speak to aigw (OpenAI's chat
//! and Responses APIs, Anthropic's Messages API and Gemini's
//! generateContent). Each dialect's module owns its routes'
//! request parsing and limits, its error shape, and how its answers are
//! written; everything between (admission, queueing, relaying) is shared
//! (`chat`, `relay`).
//!
//! Invariants:
//! - A request of any dialect passes the same admission as an OpenAI chat
//!   completion (scopes, rate limits, worst-case budget holds, concurrency,
//!   input limits, idempotency): admission reads the request's OpenAI chat
//!   translation (`aigw_runtime::dialect`).
//! - Every error and every streamed event a caller gets is in its
//!   dialect's shape: [`Dialect`] is the one `match` per kind of output,
//!   so a new dialect is one variant and one module.

pub mod anthropic;
pub mod gemini;
pub mod responses;
pub mod stored_responses;

use aigw_events::wire;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

use crate::chat::Inbound;
use crate::error::ApiError;
use crate::validate::{
    ChatRequest, validate, validate_embeddings, validate_moderations, validate_rerank,
};

/// The routes whose bodies `/v1/jobs` runs, as its `url` names them.
pub const JOB_URLS: &str = "/v1/chat/completions, /v1/responses, /v1/messages, /v1beta/models/{model}:generateContent, /v1/models/{model}:generateContent, /v1/embeddings, /v1/rerank or /v1/moderations";

/// A body of the dialect that `url` (a route's path) speaks, checked and
/// translated exactly as that route would: what `/v1/jobs` runs. `id` is
/// the job's request id (a Responses job's answer is `resp_<id>`). A
/// Responses body's `previous_response_id` is expanded by the caller
/// (`jobs::submit`), which can read the stored responses.
pub fn job_request(url: &str, body: Value, id: Uuid) -> Result<(ChatRequest, Inbound), ApiError> {
    let gemini = url
        .strip_prefix("/v1beta/models/")
        .or_else(|| url.strip_prefix("/v1/models/"));
    let bytes = || serde_json::to_vec(&body).map_err(ApiError::internal);
    match (url, gemini) {
        ("/v1/chat/completions", _) => Ok((validate(&bytes()?)?, Inbound::openai())),
        ("/v1/embeddings", _) => Ok((validate_embeddings(&bytes()?)?, Inbound::openai())),
        ("/v1/rerank", _) => Ok((validate_rerank(&bytes()?)?, Inbound::openai())),
        ("/v1/moderations", _) => Ok((validate_moderations(&bytes()?)?, Inbound::openai())),
        ("/v1/responses", _) => responses::job_request(body, id),
        ("/v1/messages", _) => anthropic::job_request(body),
        (_, Some(name)) => gemini::job_request(name, body),
        _ => Err(ApiError::BadRequest {
            message: format!("'url' must be one of {JOB_URLS}."),
            param: Some("url"),
            code: Some("invalid_url"),
        }),
    }
}

/// The dialect a request arrived in, as far as the ingress cares: how its
/// answers, stream events and errors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's API (`/v1/chat/completions`, embeddings, images, audio).
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
    /// Gemini's `generateContent` (`/v1beta/models/...`).
    Gemini,
    /// OpenAI's Responses API (`/v1/responses`): OpenAI's error JSON, its
    /// own named stream events. The request's id names the response a
    /// failed stream reports (`response.failed`).
    Responses { request_id: Uuid },
}

impl Dialect {
    /// A data payload of a streamed answer as the SSE bytes the caller
    /// gets. OpenAI: the chunk JSON in a `data:` line. Anthropic, Gemini
    /// and Responses: the dispatcher sends whole events already.
    pub fn sse_chunk(self, payload: &[u8]) -> Bytes {
        match self {
            Dialect::OpenAi => sse_data(payload),
            Dialect::Anthropic | Dialect::Gemini | Dialect::Responses { .. } => {
                Bytes::copy_from_slice(payload)
            }
        }
    }

    /// A stream's `error` frame (OpenAI's error JSON, and the status a
    /// non-streamed answer would have had) as the caller's event.
    pub fn sse_error_frame(self, payload: &[u8], status: Option<StatusCode>) -> Bytes {
        match self {
            Dialect::OpenAi => sse_data(payload),
            Dialect::Anthropic => {
                let parsed = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
                let message = parsed
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("The stream failed.");
                let kind =
                    status.map_or(anthropic::ErrorType::Api, anthropic::ErrorType::of_status);
                anthropic::error_event(kind, message)
            }
            Dialect::Gemini => {
                let parsed = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
                let message = parsed
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("The stream failed.");
                gemini::error_event(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            Dialect::Responses { request_id } => responses::error_frame(request_id, payload),
        }
    }

    /// An event that ends a stream aigw had to cut (`code` says why).
    pub fn sse_failure(self, message: &str, code: &str) -> Bytes {
        match self {
            Dialect::OpenAi => {
                let body = wire::error_body(message, "server_error", Some(code));
                sse_data(&serde_json::to_vec(&body).unwrap_or_default())
            }
            Dialect::Anthropic => {
                let kind = if code == "timeout" {
                    anthropic::ErrorType::Timeout
                } else {
                    anthropic::ErrorType::Api
                };
                anthropic::error_event(kind, message)
            }
            Dialect::Gemini => {
                let status = if code == "timeout" {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                gemini::error_event(status, message)
            }
            Dialect::Responses { request_id } => responses::failure(request_id, message, code),
        }
    }

    /// What follows a stream's last event: OpenAI's `[DONE]`; nothing for
    /// Anthropic (its `message_stop` event was relayed already), Gemini
    /// (whose stream simply ends) or Responses (`response.completed` ends
    /// it).
    pub fn sse_end(self) -> Bytes {
        match self {
            Dialect::OpenAi => Bytes::from_static(b"data: [DONE]\n\n"),
            Dialect::Anthropic | Dialect::Gemini | Dialect::Responses { .. } => Bytes::new(),
        }
    }
}

fn sse_data(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
