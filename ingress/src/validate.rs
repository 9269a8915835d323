//! What a request body must look like before anything is queued: shapes,
//! limits and character sets of every caller-controlled value.
//!
//! Invariants:
//! - Every string that becomes a key, column, subject, header or index entry
//!   has a length limit and a character set: model names ([`model_name`]),
//!   provider names and pins ([`provider_name`], [`provider_ref`]), `user`,
//!   metadata, file names. A value outside them is a 400 with `param` set,
//!   before admission, so nothing downstream (NATS headers and subjects,
//!   PostgreSQL indexes, the views) ever sees one.
//! - Every number aigw interprets is bounded: `n`, `max_tokens` and
//!   `max_completion_tokens` here (admission then bounds the output by the
//!   model's own maximum), image sizes and counts, speech input length.
//! - Every other field passes through untouched, for the provider to judge.

use std::collections::BTreeMap;

use aigw_events::wire::Endpoint;
use aigw_runtime::worst_case::{self, MAX_CHOICES};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::multipart;

mod moderations;
mod rerank;

pub use moderations::{DEFAULT_MODERATION_MODEL, MAX_MODERATION_INPUTS, validate_moderations};
pub use rerank::{MAX_RERANK_DOCUMENTS, MAX_RERANK_QUERY, validate_rerank};

/// Longest model name (or alias, or `provider/model`).
pub const MAX_MODEL_LEN: usize = 256;
/// Longest provider name.
pub const MAX_PROVIDER_NAME_LEN: usize = 64;
/// Longest end-user id (`user`).
pub const MAX_USER_LEN: usize = 256;
/// Metadata: at most this many keys, of at most these lengths.
pub const MAX_METADATA_KEYS: usize = 16;
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;
/// The largest `max_tokens` any request may ask for, whatever the model
/// (admission bounds it by the model's own maximum where that is known).
pub const MAX_OUTPUT_TOKENS_ANY: u64 = 10_000_000;
/// Longest image prompt, in characters (gpt-image-1's).
pub const MAX_IMAGE_PROMPT: usize = 32_000;
/// Largest image side, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Longest speech voice name.
pub const MAX_VOICE_LEN: usize = 64;
/// Longest uploaded file name.
pub const MAX_FILENAME_LEN: usize = 255;
/// Longest transcription prompt, in characters.
pub const MAX_TRANSCRIPTION_PROMPT: usize = 4_096;

/// A chat request that passed validation.
#[derive(Debug, PartialEq)]
pub struct ChatRequest {
    /// The body to forward (aigw's own fields removed).
    pub body: Value,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub provider: Option<String>,
    pub endpoint: Endpoint,
    /// An uploaded file (transcriptions), stored in the media object store
    /// under the request id before the request is queued.
    pub upload: Option<Bytes>,
}

impl ChatRequest {
    /// A request answered in one piece (every endpoint but streamed chat).
    fn unstreamed(
        body: Map<String, Value>,
        model: String,
        provider: Option<String>,
        endpoint: Endpoint,
    ) -> Self {
        Self {
            body: Value::Object(body),
            model,
            stream: false,
            include_usage: false,
            provider,
            endpoint,
            upload: None,
        }
    }
}

pub fn invalid(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::BadRequest {
        message: message.into(),
        param: Some(param),
        code: None,
    }
}

/// Why a name or text is refused (completes "'x' must ...").
type Rule = Result<(), String>;

/// A model name, alias or `provider/model`: 1 to [`MAX_MODEL_LEN`] visible
/// ASCII characters (no spaces, no control characters).
pub fn model_name(name: &str) -> Rule {
    let ok = !name.is_empty()
        && name.len() <= MAX_MODEL_LEN
        && name.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(())
        .ok_or_else(|| format!("be 1 to {MAX_MODEL_LEN} visible ASCII characters (no spaces)"))
}

/// A provider name: 1 to [`MAX_PROVIDER_NAME_LEN`] letters, digits, `-`,
/// `_` or `.`, and not a UUID (names and ids are both accepted where a
/// provider is named, so they must never be confused).
pub fn provider_name(name: &str) -> Rule {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROVIDER_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && uuid::Uuid::parse_str(name).is_err();
    ok.then_some(()).ok_or_else(|| {
        format!("be 1 to {MAX_PROVIDER_NAME_LEN} letters, digits, '-', '_' or '.' (and not a UUID)")
    })
}

/// A provider named by id or by name.
pub fn provider_ref(reference: &str) -> Rule {
    if uuid::Uuid::parse_str(reference).is_ok() {
        return Ok(());
    }
    provider_name(reference).map_err(|_| {
        format!(
            "be a provider id or a name of 1 to {MAX_PROVIDER_NAME_LEN} letters, digits, '-', '_' or '.'"
        )
    })
}

/// Free text that is stored or forwarded: at most `max` bytes, no control
/// characters (so no line breaks in a header, log line or CSV cell).
pub fn plain_text(text: &str, max: usize) -> Rule {
    let ok = text.len() <= max && !text.chars().any(char::is_control);
    ok.then_some(())
        .ok_or_else(|| format!("be at most {max} bytes, without control characters"))
}

/// Applies `rule` to the value of `param`, as a 400 naming it.
pub fn check(param: &'static str, value: &str, rule: fn(&str) -> Rule) -> Result<(), ApiError> {
    rule(value).map_err(|why| invalid(format!("'{param}' must {why}."), param))
}

/// The body as a JSON object, and its required `model`.
fn object_with_model(bytes: &[u8]) -> Result<(Map<String, Value>, String), ApiError> {
    let obj = json_object(bytes)?;
    let model = required_model(&obj)?;
    Ok((obj, model))
}

/// The body as a JSON object.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("We could not parse the JSON body of your request: {e}"),
        param: None,
        code: Some("invalid_json"),
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    Ok(obj)
}

/// A body's required `model` (checked as a model name), its `user` checked
/// too.
fn required_model(obj: &Map<String, Value>) -> Result<String, ApiError> {
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'model'.", "model"));
        }
        Some(_) => return Err(invalid("'model' must be a non-empty string.", "model")),
    };
    check("model", &model, model_name)?;
    check_user(obj)?;
    Ok(model)
}

/// OpenAI's `user` (an end-user id, forwarded): plain text, bounded.
fn check_user(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("user") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(user)) => check("user", user, |u| plain_text(u, MAX_USER_LEN)),
        Some(_) => Err(invalid("'user' must be a string.", "user")),
    }
}

/// Removes aigw's own `provider` field (a pin, never forwarded upstream).
fn take_provider(obj: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    match obj.remove("provider") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) if !p.trim().is_empty() => {
            check("provider", &p, provider_ref)?;
            Ok(Some(p))
        }
        Some(_) => Err(invalid(
            "'provider' must be a non-empty string.",
            "provider",
        )),
    }
}

/// Metadata as OpenAI bounds it: at most [`MAX_METADATA_KEYS`] string
/// values, keys of 1 to [`MAX_METADATA_KEY`] bytes and values of at most
/// [`MAX_METADATA_VALUE`], without control characters.
pub fn metadata(value: Value) -> Result<BTreeMap<String, String>, ApiError> {
    let bad = || {
        invalid(
            format!(
                "'metadata' must be an object of at most {MAX_METADATA_KEYS} string values, with keys of 1 to {MAX_METADATA_KEY} bytes and values of at most {MAX_METADATA_VALUE}, without control characters."
            ),
            "metadata",
        )
    };
    let Value::Object(map) = value else {
        return Err(bad());
    };
    if map.len() > MAX_METADATA_KEYS {
        return Err(bad());
    }
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(v)
                if !k.is_empty()
                    && plain_text(&k, MAX_METADATA_KEY).is_ok()
                    && plain_text(&v, MAX_METADATA_VALUE).is_ok() =>
            {
                Ok((k, v))
            }
            _ => Err(bad()),
        })
        .collect()
}

/// An integer field within `range`, if present.
fn check_range(
    obj: &Map<String, Value>,
    field: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| range.contains(&n)) => Ok(()),
        Some(_) => Err(invalid(
            format!(
                "'{field}' must be an integer from {} to {}.",
                range.start(),
                range.end()
            ),
            field,
        )),
    }
}

fn check_type(
    obj: &Map<String, Value>,
    field: &'static str,
    what: &str,
    ok: fn(&Value) -> bool,
) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if ok(v) => Ok(()),
        Some(_) => Err(invalid(format!("'{field}' must be {what}."), field)),
    }
}

/// Checks the shape OpenAI documents for the fields aigw relies on; every
/// other field passes through untouched.
pub fn validate(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
                let ok = m
                    .as_object()
                    .and_then(|o| o.get("role"))
                    .is_some_and(Value::is_string);
                if !ok {
                    return Err(invalid(
                        format!("'messages[{i}]' must be an object with a string 'role'."),
                        "messages",
                    ));
                }
            }
        }
        None | Some(Value::Null) => {
            return Err(invalid(
                "Missing required parameter: 'messages'.",
                "messages",
            ));
        }
        Some(Value::Array(_)) => {
            return Err(invalid("'messages' must not be empty.", "messages"));
        }
        Some(_) => return Err(invalid("'messages' must be an array.", "messages")),
    }
    check_type(&obj, "stream", "a boolean", Value::is_boolean)?;
    for field in ["max_tokens", "max_completion_tokens"] {
        check_range(&obj, field, 1..=MAX_OUTPUT_TOKENS_ANY)?;
    }
    check_range(&obj, "n", 1..=MAX_CHOICES)?;
    for field in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        check_type(&obj, field, "a number", Value::is_number)?;
    }
    check_type(&obj, "stream_options", "an object", Value::is_object)?;
    if let Some(m) = obj.get("metadata").filter(|m| !m.is_null()) {
        metadata(m.clone())?;
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest {
        body: Value::Object(obj),
        model,
        stream,
        include_usage,
        provider,
        upload: None,
        endpoint: Endpoint::Chat,
    })
}

/// Checks an embeddings body: `model`, and `input` as a string or a
/// non-empty array; every other field passes through.
pub fn validate_embeddings(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("input") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'input'.", "input"));
        }
        Some(_) => {
            return Err(invalid(
                "'input' must be a non-empty string or array.",
                "input",
            ));
        }
    }
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest::unstreamed(
        obj,
        model,
        provider,
        Endpoint::Embeddings,
    ))
}

/// Checks an image generation body (OpenAI's shape): `model`, a non-empty
/// `prompt` of at most [`MAX_IMAGE_PROMPT`] characters, `n` from 1 to 10,
/// `size` as `WIDTHxHEIGHT` or `auto`, and `response_format` `b64_json` or
/// `url`; every other field passes through.
pub fn validate_images(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() && p.chars().count() <= MAX_IMAGE_PROMPT => {
        }
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'prompt'.", "prompt"));
        }
        Some(_) => {
            return Err(invalid(
                format!("'prompt' must be a string of 1 to {MAX_IMAGE_PROMPT} characters."),
                "prompt",
            ));
        }
    }
    check_range(&obj, "n", 1..=10)?;
    match obj.get("size") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "auto" || parse_size(s).is_some() => {}
        Some(_) => {
            return Err(invalid(
                format!(
                    "'size' must be 'auto' or WIDTHxHEIGHT of at most {MAX_IMAGE_SIDE} pixels a side, e.g. '1024x1024'."
                ),
                "size",
            ));
        }
    }
    match obj.get("response_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "b64_json" || f == "url" => {}
        Some(_) => {
            return Err(invalid(
                "'response_format' must be 'b64_json' or 'url'.",
                "response_format",
            ));
        }
    }
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest::unstreamed(
        obj,
        model,
        provider,
        Endpoint::Images,
    ))
}

/// `WIDTHxHEIGHT` with both sides from 1 to [`MAX_IMAGE_SIDE`].
pub fn parse_size(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once('x')?;
    let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
    let side = 1..=MAX_IMAGE_SIDE;
    (side.contains(&w) && side.contains(&h)).then_some((w, h))
}

/// Formats of `/v1/audio/speech` answers, as OpenAI names them.
pub const SPEECH_FORMATS: &[&str] = &["mp3", "opus", "aac", "flac", "wav", "pcm"];

/// Checks a speech body (OpenAI's shape): `model`, `input` (1 to 4096
/// characters), `voice`, an optional `response_format` and `speed`.
pub fn validate_speech(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("input") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 4096 => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'input'.", "input"));
        }
        Some(_) => {
            return Err(invalid(
                "'input' must be a string of 1 to 4096 characters.",
                "input",
            ));
        }
    }
    match obj.get("voice") {
        Some(Value::String(v)) if !v.trim().is_empty() && plain_text(v, MAX_VOICE_LEN).is_ok() => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'voice'.", "voice"));
        }
        Some(_) => {
            return Err(invalid(
                format!(
                    "'voice' must be a non-empty string of at most {MAX_VOICE_LEN} bytes, without control characters."
                ),
                "voice",
            ));
        }
    }
    match obj.get("response_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if SPEECH_FORMATS.contains(&f.as_str()) => {}
        Some(_) => {
            return Err(invalid(
                format!(
                    "'response_format' must be one of {}.",
                    SPEECH_FORMATS.join(", ")
                ),
                "response_format",
            ));
        }
    }
    check_type(&obj, "speed", "a number", Value::is_number)?;
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest::unstreamed(
        obj,
        model,
        provider,
        Endpoint::Speech,
    ))
}

/// Largest audio upload (`/v1/audio/transcriptions`), as OpenAI's.
pub const MAX_AUDIO_BYTES: usize = 25 * 1024 * 1024;

/// Formats of `/v1/audio/transcriptions` answers aigw produces.
pub const TRANSCRIPTION_FORMATS: &[&str] = &["json", "text"];

/// A file name safe to forward in a multipart header: no control
/// characters, quotes or backslashes, at most [`MAX_FILENAME_LEN`] bytes.
fn file_name(name: &str) -> Rule {
    let ok = !name.is_empty()
        && plain_text(name, MAX_FILENAME_LEN).is_ok()
        && !name.contains(['"', '\\']);
    ok.then_some(()).ok_or_else(|| {
        format!(
            "have a file name of 1 to {MAX_FILENAME_LEN} bytes, without control characters, quotes or backslashes"
        )
    })
}

/// A media type (`type/subtype`, parameters dropped), or the generic one.
fn media_type(content_type: Option<&str>) -> String {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => essence.to_ascii_lowercase(),
        _ => "application/octet-stream".into(),
    }
}

/// Checks a transcription form (OpenAI's shape): a non-empty `file`,
/// `model`, and optional `language`, `prompt`, `temperature`,
/// `response_format` (`json` or `text`). The body queued is JSON naming the
/// file; the audio itself travels through the media object store.
pub fn validate_transcription(content_type: &str, bytes: &Bytes) -> Result<ChatRequest, ApiError> {
    let fields = multipart::parse(content_type, bytes)
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    let text = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name && f.filename.is_none())
            .and_then(|f| f.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let model = text("model")
        .ok_or_else(|| invalid("Missing required parameter: 'model'.", "model"))?
        .to_string();
    check("model", &model, model_name)?;
    let provider = text("provider").map(str::to_string);
    if let Some(p) = &provider {
        check("provider", p, provider_ref)?;
    }
    let file = fields
        .iter()
        .find(|f| f.name == "file")
        .filter(|f| !f.data.is_empty())
        .ok_or_else(|| invalid("Missing required parameter: 'file'.", "file"))?;
    let filename = file.filename.clone().unwrap_or_else(|| "audio".into());
    check("file", &filename, file_name)?;
    let format = text("response_format").unwrap_or("json");
    if !TRANSCRIPTION_FORMATS.contains(&format) {
        return Err(invalid(
            "'response_format' must be 'json' or 'text'.",
            "response_format",
        ));
    }
    let mut body = serde_json::json!({
        "model": model,
        "response_format": format,
        "file": {
            "filename": filename,
            "content_type": media_type(file.content_type.as_deref()),
            "bytes": file.data.len(),
            // What the budget holds: the longest the audio can last.
            "max_seconds": worst_case::audio_seconds_upper(&file.data),
        },
    });
    if let Some(language) = text("language") {
        let ok = language.len() <= 16
            && language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(invalid(
                "'language' must be a language code such as 'en' or 'pt-BR'.",
                "language",
            ));
        }
        body["language"] = Value::String(language.to_string());
    }
    if let Some(prompt) = text("prompt") {
        if prompt.chars().count() > MAX_TRANSCRIPTION_PROMPT {
            return Err(invalid(
                format!("'prompt' must be at most {MAX_TRANSCRIPTION_PROMPT} characters."),
                "prompt",
            ));
        }
        body["prompt"] = Value::String(prompt.to_string());
    }
    if let Some(t) = text("temperature") {
        let t: f64 = t
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| invalid("'temperature' must be a number.", "temperature"))?;
        body["temperature"] = serde_json::json!(t);
    }
    Ok(ChatRequest {
        body,
        model,
        stream: false,
        include_usage: false,
        provider,
        endpoint: Endpoint::Transcriptions,
        upload: Some(file.data.clone()),
    })
}

#[cfg(test)]
mod tests;
