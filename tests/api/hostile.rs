//! Hostile and unusual input, tried as an attacker holding an ordinary key
//! would: it never breaks billing, scopes or budgets (issue #12).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aigw_events::{Attempt, Outcome, RequestCommand, Usage};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

/// An OpenAI-compatible mock answering `content` to chat and embeddings.
async fn upstream(content: &str) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", content, 10, 10)))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "model": "m",
            "usage": {"prompt_tokens": 3, "total_tokens": 3}
        })))
        .mount(&mock)
        .await;
    mock
}

async fn provider(env: &TestEnv, body: Value) -> String {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn key(env: &TestEnv, body: Value) -> String {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn post(env: &TestEnv, key: &str, path: &str, body: &Value) -> (u16, Value, String) {
    let r = env
        .http
        .post(env.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let served_by = r
        .headers()
        .get("x-aigw-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, served_by)
}

fn param(body: &Value) -> &Value {
    &body["error"]["param"]
}

#[tokio::test]
async fn names_and_numbers_out_of_bounds_are_refused_before_anything_is_queued() {
    let env = TestEnv::start().await;
    let mock = upstream("ok").await;
    provider(
        &env,
        json!({"name": "upstream-a", "base_url": format!("{}/v1", mock.uri()), "models": ["m"]}),
    )
    .await;
    let key = key(&env, json!({"name": "caller"})).await;

    // A 5,000-character model, pinned to a provider: refused (it used to
    // be recorded, and then stop the projector on every batch).
    let huge: String = (0..5_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let bodies = [
        (
            json!({"model": huge, "provider": "upstream-a", "messages": user("hi")}),
            "model",
        ),
        (
            json!({"model": "m", "provider": "upstream-a\r\nX-Evil: 1", "messages": user("hi")}),
            "provider",
        ),
        (
            json!({"model": "m", "messages": user("hi"), "max_tokens": 9_223_372_036_854_775_800u64}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "messages": user("hi"), "n": 1_000}),
            "n",
        ),
        (
            json!({"model": "m", "messages": user("hi"), "user": "u".repeat(300)}),
            "user",
        ),
    ];
    for (body, expected) in &bodies {
        let (status, err, _) = post(&env, &key, "/v1/chat/completions", body).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(param(&err), expected, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let (status, err, _) = post(
        &env,
        &key,
        "/v1/jobs",
        &json!({"model": huge, "messages": user("hi")}),
    )
    .await;
    assert_eq!((status, param(&err)), (400, &json!("model")), "{err}");
    let (status, err, _) = post(
        &env,
        &key,
        "/v1/embeddings",
        &json!({"model": "m", "input": "x", "provider": "a b"}),
    )
    .await;
    assert_eq!((status, param(&err)), (400, &json!("provider")), "{err}");
    assert!(mock.received_requests().await.unwrap().is_empty());
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'request'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(recorded, 0);

    // Admins are held to names that are safe everywhere too.
    for name in [
        "a\r\nb",
        "with space",
        "0193aa6e-5d2c-7c3e-8000-000000000001",
    ] {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&json!({"name": name, "base_url": format!("{}/v1", mock.uri()), "models": ["m"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name:?}");
    }
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "ok-name", "base_url": format!("{}/v1", mock.uri()), "models": [huge]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A model's catalogued maximum output bounds `max_tokens`.
    let openai = upstream("from the preset").await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({"preset": "openai", "api_key": "sk-test", "base_url": format!("{}/v1", openai.uri())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (status, err, _) = post(
        &env,
        &key,
        "/v1/chat/completions",
        &json!({"model": "gpt-5.4", "messages": user("hi"), "max_completion_tokens": 200_000}),
    )
    .await;
    assert_eq!(
        (status, param(&err)),
        (400, &json!("max_completion_tokens")),
        "{err}"
    );
    let (status, _, _) = post(
        &env,
        &key,
        "/v1/chat/completions",
        &json!({"model": "gpt-5.4", "messages": user("hi"), "max_completion_tokens": 100_000}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn allowed_providers_hold_on_every_path() {
    let env = TestEnv::start().await;
    let a = upstream("from a").await;
    let b = MockServer::start().await;
    // B answers four chat calls, then fails: failover must not reach A.
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "from b", 10, 10)))
        .up_to_n_times(5)
        .with_priority(1)
        .mount(&b)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "down"}})),
        )
        .with_priority(2)
        .mount(&b)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
            "model": "m",
            "usage": {"prompt_tokens": 1, "total_tokens": 1}
        })))
        .mount(&b)
        .await;
    // A is older, so it comes first by priority.
    provider(
        &env,
        json!({"name": "upstream-a", "base_url": format!("{}/v1", a.uri()), "models": ["m", "a-only"]}),
    )
    .await;
    provider(
        &env,
        json!({"name": "upstream-b", "base_url": format!("{}/v1", b.uri()), "models": ["m", "b-only"]}),
    )
    .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/aliases")
        .json(&json!({"name": "both", "targets": [
            {"provider": "upstream-a", "model": "m"},
            {"provider": "upstream-b", "model": "m"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = key(
        &env,
        json!({"name": "b-only", "allowed_providers": ["upstream-b"]}),
    )
    .await;

    for model in ["m", "m", "both", "upstream-b/m"] {
        let (status, body, served_by) = post(
            &env,
            &key,
            "/v1/chat/completions",
            &json!({"model": model, "messages": user("hi")}),
        )
        .await;
        assert_eq!(
            (status, served_by.as_str()),
            (200, "upstream-b"),
            "{model}: {body}"
        );
    }
    let (status, _, served_by) = post(
        &env,
        &key,
        "/v1/embeddings",
        &json!({"model": "m", "input": "hi"}),
    )
    .await;
    assert_eq!((status, served_by.as_str()), (200, "upstream-b"));
    // A job runs through B too.
    let (status, job, _) = post(
        &env,
        &key,
        "/v1/jobs",
        &json!({"model": "both", "messages": user("hi")}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), || async {
        let (_, j, _) = get(&env, &key, &format!("/v1/jobs/{id}")).await;
        j["status"] == "succeeded"
    })
    .await;
    let (_, j, _) = get(&env, &key, &format!("/v1/jobs/{id}")).await;
    assert_eq!(j["provider"], "upstream-b", "{j}");

    // Naming A, by pin or by prefix, is refused.
    for body in [
        json!({"model": "m", "provider": "upstream-a", "messages": user("hi")}),
        json!({"model": "upstream-a/m", "messages": user("hi")}),
        json!({"model": "a-only", "messages": user("hi")}),
    ] {
        let (status, err, _) = post(&env, &key, "/v1/chat/completions", &body).await;
        assert_eq!(status, 403, "{body}: {err}");
    }
    // B fails now: the caller gets B's failure, never an answer from A.
    let (status, err, _) = post(
        &env,
        &key,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": user("hi")}),
    )
    .await;
    assert_eq!(status, 502, "{err}");
    assert!(a.received_requests().await.unwrap().is_empty());

    // `/v1/models` shows what the key may use, and nothing else.
    let (_, models, _) = get(&env, &key, "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b-only", "both", "m"]);
    let open = crate::hostile::key(&env, json!({"name": "open"})).await;
    let (_, models, _) = get(&env, &open, "/v1/models").await;
    assert_eq!(models["data"].as_array().unwrap().len(), 4, "{models}");
}

async fn get(env: &TestEnv, key: &str, path: &str) -> (u16, Value, String) {
    let r = env
        .http
        .get(env.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(Value::Null),
        String::new(),
    )
}

/// A mock that bills as much as a provider plausibly can for what it is
/// asked: prompt tokens for every byte of text it was sent (message
/// contents, tool calls, tool definitions) and 1,500 per image, and `n`
/// times `max_tokens` of output. Counts the calls it answered.
struct Greedy(Arc<AtomicUsize>);

fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                if k == "image_url" {
                    1_500
                } else {
                    text_bytes(v)
                }
            })
            .sum(),
        _ => 0,
    }
}

impl Respond for Greedy {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let messages = body["messages"].as_array().unwrap();
        let prompt = text_bytes(&body["messages"])
            + 4 * messages.len() as u64
            + body.get("tools").map_or(0, text_bytes);
        let n = body["n"].as_u64().unwrap_or(1);
        let completion_tokens = n * body["max_tokens"].as_u64().unwrap_or(100_000);
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-greedy",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": "m",
            "choices": (0..n).map(|i| json!({"index": i, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"})).collect::<Vec<_>>(),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}
        }))
    }
}

/// A budget holds whatever the requests look like: many concurrent requests
/// of random shapes (n, tools, tool calls, images, max_tokens) through two
/// ingress replicas, each billed as much as a provider plausibly could.
#[tokio::test]
async fn a_small_budget_holds_against_random_request_shapes_on_two_replicas() {
    let mut env = TestEnv::start().await;
    let second = env.start_ingress().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Greedy(answered.clone()))
        .mount(&mock)
        .await;
    provider(
        &env,
        json!({"name": "greedy", "base_url": format!("{}/v1", mock.uri()), "models": ["m"],
               "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 10.0}}}),
    )
    .await;
    let budget_micros: i64 = 200_000;
    let key = key(
        &env,
        json!({"name": "small", "budget_usd": budget_micros as f64 / 1e6, "budget_period": "total"}),
    )
    .await;

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut calls = Vec::new();
    for i in 0..80 {
        let mut content =
            vec![json!({"type": "text", "text": "describe ".repeat(1 + next(20) as usize)})];
        for _ in 0..next(3) {
            content.push(json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}));
        }
        let mut messages = vec![json!({"role": "user", "content": content})];
        if next(2) == 1 {
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"".to_string() + &"z".repeat(next(200) as usize) + "\"}"}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": "c1", "content": "found ".repeat(next(50) as usize)}));
        }
        let mut body = json!({"model": "m", "messages": messages,
            "n": 1 + next(4), "max_tokens": 1 + next(500)});
        if next(2) == 1 {
            body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
                "description": "Looks things up. ".repeat(1 + next(10) as usize),
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
        }
        let base = if i % 2 == 0 {
            env.base.clone()
        } else {
            second.clone()
        };
        let (http, key) = (env.http.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let id = r
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_string());
            (status, id, r.json::<Value>().await.unwrap())
        }));
    }
    let mut succeeded = Vec::new();
    for call in calls {
        let (status, id, body) = call.await.unwrap();
        match status {
            200 => succeeded.push(id.unwrap()),
            429 => assert_eq!(body["error"]["code"], "insufficient_quota", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!succeeded.is_empty());
    assert_eq!(answered.load(Ordering::SeqCst), succeeded.len());

    // Once every hold is settled, the spend is within the budget and equals,
    // to the micro-dollar, the cost the events recorded for the successes.
    let own = || async {
        env.http
            .get(env.url("/v1/key"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    wait_until(Duration::from_secs(30), || async {
        own().await["held_usd"] == 0.0
    })
    .await;
    let spent = own().await["spent_micros"].as_i64().unwrap();
    let mut recorded = 0i64;
    for id in &succeeded {
        let events = env.wait_recorded(id).await;
        let (kind, last) = events.last().unwrap();
        assert_eq!(kind, "RequestCompleted");
        recorded += last["RequestCompleted"]["cost_micros"].as_i64().unwrap();
    }
    assert_eq!(spent, recorded);
    assert!(spent <= budget_micros, "spent {spent} of {budget_micros}");
}

/// `n`, and a request without `max_tokens`, are held at their worst case.
#[tokio::test]
async fn n_and_missing_output_caps_are_held_at_their_worst() {
    let env = TestEnv::start().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mock = MockServer::start().await;
    // Without max_tokens the dispatcher sends the cap the hold assumed.
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"max_tokens": 32_768})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "capped", 5, 5)))
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .respond_with(Greedy(answered.clone()))
        .with_priority(2)
        .mount(&mock)
        .await;
    provider(
        &env,
        json!({"name": "dear", "base_url": format!("{}/v1", mock.uri()), "models": ["m"],
               "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 100.0}}}),
    )
    .await;
    let small = key(
        &env,
        json!({"name": "cent", "budget_usd": 0.01, "budget_period": "total"}),
    )
    .await;
    // n = 20 of 50 tokens at $100/M could cost $0.10: refused up front.
    let (status, err, _) = post(
        &env,
        &small,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": user("hi"), "n": 20, "max_tokens": 50}),
    )
    .await;
    assert_eq!(status, 429, "{err}");
    assert_eq!(err["error"]["code"], "insufficient_quota");
    // No cap at all: held at 32,768 tokens, $3.28: refused too.
    let (status, _, _) = post(
        &env,
        &small,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": user("hi")}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    // One completion of 50 tokens fits ($0.005 and the prompt).
    let (status, body, _) = post(
        &env,
        &small,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": user("hi"), "max_tokens": 50}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A roomy budget admits a request without a cap, which then carries it.
    let roomy = key(
        &env,
        json!({"name": "roomy", "budget_usd": 10.0, "budget_period": "total"}),
    )
    .await;
    let (status, body, _) = post(
        &env,
        &roomy,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": user("hi")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "capped");
}

/// Two deliveries of one request that record at the same moment (a
/// dispatcher paused past the ack wait, then resumed, while another took
/// the redelivery) leave exactly one outcome.
#[tokio::test]
async fn concurrent_recordings_of_one_request_leave_one_outcome() {
    let env = TestEnv::with(crate::harness::Options {
        dispatcher: false,
        ..Default::default()
    })
    .await;
    let id = Uuid::now_v7().to_string();
    let at = chrono::Utc::now();
    let command = |attempts: usize, cost: i64| RequestCommand::RecordRequest {
        project_id: None,
        team_id: None,
        key_id: Uuid::nil(),
        model: "m".into(),
        stream: false,
        accepted_at: at,
        route: None,
        attribution: Default::default(),
        attempts: (0..attempts)
            .map(|_| Attempt {
                provider_id: Uuid::nil(),
                provider: "p".into(),
                model: "m".into(),
                status: Some(200),
                latency_ms: 1,
                error: None,
                started_at: at,
            })
            .collect(),
        outcome: Outcome::Completed {
            provider_id: Uuid::nil(),
            provider: "p".into(),
            model: "m".into(),
            usage: Usage {
                prompt_tokens: 1,
                completion_tokens: 1,
                ..Default::default()
            },
            usage_estimated: false,
            cost_micros: Some(cost),
            price_fallback: false,
            latency_ms: 1,
            at,
        },
    };
    for round in 0..20 {
        let id = format!("{id}-{round}");
        let meta = Default::default();
        let (first, second) = tokio::join!(
            aigw_runtime::store::record_request_in(&env.pool, &id, command(1, 7), &meta),
            aigw_runtime::store::record_request_in(&env.pool, &id, command(3, 9), &meta),
        );
        let stored = [first.unwrap(), second.unwrap()];
        assert_eq!(stored.iter().filter(|s| **s).count(), 1, "{stored:?}");
        let events = env.request_events(&id).await;
        let outcomes = events
            .iter()
            .filter(|(t, _)| t == "RequestCompleted" || t == "RequestFailed")
            .count();
        assert_eq!(outcomes, 1, "{events:?}");
        let expected = if stored[0] { 3 } else { 5 };
        assert_eq!(events.len(), expected, "{events:?}");
    }
}
