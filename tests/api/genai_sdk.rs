//! The official google-genai Python SDK (pinned in `scripts/test`),
//! unchanged apart from its base URL and key, through aigw's Gemini
//! routes: generation, streaming, a tool round trip, token counting, the
//! model list and errors, to an OpenAI-compatible upstream (translated)
//! and to a Gemini one (verbatim).

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::anthropic_messages::openai_upstream;
use crate::gemini_generate::{gemini_upstream, openai_provider};
use crate::harness::TestEnv;

/// Runs `tests/sdk/genai_sdk.py` (the official google-genai SDK, base URL
/// and key changed only) against aigw; returns what it printed.
async fn run_sdk(env: &TestEnv, key: &str, model: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs google-genai into .tools/"
    );
    let script = root.join("tests/sdk/genai_sdk.py");
    let (base, key, model) = (env.base.clone(), key.to_string(), model.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("BASE", base)
            .env("GEMINI_API_KEY", key)
            .env_remove("GOOGLE_API_KEY")
            .env("MODEL", model)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

fn assert_sdk_output(out: &str, usage: &str, stream_usage: &str) {
    for line in [
        "text: pong\n",
        "finish: STOP\n",
        usage,
        "stream text: pong streamed\n",
        "stream finish: STOP\n",
        stream_usage,
        "tool call: get_weather {\"city\": \"Paris\"}\n",
        "tool answer: It is sunny.\n",
        "count: True\n",
        "listed: True\n",
        "bad key: 401 UNAUTHENTICATED\n",
        "bad body: 400 INVALID_ARGUMENT\n",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
}

#[tokio::test]
async fn the_genai_sdk_works_against_an_openai_upstream() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("genai").await;
    let out = run_sdk(&env, &key, "gpt-x").await;
    assert_sdk_output(
        &out,
        "usage: 1000 20 1020 600\n",
        "stream usage: 1000 1020\n",
    );
}

#[tokio::test]
async fn the_genai_sdk_works_against_a_gemini_upstream() {
    let env = TestEnv::start().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(gemini_upstream)
        .mount(&upstream)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "google", "preset": "gemini", "api_key": "goog-upstream-secret",
            "base_url": upstream.uri(), "models": ["gemini-real"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("genai").await;
    let out = run_sdk(&env, &key, "gemini-real").await;
    assert_sdk_output(&out, "usage: 30 4 34 None\n", "stream usage: 30 34\n");
    // Every call went verbatim, with the provider's key only.
    for request in upstream.received_requests().await.unwrap() {
        assert_eq!(request.headers["x-goog-api-key"], "goog-upstream-secret");
        assert!(!request.url.to_string().contains("aig_"), "{}", request.url);
    }
}
