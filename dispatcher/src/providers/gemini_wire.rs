//! Gemini's answers, typed, as the Gemini adapter reads them: a
//! `GenerateContentResponse` (whole, or one event of a stream, which holds
//! only the new parts) and its `usageMetadata`. Only the fields aigw
//! interprets are here.
//!
//! Invariants:
//! - Reading never fails and never panics (an upstream's answer is outside
//!   input): a field missing or of the wrong type reads as absent, and the
//!   rest still reads (`crate::chat`'s lenient readers).
//! - Only the first candidate is read (aigw asks for one).

use aigw_events::Usage;
use serde::Deserialize;
use serde_json::Value;

use crate::chat::{items, lenient, object, object_opt, read as read_object};
use crate::convert;

/// A `GenerateContentResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    #[serde(default, deserialize_with = "items")]
    candidates: Vec<Candidate>,
    #[serde(default, deserialize_with = "object")]
    prompt_feedback: PromptFeedback,
    #[serde(default, deserialize_with = "lenient")]
    pub model_version: Option<String>,
    #[serde(default, deserialize_with = "object_opt")]
    pub usage_metadata: Option<UsageMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default, deserialize_with = "object")]
    content: Content,
    #[serde(default, deserialize_with = "lenient")]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default, deserialize_with = "items")]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default, deserialize_with = "lenient")]
    text: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    thought: Option<bool>,
    #[serde(default, deserialize_with = "object_opt")]
    function_call: Option<FunctionCall>,
    #[serde(default, deserialize_with = "lenient")]
    thought_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionCall {
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default, deserialize_with = "lenient")]
    block_reason: Option<String>,
}

/// `usageMetadata`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default, deserialize_with = "lenient")]
    prompt_token_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    candidates_token_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    thoughts_token_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cached_content_token_count: Option<u64>,
}

/// A function call of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: Option<String>,
    pub name: String,
    /// The arguments as sent (`{}` when none).
    pub args: Value,
    pub thought_signature: Option<String>,
}

/// Text, thoughts and function calls of a response's first candidate.
#[derive(Debug, Default)]
pub struct Parts {
    pub text: String,
    pub thoughts: String,
    pub calls: Vec<Call>,
    /// `finishReason`, or `SAFETY` when the prompt itself was blocked.
    pub finish: Option<String>,
}

impl Response {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// The first candidate's parts (see [`Parts`]).
    pub fn parts(self) -> Parts {
        let mut out = Parts::default();
        let candidate = self.candidates.into_iter().next().unwrap_or_default();
        out.finish = candidate.finish_reason;
        if out.finish.is_none() && self.prompt_feedback.block_reason.is_some() {
            out.finish = Some("SAFETY".into());
        }
        for p in candidate.content.parts {
            if let Some(call) = p.function_call {
                out.calls.push(Call {
                    id: call.id,
                    name: call.name.unwrap_or_default(),
                    args: call
                        .args
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    thought_signature: p.thought_signature,
                });
            } else if let Some(t) = p.text {
                if p.thought == Some(true) {
                    out.thoughts.push_str(&t);
                } else {
                    out.text.push_str(&t);
                }
            }
        }
        out
    }
}

impl UsageMetadata {
    pub fn read(v: &Value) -> Self {
        read_object(v)
    }

    /// aigw's token classes: thoughts are output and the reasoning class
    /// (Gemini reports them apart from the candidates).
    pub fn to_usage(&self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage {
            prompt_tokens: self.prompt_token_count.unwrap_or(0),
            completion_tokens: convert::token_sum([
                self.candidates_token_count.unwrap_or(0),
                thoughts,
            ]),
            cached_tokens: self.cached_content_token_count.unwrap_or(0),
            reasoning_tokens: thoughts,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_candidate_reads_its_parts() {
        let parts = Response::read(&json!({"candidates": [{"content": {"parts": [
            {"text": "hm", "thought": true}, {"text": "Hi"}, 5,
            {"functionCall": {"name": "f"}, "thoughtSignature": "sig"}]},
            "finishReason": "STOP"}, {"content": {"parts": [{"text": "other"}]}}]}))
        .parts();
        assert_eq!((parts.thoughts.as_str(), parts.text.as_str()), ("hm", "Hi"));
        assert_eq!(
            parts.calls,
            [Call {
                id: None,
                name: "f".into(),
                args: json!({}),
                thought_signature: Some("sig".into())
            }]
        );
        assert_eq!(parts.finish.as_deref(), Some("STOP"));
        let blocked = Response::read(&json!({"promptFeedback": {"blockReason": "OTHER"}})).parts();
        assert_eq!(blocked.finish.as_deref(), Some("SAFETY"));
    }

    #[test]
    fn usage_counts_thoughts_as_output_and_tolerates_junk() {
        let u = UsageMetadata::read(&json!({"promptTokenCount": 10, "candidatesTokenCount": 5,
            "thoughtsTokenCount": 3, "cachedContentTokenCount": 4}))
        .to_usage();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.reasoning_tokens,
                u.cached_tokens
            ),
            (10, 8, 3, 4)
        );
        assert_eq!(
            UsageMetadata::read(&json!({"promptTokenCount": "x"})).to_usage(),
            Usage::default()
        );
    }
}
