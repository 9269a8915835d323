//! The OpenAPI document (`/openapi.json`) against the running gateway:
//! schemathesis (PyPI, installed into `.tools/` by `scripts/test`)
//! generates requests from the document for every operation, valid and
//! invalid, with both credentials, follows the document's links
//! (stateful: create a key, then read, change, top up, rotate and revoke
//! it), and fails on any 5xx and any answer the document does not
//! describe. The upstream is a mock that answers every inference endpoint
//! for the models the examples name, so successful answers are checked
//! too. Bounded: a fixed seed, a few examples per operation, a time limit.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{ADMIN_TOKEN, TestEnv, completion};

fn tools(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/bin")
        .join(name)
}

/// A mock provider answering chat (plain and streamed), embeddings,
/// images, speech and transcriptions.
async fn upstream() -> MockServer {
    let mock = MockServer::start().await;
    let sse = [
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}"#,
    ]
    .iter()
    .map(|d| format!("data: {d}\n\n"))
    .collect::<String>()
        + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-4o-mini",
            "Hello",
            9,
            4,
        )))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        })))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "created": 1,
            "data": [{"b64_json": "aGk="}],
        })))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"ID3-mp3".to_vec(), "audio/mpeg"))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"text": "hi"})))
        .mount(&mock)
        .await;
    mock
}

#[tokio::test]
async fn the_document_is_served_without_credentials() {
    let env = TestEnv::start().await;
    let r = env.http.get(env.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(doc["paths"]["/v1/chat/completions"]["post"].is_object());
    assert!(doc["paths"]["/admin/api/keys"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let schemathesis = tools("schemathesis");
    assert!(
        schemathesis.exists(),
        "run scripts/test: it installs schemathesis into .tools/"
    );
    let env = TestEnv::start().await;
    let mock = upstream().await;
    let models = [
        "gpt-4o-mini",
        "text-embedding-3-small",
        "gpt-image-1",
        "tts-1",
        "whisper-1",
    ];
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "mock",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": models,
            "prices": {"gpt-4o-mini": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, key) = env.add_key("schemathesis").await;

    let dir = std::env::temp_dir().join(format!("aigw-schemathesis-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[auth.openapi.api_key]\nbearer = \"{key}\"\n\n\
             [auth.openapi.admin_token]\nbearer = \"{ADMIN_TOKEN}\"\n"
        ),
    )
    .unwrap();
    let url = env.url("/openapi.json");
    let report = dir.join("junit.xml");
    let mut command = Command::new(&schemathesis);
    command
        // Its cache and crash files go with the run, not into the checkout.
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(&url)
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth",
            "--max-examples",
            "8",
            "--seed",
            "20261203",
            // One worker: with two, Hypothesis (describing a filter's lambda)
            // can hit CPython 3.11's "AST constructor recursion depth
            // mismatch", a race between the tool's own threads that reads
            // as an error of the run.
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--max-failures",
            "20",
            // Calls the provider's real endpoint: not here.
            "--exclude-path",
            "/admin/api/providers/{id}/test",
        ])
        .arg("--report")
        .arg("junit")
        .arg("--report-junit-path")
        .arg(&report)
        .env("NO_COLOR", "1");
    let output =
        tokio::task::spawn_blocking(move || run_bounded(command, Duration::from_secs(150)))
            .await
            .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.0,
        "schemathesis reported failures (or did not finish in time):\n{}",
        output.1
    );
    drop(env);
}

/// Runs `command` for at most `limit`; (succeeded, stdout and stderr).
fn run_bounded(mut command: Command, limit: Duration) -> (bool, String) {
    let log = std::env::temp_dir().join(format!("aigw-st-{}.log", uuid::Uuid::now_v7()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = command
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status.is_some_and(|s| s.success()), text)
}
