//! Claude Code itself (`@anthropic-ai/claude-code`, pinned in
//! `tests/clients/package.json` and installed by `scripts/test`), run for
//! one non-interactive turn against aigw, with an OpenAI-compatible mock
//! upstream behind it: it must exit 0 with the mock's answer, billed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse, sse_response};
use crate::harness::{TestEnv, wait_until};

/// Always answers "pong", streamed or not, with usage.
fn pong(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap_or("m").to_string();
    let usage = json!({"prompt_tokens": 3000, "completion_tokens": 2, "total_tokens": 3002});
    if b["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let events = [
            (
                None,
                chunk(json!({"role": "assistant", "content": "pong"}), Value::Null),
            ),
            (None, chunk(json!({}), json!("stop"))),
            (
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [], "usage": usage}),
            ),
        ];
        return sse_response(sse(&events, "\n") + "data: [DONE]\n\n");
    }
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "c1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
            "finish_reason": "stop"}],
        "usage": usage}))
}

#[tokio::test]
async fn claude_code_answers_through_aigw_from_an_openai_upstream() {
    let claude =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_modules/.bin/claude");
    assert!(
        claude.exists(),
        "run scripts/test: it installs Claude Code into tests/clients/"
    );
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(pong)
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret", "models": ["gpt-x"],
            "prices": {"gpt-x": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (key_id, key) = env.add_key("claude-code").await;
    let home = std::env::temp_dir().join(format!("aigw-claude-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&home).unwrap();
    let base = env.base.clone();
    let run_home = home.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(claude)
            .args(["-p", "Reply with one word: pong", "--output-format", "json"])
            .current_dir(&run_home)
            .env("HOME", &run_home)
            .env("ANTHROPIC_BASE_URL", base)
            .env("ANTHROPIC_API_KEY", key)
            .env("ANTHROPIC_MODEL", "gpt-x")
            .env("ANTHROPIC_SMALL_FAST_MODEL", "gpt-x")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    let result: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(result["is_error"], false, "{result}");
    assert!(
        result["result"].as_str().unwrap_or("").contains("pong"),
        "{result}"
    );
    // Billed: the key's requests were recorded with their cost.
    wait_until(std::time::Duration::from_secs(30), || async {
        let completed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'request'
             AND event_type = 'RequestCompleted'
             AND (payload->'RequestCompleted'->>'cost_micros')::bigint > 0",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        completed >= 1
    })
    .await;
    let accepted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'request'
         AND event_type = 'RequestAccepted' AND payload->'RequestAccepted'->>'key_id' = $1",
    )
    .bind(&key_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(accepted >= 1);
}
