//! The OpenAI-compatible adapter: any base URL that speaks `/chat/completions`.

use std::borrow::Cow;
use std::time::Duration;

use aigw_events::{ErrorClass, Usage, wire};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::adapter::{Answer, StreamItem};

/// Largest upstream error body read (the rest is dropped).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A failed upstream call, classified, with what the caller is told.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub class: ErrorClass,
    /// The upstream's HTTP status, when it answered.
    pub upstream_status: Option<u16>,
    /// Status the caller gets.
    pub status: u16,
    pub error_type: String,
    pub code: Option<String>,
    pub message: String,
    pub retry_after: Option<String>,
}

impl UpstreamError {
    pub fn body(&self) -> Value {
        wire::error_body(&self.message, &self.error_type, self.code.as_deref())
    }

    /// The provider refused aigw's own credential for it. Its message is
    /// never relayed (it may echo the credential, or part of it): every
    /// such failure becomes this fixed 502, whatever the adapter.
    pub fn upstream_auth(provider: &str, upstream_status: u16) -> Self {
        Self {
            class: ErrorClass::Upstream,
            upstream_status: Some(upstream_status),
            status: 502,
            error_type: "upstream_auth_error".into(),
            code: Some("upstream_auth_error".into()),
            message: format!("provider {provider} refused the gateway's credential for it"),
            retry_after: None,
        }
    }

    fn transport(e: &reqwest::Error, provider: &str) -> Self {
        if e.is_timeout() {
            Self {
                class: ErrorClass::Timeout,
                upstream_status: None,
                status: 504,
                error_type: "upstream_timeout".into(),
                code: Some("upstream_timeout".into()),
                message: format!("provider {provider} did not answer in time"),
                retry_after: None,
            }
        } else {
            Self {
                class: ErrorClass::Connect,
                upstream_status: None,
                status: 502,
                error_type: "upstream_error".into(),
                code: Some("upstream_unreachable".into()),
                message: format!("provider {provider} could not be reached"),
                retry_after: None,
            }
        }
    }
}

/// Smooths known deviations of OpenAI-compatible presets from OpenAI's
/// request format (providers.md, per provider).
pub fn adjust_for_preset<'a>(preset: Option<&str>, body: &'a Value) -> Cow<'a, Value> {
    let Some(preset) = preset else {
        return Cow::Borrowed(body);
    };
    let mut out = body.clone();
    let Some(obj) = out.as_object_mut() else {
        return Cow::Borrowed(body);
    };
    match preset {
        // Mistral names the seed `random_seed`.
        "mistral" => {
            if let Some(seed) = obj.remove("seed") {
                obj.insert("random_seed".into(), seed);
            }
        }
        // Groq answers 400 to these fields and to `name` on messages.
        "groq" => {
            for field in ["logprobs", "top_logprobs", "logit_bias"] {
                obj.remove(field);
            }
            if let Some(Value::Array(messages)) = obj.get_mut("messages") {
                for m in messages {
                    if let Some(m) = m.as_object_mut() {
                        m.remove("name");
                    }
                }
            }
        }
        // SiliconFlow takes at most 4 stop sequences.
        "siliconflow" => {
            if let Some(Value::Array(stop)) = obj.get_mut("stop") {
                stop.truncate(4);
            }
        }
        _ => return Cow::Borrowed(body),
    }
    Cow::Owned(out)
}

/// A transport failure (connect, timeout) as an upstream error.
pub fn transport_error(e: &reqwest::Error, provider: &str) -> UpstreamError {
    UpstreamError::transport(e, provider)
}

/// Sends a chat completion request and classifies the answer.
pub async fn chat(
    http: &reqwest::Client,
    provider: &str,
    base_url: &str,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    call(
        http,
        provider,
        base_url,
        api_key,
        "chat/completions",
        body,
        stream,
    )
    .await
}

/// Sends an OpenAI-format JSON request to `{base_url}/{path}`.
pub async fn call(
    http: &reqwest::Client,
    provider: &str,
    base_url: &str,
    api_key: Option<&SecretString>,
    path: &str,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let url = format!("{}/{path}", base_url.trim_end_matches('/'));
    let mut request = http.post(url).json(body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    exchange(request, provider, stream).await
}

/// Sends a prepared OpenAI-format request and classifies the answer.
pub async fn exchange(
    mut request: reqwest::RequestBuilder,
    provider: &str,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    if stream {
        request = request.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let response = request
        .send()
        .await
        .map_err(|e| UpstreamError::transport(&e, provider))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return Err(error_from_response(response, provider).await);
    }
    if stream {
        return Ok(Answer::Stream(sse_items(response, provider.to_string())));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| UpstreamError::transport(&e, provider))?;
    let parsed: Value = serde_json::from_slice(&body).map_err(|_| UpstreamError {
        class: ErrorClass::Upstream,
        upstream_status: Some(status),
        status: 502,
        error_type: "upstream_error".into(),
        code: Some("upstream_invalid_response".into()),
        message: format!("provider {provider} sent a response that is not JSON"),
        retry_after: None,
    })?;
    // Some providers answer 200 with an error object.
    if let Some(err) = parsed.get("error").filter(|e| e.is_object()) {
        if is_auth_failure(status, Some(err)) {
            return Err(UpstreamError::upstream_auth(provider, status));
        }
        return Err(UpstreamError {
            class: ErrorClass::Upstream,
            upstream_status: Some(status),
            status: 502,
            error_type: "upstream_error".into(),
            code: err.get("code").and_then(as_code),
            message: upstream_message(err, provider),
            retry_after: None,
        });
    }
    Ok(Answer::Full {
        usage: parsed.get("usage").and_then(parse_usage),
        body,
    })
}

/// Turns an OpenAI-style SSE body into stream items: each `data:` payload,
/// then `[DONE]`; a transport failure becomes an error item.
pub fn sse_items(
    response: reqwest::Response,
    provider: String,
) -> futures::stream::BoxStream<'static, StreamItem> {
    crate::sse::events(response.bytes_stream())
        .map(move |event| match event {
            Ok(ev) => {
                let data = ev.data.trim();
                if data == "[DONE]" {
                    StreamItem::Done
                } else {
                    StreamItem::Data(data.to_string())
                }
            }
            Err(eventsource_stream::EventStreamError::Transport(t)) if t.is_timeout() => {
                StreamItem::Error(broken(&provider, "the stream stalled"))
            }
            Err(_) => StreamItem::Error(broken(&provider, "the stream broke")),
        })
        .boxed()
}

/// A stream that failed after it started.
pub fn broken(provider: &str, reason: &str) -> UpstreamError {
    UpstreamError {
        class: ErrorClass::StreamBroken,
        upstream_status: None,
        status: 502,
        error_type: "upstream_error".into(),
        code: Some("stream_interrupted".into()),
        message: format!("provider {provider}: {reason}"),
        retry_after: None,
    }
}

/// Reads the OpenAI `usage` object: prompt and completion tokens and their
/// classes. Cache reads are OpenAI's `prompt_tokens_details.cached_tokens`
/// (xAI, Moonshot and most compatible servers too), DeepSeek's
/// `prompt_cache_hit_tokens` or a top-level `cached_tokens` (Moonshot);
/// cache writes `cache_write_tokens` (OpenAI's 2026 SDK, taken as 5-minute
/// ones) or aigw's own split (`cache_write_5m_tokens`,
/// `cache_write_1h_tokens`, when relaying another aigw); reasoning
/// `completion_tokens_details.reasoning_tokens`. All are parts of
/// `prompt_tokens` / `completion_tokens`, as in OpenAI's API.
pub fn parse_usage(usage: &Value) -> Option<Usage> {
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let at = |path: &str| usage.pointer(path).and_then(Value::as_u64);
    let write_1h = at("/prompt_tokens_details/cache_write_1h_tokens").unwrap_or(0);
    let write_5m = at("/prompt_tokens_details/cache_write_5m_tokens").unwrap_or_else(|| {
        at("/prompt_tokens_details/cache_write_tokens")
            .unwrap_or(0)
            .saturating_sub(write_1h)
    });
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: at("/prompt_tokens_details/cached_tokens")
            .or_else(|| at("/prompt_cache_hit_tokens"))
            // Moonshot's older answers: a top-level `cached_tokens`.
            .or_else(|| at("/cached_tokens"))
            .unwrap_or(0),
        cache_write_5m_tokens: write_5m,
        cache_write_1h_tokens: write_1h,
        reasoning_tokens: at("/completion_tokens_details/reasoning_tokens").unwrap_or(0),
        ..Default::default()
    })
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

/// Maps an upstream HTTP failure (not an authentication one) to what the
/// caller is told.
fn classify(
    status: u16,
    message: String,
    upstream_type: Option<String>,
    code: Option<String>,
    retry_after: Option<String>,
) -> UpstreamError {
    let (class, caller_status, error_type) = match status {
        429 => (
            ErrorClass::RateLimited,
            429,
            upstream_type.unwrap_or_else(|| "rate_limit_exceeded".into()),
        ),
        408 => (ErrorClass::Timeout, 504, "upstream_timeout".to_string()),
        400..=499 => (
            ErrorClass::Client,
            status,
            upstream_type.unwrap_or_else(|| "invalid_request_error".into()),
        ),
        _ => (ErrorClass::Upstream, 502, "upstream_error".to_string()),
    };
    UpstreamError {
        class,
        upstream_status: Some(status),
        status: caller_status,
        error_type,
        code,
        message,
        retry_after,
    }
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
    use serde_json::json;

    #[test]
    fn usage_parsing() {
        let u =
            parse_usage(&json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}));
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 5,
                ..Default::default()
            })
        );
        assert_eq!(parse_usage(&Value::Null), None);
        // OpenAI's details: cached and reasoning tokens, parts of the totals.
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            "completion_tokens_details": {"reasoning_tokens": 20}
        }))
        .unwrap();
        assert_eq!(
            (
                u.cached_tokens,
                u.cache_write_5m_tokens,
                u.cache_write_1h_tokens,
                u.reasoning_tokens
            ),
            (60, 30, 0, 20)
        );
        // aigw's split of the writes.
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 0,
            "prompt_tokens_details": {"cache_write_tokens": 30, "cache_write_5m_tokens": 10,
                                      "cache_write_1h_tokens": 20}
        }))
        .unwrap();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (10, 20));
        // DeepSeek: hits and misses make the prompt.
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 5,
            "prompt_cache_hit_tokens": 70, "prompt_cache_miss_tokens": 30
        }))
        .unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens), (100, 70));
        let u = parse_usage(&json!({"prompt_tokens": 100, "completion_tokens": 5,
            "cached_tokens": 40}))
        .unwrap();
        assert_eq!(u.cached_tokens, 40);
    }

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
            (e.status, e.error_type.as_str(), e.class),
            (502, "upstream_auth_error", ErrorClass::Upstream)
        );
        assert_eq!(e.body()["error"]["code"], "upstream_auth_error");
    }
}
