//! What the media providers share: transcripts and their answer formats,
//! speech billing and content types, the parts of async (create, poll,
//! cancel) providers (cancel-on-drop, bounded output fetches), and the free
//! account check of media-only providers.
//!
//! Invariants: an async task is cancelled upstream when its attempt is
//! dropped unless it finished; an output file is fetched through `Egress`
//! only (public addresses, bounded size and time); an account check never
//! generates anything billable.

use std::time::Duration;

use aigw_events::Usage;
use aigw_runtime::egress::{Egress, EgressError};
use bytes::Bytes;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::Call;
use crate::answer::Answer;
use crate::upstream::{self, UpstreamError};

/// The `response_format` a transcription asked for (`json` by default).
pub fn response_format(body: &Value) -> &str {
    body.get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("json")
}

/// A finished transcription: its text and what it consumed.
#[derive(Debug, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub usage: Usage,
}

/// The answer in the caller's `response_format`: `{"text"}` or plain text.
pub fn transcript_answer(body: &Value, transcript: Transcript) -> Answer {
    let (content_type, bytes) = match response_format(body) {
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

/// How a provider's key is sent.
#[derive(Clone, Copy)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `<header>: <key>`.
    Plain(&'static str),
}

/// A free `GET url` with the call's key, answering `what` it read.
pub async fn account_check(
    call: Call<'_>,
    url: String,
    key: KeyHeader,
    extra: Option<(&'static str, &'static str)>,
    what: &'static str,
) -> Result<&'static str, UpstreamError> {
    let mut request = call.http.get(url).timeout(Duration::from_secs(30));
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    if let Some(secret) = call.api_key() {
        let (name, value) = match key {
            KeyHeader::Bearer => (
                reqwest::header::AUTHORIZATION.as_str(),
                format!("Bearer {}", secret.expose_secret()),
            ),
            KeyHeader::Plain(name) => (name, secret.expose_secret().to_string()),
        };
        if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&value) {
            value.set_sensitive(true);
            request = request.header(name, value);
        }
    }
    upstream::send_raw(request, call.name()).await.map(|_| what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn speech_formats_map_to_content_types() {
        assert_eq!(speech_content_type("mp3"), "audio/mpeg");
        assert_eq!(speech_content_type("wav"), "audio/wav");
        assert_eq!(speech_characters(&json!({"input": "héllo"})), 5);
    }
}
