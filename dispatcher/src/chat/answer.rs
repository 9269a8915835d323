//! The internal answer, typed: an OpenAI `chat.completion` and its
//! `chat.completion.chunk`s as the dialect renderers read them. Every
//! adapter answers in this shape; `anthropic_out`, `gemini_out` and
//! `responses_out` render it in the caller's dialect from these structs,
//! never from raw JSON.
//!
//! Invariants:
//! - Reading never fails and never panics: an upstream's answer is outside
//!   input, so a field that is missing or of the wrong type reads as empty
//!   (`None`, `""`, no items) and the rest of the answer still renders; one
//!   bad item of a list is read as an empty item, never drops its siblings.
//! - Only the fields a renderer interprets are read. Usage is not: the
//!   renderers show what aigw billed, read elsewhere.
//! - A completion's `message` and a chunk's `delta` are one type
//!   ([`Turn`]): the same parts, whole or in pieces.

use serde::Deserialize;
use serde_json::Value;

use super::{Content, items, lenient, object};

/// A whole `chat.completion`.
#[derive(Debug, Default, Deserialize)]
pub struct Completion {
    #[serde(default, deserialize_with = "items")]
    pub choices: Vec<Choice>,
}

/// One choice of a completion.
#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<u64>,
    #[serde(default, deserialize_with = "object")]
    pub message: Turn,
    #[serde(default, deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
}

/// One `chat.completion.chunk` of a stream.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk {
    #[serde(default, deserialize_with = "items")]
    pub choices: Vec<ChunkChoice>,
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice {
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<u64>,
    #[serde(default, deserialize_with = "object")]
    pub delta: Turn,
    #[serde(default, deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
}

/// The assistant's turn (a `message`) or a piece of it (a `delta`).
#[derive(Debug, Default, Deserialize)]
pub struct Turn {
    #[serde(default, deserialize_with = "lenient")]
    content: Option<Content>,
    /// DeepSeek, Qwen, vLLM and aigw's own adapters.
    #[serde(default, deserialize_with = "lenient")]
    reasoning_content: Option<String>,
    /// OpenRouter and some vLLM builds.
    #[serde(default, deserialize_with = "lenient")]
    reasoning: Option<String>,
    #[serde(default, deserialize_with = "items")]
    pub tool_calls: Vec<ToolCall>,
}

/// A tool call, whole (in a `message`) or in pieces (in a `delta`, where
/// `index` says which call a piece continues).
#[derive(Debug, Default, Deserialize)]
pub struct ToolCall {
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "object")]
    pub function: FunctionCall,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionCall {
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    /// JSON text as the upstream wrote it (maybe invalid, maybe partial).
    #[serde(default, deserialize_with = "lenient")]
    pub arguments: Option<String>,
}

impl Completion {
    /// Reads a completion; see the module's invariants.
    pub fn read(v: &Value) -> Self {
        super::read(v)
    }
}

impl Chunk {
    /// Reads a chunk; see the module's invariants.
    pub fn read(v: &Value) -> Self {
        super::read(v)
    }
}

impl Turn {
    /// The text: the string, or the parts' texts joined.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }

    /// The reasoning text, if any and not empty.
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|s| !s.is_empty())
    }
}

impl ToolCall {
    /// The upstream's id for the call; `None` when it gave none or an
    /// empty one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref().filter(|s| !s.is_empty())
    }

    pub fn name(&self) -> &str {
        self.function.name.as_deref().unwrap_or("")
    }

    pub fn arguments(&self) -> &str {
        self.function.arguments.as_deref().unwrap_or("")
    }
}

/// Arbitrary answer-shaped JSON for the property tests of the readers
/// and of the renderers in `crate::dialect`.
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// JSON up to 5 deep whose object keys are the answer's own field
    /// names, with values of any type (strings include JSON punctuation,
    /// as tool arguments do).
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z{}\":]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "choices",
                            "message",
                            "delta",
                            "content",
                            "text",
                            "tool_calls",
                            "index",
                            "id",
                            "function",
                            "name",
                            "arguments",
                            "finish_reason",
                            "reasoning_content",
                            "reasoning",
                        ]),
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::answer::arbitrary::any_json;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_completion_reads_its_parts() {
        let c = Completion::read(&json!({"choices": [{"index": 2, "message": {
            "content": [{"type": "text", "text": "He"}, 7, {"text": "llo"}],
            "reasoning": "hm",
            "tool_calls": [{"id": "", "function": {"name": "f", "arguments": "{}"}}, "junk"]},
            "finish_reason": "tool_calls"}]}));
        let choice = &c.choices[0];
        assert_eq!(choice.index, Some(2));
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(choice.message.text(), "Hello");
        assert_eq!(choice.message.reasoning(), Some("hm"));
        let calls = &choice.message.tool_calls;
        assert_eq!(calls.len(), 2, "a bad item is an empty item, not dropped");
        assert_eq!(
            (calls[0].id(), calls[0].name(), calls[0].arguments()),
            (None, "f", "{}")
        );
        assert_eq!((calls[1].id(), calls[1].name()), (None, ""));
    }

    #[test]
    fn a_field_of_the_wrong_type_reads_as_empty_and_spares_the_rest() {
        let c = Chunk::read(&json!({"choices": [{"index": "zero", "delta": {
            "content": "ok", "reasoning_content": 5, "reasoning": "r",
            "tool_calls": {"not": "a list"}}, "finish_reason": 3}]}));
        let choice = &c.choices[0];
        assert_eq!(choice.index, None);
        assert_eq!(choice.finish_reason, None);
        assert_eq!(choice.delta.text(), "ok");
        assert_eq!(choice.delta.reasoning(), Some("r"));
        assert!(choice.delta.tool_calls.is_empty());
        assert!(Chunk::read(&json!("not an object")).choices.is_empty());
        assert!(
            Completion::read(&json!({"choices": null}))
                .choices
                .is_empty()
        );
    }

    proptest! {
        #[test]
        fn any_json_reads_without_panicking(v in any_json()) {
            let c = Completion::read(&v);
            for choice in &c.choices {
                let _ = (choice.message.text(), choice.message.reasoning());
            }
            let k = Chunk::read(&v);
            prop_assert_eq!(k.choices.len(), v.get("choices").and_then(Value::as_array).map_or(0, Vec::len));
        }
    }
}
