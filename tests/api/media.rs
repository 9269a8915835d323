//! Media endpoints (`/v1/images/generations`, `/v1/audio/speech`) through
//! the real roles: OpenAI-compatible passthrough and the native Stability,
//! Replicate, Runway and ElevenLabs adapters against mocks speaking their wire formats, with
//! the cost of every call recorded.

use std::time::Duration;

use aigw_dispatcher::upstream::{Part, multipart};
use bytes::Bytes;
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, wait_until};

pub(crate) async fn post(env: &TestEnv, key: &str, route: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url(route))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn add(env: &TestEnv, body: Value) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// The request's `RequestCompleted` payload, once stored.
pub(crate) async fn completed(env: &TestEnv, response: &reqwest::Response) -> Value {
    let id = response.headers()["x-request-id"].to_str().unwrap();
    let events = env.wait_recorded(id).await;
    events.last().unwrap().1["RequestCompleted"].clone()
}

#[tokio::test]
async fn openai_images_pass_through_and_are_billed_per_image() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    // A second image over 1 MB of base64: more than one NATS frame.
    let big = "A".repeat(1_300_000);
    Mock::given(method("POST"))
        .and(path("/v1/images/generations"))
        .and(header("authorization", "Bearer sk-upstream-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "created": 1_764_000_000,
            "data": [
                {"b64_json": "iVBORw0KGgo=", "revised_prompt": "A red fox in snow"},
                {"b64_json": big},
            ]
        })))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()), "api_key": "sk-upstream-secret",
            "models": ["dall-e-3"],
            "prices": {"dall-e-3": {"input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0, "per_image_usd": 0.04}}}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "dall-e-3", "prompt": "a red fox", "n": 2, "size": "1024x1024",
            "response_format": "b64_json", "quality": "standard"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-aigw-provider"], "oai");
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["revised_prompt"], "A red fox in snow");
    assert_eq!(
        body["data"][1]["b64_json"].as_str().unwrap().len(),
        1_300_000
    );
    let sent: Value = mock.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        sent,
        json!({"model": "dall-e-3", "prompt": "a red fox", "n": 2, "size": "1024x1024",
            "response_format": "b64_json", "quality": "standard"})
    );
    assert_eq!(done["usage"]["images"], 2);
    // Two images at $0.04.
    assert_eq!(done["cost_micros"], 80_000);
}

#[tokio::test]
async fn stability_preset_generates_images_through_its_multipart_api() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/generate/sd3"))
        .and(header("authorization", "Bearer sk-stability"))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "image": "iVBORw0KGgoAAAANSUhEUg==", "finish_reason": "SUCCESS", "seed": 1_234_567
        })))
        .expect(2)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "stability", "api_key": "sk-stability", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "sd3.5-large", "prompt": "a lighthouse at dusk", "n": 2, "size": "1792x1024"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "stability");
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert!(body["created"].as_i64().unwrap() > 0);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0], json!({"b64_json": "iVBORw0KGgoAAAANSUhEUg=="}));

    let sent = &mock.received_requests().await.unwrap()[0];
    let content_type = sent.headers["content-type"].to_str().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap();
    let form = String::from_utf8(sent.body.clone()).unwrap();
    for (name, value) in [
        ("prompt", "a lighthouse at dusk"),
        ("model", "sd3.5-large"),
        ("aspect_ratio", "16:9"),
        ("output_format", "png"),
    ] {
        let part = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        );
        assert!(form.contains(&part), "{name} missing from {form}");
    }
    assert!(!form.contains("name=\"n\""));
    assert_eq!(done["usage"]["images"], 2);
    // Two SD 3.5 Large images at the catalog's $0.065.
    assert_eq!(done["cost_micros"], 130_000);
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 1
    })
    .await;
    assert_eq!(env.stats(&key).await["totals"]["cost_micros"], 130_000);
    // The images are counted in the usage and billing views too.
    assert_eq!(env.stats(&key).await["totals"]["images"], 2);
    let key_id = env.stats(&key).await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bills: Value = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/billing?key={key_id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bills["data"][0]["images"], 2, "{bills}");
    assert_eq!(bills["data"][0]["line_items"][0]["images"], 2, "{bills}");
    let hourly: Value = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/stats?key={key_id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hourly["data"][0]["images"], 2, "{hourly}");
}

#[tokio::test]
async fn speech_is_relayed_as_audio_and_billed_per_character() {
    let env = TestEnv::start().await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .and(header("authorization", "Bearer sk-upstream-secret"))
        .and(body_json(json!({"model": "tts-1", "input": "Hello world", "voice": "alloy", "response_format": "opus"})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"OggS-opus".to_vec(), "audio/opus"))
        .expect(1)
        .mount(&openai)
        .await;
    let elevenlabs = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb"))
        .and(query_param("output_format", "mp3_44100_128"))
        .and(header("xi-api-key", "xi-secret"))
        .and(body_json(
            json!({"text": "Hello world", "model_id": "eleven_flash_v2_5"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"ID3-mp3".to_vec(), "audio/mpeg"))
        .expect(1)
        .mount(&elevenlabs)
        .await;
    add(
        &env,
        json!({"name": "oai", "base_url": format!("{}/v1", openai.uri()), "api_key": "sk-upstream-secret",
            "models": ["tts-1"],
            "prices": {"tts-1": {"input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0, "per_mchar_usd": 15.0}}}),
    )
    .await;
    add(
        &env,
        json!({"preset": "elevenlabs", "api_key": "xi-secret", "base_url": elevenlabs.uri()}),
    )
    .await;
    let (_, key) = env.add_key("tts").await;

    let r = post(
        &env,
        &key,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": "Hello world", "voice": "alloy", "response_format": "opus"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/opus");
    let done = completed(&env, &r).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"OggS-opus");
    assert_eq!(done["usage"]["characters"], 11);
    // 11 characters at $15 per million.
    assert_eq!(done["cost_micros"], 165);

    let r = post(
        &env,
        &key,
        "/v1/audio/speech",
        json!({"model": "eleven_flash_v2_5", "input": "Hello world", "voice": "JBFqnCBsd6RMkjVDRZzb"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    assert_eq!(r.headers()["x-aigw-provider"], "elevenlabs");
    let done = completed(&env, &r).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"ID3-mp3");
    // 11 characters at the catalog's $50 per million.
    assert_eq!(done["cost_micros"], 550);
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["characters"] == 22
    })
    .await;
}

#[tokio::test]
async fn media_requests_are_validated_before_they_are_queued() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    add(
        &env,
        json!({"preset": "stability", "api_key": "k", "base_url": mock.uri()}),
    )
    .await;
    add(
        &env,
        json!({"preset": "anthropic", "api_key": "k", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("v").await;
    let cases = [
        (
            "/v1/images/generations",
            json!({"model": "stable-image-core"}),
            400,
            "prompt",
        ),
        (
            "/v1/images/generations",
            json!({"model": "stable-image-core", "prompt": "x", "n": 0}),
            400,
            "n",
        ),
        (
            "/v1/images/generations",
            json!({"model": "stable-image-core", "prompt": "x", "size": "big"}),
            400,
            "size",
        ),
        (
            "/v1/images/generations",
            json!({"model": "stable-image-core", "prompt": "x", "response_format": "png"}),
            400,
            "response_format",
        ),
        (
            "/v1/images/generations",
            json!({"model": "no-such-model", "prompt": "x"}),
            404,
            "",
        ),
        // Anthropic serves chat only; Stability serves images only.
        (
            "/v1/images/generations",
            json!({"model": "claude-haiku-4-5", "prompt": "x"}),
            400,
            "model",
        ),
        (
            "/v1/audio/speech",
            json!({"model": "stable-image-core", "input": "x", "voice": "v"}),
            400,
            "model",
        ),
        (
            "/v1/audio/speech",
            json!({"model": "stable-image-core", "voice": "v"}),
            400,
            "input",
        ),
        (
            "/v1/audio/speech",
            json!({"model": "stable-image-core", "input": "x"}),
            400,
            "voice",
        ),
        (
            "/v1/audio/speech",
            json!({"model": "stable-image-core", "input": "x", "voice": "v", "response_format": "ogg"}),
            400,
            "response_format",
        ),
    ];
    for (route, body, status, param) in cases {
        let r = post(&env, &key, route, body.clone()).await;
        assert_eq!(r.status(), status, "{route} {body}");
        let err: Value = r.json().await.unwrap();
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{route} {body}: {err}");
        }
    }
    let r = post(
        &env,
        &key,
        "/v1/chat/completions",
        json!({"model": "stable-image-core", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unsupported_endpoint");
    assert!(mock.received_requests().await.unwrap().is_empty());
}

/// A transcription form (content type, body): the file and text fields.
fn form(audio: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let mut parts = vec![(
        "file",
        Part::File {
            filename: "meeting.mp3".into(),
            content_type: "audio/mpeg".into(),
            bytes: Bytes::copy_from_slice(audio),
        },
    )];
    for (k, v) in fields {
        parts.push((k, Part::Text(v.to_string())));
    }
    multipart(&parts)
}

/// A form with text fields only.
fn fields_only(fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let parts: Vec<(&str, Part)> = fields
        .iter()
        .map(|(k, v)| (*k, Part::Text(v.to_string())))
        .collect();
    multipart(&parts)
}

async fn transcribe(env: &TestEnv, key: &str, form: (String, Vec<u8>)) -> reqwest::Response {
    env.http
        .post(env.url("/v1/audio/transcriptions"))
        .bearer_auth(key)
        .header("content-type", form.0)
        .body(form.1)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn openai_transcriptions_pass_the_upload_through_and_bill_its_duration() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(header("authorization", "Bearer sk-upstream-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "text": "Let's begin the meeting.",
            "usage": {"type": "duration", "seconds": 90}
        })))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()), "api_key": "sk-upstream-secret",
            "models": ["whisper-1"],
            "prices": {"whisper-1": {"input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0, "per_hour_usd": 0.36}}}),
    )
    .await;
    let (_, key) = env.add_key("stt").await;
    // Binary audio, bytes that look like a boundary included.
    let audio: Vec<u8> = b"ID3\x00\xff\r\n--x\r\n"
        .iter()
        .copied()
        .cycle()
        .take(300_000)
        .collect();
    let r = transcribe(
        &env,
        &key,
        form(
            &audio,
            &[
                ("model", "whisper-1"),
                ("language", "en"),
                ("response_format", "text"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let done = completed(&env, &r).await;
    assert_eq!(r.text().await.unwrap(), "Let's begin the meeting.");

    let sent = &mock.received_requests().await.unwrap()[0];
    let content_type = sent.headers["content-type"].to_str().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap();
    let file_head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"meeting.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n"
    );
    let at = sent
        .body
        .windows(file_head.len())
        .position(|w| w == file_head.as_bytes())
        .expect("file part");
    let start = at + file_head.len();
    assert_eq!(&sent.body[start..start + audio.len()], &audio[..]);
    let text = String::from_utf8_lossy(&sent.body);
    for (name, value) in [
        ("model", "whisper-1"),
        ("language", "en"),
        ("response_format", "json"),
    ] {
        assert!(
            text.contains(&format!("name=\"{name}\"\r\n\r\n{value}\r\n")),
            "{name}"
        );
    }
    assert_eq!(done["usage"]["audio_seconds"], 90);
    // 90 s at $0.36 an hour.
    assert_eq!(done["cost_micros"], 9_000);
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["audio_seconds"] == 90
    })
    .await;
}

#[tokio::test]
async fn assemblyai_preset_uploads_submits_and_polls() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/upload"))
        .and(header("authorization", "aai-key"))
        .and(header("content-type", "application/octet-stream"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"upload_url": "https://cdn.assemblyai.com/upload/abc"})),
        )
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/transcript"))
        .and(header("authorization", "aai-key"))
        .and(body_json(
            json!({"audio_url": "https://cdn.assemblyai.com/upload/abc",
            "speech_models": ["universal-2"], "language_code": "fr"}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "tr_1", "status": "queued"})),
        )
        .expect(1)
        .mount(&mock)
        .await;
    // Processing twice, then done.
    Mock::given(method("GET"))
        .and(path("/v2/transcript/tr_1"))
        .and(header("authorization", "aai-key"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "tr_1", "status": "processing"})),
        )
        .up_to_n_times(2)
        .expect(2)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/transcript/tr_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "tr_1", "status": "completed", "text": "Bonjour à tous.",
            "audio_duration": 3600, "words": []
        })))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "assemblyai", "api_key": "aai-key", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("stt").await;
    let r = transcribe(
        &env,
        &key,
        form(
            b"RIFF....WAVE",
            &[("model", "universal-2"), ("language", "fr")],
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "assemblyai");
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"text": "Bonjour à tous."}));
    let upload = &mock.received_requests().await.unwrap()[0];
    assert_eq!(upload.body, b"RIFF....WAVE");
    assert_eq!(done["usage"]["audio_seconds"], 3600);
    // One hour of Universal-2 at the catalog's $0.15.
    assert_eq!(done["cost_micros"], 150_000);
}

#[tokio::test]
async fn transcription_uploads_are_checked_and_bounded() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    add(
        &env,
        json!({"preset": "assemblyai", "api_key": "k", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("stt").await;
    let no_file = fields_only(&[("model", "universal-2")]);
    let r = transcribe(&env, &key, no_file).await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["param"], "file");
    let r = transcribe(&env, &key, form(b"x", &[])).await;
    assert_eq!(r.status(), 400);
    let r = transcribe(
        &env,
        &key,
        form(
            b"x",
            &[("model", "universal-2"), ("response_format", "srt")],
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = env
        .http
        .post(env.url("/v1/audio/transcriptions"))
        .bearer_auth(&key)
        .json(&json!({"model": "universal-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Above 25 MB: 413 in OpenAI's error shape (the chat limit is far lower).
    let big = vec![0u8; 25 * 1024 * 1024 + 1];
    let r = transcribe(&env, &key, form(&big, &[("model", "universal-2")])).await;
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "request_too_large");
    // A 1 MB upload (four times the chat limit of these tests) is accepted.
    Mock::given(method("POST"))
        .and(path("/v2/upload"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid API key"})))
        .mount(&mock)
        .await;
    let r = transcribe(
        &env,
        &key,
        form(&vec![1u8; 1024 * 1024], &[("model", "universal-2")]),
    )
    .await;
    assert_eq!(r.status(), 502, "the provider refused aigw's key");
    // A refused credential is retried once on the same provider.
    let uploads = mock.received_requests().await.unwrap();
    assert_eq!(uploads.len(), 2);
    assert!(uploads.iter().all(|u| u.body.len() == 1024 * 1024));
}

#[tokio::test]
async fn a_transcription_that_never_finishes_stops_polling_at_the_deadline() {
    let env = TestEnv::with(crate::harness::Options {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/upload"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"upload_url": "https://cdn/u"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/transcript"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "tr_9", "status": "queued"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/transcript/tr_9"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "tr_9", "status": "processing"})),
        )
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "assemblyai", "api_key": "k", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("stt").await;
    let r = transcribe(&env, &key, form(b"RIFF", &[("model", "universal-2")])).await;
    assert_eq!(r.status(), 504);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let events = env.wait_recorded(&id).await;
    assert!(events.last().unwrap().1.get("RequestFailed").is_some());
    // Polling has stopped.
    let polls = mock.received_requests().await.unwrap().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(mock.received_requests().await.unwrap().len(), polls);
}

#[tokio::test]
async fn gemini_and_cohere_embeddings_are_served_natively() {
    let env = TestEnv::start().await;
    let gemini = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-embedding-001:batchEmbedContents"))
        .and(header("x-goog-api-key", "g-key"))
        .and(body_json(json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "The food was delicious"}]}},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "and the waiter"}]}},
        ]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "embeddings": [{"values": [0.1, -0.2, 0.3]}, {"values": [0.4, 0.5, -0.6]}]
        })))
        .expect(1)
        .mount(&gemini)
        .await;
    let cohere = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/embed"))
        .and(header("authorization", "Bearer co-key"))
        .and(body_json(json!({"model": "embed-v4.0", "texts": ["hello"],
            "input_type": "search_document", "embedding_types": ["float"]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "emb-1", "embeddings": {"float": [[1.0, 0.0]]}, "texts": ["hello"],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 1000}}
        })))
        .expect(1)
        .mount(&cohere)
        .await;
    add(
        &env,
        json!({"preset": "gemini", "api_key": "g-key", "base_url": gemini.uri()}),
    )
    .await;
    add(
        &env,
        json!({"preset": "cohere", "api_key": "co-key", "base_url": cohere.uri()}),
    )
    .await;
    let (_, key) = env.add_key("emb").await;

    let r = post(
        &env,
        &key,
        "/v1/embeddings",
        json!({"model": "gemini-embedding-001", "input": ["The food was delicious", "and the waiter"],
            "encoding_format": "float"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][1]["embedding"], json!([0.4, 0.5, -0.6]));
    // Gemini reports no tokens: estimated, and flagged as such.
    assert_eq!(done["usage_estimated"], true);
    assert!(done["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // Base64, as the OpenAI SDKs ask by default.
    let r = post(
        &env,
        &key,
        "/v1/embeddings",
        json!({"model": "embed-v4.0", "input": "hello", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"], "AACAPwAAAAA=");
    assert_eq!(body["usage"]["prompt_tokens"], 1000);
    assert_eq!(done["usage_estimated"], false);
    // 1,000 tokens at the catalog's $0.12 per million.
    assert_eq!(done["cost_micros"], 120);
}

#[tokio::test]
async fn replicate_preset_creates_polls_and_returns_the_image_urls() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
        ))
        .and(header("authorization", "Bearer r8_secret"))
        .and(body_json(
            json!({"input": {"prompt": "a lighthouse at dusk",
            "num_outputs": 2, "aspect_ratio": "16:9"}}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "starting", "output": null,
            "urls": {"get": format!("{}/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu", mock.uri())}
        })))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"))
        .and(header("authorization", "Bearer r8_secret"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "processing"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"))
        .and(header("authorization", "Bearer r8_secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "succeeded",
            "output": ["https://replicate.delivery/xezq/a.webp", "https://replicate.delivery/xezq/b.webp"],
            "metrics": {"predict_time": 0.8}
        })))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "replicate", "api_key": "r8_secret", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-schnell", "prompt": "a lighthouse at dusk",
            "n": 2, "size": "1792x1024", "response_format": "url"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "replicate");
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert!(body["created"].as_i64().unwrap() > 0);
    assert_eq!(
        body["data"],
        json!([{"url": "https://replicate.delivery/xezq/a.webp"},
            {"url": "https://replicate.delivery/xezq/b.webp"}])
    );
    let sent = mock.received_requests().await.unwrap();
    let steps: Vec<(String, String)> = sent
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().to_string()))
        .collect();
    assert_eq!(steps[0].0, "POST");
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(done["usage"]["images"], 2);
    // Two flux-schnell images at the catalog's $0.003.
    assert_eq!(done["cost_micros"], 6_000);
}

#[tokio::test]
async fn replicate_images_come_back_inline_and_failed_predictions_are_errors() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    // A prediction already finished when created (as with `Prefer: wait`).
    Mock::given(method("POST"))
        .and(path("/v1/models/black-forest-labs/flux-dev/predictions"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "p1", "status": "succeeded", "output": [format!("{}/files/a.png", mock.uri())]
        })))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/a.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"\x89PNG".to_vec(), "image/png"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "p2", "status": "starting"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/predictions/p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "p2", "status": "failed", "error": "NSFW content detected"}),
        ))
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "replicate", "api_key": "r8_k", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-dev", "prompt": "a fox",
            "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!([{"b64_json": "iVBORw=="}]));
    // The file is fetched without the Replicate key.
    let fetched = mock.received_requests().await.unwrap();
    let file = fetched
        .iter()
        .find(|r| r.url.path() == "/files/a.png")
        .unwrap();
    assert!(!file.headers.contains_key("authorization"));
    assert_eq!(done["cost_micros"], 25_000);

    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-schnell", "prompt": "x"}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "upstream_error");
    // A failed prediction is over: nothing to cancel.
    let sent = mock.received_requests().await.unwrap();
    assert!(!sent.iter().any(|r| r.url.path().ends_with("/cancel")));
}

#[tokio::test]
async fn a_replicate_prediction_is_cancelled_at_the_deadline() {
    let env = TestEnv::with(crate::harness::Options {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "slow1", "status": "starting"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/predictions/slow1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "slow1", "status": "processing"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/predictions/slow1/cancel"))
        .and(header("authorization", "Bearer r8_k"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "slow1", "status": "canceled"})),
        )
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "replicate", "api_key": "r8_k", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-schnell", "prompt": "x"}),
    )
    .await;
    assert_eq!(r.status(), 504);
    wait_until(Duration::from_secs(10), || async {
        mock.received_requests()
            .await
            .unwrap()
            .iter()
            .any(|r| r.url.path() == "/v1/predictions/slow1/cancel")
    })
    .await;
    // Polling has stopped.
    let seen = mock.received_requests().await.unwrap().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(mock.received_requests().await.unwrap().len(), seen);
}

#[tokio::test]
async fn runway_preset_starts_a_task_polls_it_and_fails_it_cleanly() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/text_to_image"))
        .and(header("authorization", "Bearer key_runway"))
        .and(header("x-runway-version", "2024-11-06"))
        .and(body_json(
            json!({"model": "gen4_image", "promptText": "a lighthouse at dusk",
            "ratio": "1920:1080"}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "17f20503-6c24-4c16-946b-35dbbce2af2f"})),
        )
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f"))
        .and(header("authorization", "Bearer key_runway"))
        .and(header("x-runway-version", "2024-11-06"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "17f20503-6c24-4c16-946b-35dbbce2af2f", "status": "RUNNING", "progress": 0.5
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "17f20503-6c24-4c16-946b-35dbbce2af2f", "status": "SUCCEEDED",
            "createdAt": "2026-11-26T08:00:00.000Z",
            "output": ["https://dnznrvs05pmza.cloudfront.net/a.png"]
        })))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "runway", "api_key": "key_runway", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "gen4_image", "prompt": "a lighthouse at dusk", "size": "1920x1080",
            "response_format": "url"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "runway");
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"],
        json!([{"url": "https://dnznrvs05pmza.cloudfront.net/a.png"}])
    );
    assert_eq!(done["usage"]["images"], 1);
    assert_eq!(done["cost_micros"], 80_000);

    // A failed task is the caller's 502.
    mock.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/text_to_image"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "t-2"})))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "t-2",
            "status": "FAILED", "failure": "Content moderation", "failureCode": "SAFETY.INPUT.TEXT"})))
        .mount(&mock)
        .await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "gen4_image", "prompt": "x"}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "upstream_error");
    let sent = mock.received_requests().await.unwrap();
    assert!(!sent.iter().any(|r| r.method.as_str() == "DELETE"));
}

#[tokio::test]
async fn a_runway_task_is_cancelled_at_the_deadline() {
    let env = TestEnv::with(crate::harness::Options {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/text_to_image"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "slow-1"})))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/slow-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "slow-1", "status": "PENDING"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/tasks/slow-1"))
        .and(header("authorization", "Bearer key_runway"))
        .and(header("x-runway-version", "2024-11-06"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "runway", "api_key": "key_runway", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "gen4_image", "prompt": "x"}),
    )
    .await;
    assert_eq!(r.status(), 504);
    wait_until(Duration::from_secs(10), || async {
        mock.received_requests()
            .await
            .unwrap()
            .iter()
            .any(|r| r.method.as_str() == "DELETE")
    })
    .await;
}

/// A WAV upload: `seconds` of silence at 16 kHz, 16-bit mono (32,000 bytes a
/// second after a 44-byte header).
fn wav(seconds: u32) -> Vec<u8> {
    let rate = 32_000u32;
    let data = vec![0u8; (rate * seconds) as usize];
    let mut out = b"RIFF".to_vec();
    out.extend((36 + data.len() as u32).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend(1u16.to_le_bytes());
    out.extend(1u16.to_le_bytes());
    out.extend(16_000u32.to_le_bytes());
    out.extend(rate.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(16u16.to_le_bytes());
    out.extend(b"data");
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out
}

/// A transcription holds the longest its upload can last at the model's
/// hourly price, so concurrent transcriptions cannot spend past a budget
/// either: an upload that could cost more than is left is refused before
/// it is sent, a short one goes through and is billed its actual duration.
#[tokio::test]
async fn transcriptions_hold_their_longest_duration_on_a_budget() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "text": "Short.",
            "usage": {"type": "duration", "seconds": 3}
        })))
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()), "api_key": "sk-upstream-secret",
            "models": ["whisper-1"],
            "prices": {"whisper-1": {"input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0, "per_hour_usd": 0.36}}}),
    )
    .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "stt", "budget_usd": 0.05, "budget_period": "total"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    // 750 KB of MP3 may last 1,000 s: $0.10 at $0.36 an hour, over $0.05.
    let r = transcribe(
        &env,
        &key,
        form(&vec![0xff; 750_000], &[("model", "whisper-1")]),
    )
    .await;
    assert_eq!(r.status(), 429);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "insufficient_quota", "{err}");
    assert!(mock.received_requests().await.unwrap().is_empty());

    // A WAV header that claims 4 GB a second cannot make 23 s of audio hold
    // one second: a rate that does not agree with the header's own sample
    // rate and size is not believed, and the upload holds its size at the
    // 6 kbit/s floor (981 s, over the budget).
    let mut lying = wav(23);
    lying[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    let parts = vec![
        (
            "file",
            Part::File {
                filename: "lying.wav".into(),
                content_type: "audio/wav".into(),
                bytes: Bytes::from(lying),
            },
        ),
        ("model", Part::Text("whisper-1".into())),
    ];
    let r = transcribe(&env, &key, multipart(&parts)).await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    assert!(mock.received_requests().await.unwrap().is_empty());

    // A 3-second WAV holds 4 s (its header's byte rate) and is billed 3 s.
    let mut parts = vec![(
        "file",
        Part::File {
            filename: "hello.wav".into(),
            content_type: "audio/wav".into(),
            bytes: Bytes::from(wav(3)),
        },
    )];
    parts.push(("model", Part::Text("whisper-1".into())));
    let r = transcribe(&env, &key, multipart(&parts)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let done = completed(&env, &r).await;
    assert_eq!(done["cost_micros"], 300);
    wait_until(Duration::from_secs(30), || async {
        let mine: Value = env
            .http
            .get(env.url("/v1/key"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        mine["spent_micros"] == 300 && mine["held_usd"] == 0.0
    })
    .await;
}

/// Images a provider made (and charged for) are never lost: when a later
/// call of a multi-image request fails, the images made are answered and
/// billed; when an image cannot be fetched for `b64_json`, its URL is
/// answered instead, and it is billed.
#[tokio::test]
async fn images_made_before_a_failure_are_answered_and_billed() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    // Stability: the first image call succeeds, the next ones fail.
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/generate/sd3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "image": "iVBORw0KGgo=", "finish_reason": "SUCCESS", "seed": 1
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/generate/sd3"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "name": "internal_error", "errors": ["try again"]
        })))
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "stability", "api_key": "sk-stability", "base_url": mock.uri()}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "sd3.5-large", "prompt": "a lighthouse", "n": 3}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!([{"b64_json": "iVBORw0KGgo="}]));
    assert_eq!(done["usage"]["images"], 1);
    // One SD 3.5 Large image at the catalog's $0.065.
    assert_eq!(done["cost_micros"], 65_000);

    // Replicate: two images made, one of them cannot be fetched.
    let files = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/files/a.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"\x89PNG".to_vec(), "image/png"))
        .mount(&files)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/b.png"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&files)
        .await;
    let replicate = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/models/black-forest-labs/flux-dev/predictions"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "p1", "status": "succeeded",
            "output": [format!("{}/files/a.png", files.uri()), format!("{}/files/b.png", files.uri())]
        })))
        .mount(&replicate)
        .await;
    add(
        &env,
        json!({"preset": "replicate", "api_key": "r8_k", "base_url": replicate.uri()}),
    )
    .await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-dev", "prompt": "a fox", "n": 2,
            "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"],
        json!([{"b64_json": "iVBORw=="}, {"url": format!("{}/files/b.png", files.uri())}])
    );
    assert_eq!(done["usage"]["images"], 2);
    assert_eq!(done["cost_micros"], 50_000);
}

/// "Test connection" on media-only providers reads the key's account (no
/// paid generation): each preset's documented read-only endpoint with its
/// own auth header, and a refused key comes back as an upstream authentication error
/// (before, these providers could only answer 400 `unsupported_endpoint`).
#[tokio::test]
async fn media_only_providers_are_tested_by_reading_their_account() {
    let env = TestEnv::start().await;
    // (preset, method path, auth header, value, extra header)
    let cases = [
        (
            "stability",
            "/v1/user/account",
            "authorization",
            "Bearer sk-stab",
            None,
        ),
        ("elevenlabs", "/v1/user", "xi-api-key", "xi-key", None),
        (
            "assemblyai",
            "/v2/transcript",
            "authorization",
            "aai-key",
            None,
        ),
        (
            "replicate",
            "/v1/account",
            "authorization",
            "Bearer r8_key",
            None,
        ),
        (
            "runway",
            "/v1/organization",
            "authorization",
            "Bearer rw-key",
            Some(("x-runway-version", "2024-11-06")),
        ),
    ];
    for (preset, account_path, auth, value, extra) in cases {
        let mock = MockServer::start().await;
        let mut ok = Mock::given(method("GET"))
            .and(path(account_path))
            .and(header(auth, value));
        if let Some((name, v)) = extra {
            ok = ok.and(header(name, v));
        }
        ok.respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .expect(1)
            .mount(&mock)
            .await;
        // Anything else (a generation, a wrong key) is refused.
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(401).set_body_json(json!({"message": "Invalid API key"})),
            )
            .mount(&mock)
            .await;
        let key = value.trim_start_matches("Bearer ");
        // Replicate's and Runway's bases carry their /v1.
        let base = match preset {
            "replicate" | "runway" => format!("{}/v1", mock.uri()),
            _ => mock.uri(),
        };
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&json!({"preset": preset, "name": preset, "api_key": key, "base_url": base}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{preset}: {}", r.text().await.unwrap());
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = env
            .admin(
                reqwest::Method::POST,
                &format!("/admin/api/providers/{id}/test"),
            )
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{preset}: {body}");
        assert_eq!(body["ok"], true, "{preset}: {body}");
        assert_ne!(body["check"], "chat", "{preset}: {body}");
        let sent = mock.received_requests().await.unwrap();
        assert_eq!(sent.len(), 1, "{preset}: one read, no generation");
        assert_eq!(sent[0].method.as_str(), "GET");

        // A wrong credential: the provider's refusal comes back, as an
        // upstream authentication error (502: aigw's own caller is fine).
        let r = env
            .admin(
                reqwest::Method::PATCH,
                &format!("/admin/api/providers/{id}"),
            )
            .json(&json!({"api_key": "wrong"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{preset}: {}", r.text().await.unwrap());
        let mut last = None;
        for _ in 0..50 {
            let r = env
                .admin(
                    reqwest::Method::POST,
                    &format!("/admin/api/providers/{id}/test"),
                )
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            if status != 200 {
                last = Some((status, body));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, body) = last.expect("the wrong key was still accepted");
        assert_eq!(status, 502, "{preset}: {body}");
        assert_eq!(
            body["error"]["type"], "upstream_auth_error",
            "{preset}: {body}"
        );
        // Never the provider's own words: they may echo the credential.
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("Invalid API key") && !message.contains("wrong"),
            "{preset}: {body}"
        );
    }
}

/// Replicate and Runway make at most 4 images a request: a larger `n` is
/// refused at once when only they serve the model, and goes to another
/// provider of the model when there is one.
#[tokio::test]
async fn image_counts_beyond_a_providers_limit_go_elsewhere_or_are_refused() {
    let env = TestEnv::start().await;
    let replicate = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&replicate)
        .await;
    add(
        &env,
        json!({"preset": "replicate", "api_key": "r8_k", "base_url": format!("{}/v1", replicate.uri())}),
    )
    .await;
    let (_, key) = env.add_key("img").await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-dev", "prompt": "foxes", "n": 6}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["param"], "n", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 4"),
        "{err}"
    );
    assert!(replicate.received_requests().await.unwrap().is_empty());

    // Another provider of the model (added after Replicate, so behind it
    // in priority) takes the six.
    let other = MockServer::start().await;
    let six: Vec<Value> = (0..6)
        .map(|_| json!({"url": "https://img/x.png"}))
        .collect();
    Mock::given(method("POST"))
        .and(path("/v1/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"created": 1, "data": six})))
        .expect(1)
        .mount(&other)
        .await;
    add(
        &env,
        json!({"name": "other", "base_url": format!("{}/v1", other.uri()), "api_key": "sk-o",
            "models": ["black-forest-labs/flux-dev"]}),
    )
    .await;
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "black-forest-labs/flux-dev", "prompt": "foxes", "n": 6}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "other");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 6);
    assert!(replicate.received_requests().await.unwrap().is_empty());
}
