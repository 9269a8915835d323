//! Chat completions through the whole pipeline, streamed and not.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, sse_data, user};
use crate::upstream::{self, Script};

#[tokio::test]
async fn non_streamed_chat_passes_fields_through_and_records_usage() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-upstream-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-4o-mini",
            "Bonjour, 世界! 👋",
            12,
            7,
        )))
        .expect(1)
        .mount(&mock)
        .await;
    env.add_provider("mock", &format!("{}/v1", mock.uri()), &["gpt-4o-mini"])
        .await;
    let (_, key) = env.add_key("ci").await;

    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let response = env
        .chat(
            &key,
            json!({
                "model": "gpt-4o-mini",
                "messages": user("Dis bonjour 🌍"),
                "tools": tools,
                "response_format": {"type": "json_object"},
                "seed": 42,
                "some_future_field": {"nested": [1, 2]},
                "provider": "mock",
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-aigw-provider"], "mock");
    assert_eq!(response.headers()["x-aigw-attempts"], "1");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Bonjour, 世界! 👋"
    );
    assert_eq!(body["usage"]["total_tokens"], 19);

    let sent: Value = mock.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["response_format"]["type"], "json_object");
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["some_future_field"]["nested"], json!([1, 2]));
    assert_eq!(sent["messages"][0]["content"], "Dis bonjour 🌍");
    assert!(
        sent.get("provider").is_none(),
        "aigw's own field leaked upstream"
    );

    let events = env.wait_recorded(&request_id).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["RequestAccepted", "AttemptRecorded", "RequestCompleted"]
    );
    let done = &events[2].1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 12);
    assert_eq!(done["usage"]["completion_tokens"], 7);
    assert_eq!(done["usage_estimated"], false);
    assert_eq!(done["provider"], "mock");

    // The single-statement recording is postgres-es's own format: cqrs-es
    // loads the aggregate and refuses to record the request a second time.
    let stores = aigw_runtime::Stores::new(env.pool.clone());
    let again = aigw_events::RequestCommand::RecordRequest {
        project_id: None,
        team_id: None,
        key_id: uuid::Uuid::nil(),
        model: "m".into(),
        stream: false,
        accepted_at: chrono::Utc::now(),
        route: None,
        attribution: Default::default(),
        attempts: vec![],
        outcome: aigw_events::Outcome::Failed {
            status: 502,
            error_type: "x".into(),
            message: "x".into(),
            usage: aigw_events::Usage::default(),
            usage_estimated: false,
            cost_micros: None,
            price_fallback: false,
            latency_ms: 0,
            at: chrono::Utc::now(),
        },
    };
    let refused = stores.requests.execute(&request_id, again).await;
    assert!(
        matches!(
            refused,
            Err(cqrs_es::AggregateError::UserError(
                aigw_events::RequestError::AlreadyRecorded
            ))
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn streamed_chat_arrives_incrementally_with_provider_usage() {
    let env = TestEnv::start().await;
    let upstream = upstream::start(Script {
        pieces: vec!["Hel".into(), "lo, ".into(), "世界".into(), "!".into()],
        delay: Duration::from_millis(300),
        finish: true,
        break_after: None,
    })
    .await;
    env.add_provider("slow", &upstream.base_url, &["m"]).await;
    let (_, key) = env.add_key("ci").await;

    // Without include_usage: no usage chunk reaches the caller, but aigw
    // asked the upstream for it and bills from it.
    let started = Instant::now();
    let response = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("hi"), "stream": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = response.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(part) = body.next().await {
        let part = part.unwrap();
        arrivals.push(started.elapsed());
        text.push_str(std::str::from_utf8(&part).unwrap());
    }
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello, 世界!");
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null))
    );
    // Chunks were relayed as produced (300 ms apart), not buffered.
    assert!(arrivals.len() >= 4, "{arrivals:?}");
    assert!(
        arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(600),
        "{arrivals:?}"
    );
    let sent = upstream.seen.lock().unwrap()[0].clone();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let events = env.wait_recorded(&request_id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 11);
    assert_eq!(done["usage"]["completion_tokens"], 4);
    assert_eq!(done["usage_estimated"], false);

    // With include_usage, the usage chunk is passed on.
    let response = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("hi"), "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
    let data = sse_data(&response.text().await.unwrap());
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 11);
    assert_eq!(usage_chunk["choices"], json!([]));
}

#[tokio::test]
async fn a_stream_broken_mid_way_ends_with_an_error_event() {
    let env = TestEnv::start().await;
    let upstream = upstream::start(Script {
        pieces: vec!["one ".into(), "two ".into(), "three".into()],
        delay: Duration::from_millis(50),
        finish: true,
        break_after: Some(2),
    })
    .await;
    env.add_provider("flaky", &upstream.base_url, &["m"]).await;
    let (_, key) = env.add_key("ci").await;
    let response = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("count"), "stream": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let data = sse_data(&response.text().await.unwrap());
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "one two ");

    let events = env.wait_recorded(&request_id).await;
    let failed = &events.last().unwrap().1["RequestFailed"];
    assert_eq!(failed["status"], 502);
    // Usage never came: what was streamed is billed as a flagged estimate.
    assert_eq!(failed["usage_estimated"], true);
    assert!(failed["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn a_caller_leaving_mid_stream_stops_the_upstream_call() {
    let env = TestEnv::start().await;
    let upstream = upstream::start(Script {
        pieces: (0..40).map(|i| format!("w{i} ")).collect(),
        delay: Duration::from_millis(250),
        finish: true,
        break_after: None,
    })
    .await;
    env.add_provider("long", &upstream.base_url, &["m"]).await;
    let (_, key) = env.add_key("ci").await;
    let response = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("talk"), "stream": true}),
        )
        .await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let started = Instant::now();
    // The full stream would take 10 s; the dispatcher must give up at once.
    let events = env.wait_recorded(&request_id).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let failed = &events.last().unwrap().1["RequestFailed"];
    assert_eq!(failed["status"], 499);
    assert_eq!(failed["usage_estimated"], true);
}

#[tokio::test]
async fn models_lists_every_configured_model() {
    let env = TestEnv::start().await;
    env.add_provider("a", "http://127.0.0.1:9/v1", &["m1", "m2"])
        .await;
    env.add_provider("b", "http://127.0.0.1:9/v1", &["m2", "m3"])
        .await;
    let (_, key) = env.add_key("ci").await;
    let body: Value = env
        .http
        .get(env.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    assert_eq!(body["data"][0]["owned_by"], "a");
    assert_eq!(body["data"][0]["object"], "model");
}

#[tokio::test]
async fn provider_slash_model_and_pinning_pick_the_provider() {
    let env = TestEnv::start().await;
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    for (server, text) in [(&first, "from first"), (&second, "from second")] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", text, 1, 1)))
            .mount(server)
            .await;
    }
    env.add_provider("first", &format!("{}/v1", first.uri()), &["m"])
        .await;
    let second_id = env
        .add_provider("second", &format!("{}/v1", second.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    let text = |v: Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r = env
        .chat(&key, json!({"model": "second/m", "messages": user("x")}))
        .await;
    assert_eq!(text(r.json().await.unwrap()), "from second");
    let sent: Value = second.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["model"], "m");
    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("x"), "provider": second_id}),
        )
        .await;
    assert_eq!(text(r.json().await.unwrap()), "from second");
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(text(r.json().await.unwrap()), "from first");
}

#[tokio::test]
async fn embeddings_go_through_the_same_pipeline_and_are_billed() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", "Bearer sk-upstream-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8}
        })))
        .expect(2)
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "emb", "base_url": format!("{}/v1", mock.uri()), "api_key": "sk-upstream-secret",
            "models": ["text-embedding-3-small"],
            "prices": {"text-embedding-3-small": {"input_usd_per_mtok": 1000.0, "output_usd_per_mtok": 0.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, key) = env.add_key("ci").await;
    let r = env
        .http
        .post(env.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": "The food was delicious", "encoding_format": "float"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"][1], -0.2);
    let sent: Value = mock.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["encoding_format"], "float");
    let events = env.wait_recorded(&id).await;
    let done = &events.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 8);
    // 8 tokens at $1000 per million tokens = 8,000 micro-dollars.
    assert_eq!(done["cost_micros"], 8000);
    // An Idempotency-Key makes a repeat the stored answer, not a second call.
    for _ in 0..2 {
        let r = env
            .http
            .post(env.url("/v1/embeddings"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "emb-once")
            .json(&json!({"model": "text-embedding-3-small", "input": "again"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"][0]["embedding"][1], -0.2);
    }
    let r = env
        .http
        .post(env.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
