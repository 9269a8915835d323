//! Bedrock Converse answers, typed, as the Bedrock adapter reads them: a
//! whole Converse response, the payloads of ConverseStream events, and the
//! usage both carry. Only the fields aigw interprets are here.
//!
//! Invariants:
//! - Reading never fails and never panics (an upstream's answer is outside
//!   input): a field missing or of the wrong type reads as absent, and the
//!   rest still reads (`crate::chat`'s lenient readers).

use aigw_events::Usage;
use serde::Deserialize;
use serde_json::Value;

use crate::chat::{lenient, list_opt, object, object_opt, read as read_object};
use crate::convert;

/// A Converse response.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    #[serde(default, deserialize_with = "object")]
    output: Output,
    #[serde(default, deserialize_with = "lenient")]
    pub stop_reason: Option<String>,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct Output {
    #[serde(default, deserialize_with = "object")]
    message: OutputMessage,
}

#[derive(Debug, Default, Deserialize)]
struct OutputMessage {
    /// `None` when the answer has no content list at all.
    #[serde(default, deserialize_with = "list_opt")]
    content: Option<Vec<Block>>,
}

/// A content block of a whole answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "object")]
    reasoning_content: ReasoningContent,
    #[serde(default, deserialize_with = "object_opt")]
    pub tool_use: Option<ToolUse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReasoningContent {
    #[serde(default, deserialize_with = "object")]
    reasoning_text: ReasoningText,
    /// A stream delta's reasoning text.
    #[serde(default, deserialize_with = "lenient")]
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ReasoningText {
    #[serde(default, deserialize_with = "lenient")]
    text: Option<String>,
}

/// A tool call (whole, or a stream's `contentBlockStart`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    #[serde(default, deserialize_with = "lenient")]
    pub tool_use_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
}

/// The payload of one ConverseStream event.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default, deserialize_with = "lenient")]
    pub content_block_index: Option<u64>,
    #[serde(default, deserialize_with = "object")]
    start: Start,
    #[serde(default, deserialize_with = "object")]
    pub delta: Delta,
    #[serde(default, deserialize_with = "lenient")]
    pub stop_reason: Option<String>,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage: Option<WireUsage>,
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
    #[serde(default, rename = "Message", deserialize_with = "lenient")]
    message_capitalised: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    #[serde(default, deserialize_with = "object_opt")]
    tool_use: Option<ToolUse>,
}

/// A `contentBlockDelta`'s delta.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "object")]
    reasoning_content: ReasoningContent,
    #[serde(default, deserialize_with = "object")]
    tool_use: ToolUseDelta,
}

#[derive(Debug, Default, Deserialize)]
struct ToolUseDelta {
    #[serde(default, deserialize_with = "lenient")]
    input: Option<String>,
}

/// Converse usage.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireUsage {
    #[serde(default, deserialize_with = "lenient")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_write_input_tokens: Option<u64>,
}

impl Response {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// The content blocks; `None` when the answer has no content list.
    pub fn content(&mut self) -> Option<Vec<Block>> {
        self.output.message.content.take()
    }
}

impl Block {
    /// The reasoning text of a whole answer's block.
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content.reasoning_text.text.as_deref()
    }
}

impl Event {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// `contentBlockStart`'s tool call, if it starts one.
    pub fn started_tool(&self) -> Option<&ToolUse> {
        self.start.tool_use.as_ref()
    }

    /// An exception's message (`message` or `Message`).
    pub fn message(&self) -> Option<&str> {
        self.message
            .as_deref()
            .or(self.message_capitalised.as_deref())
    }
}

impl Delta {
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content.text.as_deref()
    }

    pub fn tool_input(&self) -> Option<&str> {
        self.tool_use.input.as_deref()
    }
}

impl WireUsage {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// aigw's token classes: `inputTokens` excludes cache reads and
    /// writes, so prompt tokens are the three together, with the reads and
    /// writes as their classes (writes as 5-minute ones: Converse does not
    /// tell their lifetime).
    pub fn to_usage(&self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_write_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: convert::token_sum([self.input_tokens.unwrap_or(0), read, written]),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_5m_tokens: written,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_and_events_read_their_fields() {
        let mut r = Response::read(&json!({"output": {"message": {"content": [
            {"text": "hi"}, {"reasoningContent": {"reasoningText": {"text": "hm"}}},
            {"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}}, "junk"]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 3, "cacheReadInputTokens": 2}}));
        let blocks = r.content().unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[0].text.as_deref(), Some("hi"));
        assert_eq!(blocks[1].reasoning(), Some("hm"));
        assert_eq!(
            blocks[2].tool_use.as_ref().unwrap().input,
            Some(json!({"a": 1}))
        );
        assert_eq!(r.usage.unwrap().to_usage().prompt_tokens, 5);
        assert!(
            Response::read(&json!({"output": {}})).content().is_none(),
            "no list, no content"
        );
        let e = Event::read(&json!({"contentBlockIndex": 1,
            "delta": {"toolUse": {"input": "{\"a\""}}, "Message": "boom"}));
        assert_eq!(e.content_block_index, Some(1));
        assert_eq!(e.delta.tool_input(), Some("{\"a\""));
        assert_eq!(e.message(), Some("boom"));
    }
}
