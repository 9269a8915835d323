//! A safety net for the error shape: axum's extractors (`Path`, `Query`,
//! ...) answer their rejections as plain text, and a handler that forgets
//! to map one would leak that shape. This middleware turns every plain-text
//! error answer into OpenAI's error JSON with the same status, the
//! rejection's text as the message. Invariant: no error leaves the ingress
//! in another shape than [`aigw_events::wire::error_body`]'s.

use aigw_events::wire::error_body;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Rejection texts are short; anything longer is cut.
const MAX_MESSAGE: usize = 1024;

pub async fn rejections_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE * 4).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let mut message: String = text.trim().chars().take(MAX_MESSAGE).collect();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("Invalid request")
            .to_string();
    }
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = error_body(&message, kind, None).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (parts, Body::from(body)).into_response()
}
