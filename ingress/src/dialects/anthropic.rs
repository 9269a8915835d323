//! Anthropic's Messages API: `POST /v1/messages` (also `?beta=true`, as
//! Claude Code calls it) and `POST /v1/messages/count_tokens`.
//!
//! Invariants:
//! - The key comes as `x-api-key` or `Authorization: Bearer` (the shared
//!   `auth` middleware); `anthropic-version` and `anthropic-beta` are
//!   accepted and travel to Anthropic-native upstreams.
//! - A body is parsed and translated to OpenAI chat
//!   (`aigw_runtime::dialect::anthropic_in`), then checked by the same
//!   `validate` as `/v1/chat/completions`, and admitted and queued by the
//!   same code (`chat::answer`): no limit, scope or budget differs by route.
//!   The wire carries the caller's body; the dispatcher relays it verbatim
//!   to Anthropic-native targets and translates it for the others.
//! - Every error of these routes, authentication and body errors included,
//!   is Anthropic's `{"type":"error","error":{"type","message"}}` with the
//!   status OpenAI's shape had ([`anthropic_errors`] rewrites them all in
//!   one place); mid-stream errors are `event: error`.

use aigw_events::raw_body::RawBody;
use aigw_events::wire;
use aigw_runtime::dialect::anthropic_in;
use aigw_runtime::estimate;
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::chat::{self, Inbound, body_bytes, unresolved};
use crate::dialects::Dialect;
use crate::error::ApiError;
use crate::validate::{ChatRequest, validate};
use crate::{AppState, RequestId, admission};

/// Longest `anthropic-version` / `anthropic-beta` value forwarded.
pub const MAX_HEADER_LEN: usize = 1024;
/// Largest error body rewritten into Anthropic's shape (aigw's own errors
/// are far smaller; a larger one is summarized by its status).
const MAX_ERROR_BYTES: usize = 256 * 1024;

/// Anthropic's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Timeout,
    Api,
    Overloaded,
}

impl ErrorType {
    /// The type Anthropic gives an error of this HTTP status.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => ErrorType::Authentication,
            403 => ErrorType::Permission,
            404 => ErrorType::NotFound,
            413 => ErrorType::RequestTooLarge,
            429 => ErrorType::RateLimit,
            503 | 529 => ErrorType::Overloaded,
            504 => ErrorType::Timeout,
            s if s >= 500 => ErrorType::Api,
            _ => ErrorType::InvalidRequest,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::Permission => "permission_error",
            ErrorType::NotFound => "not_found_error",
            ErrorType::RequestTooLarge => "request_too_large",
            ErrorType::RateLimit => "rate_limit_error",
            ErrorType::Timeout => "timeout_error",
            ErrorType::Api => "api_error",
            ErrorType::Overloaded => "overloaded_error",
        }
    }
}

/// Anthropic's error JSON.
pub fn error_body(kind: ErrorType, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind.as_str(), "message": message}})
}

/// Anthropic's `error` SSE event.
pub fn error_event(kind: ErrorType, message: &str) -> Bytes {
    let data = error_body(kind, message).to_string();
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// Middleware of the Messages routes: every error answer, whoever made it
/// (authentication, body limits, admission, the dispatcher, the
/// provider), in Anthropic's shape with its status and headers kept.
pub async fn anthropic_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let parsed = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
    if parsed.get("type").and_then(Value::as_str) == Some("error") {
        // Already Anthropic's (an Anthropic upstream's, relayed).
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("The request failed.")
                .to_string()
        });
    let body = error_body(ErrorType::of_status(status), &message).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The dialect as the dispatcher is told it: with the caller's version
/// and beta headers, for Anthropic-native upstreams.
fn wire_dialect(headers: &HeaderMap) -> Result<wire::Dialect, ApiError> {
    let header = |name: &'static str| -> Result<Option<String>, ApiError> {
        let Some(v) = headers.get(name) else {
            return Ok(None);
        };
        let v = v
            .to_str()
            .ok()
            .filter(|v| v.len() <= MAX_HEADER_LEN && !v.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'{name}' must be printable ASCII of at most {MAX_HEADER_LEN} bytes."
                ))
            })?;
        Ok(Some(v.to_string()))
    };
    Ok(wire::Dialect::AnthropicMessages {
        version: header("anthropic-version")?,
        beta: header("anthropic-beta")?,
    })
}

/// A Messages body in the internal shape (a 400 when it is not a valid
/// Messages request).
fn translate(native: &Value) -> Result<anthropic_in::Translated, ApiError> {
    anthropic_in::to_chat(native).map_err(|e| ApiError::BadRequest {
        message: e.message,
        param: None,
        code: Some("invalid_request"),
    })
}

/// A Messages body, parsed.
fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("The request body is not valid JSON: {e}"),
        param: None,
        code: Some("invalid_json"),
    })
}

/// `POST /v1/messages`: Anthropic's Messages API, plain or streamed.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "anthropic",
    summary = "A message (Anthropic Messages API), plain or streamed as Anthropic's server-sent events",
    params(
        ("anthropic-version" = Option<String>, Header, description = "Accepted; forwarded to Anthropic-native upstreams."),
        ("anthropic-beta" = Option<String>, Header, description = "Accepted; forwarded to Anthropic-native upstreams."),
        ("beta" = Option<bool>, Query, description = "Accepted and ignored (Claude Code sends `?beta=true`)."),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer (not with `stream: true`)."),
    ),
    request_body = crate::openapi::schemas::MessagesRequest,
    responses((status = 200, description = "The message (JSON), or with `stream: true` Anthropic's event sequence.", content((crate::openapi::schemas::Message = "application/json"), (String = "text/event-stream"))))
)]
pub async fn messages(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let wire = wire_dialect(&headers)?;
    let (chat, mut inbound) = admissible(parse(&bytes)?, wire)?;
    // An Anthropic-native upstream gets these very bytes.
    inbound.native_raw = RawBody::from_bytes(&bytes).ok();
    chat::answer(&state, key, &headers, chat, request_id.0, inbound).await
}

/// A Messages body submitted as a job (`/v1/jobs` with `url: "/v1/messages"`):
/// checked and translated as `POST /v1/messages` would, with no
/// `anthropic-version` or `anthropic-beta` to forward.
pub fn job_request(native: Value) -> Result<(ChatRequest, Inbound), ApiError> {
    let wire = wire::Dialect::AnthropicMessages {
        version: None,
        beta: None,
    };
    admissible(native, wire)
}

/// A Messages body translated, and checked with the same limits as an
/// OpenAI chat completion.
fn admissible(native: Value, wire: wire::Dialect) -> Result<(ChatRequest, Inbound), ApiError> {
    let translated = translate(&native)?;
    let internal = serde_json::to_vec(&translated.body).map_err(ApiError::internal)?;
    let chat = validate(&internal)?;
    let inbound = Inbound {
        dialect: Dialect::Anthropic,
        wire,
        native_body: Some(native),
        native_raw: None,
        native_only: translated.native_only,
    };
    Ok((chat, inbound))
}

/// `POST /v1/messages/count_tokens`: aigw's estimate of a Messages
/// request's input tokens (the estimator usage is flagged with when a
/// provider reports none), never a provider call.
#[utoipa::path(
    post,
    path = "/v1/messages/count_tokens",
    tag = "anthropic",
    summary = "Estimated input tokens of a Messages request",
    request_body = crate::openapi::schemas::MessagesRequest,
    responses((status = 200, description = "The estimate.", body = crate::openapi::schemas::TokenCount))
)]
pub async fn count_tokens(
    State(state): State<AppState>,
    Caller(key): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let mut native = parse(&bytes)?;
    // Counting needs no output cap.
    if let Some(obj) = native.as_object_mut() {
        obj.entry("max_tokens").or_insert(json!(1));
    }
    let translated = translate(&native)?;
    let internal = serde_json::to_vec(&translated.body).map_err(ApiError::internal)?;
    let chat = validate(&internal)?;
    let targets = state
        .registry
        .resolve_fresh(&chat.model, None)
        .await
        .map_err(unresolved)?;
    // The effective scopes: the key's within its project's and team's.
    let scopes = admission::lineage(&state, &key)?.scopes(&key);
    admission::allowed_targets(&scopes, &chat.model, &targets)?;
    let tools = translated
        .body
        .get("tools")
        .map(|t| estimate::text_tokens(&t.to_string()))
        .unwrap_or(0);
    let input_tokens = estimate::prompt_tokens(&translated.body).saturating_add(tools);
    Ok((
        StatusCode::OK,
        axum::Json(json!({"input_tokens": input_tokens})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropic_error_types() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(ErrorType::of_status(status).as_str(), kind, "{status}");
        }
    }

    #[test]
    fn error_events_are_named() {
        let event = error_event(ErrorType::Overloaded, "busy");
        assert_eq!(
            &event[..],
            br#"event: error
data: {"error":{"message":"busy","type":"overloaded_error"},"type":"error"}

"#
        );
    }

    #[test]
    fn version_and_beta_headers_travel() {
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        h.insert("anthropic-beta", "a,b".parse().unwrap());
        assert_eq!(
            wire_dialect(&h).unwrap(),
            wire::Dialect::AnthropicMessages {
                version: Some("2023-06-01".into()),
                beta: Some("a,b".into()),
            }
        );
        h.insert(
            "anthropic-beta",
            "x".repeat(MAX_HEADER_LEN + 1).parse().unwrap(),
        );
        assert!(wire_dialect(&h).is_err());
    }
}
