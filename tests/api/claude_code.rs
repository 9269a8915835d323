//! Claude Code itself (`@anthropic-ai/claude-code`, pinned in
//! `tests/clients/package.json` and installed by `scripts/test`), run for
//! one non-interactive turn against aigw: the mock upstream behind aigw
//! answers with a tool call (Claude Code runs it) and then with a text that
//! quotes the tool's output. Once with an OpenAI-compatible upstream
//! (translated both ways), once with an Anthropic-native one (verbatim):
//! Claude Code must exit 0 with the answer, and the turn is billed.

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

/// What the mock does with one request: the tool's output when the
/// conversation carries it back, else a call of Claude Code's `Bash` tool
/// when it is offered, else a plain "pong" (Claude Code's side requests).
enum Turn {
    CallBash,
    Answer(String),
}

fn turn(tools: bool, tool_output: Option<String>) -> Turn {
    match tool_output {
        Some(out) => Turn::Answer(format!("pong, the tool said {}", out.trim())),
        None if tools => Turn::CallBash,
        None => Turn::Answer("pong".into()),
    }
}

fn offers_bash(b: &Value) -> bool {
    b["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .any(|t| t["name"] == "Bash" || t["function"]["name"] == "Bash")
    })
}

const BASH_INPUT: &str = r#"{"command":"echo tool-ran-$((6*7))","description":"Print a word"}"#;

/// An OpenAI-compatible upstream.
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
    let turn = turn(offers_bash(&b), tool_output);
    if b["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let (delta, finish) = match &turn {
            Turn::CallBash => (
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_bash",
                    "type": "function", "function": {"name": "Bash", "arguments": BASH_INPUT}}]}),
                "tool_calls",
            ),
            Turn::Answer(text) => (json!({"role": "assistant", "content": text}), "stop"),
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
    let (message, finish) = match &turn {
        Turn::CallBash => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_bash",
                "type": "function", "function": {"name": "Bash", "arguments": BASH_INPUT}}]}),
            "tool_calls",
        ),
        Turn::Answer(text) => (json!({"role": "assistant", "content": text}), "stop"),
    };
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "c1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage}))
}

/// The text of an Anthropic `tool_result` block (a string or text blocks).
fn tool_result_text(block: &Value) -> String {
    match &block["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// An Anthropic-native upstream (`/v1/messages`), streamed or not.
fn anthropic_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap_or("m").to_string();
    let usage = json!({"input_tokens": 100, "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 900, "output_tokens": 2});
    let tool_output = b["messages"].as_array().and_then(|ms| {
        ms.iter()
            .rev()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .find(|block| block["type"] == "tool_result")
            .map(tool_result_text)
    });
    let turn = turn(offers_bash(&b), tool_output);
    let (block, stop) = match &turn {
        Turn::CallBash => (
            json!({"type": "tool_use", "id": "toolu_bash", "name": "Bash",
                "input": serde_json::from_str::<Value>(BASH_INPUT).unwrap()}),
            "tool_use",
        ),
        Turn::Answer(text) => (json!({"type": "text", "text": text}), "end_turn"),
    };
    if b["stream"] != true {
        return ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_up", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage}));
    }
    let (start, delta) = match &turn {
        Turn::CallBash => (
            json!({"type": "tool_use", "id": "toolu_bash", "name": "Bash", "input": {}}),
            json!({"type": "input_json_delta", "partial_json": BASH_INPUT}),
        ),
        Turn::Answer(text) => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": text}),
        ),
    };
    let events = [
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_up", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": usage}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": start}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": 2}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ];
    sse_response(sse(&events, "\n"))
}

/// Runs `claude -p` against aigw with `key`, calling `model`; its JSON
/// result.
async fn run_claude(env: &TestEnv, key: &str, model: &str) -> Value {
    let claude =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_modules/.bin/claude");
    assert!(
        claude.exists(),
        "run scripts/test: it installs Claude Code into tests/clients/"
    );
    let home = std::env::temp_dir().join(format!("aigw-claude-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&home).unwrap();
    let (base, key, model, run_home) = (
        env.base.clone(),
        key.to_string(),
        model.to_string(),
        home.clone(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(claude)
            .args([
                "-p",
                "Run `echo tool-ran-$((6*7))` with Bash, then reply with one word: pong",
                "--output-format",
                "json",
                "--allowedTools",
                "Bash(echo:*)",
            ])
            .current_dir(&run_home)
            .env("HOME", &run_home)
            .env("ANTHROPIC_BASE_URL", base)
            .env("ANTHROPIC_API_KEY", key)
            .env("ANTHROPIC_MODEL", &model)
            .env("ANTHROPIC_SMALL_FAST_MODEL", &model)
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
    let answer = result["result"].as_str().unwrap_or("");
    assert!(
        answer.contains("pong") && answer.contains(TOOL_OUTPUT),
        "the answer after the tool ran: {result}"
    );
    result
}

/// Waits until the key's requests are recorded, at least one of them
/// priced; how many were accepted.
async fn billed_requests(env: &TestEnv, key_id: &str) -> i64 {
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
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'request'
         AND event_type = 'RequestAccepted' AND payload->'RequestAccepted'->>'key_id' = $1",
    )
    .bind(key_id)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn claude_code_runs_a_tool_through_aigw_from_an_openai_upstream() {
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
    let (key_id, key) = env.add_key("claude-code").await;
    run_claude(&env, &key, "gpt-x").await;

    // The tool's output went back to the upstream as an OpenAI tool message
    // answering the call.
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
    let tool = turns.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(tool["tool_call_id"], "call_bash", "{round_trip}");
    assert!(
        tool["content"].as_str().unwrap().contains(TOOL_OUTPUT),
        "{tool}"
    );
    assert!(
        turns
            .iter()
            .any(|m| m["tool_calls"][0]["id"] == "call_bash"),
        "{round_trip}"
    );
    assert!(billed_requests(&env, &key_id).await >= 2);
}

#[tokio::test]
async fn claude_code_runs_a_tool_through_aigw_from_an_anthropic_upstream() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(anthropic_upstream)
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "claude", "preset": "anthropic", "api_key": "sk-ant-upstream",
            "base_url": mock.uri(), "models": ["claude-haiku-4-5"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (key_id, key) = env.add_key("claude-code").await;
    run_claude(&env, &key, "claude-haiku-4-5").await;

    // Verbatim: Claude Code's own fields reached the upstream untouched,
    // with the provider's credential in place of the caller's.
    let requests = mock.received_requests().await.unwrap();
    let main = requests
        .iter()
        .find(|r| offers_bash(&body(r)))
        .expect("Claude Code's main turn");
    let sent = body(main);
    assert!(
        sent.to_string().contains("cache_control"),
        "cache hints kept: {sent}"
    );
    assert_eq!(main.headers["x-api-key"], "sk-ant-upstream");
    assert!(main.headers.get("anthropic-version").is_some());
    let round_trip = requests
        .iter()
        .map(body)
        .find(|b| b.to_string().contains("\"tool_result\""))
        .expect("the tool result reached the upstream");
    assert!(
        round_trip.to_string().contains("toolu_bash"),
        "{round_trip}"
    );
    assert!(billed_requests(&env, &key_id).await >= 2);
}
