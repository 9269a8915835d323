//! ElevenLabs text-to-speech: OpenAI's `/v1/audio/speech` to and from
//! `POST {base}/v1/text-to-speech/{voice_id}?output_format=...` with the
//! `xi-api-key` header and `{"text","model_id"}`, answered with the audio.
//! The caller's `voice` is the ElevenLabs voice id.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Capabilities, Provider, Reply};
use crate::answer::Answer;
use crate::providers::media;
use crate::providers::media::KeyHeader;
use crate::upstream;
use crate::upstream::UpstreamError;
use aigw_events::wire::Endpoint;
use futures::future::BoxFuture;

/// ElevenLabs: text to speech.
pub struct Elevenlabs;

impl Provider for Elevenlabs {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Speech],
            native: &[],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "elevenlabs".into()
    }

    fn speech<'a>(&'a self, call: super::Call<'a>, body: &'a Value) -> Reply<'a> {
        let usage = Usage {
            characters: media::speech_characters(body),
            ..Usage::default()
        };
        Box::pin(speech(call.http, call.spec, call.api_key(), body, usage))
    }

    fn check_account<'a>(
        &'a self,
        call: super::Call<'a>,
    ) -> Option<BoxFuture<'a, Result<&'static str, UpstreamError>>> {
        let base = call.spec.base_url.trim_end_matches('/');
        let url = upstream::url(base, "v1/user");
        Some(Box::pin(media::account_check(
            call,
            url,
            KeyHeader::Plain("xi-api-key"),
            None,
            "user",
        )))
    }
}

/// A text-to-speech call: path under the base URL, `output_format`, JSON
/// body, and the content type of the audio it returns.
#[derive(Debug, PartialEq)]
pub struct Call {
    pub path: String,
    pub output_format: &'static str,
    pub body: Value,
    pub content_type: &'static str,
}

/// ElevenLabs' output format and content type for an OpenAI
/// `response_format`, if it offers one.
pub fn output_format(format: &str) -> Option<(&'static str, &'static str)> {
    match format {
        "mp3" => Some(("mp3_44100_128", "audio/mpeg")),
        // OpenAI's pcm is 24 kHz 16-bit little-endian, as is ElevenLabs'.
        "pcm" => Some(("pcm_24000", "audio/pcm")),
        "opus" => Some(("opus_48000_128", "audio/opus")),
        "wav" => Some(("wav_44100", "audio/wav")),
        _ => None,
    }
}

/// Translates an OpenAI speech body (model set) into an ElevenLabs call.
pub fn to_elevenlabs(body: &Value) -> Result<Call, UpstreamError> {
    let voice = body.get("voice").and_then(Value::as_str).unwrap_or("");
    if voice.is_empty()
        || !voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(upstream::invalid(
            format!(
                "{voice:?} is not an ElevenLabs voice id ('voice' must be one, e.g. JBFqnCBsd6RMkjVDRZzb)"
            ),
            "invalid_voice",
        ));
    }
    let format = body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3");
    let (output_format, content_type) = output_format(format).ok_or_else(|| {
        upstream::invalid(
            format!("ElevenLabs does not produce {format:?} audio (mp3, pcm, opus or wav)"),
            "invalid_response_format",
        )
    })?;
    let mut payload = json!({
        "text": body.get("input").and_then(Value::as_str).unwrap_or(""),
        "model_id": body.get("model").and_then(Value::as_str).unwrap_or(""),
    });
    if let Some(speed) = body.get("speed").and_then(Value::as_f64) {
        payload["voice_settings"] = json!({"speed": speed});
    }
    Ok(Call {
        path: format!("v1/text-to-speech/{voice}"),
        output_format,
        body: payload,
        content_type,
    })
}

pub async fn speech(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    usage: Usage,
) -> Result<Answer, UpstreamError> {
    let call = to_elevenlabs(body)?;
    let mut request = http
        .post(format!(
            "{}?output_format={}",
            upstream::url(&provider.base_url, &call.path),
            call.output_format
        ))
        .json(&call.body);
    if let Some(key) = api_key {
        request = request.header("xi-api-key", key.expose_secret());
    }
    let (audio, _) = upstream::send_raw(request, &provider.name).await?;
    Ok(Answer::Media {
        body: audio,
        content_type: call.content_type.into(),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_speech_becomes_an_elevenlabs_call() {
        let call = to_elevenlabs(&json!({"model": "eleven_multilingual_v2",
            "input": "Hello there", "voice": "JBFqnCBsd6RMkjVDRZzb", "speed": 1.1}))
        .unwrap();
        assert_eq!(call.path, "v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb");
        assert_eq!(call.output_format, "mp3_44100_128");
        assert_eq!(call.content_type, "audio/mpeg");
        assert_eq!(
            call.body,
            json!({"text": "Hello there", "model_id": "eleven_multilingual_v2",
                "voice_settings": {"speed": 1.1}})
        );
        let call = to_elevenlabs(&json!({"model": "m", "input": "x", "voice": "v1",
            "response_format": "pcm"}))
        .unwrap();
        assert_eq!(
            (call.output_format, call.content_type),
            ("pcm_24000", "audio/pcm")
        );
    }

    #[test]
    fn unusable_voices_and_formats_are_the_callers_fault() {
        for body in [
            json!({"model": "m", "input": "x", "voice": "../admin"}),
            json!({"model": "m", "input": "x", "voice": "v", "response_format": "flac"}),
        ] {
            assert_eq!(to_elevenlabs(&body).unwrap_err().status(), 400);
        }
    }
}
