//! Media endpoints (`/v1/images/generations`, `/v1/audio/speech`) for
//! OpenAI-compatible providers, and the pieces native media adapters share:
//! raw (non-JSON) answers and `multipart/form-data` bodies.

use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_events::wire::Endpoint;
use aigw_events::{ErrorClass, Usage};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::adapter::Answer;
use crate::openai::{self, UpstreamError};
use crate::{elevenlabs, stability};

/// `POST /v1/images/generations` with an OpenAI-format body (model set).
pub async fn images(
    http: &reqwest::Client,
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
    fn speech_formats_map_to_content_types() {
        assert_eq!(speech_content_type("mp3"), "audio/mpeg");
        assert_eq!(speech_content_type("wav"), "audio/wav");
        assert_eq!(speech_characters(&json!({"input": "héllo"})), 5);
    }
}
