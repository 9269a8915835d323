//! Gemini CLI itself (`@google/gemini-cli`, pinned in
//! `tests/clients/package.json` and installed by `scripts/test`), run for
//! one non-interactive turn against aigw's Gemini routes: the upstream
//! behind aigw answers with a call of the CLI's shell tool (the CLI runs
//! it) and then with a text that quotes the tool's output. Once with an
//! OpenAI-compatible upstream (translated both ways), once with a Gemini
//! one (verbatim): the CLI must exit 0 with the answer, and the turn is
//! billed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse, sse_response};
use crate::harness::{TestEnv, wait_until};

/// What the tool call prints (its command says `0x2a`, so only a run of
/// it prints this), and so what the final answer must quote.
const TOOL_OUTPUT: &str = "tool-ran-42";
const SHELL: &str = "run_shell_command";

/// An OpenAI-compatible upstream: the tool's output quoted when the
/// conversation carries it back, else a shell call when the shell tool is
/// offered, else JSON for a structured side request, else `pong`.
fn openai_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap_or("m").to_string();
    let usage = json!({"prompt_tokens": 2000, "completion_tokens": 3, "total_tokens": 2003});
    let tool_output = b["messages"].as_array().and_then(|ms| {
        ms.iter()
            .rev()
            .find(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
    });
    let offers_shell = b["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == SHELL));
    let message = match tool_output {
        Some(out) => json!({"role": "assistant", "content": format!("pong, the tool said {out}")}),
        None if offers_shell => json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": SHELL,
                "arguments": json!({"command": "printf 'tool-ran-%d' 0x2a", "description": "Print a word"}).to_string()}}]}),
        None if b.get("response_format").is_some() => json!({"role": "assistant",
            "content": json!({"reasoning": "The answer is complete.", "next_speaker": "user",
                "model_choice": "flash"}).to_string()}),
        None => json!({"role": "assistant", "content": "pong"}),
    };
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    if b["stream"] == true {
        let mut delta = message.clone();
        if let Some(calls) = delta["tool_calls"].as_array_mut() {
            for (i, call) in calls.iter_mut().enumerate() {
                call["index"] = json!(i);
            }
        }
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

/// Runs one turn of the CLI against aigw with `key` and `model`; checks
/// that it answered with the tool's output, and that the turn was billed.
async fn run_turn(env: &TestEnv, key_id: &str, key: &str, model: &str) {
    let gemini =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_modules/.bin/gemini");
    assert!(
        gemini.exists(),
        "run scripts/test: it installs Gemini CLI into tests/clients/"
    );
    let home = std::env::temp_dir().join(format!("aigw-gemini-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(home.join(".gemini")).unwrap();
    std::fs::write(
        home.join(".gemini/settings.json"),
        json!({"security": {"auth": {"selectedType": "gemini-api-key"}},
            "selectedAuthType": "gemini-api-key",
            "privacy": {"usageStatisticsEnabled": false}})
        .to_string(),
    )
    .unwrap();
    let (base, run_home, key, model) = (
        env.base.clone(),
        home.clone(),
        key.to_string(),
        model.to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(gemini)
            .args([
                "-m",
                &model,
                "--approval-mode",
                "yolo",
                "-o",
                "json",
                "-p",
                "Run `printf 'tool-ran-%d' 0x2a` in the shell, then reply with one word: pong",
            ])
            .current_dir(&run_home)
            .env("HOME", &run_home)
            .env("GEMINI_API_KEY", key)
            .env("GOOGLE_GEMINI_BASE_URL", base)
            .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
            .env_remove("GOOGLE_API_KEY")
            .env_remove("GOOGLE_CLOUD_PROJECT")
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
    let start = stdout.find('{').unwrap_or(0);
    let result: Value = serde_json::from_str(stdout[start..].trim())
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{stdout}\nstderr:\n{stderr}"));
    let answer = result["response"].as_str().unwrap_or("");
    assert!(
        answer.contains("pong") && answer.contains(TOOL_OUTPUT),
        "the answer after the tool ran: {result}\nstderr:\n{stderr}"
    );
    wait_until(std::time::Duration::from_secs(30), || async {
        let completed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'request'
             AND event_type = 'RequestCompleted'
             AND (payload->'RequestCompleted'->>'cost_micros')::bigint > 0",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        completed >= 2
    })
    .await;
    let accepted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'request'
         AND event_type = 'RequestAccepted' AND payload->'RequestAccepted'->>'key_id' = $1",
    )
    .bind(key_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(accepted >= 2, "{accepted}");
}

#[tokio::test]
async fn gemini_cli_runs_a_tool_through_aigw_from_an_openai_upstream() {
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
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (key_id, key) = env.add_key("gemini-cli").await;
    run_turn(&env, &key_id, &key, "gpt-x").await;
    // The tool ran between two upstream calls.
    let requests = mock.received_requests().await.unwrap();
    assert!(
        requests.iter().map(body).any(|b| b["messages"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["role"] == "tool"))),
        "the tool result reached the upstream"
    );
}

/// A Gemini upstream: the tool's output quoted when a `functionResponse`
/// came back, else a shell call when the shell tool is offered, else JSON
/// for a structured side request, else `pong`; streamed or not as asked.
fn gemini_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let parts: Vec<Value> = b["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .collect();
    let tool_output = parts
        .iter()
        .rev()
        .find_map(|p| p.get("functionResponse"))
        .map(|r| r["response"].to_string());
    let offers_shell = b["tools"].as_array().is_some_and(|tools| {
        tools.iter().any(|t| {
            t["functionDeclarations"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["name"] == SHELL))
        })
    });
    let part = match tool_output {
        Some(out) => json!({"text": format!("pong, the tool said {out}")}),
        None if offers_shell => json!({"functionCall": {"name": SHELL,
            "args": {"command": "printf 'tool-ran-%d' 0x2a", "description": "Print a word"}}}),
        None if b.pointer("/generationConfig/responseMimeType").is_some() => json!({"text":
            json!({"reasoning": "The answer is complete.", "next_speaker": "user",
                "model_choice": "flash"}).to_string()}),
        None => json!({"text": "pong"}),
    };
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [part]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 2000, "candidatesTokenCount": 3, "totalTokenCount": 2003},
        "modelVersion": "gemini-real"});
    if r.url.path().ends_with(":streamGenerateContent") {
        return sse_response(format!("data: {answer}\r\n\r\n"));
    }
    ResponseTemplate::new(200).set_body_json(answer)
}

#[tokio::test]
async fn gemini_cli_runs_a_tool_through_aigw_from_a_gemini_upstream() {
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
            "base_url": upstream.uri(), "models": ["gemini-real"],
            "prices": {"gemini-real": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (key_id, key) = env.add_key("gemini-cli").await;
    run_turn(&env, &key_id, &key, "gemini-real").await;
    // The CLI's own functionResponse went up verbatim, with aigw's key.
    let requests = upstream.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r.headers["x-goog-api-key"] == "goog-upstream-secret")
    );
    assert!(
        requests.iter().map(body).any(|b| b["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .any(|p| p.get("functionResponse").is_some())),
        "the tool result reached the upstream"
    );
}
