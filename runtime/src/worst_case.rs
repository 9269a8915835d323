//! The most a request can consume: what a budget holds at admission.
//!
//! A budget hold must be a true worst case, so that settling a request to
//! its actual cost can never take a key past its budget. Every bound here is
//! an upper bound of what a provider can bill for the request, whatever the
//! request's shape, and every sum is checked: a request whose worst case
//! does not fit in the integers is refused (see [`Overflow`]), never
//! wrapped or saturated.
//!
//! The bounds (documented in the README, "Limits, budgets and prices"):
//! - **Prompt**: one token per byte of the request's JSON keys and values
//!   (byte-level BPE
//!   and byte-fallback tokenizers never produce more), plus
//!   [`MESSAGE_OVERHEAD`] tokens of framing per message and
//!   [`TOOLS_OVERHEAD`] when tools are declared. Images count
//!   [`IMAGE_TOKENS`] each and files [`FILE_TOKENS`] each, instead of their
//!   bytes. Token arrays count one token per integer. Capped by the model's
//!   context window when the catalog knows it (a provider refuses more).
//! - **Output**: `n` times the output cap: the caller's
//!   `max_completion_tokens` or `max_tokens`, else the cap the provider's
//!   adapter always sends (Anthropic), else the model's catalogued maximum
//!   output, else [`DEFAULT_OUTPUT_CAP`], which the dispatcher then sends
//!   as the request's `max_tokens` (see [`injected_output_cap`]) so the
//!   provider cannot go past it.
//! - **Media**: `n` images (and, for token-priced image models,
//!   [`IMAGE_OUTPUT_TOKENS`] output tokens each); the characters of a speech
//!   input (and [`SPEECH_TOKENS_PER_CHARACTER`] for token-priced speech);
//!   the longest an uploaded audio file can last (and
//!   [`TRANSCRIPTION_TOKENS_PER_SECOND`] for token-priced transcription).
//! - **Rerank**: the query's bytes once per document plus each document's
//!   bytes (token-priced rerankers score every query-document pair), and
//!   the search units of a provider that splits documents into chunks of
//!   at least [`RERANK_CHUNK_TOKENS`] tokens and bills one unit per
//!   [`RERANK_DOCS_PER_SEARCH`] chunks.
//! - **Moderation**: the bytes of the input's texts, [`IMAGE_TOKENS`] per
//!   image.

use aigw_events::Usage;
use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_events::wire::Endpoint;
use serde_json::Value;

use crate::catalog;

/// Output tokens held (and sent as `max_tokens`) for a budgeted request
/// that sets no cap, to a model whose maximum output the catalog does not
/// know.
pub const DEFAULT_OUTPUT_CAP: u64 = 32_768;
/// The cap the Anthropic adapter sends when the caller gives none (the
/// Messages API requires one).
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u64 = 4_096;
/// The largest `max_tokens` accepted for a model whose maximum output and
/// context the catalog does not know.
pub const MAX_OUTPUT_TOKENS: u64 = 1_000_000;
/// The most completions one chat request may ask for (`n`), as OpenAI's.
pub const MAX_CHOICES: u64 = 128;
/// Tokens held per image in a prompt: above every provider's published
/// per-image maximum (OpenAI ~2,500, Anthropic ~4,800 at its highest
/// resolution, Gemini ~2,200).
pub const IMAGE_TOKENS: u64 = 10_000;
/// Tokens held per file (PDF) in a prompt: 100 pages at 5,000 tokens.
pub const FILE_TOKENS: u64 = 500_000;
/// Tokens of framing (role, separators) held per message.
pub const MESSAGE_OVERHEAD: u64 = 16;
/// Tokens held for the tool-use instructions a provider adds when tools
/// are declared (Anthropic's are ~350).
pub const TOOLS_OVERHEAD: u64 = 1_024;
/// Output tokens held per generated image for token-priced image models
/// (gpt-image-1 at its largest and best is 6,240).
pub const IMAGE_OUTPUT_TOKENS: u64 = 16_384;
/// Audio tokens held per character for token-priced speech models.
pub const SPEECH_TOKENS_PER_CHARACTER: u64 = 20;
/// Tokens held per second of audio for token-priced transcription models
/// (audio in and text out together).
pub const TRANSCRIPTION_TOKENS_PER_SECOND: u64 = 100;

/// Documents (or chunks of one) a rerank search unit covers (Cohere's).
pub const RERANK_DOCS_PER_SEARCH: u64 = 100;
/// The fewest tokens of a document (with the query) one rerank chunk
/// holds: Cohere splits long documents at 4,096 tokens today, 512 in its
/// older models.
pub const RERANK_CHUNK_TOKENS: u64 = 256;

/// A worst case that does not fit in the integers: the request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request's worst-case usage is too large to hold")]
pub struct Overflow;

/// What bounds one target's output and prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLimits {
    pub kind: ProviderKind,
    /// Context window (prompt and output together), if known.
    pub context: Option<u64>,
    /// Most output tokens one request may produce, if known.
    pub max_output: Option<u64>,
}

impl TargetLimits {
    /// The limits of `model` (an id `spec` is called with) at the provider
    /// `spec`, from the catalog entry of the preset it was made from: for
    /// an Azure deployment, those of the model it serves (none known when
    /// its model was not said).
    pub fn of(spec: &ProviderSpec, model: &str) -> Self {
        let known = spec
            .served_model(model)
            .map(|m| catalog::model_limits(spec.preset.as_deref(), m))
            .unwrap_or_default();
        Self {
            kind: spec.kind,
            context: known.context,
            max_output: known.max_output,
        }
    }

    /// The largest `max_tokens` a caller may ask of this target.
    pub fn output_ceiling(&self) -> u64 {
        self.max_output
            .or(self.context)
            .unwrap_or(MAX_OUTPUT_TOKENS)
    }
}

/// The caller's own output cap: `max_completion_tokens`, else `max_tokens`.
pub fn requested_output(body: &Value) -> Option<u64> {
    body.get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
}

/// The most output tokens one completion of this request can produce at
/// this target.
pub fn output_cap(body: &Value, limits: &TargetLimits) -> u64 {
    if let Some(n) = requested_output(body) {
        return n;
    }
    if limits.kind == ProviderKind::Anthropic {
        return ANTHROPIC_DEFAULT_MAX_TOKENS;
    }
    limits.max_output.unwrap_or(DEFAULT_OUTPUT_CAP)
}

/// The output cap the dispatcher must send with a budgeted chat request,
/// because the hold assumed it and nothing else bounds the provider: the
/// caller set none, and the catalog knows no maximum for the model.
pub fn injected_output_cap(body: &Value, limits: &TargetLimits) -> Option<u64> {
    let bounded = requested_output(body).is_some()
        || limits.kind == ProviderKind::Anthropic
        || limits.max_output.is_some();
    (!bounded).then_some(DEFAULT_OUTPUT_CAP)
}

/// Bytes of a value's JSON (counted, not written).
fn json_len(value: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn add(a: u64, b: u64) -> Result<u64, Overflow> {
    a.checked_add(b).ok_or(Overflow)
}

fn mul(a: u64, b: u64) -> Result<u64, Overflow> {
    a.checked_mul(b).ok_or(Overflow)
}

/// Tokens one content part of a chat message can cost.
fn part_tokens(part: &Value) -> u64 {
    match part.get("type").and_then(Value::as_str) {
        Some("image_url" | "image" | "input_image") => IMAGE_TOKENS,
        Some("file" | "input_file" | "document") => FILE_TOKENS,
        _ => json_len(part),
    }
}

/// An upper bound of a chat request's prompt tokens (see the module doc).
fn chat_prompt(body: &Value) -> Result<u64, Overflow> {
    let Some(obj) = body.as_object() else {
        return Ok(json_len(body));
    };
    let mut total = 0u64;
    for (field, value) in obj {
        total = add(total, field.len() as u64)?;
        total = match (field.as_str(), value) {
            ("messages", Value::Array(messages)) => {
                let mut sum = total;
                for message in messages {
                    sum = add(sum, MESSAGE_OVERHEAD)?;
                    let Some(m) = message.as_object() else {
                        sum = add(sum, json_len(message))?;
                        continue;
                    };
                    for (k, v) in m {
                        sum = add(sum, k.len() as u64)?;
                        sum = match (k.as_str(), v) {
                            ("content", Value::Array(parts)) => {
                                parts.iter().try_fold(sum, |s, p| add(s, part_tokens(p)))?
                            }
                            _ => add(sum, json_len(v))?,
                        };
                    }
                }
                sum
            }
            ("tools" | "functions", v) if !v.is_null() => {
                add(add(total, TOOLS_OVERHEAD)?, json_len(v))?
            }
            (_, v) => add(total, json_len(v))?,
        };
    }
    Ok(total)
}

/// An upper bound of an embeddings request's input tokens: bytes of text,
/// one token per integer of a token array.
fn embeddings_prompt(body: &Value) -> Result<u64, Overflow> {
    fn item(v: &Value) -> Result<u64, Overflow> {
        match v {
            Value::String(s) => add(s.len() as u64, MESSAGE_OVERHEAD),
            Value::Number(_) => Ok(1),
            Value::Array(items) => items.iter().try_fold(0, |s, i| add(s, item(i)?)),
            other => Ok(json_len(other)),
        }
    }
    body.get("input").map_or(Ok(0), item)
}

/// A rerank request's prompt tokens and search units (see the module doc).
fn rerank_usage(body: &Value) -> Result<Usage, Overflow> {
    let query = body.get("query").map_or(0, json_len);
    let (mut tokens, mut chunks) = (0u64, 0u64);
    for document in body
        .get("documents")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let pair = add(add(json_len(document), query)?, MESSAGE_OVERHEAD)?;
        tokens = add(tokens, pair)?;
        chunks = add(chunks, pair.div_ceil(RERANK_CHUNK_TOKENS).max(1))?;
    }
    Ok(Usage {
        prompt_tokens: tokens,
        searches: chunks.div_ceil(RERANK_DOCS_PER_SEARCH).max(1),
        ..Usage::default()
    })
}

/// An upper bound of a moderation request's input tokens: the bytes of
/// its texts, [`IMAGE_TOKENS`] per image.
fn moderation_prompt(body: &Value) -> Result<u64, Overflow> {
    match body.get("input") {
        Some(Value::Array(items)) => items.iter().try_fold(0, |sum, item| {
            let tokens = match item {
                Value::String(s) => add(s.len() as u64, MESSAGE_OVERHEAD)?,
                part => part_tokens(part),
            };
            add(sum, tokens)
        }),
        Some(other) => Ok(json_len(other)),
        None => Ok(0),
    }
}

/// The most the request can consume at this target: tokens (prompt capped
/// by the context window), and the media units it asks for.
pub fn worst_usage(
    endpoint: Endpoint,
    body: &Value,
    limits: &TargetLimits,
) -> Result<Usage, Overflow> {
    let cap = |prompt: u64| limits.context.map_or(prompt, |c| prompt.min(c));
    let n = |default: u64| body.get("n").and_then(Value::as_u64).unwrap_or(default);
    let usage = match endpoint {
        Endpoint::Chat => Usage {
            prompt_tokens: cap(chat_prompt(body)?),
            completion_tokens: mul(n(1).max(1), output_cap(body, limits))?,
            ..Usage::default()
        },
        Endpoint::Embeddings => Usage {
            prompt_tokens: cap(embeddings_prompt(body)?),
            ..Usage::default()
        },
        Endpoint::Images => {
            let images = n(1).max(1);
            Usage {
                prompt_tokens: cap(json_len(body)),
                completion_tokens: mul(images, IMAGE_OUTPUT_TOKENS)?,
                images,
                ..Usage::default()
            }
        }
        Endpoint::Speech => {
            let characters = body
                .get("input")
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count() as u64);
            Usage {
                prompt_tokens: json_len(body),
                completion_tokens: mul(characters, SPEECH_TOKENS_PER_CHARACTER)?,
                characters,
                ..Usage::default()
            }
        }
        Endpoint::Transcriptions => {
            let seconds = body
                .pointer("/file/max_seconds")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Usage {
                prompt_tokens: mul(seconds, TRANSCRIPTION_TOKENS_PER_SECOND)?,
                audio_seconds: seconds,
                ..Usage::default()
            }
        }
        Endpoint::Rerank => rerank_usage(body)?,
        Endpoint::Moderations => Usage {
            prompt_tokens: cap(moderation_prompt(body)?),
            ..Usage::default()
        },
    };
    if usage.is_plausible() {
        Ok(usage)
    } else {
        Err(Overflow)
    }
}

/// The lowest bit rate an upload's audio is assumed to be coded at, in
/// bytes per second: 6 kbit/s, Opus's floor (MP3 goes down to 8, AAC and
/// Vorbis stay above).
const MIN_AUDIO_BYTES_PER_SECOND: u64 = 750;

/// An upper bound of an audio file's duration, in seconds, for budget holds:
/// a WAV file's from its header's byte rate (its size over that rate) when
/// the header is consistent and plausible, any other file's (and a WAV file
/// with a header that is not) from its size at 6 kbit/s.
pub fn audio_seconds_upper(audio: &[u8]) -> u64 {
    let bytes = audio.len() as u64;
    let rate = wav_byte_rate(audio).unwrap_or(MIN_AUDIO_BYTES_PER_SECOND);
    bytes.div_ceil(rate.max(1))
}

/// The byte rate in a RIFF/WAVE file's `fmt ` chunk, if it agrees with the
/// chunk's sample rate, channels and sample size, and those are plausible
/// (8-192 kHz, 1-8 channels, 8-32 bits): a header cannot claim a rate that
/// makes a large upload last a second.
fn wav_byte_rate(audio: &[u8]) -> Option<u64> {
    if audio.get(0..4)? != b"RIFF" || audio.get(8..12)? != b"WAVE" {
        return None;
    }
    let u16_at = |at: usize| -> Option<u64> {
        Some(u64::from(u16::from_le_bytes(
            audio.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let u32_at = |at: usize| -> Option<u64> {
        Some(u64::from(u32::from_le_bytes(
            audio.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let mut at = 12usize;
    while at.checked_add(8)? <= audio.len() {
        let id = audio.get(at..at + 4)?;
        let size = usize::try_from(u32_at(at + 4)?).ok()?;
        if id == b"fmt " {
            let channels = u16_at(at + 10)?;
            let sample_rate = u32_at(at + 12)?;
            let byte_rate = u32_at(at + 16)?;
            let block_align = u16_at(at + 20)?;
            let bits = u16_at(at + 22)?;
            let plausible = (1..=8).contains(&channels)
                && (8_000..=192_000).contains(&sample_rate)
                && matches!(bits, 8 | 16 | 24 | 32)
                && block_align == channels * bits / 8
                && byte_rate == sample_rate * block_align;
            return plausible.then_some(byte_rate);
        }
        // Chunks are padded to an even size.
        at = at
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size & 1)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(kind: ProviderKind, context: Option<u64>, max_output: Option<u64>) -> TargetLimits {
        TargetLimits {
            kind,
            context,
            max_output,
        }
    }

    const OPENAI: TargetLimits = TargetLimits {
        kind: ProviderKind::OpenaiCompatible,
        context: None,
        max_output: None,
    };

    #[test]
    fn rerank_holds_every_query_document_pair_and_the_search_units_of_its_chunks() {
        let docs: Vec<String> = (0..150).map(|i| format!("document {i}")).collect();
        let body = json!({"model": "rerank-v3.5", "query": "which one?", "documents": docs});
        let worst = worst_usage(Endpoint::Rerank, &body, &OPENAI).unwrap();
        // 150 short documents: 150 chunks, two search units.
        assert_eq!(worst.searches, 2);
        let query = "\"which one?\"".len() as u64;
        assert!(worst.prompt_tokens >= 150 * (query + "\"document 0\"".len() as u64));
        // One long document is several chunks.
        let long =
            json!({"query": "q", "documents": ["x".repeat(RERANK_CHUNK_TOKENS as usize * 250)]});
        assert_eq!(
            worst_usage(Endpoint::Rerank, &long, &OPENAI)
                .unwrap()
                .searches,
            3
        );
        // A body with no documents still holds a unit.
        assert_eq!(
            worst_usage(Endpoint::Rerank, &json!({"query": "q"}), &OPENAI)
                .unwrap()
                .searches,
            1
        );
    }

    #[test]
    fn moderation_holds_text_bytes_and_images() {
        let text = json!({"input": "héllo"});
        assert!(
            worst_usage(Endpoint::Moderations, &text, &OPENAI)
                .unwrap()
                .prompt_tokens
                >= 6
        );
        let parts = json!({"input": [{"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]});
        assert!(
            worst_usage(Endpoint::Moderations, &parts, &OPENAI)
                .unwrap()
                .prompt_tokens
                >= IMAGE_TOKENS
        );
    }

    #[test]
    fn an_azure_deployment_has_the_limits_of_the_model_it_serves() {
        let spec = ProviderSpec {
            kind: ProviderKind::Azure,
            preset: Some("azure".into()),
            deployments: [
                ("prod-5".to_string(), Some("gpt-5.4".to_string())),
                ("gpt-5.4-mini".to_string(), None),
            ]
            .into(),
            ..ProviderSpec::default()
        };
        let prod = TargetLimits::of(&spec, "prod-5");
        assert_eq!(
            (prod.context, prod.max_output),
            (Some(1_050_000), Some(128_000))
        );
        assert_eq!(injected_output_cap(&json!({}), &prod), None);
        // Named like a catalog model, but its model was never said.
        let raw = TargetLimits::of(&spec, "gpt-5.4-mini");
        assert_eq!((raw.context, raw.max_output), (None, None));
        assert_eq!(
            injected_output_cap(&json!({}), &raw),
            Some(DEFAULT_OUTPUT_CAP)
        );
        assert_eq!(TargetLimits::of(&spec, "gpt-5.4").max_output, None);
    }

    #[test]
    fn output_is_the_callers_cap_else_the_adapters_else_the_catalogs_else_the_default() {
        let asked = json!({"max_tokens": 50, "max_completion_tokens": 70});
        assert_eq!(output_cap(&asked, &OPENAI), 70);
        assert_eq!(output_cap(&json!({"max_tokens": 50}), &OPENAI), 50);
        let none = json!({});
        assert_eq!(output_cap(&none, &OPENAI), DEFAULT_OUTPUT_CAP);
        assert_eq!(
            injected_output_cap(&none, &OPENAI),
            Some(DEFAULT_OUTPUT_CAP)
        );
        let known = limits(ProviderKind::OpenaiCompatible, Some(400_000), Some(128_000));
        assert_eq!(output_cap(&none, &known), 128_000);
        assert_eq!(injected_output_cap(&none, &known), None);
        let claude = limits(ProviderKind::Anthropic, None, Some(64_000));
        assert_eq!(output_cap(&none, &claude), ANTHROPIC_DEFAULT_MAX_TOKENS);
        assert_eq!(injected_output_cap(&none, &claude), None);
        assert_eq!(injected_output_cap(&asked, &OPENAI), None);
        assert_eq!(known.output_ceiling(), 128_000);
        assert_eq!(OPENAI.output_ceiling(), MAX_OUTPUT_TOKENS);
    }

    #[test]
    fn n_multiplies_the_output_and_the_prompt_counts_every_byte() {
        let body = json!({"model":"m","n":20,"max_tokens":50,
            "messages":[{"role":"user","content":"hello"}]});
        let worst = worst_usage(Endpoint::Chat, &body, &OPENAI).unwrap();
        assert_eq!(worst.completion_tokens, 1_000);
        // Every byte of the body's keys and values (the model name
        // included), and the framing of each message.
        let text = ["model", "m", "n", "20", "max_tokens", "50", "messages"]
            .iter()
            .chain(&["role", "user", "content", "hello"])
            .map(|s| s.len() as u64)
            .sum::<u64>();
        assert!(worst.prompt_tokens >= text + MESSAGE_OVERHEAD);
    }

    #[test]
    fn tools_tool_calls_images_and_files_are_held() {
        let plain = json!({"messages":[{"role":"user","content":"hi"}],"max_tokens":1});
        let base = worst_usage(Endpoint::Chat, &plain, &OPENAI)
            .unwrap()
            .prompt_tokens;
        let tools = json!({"messages":[{"role":"user","content":"hi"}],"max_tokens":1,
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]});
        assert!(
            worst_usage(Endpoint::Chat, &tools, &OPENAI)
                .unwrap()
                .prompt_tokens
                > base + TOOLS_OVERHEAD
        );
        let calls = json!({"max_tokens":1,"messages":[{"role":"assistant","content":null,
            "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":\"0123456789\"}"}}]}]});
        assert!(
            worst_usage(Endpoint::Chat, &calls, &OPENAI)
                .unwrap()
                .prompt_tokens
                > 40
        );
        let image = json!({"max_tokens":1,"messages":[{"role":"user","content":[
            {"type":"text","text":"what is this?"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
            {"type":"image_url","image_url":{"url":"https://x/y.png"}},
            {"type":"file","file":{"file_data":"JVBERi0="}}]}]});
        let held = worst_usage(Endpoint::Chat, &image, &OPENAI)
            .unwrap()
            .prompt_tokens;
        assert!(held >= 2 * IMAGE_TOKENS + FILE_TOKENS);
        // The context window caps the prompt.
        let small = limits(ProviderKind::OpenaiCompatible, Some(8_000), None);
        assert_eq!(
            worst_usage(Endpoint::Chat, &image, &small)
                .unwrap()
                .prompt_tokens,
            8_000
        );
    }

    #[test]
    fn token_arrays_count_one_token_per_integer() {
        let body = json!({"input": [[1, 2, 3], [4, 5]]});
        assert_eq!(
            worst_usage(Endpoint::Embeddings, &body, &OPENAI)
                .unwrap()
                .prompt_tokens,
            5
        );
        let text = json!({"input": ["abcd", "ef"]});
        assert_eq!(
            worst_usage(Endpoint::Embeddings, &text, &OPENAI)
                .unwrap()
                .prompt_tokens,
            6 + 2 * MESSAGE_OVERHEAD
        );
    }

    #[test]
    fn absurd_numbers_overflow_instead_of_wrapping() {
        let body = json!({"messages":[],"n":128,"max_tokens": 9_223_372_036_854_775_800u64});
        assert_eq!(worst_usage(Endpoint::Chat, &body, &OPENAI), Err(Overflow));
        let body = json!({"messages":[],"n":2,"max_tokens": u64::MAX / 2 + 1});
        assert_eq!(worst_usage(Endpoint::Chat, &body, &OPENAI), Err(Overflow));
    }

    #[test]
    fn media_hold_their_units_and_token_priced_output() {
        let images =
            worst_usage(Endpoint::Images, &json!({"prompt":"fox","n":3}), &OPENAI).unwrap();
        assert_eq!(images.images, 3);
        assert_eq!(images.completion_tokens, 3 * IMAGE_OUTPUT_TOKENS);
        let speech = worst_usage(Endpoint::Speech, &json!({"input":"héllo"}), &OPENAI).unwrap();
        assert_eq!(speech.characters, 5);
        let body = json!({"file": {"max_seconds": 42}});
        let heard = worst_usage(Endpoint::Transcriptions, &body, &OPENAI).unwrap();
        assert_eq!(heard.audio_seconds, 42);
        assert_eq!(heard.prompt_tokens, 42 * TRANSCRIPTION_TOKENS_PER_SECOND);
    }

    /// A WAV file of `seconds` of silence at 16 kHz, 16-bit mono, with a
    /// `LIST` chunk (odd-sized, so padded) before `fmt `.
    fn wav(seconds: u32, byte_rate: u32) -> Vec<u8> {
        let data = vec![0u8; (32_000 * seconds) as usize];
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        out.extend(b"LIST");
        out.extend(3u32.to_le_bytes());
        out.extend(b"abc\0");
        out.extend(b"fmt ");
        out.extend(16u32.to_le_bytes());
        out.extend(1u16.to_le_bytes()); // PCM
        out.extend(1u16.to_le_bytes()); // mono
        out.extend(16_000u32.to_le_bytes());
        out.extend(byte_rate.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(16u16.to_le_bytes());
        out.extend(b"data");
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn a_wav_upload_is_bounded_by_its_byte_rate() {
        assert_eq!(wav_byte_rate(&wav(3, 32_000)), Some(32_000));
        // 3 s of samples plus the header: just over 3 s.
        assert_eq!(audio_seconds_upper(&wav(3, 32_000)), 4);
        assert_eq!(audio_seconds_upper(&wav(60, 32_000)), 61);
    }

    #[test]
    fn a_wav_header_that_lies_about_its_rate_is_not_believed() {
        // 0xFFFFFFFF bytes a second would hold one second for any upload.
        let lying = wav(3, u32::MAX);
        assert_eq!(wav_byte_rate(&lying), None);
        assert_eq!(
            audio_seconds_upper(&lying),
            (lying.len() as u64).div_ceil(MIN_AUDIO_BYTES_PER_SECOND)
        );
        // A consistent header at an implausible rate is not believed either.
        let mut fast = wav(1, 32_000);
        let fmt = fast.windows(4).position(|w| w == b"fmt ").unwrap();
        fast[fmt + 12..fmt + 16].copy_from_slice(&4_000_000u32.to_le_bytes());
        fast[fmt + 16..fmt + 20].copy_from_slice(&8_000_000u32.to_le_bytes());
        assert_eq!(wav_byte_rate(&fast), None);
    }

    #[test]
    fn other_uploads_are_bounded_at_six_kilobits_a_second() {
        // A 750 KB MP3 lasts at most 1,000 s (it is 8 kbit/s or more).
        assert_eq!(audio_seconds_upper(&vec![0xff; 750_000]), 1_000);
        assert_eq!(audio_seconds_upper(b"ID3"), 1);
        assert_eq!(audio_seconds_upper(b""), 0);
        // Truncated or odd RIFF files fall back to the floor.
        assert_eq!(wav_byte_rate(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(wav_byte_rate(b"RIFF\0\0\0\0AVI LIST"), None);
        let mut huge_chunk = b"RIFF\0\0\0\0WAVEJUNK".to_vec();
        huge_chunk.extend(u32::MAX.to_le_bytes());
        assert_eq!(wav_byte_rate(&huge_chunk), None);
    }
}

#[cfg(test)]
mod properties;
