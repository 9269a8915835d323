//! OpenAI chat answers rendered as Gemini answers: a `chat.completion` as
//! a `GenerateContentResponse`, and `chat.completion.chunk`s as the SSE
//! events of `streamGenerateContent?alt=sse` (each a
//! `GenerateContentResponse`).
//!
//! Invariants:
//! - Each choice is a candidate with the same index; reasoning is a part
//!   with `thought: true`, ahead of the text; a tool call is one
//!   `functionCall` part with its id, name and `args` object.
//! - A stream sends text and thoughts as they come, and each function call
//!   whole once its arguments are complete (OpenAI may interleave the
//!   arguments of parallel calls); its last event carries every
//!   candidate's `finishReason` and the `usageMetadata` aigw billed.
//! - `usageMetadata` is aigw's token classes in Gemini's split:
//!   `promptTokenCount` includes `cachedContentTokenCount`, and
//!   `candidatesTokenCount` excludes `thoughtsTokenCount`.
//! - No input makes these functions panic.

use aigw_events::Usage;
use serde_json::{Value, json};

use crate::chat::answer::{Chunk, Completion};

/// Usage in Gemini's shape, from aigw's token classes.
pub fn usage_metadata(u: &Usage) -> Value {
    let thoughts = u.reasoning_tokens.min(u.completion_tokens);
    json!({
        "promptTokenCount": u.prompt_tokens,
        "candidatesTokenCount": u.completion_tokens.saturating_sub(thoughts),
        "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": u.cached_tokens,
        "totalTokenCount": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// OpenAI's `finish_reason` as Gemini's `finishReason` (a function call
/// ends a Gemini turn with `STOP`).
pub fn finish_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "MAX_TOKENS",
        Some("content_filter") => "SAFETY",
        _ => "STOP",
    }
}

/// A tool call's arguments as Gemini's `args` object (a non-object is kept
/// whole under `arguments`, never dropped).
fn args_of(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"arguments": arguments}),
    }
}

fn function_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"functionCall": {"id": id, "name": name, "args": args_of(arguments)}})
}

fn candidate(index: u64, parts: Vec<Value>, finish: Option<&str>) -> Value {
    let mut c = json!({"content": {"role": "model", "parts": parts}, "index": index});
    if let Some(finish) = finish {
        c["finishReason"] = Value::String(finish.to_string());
    }
    c
}

/// A `chat.completion` as a `GenerateContentResponse` with id `id`,
/// naming the caller's `model`, with the `usage` aigw billed.
pub fn response(completion: &Completion, id: &str, model: &str, usage: &Usage) -> Value {
    let mut candidates = Vec::new();
    for (n, choice) in completion.choices.iter().enumerate() {
        let msg = &choice.message;
        let mut parts = Vec::new();
        if let Some(thought) = msg.reasoning() {
            parts.push(json!({"text": thought, "thought": true}));
        }
        let text = msg.text();
        if !text.is_empty() {
            parts.push(json!({"text": text}));
        }
        for (k, call) in msg.tool_calls.iter().enumerate() {
            let id = call
                .id()
                .map_or_else(|| format!("call_{k}"), str::to_string);
            parts.push(function_call(&id, call.name(), call.arguments()));
        }
        let index = choice.index.unwrap_or(n as u64);
        let finish = finish_reason(choice.finish_reason.as_deref());
        candidates.push(candidate(index, parts, Some(finish)));
    }
    json!({
        "candidates": candidates,
        "usageMetadata": usage_metadata(usage),
        "modelVersion": model,
        "responseId": id,
    })
}

/// Appends one SSE event (`data:` line) holding `data`.
pub fn event(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[derive(Debug, Default)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// One candidate's state in a stream.
#[derive(Debug, Default)]
struct Candidate {
    index: u64,
    /// Tool calls by OpenAI index, in the order they began.
    calls: Vec<(u64, Call)>,
    finish_reason: Option<String>,
}

/// Renders one answer's OpenAI chunks as Gemini's stream.
#[derive(Debug)]
pub struct StreamRenderer {
    id: String,
    model: String,
    candidates: Vec<Candidate>,
}

impl StreamRenderer {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            candidates: Vec::new(),
        }
    }

    fn candidate(&mut self, index: u64) -> &mut Candidate {
        let at = match self.candidates.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.candidates.push(Candidate {
                    index,
                    ..Default::default()
                });
                self.candidates.len() - 1
            }
        };
        &mut self.candidates[at]
    }

    fn wrap(&self, candidates: Vec<Value>, usage: Option<&Usage>) -> Value {
        let mut v = json!({"candidates": candidates, "modelVersion": self.model,
            "responseId": self.id});
        if let Some(u) = usage {
            v["usageMetadata"] = usage_metadata(u);
        }
        v
    }

    /// Renders one `chat.completion.chunk` (usage chunks render nothing:
    /// the billed usage comes with [`finish`](Self::finish)).
    pub fn chunk(&mut self, chunk: &Chunk, out: &mut Vec<u8>) {
        let mut rendered = Vec::new();
        for (n, choice) in chunk.choices.iter().enumerate() {
            let index = choice.index.unwrap_or(n as u64);
            let delta = &choice.delta;
            let mut parts = Vec::new();
            if let Some(thought) = delta.reasoning() {
                parts.push(json!({"text": thought, "thought": true}));
            }
            let text = delta.text();
            if !text.is_empty() {
                parts.push(json!({"text": text}));
            }
            let state = self.candidate(index);
            for call in &delta.tool_calls {
                let k = call.index.unwrap_or(0);
                let at = match state.calls.iter().position(|(i, _)| *i == k) {
                    Some(at) => at,
                    None => {
                        state.calls.push((k, Call::default()));
                        state.calls.len() - 1
                    }
                };
                let entry = &mut state.calls[at].1;
                entry.id.push_str(call.id.as_deref().unwrap_or(""));
                entry.name.push_str(call.name());
                entry.arguments.push_str(call.arguments());
            }
            if let Some(reason) = &choice.finish_reason {
                state.finish_reason = Some(reason.clone());
            }
            if !parts.is_empty() {
                rendered.push(candidate(index, parts, None));
            }
        }
        if !rendered.is_empty() {
            event(out, &self.wrap(rendered, None));
        }
    }

    /// Ends the answer: one last event with each candidate's function
    /// calls and `finishReason`, and the billed `usageMetadata`.
    pub fn finish(&mut self, usage: &Usage, out: &mut Vec<u8>) {
        if self.candidates.is_empty() {
            self.candidate(0);
        }
        let candidates = std::mem::take(&mut self.candidates)
            .into_iter()
            .map(|c| {
                let parts = c
                    .calls
                    .iter()
                    .enumerate()
                    .map(|(k, (_, call))| {
                        let id = if call.id.is_empty() {
                            format!("call_{k}")
                        } else {
                            call.id.clone()
                        };
                        function_call(&id, &call.name, &call.arguments)
                    })
                    .collect();
                candidate(
                    c.index,
                    parts,
                    Some(finish_reason(c.finish_reason.as_deref())),
                )
            })
            .collect();
        event(out, &self.wrap(candidates, Some(usage)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::answer::arbitrary::any_json;
    use proptest::prelude::*;

    fn events(sse: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(sse)
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Chunk {
        Chunk::read(&json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    }

    #[test]
    fn usage_is_in_geminis_split() {
        let u = Usage {
            prompt_tokens: 100,
            completion_tokens: 30,
            cached_tokens: 60,
            reasoning_tokens: 10,
            ..Default::default()
        };
        assert_eq!(
            usage_metadata(&u),
            json!({"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 10,
                "cachedContentTokenCount": 60, "totalTokenCount": 130})
        );
    }

    #[test]
    fn a_completion_becomes_a_response() {
        let c = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi",
            "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"},
            {"index": 1, "message": {"content": "Other"}, "finish_reason": "length"}]});
        let r = response(&Completion::read(&c), "r1", "m", &Usage::default());
        assert_eq!(
            r["candidates"][0]["content"],
            json!({"role": "model", "parts": [{"text": "think", "thought": true}, {"text": "Hi"},
                {"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}}]})
        );
        assert_eq!(r["candidates"][0]["finishReason"], "STOP");
        assert_eq!(r["candidates"][1]["index"], 1);
        assert_eq!(r["candidates"][1]["finishReason"], "MAX_TOKENS");
        assert_eq!(r["modelVersion"], "m");
        assert_eq!(r["usageMetadata"]["totalTokenCount"], 0);
        for (finish, reason) in [("stop", "STOP"), ("content_filter", "SAFETY")] {
            let c = json!({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]});
            assert_eq!(
                response(&Completion::read(&c), "i", "m", &Usage::default())["candidates"][0]["finishReason"],
                reason
            );
        }
    }

    #[test]
    fn a_stream_renders_text_then_whole_calls_then_the_finish() {
        let mut r = StreamRenderer::new("r1", "m");
        let mut out = Vec::new();
        r.chunk(
            &chunk(json!({"role": "assistant", "content": ""}), None),
            &mut out,
        );
        r.chunk(&chunk(json!({"reasoning_content": "hm"}), None), &mut out);
        r.chunk(&chunk(json!({"content": "Hel"}), None), &mut out);
        r.chunk(&chunk(json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}), None), &mut out);
        r.chunk(
            &chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
                None,
            ),
            &mut out,
        );
        r.chunk(&chunk(json!({}), Some("tool_calls")), &mut out);
        r.chunk(
            &Chunk::read(&json!({"choices": [], "usage": {"prompt_tokens": 3}})),
            &mut out,
        );
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            ..Default::default()
        };
        r.finish(&usage, &mut out);
        let events = events(&out);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            events[0]["candidates"][0]["content"]["parts"],
            json!([{"text": "hm", "thought": true}])
        );
        assert_eq!(
            events[1]["candidates"][0]["content"]["parts"],
            json!([{"text": "Hel"}])
        );
        assert!(events[1].get("usageMetadata").is_none());
        let last = &events[2];
        assert_eq!(
            last["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}}])
        );
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 5);
    }

    #[test]
    fn an_empty_stream_still_finishes() {
        let mut r = StreamRenderer::new("r1", "m");
        let mut out = Vec::new();
        r.finish(&Usage::default(), &mut out);
        let events = events(&out);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");
    }

    proptest! {
        #[test]
        fn any_chunks_render_json_events_ending_with_a_finish(chunks in prop::collection::vec(any_json(), 0..6)) {
            let mut r = StreamRenderer::new("r", "m");
            let mut out = Vec::new();
            for c in &chunks {
                r.chunk(&Chunk::read(&json!({"choices": [c]})), &mut out);
                r.chunk(&Chunk::read(c), &mut out);
            }
            r.finish(&Usage::default(), &mut out);
            let events = events(&out);
            let last = events.last().unwrap();
            prop_assert!(last["usageMetadata"].is_object());
            prop_assert!(last["candidates"][0]["finishReason"].is_string());
        }

        #[test]
        fn any_completion_renders_a_response(c in any_json()) {
            let r = response(&Completion::read(&c), "id", "m", &Usage::default());
            prop_assert!(r["candidates"].is_array());
        }
    }
}
