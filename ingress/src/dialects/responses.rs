//! OpenAI's Responses API: `POST /v1/responses`.
//!
//! Invariants:
//! - The key comes as `Authorization: Bearer` (or any header the shared
//!   `auth` middleware takes); errors are OpenAI's error JSON, like every
//!   other `/v1` route of OpenAI's.
//! - A body is parsed and translated to OpenAI chat
//!   (`aigw_runtime::dialect::responses_in`), then checked by the same
//!   `validate` as `/v1/chat/completions`, and admitted and queued by the
//!   same code (`chat::answer`): no limit, scope or budget differs by route.
//!   The wire carries the caller's body; the dispatcher translates it and
//!   renders the answer as a `response` object or the Responses SSE events.
//! - Stored responses are not kept yet: `previous_response_id` is refused
//!   (it changes the answer), `store` is accepted and has no effect.

use aigw_events::wire;
use aigw_runtime::dialect::responses_in;
use axum::Extension;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::AppState;
use crate::RequestId;
use crate::auth::Caller;
use crate::chat::{self, Inbound, body_bytes};
use crate::dialects::Dialect;
use crate::error::ApiError;
use crate::validate::validate;

/// The Responses API's `error` SSE event: OpenAI's error JSON's message and
/// code, as a stream event (its `sequence_number` is unknown to the
/// ingress, which cut the stream: 0).
pub fn error_event(message: &str, code: &str) -> Bytes {
    let data = json!({"type": "error", "code": code, "message": message, "param": null,
        "sequence_number": 0});
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// A stream's error frame (OpenAI's error JSON) as an `error` event.
pub fn error_frame(payload: &[u8]) -> Bytes {
    let parsed = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("The stream failed.");
    let code = parsed
        .pointer("/error/code")
        .and_then(Value::as_str)
        .or_else(|| parsed.pointer("/error/type").and_then(Value::as_str))
        .unwrap_or("server_error");
    error_event(message, code)
}

/// A Responses body, parsed and translated.
fn parse(bytes: &[u8]) -> Result<(Value, responses_in::Translated), ApiError> {
    let native: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("The request body is not valid JSON: {e}"),
        param: None,
        code: Some("invalid_json"),
    })?;
    if native
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::BadRequest {
            message: "'previous_response_id' is not supported by aigw yet: send the whole conversation in 'input'.".into(),
            param: Some("previous_response_id"),
            code: Some("unsupported_parameter"),
        });
    }
    let translated = responses_in::to_chat(&native).map_err(|e| ApiError::BadRequest {
        message: e.message,
        param: None,
        code: Some("invalid_request"),
    })?;
    Ok((native, translated))
}

/// `POST /v1/responses`: OpenAI's Responses API, plain or streamed.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "inference",
    summary = "A response (OpenAI Responses API), plain or streamed as the Responses server-sent events",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 ASCII characters: a repeat within 24 hours returns the stored answer (not with `stream: true`).")),
    request_body = crate::openapi::schemas::ResponsesRequest,
    responses((status = 200, description = "The response object (JSON), or with `stream: true` the Responses event sequence (`event:` lines, `sequence_number`s) ending with `response.completed`.", content((crate::openapi::schemas::ResponseObject = "application/json"), (String = "text/event-stream"))))
)]
pub async fn responses(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let (native, translated) = parse(&bytes)?;
    let internal = serde_json::to_vec(&translated.body).map_err(ApiError::internal)?;
    // The same checks and limits as an OpenAI chat completion.
    let chat = validate(&internal)?;
    let inbound = Inbound {
        dialect: Dialect::Responses,
        wire: wire::Dialect::OpenaiResponses,
        native_body: Some(native),
        native_only: translated.native_only,
    };
    chat::answer(&state, key, &headers, chat, request_id.0, inbound).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_become_error_events() {
        let frame =
            br#"{"error":{"message":"boom","type":"server_error","code":"upstream_error"}}"#;
        assert_eq!(
            &error_frame(frame)[..],
            b"event: error\ndata: {\"code\":\"upstream_error\",\"message\":\"boom\",\"param\":null,\"sequence_number\":0,\"type\":\"error\"}\n\n"
        );
        assert!(String::from_utf8_lossy(&error_frame(b"junk")).contains("The stream failed."));
    }

    #[test]
    fn previous_response_id_is_refused_by_name() {
        let Err(ApiError::BadRequest { param, .. }) =
            parse(br#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#)
        else {
            panic!("accepted");
        };
        assert_eq!(param, Some("previous_response_id"));
    }
}
