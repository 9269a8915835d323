//! Anthropic to Anthropic: the caller's Messages body to an upstream that
//! speaks Messages natively, and its answer back, both verbatim.
//!
//! Invariants:
//! - The body sent is the caller's, with only `model` set to the target's
//!   model id: `cache_control`, thinking blocks and their signatures,
//!   citations, server tools and fields aigw does not know all survive.
//!   The caller's `anthropic-version` and `anthropic-beta` go along; the
//!   credential is the provider's, never the caller's.
//! - The answer (JSON, or each SSE event with its name) is relayed as the
//!   upstream sent it; aigw only reads the usage from it (input, output,
//!   cache reads and writes by lifetime) to bill it.
//! - An `error` event mid-stream ends the stream as a failed attempt, and
//!   the caller gets it as Anthropic's `error` event.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_events::wire::{AnswerCost, Dialect, DispatchRequest};
use aigw_runtime::Target;
use aigw_runtime::estimate;
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::NativeAnswer;
use crate::attempt::{AttemptResult, cancelled};
use crate::providers::anthropic::{ANTHROPIC_VERSION, usage as anthropic_usage};
use crate::record::Billed;
use crate::relay::finish_stream;
use crate::reply::Replier;
use crate::upstream;
use crate::upstream::{StreamFault, UpstreamError, UpstreamErrorKind, broken};

/// Where `provider` serves the Messages API natively, if it does.
pub fn messages_url(provider: &ProviderSpec) -> Option<String> {
    let anthropic = Dialect::AnthropicMessages {
        version: None,
        beta: None,
    };
    crate::providers::capabilities(provider.kind)
        .speaks(&anthropic)
        .then(|| format!("{}/v1/messages", provider.base_url.trim_end_matches('/')))
}

/// The caller's body for `model`: the same JSON, only `model` replaced.
pub fn upstream_body(native: &Value, model: &str) -> Value {
    let mut body = native.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_string()));
    }
    body
}

/// Calls `provider`'s Messages API with the caller's body.
pub async fn call(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    request: &DispatchRequest,
    model: &str,
) -> Result<NativeAnswer, UpstreamError> {
    let name = provider.name.as_str();
    let (Some(url), Some(native)) = (messages_url(provider), request.native_body.as_ref()) else {
        return Err(upstream::unsupported(name, "the Anthropic Messages API"));
    };
    let (version, beta) = match &request.dialect {
        Dialect::AnthropicMessages { version, beta } => (version.as_deref(), beta.as_deref()),
        Dialect::OpenaiChat | Dialect::GeminiGenerate | Dialect::OpenaiResponses => (None, None),
    };
    // The caller's bytes, only the model's replaced, where the message
    // carried them; else the parsed body with the model set.
    let bytes = match request
        .raw_body
        .as_ref()
        .and_then(|raw| raw.with_model(model))
    {
        Some(text) => text.into_owned().into_bytes(),
        None => serde_json::to_vec(&upstream_body(native, model)).unwrap_or_default(),
    };
    let mut call = http
        .post(url)
        .header("anthropic-version", version.unwrap_or(ANTHROPIC_VERSION))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes);
    if let Some(beta) = beta {
        call = call.header("anthropic-beta", beta);
    }
    if let Some(key) = api_key {
        call = call.header("x-api-key", key.expose_secret());
    }
    if request.stream {
        call = call.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let (body, parsed) = match super::send(call, name, request.stream).await? {
        super::Sent::Stream(events) => return Ok(events),
        super::Sent::Whole { body, parsed, .. } => (body, parsed),
    };
    if parsed.get("type").and_then(Value::as_str) == Some("error") {
        let message = parsed
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("error");
        return Err(broken(name, message));
    }
    Ok(NativeAnswer::Full {
        usage: parsed.get("usage").map(anthropic_usage),
        body,
    })
}

/// Folds one streamed event into the usage seen so far: `message_start`
/// has the input side, `message_delta` the cumulative output (and, from
/// newer servers, the input side anew).
pub fn fold_usage(usage: &mut Option<Usage>, kind: &str, event: &Value) {
    match kind {
        "message_start" => {
            if let Some(u) = event.pointer("/message/usage") {
                *usage = Some(anthropic_usage(u));
            }
        }
        "message_delta" => {
            let Some(u) = event.get("usage") else {
                return;
            };
            let mut next = usage.unwrap_or_default();
            if u.get("input_tokens").is_some() {
                next = Usage {
                    completion_tokens: next.completion_tokens,
                    ..anthropic_usage(u)
                };
            }
            if let Some(n) = u.get("output_tokens").and_then(Value::as_u64) {
                next.completion_tokens = n;
            }
            *usage = Some(next);
        }
        _ => {}
    }
}

/// An upstream's mid-stream `error` event as a broken stream, with the
/// status its Anthropic error type stands for (so the caller's `error`
/// event keeps that type: `overloaded_error` stays one).
pub fn stream_error(provider: &str, event: &Value) -> UpstreamError {
    let message = event
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("stream error");
    let fault = match event.pointer("/error/type").and_then(Value::as_str) {
        Some("overloaded_error") => StreamFault::Overloaded,
        Some("rate_limit_error") => StreamFault::RateLimited,
        Some("timeout_error") => StreamFault::TimedOut,
        _ => StreamFault::Interrupted,
    };
    UpstreamError::new(
        UpstreamErrorKind::StreamBroken(fault),
        format!("provider {provider}: {message}"),
    )
}

/// Relays an upstream Messages stream event by event, verbatim, billing
/// the usage it reports (estimated from what was relayed when it reports
/// none).
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
    let mut end: Result<(), UpstreamError> =
        Err(broken(provider, "the stream ended before message_stop"));
    loop {
        let next = tokio::select! {
            n = events.next() => n,
            _ = cancel.cancelled() => { end = Err(cancelled()); break; }
        };
        let (name, data) = match next {
            None => break,
            Some(Err(e)) => {
                end = Err(e);
                break;
            }
            Some(Ok(event)) => event,
        };
        let parsed = serde_json::from_str::<Value>(&data).unwrap_or(Value::Null);
        let kind = parsed
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(name.as_str())
            .to_string();
        if kind == "error" {
            end = Err(stream_error(provider, &parsed));
            break;
        }
        fold_usage(&mut usage, &kind, &parsed);
        if let Some(text) = parsed
            .pointer("/delta/text")
            .or_else(|| parsed.pointer("/delta/thinking"))
            .and_then(Value::as_str)
        {
            text_tokens = text_tokens.saturating_add(estimate::text_tokens(text));
        }
        let frame = super::sse_frame(&name, &data, b"\n");
        // The final usage is known at `message_delta`: its frame carries
        // the cost the outcome records, for the caller's `usage.cost_usd`.
        let cost = (kind == "message_delta")
            .then(|| usage.filter(Usage::is_plausible))
            .flatten()
            .map(|u| AnswerCost::of(Billed::priced(target, u, false).cost_micros));
        replier.chunk(frame, cost).await;
        if kind == "message_stop" {
            end = Ok(());
            break;
        }
    }
    let billed = super::stream_billed(request, target, usage, text_tokens);
    finish_stream(end, billed, replier).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_model_changes() {
        let native = json!({"model": "alias", "max_tokens": 5, "x_unknown": {"a": [1, 2]},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]});
        let body = upstream_body(&native, "claude-real");
        let mut expected = native.clone();
        expected["model"] = json!("claude-real");
        assert_eq!(body, expected);
    }

    #[test]
    fn stream_errors_keep_their_kind_as_a_status() {
        let error = |kind: &str| {
            stream_error(
                "p",
                &json!({"type": "error", "error": {"type": kind, "message": "busy"}}),
            )
        };
        assert_eq!(error("overloaded_error").status(), 529);
        assert_eq!(error("rate_limit_error").status(), 429);
        assert_eq!(error("api_error").status(), 502);
        assert_eq!(error("overloaded_error").message, "provider p: busy");
        assert_eq!(stream_error("p", &json!(null)).status(), 502);
    }

    #[test]
    fn streamed_usage_folds_input_and_cumulative_output() {
        let mut u = None;
        fold_usage(
            &mut u,
            "message_start",
            &json!({"message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20, "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 15},
                "output_tokens": 1}}}),
        );
        fold_usage(
            &mut u,
            "message_delta",
            &json!({"usage": {"output_tokens": 4}}),
        );
        fold_usage(
            &mut u,
            "message_delta",
            &json!({"usage": {"output_tokens": 9}}),
        );
        let u = u.unwrap();
        assert_eq!(u.prompt_tokens, 130);
        assert_eq!(u.cached_tokens, 100);
        assert_eq!(u.cache_write_5m_tokens, 5);
        assert_eq!(u.cache_write_1h_tokens, 15);
        assert_eq!(u.completion_tokens, 9);
    }
}
