//! OpenAI's Responses API relayed to OpenAI itself (the `openai` preset),
//! rather than translated through chat completions: reasoning items and
//! their encrypted content, built-in tools and every field aigw does not
//! know reach OpenAI and come back as OpenAI sent them.
//!
//! Invariants:
//! - The upstream body is the caller's, with the provider's model, without
//!   `previous_response_id` (aigw expanded the stored conversation into
//!   `input` at the ingress: OpenAI never saw aigw's ids), and with
//!   `max_output_tokens` when a budget hold assumed a cap the caller did
//!   not set.
//! - The answer is OpenAI's, JSON or events, with two fields aigw's own:
//!   the response's `id` is `resp_<request id>` (the id aigw stores it
//!   under, so a later `previous_response_id` or `GET` finds it) and its
//!   `previous_response_id` is the caller's. Nothing else changes.
//! - Usage is OpenAI's (`input_tokens` with `cached_tokens`,
//!   `output_tokens` with `reasoning_tokens`); a stream that never reports
//!   it is billed by estimate, flagged.
//! - The response kept for storing is the one the caller got.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_events::response::response_id;
use aigw_events::wire::{AnswerCost, DispatchRequest};
use aigw_runtime::{Target, estimate};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::NativeAnswer;
use crate::attempt::{AttemptResult, cancelled};
use crate::record::Billed;
use crate::relay::finish_stream;
use crate::reply::Replier;
use crate::upstream::{self, UpstreamError, broken};

/// Where `provider` serves the Responses API natively, if it does.
pub fn responses_url(provider: &ProviderSpec) -> Option<String> {
    provider
        .speaks(&aigw_events::wire::Dialect::OpenaiResponses)
        .then(|| upstream::url(&provider.base_url, "responses"))
}

/// The caller's body for `model` (see the module doc).
pub fn upstream_body(native: &Value, model: &str, cap: Option<u64>) -> Value {
    let mut body = native.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_string()));
        obj.remove("previous_response_id");
        if let Some(cap) = cap
            && obj.get("max_output_tokens").is_none_or(Value::is_null)
        {
            obj.insert("max_output_tokens".into(), Value::from(cap));
        }
    }
    body
}

/// `response` as the caller gets it: aigw's id, the caller's
/// `previous_response_id` (see the module doc).
pub fn as_answered(response: &mut Value, request: &DispatchRequest) {
    let previous = request
        .native_body
        .as_ref()
        .and_then(|b| b.get("previous_response_id"))
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(obj) = response.as_object_mut() {
        obj.insert("id".into(), Value::String(response_id(request.request_id)));
        if obj.contains_key("previous_response_id") || !previous.is_null() {
            obj.insert("previous_response_id".into(), previous);
        }
    }
}

/// The usage in a `response` object, in aigw's classes.
pub fn usage(response: &Value) -> Option<Usage> {
    let u = response.get("usage").filter(|u| u.is_object())?;
    let count = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("/input_tokens"),
        cached_tokens: count("/input_tokens_details/cached_tokens"),
        completion_tokens: count("/output_tokens"),
        reasoning_tokens: count("/output_tokens_details/reasoning_tokens"),
        ..Usage::default()
    })
}

/// Calls `provider`'s Responses API with the caller's body; `cap` is the
/// output cap a budget hold assumed, if any.
pub async fn call(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    request: &DispatchRequest,
    model: &str,
    cap: Option<u64>,
) -> Result<NativeAnswer, UpstreamError> {
    let name = provider.name.as_str();
    let (Some(url), Some(native)) = (responses_url(provider), request.native_body.as_ref()) else {
        return Err(upstream::unsupported(name, "the Responses API"));
    };
    let mut call = http.post(url).json(&upstream_body(native, model, cap));
    if let Some(key) = api_key {
        call = call.bearer_auth(key.expose_secret());
    }
    if request.stream {
        call = call.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let (status, mut parsed) = match super::send(call, name, request.stream).await? {
        super::Sent::Stream(events) => return Ok(events),
        super::Sent::Whole { status, parsed, .. } => (status, parsed),
    };
    if let Some(err) = parsed.get("error").filter(|e| e.is_object()) {
        return Err(upstream::error_in_answer(status, err, name));
    }
    if parsed.get("output").is_none() {
        return Err(upstream::invalid_response(name, status));
    }
    as_answered(&mut parsed, request);
    Ok(NativeAnswer::Full {
        usage: usage(&parsed),
        body: Bytes::from(serde_json::to_vec(&parsed).unwrap_or_default()),
    })
}

/// Relays an upstream Responses stream event by event: verbatim, but for
/// the response objects' id (see the module doc); the usage is
/// `response.completed`'s (or `response.incomplete`'s), whose response is
/// kept for storing.
pub(crate) async fn relay(
    request: &DispatchRequest,
    target: &Target,
    mut events: BoxStream<'static, Result<(String, String), UpstreamError>>,
    replier: &Replier,
    cancel: &CancellationToken,
) -> AttemptResult {
    let provider = target.provider.spec.name.as_str();
    let mut usage_seen: Option<Usage> = None;
    let mut text_tokens = 0u64;
    let mut end: Result<(), UpstreamError> = Err(broken(
        provider,
        "the stream ended before response.completed",
    ));
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
        let mut parsed = serde_json::from_str::<Value>(&data).unwrap_or(Value::Null);
        let kind = parsed
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(name.as_str())
            .to_string();
        if kind == "error" {
            let message = parsed
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("stream error");
            end = Err(broken(provider, message));
            break;
        }
        if let Some(delta) = parsed.get("delta").and_then(Value::as_str) {
            text_tokens = text_tokens.saturating_add(estimate::text_tokens(delta));
        }
        // Response objects carry aigw's id; other events go as they came.
        let data = match parsed.get_mut("response") {
            Some(response) if response.is_object() => {
                as_answered(response, request);
                if matches!(kind.as_str(), "response.completed" | "response.incomplete") {
                    usage_seen = usage(response);
                    replier.keep_rendered(response.clone());
                }
                serde_json::to_string(&parsed).unwrap_or(data)
            }
            _ => data,
        };
        let frame = super::sse_frame(&name, &data, b"\n");
        let last = matches!(
            kind.as_str(),
            "response.completed" | "response.incomplete" | "response.failed"
        );
        let cost = last
            .then(|| usage_seen.filter(Usage::is_plausible))
            .flatten()
            .map(|u| AnswerCost::of(Billed::priced(target, u, false).cost_micros));
        replier.chunk(frame, cost).await;
        if kind == "response.failed" {
            end = Err(broken(provider, "the response failed"));
            break;
        }
        if last {
            end = Ok(());
            break;
        }
    }
    let billed = super::stream_billed(request, target, usage_seen, text_tokens);
    finish_stream(end, billed, replier).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn request(native: Value) -> DispatchRequest {
        DispatchRequest {
            request_id: Uuid::nil(),
            key_id: Uuid::nil(),
            reply_to: String::new(),
            accepted_at: chrono::Utc::now(),
            body: Value::Null,
            model: "alias".into(),
            stream: false,
            include_usage: false,
            provider: None,
            deadline: None,
            reservation: None,
            rate_tokens: None,
            endpoint: Default::default(),
            scopes: None,
            body_object: None,
            project_id: None,
            team_id: None,
            rate_levels: vec![],
            rate_on_key: true,
            attribution: Default::default(),
            dialect: aigw_events::wire::Dialect::OpenaiResponses,
            raw_body: None,
            native_body: Some(native),
            native_only: None,
        }
    }

    #[test]
    fn upstream_bodies_lose_only_aigws_chain_and_gain_only_a_held_cap() {
        let native = json!({"model": "alias", "input": [{"role": "user", "content": "hi"}],
            "previous_response_id": "resp_x", "include": ["reasoning.encrypted_content"],
            "tools": [{"type": "web_search"}], "store": false});
        let body = upstream_body(&native, "gpt-5.4", Some(500));
        let mut expected = native.clone();
        expected["model"] = json!("gpt-5.4");
        expected
            .as_object_mut()
            .unwrap()
            .remove("previous_response_id");
        expected["max_output_tokens"] = json!(500);
        assert_eq!(body, expected);
        let capped = json!({"model": "a", "input": "x", "max_output_tokens": 10});
        assert_eq!(
            upstream_body(&capped, "m", Some(500))["max_output_tokens"],
            10
        );
    }

    #[test]
    fn answers_carry_aigws_id_and_the_callers_chain_and_openais_usage() {
        let r = request(json!({"previous_response_id": "resp_prev"}));
        let mut response = json!({"id": "resp_upstream", "object": "response",
            "previous_response_id": null, "output": [],
            "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
                "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 20}}});
        as_answered(&mut response, &r);
        assert_eq!(response["id"], response_id(Uuid::nil()));
        assert_eq!(response["previous_response_id"], "resp_prev");
        let u = usage(&response).unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (100, 40, 30, 20)
        );
        assert!(usage(&json!({"usage": null})).is_none());
    }
}
