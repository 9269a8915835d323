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
/// the speech input); for transcriptions the upper bound of the upload's
/// duration the ingress put in `file.max_seconds` (see
/// [`audio_seconds_upper`]).
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
        Endpoint::Transcriptions => Usage {
            audio_seconds: body
                .pointer("/file/max_seconds")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            ..Usage::default()
        },
    }
}

/// The lowest bit rate an upload's audio is assumed to be coded at, in
/// bytes per second: 6 kbit/s, Opus's floor (MP3 goes down to 8, AAC and
/// Vorbis stay above).
const MIN_AUDIO_BYTES_PER_SECOND: u64 = 750;

/// An upper bound of an audio file's duration, in seconds, for budget holds:
/// a WAV file's from its header's byte rate (its size over that rate), any
/// other format's from its size at `MIN_AUDIO_BYTES_PER_SECOND`.
pub fn audio_seconds_upper(audio: &[u8]) -> u64 {
    let bytes = audio.len() as u64;
    let rate = match wav_byte_rate(audio) {
        Some(rate) if rate > 0 => rate,
        _ => MIN_AUDIO_BYTES_PER_SECOND,
    };
    bytes.div_ceil(rate)
}

/// The byte rate in a RIFF/WAVE file's `fmt ` chunk.
fn wav_byte_rate(audio: &[u8]) -> Option<u64> {
    if audio.get(0..4)? != b"RIFF" || audio.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12usize;
    while at + 8 <= audio.len() {
        let id = audio.get(at..at + 4)?;
        let size = u32::from_le_bytes(audio.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        if id == b"fmt " {
            let rate = audio.get(at + 16..at + 20)?;
            return Some(u64::from(u32::from_le_bytes(rate.try_into().ok()?)));
        }
        // Chunks are padded to an even size.
        at = at.checked_add(8 + size + (size & 1))?;
    }
    None
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

#[cfg(test)]
mod audio_tests {
    use super::*;

    /// A WAV file of `seconds` of silence at 16 kHz, 16-bit mono, with a
    /// `LIST` chunk (odd-sized, so padded) before `fmt `.
    fn wav(seconds: u32) -> Vec<u8> {
        let rate = 32_000u32;
        let data = vec![0u8; (rate * seconds) as usize];
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        out.extend(b"LIST");
        out.extend(3u32.to_le_bytes());
        out.extend(b"abc\0");
        out.extend(b"fmt ");
        out.extend(16u32.to_le_bytes());
        out.extend(1u16.to_le_bytes()); // PCM
        out.extend(1u16.to_le_bytes()); // mono
        out.extend(16_000u32.to_le_bytes());
        out.extend(rate.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(16u16.to_le_bytes());
        out.extend(b"data");
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn a_wav_upload_is_bounded_by_its_byte_rate() {
        assert_eq!(wav_byte_rate(&wav(3)), Some(32_000));
        // 3 s of samples plus the header: just over 3 s.
        assert_eq!(audio_seconds_upper(&wav(3)), 4);
        assert_eq!(audio_seconds_upper(&wav(60)), 61);
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
        let body = serde_json::json!({"file": {"max_seconds": 42}});
        assert_eq!(
            worst_usage(Endpoint::Transcriptions, &body, 0).audio_seconds,
            42
        );
    }
}
