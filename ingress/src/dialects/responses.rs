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
//! - `previous_response_id` is expanded into the body's input before
//!   translation and admission (`stored_responses`); an answer with
//!   `store` not false is stored by the dispatcher with its outcome.

use aigw_events::{response, wire};
use aigw_runtime::dialect::responses_in;
use axum::Extension;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::RequestId;
use crate::auth::Caller;
use crate::chat::{self, Inbound, body_bytes};
use crate::dialects::{Dialect, stored_responses};
use crate::error::ApiError;
use crate::validate::{ChatRequest, validate};

/// How a Responses stream that failed midway ends, as OpenAI's does: an
/// `error` event with the error's message and code, then `response.failed`
/// with the response (this request's id, status `failed`, the same error),
/// so a client waiting for the response's last event (Codex waits for
/// `response.completed` or `response.failed`) learns why it ended. The
/// `sequence_number`s are unknown to the ingress, which cut the stream: 0.
pub fn failure(request_id: Uuid, message: &str, code: &str) -> Bytes {
    let error = json!({"type": "error", "code": code, "message": message, "param": null,
        "sequence_number": 0});
    let failed = json!({
        "type": "response.failed",
        "sequence_number": 0,
        "response": {
            "id": response::response_id(request_id),
            "object": "response",
            "created_at": chrono::Utc::now().timestamp(),
            "status": "failed",
            "error": {"code": code, "message": message},
            "incomplete_details": null,
            "output": [],
            "usage": null,
        },
    });
    Bytes::from(format!(
        "event: error\ndata: {error}\n\nevent: response.failed\ndata: {failed}\n\n"
    ))
}

/// A stream's error frame (OpenAI's error JSON) as the events of a
/// [`failure`].
pub fn error_frame(request_id: Uuid, payload: &[u8]) -> Bytes {
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
    failure(request_id, message, code)
}

/// A Responses body as JSON.
fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("The request body is not valid JSON: {e}"),
        param: None,
        code: Some("invalid_json"),
    })
}

/// A Responses body translated to OpenAI chat.
fn translate(native: &Value) -> Result<responses_in::Translated, ApiError> {
    responses_in::to_chat(native).map_err(|e| ApiError::BadRequest {
        message: e.message,
        param: None,
        code: Some("invalid_request"),
    })
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
    let mut native = parse(&bytes)?;
    // A continuation carries its whole conversation from here on.
    stored_responses::continue_from_previous(&state, key.id, &mut native).await?;
    let (chat, inbound) = admissible(native, request_id.0)?;
    chat::answer(&state, key, &headers, chat, request_id.0, inbound).await
}

/// A Responses body for `/v1/jobs` (its `previous_response_id` already
/// expanded, see `jobs::submit`).
pub fn job_request(native: Value, id: Uuid) -> Result<(ChatRequest, Inbound), ApiError> {
    admissible(native, id)
}

/// A Responses body translated, and checked with the same limits as an
/// OpenAI chat completion; `id` names the response (`resp_<id>`).
fn admissible(native: Value, id: Uuid) -> Result<(ChatRequest, Inbound), ApiError> {
    let translated = translate(&native)?;
    let internal = serde_json::to_vec(&translated.body).map_err(ApiError::internal)?;
    let chat = validate(&internal)?;
    let inbound = Inbound {
        dialect: Dialect::Responses { request_id: id },
        wire: wire::Dialect::OpenaiResponses,
        native_body: Some(native),
        native_raw: None,
        native_only: translated.native_only,
    };
    Ok((chat, inbound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_end_the_stream_with_error_then_response_failed() {
        let frame =
            br#"{"error":{"message":"boom","type":"server_error","code":"upstream_error"}}"#;
        let id = Uuid::now_v7();
        let text = String::from_utf8(error_frame(id, frame).to_vec()).unwrap();
        let (error, failed) = text.split_once("\n\n").unwrap();
        assert_eq!(
            error,
            "event: error\ndata: {\"code\":\"upstream_error\",\"message\":\"boom\",\"param\":null,\"sequence_number\":0,\"type\":\"error\"}"
        );
        let data = failed
            .strip_prefix("event: response.failed\ndata: ")
            .and_then(|d| d.strip_suffix("\n\n"))
            .unwrap();
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["type"], "response.failed");
        assert_eq!(data["response"]["id"], response::response_id(id));
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "upstream_error");
        assert_eq!(data["response"]["error"]["message"], "boom");
        let junk = String::from_utf8(error_frame(id, b"junk").to_vec()).unwrap();
        assert!(junk.contains("The stream failed."), "{junk}");
    }
}
