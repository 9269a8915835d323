//! `POST /v1/moderations` bodies, as OpenAI's: `input` is a string, an
//! array of strings, or an array of `text` and `image_url` parts; `model`
//! defaults to [`DEFAULT_MODERATION_MODEL`].
//!
//! Invariants: `input` is non-empty, with at most [`MAX_MODERATION_INPUTS`]
//! items, every string non-empty and every part of a known type; the model
//! a request routes by is always in the forwarded body. Every other field
//! passes through untouched.

use aigw_events::wire::Endpoint;
use serde_json::Value;

use super::{ChatRequest, invalid, json_object, required_model, take_provider};
use crate::error::ApiError;

/// The model OpenAI uses when a moderation names none.
pub const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";
/// Most inputs one moderation may classify.
pub const MAX_MODERATION_INPUTS: usize = 2_048;

/// Checks a moderation body (see the module doc).
pub fn validate_moderations(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut obj = json_object(bytes)?;
    if obj.get("model").is_none_or(Value::is_null) {
        obj.insert("model".into(), Value::from(DEFAULT_MODERATION_MODEL));
    }
    let model = required_model(&obj)?;
    let bad = || {
        invalid(
            format!(
                "'input' must be a non-empty string, or an array of 1 to {MAX_MODERATION_INPUTS} non-empty strings or of 'text' and 'image_url' parts."
            ),
            "input",
        )
    };
    match obj.get("input") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(Value::Array(items)) if (1..=MAX_MODERATION_INPUTS).contains(&items.len()) => {
            if !(items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
                || items.iter().all(part))
            {
                return Err(bad());
            }
        }
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'input'.", "input"));
        }
        Some(_) => return Err(bad()),
    }
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest::unstreamed(
        obj,
        model,
        provider,
        Endpoint::Moderations,
    ))
}

/// A multimodal input part: `{"type": "text", "text": ...}` or
/// `{"type": "image_url", "image_url": {"url": ...}}`.
fn part(item: &Value) -> bool {
    match item.get("type").and_then(Value::as_str) {
        Some("text") => item
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        Some("image_url") => item
            .pointer("/image_url/url")
            .and_then(Value::as_str)
            .is_some_and(|u| !u.is_empty()),
        _ => false,
    }
}
