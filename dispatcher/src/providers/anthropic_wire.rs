//! Anthropic's answers, typed, as the Anthropic adapter reads them: a
//! whole `message`, the SSE events of a streamed one, and the usage both
//! carry. Only the fields aigw interprets are here.
//!
//! Invariants:
//! - Reading never fails and never panics (an upstream's answer is outside
//!   input): a field missing or of the wrong type reads as absent, and the
//!   rest still reads (`crate::chat`'s lenient readers).
//! - A count that is not a non-negative integer reads as 0, as it always
//!   has: usage is billed from what is readable, never refused.

use aigw_events::Usage;
use serde::Deserialize;
use serde_json::Value;

use crate::chat::{lenient, list_opt, object, object_opt, read as read_object};
use crate::convert;

/// A whole `message`.
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub model: Option<String>,
    /// `None` when the answer has no content list at all.
    #[serde(default, deserialize_with = "list_opt")]
    pub content: Option<Vec<Block>>,
    #[serde(default, deserialize_with = "lenient")]
    pub stop_reason: Option<String>,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage: Option<WireUsage>,
    #[serde(default, deserialize_with = "object")]
    pub error: ErrorBody,
}

/// One content block (whole, or as a stream's `content_block_start`).
#[derive(Debug, Default, Deserialize)]
pub struct Block {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub thinking: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    /// A tool call's input, as sent.
    #[serde(default)]
    pub input: Option<Value>,
}

/// One SSE event of a streamed message.
#[derive(Debug, Default, Deserialize)]
pub struct Event {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    /// `message_start`'s message.
    #[serde(default, deserialize_with = "object")]
    pub message: Message,
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<u64>,
    #[serde(default, deserialize_with = "object")]
    pub content_block: Block,
    #[serde(default, deserialize_with = "object")]
    pub delta: Delta,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage: Option<WireUsage>,
    #[serde(default, deserialize_with = "object")]
    pub error: ErrorBody,
}

/// A `content_block_delta`'s or `message_delta`'s delta.
#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub thinking: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub partial_json: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub stop_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
}

/// Anthropic's usage object.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default, deserialize_with = "lenient")]
    pub input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "object_opt")]
    cache_creation: Option<CacheCreation>,
}

#[derive(Debug, Default, Deserialize)]
struct CacheCreation {
    #[serde(default, deserialize_with = "lenient")]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    ephemeral_1h_input_tokens: Option<u64>,
}

impl Message {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }
}

impl Event {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }
}

impl WireUsage {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// aigw's token classes: Anthropic's `input_tokens` excludes cache
    /// reads and writes, so prompt tokens are the three together, with the
    /// reads and writes as their classes. Writes are split by lifetime when
    /// `cache_creation` tells it (all 5-minute otherwise). Thinking is not
    /// reported apart from output.
    pub fn to_usage(&self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        let (write_5m, write_1h) = match &self.cache_creation {
            Some(c) => {
                let hour = c.ephemeral_1h_input_tokens.unwrap_or(0);
                // Writes the split does not account for are 5-minute ones.
                let five = c
                    .ephemeral_5m_input_tokens
                    .unwrap_or(0)
                    .max(written.saturating_sub(hour));
                (five, hour)
            }
            None => (written, 0),
        };
        Usage {
            prompt_tokens: convert::token_sum([
                self.input_tokens.unwrap_or(0),
                read,
                write_5m.saturating_add(write_1h).max(written),
            ]),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_5m_tokens: write_5m,
            cache_write_1h_tokens: write_1h,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_reads_every_class_and_tolerates_junk() {
        let u = WireUsage::read(&json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 15}}))
        .to_usage();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (140, 5, 100)
        );
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (15, 15));
        let junk = WireUsage::read(&json!({"input_tokens": -3, "output_tokens": "7",
            "cache_creation": [1]}))
        .to_usage();
        assert_eq!(junk, Usage::default());
    }

    #[test]
    fn a_message_and_events_read_their_fields() {
        let m = Message::read(&json!({"type": "message", "id": "msg_1", "content": [
            {"type": "text", "text": "hi"}, 7, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1}}));
        let blocks = m.content.unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].text.as_deref(), Some("hi"));
        assert_eq!(blocks[1].kind, None);
        assert_eq!(blocks[2].input, Some(json!({"a": 1})));
        assert!(
            Message::read(&json!({"content": "x"})).content.is_none(),
            "no list, no content"
        );
        let e = Event::read(&json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}));
        assert_eq!(
            (e.index, e.delta.partial_json.as_deref()),
            (Some(2), Some("{\"a\""))
        );
        assert!(Event::read(&json!(["x"])).kind.is_none());
    }
}
