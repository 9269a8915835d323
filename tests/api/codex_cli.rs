//! Codex CLI itself (`@openai/codex`, pinned in `tests/clients/package.json`
//! and installed by `scripts/test`), run for one non-interactive turn
//! (`codex exec`) against aigw's Responses API: the OpenAI-compatible mock
//! upstream behind aigw answers with a call of Codex's `exec_command` tool
//! (Codex runs it) and then with a text that quotes the tool's output.
//! Codex must exit 0 with the answer, everything it sends (hosted web
//! search, namespaced tools, `include`, `store: false`, `prompt_cache_key`,
//! `client_metadata`) must pass, and the turn is billed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse, sse_response};
use crate::harness::{TestEnv, wait_until};

/// What the tool call prints (its command says `$((6*7))`, so only a run
/// of it prints this), and so what the final answer must quote.
const TOOL_OUTPUT: &str = "tool-ran-42";

const EXEC_INPUT: &str = r#"{"cmd":"echo tool-ran-$((6*7))"}"#;

/// An OpenAI-compatible upstream: the tool's output quoted when the
/// conversation carries it back, else a call of `exec_command` when it is
/// offered, else a plain "pong". Streamed or not, as asked.
fn openai_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap_or("m").to_string();
    let usage = json!({"prompt_tokens": 3000, "completion_tokens": 2, "total_tokens": 3002});
    let tool_output = b["messages"].as_array().and_then(|ms| {
        ms.iter()
            .rev()
            .find(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
    });
    let offers_exec = b["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .any(|t| t["function"]["name"] == "exec_command")
    });
    let (delta, message, finish) = match tool_output {
        Some(out) => {
            let said = if out.contains(TOOL_OUTPUT) {
                TOOL_OUTPUT.to_string()
            } else {
                format!("something else: {out}")
            };
            let text = format!("pong, the tool said {said}");
            (
                json!({"role": "assistant", "content": text}),
                json!({"role": "assistant", "content": text}),
                "stop",
            )
        }
        None if offers_exec => {
            let call = json!({"id": "call_exec", "type": "function",
                "function": {"name": "exec_command", "arguments": EXEC_INPUT}});
            let mut streamed = call.clone();
            streamed["index"] = json!(0);
            (
                json!({"role": "assistant", "tool_calls": [streamed]}),
                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                "tool_calls",
            )
        }
        None => (
            json!({"role": "assistant", "content": "pong"}),
            json!({"role": "assistant", "content": "pong"}),
            "stop",
        ),
    };
    if b["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let events = [
            (None, chunk(delta, Value::Null)),
            (None, chunk(json!({}), json!(finish))),
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
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage}))
}

/// Runs `codex exec` against aigw with `key`, calling `model`; its stdout
/// (the final answer).
async fn run_codex(env: &TestEnv, key: &str, model: &str) -> String {
    let codex =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_modules/.bin/codex");
    assert!(
        codex.exists(),
        "run scripts/test: it installs Codex into tests/clients/"
    );
    let home = std::env::temp_dir().join(format!("aigw-codex-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    let provider = format!(
        r#"model_providers.gw={{name="gw",base_url="{}/v1",env_key="GW_KEY",wire_api="responses"}}"#,
        env.base
    );
    let (key, model, run_home) = (key.to_string(), model.to_string(), home.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(codex)
            .args([
                "exec",
                "--skip-git-repo-check",
                // The command only prints; the test machine may not allow
                // Codex's own sandbox.
                "--dangerously-bypass-approvals-and-sandbox",
                "-c",
                "model_provider=gw",
                "-c",
                &provider,
                "-m",
                &model,
                "Run `echo tool-ran-$((6*7))` in the shell, then reply with one word: pong",
            ])
            .current_dir(&run_home)
            .env("HOME", &run_home)
            .env("CODEX_HOME", run_home.join(".codex"))
            .env("GW_KEY", key)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    assert!(
        stdout.contains("pong") && stdout.contains(TOOL_OUTPUT),
        "the answer after the tool ran:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn codex_runs_a_tool_through_aigw_from_an_openai_upstream() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
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
    let (key_id, key) = env.add_key("codex").await;
    run_codex(&env, &key, "gpt-x").await;

    // The tool's output went back to the upstream as an OpenAI tool message
    // answering the call, after the assistant turn that made it.
    let requests = mock.received_requests().await.unwrap();
    let round_trip = requests
        .iter()
        .map(body)
        .find(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["role"] == "tool"))
        })
        .expect("the tool result reached the upstream");
    let turns = round_trip["messages"].as_array().unwrap();
    let at = turns.iter().position(|m| m["role"] == "tool").unwrap();
    assert_eq!(turns[at]["tool_call_id"], "call_exec", "{round_trip}");
    assert!(
        turns[at]["content"].as_str().unwrap().contains(TOOL_OUTPUT),
        "{round_trip}"
    );
    assert_eq!(
        turns[at - 1]["tool_calls"][0]["id"],
        "call_exec",
        "{round_trip}"
    );

    // Both turns accepted for the key and billed.
    wait_until(std::time::Duration::from_secs(30), || async {
        let billed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'request'
             AND event_type = 'RequestCompleted'
             AND (payload->'RequestCompleted'->>'cost_micros')::bigint > 0",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        billed >= 2
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
    assert!(accepted >= 2, "{accepted}");
}

/// Codex against OpenAI itself (the `openai` preset), relayed rather than
/// translated: the native upstream is a second aigw in front of the same
/// OpenAI-compatible mock, serving `/v1/responses` as OpenAI does. (That
/// the `openai` preset is relayed, never translated, is pinned by
/// `tests/api/responses_native.rs`, whose mock serves only
/// `/v1/responses`.)
#[tokio::test]
async fn codex_runs_a_tool_through_aigw_from_a_native_responses_upstream() {
    let upstream_env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    let r = upstream_env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret", "models": ["gpt-x"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, upstream_key) = upstream_env.add_key("aigw-upstream").await;

    let env = TestEnv::start().await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "openai", "preset": "openai", "api_key": upstream_key,
            "base_url": format!("{}/v1", upstream_env.base), "models": ["gpt-x"],
            "prices": {"gpt-x": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, key) = env.add_key("codex").await;
    run_codex(&env, &key, "gpt-x").await;

    // Both turns reached the upstream aigw, and the tool's output its mock.
    let sent: Vec<Value> =
        sqlx::query_scalar("SELECT payload::jsonb FROM events WHERE event_type = 'ResponseStored'")
            .fetch_all(&upstream_env.pool)
            .await
            .unwrap();
    let relayed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'request' AND event_type = 'RequestCompleted'",
    )
    .fetch_one(&upstream_env.pool)
    .await
    .unwrap();
    assert!(relayed >= 2, "{relayed}");
    // Codex says `store: false`, so neither aigw stored its turns.
    assert!(sent.is_empty(), "{sent:?}");
    let tool_turn = mock
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(body)
        .any(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["role"] == "tool"))
        });
    assert!(tool_turn, "the tool result reached the upstream");
}
