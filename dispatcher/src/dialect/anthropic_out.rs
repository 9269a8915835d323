//! OpenAI chat answers rendered as Anthropic Messages answers: a
//! `chat.completion` as a `message`, and `chat.completion.chunk`s as
//! Anthropic's SSE event sequence.
//!
//! Invariants:
//! - Every streamed event has its `event:` line (the anthropic SDK ignores
//!   one without), and a stream is always `message_start`, `ping`, then
//!   blocks each as `content_block_start`, deltas, `content_block_stop`,
//!   then `message_delta` (stop reason and usage) and `message_stop`.
//! - Blocks never interleave: thinking and text stream as they come (a
//!   switch closes the open block); a tool call is one `tool_use` block
//!   sent whole (one `input_json_delta`) once its arguments are complete,
//!   since OpenAI may interleave the arguments of parallel calls.
//! - Usage is what aigw billed, in Anthropic's split: `input_tokens`
//!   excludes cache reads and writes, which have their own fields.
//! - No input makes these functions panic.

use aigw_events::Usage;
use serde_json::{Value, json};

use crate::chat::answer::{Chunk, Completion, Turn};

/// Usage in Anthropic's shape, from aigw's token classes.
pub fn usage_json(u: &Usage) -> Value {
    let writes = u
        .cache_write_5m_tokens
        .saturating_add(u.cache_write_1h_tokens);
    let input = u
        .prompt_tokens
        .saturating_sub(u.cached_tokens)
        .saturating_sub(writes);
    json!({
        "input_tokens": input,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": writes,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
    })
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A tool call's arguments as Anthropic's `input` object (a non-object is
/// kept whole under `arguments`, never dropped).
fn input_of(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"arguments": arguments}),
    }
}

/// A `chat.completion` as an Anthropic `message` with id `id`, naming the
/// caller's `model`, with the `usage` aigw billed.
pub fn message(completion: &Completion, id: &str, model: &str, usage: &Usage) -> Value {
    let choice = completion.choices.first();
    let msg = choice.map(|c| &c.message);
    let mut content = Vec::new();
    if let Some(thinking) = msg.and_then(Turn::reasoning) {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    let text = msg.map(Turn::text).unwrap_or_default();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = msg.map(|m| m.tool_calls.as_slice()).unwrap_or_default();
    for (n, call) in calls.iter().enumerate() {
        let id = call
            .id()
            .map_or_else(|| format!("toolu_{n}"), str::to_string);
        content.push(json!({"type": "tool_use", "id": id, "name": call.name(),
            "input": input_of(call.arguments())}));
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref());
    let stop = if finish.is_none() && !calls.is_empty() {
        "tool_use"
    } else {
        stop_reason(finish)
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage_json(usage),
    })
}

/// Appends one SSE event, with its `event:` line.
pub fn event(out: &mut Vec<u8>, data: &Value) {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("error");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

#[derive(Debug, Default)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// Renders one answer's OpenAI chunks as Anthropic's event sequence.
#[derive(Debug)]
pub struct StreamRenderer {
    id: String,
    model: String,
    started: bool,
    open: Option<Open>,
    /// The next content block's index.
    index: u64,
    /// Tool calls by OpenAI index, in the order they began.
    calls: Vec<(u64, Call)>,
    finish_reason: Option<String>,
}

impl StreamRenderer {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            started: false,
            open: None,
            index: 0,
            calls: Vec::new(),
            finish_reason: None,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        event(
            out,
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
        event(out, &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            event(
                out,
                &json!({"type": "content_block_stop", "index": self.index}),
            );
            self.index += 1;
        }
    }

    fn delta(&mut self, kind: Open, text: &str, out: &mut Vec<u8>) {
        if self.open != Some(kind) {
            self.close(out);
            let block = match kind {
                Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                Open::Text => json!({"type": "text", "text": ""}),
            };
            event(
                out,
                &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
            );
            self.open = Some(kind);
        }
        let delta = match kind {
            Open::Thinking => json!({"type": "thinking_delta", "thinking": text}),
            Open::Text => json!({"type": "text_delta", "text": text}),
        };
        event(
            out,
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        );
    }

    /// Renders one `chat.completion.chunk` (usage chunks render nothing:
    /// the billed usage comes with [`finish`](Self::finish)).
    pub fn chunk(&mut self, chunk: &Chunk, out: &mut Vec<u8>) {
        self.start(out);
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        let delta = &choice.delta;
        if let Some(thinking) = delta.reasoning() {
            self.delta(Open::Thinking, thinking, out);
        }
        let text = delta.text();
        if !text.is_empty() {
            self.delta(Open::Text, &text, out);
        }
        for call in &delta.tool_calls {
            let index = call.index.unwrap_or(0);
            let at = match self.calls.iter().position(|(i, _)| *i == index) {
                Some(at) => at,
                None => {
                    self.calls.push((index, Call::default()));
                    self.calls.len() - 1
                }
            };
            let entry = &mut self.calls[at].1;
            entry.id.push_str(call.id.as_deref().unwrap_or(""));
            entry.name.push_str(call.name());
            entry.arguments.push_str(call.arguments());
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
    }

    /// Ends the answer: the open block, the tool calls, then `message_delta`
    /// with the stop reason and the billed `usage`, and `message_stop`.
    pub fn finish(&mut self, usage: &Usage, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let calls = std::mem::take(&mut self.calls);
        let had_calls = !calls.is_empty();
        for (n, (_, call)) in calls.into_iter().enumerate() {
            let id = if call.id.is_empty() {
                format!("toolu_{n}")
            } else {
                call.id
            };
            event(
                out,
                &json!({"type": "content_block_start", "index": self.index,
                    "content_block": {"type": "tool_use", "id": id, "name": call.name, "input": {}}}),
            );
            let input = input_of(&call.arguments);
            if input.as_object().is_some_and(|o| !o.is_empty()) {
                event(
                    out,
                    &json!({"type": "content_block_delta", "index": self.index,
                        "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
                );
            }
            event(
                out,
                &json!({"type": "content_block_stop", "index": self.index}),
            );
            self.index += 1;
        }
        let stop = match self.finish_reason.as_deref() {
            None if had_calls => "tool_use",
            other => stop_reason(other),
        };
        event(
            out,
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": usage_json(usage)}),
        );
        event(out, &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::answer::arbitrary::any_json;
    use proptest::prelude::*;

    fn names(sse: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(sse)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
                let data: Value =
                    serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                        .unwrap();
                assert_eq!(data["type"], name, "the event line names the data's type");
                name.to_string()
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Chunk {
        Chunk::read(&json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    }

    #[test]
    fn usage_splits_the_cache_classes_out_of_the_input() {
        let u = Usage {
            prompt_tokens: 100,
            completion_tokens: 7,
            cached_tokens: 60,
            cache_write_5m_tokens: 10,
            cache_write_1h_tokens: 5,
            ..Default::default()
        };
        assert_eq!(
            usage_json(&u),
            json!({"input_tokens": 25, "output_tokens": 7, "cache_read_input_tokens": 60,
                "cache_creation_input_tokens": 15,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 5}})
        );
    }

    #[test]
    fn a_completion_becomes_a_message() {
        let c = json!({"choices": [{"message": {"role": "assistant", "content": "Hi",
            "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}]});
        let m = message(&Completion::read(&c), "msg_1", "m", &Usage::default());
        assert_eq!(
            m["content"][0],
            json!({"type": "thinking", "thinking": "think", "signature": ""})
        );
        assert_eq!(m["content"][1], json!({"type": "text", "text": "Hi"}));
        assert_eq!(
            m["content"][2],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(m["stop_reason"], "tool_use");
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("content_filter", "refusal"),
        ] {
            let c = json!({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]});
            assert_eq!(
                message(&Completion::read(&c), "i", "m", &Usage::default())["stop_reason"],
                stop
            );
        }
    }

    #[test]
    fn a_stream_renders_anthropics_event_sequence() {
        let mut r = StreamRenderer::new("msg_1", "m");
        let mut out = Vec::new();
        r.chunk(
            &chunk(json!({"role": "assistant", "content": ""}), None),
            &mut out,
        );
        r.chunk(&chunk(json!({"reasoning_content": "hm"}), None), &mut out);
        r.chunk(&chunk(json!({"content": "Hel"}), None), &mut out);
        r.chunk(&chunk(json!({"content": "lo"}), None), &mut out);
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
        assert_eq!(
            names(&out),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""partial_json":"{\"a\":1}""#), "{text}");
        assert!(text.contains(r#""stop_reason":"tool_use""#));
        assert!(text.contains(r#""output_tokens":2"#));
    }

    #[test]
    fn an_empty_stream_is_still_a_whole_message() {
        let mut r = StreamRenderer::new("msg_1", "m");
        let mut out = Vec::new();
        r.finish(&Usage::default(), &mut out);
        assert_eq!(
            names(&out),
            ["message_start", "ping", "message_delta", "message_stop"]
        );
    }

    proptest! {
        #[test]
        fn any_chunks_render_a_well_formed_sequence(chunks in prop::collection::vec(any_json(), 0..6)) {
            let mut r = StreamRenderer::new("msg", "m");
            let mut out = Vec::new();
            for c in &chunks {
                r.chunk(&Chunk::read(&json!({"choices": [c]})), &mut out);
                r.chunk(&Chunk::read(c), &mut out);
            }
            r.finish(&Usage::default(), &mut out);
            let names = names(&out);
            prop_assert_eq!(&names[..2], ["message_start", "ping"]);
            prop_assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
            // Blocks open and close in turn.
            let mut open = false;
            for n in &names[2..names.len() - 2] {
                match n.as_str() {
                    "content_block_start" => { prop_assert!(!open); open = true; }
                    "content_block_delta" => prop_assert!(open),
                    "content_block_stop" => { prop_assert!(open); open = false; }
                    other => prop_assert!(false, "unexpected {}", other),
                }
            }
            prop_assert!(!open);
        }

        #[test]
        fn any_completion_renders_a_message(c in any_json()) {
            let m = message(&Completion::read(&c), "id", "m", &Usage::default());
            prop_assert!(m["content"].is_array());
            prop_assert!(m["stop_reason"].is_string());
        }
    }
}
