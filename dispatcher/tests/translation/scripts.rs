//! Answers to stream: a random answer (text, reasoning, tool calls with
//! their arguments in fragments, finish reason, usage) written in each
//! provider's stream format (Anthropic, Gemini and Cohere SSE, Bedrock's
//! event stream, OpenAI chunks), and the OpenAI answer each should become.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::responses::{
    anthropic_finish, as_float_count, bedrock_finish, cohere_finish, gemini_finish,
};
use crate::strategies::{count, json_object, name, text};

/// An OpenAI chunk stream folded into one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assembled {
    pub text: String,
    pub reasoning: String,
    /// (id, name, arguments) by tool-call index.
    pub calls: Vec<(String, String, String)>,
    pub finish: Option<String>,
    pub usage: Option<Value>,
    /// `Done`, an error message, or `None` when the stream just stopped.
    pub end: Option<Result<(), String>>,
}

/// A translated stream's usage, in OpenAI's shape (no token classes: the
/// scripts report none).
pub fn usage_json(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt.saturating_add(completion),
           "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0,
               "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0}})
}

#[derive(Debug, Clone)]
pub enum Seg {
    Text(String),
    Thinking(String),
    /// A tool call, its arguments sent in fragments cut at `cuts`.
    Call {
        id: String,
        name: String,
        args: Value,
        cuts: Vec<prop::sample::Index>,
    },
}

/// One answer, to be written in each provider's stream format.
#[derive(Debug, Clone)]
pub struct Script {
    segs: Vec<Seg>,
    reason: String,
    usage: (u64, u64),
    /// Line ending of the SSE formats.
    eol: &'static str,
    /// Whether an SSE body starts with a byte-order mark.
    bom: bool,
    /// Keep-alive comments and pings between events.
    pings: bool,
}

pub fn script() -> impl Strategy<Value = Script> {
    let seg = prop_oneof![
        4 => text().prop_map(Seg::Text),
        1 => text().prop_map(Seg::Thinking),
        2 => ("[a-z0-9_]{1,8}", name(), json_object(), prop::collection::vec(any::<prop::sample::Index>(), 0..4))
            .prop_map(|(id, name, args, cuts)| Seg::Call { id, name, args, cuts }),
    ];
    let reason = prop_oneof![
        4 => prop::sample::select(vec![
            "end_turn", "tool_use", "max_tokens", "refusal", "STOP", "MAX_TOKENS", "SAFETY",
            "COMPLETE", "TOOL_CALL", "ERROR_TOXIC", "guardrail_intervened",
        ])
        .prop_map(String::from),
        1 => text(),
    ];
    (
        prop::collection::vec(seg, 0..6),
        reason,
        (count(), count()),
        prop::sample::select(vec!["\n", "\r\n", "\r"]),
        prop::bool::weighted(0.2),
        any::<bool>(),
    )
        .prop_map(|(segs, reason, usage, eol, bom, pings)| Script {
            segs,
            reason,
            usage,
            eol,
            bom,
            pings,
        })
}

/// `s` cut into pieces at character boundaries.
fn fragments(s: &str, cuts: &[prop::sample::Index]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(chars.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in at {
        out.push(chars[from..cut].iter().collect());
        from = cut;
    }
    out.push(chars[from..].iter().collect());
    out
}

impl Script {
    pub fn text(&self) -> String {
        self.segs
            .iter()
            .filter_map(|s| match s {
                Seg::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn reasoning(&self) -> String {
        self.segs
            .iter()
            .filter_map(|s| match s {
                Seg::Thinking(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn calls(&self) -> Vec<(&str, &str, &Value, &[prop::sample::Index])> {
        self.segs
            .iter()
            .filter_map(|s| match s {
                Seg::Call {
                    id,
                    name,
                    args,
                    cuts,
                } => Some((id.as_str(), name.as_str(), args, cuts.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// SSE events as bytes (with a mark and keep-alives as drawn).
    pub fn sse(&self, events: &[(Option<&str>, String)]) -> Vec<u8> {
        let eol = self.eol;
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        for (name, data) in events {
            if self.pings {
                out.push_str(&format!(": keep-alive{eol}"));
            }
            if let Some(name) = name {
                out.push_str(&format!("event: {name}{eol}"));
            }
            out.push_str(&format!("data: {data}{eol}{eol}"));
        }
        out.into_bytes()
    }

    pub fn anthropic(&self) -> Vec<u8> {
        let (prompt, completion) = self.usage;
        let mut events = vec![(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                "role": "assistant", "model": "claude", "content": [],
                "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
        )];
        for (index, seg) in self.segs.iter().enumerate() {
            let (start, deltas) = match seg {
                Seg::Text(t) => (
                    json!({"type": "text", "text": ""}),
                    vec![json!({"type": "text_delta", "text": t})],
                ),
                Seg::Thinking(t) => (
                    json!({"type": "thinking", "thinking": ""}),
                    vec![json!({"type": "thinking_delta", "thinking": t})],
                ),
                Seg::Call {
                    id,
                    name,
                    args,
                    cuts,
                } => (
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    fragments(&args.to_string(), cuts)
                        .into_iter()
                        .map(|f| json!({"type": "input_json_delta", "partial_json": f}))
                        .collect(),
                ),
            };
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": start}),
            ));
            if self.pings {
                events.push(("ping", json!({"type": "ping"})));
            }
            for delta in deltas {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": delta}),
                ));
            }
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        events.push((
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": self.reason,
                "stop_sequence": null}, "usage": {"output_tokens": completion}}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        let events: Vec<(Option<&str>, String)> = events
            .into_iter()
            .map(|(n, d)| (Some(n), d.to_string()))
            .collect();
        self.sse(&events)
    }

    pub fn anthropic_answer(&self) -> Assembled {
        Assembled {
            text: self.text(),
            reasoning: self.reasoning(),
            calls: self
                .calls()
                .into_iter()
                .map(|(id, name, args, _)| (id.into(), name.into(), args.to_string()))
                .collect(),
            finish: Some(anthropic_finish(Some(&self.reason)).into()),
            usage: Some(usage_json(self.usage.0, self.usage.1)),
            end: Some(Ok(())),
        }
    }

    pub fn gemini(&self) -> Vec<u8> {
        let mut events: Vec<(Option<&str>, String)> = self
            .segs
            .iter()
            .map(|seg| {
                let part = match seg {
                    Seg::Text(t) => json!({"text": t}),
                    Seg::Thinking(t) => json!({"text": t, "thought": true}),
                    Seg::Call { name, args, .. } => {
                        json!({"functionCall": {"name": name, "args": args}})
                    }
                };
                let data = json!({"candidates": [{"content": {"role": "model", "parts": [part]},
                    "index": 0}], "modelVersion": "gemini-x"});
                (None, data.to_string())
            })
            .collect();
        let (prompt, completion) = self.usage;
        events.push((
            None,
            json!({"candidates": [{"content": {"role": "model", "parts": []},
                "finishReason": self.reason, "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion},
                "modelVersion": "gemini-x"})
            .to_string(),
        ));
        self.sse(&events)
    }

    pub fn gemini_answer(&self) -> Assembled {
        let calls: Vec<(String, String, String)> = self
            .calls()
            .into_iter()
            .enumerate()
            .map(|(i, (_, name, args, _))| (format!("call_{i}"), name.into(), args.to_string()))
            .collect();
        Assembled {
            text: self.text(),
            reasoning: self.reasoning(),
            finish: Some(gemini_finish(Some(&self.reason), !calls.is_empty()).into()),
            calls,
            usage: Some(usage_json(self.usage.0, self.usage.1)),
            end: Some(Ok(())),
        }
    }

    /// Cohere has no reasoning events: thinking segments are left out.
    pub fn cohere(&self) -> Vec<u8> {
        let mut events = vec![(
            "message-start",
            json!({"type": "message-start", "id": "c1",
                "delta": {"message": {"role": "assistant", "content": [], "tool_calls": []}}}),
        )];
        for (index, (id, name, args, cuts)) in self.calls().into_iter().enumerate() {
            events.push((
                "tool-call-start",
                json!({"type": "tool-call-start", "index": index,
                "delta": {"message": {"tool_calls": {"id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}}}}),
            ));
            for f in fragments(&args.to_string(), cuts) {
                events.push((
                    "tool-call-delta",
                    json!({"type": "tool-call-delta", "index": index,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": f}}}}}),
                ));
            }
            events.push((
                "tool-call-end",
                json!({"type": "tool-call-end", "index": index}),
            ));
        }
        events.push((
            "content-start",
            json!({"type": "content-start", "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
        ));
        for seg in &self.segs {
            if let Seg::Text(t) = seg {
                events.push((
                    "content-delta",
                    json!({"type": "content-delta", "index": 0,
                        "delta": {"message": {"content": {"text": t}}}}),
                ));
            }
        }
        events.push(("content-end", json!({"type": "content-end", "index": 0})));
        let (prompt, completion) = self.usage;
        events.push((
            "message-end",
            json!({"type": "message-end", "delta": {
            "finish_reason": self.reason,
            "usage": {"billed_units": {"input_tokens": prompt, "output_tokens": completion},
                      "tokens": {"input_tokens": prompt, "output_tokens": completion}}}}),
        ));
        let events: Vec<(Option<&str>, String)> = events
            .into_iter()
            .map(|(n, d)| (Some(n), d.to_string()))
            .collect();
        self.sse(&events)
    }

    pub fn cohere_answer(&self) -> Assembled {
        Assembled {
            text: self.text(),
            reasoning: String::new(),
            calls: self
                .calls()
                .into_iter()
                .map(|(id, name, args, _)| (id.into(), name.into(), args.to_string()))
                .collect(),
            finish: Some(cohere_finish(Some(&self.reason)).into()),
            usage: Some(usage_json(
                as_float_count(self.usage.0),
                as_float_count(self.usage.1),
            )),
            end: Some(Ok(())),
        }
    }

    /// The event-stream frames, and the offset where each ends.
    pub fn bedrock(&self) -> (Vec<u8>, Vec<usize>) {
        let mut frames = vec![frame("messageStart", json!({"role": "assistant"}))];
        for (index, seg) in self.segs.iter().enumerate() {
            match seg {
                Seg::Text(t) => frames.push(frame(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"text": t}}),
                )),
                Seg::Thinking(t) => frames.push(frame(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index,
                        "delta": {"reasoningContent": {"text": t}}}),
                )),
                Seg::Call {
                    id,
                    name,
                    args,
                    cuts,
                } => {
                    frames.push(frame(
                        "contentBlockStart",
                        json!({"contentBlockIndex": index,
                            "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                    ));
                    for f in fragments(&args.to_string(), cuts) {
                        frames.push(frame(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": index,
                                "delta": {"toolUse": {"input": f}}}),
                        ));
                    }
                }
            }
            frames.push(frame(
                "contentBlockStop",
                json!({"contentBlockIndex": index}),
            ));
        }
        frames.push(frame("messageStop", json!({"stopReason": self.reason})));
        let (prompt, completion) = self.usage;
        frames.push(frame(
            "metadata",
            json!({"usage": {"inputTokens": prompt, "outputTokens": completion,
                "totalTokens": 0}, "metrics": {"latencyMs": 1}}),
        ));
        let mut ends = Vec::new();
        let mut bytes = Vec::new();
        for f in frames {
            bytes.extend(f);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    pub fn bedrock_answer(&self) -> Assembled {
        Assembled {
            text: self.text(),
            reasoning: self.reasoning(),
            calls: self
                .calls()
                .into_iter()
                .map(|(id, name, args, _)| (id.into(), name.into(), args.to_string()))
                .collect(),
            finish: Some(bedrock_finish(Some(&self.reason)).into()),
            usage: Some(usage_json(self.usage.0, self.usage.1)),
            end: Some(Ok(())),
        }
    }

    /// OpenAI chunk payloads, each on one `data:` line, then `[DONE]`.
    pub fn openai(&self) -> (Vec<u8>, Vec<String>) {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        let mut payloads = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        let mut calls = 0;
        for seg in &self.segs {
            payloads.push(match seg {
                Seg::Text(t) => chunk(json!({"content": t}), Value::Null),
                Seg::Thinking(t) => chunk(json!({"reasoning_content": t}), Value::Null),
                Seg::Call { id, name, args, .. } => {
                    calls += 1;
                    chunk(
                        json!({"tool_calls": [{"index": calls - 1, "id": id, "type": "function",
                            "function": {"name": name, "arguments": args.to_string()}}]}),
                        Value::Null,
                    )
                }
            });
        }
        payloads.push(chunk(json!({}), json!(self.reason)));
        let events: Vec<(Option<&str>, String)> =
            payloads.iter().map(|p| (None, p.clone())).collect();
        let mut bytes = self.sse(&events);
        bytes.extend(format!("data: [DONE]{0}{0}", self.eol).into_bytes());
        (bytes, payloads)
    }
}

pub fn frame(event: &str, payload: Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}
