//! Relaying an upstream stream to the caller frame by frame, watching for
//! the provider's usage; when it never comes (a cut stream, a caller that
//! left), the usage is estimated from what was relayed and flagged.
//!
//! The usage is priced when it arrives (`Billed`); a caller who asked for
//! the usage chunk gets it with that cost in the frame's header, and the
//! last usage priced is what the outcome records.

use aigw_events::wire::{AnswerCost, DispatchRequest};
use aigw_events::{ErrorClass, Usage};
use aigw_runtime::Target;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::answer::StreamItem;
use crate::attempt::{AttemptResult, cancelled, message_id};
use crate::convert;
use crate::dialect::StreamRenderer;
use crate::process::json_bytes;
use crate::record::Billed;
use crate::reply::Replier;
use crate::spans::StreamSeen;
use crate::upstream::{UpstreamError, broken};
use aigw_runtime::estimate;

/// Relays an upstream SSE stream frame by frame, watching for usage.
pub(crate) async fn relay_stream(
    request: &DispatchRequest,
    target: &Target,
    mut items: futures::stream::BoxStream<'static, StreamItem>,
    replier: &Replier,
    cancel: &CancellationToken,
) -> AttemptResult {
    let provider = target.provider.spec.name.as_str();
    let mut billed: Option<Billed> = None;
    let mut completion_text = 0u64;
    let mut end: Result<(), UpstreamError> = Err(broken(provider, "the stream ended early"));
    let mut seen = StreamSeen::new();
    // A caller of another dialect gets the chunks rendered in it.
    let mut render = StreamRenderer::of(request, message_id(request));
    loop {
        let next = tokio::select! {
            n = items.next() => n,
            _ = cancel.cancelled() => { end = Err(cancelled()); break; }
        };
        let data = match next {
            None => break,
            Some(StreamItem::Error(e)) => {
                end = Err(e);
                break;
            }
            Some(StreamItem::Done) => {
                end = Ok(());
                break;
            }
            Some(StreamItem::Data(data)) => data,
        };
        let data = data.trim();
        if data.is_empty() {
            continue;
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            tracing::debug!(provider, "skipping a non-JSON SSE event");
            continue;
        };
        if let Some(err) = chunk.get("error").filter(|e| e.is_object()) {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("stream error");
            end = Err(broken(provider, message));
            break;
        }
        completion_text += chunk_text_tokens(&chunk);
        seen.chunk(&chunk);
        let chunk_usage = chunk
            .get("usage")
            .filter(|u| !u.is_null())
            .and_then(crate::providers::openai::parse_usage)
            .filter(Usage::is_plausible);
        if let Some(render) = render.as_mut() {
            if let Some(u) = chunk_usage {
                billed = Some(Billed::priced(target, u, false));
            }
            let mut events = Vec::new();
            render.chunk(&chunk, &mut events);
            if !events.is_empty() {
                replier.chunk(Bytes::from(events), None).await;
            }
            continue;
        }
        let has_choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        let forward = match chunk_usage {
            None => Some((Bytes::copy_from_slice(data.as_bytes()), None)),
            Some(u) => {
                let priced = Billed::priced(target, u, false);
                billed = Some(priced);
                if request.include_usage {
                    let cost = AnswerCost::of(priced.cost_micros);
                    let completed = chunk
                        .get_mut("usage")
                        .is_some_and(|usage| convert::complete_usage_details(usage, &u));
                    let bytes = if completed {
                        json_bytes(&chunk)
                    } else {
                        Bytes::copy_from_slice(data.as_bytes())
                    };
                    Some((bytes, Some(cost)))
                } else if has_choices {
                    // Usage rode on a content chunk: pass the content on, not
                    // the usage the caller did not ask for.
                    if let Some(obj) = chunk.as_object_mut() {
                        obj.remove("usage");
                    }
                    Some((json_bytes(&chunk), None))
                } else {
                    None
                }
            }
        };
        if let Some((bytes, cost)) = forward {
            replier.chunk(bytes, cost).await;
        }
    }
    seen.finish();
    let billed = billed.unwrap_or_else(|| {
        let estimate = Usage {
            prompt_tokens: estimate::prompt_tokens(&request.body),
            completion_tokens: completion_text,
            ..Default::default()
        };
        Billed::priced(target, estimate, true)
    });
    if let (Ok(()), Some(render)) = (&end, render.as_mut()) {
        let mut events = Vec::new();
        render.finish(&billed.usage, &mut events);
        if let Some(response) = render.final_response() {
            replier.keep_rendered(response);
        }
        replier
            .chunk(
                Bytes::from(events),
                Some(AnswerCost::of(billed.cost_micros)),
            )
            .await;
    }
    finish_stream(end, billed, replier).await
}

/// Ends a relayed stream: `end` when it finished cleanly, else the error
/// frame (the caller gets it in its dialect) unless the caller left.
pub(crate) async fn finish_stream(
    end: Result<(), UpstreamError>,
    billed: Billed,
    replier: &Replier,
) -> AttemptResult {
    match end {
        Ok(()) => {
            replier.end().await;
            AttemptResult::Done {
                billed,
                status: 200,
            }
        }
        Err(error) => {
            if error.class() != ErrorClass::Cancelled {
                replier
                    .error(error.status(), json_bytes(&error.body()), None, 0)
                    .await;
            }
            AttemptResult::Failed {
                error,
                billed,
                started_stream: true,
            }
        }
    }
}

pub(crate) fn chunk_text_tokens(chunk: &Value) -> u64 {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .filter_map(|c| c.get("delta"))
                .map(|d| {
                    let content = d.get("content").and_then(Value::as_str).unwrap_or("");
                    let args: String = d
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .map(|calls| {
                            calls
                                .iter()
                                .filter_map(|c| c.pointer("/function/arguments"))
                                .filter_map(Value::as_str)
                                .collect()
                        })
                        .unwrap_or_default();
                    estimate::text_tokens(content) + estimate::text_tokens(&args)
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_tool_call_arguments() {
        let chunk = json!({"choices":[{"delta":{"content":"abcd","tool_calls":[{"function":{"arguments":"abcdefgh"}}]}}]});
        assert_eq!(chunk_text_tokens(&chunk), 3);
    }
}
