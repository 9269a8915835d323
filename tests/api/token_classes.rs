//! Every token class billed exactly: mocks of OpenAI (an OpenAI-compatible
//! provider), DeepSeek, Anthropic, Gemini and Bedrock report cached input,
//! cache writes and reasoning tokens in their own terms; the official OpenAI
//! Python SDK (`tests/sdk/token_classes.py`) reads them back in OpenAI's
//! shape with aigw's cost, and `/stats`, `/admin/api/billing`, the request
//! log and `aigw audit` show each class, priced to the micro-dollar, with
//! classes that have no price billed at the fallback rate and flagged.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, frame, sse, sse_response};
use crate::billing::{run_aigw, snapshot, today};
use crate::harness::{TestEnv, wait_until};

/// What one call of a model reports and costs.
struct Expected {
    model: &'static str,
    prompt: u64,
    completion: u64,
    cached: u64,
    write_5m: u64,
    write_1h: u64,
    reasoning: u64,
    /// Micro-dollars, worked out by hand in each mock's comment.
    cost: i64,
    fallback: bool,
}

const EXPECTED: [Expected; 5] = [
    // $2 in, $8 out, $0.50 cached, $2.50 written, $10 reasoning (admin's):
    // 300*2 + 600*0.5 + 100*2.5 + 300*8 + 200*10 = 5,550.
    Expected {
        model: "gpt-classes",
        prompt: 1000,
        completion: 500,
        cached: 600,
        write_5m: 100,
        write_1h: 0,
        reasoning: 200,
        cost: 5_550,
        fallback: false,
    },
    // Catalog: $0.14 in, $0.0028 cache hit, $0.28 out, no reasoning rate
    // (at the output rate, flagged): 100*0.14 + 900*0.0028 + 100*0.28
    // = 44.52, rounded up to 45.
    Expected {
        model: "deepseek-v4-flash",
        prompt: 1000,
        completion: 100,
        cached: 900,
        write_5m: 0,
        write_1h: 0,
        reasoning: 40,
        cost: 45,
        fallback: true,
    },
    // Catalog: $1 in, $0.10 read, $1.25 / $2 written (5 min / 1 h), $5 out:
    // 100*1 + 2000*0.1 + 1000*1.25 + 2000*2 + 50*5 = 5,800.
    Expected {
        model: "claude-haiku-4-5",
        prompt: 5100,
        completion: 50,
        cached: 2000,
        write_5m: 1000,
        write_1h: 2000,
        reasoning: 0,
        cost: 5_800,
        fallback: false,
    },
    // Catalog: $0.30 in, $2.50 out, no class rates (cached at the input
    // rate, thoughts at the output rate, flagged): 1000*0.3 + 150*2.5 = 675.
    Expected {
        model: "gemini-2.5-flash",
        prompt: 1000,
        completion: 150,
        cached: 400,
        write_5m: 0,
        write_1h: 0,
        reasoning: 50,
        cost: 675,
        fallback: true,
    },
    // The admin's: $3 in, $0.30 read, $3.75 written, $15 out:
    // 100*3 + 1000*0.3 + 200*3.75 + 20*15 = 1,650.
    Expected {
        model: "global.anthropic.claude-sonnet-5-v1:0",
        prompt: 1300,
        completion: 20,
        cached: 1000,
        write_5m: 200,
        write_1h: 0,
        reasoning: 0,
        cost: 1_650,
        fallback: false,
    },
];

fn openai_compatible(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let model = b["model"].as_str().unwrap().to_string();
    let usage = if model == "gpt-classes" {
        json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 100,
                "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0}})
    } else {
        // DeepSeek's own fields: hits and misses, no prompt_tokens_details.
        json!({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
            "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100,
            "completion_tokens_details": {"reasoning_tokens": 40}})
    };
    if b["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1_764_000_000,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let usage_chunk = json!({"id": "c1", "object": "chat.completion.chunk",
            "created": 1_764_000_000, "model": model, "choices": [], "usage": usage});
        let events = [
            (
                None,
                chunk(json!({"role": "assistant", "content": "hi"}), Value::Null),
            ),
            (None, chunk(json!({}), json!("stop"))),
            (None, usage_chunk),
        ];
        return sse_response(sse(&events, "\n") + "data: [DONE]\n\n");
    }
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "c1", "object": "chat.completion", "created": 1_764_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop"}],
        "usage": usage}))
}

fn anthropic(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let usage = |output: u64| {
        json!({"input_tokens": 100, "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "output_tokens": output})
    };
    let message = |content: Value, output: u64| {
        json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5", "content": content, "stop_reason": "end_turn",
            "stop_sequence": null, "usage": usage(output)})
    };
    if b["stream"] != true {
        return ResponseTemplate::new(200)
            .set_body_json(message(json!([{"type": "text", "text": "hi"}]), 50));
    }
    let events = [
        (
            Some("message_start"),
            json!({"type": "message_start", "message": message(json!([]), 1)}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "hi"}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 50}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ];
    sse_response(sse(&events, "\n"))
}

fn gemini(r: &Request) -> ResponseTemplate {
    let usage = json!({"promptTokenCount": 1000, "cachedContentTokenCount": 400,
        "candidatesTokenCount": 100, "thoughtsTokenCount": 50, "totalTokenCount": 1150});
    let answer = |text: &str, usage: Option<&Value>| {
        let mut v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": "STOP", "index": 0}], "modelVersion": "gemini-2.5-flash"});
        if let Some(u) = usage {
            v["usageMetadata"] = u.clone();
        }
        v
    };
    if r.url.path().ends_with(":streamGenerateContent") {
        let events = [(None, answer("hi", Some(&usage)))];
        return sse_response(sse(&events, "\r\n"));
    }
    ResponseTemplate::new(200).set_body_json(answer("hi", Some(&usage)))
}

fn bedrock(r: &Request) -> ResponseTemplate {
    let usage = json!({"inputTokens": 100, "cacheReadInputTokens": 1000,
        "cacheWriteInputTokens": 200, "outputTokens": 20, "totalTokens": 1320});
    if r.url.path().ends_with("/converse-stream") {
        let bytes: Vec<u8> = [
            ("messageStart", json!({"role": "assistant"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            ("messageStop", json!({"stopReason": "end_turn"})),
            (
                "metadata",
                json!({"usage": usage, "metrics": {"latencyMs": 10}}),
            ),
        ]
        .into_iter()
        .flat_map(|(e, v)| frame(e, v))
        .collect();
        return ResponseTemplate::new(200)
            .set_body_raw(bytes, "application/vnd.amazon.eventstream");
    }
    ResponseTemplate::new(200).set_body_json(json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
        "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 10}}))
}

async fn configure(env: &TestEnv, body: Value) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 201, "{body}: {}", r.text().await.unwrap());
}

async fn get(env: &TestEnv, path: &str) -> Value {
    let r = env.admin(reqwest::Method::GET, path).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[tokio::test]
async fn every_token_class_is_priced_exactly_through_the_sdk_and_in_every_view() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the openai SDK into .tools/"
    );
    let env = TestEnv::start().await;
    let [oai, deepseek, claude, google, aws] = [
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    ];
    for mock in [&oai, &deepseek] {
        Mock::given(method("POST"))
            .respond_with(openai_compatible)
            .expect(2)
            .mount(mock)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(anthropic)
        .expect(2)
        .mount(&claude)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/v1beta/models/gemini-2\.5-flash:(generateContent|streamGenerateContent)$",
        ))
        .respond_with(gemini)
        .expect(2)
        .mount(&google)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/(converse|converse-stream)$"))
        .respond_with(bedrock)
        .expect(2)
        .mount(&aws)
        .await;
    configure(
        &env,
        json!({"name": "oai", "base_url": format!("{}/v1", oai.uri()), "api_key": "sk-oai",
            "models": ["gpt-classes"],
            "prices": {"gpt-classes": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0,
                "cached_input_usd_per_mtok": 0.5, "cache_write_5m_usd_per_mtok": 2.5,
                "reasoning_usd_per_mtok": 10.0}}}),
    )
    .await;
    configure(
        &env,
        json!({"preset": "deepseek", "api_key": "sk-ds", "base_url": deepseek.uri(),
            "models": ["deepseek-v4-flash"]}),
    )
    .await;
    configure(
        &env,
        json!({"preset": "anthropic", "api_key": "sk-ant", "base_url": claude.uri(),
            "models": ["claude-haiku-4-5"]}),
    )
    .await;
    configure(
        &env,
        json!({"preset": "gemini", "api_key": "AIza-g", "base_url": google.uri(),
            "models": ["gemini-2.5-flash"]}),
    )
    .await;
    configure(
        &env,
        json!({"preset": "bedrock", "base_url": aws.uri(), "region": "us-east-1",
            "aws_access_key_id": "ASIACLASSES", "aws_secret_access_key": "secret-classes",
            "models": ["global.anthropic.claude-sonnet-5-v1:0"],
            "prices": {"global.anthropic.claude-sonnet-5-v1:0": {"input_usd_per_mtok": 3.0,
                "output_usd_per_mtok": 15.0, "cached_input_usd_per_mtok": 0.3,
                "cache_write_5m_usd_per_mtok": 3.75}}}),
    )
    .await;
    // The admin API shows the class prices it was given.
    let providers = get(&env, "/admin/api/providers").await;
    let oai_view = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "oai")
        .unwrap();
    let shown = &oai_view["prices"]["gpt-classes"];
    assert_eq!(shown["cached_input_usd_per_mtok"], 0.5);
    assert_eq!(shown["cache_write_5m_usd_per_mtok"], 2.5);
    assert_eq!(shown["cache_write_1h_usd_per_mtok"], Value::Null);
    assert_eq!(shown["reasoning_usd_per_mtok"], 10.0);
    let (key_id, key) = env.add_key("classes").await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/token_classes.py");
    let base = format!("{}/v1", env.base);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(EXPECTED.map(|e| e.model))
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
    assert_eq!(results.len(), EXPECTED.len(), "{stdout}\n{stderr}");
    for (e, result) in EXPECTED.iter().zip(&results) {
        assert_eq!(result["model"], e.model);
        for kind in ["plain", "stream"] {
            let r = &result[kind];
            let ctx = format!("{} {kind}: {r}", e.model);
            assert_eq!(r["prompt"], e.prompt, "{ctx}");
            assert_eq!(r["completion"], e.completion, "{ctx}");
            assert_eq!(r["cached"], e.cached, "{ctx}");
            assert_eq!(r["reasoning"], e.reasoning, "{ctx}");
            // Absent where a passed-through answer has no writes.
            let written = r["cache_write"].as_u64().unwrap_or(0);
            assert_eq!(written, e.write_5m + e.write_1h, "{ctx}");
            if e.model == "claude-haiku-4-5" {
                // aigw's split of the writes, translated from Anthropic's.
                assert_eq!(r["cache_write_5m"], e.write_5m, "{ctx}");
                assert_eq!(r["cache_write_1h"], e.write_1h, "{ctx}");
            }
        }
        let header: f64 = result["plain"]["cost"].as_str().unwrap().parse().unwrap();
        assert_eq!(header, usd(e.cost), "{}", e.model);
        assert_eq!(
            result["stream"]["cost"].as_f64(),
            Some(usd(e.cost)),
            "{}",
            e.model
        );
    }

    // The views: every class summed, every cost exact.
    wait_until(Duration::from_secs(30), || async {
        crate::billing::projected_requests(&env).await == 10
    })
    .await;
    let stats = env.stats(&key).await;
    let rows = stats["data"].as_array().unwrap();
    let mut total_cost = 0;
    for e in &EXPECTED {
        let row = rows.iter().find(|r| r["model"] == e.model).unwrap();
        let ctx = format!("{}: {row}", e.model);
        assert_eq!(row["requests"], 2, "{ctx}");
        assert_eq!(row["prompt_tokens"], 2 * e.prompt, "{ctx}");
        assert_eq!(row["completion_tokens"], 2 * e.completion, "{ctx}");
        assert_eq!(row["cached_tokens"], 2 * e.cached, "{ctx}");
        assert_eq!(row["cache_write_5m_tokens"], 2 * e.write_5m, "{ctx}");
        assert_eq!(row["cache_write_1h_tokens"], 2 * e.write_1h, "{ctx}");
        assert_eq!(row["reasoning_tokens"], 2 * e.reasoning, "{ctx}");
        assert_eq!(row["cost_micros"], 2 * e.cost, "{ctx}");
        assert_eq!(
            row["price_fallback_requests"],
            if e.fallback { 2 } else { 0 },
            "{ctx}"
        );
        total_cost += 2 * e.cost;
    }
    let totals = &stats["totals"];
    assert_eq!(totals["cost_micros"], total_cost);
    assert_eq!(
        totals["cached_tokens"],
        EXPECTED.iter().map(|e| 2 * e.cached).sum::<u64>()
    );
    assert_eq!(totals["price_fallback_requests"], 4);

    let bill = get(
        &env,
        &format!("/admin/api/billing?key={key_id}&from={}", today()),
    )
    .await;
    let bill = &bill["data"][0];
    assert_eq!(bill["cost_micros"], total_cost);
    assert_eq!(
        bill["reasoning_tokens"],
        EXPECTED.iter().map(|e| 2 * e.reasoning).sum::<u64>()
    );
    assert_eq!(
        bill["cache_write_1h_tokens"],
        EXPECTED.iter().map(|e| 2 * e.write_1h).sum::<u64>()
    );
    for e in &EXPECTED {
        let item = bill["line_items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["model"] == e.model)
            .unwrap();
        assert_eq!(item["cost_micros"], 2 * e.cost, "{item}");
        assert_eq!(item["cached_tokens"], 2 * e.cached, "{item}");
        assert_eq!(item["cache_write_5m_tokens"], 2 * e.write_5m, "{item}");
    }

    // The request log and the outcome events carry the classes and the flag.
    let log = get(&env, &format!("/admin/api/requests?key={key_id}&limit=100")).await;
    for row in log["data"].as_array().unwrap() {
        let e = EXPECTED.iter().find(|e| row["model"] == e.model).unwrap();
        assert_eq!(row["cached_tokens"], e.cached, "{row}");
        assert_eq!(row["reasoning_tokens"], e.reasoning, "{row}");
        assert_eq!(row["cache_write_1h_tokens"], e.write_1h, "{row}");
        assert_eq!(row["price_fallback"], e.fallback, "{row}");
        assert_eq!(row["cost_micros"], e.cost, "{row}");
    }

    // The audit agrees with the views, class by class, and a rebuild
    // projects the same views again.
    let day = today();
    let out = run_aigw(
        &env,
        &["audit", "--from", &day, "--to", &day, "--format", "json"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["differences"], json!([]));
    assert_eq!(report["expected_totals"], report["recorded_totals"]);
    assert_eq!(report["expected_totals"]["cost_micros"], total_cost);
    assert_eq!(
        report["expected_totals"]["cache_write_5m_tokens"],
        EXPECTED.iter().map(|e| 2 * e.write_5m).sum::<u64>()
    );
    let table = run_aigw(&env, &["audit", "--from", &day, "--to", &day]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("4 request(s) with a fallback price"),
        "{table}"
    );
    let before = snapshot(&env).await;
    let out = run_aigw(&env, &["projector", "rebuild"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&env).await, before);
}

#[tokio::test]
async fn prices_check_lists_the_catalog_prices_older_than_the_age() {
    let env = TestEnv::start().await;
    // Every catalog price is younger than a century: nothing listed, exit 0.
    let out = run_aigw(&env, &["prices", "check", "--older-than", "36500days"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 of 29 presets (0 models)"), "{stdout}");
    // Every priced preset is older than a day: each listed with its source.
    let out = run_aigw(&env, &["prices", "check", "--older-than", "1d"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stderr.contains("checking the prices of 29 catalog presets"),
        "{stderr}"
    );
    assert!(
        stdout.contains("anthropic: prices as of 2026-07-29")
            && stdout.contains("  claude-haiku-4-5"),
        "{stdout}"
    );
    assert!(stdout.contains("source https://"), "{stdout}");
    // Bad input is refused with clap's usage error.
    let out = run_aigw(&env, &["prices", "check", "--older-than", "soon"]).await;
    assert_eq!(out.status.code(), Some(2));
}
