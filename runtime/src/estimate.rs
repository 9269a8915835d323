//! Token estimates, for when a provider never reports usage.
//!
//! About four characters a token for English text, as OpenAI's own rule of
//! thumb; CJK text runs closer to one character a token, so those count one
//! each. Recorded usage built from these is always flagged as an estimate.

use aigw_events::Usage;
use aigw_events::wire::Endpoint;
use serde_json::Value;

/// Estimated tokens in a piece of text.
pub fn text_tokens(text: &str) -> u64 {
    let mut ascii = 0u64;
    let mut wide = 0u64;
    for c in text.chars() {
        if (c as u32) < 0x2E80 {
            ascii += 1;
        } else {
            wide += 1;
        }
    }
    ascii.div_ceil(4) + wide
}

/// An upper bound on a text's tokens, for budget reservations: half a token
/// a UTF-8 byte is above what common tokenizers produce for any script.
pub fn text_tokens_upper(text: &str) -> u64 {
    (text.len() as u64).div_ceil(2)
}

/// Estimated prompt tokens of a chat completion body.
pub fn prompt_tokens(body: &Value) -> u64 {
    prompt_with(body, text_tokens)
}

/// An upper bound on the prompt tokens of a chat completion body.
pub fn prompt_tokens_upper(body: &Value) -> u64 {
    prompt_with(body, text_tokens_upper)
}

/// Output tokens a request may produce: its `max_completion_tokens` or
/// `max_tokens`, else `default_cap`.
pub fn max_output_tokens(body: &Value, default_cap: u64) -> u64 {
    body.get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_cap)
}

/// The most a request can consume, for budget holds: for chat an upper
/// bound of its prompt plus its output cap (`default_cap` when it sets
/// none); for media the units it asks for (`n` images, the characters of
/// the speech input). Transcriptions cannot be bounded before the audio is
/// read and hold nothing.
pub fn worst_usage(endpoint: Endpoint, body: &Value, default_cap: u64) -> Usage {
    match endpoint {
        Endpoint::Chat | Endpoint::Embeddings => Usage {
            prompt_tokens: prompt_tokens_upper(body),
            completion_tokens: if endpoint == Endpoint::Chat {
                max_output_tokens(body, default_cap)
            } else {
                0
            },
            ..Usage::default()
        },
        Endpoint::Images => Usage {
            images: body.get("n").and_then(Value::as_u64).unwrap_or(1),
            ..Usage::default()
        },
        Endpoint::Speech => Usage {
            characters: body
                .get("input")
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count() as u64),
            ..Usage::default()
        },
        Endpoint::Transcriptions => Usage::default(),
    }
}

fn prompt_with(body: &Value, count: fn(&str) -> u64) -> u64 {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        // An embeddings body: `input` is a string or an array of strings.
        return match body.get("input") {
            Some(Value::String(s)) => count(s),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(count).sum(),
            _ => 0,
        };
    };
    messages
        .iter()
        .map(|m| {
            let content = match m.get("content") {
                Some(Value::String(s)) => count(s),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(count)
                    .sum(),
                _ => 0,
            };
            // Role and framing cost a few tokens per message.
            content + 4
        })
        .sum::<u64>()
        + 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("你好"), 2);
        let body = json!({"messages":[{"role":"user","content":"abcdefgh"}]});
        assert_eq!(prompt_tokens(&body), 2 + 4 + 3);
        let parts = json!({"messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url"}]}]});
        assert_eq!(prompt_tokens(&parts), 1 + 4 + 3);
        assert_eq!(prompt_tokens_upper(&body), 4 + 4 + 3);
        assert!(text_tokens_upper("你好") >= 2);
        assert_eq!(max_output_tokens(&json!({"max_tokens": 7}), 100), 7);
        assert_eq!(
            max_output_tokens(&json!({"max_completion_tokens": 9, "max_tokens": 7}), 100),
            9
        );
        assert_eq!(max_output_tokens(&json!({}), 100), 100);
    }
}
