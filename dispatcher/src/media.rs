//! Media endpoints (`/v1/images/generations`, `/v1/audio/speech`) for
//! OpenAI-compatible providers, and the pieces native media adapters share:
//! raw (non-JSON) answers, `multipart/form-data` bodies, and the parts of
//! async (create, poll, cancel) adapters: cancel-on-drop and bounded fetches.

use std::time::Duration;

use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_events::wire::Endpoint;
use aigw_events::{ErrorClass, Usage};
use aigw_runtime::egress::{Egress, EgressError};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::adapter::Answer;
use crate::openai::{self, UpstreamError};
use crate::{assemblyai, elevenlabs, replicate, runway, stability};

/// `POST /v1/images/generations` with an OpenAI-format body (model set).
/// `egress` fetches the output files async providers answer with.
pub async fn images(
    http: &reqwest::Client,
    egress: &Egress,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    match provider.kind {
        ProviderKind::OpenaiCompatible => {
            let url = url(&provider.base_url, "images/generations");
            let mut request = http.post(url).json(body);
            if let Some(key) = api_key {
                request = request.bearer_auth(key.expose_secret());
            }
            let (body, _) = send_raw(request, &provider.name).await?;
            let parsed: Value =
                serde_json::from_slice(&body).map_err(|_| not_json(&provider.name))?;
            Ok(Answer::Media {
                usage: openai_image_usage(&parsed),
                content_type: "application/json".into(),
                body,
            })
        }
        ProviderKind::Stability => stability::images(http, provider, api_key, body).await,
        ProviderKind::Replicate => replicate::images(http, egress, provider, api_key, body).await,
        ProviderKind::Runway => runway::images(http, egress, provider, api_key, body).await,
        _ => Err(unsupported(provider, Endpoint::Images)),
    }
}

/// `POST /v1/audio/speech` with an OpenAI-format body (model set); the
/// answer is the audio with its content type.
pub async fn speech(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let usage = Usage {
        characters: speech_characters(body),
        ..Usage::default()
    };
    match provider.kind {
        ProviderKind::OpenaiCompatible => {
            let fallback = speech_content_type(
                body.get("response_format")
                    .and_then(Value::as_str)
                    .unwrap_or("mp3"),
            );
            let url = url(&provider.base_url, "audio/speech");
            let mut request = http.post(url).json(body);
            if let Some(key) = api_key {
                request = request.bearer_auth(key.expose_secret());
            }
            let (body, content_type) = send_raw(request, &provider.name).await?;
            let content_type = content_type.unwrap_or_else(|| fallback.to_string());
            Ok(Answer::Media {
                body,
                content_type,
                usage,
            })
        }
        ProviderKind::Elevenlabs => elevenlabs::speech(http, provider, api_key, body, usage).await,
        _ => Err(unsupported(provider, Endpoint::Speech)),
    }
}

/// `POST /v1/audio/transcriptions`: `body` is the JSON the ingress queued
/// (`model`, `response_format`, `language`, `prompt`, `temperature`, and
/// `file` naming the upload), `audio` the uploaded file.
pub async fn transcriptions(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    audio: Bytes,
) -> Result<Answer, UpstreamError> {
    match provider.kind {
        ProviderKind::OpenaiCompatible => {
            let (content_type, form) = multipart(&openai_transcription_form(body, audio));
            let mut request = http
                .post(url(&provider.base_url, "audio/transcriptions"))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(form);
            if let Some(key) = api_key {
                request = request.bearer_auth(key.expose_secret());
            }
            let (answer, _) = send_raw(request, &provider.name).await?;
            let parsed: Value =
                serde_json::from_slice(&answer).map_err(|_| not_json(&provider.name))?;
            let transcript = openai_transcript(&parsed).ok_or_else(|| not_json(&provider.name))?;
            Ok(match format(body) {
                "text" => transcript_answer(body, transcript),
                // The provider's own JSON (it may carry more than the text).
                _ => Answer::Media {
                    body: answer,
                    content_type: "application/json".into(),
                    usage: transcript.usage,
                },
            })
        }
        ProviderKind::Assemblyai => {
            assemblyai::transcriptions(http, provider, api_key, body, audio).await
        }
        _ => Err(unsupported(provider, Endpoint::Transcriptions)),
    }
}

fn format(body: &Value) -> &str {
    body.get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("json")
}

/// The multipart form OpenAI takes; JSON is always asked for, so the usage
/// comes back whatever the caller wants.
pub fn openai_transcription_form(body: &Value, audio: Bytes) -> Vec<(&'static str, Part)> {
    let text = |f: &str| body.pointer(f).and_then(Value::as_str).map(str::to_string);
    let mut fields = vec![
        (
            "file",
            Part::File {
                filename: text("/file/filename").unwrap_or_else(|| "audio".into()),
                content_type: text("/file/content_type")
                    .unwrap_or_else(|| "application/octet-stream".into()),
                bytes: audio,
            },
        ),
        ("model", Part::Text(text("/model").unwrap_or_default())),
        ("response_format", Part::Text("json".into())),
    ];
    for (field, pointer) in [("language", "/language"), ("prompt", "/prompt")] {
        if let Some(v) = text(pointer) {
            fields.push((field, Part::Text(v)));
        }
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        fields.push(("temperature", Part::Text(t.to_string())));
    }
    fields
}

/// A finished transcription: its text and what it consumed.
#[derive(Debug, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub usage: Usage,
}

/// Reads OpenAI's transcription JSON: `text`, and `usage` as
/// `{"type":"duration","seconds"}` (whisper) or `{"type":"tokens",...}`.
pub fn openai_transcript(answer: &Value) -> Option<Transcript> {
    let text = answer.get("text")?.as_str()?.to_string();
    let usage = answer.get("usage");
    let number = |field: &str| {
        usage
            .and_then(|u| u.get(field))
            .and_then(Value::as_f64)
            .map_or(0, |n| n.max(0.0).ceil() as u64)
    };
    Some(Transcript {
        text,
        usage: Usage {
            prompt_tokens: number("input_tokens"),
            completion_tokens: number("output_tokens"),
            audio_seconds: number("seconds"),
            ..Usage::default()
        },
    })
}

/// The answer in the caller's `response_format`: `{"text"}` or plain text.
pub fn transcript_answer(body: &Value, transcript: Transcript) -> Answer {
    let (content_type, bytes) = match format(body) {
        "text" => ("text/plain; charset=utf-8", Bytes::from(transcript.text)),
        _ => (
            "application/json",
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({"text": transcript.text}))
                    .unwrap_or_default(),
            ),
        ),
    };
    Answer::Media {
        body: bytes,
        content_type: content_type.into(),
        usage: transcript.usage,
    }
}

/// Characters billed for a speech request: those of its `input`.
pub fn speech_characters(body: &Value) -> u64 {
    body.get("input")
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count() as u64)
}

/// The content type OpenAI answers for a speech `response_format`.
pub fn speech_content_type(format: &str) -> &'static str {
    match format {
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    }
}

/// Images in an OpenAI images answer, and its token usage where the model
/// reports one (`gpt-image-*`: `input_tokens`, `output_tokens`).
pub fn openai_image_usage(answer: &Value) -> Usage {
    let images = answer
        .get("data")
        .and_then(Value::as_array)
        .map_or(0, |d| d.len() as u64);
    let tokens = |field: &str| {
        answer
            .pointer(&format!("/usage/{field}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        prompt_tokens: tokens("input_tokens"),
        completion_tokens: tokens("output_tokens"),
        images,
        ..Usage::default()
    }
}

pub fn url(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

/// Sends a request whose successful answer is taken as raw bytes (with its
/// content type); failures are classified like any upstream error.
pub async fn send_raw(
    request: reqwest::RequestBuilder,
    provider: &str,
) -> Result<(Bytes, Option<String>), UpstreamError> {
    let response = request
        .send()
        .await
        .map_err(|e| openai::transport_error(&e, provider))?;
    if !response.status().is_success() {
        return Err(openai::error_from_response(response, provider).await);
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .bytes()
        .await
        .map_err(|e| openai::transport_error(&e, provider))?;
    Ok((body, content_type))
}

/// An async media task (prediction) that ended without a result, as the
/// caller's 502.
pub fn task_failed(provider: &str, message: &str) -> UpstreamError {
    UpstreamError {
        class: ErrorClass::Upstream,
        upstream_status: Some(200),
        status: 502,
        error_type: "upstream_error".into(),
        code: Some("prediction_failed".into()),
        message: format!("provider {provider}: {message}"),
        retry_after: None,
    }
}

/// Largest output file fetched to answer `b64_json`.
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Cancels an upstream task unless disarmed (`request` set to `None`):
/// dropped with the attempt on the deadline or the caller's cancellation, it
/// fires the cancel call on its own.
pub struct CancelOnDrop {
    pub request: Option<reqwest::RequestBuilder>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = request.timeout(Duration::from_secs(10)).send().await {
                    tracing::warn!(error = %e, "cancelling an upstream media task failed");
                }
            });
        }
    }
}

/// Longest an output file may take to download.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches one output file of an async task, at most [`MAX_IMAGE_BYTES`].
/// Its URL comes from the provider's answer, so it goes through `egress`:
/// public addresses only (unless allowed), no redirect, no credential.
pub async fn fetch_image(egress: &Egress, url: &str) -> Result<Bytes, EgressError> {
    egress.fetch(url, MAX_IMAGE_BYTES, FETCH_TIMEOUT).await
}

pub fn not_json(provider: &str) -> UpstreamError {
    UpstreamError {
        class: ErrorClass::Upstream,
        upstream_status: Some(200),
        status: 502,
        error_type: "upstream_error".into(),
        code: Some("upstream_invalid_response".into()),
        message: format!("provider {provider} sent a response aigw cannot read"),
        retry_after: None,
    }
}

/// The caller asked a provider for something it cannot do (never retried).
pub fn invalid(message: String, code: &str) -> UpstreamError {
    UpstreamError {
        class: ErrorClass::Client,
        upstream_status: None,
        status: 400,
        error_type: "invalid_request_error".into(),
        code: Some(code.into()),
        message,
        retry_after: None,
    }
}

pub fn unsupported(provider: &ProviderSpec, endpoint: Endpoint) -> UpstreamError {
    invalid(
        format!(
            "provider {} does not offer {} through aigw",
            provider.name,
            endpoint.path()
        ),
        "unsupported_endpoint",
    )
}

/// One field of a `multipart/form-data` body.
pub enum Part {
    Text(String),
    File {
        filename: String,
        content_type: String,
        bytes: Bytes,
    },
}

/// A `multipart/form-data` body and its content type (with the boundary).
pub fn multipart(fields: &[(&str, Part)]) -> (String, Vec<u8>) {
    let boundary = format!("aigw-{}", uuid::Uuid::now_v7().simple());
    let mut out = Vec::new();
    for (name, part) in fields {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Text(value) => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                out.extend_from_slice(value.as_bytes());
            }
            Part::File {
                filename,
                content_type,
                bytes,
            } => {
                let filename = filename.replace(['"', '\r', '\n'], "_");
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

/// For providers that serve only media: checks the endpoint and credential
/// with a free, read-only call (the account, user or organization the key
/// belongs to; AssemblyAI: a one-item transcript list) instead of a paid
/// generation. `None` for providers that can chat (they are checked with a
/// one-token chat).
pub async fn check_account(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
) -> Option<Result<&'static str, UpstreamError>> {
    let base = provider.base_url.trim_end_matches('/');
    let auth = reqwest::header::AUTHORIZATION.as_str();
    // (URL, header the key goes in, whether it is a bearer token, what is read)
    let (url, key_header, bearer, what) = match provider.kind {
        // The account API is v1, at the root of the v2beta base.
        ProviderKind::Stability => {
            let root = base.strip_suffix("/v2beta").unwrap_or(base);
            (url(root, "v1/user/account"), auth, true, "account")
        }
        ProviderKind::Elevenlabs => (url(base, "v1/user"), "xi-api-key", false, "user"),
        ProviderKind::Assemblyai => (
            url(base, "v2/transcript?limit=1"),
            auth,
            false,
            "transcript list",
        ),
        ProviderKind::Replicate => (url(base, "account"), auth, true, "account"),
        ProviderKind::Runway => (url(base, "organization"), auth, true, "organization"),
        _ => return None,
    };
    let mut request = http.get(url).timeout(Duration::from_secs(30));
    if provider.kind == ProviderKind::Runway {
        request = request.header("X-Runway-Version", crate::runway::API_VERSION);
    }
    if let Some(key) = api_key {
        let value = if bearer {
            format!("Bearer {}", key.expose_secret())
        } else {
            key.expose_secret().to_string()
        };
        if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&value) {
            value.set_sensitive(true);
            request = request.header(key_header, value);
        }
    }
    Some(send_raw(request, &provider.name).await.map(|_| what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_usage_counts_images_and_tokens() {
        let u = openai_image_usage(
            &json!({"created": 1, "data": [{"b64_json": "a"}, {"b64_json": "b"}],
            "usage": {"input_tokens": 10, "output_tokens": 4160, "total_tokens": 4170}}),
        );
        assert_eq!(
            (u.images, u.prompt_tokens, u.completion_tokens),
            (2, 10, 4160)
        );
        let u = openai_image_usage(&json!({"created": 1, "data": [{"url": "https://x"}]}));
        assert_eq!((u.images, u.total()), (1, 0));
    }

    #[test]
    fn multipart_bodies_are_well_formed() {
        let (ct, body) = multipart(&[
            ("prompt", Part::Text("a cat".into())),
            (
                "file",
                Part::File {
                    filename: "a\"b.wav".into(),
                    content_type: "audio/wav".into(),
                    bytes: Bytes::from_static(b"RIFF"),
                },
            ),
        ]);
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"prompt\"\r\n\r\na cat\r\n"));
        assert!(text.contains(
            "name=\"file\"; filename=\"a_b.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n"
        ));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }

    #[test]
    fn transcripts_from_openai() {
        let t = openai_transcript(
            &json!({"text": "Hello.", "usage": {"type": "duration", "seconds": 9}}),
        )
        .unwrap();
        assert_eq!((t.text.as_str(), t.usage.audio_seconds), ("Hello.", 9));
        let t = openai_transcript(&json!({"text": "Hi", "usage": {"type": "tokens",
            "input_tokens": 14, "output_tokens": 45, "total_tokens": 59}}))
        .unwrap();
        assert_eq!((t.usage.prompt_tokens, t.usage.completion_tokens), (14, 45));
        assert_eq!(openai_transcript(&json!({"error": {}})), None);
        let form = openai_transcription_form(
            &json!({"model": "whisper-1", "response_format": "text", "language": "en",
                "file": {"filename": "a.mp3", "content_type": "audio/mpeg", "bytes": 3}}),
            Bytes::from_static(b"ID3"),
        );
        let names: Vec<&str> = form.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["file", "model", "response_format", "language"]);
        assert!(matches!(&form[2].1, Part::Text(f) if f == "json"));
        let Answer::Media {
            body, content_type, ..
        } = transcript_answer(
            &json!({"response_format": "text"}),
            Transcript {
                text: "Hello.".into(),
                usage: Usage::default(),
            },
        )
        else {
            panic!("not media");
        };
        assert_eq!(
            (body.as_ref(), content_type.as_str()),
            (&b"Hello."[..], "text/plain; charset=utf-8")
        );
    }

    #[test]
    fn speech_formats_map_to_content_types() {
        assert_eq!(speech_content_type("mp3"), "audio/mpeg");
        assert_eq!(speech_content_type("wav"), "audio/wav");
        assert_eq!(speech_characters(&json!({"input": "héllo"})), 5);
    }
}
