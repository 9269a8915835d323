//! Token estimates, for when a provider never reports usage.
//!
//! About four characters a token for English text, as OpenAI's own rule of
//! thumb; CJK text runs closer to one character a token, so those count one
//! each. Recorded usage built from these is always flagged as an estimate.

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

/// Estimated prompt tokens of a chat completion, embeddings, moderation
/// or rerank body.
pub fn prompt_tokens(body: &Value) -> u64 {
    let count = text_tokens;
    if let (Some(query), Some(documents)) = (
        body.get("query").and_then(Value::as_str),
        body.get("documents").and_then(Value::as_array),
    ) {
        // A rerank body: the query is scored with each document.
        return documents
            .iter()
            .map(|d| {
                count(query)
                    + d.as_str()
                        .or_else(|| d.get("text")?.as_str())
                        .map_or(0, count)
            })
            .sum();
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        // An embeddings or moderation body: `input` is a string or an array
        // of strings (or of moderation parts).
        return match body.get("input") {
            Some(Value::String(s)) => count(s),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().or_else(|| i.get("text")?.as_str()))
                .map(count)
                .sum(),
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

/// Output tokens a request may produce: its `max_completion_tokens` or
/// `max_tokens`, else `default_cap`.
pub fn max_output_tokens(body: &Value, default_cap: u64) -> u64 {
    body.get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_cap)
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
        assert_eq!(max_output_tokens(&json!({"max_tokens": 7}), 100), 7);
        assert_eq!(
            max_output_tokens(&json!({"max_completion_tokens": 9, "max_tokens": 7}), 100),
            9
        );
        assert_eq!(max_output_tokens(&json!({}), 100), 100);
        let rerank = json!({"query": "abcd", "documents": ["abcdefgh", {"text": "abcd"}]});
        assert_eq!(prompt_tokens(&rerank), (1 + 2) + (1 + 1));
        let moderation = json!({"input": ["abcd", {"type": "text", "text": "abcdefgh"}]});
        assert_eq!(prompt_tokens(&moderation), 1 + 2);
    }
}
