//! The cost on every answer: `x-aigw-cost-usd` on non-streamed answers of
//! every endpoint, the `unpriced` flag, `usage.cost_usd` on a stream's usage
//! chunk, jobs and their webhooks, idempotent replays; each equal to the
//! `cost_micros` the request's events record.

use std::time::Duration;

use aigw_dispatcher::upstream::{Part, multipart};
use bytes::Bytes;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, sse_data, user, wait_until};

/// Micro-dollars as the header shows them.
fn usd(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// The `cost_micros` of the request's outcome (`RequestCompleted`), once
/// it is stored; `None` when it is unpriced.
async fn recorded_cost(env: &TestEnv, request_id: &str) -> Option<i64> {
    let events = env.wait_recorded(request_id).await;
    let (kind, payload) = events.last().unwrap();
    assert_eq!(kind, "RequestCompleted", "{payload}");
    payload["RequestCompleted"]["cost_micros"].as_i64()
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The cost header of a priced answer, checked against the events: it is
/// the recorded cost, and that is `expected` micro-dollars.
async fn assert_priced(env: &TestEnv, response: &reqwest::Response, expected: i64) {
    assert_eq!(response.status(), 200);
    let recorded = recorded_cost(env, &request_id(response)).await;
    assert_eq!(recorded, Some(expected));
    assert_eq!(
        response.headers()["x-aigw-cost-usd"],
        usd(expected).as_str()
    );
    assert!(response.headers().get("x-aigw-cost-flagged").is_none());
}

fn price(input: f64, output: f64) -> Value {
    json!({"input_usd_per_mtok": input, "output_usd_per_mtok": output})
}

/// An OpenAI-compatible upstream answering every endpoint, and its
/// provider: `m` (chat, $1.5/$2 per million tokens), `e` (embeddings,
/// $0.13 per million), `img` ($0.04 an image), `tts` ($15 per million
/// characters), `stt` ($0.36 an hour) and `free` (chat, no price).
async fn upstream(env: &TestEnv) -> MockServer {
    let mock = MockServer::start().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    // The upstream's usage says a cost of its own, which is not aigw's.
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168,
            "cost_usd": 9.99}});
    let sse = [
        chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
        chunk(json!({"content": " there"}), json!("stop")),
        usage,
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
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
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 123, 45)))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
            "model": "e",
            "usage": {"prompt_tokens": 1000, "total_tokens": 1000}
        })))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "created": 1_764_000_000,
            "data": [{"url": "https://img/1.png"}, {"url": "https://img/2.png"}]
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
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "text": "Let's begin.",
            "usage": {"type": "duration", "seconds": 90}
        })))
        .mount(&mock)
        .await;
    let media = |key: &str, usd: f64| {
        let mut p = price(0.0, 0.0);
        p[key] = json!(usd);
        p
    };
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": ["m", "e", "img", "tts", "stt", "free"],
            "prices": {
                "m": price(1.5, 2.0),
                "e": price(0.13, 0.0),
                "img": media("per_image_usd", 0.04),
                "tts": media("per_mchar_usd", 15.0),
                "stt": media("per_hour_usd", 0.36),
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

async fn post(env: &TestEnv, key: &str, route: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url(route))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_endpoint_answers_with_the_cost_its_events_record() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env).await;
    let (_, key) = env.add_key("cost").await;

    // 123 tokens at $1.5 and 45 at $2 per million: 274.5, billed as 275.
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_priced(&env, &r, 275).await;
    assert_eq!(r.headers()["x-aigw-cost-usd"], "0.000275");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "ok");

    // 1,000 tokens at $0.13 per million.
    let r = post(
        &env,
        &key,
        "/v1/embeddings",
        json!({"model": "e", "input": "hello"}),
    )
    .await;
    assert_priced(&env, &r, 130).await;

    // Two images at $0.04.
    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        json!({"model": "img", "prompt": "a fox", "n": 2, "response_format": "url"}),
    )
    .await;
    assert_priced(&env, &r, 80_000).await;
    assert_eq!(r.headers()["x-aigw-cost-usd"], "0.080000");

    // 11 characters at $15 per million.
    let r = post(
        &env,
        &key,
        "/v1/audio/speech",
        json!({"model": "tts", "input": "Hello world", "voice": "alloy"}),
    )
    .await;
    assert_priced(&env, &r, 165).await;
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"ID3-mp3");

    // 90 seconds at $0.36 an hour.
    let (content_type, form) = multipart(&[
        (
            "file",
            Part::File {
                filename: "a.mp3".into(),
                content_type: "audio/mpeg".into(),
                bytes: Bytes::from_static(b"ID3-audio"),
            },
        ),
        ("model", Part::Text("stt".into())),
    ]);
    let r = env
        .http
        .post(env.url("/v1/audio/transcriptions"))
        .bearer_auth(&key)
        .header("content-type", content_type)
        .body(form)
        .send()
        .await
        .unwrap();
    assert_priced(&env, &r, 9_000).await;

    // Browsers may read the headers from another origin.
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .bearer_auth(&key)
        .json(&json!({"model": "m", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(exposed.contains("x-aigw-cost-usd"), "{exposed}");
    for name in [
        "x-aigw-cost-flagged",
        "x-request-id",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
        "idempotent-replayed",
        "x-aigw-original-request-id",
        "retry-after",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[tokio::test]
async fn an_unpriced_model_is_flagged_never_shown_as_free() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env).await;
    let (_, key) = env.add_key("cost").await;
    let r = env
        .chat(&key, json!({"model": "free", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(recorded_cost(&env, &request_id(&r)).await, None);
    assert!(r.headers().get("x-aigw-cost-usd").is_none());
    assert_eq!(r.headers()["x-aigw-cost-flagged"], "unpriced");

    // Streamed with usage: the usage chunk has the tokens and no cost.
    let r = env
        .chat(
            &key,
            json!({"model": "free", "messages": user("x"), "stream": true,
                "stream_options": {"include_usage": true}}),
        )
        .await;
    let id = request_id(&r);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 168);
    assert!(usage["usage"].get("cost_usd").is_none(), "{usage}");
    assert_eq!(recorded_cost(&env, &id).await, None);
}

#[tokio::test]
async fn a_streams_usage_chunk_carries_the_recorded_cost_when_asked_for() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env).await;
    let (_, key) = env.add_key("cost").await;

    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("x"), "stream": true,
                "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // Only the last chunk has usage, and its cost sits next to the tokens.
    let last = chunks.last().unwrap();
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 123);
    assert_eq!(last["usage"]["total_tokens"], 168);
    let cost_usd = last["usage"]["cost_usd"].as_f64().unwrap();
    let recorded = recorded_cost(&env, &id).await.unwrap();
    assert_eq!(recorded, 275);
    assert_eq!((cost_usd * 1_000_000.0).round() as i64, recorded);
    assert_eq!(last["usage"]["cost_usd"].to_string(), "0.000275");

    // Without include_usage: no usage chunk, as before, and still billed.
    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("x"), "stream": true}),
        )
        .await;
    let id = request_id(&r);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert!(chunk["usage"].is_null(), "{chunk}");
        assert!(!chunk["choices"].as_array().unwrap().is_empty(), "{chunk}");
    }
    assert_eq!(recorded_cost(&env, &id).await, Some(275));
}

#[tokio::test]
async fn an_idempotent_replay_carries_the_first_answers_cost() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env).await;
    let (_, key) = env.add_key("cost").await;
    let send = |model: &str, idem: &str| {
        env.http
            .post(env.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("Idempotency-Key", idem)
            .json(&json!({"model": model, "messages": user("x")}))
            .send()
    };
    let first = send("m", "order-1").await.unwrap();
    assert_priced(&env, &first, 275).await;
    let replay = send("m", "order-1").await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["x-aigw-cost-usd"], "0.000275");
    assert!(replay.headers().get("x-aigw-cost-flagged").is_none());

    // An unpriced answer replays with its flag.
    let first = send("free", "order-2").await.unwrap();
    assert_eq!(first.headers()["x-aigw-cost-flagged"], "unpriced");
    let replay = send("free", "order-2").await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["x-aigw-cost-flagged"], "unpriced");
    assert!(replay.headers().get("x-aigw-cost-usd").is_none());
}

#[tokio::test]
async fn a_price_changed_mid_call_changes_neither_the_shown_nor_the_recorded_cost() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "ok", 123, 45))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": ["m"],
            "prices": {"m": price(1.5, 2.0)},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let provider = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, key) = env.add_key("cost").await;
    let call = env.chat(&key, json!({"model": "m", "messages": user("x")}));
    let change = async {
        wait_until(Duration::from_secs(20), || async {
            !mock.received_requests().await.unwrap().is_empty()
        })
        .await;
        let r = env
            .admin(
                reqwest::Method::PATCH,
                &format!("/admin/api/providers/{provider}"),
            )
            .json(&json!({"prices": {"m": price(150.0, 200.0)}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let (r, ()) = tokio::join!(call, change);
    // Priced at the price it was routed with (whose worst case its budget
    // hold covered), shown and recorded alike.
    assert_priced(&env, &r, 275).await;
}

/// Receives webhooks; returns the server.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_jobs_cost_is_its_events_cost_wherever_it_is_shown() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env).await;
    let (_, key) = env.add_key("cost").await;
    let hooks = receiver().await;
    let mut ids = Vec::new();
    for model in ["m", "free"] {
        let r = post(
            &env,
            &key,
            "/v1/jobs",
            json!({"model": model, "messages": user("x"),
                "webhook_url": format!("{}/hook", hooks.uri())}),
        )
        .await;
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    wait_until(Duration::from_secs(30), || async {
        hooks.received_requests().await.unwrap().len() == 2
    })
    .await;
    let hooked: Vec<Value> = hooks
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_json().unwrap())
        .collect();
    let (_, list) = {
        let r = env
            .http
            .get(env.url("/v1/jobs"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    for (id, expected) in ids.iter().zip([Some(275), None]) {
        let recorded = recorded_cost(&env, id).await;
        assert_eq!(recorded, expected);
        let shown = recorded.map_or(Value::Null, |m| json!(m as f64 / 1_000_000.0));
        let job: Value = env
            .http
            .get(env.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["cost_usd"], shown, "{job}");
        assert_eq!(job["usage"]["total_tokens"], 168);
        let listed = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id.as_str())
            .unwrap();
        assert_eq!(listed["cost_usd"], shown);
        let admin: Value = env
            .admin(reqwest::Method::GET, &format!("/admin/api/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(admin["cost_usd"], shown);
        let hook = hooked.iter().find(|j| j["id"] == id.as_str()).unwrap();
        assert_eq!(hook["cost_usd"], shown, "{hook}");
    }
}
