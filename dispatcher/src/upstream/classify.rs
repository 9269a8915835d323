//! Where an upstream failure is classified: an error answer (status, body,
//! `Retry-After`) becomes an [`UpstreamError`] of the right kind.
//!
//! Invariants: a refused credential is always [`UpstreamErrorKind::Auth`]
//! whatever the status or the adapter, and its message is never relayed; an
//! error body is read at most [`MAX_ERROR_BODY`] bytes and 10 seconds.

use std::time::Duration;

use serde_json::Value;

use super::error::{UpstreamError, UpstreamErrorKind};

/// Largest upstream error body read (the rest is dropped).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An error object in a successful answer (some providers answer 200 with
/// one) as the upstream failure it is.
pub fn error_in_answer(status: u16, err: &Value, provider: &str) -> UpstreamError {
    if is_auth_failure(status, Some(err)) {
        return UpstreamError::upstream_auth(provider, status);
    }
    UpstreamError::new(
        UpstreamErrorKind::Failed {
            code: err.get("code").and_then(as_code),
        },
        upstream_message(err, provider),
    )
    .from_status(status)
}

/// `{"message": "..."}` (Cohere, Bedrock), `{"Message": "..."}`,
/// `{"detail": {"message": "..."}}` (ElevenLabs) or `{"errors": ["..."]}`
/// (Stability).
fn top_message(parsed: Option<&Value>) -> Option<&str> {
    let v = parsed?;
    v.get("message")
        .or_else(|| v.get("Message"))
        .or_else(|| v.pointer("/detail/message"))
        // RFC 7807 problem details (Replicate): `{"detail", "status", "title"}`.
        .or_else(|| v.get("detail").filter(|d| d.is_string()))
        .or_else(|| v.pointer("/errors/0"))
        .and_then(Value::as_str)
}

fn as_code(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn upstream_message(err: &Value, provider: &str) -> String {
    let text = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    format!("provider {provider}: {text}")
}

/// Reads an error answer and classifies it.
pub async fn error_from_response(response: reqwest::Response, provider: &str) -> UpstreamError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_capped(response, MAX_ERROR_BODY).await;
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    if is_auth_failure(status, err) {
        return UpstreamError::upstream_auth(provider, status);
    }
    let message = match err {
        Some(e) if e.is_object() => upstream_message(e, provider),
        Some(Value::String(s)) => format!("provider {provider}: {s}"),
        _ if top_message(parsed.as_ref()).is_some() => {
            format!(
                "provider {provider}: {}",
                top_message(parsed.as_ref()).unwrap_or_default()
            )
        }
        _ => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if text.is_empty() {
                format!("provider {provider} answered HTTP {status}")
            } else {
                format!(
                    "provider {provider} answered HTTP {status}: {}",
                    text.chars().take(500).collect::<String>()
                )
            }
        }
    };
    let upstream_type = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let code = err.and_then(|e| e.get("code")).and_then(as_code);
    classify(status, message, upstream_type, code, retry_after)
}

/// Error types, codes and statuses by which providers say that the
/// credential was refused (OpenAI, Anthropic, Gemini, and the many
/// OpenAI-compatible ones), compared lowercased.
const AUTH_MARKERS: &[&str] = &[
    "authentication_error",
    "permission_error",
    "invalid_api_key",
    "unauthenticated",
    "permission_denied",
    "api_key_invalid",
    "401",
    "403",
];

/// Whether an upstream failure is the provider refusing aigw's own
/// credential: HTTP 401 or 403, or an error object that says so whatever
/// the status (Gemini answers a bad key with 400 `API_KEY_INVALID`, some
/// providers answer 200 with an error object).
fn is_auth_failure(status: u16, err: Option<&Value>) -> bool {
    if matches!(status, 401 | 403) {
        return true;
    }
    let Some(err) = err.filter(|e| e.is_object()) else {
        return false;
    };
    let marked = |v: Option<&Value>| {
        v.and_then(as_code)
            .is_some_and(|c| AUTH_MARKERS.contains(&c.to_ascii_lowercase().as_str()))
    };
    marked(err.get("type"))
        || marked(err.get("code"))
        || marked(err.get("status"))
        || err
            .get("details")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| marked(x.get("reason"))))
}

/// Maps an upstream HTTP failure (not an authentication one) to its kind.
fn classify(
    status: u16,
    message: String,
    upstream_type: Option<String>,
    code: Option<String>,
    retry_after: Option<String>,
) -> UpstreamError {
    let kind = match status {
        429 => UpstreamErrorKind::RateLimited {
            upstream_type,
            code,
        },
        408 => UpstreamErrorKind::UpstreamTimeout { code },
        400..=499 => UpstreamErrorKind::Rejected {
            status,
            upstream_type,
            code,
        },
        _ => UpstreamErrorKind::Failed { code },
    };
    UpstreamError::new(kind, message)
        .from_status(status)
        .retry_after(retry_after)
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            out.extend_from_slice(&chunk);
            if out.len() >= cap {
                out.truncate(cap);
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_events::ErrorClass;
    use serde_json::json;

    #[test]
    fn authentication_failures_are_recognised_by_status_or_error_object() {
        assert!(is_auth_failure(401, None));
        assert!(is_auth_failure(403, Some(&json!({"message": "x"}))));
        // Gemini: a bad key is a 400.
        assert!(is_auth_failure(
            400,
            Some(
                &json!({"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]})
            )
        ));
        // An error object in a 200 answer.
        assert!(is_auth_failure(
            200,
            Some(
                &json!({"type": "invalid_request_error", "code": "invalid_api_key", "message": "sk-..."})
            )
        ));
        assert!(is_auth_failure(
            200,
            Some(&json!({"code": 401, "message": "bad key"}))
        ));
        assert!(!is_auth_failure(
            400,
            Some(&json!({"type": "invalid_request_error", "code": "context_length_exceeded"}))
        ));
        assert!(!is_auth_failure(429, None));
        assert!(!is_auth_failure(500, Some(&json!("401"))));
        let e = UpstreamError::upstream_auth("p", 401);
        assert_eq!(
            (e.status(), e.error_type(), e.class()),
            (502, "upstream_auth_error", ErrorClass::Upstream)
        );
        assert_eq!(e.body()["error"]["code"], "upstream_auth_error");
    }

    #[test]
    fn http_failures_map_to_kinds() {
        let kind = |status| {
            classify(status, String::new(), None, Some("c".into()), None)
                .kind
                .describe()
                .class
        };
        assert_eq!(kind(429), ErrorClass::RateLimited);
        assert_eq!(kind(408), ErrorClass::Timeout);
        assert_eq!(kind(404), ErrorClass::Client);
        assert_eq!(kind(500), ErrorClass::Upstream);
        assert_eq!(kind(302), ErrorClass::Upstream);
        let e = classify(404, String::new(), None, None, Some("2".into()));
        assert_eq!((e.status(), e.upstream_status), (404, Some(404)));
        assert_eq!(e.retry_after.as_deref(), Some("2"));
        let e = error_in_answer(200, &json!({"code": "invalid_api_key"}), "p");
        assert_eq!(e.kind, UpstreamErrorKind::Auth);
        let e = error_in_answer(200, &json!({"code": 42, "message": "m"}), "p");
        assert_eq!((e.status(), e.code()), (502, Some("42")));
    }
}
