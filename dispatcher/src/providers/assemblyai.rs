//! AssemblyAI pre-recorded transcription, as OpenAI's
//! `/v1/audio/transcriptions`: upload the audio (`POST /v2/upload`, raw
//! bytes), submit it (`POST /v2/transcript {"audio_url"}`), then poll
//! `GET /v2/transcript/{id}` until `completed` or `error`. The key goes in
//! `Authorization` with no `Bearer`. The poll runs inside the attempt, so the
//! request's deadline and the caller's cancellation stop it, and the
//! dispatcher's in-progress acks keep the JetStream message alive meanwhile.

use std::time::Duration;

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Call, Capabilities, Provider, Reply};
use crate::answer::Answer;
use crate::providers::media::KeyHeader;
use crate::providers::media::{self, Transcript};
use crate::upstream;
use crate::upstream::{UpstreamError, UpstreamErrorKind};
use aigw_events::wire::Endpoint;
use futures::future::BoxFuture;

/// AssemblyAI: transcription.
pub struct Assemblyai;

impl Provider for Assemblyai {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Transcriptions],
            native: &[],
            max_images: None,
            cancels_upstream: true,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "assemblyai".into()
    }

    fn transcriptions<'a>(&'a self, call: Call<'a>, body: &'a Value, audio: Bytes) -> Reply<'a> {
        Box::pin(transcriptions(
            call.http,
            call.spec,
            call.api_key(),
            body,
            audio,
        ))
    }

    fn check_account<'a>(
        &'a self,
        call: Call<'a>,
    ) -> Option<BoxFuture<'a, Result<&'static str, UpstreamError>>> {
        let base = call.spec.base_url.trim_end_matches('/');
        let url = upstream::url(base, "v2/transcript?limit=1");
        Some(Box::pin(media::account_check(
            call,
            url,
            KeyHeader::Plain("authorization"),
            None,
            "transcript list",
        )))
    }
}

/// First wait between polls; doubled up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(3);

/// The submit body for an uploaded file and an OpenAI transcription body.
pub fn submit_body(upload_url: &str, body: &Value) -> Value {
    let mut out = json!({"audio_url": upload_url});
    if let Some(model) = body.get("model").and_then(Value::as_str) {
        out["speech_models"] = json!([model]);
    }
    match body.get("language").and_then(Value::as_str) {
        Some(lang) => out["language_code"] = json!(lang),
        None => out["language_detection"] = json!(true),
    }
    if let Some(prompt) = body.get("prompt").and_then(Value::as_str) {
        out["prompt"] = json!(prompt);
    }
    out
}

/// What one poll found.
#[derive(Debug, PartialEq)]
pub enum Status {
    Pending,
    Done(Transcript),
    Failed(String),
}

/// Reads a transcript object.
pub fn status(transcript: &Value) -> Status {
    match transcript.get("status").and_then(Value::as_str) {
        Some("completed") => Status::Done(Transcript {
            text: transcript
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            usage: Usage {
                audio_seconds: transcript
                    .get("audio_duration")
                    .and_then(Value::as_f64)
                    .map_or(0, |s| s.max(0.0).ceil() as u64),
                ..Usage::default()
            },
        }),
        Some("error") => Status::Failed(
            transcript
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("transcription failed")
                .to_string(),
        ),
        _ => Status::Pending,
    }
}

fn authorized(
    request: reqwest::RequestBuilder,
    key: Option<&SecretString>,
) -> reqwest::RequestBuilder {
    match key {
        Some(k) => request.header(reqwest::header::AUTHORIZATION, k.expose_secret()),
        None => request,
    }
}

fn json_of(bytes: &Bytes, provider: &str) -> Result<Value, UpstreamError> {
    serde_json::from_slice(bytes).map_err(|_| upstream::not_json(provider))
}

pub async fn transcriptions(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    audio: Bytes,
) -> Result<Answer, UpstreamError> {
    let name = provider.name.as_str();
    let base = &provider.base_url;
    let upload = authorized(http.post(upstream::url(base, "v2/upload")), api_key)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(audio);
    let (uploaded, _) = upstream::send_raw(upload, name).await?;
    let upload_url = json_of(&uploaded, name)?
        .get("upload_url")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| upstream::not_json(name))?;
    let submit = authorized(http.post(upstream::url(base, "v2/transcript")), api_key)
        .json(&submit_body(&upload_url, body));
    let (submitted, _) = upstream::send_raw(submit, name).await?;
    let submitted = json_of(&submitted, name)?;
    let id = submitted
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| {
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .ok_or_else(|| upstream::not_json(name))?
        .to_string();
    let mut found = status(&submitted);
    let mut wait = FIRST_POLL;
    loop {
        match found {
            Status::Done(transcript) => return Ok(media::transcript_answer(body, transcript)),
            Status::Failed(message) => {
                return Err(UpstreamError::new(
                    UpstreamErrorKind::TranscriptionFailed,
                    format!("provider {name}: {message}"),
                )
                .from_status(200));
            }
            Status::Pending => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_POLL);
        let poll = authorized(
            http.get(upstream::url(base, &format!("v2/transcript/{id}"))),
            api_key,
        );
        let (polled, _) = upstream::send_raw(poll, name).await?;
        found = status(&json_of(&polled, name)?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_fields_become_a_submit_body() {
        assert_eq!(
            submit_body(
                "https://cdn.assemblyai.com/upload/1",
                &json!({"model": "universal-2", "language": "fr", "response_format": "json"})
            ),
            json!({"audio_url": "https://cdn.assemblyai.com/upload/1",
                "speech_models": ["universal-2"], "language_code": "fr"})
        );
        assert_eq!(
            submit_body("u", &json!({"model": "m"}))["language_detection"],
            true
        );
    }

    #[test]
    fn transcript_statuses() {
        assert_eq!(
            status(&json!({"id": "t", "status": "queued"})),
            Status::Pending
        );
        assert_eq!(status(&json!({"status": "processing"})), Status::Pending);
        let Status::Done(t) =
            status(&json!({"status": "completed", "text": "Hi.", "audio_duration": 12.3}))
        else {
            panic!("not done");
        };
        assert_eq!((t.text.as_str(), t.usage.audio_seconds), ("Hi.", 13));
        assert_eq!(
            status(&json!({"status": "error", "error": "no audio"})),
            Status::Failed("no audio".into())
        );
    }
}
