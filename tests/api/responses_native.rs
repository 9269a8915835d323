//! The Responses API to OpenAI itself (the `openai` preset) is relayed,
//! not translated: the caller's body reaches `/v1/responses` with only the
//! model renamed and aigw's stored chain expanded, OpenAI's answer (JSON
//! or events) comes back with only the response's id made aigw's, and the
//! answer is billed by OpenAI's usage and stored like any other. The
//! official openai SDK works through it unchanged, against an upstream
//! that speaks the Responses API natively (a second aigw, which renders
//! OpenAI's event sequences exactly).

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse_response};
use crate::anthropic_messages::openai_provider;
use crate::harness::TestEnv;
use crate::responses::{responses, run_sdk, upstream};

fn upstream_response(stream_text: &str) -> Value {
    json!({"id": "resp_openai_1", "object": "response", "created_at": 1_764_000_000,
        "status": "completed", "model": "gpt-5.4-2026-03-05", "previous_response_id": null,
        "output": [
            {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA-opaque"},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": stream_text, "annotations": []}]}],
        "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400},
            "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 200},
            "total_tokens": 1300},
        "x_openai_extra": {"kept": true}})
}

fn openai(r: &Request) -> ResponseTemplate {
    let sent = body(r);
    let response = upstream_response("pong");
    if sent["stream"] != true {
        return ResponseTemplate::new(200).set_body_json(response);
    }
    let mut created = response.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    let events = [
        json!({"type": "response.created", "sequence_number": 0, "response": created}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
            "output_index": 1, "content_index": 0, "delta": "pong"}),
        json!({"type": "response.completed", "sequence_number": 2, "response": response}),
    ];
    let text: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    sse_response(text)
}

/// OpenAI (the preset) at a mock, with `gpt-5.4`'s catalog prices.
async fn setup() -> (TestEnv, MockServer, String) {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(openai)
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({"preset": "openai", "api_key": "sk-openai-upstream",
            "base_url": format!("{}/v1", mock.uri())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("native-responses").await;
    (env, mock, key)
}

/// gpt-5.4 at $2.50 / $15 per million, cached input $0.25: 600 uncached and
/// 400 cached input tokens, 300 output tokens (reasoning billed as output).
const COST_MICROS: i64 = 1500 + 100 + 4500;

#[tokio::test]
async fn responses_reach_openai_as_sent_and_come_back_with_aigws_id() {
    let (env, mock, key) = setup().await;
    let first = json!({"model": "gpt-5.4", "input": "ping", "store": true,
        "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "high"},
        "tools": [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
        "x_future_field": {"nested": [1, "two"]}});
    let r = responses(&env, &key, &first).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let got: Value = r.json().await.unwrap();
    let id = got["id"].as_str().unwrap().to_string();
    assert_eq!(id, format!("resp_{}", request_id.replace('-', "")));
    // Everything else as OpenAI sent it.
    let mut expected = upstream_response("pong");
    expected["id"] = json!(id);
    assert_eq!(got, expected);
    let requests = mock.received_requests().await.unwrap();
    let mut sent = first.clone();
    sent["model"] = json!("gpt-5.4");
    assert_eq!(body(&requests[0]), sent, "the caller's body, as sent");
    assert_eq!(
        requests[0].headers["authorization"],
        "Bearer sk-openai-upstream"
    );
    let events = env.wait_recorded(&request_id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["cached_tokens"], 400, "{done}");
    assert_eq!(done["usage"]["reasoning_tokens"], 200);
    assert_eq!(done["cost_micros"], COST_MICROS);

    // Stored under aigw's id, and continued from it: OpenAI gets the whole
    // conversation (its own reasoning item included), not aigw's id.
    let r = env
        .http
        .get(env.url(&format!("/v1/responses/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], json!(id));
    let second = json!({"model": "gpt-5.4", "input": "again", "previous_response_id": id});
    let r = responses(&env, &key, &second).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["previous_response_id"], json!(id));
    let requests = mock.received_requests().await.unwrap();
    let sent = body(&requests[1]);
    assert!(sent.get("previous_response_id").is_none(), "{sent}");
    let input = sent["input"].as_array().unwrap();
    assert_eq!(
        input.first().unwrap()["content"][0]["text"],
        "ping",
        "{sent}"
    );
    assert!(
        input
            .iter()
            .any(|i| i["encrypted_content"] == "gAAAA-opaque"),
        "{sent}"
    );
    assert_eq!(
        input.last().unwrap()["content"][0]["text"],
        "again",
        "{sent}"
    );
}

#[tokio::test]
async fn a_native_stream_is_openais_events_with_aigws_id_billed_and_stored() {
    let (env, _mock, key) = setup().await;
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-5.4", "input": "ping", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let id = format!("resp_{}", request_id.replace('-', ""));
    let text = r.text().await.unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            serde_json::from_str(data).unwrap()
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.output_text.delta",
            "response.completed"
        ],
        "{text}"
    );
    assert_eq!(events[0]["response"]["id"], json!(id));
    assert_eq!(events[1]["delta"], "pong");
    assert_eq!(events[2]["response"]["id"], json!(id));
    assert_eq!(
        events[2]["response"]["output"][0]["encrypted_content"],
        "gAAAA-opaque"
    );
    let recorded = env.wait_recorded(&request_id).await;
    let done = &recorded.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["cost_micros"], COST_MICROS, "{done}");
    let r = env
        .http
        .get(env.url(&format!("/v1/responses/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "completed");
}

#[tokio::test]
async fn the_openai_sdk_works_against_a_native_responses_upstream() {
    // The native upstream: another aigw in front of an OpenAI-compatible
    // chat mock, serving `/v1/responses` with OpenAI's objects and events.
    let upstream_env = TestEnv::start().await;
    let chat = upstream().await;
    openai_provider(&upstream_env, &chat).await;
    let (_, upstream_key) = upstream_env.add_key("upstream").await;

    let env = TestEnv::start().await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "openai", "preset": "openai", "api_key": upstream_key,
            "base_url": format!("{}/v1", upstream_env.base), "models": ["gpt-x"],
            "prices": {"gpt-x": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0,
                "cached_input_usd_per_mtok": 0.5}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("sdk").await;
    let out = run_sdk(&env, &key, "gpt-x").await;
    for line in [
        "plain: pong\n",
        "plain id: True response completed\n",
        "usage: 1000 20 1020 600 0\n",
        "cost header: 0.001260\n",
        "stream events: response.created,response.in_progress,response.output_item.added,response.content_part.added,response.output_text.delta,response.output_text.delta,response.output_text.done,response.content_part.done,response.output_item.done,response.completed\n",
        "stream text: pong streamed | pong streamed\n",
        "stream usage: 1000 20\n",
        "tool call: get_weather {\"city\":\"Paris\"} call_1\n",
        "tool answer: It is sunny.\n",
        "stream tool call: reasoning,function_call get_weather {\"city\":\"Paris\"}\n",
        "continued: It is sunny. True\n",
        "retrieved: True It is sunny.\n",
        "deleted: 404\n",
        "bad key: 401\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // A hosted tool is the upstream's to judge: it refused it, by name.
    assert!(out.contains("refused: 400"), "{out}");
    // The calls reached the upstream as Responses calls, not translated to
    // chat completions: it stored responses of its own.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ResponseStored'")
            .fetch_one(&upstream_env.pool)
            .await
            .unwrap();
    assert!(stored >= 3, "{stored}");
}
