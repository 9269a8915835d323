//! Cohere v2 chat answers, typed, as the Cohere adapter reads them: a
//! whole response, the SSE events of a streamed one, and the usage both
//! carry. Only the fields aigw interprets are here.
//!
//! Invariants:
//! - Reading never fails and never panics (an upstream's answer is outside
//!   input): a field missing or of the wrong type reads as absent, and the
//!   rest still reads (`crate::chat`'s lenient readers).
//! - Counts may come as floats (`12.0`); a negative or non-numeric one
//!   reads as 0. Billed units win over raw token counts.

use aigw_events::Usage;
use serde::Deserialize;
use serde_json::Value;

use crate::chat::{items, lenient, object, object_opt, read as read_object};

/// A whole v2 chat response.
#[derive(Debug, Default, Deserialize)]
pub struct Response {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    /// `None` when the answer has no message object.
    #[serde(default, deserialize_with = "object_opt")]
    pub message: Option<Message>,
    #[serde(default, deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage: Option<WireUsage>,
}

/// The assistant message (whole, or a stream delta's).
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    /// A whole message's content parts (a delta's is one object).
    #[serde(default, deserialize_with = "items")]
    content: Vec<ContentPart>,
    #[serde(default, deserialize_with = "items")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Default, Deserialize)]
struct ContentPart {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    text: Option<String>,
}

/// A tool call (OpenAI's shape: `id`, `function.name`, `function.arguments`).
#[derive(Debug, Default, Deserialize)]
pub struct ToolCall {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "object")]
    pub function: Function,
}

#[derive(Debug, Default, Deserialize)]
pub struct Function {
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    /// Usually JSON text; kept as sent.
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// One SSE event of a streamed answer.
#[derive(Debug, Default, Deserialize)]
pub struct Event {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<u64>,
    #[serde(default, deserialize_with = "object")]
    pub delta: Delta,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    #[serde(default, deserialize_with = "object")]
    message: DeltaMessage,
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaMessage {
    #[serde(default, deserialize_with = "object")]
    content: ContentPart,
    /// One call (a stream sends them one at a time).
    #[serde(default, deserialize_with = "object")]
    tool_calls: ToolCall,
}

/// Cohere's usage: billed units and raw token counts.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default, deserialize_with = "object")]
    billed_units: Counts,
    #[serde(default, deserialize_with = "object")]
    tokens: Counts,
}

#[derive(Debug, Default, Deserialize)]
struct Counts {
    #[serde(default, deserialize_with = "lenient")]
    input_tokens: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    output_tokens: Option<f64>,
}

impl Response {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }
}

impl Message {
    /// The text parts joined.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter(|c| c.kind.as_deref() == Some("text"))
            .filter_map(|c| c.text.as_deref())
            .collect()
    }
}

impl Event {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }
}

impl Delta {
    /// A `content-delta`'s text.
    pub fn text(&self) -> Option<&str> {
        self.message.content.text.as_deref()
    }

    /// A `tool-call-start`'s or `tool-call-delta`'s call.
    pub fn tool_call(&self) -> &ToolCall {
        &self.message.tool_calls
    }
}

impl ToolCall {
    /// The arguments as JSON text, if they came as text.
    pub fn arguments_text(&self) -> Option<&str> {
        self.function.arguments.as_ref().and_then(Value::as_str)
    }
}

impl WireUsage {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// Billed units when present (what is paid for), else raw counts.
    pub fn to_usage(&self) -> Usage {
        let pick =
            |billed: Option<f64>, raw: Option<f64>| billed.or(raw).map_or(0, |n| n.max(0.0) as u64);
        Usage {
            prompt_tokens: pick(self.billed_units.input_tokens, self.tokens.input_tokens),
            completion_tokens: pick(self.billed_units.output_tokens, self.tokens.output_tokens),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_reads_text_calls_and_billed_usage() {
        let r = Response::read(&json!({"id": "r1", "finish_reason": "TOOL_CALL",
            "message": {"content": [{"type": "text", "text": "a"}, {"type": "thinking", "text": "x"},
                {"type": "text", "text": "b"}],
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            "usage": {"billed_units": {"input_tokens": 12.0, "output_tokens": 3},
                "tokens": {"input_tokens": 99, "output_tokens": 99}}}));
        let m = r.message.as_ref().unwrap();
        assert_eq!(m.text(), "ab");
        assert_eq!(m.tool_calls[0].arguments_text(), Some("{}"));
        let u = r.usage.unwrap().to_usage();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 3));
        let raw = WireUsage::read(&json!({"tokens": {"input_tokens": 5, "output_tokens": -2}}));
        assert_eq!(
            (
                raw.to_usage().prompt_tokens,
                raw.to_usage().completion_tokens
            ),
            (5, 0)
        );
        assert!(Response::read(&json!({"message": "x"})).message.is_none());
    }

    #[test]
    fn stream_events_read_their_deltas() {
        let e = Event::read(
            &json!({"type": "tool-call-start", "index": 1, "delta": {"message":
            {"tool_calls": {"id": "c", "function": {"name": "f", "arguments": ""}}}}}),
        );
        assert_eq!(
            (e.kind.as_deref(), e.index),
            (Some("tool-call-start"), Some(1))
        );
        assert_eq!(e.delta.tool_call().function.name.as_deref(), Some("f"));
        let e = Event::read(&json!({"type": "content-delta",
            "delta": {"message": {"content": {"text": "hi"}}}}));
        assert_eq!(e.delta.text(), Some("hi"));
    }
}
