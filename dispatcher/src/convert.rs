//! Pieces every native adapter shares: building its turns, writing OpenAI
//! responses and chunks, and turning a provider's event stream into
//! `StreamItem`s. The request itself is read through
//! [`crate::chat::request`].

use std::collections::VecDeque;

use aigw_events::Usage;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use crate::answer::{Answer, StreamItem};
use crate::upstream::UpstreamError;

/// Characters escaped in a URL path segment (all but RFC 3986 unreserved).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes `s` for use as one URL path segment (a model id, a deployment).
pub fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Output cap sent to providers that require one when the caller gave none
/// (budget holds assume the same, see `aigw_runtime::worst_case`).
pub const DEFAULT_MAX_TOKENS: u64 = aigw_runtime::worst_case::ANTHROPIC_DEFAULT_MAX_TOKENS;

/// Seconds since the epoch, for `created`.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A guess at an image URL's media type from its extension.
pub fn media_type_of_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// Appends a turn, merging it into the previous one when both have the same
/// role (Anthropic, Gemini and Bedrock want roles to alternate). `field`
/// names the turn's list of blocks (`content` or `parts`).
pub fn push_turn(turns: &mut Vec<Value>, role: &str, field: &str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(existing) = last[field].as_array_mut() {
                existing.extend(blocks);
            }
        }
        _ => turns.push(json!({"role": role, field: blocks})),
    }
}

/// Joins a Gemini function call's thought signature to its OpenAI tool-call
/// id (see `gemini::openai_call_id`).
pub const THOUGHT_SIGNATURE_MARK: &str = "__thought__";

/// A tool-call id without a Gemini thought signature: other providers want
/// short ids of letters, digits, `_` and `-` (a conversation may move from
/// Gemini to another provider).
pub fn call_id_without_signature(id: &str) -> &str {
    id.split(THOUGHT_SIGNATURE_MARK).next().unwrap_or(id)
}

/// An OpenAI tool call, with the arguments as a JSON string.
pub fn openai_tool_call(id: &str, name: &str, arguments: &Value) -> Value {
    let arguments = match arguments {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// Usage in OpenAI's shape ([`Usage::to_openai`]).
pub fn usage_json(u: &Usage) -> Value {
    u.to_openai()
}

/// Fills in OpenAI's usage details an OpenAI-compatible provider's `usage`
/// lacks (DeepSeek's cache hits as `prompt_tokens_details.cached_tokens`),
/// from the usage read from it; what the provider sent stays. Whether it
/// changed anything.
pub fn complete_usage_details(usage: &mut Value, u: &Usage) -> bool {
    let Some(obj) = usage.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    let mut put = |section: &str, field: &str, n: u64| {
        if n == 0 {
            return;
        }
        let details = obj.entry(section).or_insert_with(|| json!({}));
        if !details.is_object() {
            *details = json!({});
        }
        if let Some(d) = details.as_object_mut()
            && !d.contains_key(field)
        {
            d.insert(field.into(), json!(n));
            changed = true;
        }
    };
    put("prompt_tokens_details", "cached_tokens", u.cached_tokens);
    put(
        "prompt_tokens_details",
        "cache_write_tokens",
        u.cache_write_5m_tokens
            .saturating_add(u.cache_write_1h_tokens),
    );
    put(
        "completion_tokens_details",
        "reasoning_tokens",
        u.reasoning_tokens,
    );
    changed
}

/// An OpenAI-format answer body with its `usage` details completed (see
/// [`complete_usage_details`]); the body as it came when nothing is
/// missing, or it is not a JSON object.
pub fn with_usage_details(body: bytes::Bytes, u: &Usage) -> bytes::Bytes {
    if u.cache_tokens() == 0 && u.reasoning_tokens == 0 {
        return body;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let completed = v
        .get_mut("usage")
        .is_some_and(|usage| complete_usage_details(usage, u));
    if completed {
        serde_json::to_vec(&v).map_or(body, bytes::Bytes::from)
    } else {
        body
    }
}

/// The sum of several token counts a provider reported, saturating: a
/// provider's numbers are not trusted not to overflow.
pub fn token_sum(counts: impl IntoIterator<Item = u64>) -> u64 {
    counts.into_iter().fold(0, u64::saturating_add)
}

/// A complete OpenAI `chat.completion` answer.
pub struct Completion {
    pub id: String,
    pub model: String,
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<Value>,
    pub finish_reason: String,
    pub usage: Option<Usage>,
}

impl Completion {
    pub fn into_answer(self) -> Answer {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert(
            "content".into(),
            self.content.map(Value::String).unwrap_or(Value::Null),
        );
        if let Some(r) = self.reasoning {
            message.insert("reasoning_content".into(), Value::String(r));
        }
        if !self.tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(self.tool_calls));
        }
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": now(),
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": Value::Object(message),
                "finish_reason": self.finish_reason,
            }],
        });
        if let Some(u) = &self.usage {
            body["usage"] = usage_json(u);
        }
        Answer::Full {
            body: Bytes::from(body.to_string()),
            usage: self.usage,
        }
    }
}

/// Builds `chat.completion.chunk` payloads for one answer.
#[derive(Debug, Clone)]
pub struct Chunker {
    pub id: String,
    pub model: String,
    pub created: i64,
}

impl Chunker {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            created: now(),
        }
    }

    pub fn delta(&self, delta: Value, finish_reason: Option<&str>) -> StreamItem {
        StreamItem::Data(
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            })
            .to_string(),
        )
    }

    pub fn role(&self) -> StreamItem {
        self.delta(json!({"role": "assistant", "content": ""}), None)
    }

    pub fn text(&self, text: &str) -> StreamItem {
        self.delta(json!({"content": text}), None)
    }

    pub fn reasoning(&self, text: &str) -> StreamItem {
        self.delta(json!({"reasoning_content": text}), None)
    }

    /// The start of tool call `index`: id, name and (maybe) arguments.
    pub fn tool_start(&self, index: usize, id: &str, name: &str, arguments: &str) -> StreamItem {
        self.delta(
            json!({"tool_calls": [{
                "index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments},
            }]}),
            None,
        )
    }

    pub fn tool_args(&self, index: usize, fragment: &str) -> StreamItem {
        self.delta(
            json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            None,
        )
    }

    pub fn finish(&self, reason: &str) -> StreamItem {
        self.delta(json!({}), Some(reason))
    }

    /// The final usage chunk, as OpenAI sends it with `include_usage`.
    pub fn usage(&self, u: &Usage) -> StreamItem {
        StreamItem::Data(
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_json(u),
            })
            .to_string(),
        )
    }
}

/// A provider's stream events, translated one by one.
pub trait Translate: Send + 'static {
    type Event: Send;
    /// Translates one event; `Done` or `Error` in `out` ends the stream.
    fn feed(&mut self, event: Self::Event, out: &mut Vec<StreamItem>);
    /// The upstream closed: emit what is left (`Done`, or an error when the
    /// stream ended before its proper end).
    fn finish(&mut self, out: &mut Vec<StreamItem>);
}

/// Runs `translator` over `events`, stopping after `Done` or an error.
pub fn translate<S, T>(events: S, translator: T) -> BoxStream<'static, StreamItem>
where
    S: Stream<Item = Result<T::Event, UpstreamError>> + Send + 'static,
    T: Translate,
{
    struct St<S, T> {
        events: std::pin::Pin<Box<S>>,
        t: T,
        pending: VecDeque<StreamItem>,
        over: bool,
    }
    let state = St {
        events: Box::pin(events),
        t: translator,
        pending: VecDeque::new(),
        over: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                if matches!(item, StreamItem::Done | StreamItem::Error(_)) {
                    st.over = true;
                    st.pending.clear();
                }
                return Some((item, st));
            }
            if st.over {
                return None;
            }
            let mut out = Vec::new();
            match st.events.next().await {
                Some(Ok(event)) => st.t.feed(event, &mut out),
                Some(Err(e)) => out.push(StreamItem::Error(e)),
                None => {
                    st.t.finish(&mut out);
                    st.over = true;
                }
            }
            st.pending.extend(out);
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_media_types_come_from_the_url_path() {
        assert_eq!(media_type_of_url("https://x/y.webp"), "image/webp");
        assert_eq!(media_type_of_url("https://x/Y.PNG?sig=.gif"), "image/png");
        assert_eq!(media_type_of_url("https://x/y"), "image/jpeg");
    }
}
