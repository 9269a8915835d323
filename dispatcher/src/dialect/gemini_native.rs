//! Gemini to Gemini: the caller's `generateContent` body to a provider
//! that speaks Gemini natively, and its answer back, both verbatim.
//!
//! Invariants:
//! - The body sent is the caller's: the model (which Gemini takes from the
//!   path) is the target's model id, and the credential is the provider's
//!   `x-goog-api-key`, never the caller's. The one change to the body is
//!   the output cap a budget hold assumed when nothing else bounds the
//!   answer (`generationConfig.maxOutputTokens`, only when the caller set
//!   none), so no route escapes the worst-case hold.
//! - The answer (JSON, or each SSE event) is relayed as the upstream sent
//!   it; aigw only reads `usageMetadata` from it to bill it.
//! - A stream that ends without a `finishReason`, or with an `error`
//!   event, is a failed attempt; the caller gets Gemini's error event.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_events::wire::{AnswerCost, Dialect, DispatchRequest};
use aigw_runtime::Target;
use aigw_runtime::estimate;
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::NativeAnswer;
use crate::attempt::{AttemptResult, cancelled};
use crate::convert;
use crate::providers::gemini::usage as gemini_usage;
use crate::record::Billed;
use crate::relay::finish_stream;
use crate::reply::Replier;
use crate::upstream;
use crate::upstream::{UpstreamError, broken};

/// Where `provider` serves `model`'s `generateContent` natively, if it does.
pub fn generate_url(provider: &ProviderSpec, model: &str, stream: bool) -> Option<String> {
    if !crate::providers::capabilities(provider.kind).speaks(&Dialect::GeminiGenerate) {
        return None;
    }
    let model = model.strip_prefix("models/").unwrap_or(model);
    let base = provider.base_url.trim_end_matches('/');
    let model = convert::path_segment(model);
    Some(if stream {
        format!("{base}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{model}:generateContent")
    })
}

/// The caller's body, with the output cap `cap` when it set none.
pub fn upstream_body(native: &Value, cap: Option<u64>) -> Value {
    let mut body = native.clone();
    let Some(cap) = cap else {
        return body;
    };
    if let Some(obj) = body.as_object_mut() {
        let config = obj.entry("generationConfig").or_insert_with(|| json!({}));
        if let Some(config) = config.as_object_mut() {
            config
                .entry("maxOutputTokens")
                .or_insert_with(|| json!(cap));
        }
    }
    body
}

/// Calls `provider`'s `generateContent` (or `streamGenerateContent`) with
/// the caller's body.
pub async fn call(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    request: &DispatchRequest,
    model: &str,
    cap: Option<u64>,
) -> Result<NativeAnswer, UpstreamError> {
    let name = provider.name.as_str();
    let (Some(url), Some(native)) = (
        generate_url(provider, model, request.stream),
        request.native_body.as_ref(),
    ) else {
        return Err(upstream::unsupported(name, "Gemini's generateContent"));
    };
    // The caller's bytes where the message carried them and no output cap
    // must be added (the model is in the URL); else the parsed body.
    let capped = cap.is_some()
        && native
            .pointer("/generationConfig/maxOutputTokens")
            .is_none();
    let bytes = match &request.raw_body {
        Some(raw) if !capped => raw.get().as_bytes().to_vec(),
        _ => serde_json::to_vec(&upstream_body(native, cap)).unwrap_or_default(),
    };
    let mut call = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes);
    if let Some(key) = api_key {
        call = call.header("x-goog-api-key", key.expose_secret());
    }
    let (status, body, parsed) = match super::send(call, name, request.stream).await? {
        super::Sent::Stream(events) => return Ok(events),
        super::Sent::Whole {
            status,
            body,
            parsed,
        } => (status, body, parsed),
    };
    if let Some(message) = error_message(&parsed) {
        return Err(broken(name, message));
    }
    if parsed.get("candidates").is_none() && parsed.get("promptFeedback").is_none() {
        return Err(upstream::invalid_response(name, status));
    }
    Ok(NativeAnswer::Full {
        usage: parsed.get("usageMetadata").map(gemini_usage),
        body,
    })
}

fn error_message(v: &Value) -> Option<&str> {
    let e = v.get("error").filter(|e| e.is_object())?;
    Some(e.get("message").and_then(Value::as_str).unwrap_or("error"))
}

/// Relays an upstream Gemini stream event by event, verbatim, billing the
/// last `usageMetadata` it reports (estimated from what was relayed when
/// it reports none).
pub(crate) async fn relay(
    request: &DispatchRequest,
    target: &Target,
    mut events: BoxStream<'static, Result<(String, String), UpstreamError>>,
    replier: &Replier,
    cancel: &CancellationToken,
) -> AttemptResult {
    let provider = target.provider.spec.name.as_str();
    let mut usage: Option<Usage> = None;
    let mut text_tokens = 0u64;
    let mut finished = false;
    let mut end: Result<(), UpstreamError> = Ok(());
    loop {
        let next = tokio::select! {
            n = events.next() => n,
            _ = cancel.cancelled() => { end = Err(cancelled()); break; }
        };
        let data = match next {
            None => break,
            Some(Err(e)) => {
                end = Err(e);
                break;
            }
            Some(Ok((_, data))) => data,
        };
        if data.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&data).unwrap_or(Value::Null);
        if let Some(message) = error_message(&parsed) {
            end = Err(broken(provider, message));
            break;
        }
        if let Some(u) = parsed.get("usageMetadata") {
            usage = Some(gemini_usage(u));
        }
        for candidate in parsed
            .get("candidates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            finished |= candidate.get("finishReason").is_some();
            for part in candidate
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    text_tokens = text_tokens.saturating_add(estimate::text_tokens(text));
                }
            }
        }
        finished |= parsed.pointer("/promptFeedback/blockReason").is_some();
        let frame = super::sse_frame("", &data, b"\r\n");
        // The chunk that finishes the answer carries its final usage: its
        // frame carries the cost the outcome records (`usageMetadata.costUsd`).
        let finishing = parsed
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c.get("finishReason").is_some()));
        let cost = (finishing && parsed.get("usageMetadata").is_some())
            .then(|| usage.filter(Usage::is_plausible))
            .flatten()
            .map(|u| AnswerCost::of(Billed::priced(target, u, false).cost_micros));
        replier.chunk(frame, cost).await;
    }
    if end.is_ok() && !finished {
        end = Err(broken(provider, "the stream ended before a finishReason"));
    }
    let billed = super::stream_billed(request, target, usage, text_tokens);
    finish_stream(end, billed, replier).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cap_may_be_added() {
        let native = json!({"contents": [{"parts": [{"text": "hi"}]}], "x_unknown": [1],
            "generationConfig": {"topK": 3}});
        assert_eq!(upstream_body(&native, None), native);
        let capped = upstream_body(&native, Some(4096));
        let mut expected = native.clone();
        expected["generationConfig"]["maxOutputTokens"] = json!(4096);
        assert_eq!(capped, expected);
        let own = json!({"contents": [], "generationConfig": {"maxOutputTokens": 5}});
        assert_eq!(upstream_body(&own, Some(4096)), own);
        let bare = json!({"contents": []});
        assert_eq!(
            upstream_body(&bare, Some(7))["generationConfig"],
            json!({"maxOutputTokens": 7})
        );
    }
}
