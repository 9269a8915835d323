//! The OpenAI-compatible provider: any base URL that speaks OpenAI's API
//! (`/chat/completions`, `/embeddings`, `/images/generations`,
//! `/audio/speech`, `/audio/transcriptions`, `/moderations`, and the
//! `/rerank` of Jina, SiliconFlow and Voyage), and the reading of OpenAI
//! answers (usage, SSE chunks) that Azure and the relay share.
//!
//! Invariants: bodies go out as the caller sent them (after the preset's
//! known deviations, [`adjust_for_preset`]); answers come back verbatim,
//! only read for their usage.

use std::borrow::Cow;

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_events::wire::Endpoint;
use aigw_runtime::egress::Egress;
use bytes::Bytes;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{Call, Capabilities, Provider, Reply};
use crate::answer::{Answer, StreamItem};
use crate::providers::media::{self, Transcript};
use crate::upstream::{self, Part, UpstreamError, UpstreamErrorKind, broken};

/// Any server speaking OpenAI's API: every endpoint, no native dialect.
pub struct OpenaiCompatible;

impl Provider for OpenaiCompatible {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[
                Endpoint::Chat,
                Endpoint::Embeddings,
                Endpoint::Images,
                Endpoint::Speech,
                Endpoint::Transcriptions,
                Endpoint::Rerank,
                Endpoint::Moderations,
            ],
            native: &[],
            max_images: None,
            cancels_upstream: false,
        }
    }

    /// Its preset (`deepseek`, `mistral`, ...), else `openai`.
    fn gen_ai_system(&self, spec: &ProviderSpec) -> String {
        spec.preset.clone().unwrap_or_else(|| "openai".into())
    }

    fn chat<'a>(&'a self, call: Call<'a>, body: &'a Value, stream: bool) -> Reply<'a> {
        Box::pin(async move {
            let spec = call.spec;
            let body = adjust_for_preset(spec.preset.as_deref(), body);
            chat(
                call.http,
                &spec.name,
                &spec.base_url,
                call.api_key(),
                &body,
                stream,
            )
            .await
        })
    }

    fn embeddings<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        let spec = call.spec;
        let key = call.api_key();
        Box::pin(self::call(
            call.http,
            &spec.name,
            &spec.base_url,
            key,
            "embeddings",
            body,
            false,
        ))
    }

    fn images<'a>(&'a self, call: Call<'a>, _egress: &'a Egress, body: &'a Value) -> Reply<'a> {
        Box::pin(images(call, body))
    }

    fn rerank<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        Box::pin(rerank(call, body))
    }

    /// The answer is relayed as it came; OpenAI's reports no usage (it is
    /// free), so the request is billed by estimate.
    fn moderations<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        let spec = call.spec;
        Box::pin(self::call(
            call.http,
            &spec.name,
            &spec.base_url,
            call.api_key(),
            "moderations",
            body,
            false,
        ))
    }

    fn speech<'a>(&'a self, call: Call<'a>, body: &'a Value) -> Reply<'a> {
        Box::pin(speech(call, body))
    }

    fn transcriptions<'a>(&'a self, call: Call<'a>, body: &'a Value, audio: Bytes) -> Reply<'a> {
        Box::pin(transcriptions(call, body, audio))
    }
}

/// `POST {base}/rerank`: the caller's body as it came (Jina's, SiliconFlow's
/// and Voyage's shapes are the caller's), the answer in one shape.
async fn rerank(call: Call<'_>, body: &Value) -> Result<Answer, UpstreamError> {
    let name = call.name();
    let mut request = call
        .http
        .post(upstream::url(&call.spec.base_url, "rerank"))
        .json(body);
    if let Some(key) = call.api_key() {
        request = request.bearer_auth(key.expose_secret());
    }
    let response = upstream::send(request, name).await?;
    let parsed = upstream::read_json(response, name).await?;
    if let Some(err) = parsed.get("error").filter(|e| e.is_object()) {
        return Err(upstream::error_in_answer(200, err, name));
    }
    crate::rerank::answer(&parsed, body, name)
}

/// Smooths known deviations of OpenAI-compatible presets from OpenAI's
/// request format (providers.md, per provider).
pub fn adjust_for_preset<'a>(preset: Option<&str>, body: &'a Value) -> Cow<'a, Value> {
    let Some(preset) = preset else {
        return Cow::Borrowed(body);
    };
    let mut out = body.clone();
    let Some(obj) = out.as_object_mut() else {
        return Cow::Borrowed(body);
    };
    match preset {
        // Mistral names the seed `random_seed`.
        "mistral" => {
            if let Some(seed) = obj.remove("seed") {
                obj.insert("random_seed".into(), seed);
            }
        }
        // Groq answers 400 to these fields and to `name` on messages.
        "groq" => {
            for field in ["logprobs", "top_logprobs", "logit_bias"] {
                obj.remove(field);
            }
            if let Some(Value::Array(messages)) = obj.get_mut("messages") {
                for m in messages {
                    if let Some(m) = m.as_object_mut() {
                        m.remove("name");
                    }
                }
            }
        }
        // SiliconFlow takes at most 4 stop sequences.
        "siliconflow" => {
            if let Some(Value::Array(stop)) = obj.get_mut("stop") {
                stop.truncate(4);
            }
        }
        _ => return Cow::Borrowed(body),
    }
    Cow::Owned(out)
}

/// Sends a chat completion request and classifies the answer.
pub async fn chat(
    http: &reqwest::Client,
    provider: &str,
    base_url: &str,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    call(
        http,
        provider,
        base_url,
        api_key,
        "chat/completions",
        body,
        stream,
    )
    .await
}

/// Sends an OpenAI-format JSON request to `{base_url}/{path}`.
pub async fn call(
    http: &reqwest::Client,
    provider: &str,
    base_url: &str,
    api_key: Option<&SecretString>,
    path: &str,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let url = upstream::url(base_url, path);
    let mut request = http.post(url).json(body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    exchange(request, provider, stream).await
}

/// Sends a prepared OpenAI-format request and classifies the answer.
pub async fn exchange(
    mut request: reqwest::RequestBuilder,
    provider: &str,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    if stream {
        request = request.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let response = request
        .send()
        .await
        .map_err(|e| upstream::transport_error(&e, provider))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return Err(upstream::error_from_response(response, provider).await);
    }
    if stream {
        return Ok(Answer::Stream(sse_items(response, provider.to_string())));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| upstream::transport_error(&e, provider))?;
    let parsed: Value = serde_json::from_slice(&body).map_err(|_| {
        UpstreamError::new(
            UpstreamErrorKind::InvalidResponse,
            format!("provider {provider} sent a response that is not JSON"),
        )
        .from_status(status)
    })?;
    // Some providers answer 200 with an error object.
    if let Some(err) = parsed.get("error").filter(|e| e.is_object()) {
        return Err(upstream::error_in_answer(status, err, provider));
    }
    Ok(Answer::Full {
        usage: parsed.get("usage").and_then(parse_usage),
        body,
    })
}

/// Turns an OpenAI-style SSE body into stream items: each `data:` payload,
/// then `[DONE]`; a transport failure becomes an error item.
pub fn sse_items(
    response: reqwest::Response,
    provider: String,
) -> futures::stream::BoxStream<'static, StreamItem> {
    upstream::sse::events(response.bytes_stream())
        .map(move |event| match event {
            Ok(ev) => {
                let data = ev.data.trim();
                if data == "[DONE]" {
                    StreamItem::Done
                } else {
                    StreamItem::Data(data.to_string())
                }
            }
            Err(eventsource_stream::EventStreamError::Transport(t)) if t.is_timeout() => {
                StreamItem::Error(broken(&provider, "the stream stalled"))
            }
            Err(_) => StreamItem::Error(broken(&provider, "the stream broke")),
        })
        .boxed()
}

/// Reads the OpenAI `usage` object: prompt and completion tokens and their
/// classes. Cache reads are OpenAI's `prompt_tokens_details.cached_tokens`
/// (xAI, Moonshot and most compatible servers too), DeepSeek's
/// `prompt_cache_hit_tokens` or a top-level `cached_tokens` (Moonshot);
/// cache writes `cache_write_tokens` (OpenAI's 2026 SDK, taken as 5-minute
/// ones) or aigw's own split (`cache_write_5m_tokens`,
/// `cache_write_1h_tokens`, when relaying another aigw); reasoning
/// `completion_tokens_details.reasoning_tokens`. All are parts of
/// `prompt_tokens` / `completion_tokens`, as in OpenAI's API.
pub fn parse_usage(usage: &Value) -> Option<Usage> {
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let at = |path: &str| usage.pointer(path).and_then(Value::as_u64);
    let write_1h = at("/prompt_tokens_details/cache_write_1h_tokens").unwrap_or(0);
    let write_5m = at("/prompt_tokens_details/cache_write_5m_tokens").unwrap_or_else(|| {
        at("/prompt_tokens_details/cache_write_tokens")
            .unwrap_or(0)
            .saturating_sub(write_1h)
    });
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: at("/prompt_tokens_details/cached_tokens")
            .or_else(|| at("/prompt_cache_hit_tokens"))
            // Moonshot's older answers: a top-level `cached_tokens`.
            .or_else(|| at("/cached_tokens"))
            .unwrap_or(0),
        cache_write_5m_tokens: write_5m,
        cache_write_1h_tokens: write_1h,
        reasoning_tokens: at("/completion_tokens_details/reasoning_tokens").unwrap_or(0),
        ..Default::default()
    })
}

/// `POST /v1/images/generations`.
async fn images(call: Call<'_>, body: &Value) -> Result<Answer, UpstreamError> {
    let name = call.name();
    let mut request = call
        .http
        .post(upstream::url(&call.spec.base_url, "images/generations"))
        .json(body);
    if let Some(key) = call.api_key() {
        request = request.bearer_auth(key.expose_secret());
    }
    let (body, _) = upstream::send_raw(request, name).await?;
    let parsed: Value = serde_json::from_slice(&body).map_err(|_| upstream::not_json(name))?;
    Ok(Answer::Media {
        usage: openai_image_usage(&parsed),
        content_type: "application/json".into(),
        body,
    })
}

/// `POST /v1/audio/speech`: the audio with its content type.
async fn speech(call: Call<'_>, body: &Value) -> Result<Answer, UpstreamError> {
    let usage = Usage {
        characters: media::speech_characters(body),
        ..Usage::default()
    };
    let fallback = media::speech_content_type(
        body.get("response_format")
            .and_then(Value::as_str)
            .unwrap_or("mp3"),
    );
    let mut request = call
        .http
        .post(upstream::url(&call.spec.base_url, "audio/speech"))
        .json(body);
    if let Some(key) = call.api_key() {
        request = request.bearer_auth(key.expose_secret());
    }
    let (body, content_type) = upstream::send_raw(request, call.name()).await?;
    let content_type = content_type.unwrap_or_else(|| fallback.to_string());
    Ok(Answer::Media {
        body,
        content_type,
        usage,
    })
}

/// `POST /v1/audio/transcriptions`: `body` is the JSON the ingress queued
/// (`model`, `response_format`, `language`, `prompt`, `temperature`, and
/// `file` naming the upload), `audio` the uploaded file.
async fn transcriptions(
    call: Call<'_>,
    body: &Value,
    audio: Bytes,
) -> Result<Answer, UpstreamError> {
    let name = call.name();
    let (content_type, form) = upstream::multipart(&openai_transcription_form(body, audio));
    let mut request = call
        .http
        .post(upstream::url(&call.spec.base_url, "audio/transcriptions"))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(form);
    if let Some(key) = call.api_key() {
        request = request.bearer_auth(key.expose_secret());
    }
    let (answer, _) = upstream::send_raw(request, name).await?;
    let parsed: Value = serde_json::from_slice(&answer).map_err(|_| upstream::not_json(name))?;
    let transcript = openai_transcript(&parsed).ok_or_else(|| upstream::not_json(name))?;
    Ok(match media::response_format(body) {
        "text" => media::transcript_answer(body, transcript),
        // The provider's own JSON (it may carry more than the text).
        _ => Answer::Media {
            body: answer,
            content_type: "application/json".into(),
            usage: transcript.usage,
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::media::transcript_answer;
    use serde_json::json;

    #[test]
    fn usage_parsing() {
        let u =
            parse_usage(&json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}));
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 5,
                ..Default::default()
            })
        );
        assert_eq!(parse_usage(&Value::Null), None);
        // OpenAI's details: cached and reasoning tokens, parts of the totals.
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            "completion_tokens_details": {"reasoning_tokens": 20}
        }))
        .unwrap();
        assert_eq!(
            (
                u.cached_tokens,
                u.cache_write_5m_tokens,
                u.cache_write_1h_tokens,
                u.reasoning_tokens
            ),
            (60, 30, 0, 20)
        );
        // aigw's split of the writes.
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 0,
            "prompt_tokens_details": {"cache_write_tokens": 30, "cache_write_5m_tokens": 10,
                                      "cache_write_1h_tokens": 20}
        }))
        .unwrap();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (10, 20));
        // DeepSeek: hits and misses make the prompt.
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 5,
            "prompt_cache_hit_tokens": 70, "prompt_cache_miss_tokens": 30
        }))
        .unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens), (100, 70));
        let u = parse_usage(&json!({"prompt_tokens": 100, "completion_tokens": 5,
            "cached_tokens": 40}))
        .unwrap();
        assert_eq!(u.cached_tokens, 40);
    }

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
}
