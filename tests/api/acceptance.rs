//! Issue #3's acceptance, tried as a new user would: the DeepSeek, Anthropic,
//! Gemini and Bedrock presets configured with only their keys (and Bedrock's
//! region and temporary AWS credentials), pointed by a `base_url` override at
//! mocks that speak each provider's native wire format; each called through
//! the official OpenAI Python SDK (`tests/sdk/acceptance.py`: plain, streamed,
//! tool call, streamed tool call, each tool call answered with its result);
//! the costs in `/stats` equal the catalog prices times the mocks' usage, to
//! the micro-dollar.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aigw_dispatcher::providers::bedrock::{AwsCredentials, sigv4_headers};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{TestEnv, wait_until};

/// Usage every mock reports, by kind of call: (prompt, completion) tokens.
const PLAIN: (u64, u64) = (1000, 200);
const STREAM: (u64, u64) = (1100, 300);
const TOOL: (u64, u64) = (1200, 40);
const TOOL_STREAM: (u64, u64) = (1300, 50);
const ANSWER: (u64, u64) = (1400, 30);
/// Calls per provider: plain, streamed, two tool calls and their answers.
const CALLS: [(u64, u64); 6] = [PLAIN, STREAM, TOOL, TOOL_STREAM, ANSWER, ANSWER];
const ANSWER_TEXT: &str = "Sunny, 21 °C.";
/// What Gemini 3 signs its function calls with (and wants back).
const SIGNATURE: &str = "c2lnbmF0dXJlLW9mLXRoZS1jYWxs";

const DEEPSEEK_KEY: &str = "sk-deepseek-acceptance";
const ANTHROPIC_KEY: &str = "sk-ant-acceptance";
const GEMINI_KEY: &str = "AIza-acceptance";
const AWS_ACCESS_KEY_ID: &str = "ASIAACCEPTANCE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYacceptance";
const AWS_SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEacceptance//token+=";
const AWS_REGION: &str = "eu-central-1";

/// The model of each provider and its catalog price (micro-dollars per
/// million input and output tokens).
const MODELS: [(&str, &str, i64, i64); 4] = [
    ("deepseek", "deepseek-v4-flash", 140_000, 280_000),
    ("anthropic", "claude-haiku-4-5", 1_000_000, 5_000_000),
    ("gemini", "gemini-3.5-flash", 1_500_000, 9_000_000),
    (
        "bedrock",
        "global.anthropic.claude-sonnet-5-v1:0",
        3_000_000,
        15_000_000,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    Plain,
    Stream,
    Tool,
    ToolStream,
    /// The turn after a tool call, carrying its result.
    Answer,
}

impl Call {
    fn of(stream: bool, tools: bool, answer: bool) -> Self {
        match (stream, tools) {
            _ if answer => Call::Answer,
            (false, false) => Call::Plain,
            (true, false) => Call::Stream,
            (false, true) => Call::Tool,
            (true, true) => Call::ToolStream,
        }
    }

    fn usage(self) -> (u64, u64) {
        match self {
            Call::Plain => PLAIN,
            Call::Stream => STREAM,
            Call::Tool => TOOL,
            Call::ToolStream => TOOL_STREAM,
            Call::Answer => ANSWER,
        }
    }

    /// The city the script asks about in tool calls.
    fn city(self) -> &'static str {
        if self == Call::ToolStream {
            "Rome"
        } else {
            "Paris"
        }
    }
}

pub(crate) fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header_of(r: &Request, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

pub(crate) fn sse(events: &[(Option<&str>, Value)], line_end: &str) -> String {
    events
        .iter()
        .map(|(event, data)| match event {
            Some(e) => format!("event: {e}{line_end}data: {data}{line_end}{line_end}"),
            None => format!("data: {data}{line_end}{line_end}"),
        })
        .collect()
}

pub(crate) fn sse_response(text: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(text)
}

// ---------------------------------------------------------------- DeepSeek

/// DeepSeek speaks OpenAI's chat completions at `/chat/completions`.
fn deepseek(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let answer = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "tool");
    let call = Call::of(b["stream"] == true, b.get("tools").is_some(), answer);
    let (p, c) = call.usage();
    let usage = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
        "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": p});
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "ds-1", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "deepseek-v4-flash", "system_fingerprint": "fp_ds",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let usage_chunk = json!({"id": "ds-1", "object": "chat.completion.chunk",
        "created": 1_764_000_000, "model": "deepseek-v4-flash", "choices": [], "usage": usage});
    let full = |message: Value, finish: &str| {
        json!({"id": "ds-1", "object": "chat.completion", "created": 1_764_000_000,
            "model": "deepseek-v4-flash", "system_fingerprint": "fp_ds",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage})
    };
    let done = |events: Vec<Value>| {
        sse_response(
            sse(
                &events.into_iter().map(|e| (None, e)).collect::<Vec<_>>(),
                "\n",
            ) + "data: [DONE]\n\n",
        )
    };
    match call {
        Call::Plain => ResponseTemplate::new(200).set_body_json(full(
            json!({"role": "assistant", "content": "Hello from DeepSeek"}),
            "stop",
        )),
        Call::Answer => ResponseTemplate::new(200).set_body_json(full(
            json!({"role": "assistant", "content": ANSWER_TEXT}),
            "stop",
        )),
        Call::Tool => ResponseTemplate::new(200).set_body_json(full(
            json!({"role": "assistant", "content": "", "tool_calls": [{
                "id": "call_ds_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}),
            "tool_calls",
        )),
        Call::Stream => done(vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hi"}), Value::Null),
            chunk(json!({"content": " from DeepSeek"}), Value::Null),
            chunk(json!({"content": ""}), json!("stop")),
            usage_chunk,
        ]),
        Call::ToolStream => done(vec![
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                "id": "call_ds_2", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Rome\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({"content": null}), json!("tool_calls")),
            usage_chunk,
        ]),
    }
}

// ---------------------------------------------------------------- Anthropic

/// Anthropic Messages at `/v1/messages`, with its SSE event sequence.
fn anthropic(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let answer = b["messages"].as_array().unwrap().iter().any(|m| {
        m["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
    });
    let call = Call::of(b["stream"] == true, b.get("tools").is_some(), answer);
    let (p, c) = call.usage();
    let message = |content: Value, stop: Value, output: u64| {
        json!({"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5", "content": content, "stop_reason": stop,
            "stop_sequence": null,
            "usage": {"input_tokens": p, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": output}})
    };
    let tool_use = json!({"type": "tool_use", "id": "toolu_01", "name": "get_weather",
        "input": {"city": "Paris"}});
    let start = (
        Some("message_start"),
        json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
    );
    let delta = |i: u64, d: Value| {
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": i, "delta": d}),
        )
    };
    let block_start = |i: u64, block: Value| {
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": i, "content_block": block}),
        )
    };
    let block_stop = |i: u64| {
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": i}),
        )
    };
    let end = |stop: &str| {
        [
            (
                Some("message_delta"),
                json!({"type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": null},
                    "usage": {"output_tokens": c}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ]
    };
    let ping = (Some("ping"), json!({"type": "ping"}));
    match call {
        Call::Plain => ResponseTemplate::new(200).set_body_json(message(
            json!([{"type": "text", "text": "Hello from Claude"}]),
            json!("end_turn"),
            c,
        )),
        Call::Answer => ResponseTemplate::new(200).set_body_json(message(
            json!([{"type": "text", "text": ANSWER_TEXT}]),
            json!("end_turn"),
            c,
        )),
        Call::Tool => ResponseTemplate::new(200).set_body_json(message(
            json!([{"type": "text", "text": "Let me check."}, tool_use]),
            json!("tool_use"),
            c,
        )),
        Call::Stream => {
            let mut events = vec![
                start,
                block_start(0, json!({"type": "text", "text": ""})),
                ping,
                delta(0, json!({"type": "text_delta", "text": "Hi"})),
                delta(0, json!({"type": "text_delta", "text": " from Claude"})),
                block_stop(0),
            ];
            events.extend(end("end_turn"));
            sse_response(sse(&events, "\n"))
        }
        Call::ToolStream => {
            let mut events = vec![
                start,
                block_start(0, json!({"type": "text", "text": ""})),
                delta(0, json!({"type": "text_delta", "text": "Checking."})),
                block_stop(0),
                block_start(
                    1,
                    json!({"type": "tool_use", "id": "toolu_02", "name": "get_weather",
                        "input": {}}),
                ),
                delta(1, json!({"type": "input_json_delta", "partial_json": ""})),
                delta(
                    1,
                    json!({"type": "input_json_delta", "partial_json": "{\"city\": "}),
                ),
                delta(
                    1,
                    json!({"type": "input_json_delta", "partial_json": "\"Rome\"}"}),
                ),
                block_stop(1),
            ];
            events.extend(end("tool_use"));
            sse_response(sse(&events, "\n"))
        }
    }
}

// ---------------------------------------------------------------- Gemini

fn gemini_parts(b: &Value) -> impl Iterator<Item = &Value> {
    b["contents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["parts"].as_array().unwrap())
}

/// Gemini `generateContent` and `streamGenerateContent?alt=sse`; SSE lines end
/// with CRLF and the stream ends by closing (no `[DONE]`). Like Gemini 3, it
/// signs its function calls and refuses a later turn that drops a signature.
fn gemini(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let stream = r.url.path().ends_with(":streamGenerateContent");
    let answer = gemini_parts(&b).any(|p| p.get("functionResponse").is_some());
    let call = Call::of(stream, b.get("tools").is_some(), answer);
    let unsigned = gemini_parts(&b)
        .position(|p| p.get("functionCall").is_some() && p["thoughtSignature"] != SIGNATURE);
    if let Some(position) = unsigned {
        return ResponseTemplate::new(400).set_body_json(json!({"error": {"code": 400,
            "message": format!("Function call is missing a thought_signature in functionCall \
                parts. This is required for tools to work correctly, and missing \
                thought_signature may lead to degraded model performance. Additional data, \
                function call `default_api:get_weather` , position {position}. Please refer \
                to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."),
            "status": "INVALID_ARGUMENT"}}));
    }
    let (p, c) = call.usage();
    let response = |parts: Value, finish: Option<&str>, usage: Option<(u64, u64)>| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        let mut v = json!({"candidates": [candidate], "modelVersion": "gemini-3.5-flash",
            "responseId": "gem-1"});
        if let Some((p, c)) = usage {
            v["usageMetadata"] = json!({"promptTokenCount": p, "candidatesTokenCount": c,
                "totalTokenCount": p + c, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p}]});
        }
        v
    };
    let function_call = json!({"functionCall": {"name": "get_weather",
        "args": {"city": call.city()}}, "thoughtSignature": SIGNATURE});
    match call {
        Call::Plain => ResponseTemplate::new(200).set_body_json(response(
            json!([{"text": "Hello from Gemini"}]),
            Some("STOP"),
            Some((p, c)),
        )),
        Call::Answer => ResponseTemplate::new(200).set_body_json(response(
            json!([{"text": ANSWER_TEXT}]),
            Some("STOP"),
            Some((p, c)),
        )),
        // Gemini ends a function call with finishReason STOP.
        Call::Tool => ResponseTemplate::new(200).set_body_json(response(
            json!([function_call]),
            Some("STOP"),
            Some((p, c)),
        )),
        Call::Stream => sse_response(sse(
            &[
                (None, response(json!([{"text": "Hi"}]), None, Some((p, 1)))),
                (
                    None,
                    response(
                        json!([{"text": " from Gemini"}]),
                        Some("STOP"),
                        Some((p, c)),
                    ),
                ),
            ],
            "\r\n",
        )),
        Call::ToolStream => sse_response(sse(
            &[(
                None,
                response(json!([function_call]), Some("STOP"), Some((p, c))),
            )],
            "\r\n",
        )),
    }
}

// ---------------------------------------------------------------- Bedrock

pub(crate) fn frame(event: &str, payload: Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}

/// Bedrock Converse (JSON) and ConverseStream (binary event stream).
fn bedrock(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let stream = r.url.path().ends_with("/converse-stream");
    let answer = b["messages"].as_array().unwrap().iter().any(|m| {
        m["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b.get("toolResult").is_some())
    });
    let call = Call::of(stream, b.get("toolConfig").is_some(), answer);
    let (p, c) = call.usage();
    let usage = json!({"inputTokens": p, "outputTokens": c, "totalTokens": p + c});
    let tool_use = json!({"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather",
        "input": {"city": "Paris"}}});
    let full = |content: Value, stop: &str| {
        ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 120}}))
    };
    let events = |frames: Vec<(&str, Value)>| {
        let bytes: Vec<u8> = frames.into_iter().flat_map(|(e, v)| frame(e, v)).collect();
        ResponseTemplate::new(200).set_body_raw(bytes, "application/vnd.amazon.eventstream")
    };
    let metadata = (
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 120}, "p": "abcdef"}),
    );
    match call {
        Call::Plain => full(json!([{"text": "Hello from Bedrock"}]), "end_turn"),
        Call::Answer => full(json!([{"text": ANSWER_TEXT}]), "end_turn"),
        Call::Tool => full(json!([{"text": "Let me check."}, tool_use]), "tool_use"),
        Call::Stream => events(vec![
            ("messageStart", json!({"role": "assistant", "p": "abc"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}, "p": "ab"}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": " from Bedrock"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            ("messageStop", json!({"stopReason": "end_turn"})),
            metadata,
        ]),
        Call::ToolStream => events(vec![
            ("messageStart", json!({"role": "assistant"})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse":
                    {"toolUseId": "tooluse_2", "name": "get_weather"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"city\":"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": " \"Rome\"}"}}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            metadata,
        ]),
    }
}

/// Recomputes the SigV4 signature of a request the Bedrock mock at `base`
/// received, at the time it names, with the configured credentials.
fn expected_authorization(base: &str, r: &Request) -> String {
    let date = header_of(r, "x-amz-date").unwrap();
    let at = chrono::NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at.timestamp().try_into().unwrap());
    let secret = SecretString::from(AWS_SECRET);
    let token = SecretString::from(AWS_SESSION_TOKEN);
    let aws = AwsCredentials {
        access_key_id: AWS_ACCESS_KEY_ID,
        secret_access_key: &secret,
        session_token: Some(&token),
        region: AWS_REGION,
    };
    // wiremock's `Request::url` names localhost, not the address aigw called.
    let url = format!("{base}{}", r.url.path());
    sigv4_headers(&url, &r.body, &aws, at, "bedrock")
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1
}

// ---------------------------------------------------------------- the test

async fn add_preset(env: &TestEnv, body: Value) -> Value {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 201, "{body}: {text}");
    for secret in [AWS_SECRET, AWS_SESSION_TOKEN, DEEPSEEK_KEY, ANTHROPIC_KEY] {
        assert!(!text.contains(secret), "a secret in the response: {text}");
    }
    serde_json::from_str(&text).unwrap()
}

fn cost(usage: (u64, u64), input: i64, output: i64) -> i64 {
    let (p, c) = usage;
    // Rounded up to the next micro-dollar, request by request.
    (i64::try_from(p).unwrap() * input + i64::try_from(c).unwrap() * output + 999_999) / 1_000_000
}

#[tokio::test]
async fn four_presets_through_the_openai_python_sdk_with_costs_in_stats() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the openai SDK into .tools/"
    );
    // The prices below are the catalog's.
    let catalog = aigw_runtime::catalog::catalog().unwrap();
    for (preset, model, input, output) in MODELS {
        let m = catalog
            .get(preset)
            .unwrap()
            .models
            .iter()
            .find(|m| m.id == model)
            .unwrap();
        assert_eq!(
            (
                m.input.map(|v| (v * 1e6).round() as i64),
                m.output.map(|v| (v * 1e6).round() as i64)
            ),
            (Some(input), Some(output)),
            "{preset}/{model}"
        );
    }

    let env = TestEnv::start().await;
    let [deepseek_mock, anthropic_mock, gemini_mock, bedrock_mock] = [
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    ];
    // Requests without the right path and credentials get wiremock's 404.
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header(
            "authorization",
            format!("Bearer {DEEPSEEK_KEY}").as_str(),
        ))
        .respond_with(deepseek)
        .expect(6)
        .mount(&deepseek_mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", ANTHROPIC_KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(anthropic)
        .expect(6)
        .mount(&anthropic_mock)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/v1beta/models/gemini-3\.5-flash:(generateContent|streamGenerateContent)$",
        ))
        .and(header("x-goog-api-key", GEMINI_KEY))
        .respond_with(gemini)
        .expect(6)
        .mount(&gemini_mock)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/model/global\.anthropic\.claude-sonnet-5-v1%3A0/(converse|converse-stream)$",
        ))
        .and(header("x-amz-security-token", AWS_SESSION_TOKEN))
        .respond_with(bedrock)
        .expect(6)
        .mount(&bedrock_mock)
        .await;

    add_preset(
        &env,
        json!({"preset": "deepseek", "api_key": DEEPSEEK_KEY, "base_url": deepseek_mock.uri()}),
    )
    .await;
    add_preset(
        &env,
        json!({"preset": "anthropic", "api_key": ANTHROPIC_KEY, "base_url": anthropic_mock.uri()}),
    )
    .await;
    add_preset(
        &env,
        json!({"preset": "gemini", "api_key": GEMINI_KEY, "base_url": gemini_mock.uri()}),
    )
    .await;
    let created = add_preset(
        &env,
        json!({"preset": "bedrock", "base_url": bedrock_mock.uri(), "region": AWS_REGION,
            "aws_access_key_id": AWS_ACCESS_KEY_ID, "aws_secret_access_key": AWS_SECRET,
            "aws_session_token": AWS_SESSION_TOKEN}),
    )
    .await;
    assert_eq!(created["has_credential"], true);
    assert_eq!(created["has_session_token"], true);
    let (_, key) = env.add_key("acceptance").await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/acceptance.py");
    let base = format!("{}/v1", env.base);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(MODELS.map(|(_, model, _, _)| model))
            .env("OPENAI_BASE_URL", base)
            .env("OPENAI_API_KEY", key.clone())
            .output()
            .map(|o| (o, key))
            .unwrap()
    })
    .await
    .unwrap();
    let (output, key) = output;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4, "{stdout}\n{stderr}");

    for ((preset, model, _, _), result) in MODELS.iter().zip(&results) {
        let who = match *preset {
            "deepseek" => "DeepSeek",
            "anthropic" => "Claude",
            "gemini" => "Gemini",
            _ => "Bedrock",
        };
        let ctx = format!("{preset}: {result}");
        assert_eq!(result["model"], *model, "{ctx}");
        let usage = |u: (u64, u64)| json!([u.0, u.1]);
        let plain = &result["plain"];
        assert_eq!(plain["content"], format!("Hello from {who}"), "{ctx}");
        assert_eq!(plain["finish_reason"], "stop", "{ctx}");
        assert_eq!(plain["usage"], usage(PLAIN), "{ctx}");
        let stream = &result["stream"];
        assert_eq!(stream["content"], format!("Hi from {who}"), "{ctx}");
        assert_eq!(stream["finish_reason"], "stop", "{ctx}");
        assert_eq!(stream["usage"], usage(STREAM), "{ctx}");
        for (kind, city, tokens) in [
            ("tool", "Paris", TOOL),
            ("tool_stream", "Rome", TOOL_STREAM),
        ] {
            let r = &result[kind];
            assert_eq!(r["finish_reason"], "tool_calls", "{kind} {ctx}");
            assert_eq!(r["usage"], usage(tokens), "{kind} {ctx}");
            let calls = r["calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{kind} {ctx}");
            assert_eq!(calls[0]["type"], "function", "{kind} {ctx}");
            assert_eq!(calls[0]["name"], "get_weather", "{kind} {ctx}");
            assert_eq!(calls[0]["arguments"], json!({"city": city}), "{kind} {ctx}");
            assert!(
                !calls[0]["id"].as_str().unwrap_or("").is_empty(),
                "{kind} {ctx}"
            );
            assert_eq!(r["answer"], ANSWER_TEXT, "{kind} {ctx}");
        }
    }

    // What aigw sent each provider: system prompt, model, tools, and for the
    // answers the tool call and its result in the provider's own terms.
    let tool_schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
        "required": ["city"]});
    let result_of = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
    let mut answers = 0;
    for r in deepseek_mock.received_requests().await.unwrap() {
        let b = body(&r);
        assert_eq!(b["model"], "deepseek-v4-flash", "{b}");
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        if b["stream"] == true {
            assert_eq!(b["stream_options"]["include_usage"], true, "{b}");
        }
        if let Some(tools) = b.get("tools") {
            assert_eq!(tools[0]["function"]["name"], "get_weather", "{b}");
            assert_eq!(tools[0]["function"]["parameters"], tool_schema, "{b}");
        }
        if m.len() > 2 {
            answers += 1;
            let call = &m[2]["tool_calls"][0];
            assert_eq!(call["function"]["name"], "get_weather", "{b}");
            assert_eq!(m[3]["role"], "tool", "{b}");
            assert_eq!(m[3]["tool_call_id"], call["id"], "{b}");
            assert_eq!(
                result_of(m[3]["content"].as_str().unwrap())["temperature_c"],
                21
            );
        }
    }
    for r in anthropic_mock.received_requests().await.unwrap() {
        let b = body(&r);
        assert_eq!(b["model"], "claude-haiku-4-5", "{b}");
        assert_eq!(b["system"], "Be brief.", "{b}");
        assert!(b["max_tokens"].as_u64().unwrap() > 0, "{b}");
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "user", "{b}");
        if let Some(tools) = b.get("tools") {
            assert_eq!(
                tools[0],
                json!({"name": "get_weather", "description": "Current weather of a city",
                    "input_schema": tool_schema}),
                "{b}"
            );
        }
        if m.len() > 1 {
            answers += 1;
            assert_eq!(m.len(), 3, "{b}");
            assert_eq!(m[1]["role"], "assistant", "{b}");
            let tool_use = m[1]["content"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "tool_use")
                .unwrap();
            assert_eq!(tool_use["name"], "get_weather", "{b}");
            assert!(tool_use["input"]["city"].is_string(), "{b}");
            let result = &m[2]["content"][0];
            assert_eq!(m[2]["role"], "user", "{b}");
            assert_eq!(result["type"], "tool_result", "{b}");
            assert_eq!(result["tool_use_id"], tool_use["id"], "{b}");
            assert_eq!(
                result_of(result["content"].as_str().unwrap())["temperature_c"],
                21
            );
        }
    }
    for r in gemini_mock.received_requests().await.unwrap() {
        let b = body(&r);
        if r.url.path().ends_with(":streamGenerateContent") {
            assert_eq!(r.url.query(), Some("alt=sse"), "{}", r.url);
        } else {
            assert_eq!(
                r.url.query(),
                None,
                "the key stays out of the URL: {}",
                r.url
            );
        }
        assert_eq!(
            b["systemInstruction"]["parts"][0]["text"], "Be brief.",
            "{b}"
        );
        let contents = b["contents"].as_array().unwrap();
        assert_eq!(contents[0]["role"], "user", "{b}");
        if let Some(tools) = b.get("tools") {
            let f = &tools[0]["functionDeclarations"][0];
            assert_eq!(f["name"], "get_weather", "{b}");
            assert_eq!(
                f["parameters"]["properties"]["city"]["type"], "string",
                "{b}"
            );
        }
        if contents.len() > 1 {
            answers += 1;
            assert_eq!(contents.len(), 3, "{b}");
            let call = &contents[1]["parts"][0];
            assert_eq!(contents[1]["role"], "model", "{b}");
            assert_eq!(call["functionCall"]["name"], "get_weather", "{b}");
            assert_eq!(call["thoughtSignature"], SIGNATURE, "{b}");
            let response = &contents[2]["parts"][0]["functionResponse"];
            assert_eq!(contents[2]["role"], "user", "{b}");
            assert_eq!(response["name"], "get_weather", "{b}");
            assert_eq!(response["response"]["temperature_c"], 21, "{b}");
        }
    }
    for r in bedrock_mock.received_requests().await.unwrap() {
        let b = body(&r);
        let auth = header_of(&r, "authorization").unwrap();
        let scope = format!("/{AWS_REGION}/bedrock/aws4_request");
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY_ID}/"))
                && auth.contains(&scope)
                && auth.contains("x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(
            auth,
            expected_authorization(&bedrock_mock.uri(), &r),
            "the signature checks out"
        );
        assert_eq!(b["system"], json!([{"text": "Be brief."}]), "{b}");
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "user", "{b}");
        if let Some(config) = b.get("toolConfig") {
            assert_eq!(
                config["tools"][0],
                json!({"toolSpec": {"name": "get_weather",
                    "description": "Current weather of a city",
                    "inputSchema": {"json": tool_schema}}}),
                "{b}"
            );
        }
        if m.len() > 1 {
            answers += 1;
            assert_eq!(m.len(), 3, "{b}");
            assert_eq!(m[1]["role"], "assistant", "{b}");
            let tool_use = m[1]["content"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|c| c.get("toolUse"))
                .unwrap();
            assert_eq!(tool_use["name"], "get_weather", "{b}");
            let result = &m[2]["content"][0]["toolResult"];
            assert_eq!(m[2]["role"], "user", "{b}");
            assert_eq!(result["toolUseId"], tool_use["toolUseId"], "{b}");
            let text = result["content"][0]["text"].as_str().unwrap();
            assert_eq!(result_of(text)["temperature_c"], 21, "{b}");
        }
    }
    assert_eq!(answers, 8, "two answered tool calls per provider");

    // The costs: catalog prices times the mocks' usage, per request.
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 24
    })
    .await;
    let stats = env.stats(&key).await;
    let rows = stats["data"].as_array().unwrap();
    let mut total = 0;
    for (_, model, input, output) in MODELS {
        let expected: i64 = CALLS.into_iter().map(|u| cost(u, input, output)).sum();
        total += expected;
        let row = rows
            .iter()
            .find(|r| r["model"] == model)
            .unwrap_or_else(|| panic!("{model} not in {stats}"));
        assert_eq!(row["requests"], 6, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        let tokens = |i: fn(&(u64, u64)) -> u64| CALLS.iter().map(i).sum::<u64>();
        assert_eq!(row["prompt_tokens"], tokens(|u| u.0), "{row}");
        assert_eq!(row["completion_tokens"], tokens(|u| u.1), "{row}");
        assert_eq!(row["cost_micros"], expected, "{model}: {row}");
        assert!(expected > 0);
    }
    assert_eq!(stats["totals"]["cost_micros"], total, "{stats}");
}
