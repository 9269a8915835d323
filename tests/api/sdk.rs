//! The official OpenAI Python SDK, unchanged but for base_url and api_key.

use std::path::PathBuf;
use std::process::Command;

use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion};

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the openai SDK into .tools/"
    );
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    let sse = [
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}"#,
    ]
    .iter()
    .map(|d| format!("data: {d}\n\n"))
    .collect::<String>()
        + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(body_partial_json(serde_json::json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-4o-mini",
            "Hello from the SDK",
            9,
            4,
        )))
        .mount(&mock)
        .await;
    // Priced at $1 in and $2 out per million tokens: the answer (9 + 4
    // tokens) costs 17 micro-dollars, the stream (8 + 2) 12.
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&serde_json::json!({
            "name": "mock",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": ["gpt-4o-mini"],
            "prices": {"gpt-4o-mini": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, key) = env.add_key("sdk").await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_sdk.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("OPENAI_BASE_URL", format!("{}/v1", env.base))
            .env("OPENAI_API_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("completion: Hello from the SDK"),
        "{stdout}"
    );
    assert!(stdout.contains("stream: Hi there"), "{stdout}");
    assert!(stdout.contains("stream usage: 10"), "{stdout}");
    // aigw's cost reaches an SDK caller, and its extension field does not
    // break the SDK's parsing of the usage chunk.
    assert!(stdout.contains("cost header: 0.000017"), "{stdout}");
    assert!(
        stdout.contains("raw completion: Hello from the SDK"),
        "{stdout}"
    );
    assert!(stdout.contains("stream cost: 1.2e-05"), "{stdout}");
    assert!(stdout.contains("bad key: 401"), "{stdout}");
}

#[tokio::test]
async fn the_openai_python_sdk_reaches_native_media_providers() {
    use serde_json::json;
    use wiremock::matchers::path;

    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the openai SDK into .tools/"
    );
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/generate/core"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"image": "iVBORw0KGgo=", "finish_reason": "SUCCESS", "seed": 3}),
            ),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"mp3-bytes".to_vec(), "audio/mpeg"))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/upload"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"upload_url": "https://cdn/u"})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/transcript"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "t1", "status": "completed", "text": "Hello there.", "audio_duration": 1.5}),
        ))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/embed"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "e", "embeddings": {"float": [[0.5, -0.25]]},
            "meta": {"billed_units": {"input_tokens": 1}}
        })))
        .mount(&mock)
        .await;
    for preset in ["stability", "elevenlabs", "assemblyai", "cohere"] {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&json!({"preset": preset, "api_key": "k", "base_url": mock.uri()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{preset}");
    }
    let (_, key) = env.add_key("sdk").await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_media.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("OPENAI_BASE_URL", format!("{}/v1", env.base))
            .env("OPENAI_API_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for line in [
        "image: iVBORw0KGgo=",
        "speech: mp3-bytes",
        "transcript: Hello there.",
        "text: Hello there.",
        "embedding: [0.5, -0.25]",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
}
