//! Routing and failover against upstreams that fail in controlled ways.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, free_port, user, wait_until};
use crate::upstream::{self, Script};

async fn answering(text: &str) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", text, 3, 2)))
        .mount(&mock)
        .await;
    mock
}

async fn failing(status: u16) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_body_json(json!({"error": {"message": "down", "type": "server_error"}})),
        )
        .mount(&mock)
        .await;
    mock
}

fn attempts(events: &[(String, Value)]) -> Vec<Value> {
    events
        .iter()
        .filter(|(t, _)| t == "AttemptRecorded")
        .map(|(_, p)| p["AttemptRecorded"].clone())
        .collect()
}

fn text(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn failover_retries_then_moves_on_and_records_every_attempt() {
    let env = TestEnv::start().await;
    let broken = failing(500).await;
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&hanging)
        .await;
    let good = answering("from good").await;
    let refused = format!("http://127.0.0.1:{}/v1", free_port());
    env.add_provider("refused", &refused, &["m"]).await;
    env.add_provider("broken", &format!("{}/v1", broken.uri()), &["m"])
        .await;
    env.add_provider("good", &format!("{}/v1", good.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;

    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "good");
    // refused twice (one retry), broken twice, then good.
    assert_eq!(r.headers()["x-aigw-attempts"], "5");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(text(&r.json().await.unwrap()), "from good");
    let events = env.wait_recorded(&id).await;
    let tried = attempts(&events);
    let classes: Vec<&str> = tried
        .iter()
        .map(|a| a["error"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        classes,
        ["connect", "connect", "upstream", "upstream", "ok"]
    );
    assert_eq!(tried[2]["status"], 500);
    let route = &events[0].1["RequestAccepted"]["route"];
    assert_eq!(route["strategy"], "priority");
    assert_eq!(route["order"], json!(["refused/m", "broken/m", "good/m"]));

    // A target that hangs past the timeout is left for the next one.
    let env = TestEnv::with(Options {
        upstream_timeout: Duration::from_millis(500),
        retries_per_target: 0,
        ..Options::default()
    })
    .await;
    env.add_provider("hanging", &format!("{}/v1", hanging.uri()), &["m"])
        .await;
    env.add_provider("good", &format!("{}/v1", good.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-attempts"], "2");
}

#[tokio::test]
async fn retry_after_is_honoured_on_the_same_target() {
    let env = TestEnv::start().await;
    let limited = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&limited)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "m",
            "after the wait",
            1,
            1,
        )))
        .mount(&limited)
        .await;
    env.add_provider("limited", &format!("{}/v1", limited.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    let started = std::time::Instant::now();
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.headers()["x-aigw-attempts"], "2");
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_a_started_stream_is_not_replayed() {
    let env = TestEnv::start().await;
    let strict = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"message": "bad tool schema", "type": "invalid_request_error"}}),
        ))
        .expect(1)
        .mount(&strict)
        .await;
    let spare = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "spare", 1, 1)))
        .expect(0)
        .mount(&spare)
        .await;
    env.add_provider("strict", &format!("{}/v1", strict.uri()), &["m"])
        .await;
    env.add_provider("spare", &format!("{}/v1", spare.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-aigw-attempts"], "1");

    let flaky = upstream::start(Script {
        pieces: vec!["a".into(), "b".into(), "c".into()],
        delay: Duration::from_millis(20),
        finish: true,
        break_after: Some(1),
    })
    .await;
    env.add_provider("flaky", &flaky.base_url, &["s"]).await;
    env.add_provider("spare-s", &format!("{}/v1", spare.uri()), &["s"])
        .await;
    let r = env
        .chat(
            &key,
            json!({"model": "s", "messages": user("x"), "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("stream_interrupted"), "{body}");
    assert!(!body.contains("[DONE]"));
    assert_eq!(flaky.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn circuits_open_after_failures_are_shared_and_close_after_recovery() {
    let mut env = TestEnv::with(Options {
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_millis(1500),
        retries_per_target: 0,
        ..Options::default()
    })
    .await;
    env.start_dispatcher();
    let sick = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sick)
        .await;
    let good = answering("good").await;
    let sick_id = env
        .add_provider("sick", &format!("{}/v1", sick.uri()), &["m"])
        .await;
    env.add_provider("good", &format!("{}/v1", good.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    let call = || env.chat(&key, json!({"model": "m", "messages": user("x")}));

    // Every call succeeds through failover while the breaker trips.
    for _ in 0..4 {
        assert_eq!(call().await.status(), 200);
    }
    let health = || async {
        env.admin(
            reqwest::Method::GET,
            &format!("/admin/api/providers/{sick_id}/health"),
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
    };
    wait_until(Duration::from_secs(5), || async {
        health().await["status"] == "down"
    })
    .await;
    let hits = sick.received_requests().await.unwrap().len();
    assert!(hits <= 4, "{hits}");
    // Both dispatcher replicas now skip the sick provider.
    for _ in 0..10 {
        let r = call().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-aigw-attempts"], "1");
    }
    assert_eq!(sick.received_requests().await.unwrap().len(), hits);
    let summary: Value = env
        .admin(reqwest::Method::GET, "/admin/api/health")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sick_row = summary["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sick")
        .unwrap()
        .clone();
    assert_eq!(sick_row["status"], "down");
    assert_eq!(sick_row["breakers"][0]["state"], "open");

    // It recovers: after the cooldown a probe goes through and closes it.
    sick.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "recovered", 1, 1)))
        .mount(&sick)
        .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    wait_until(Duration::from_secs(10), || async {
        let r = call().await;
        r.headers()["x-aigw-provider"] == "sick"
    })
    .await;
    wait_until(Duration::from_secs(5), || async {
        health().await["status"] == "up"
    })
    .await;
}

#[tokio::test]
async fn aliases_route_by_cost_and_latency_and_are_events() {
    let env = TestEnv::start().await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "slow", 1, 1))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&slow)
        .await;
    let fast = answering("fast").await;
    for (name, server, price) in [("dear-slow", &slow, 10.0), ("cheap-fast", &fast, 0.1)] {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&json!({
                "name": name, "base_url": format!("{}/v1", server.uri()), "api_key": "k",
                "models": ["m"], "prices": {"m": {"input_usd_per_mtok": price, "output_usd_per_mtok": price}},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (_, key) = env.add_key("ci").await;
    let define = |name: &str, strategy: &str| {
        env.admin(reqwest::Method::POST, "/admin/api/aliases").json(&json!({
            "name": name, "strategy": strategy,
            "targets": [{"provider": "dear-slow", "model": "m"}, {"provider": "cheap-fast", "model": "m"}],
        }))
    };
    assert_eq!(
        define("thrifty", "cost").send().await.unwrap().status(),
        201
    );
    assert_eq!(
        define("quick", "latency").send().await.unwrap().status(),
        201
    );
    assert_eq!(
        define("thrifty", "cost").send().await.unwrap().status(),
        409
    );

    for _ in 0..3 {
        let r = env
            .chat(&key, json!({"model": "thrifty", "messages": user("x")}))
            .await;
        assert_eq!(r.headers()["x-aigw-provider"], "cheap-fast");
    }
    // Latency: each target gets measured once, then the faster one wins.
    for _ in 0..2 {
        env.chat(&key, json!({"model": "quick", "messages": user("x")}))
            .await;
    }
    let mut last = String::new();
    for _ in 0..3 {
        let r = env
            .chat(&key, json!({"model": "quick", "messages": user("x")}))
            .await;
        last = r.headers()["x-aigw-provider"].to_str().unwrap().to_string();
    }
    assert_eq!(last, "cheap-fast");

    let r = env
        .admin(reqwest::Method::PATCH, "/admin/api/aliases/thrifty")
        .json(&json!({"strategy": "priority"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Dispatchers hear of the change within moments.
    wait_until(Duration::from_secs(5), || async {
        let r = env
            .chat(&key, json!({"model": "thrifty", "messages": user("x")}))
            .await;
        r.headers()["x-aigw-provider"] == "dear-slow"
    })
    .await;
    let r = env
        .admin(reqwest::Method::DELETE, "/admin/api/aliases/thrifty")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .chat(&key, json!({"model": "thrifty", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 404);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'alias' AND aggregate_id = 'thrifty' ORDER BY sequence",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(types, ["AliasDefined", "AliasUpdated", "AliasRemoved"]);
}

#[tokio::test]
async fn several_credentials_take_turns_and_a_provider_can_be_disabled() {
    let env = TestEnv::start().await;
    let mock = answering("ok").await;
    let id = env
        .add_provider("multi", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let r = env
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/api/providers/{id}"),
        )
        .json(&json!({"api_keys": ["sk-second", "sk-third"], "max_concurrency": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["credentials"], 3);
    assert!(!view.to_string().contains("sk-second"));
    let (_, key) = env.add_key("ci").await;
    for _ in 0..6 {
        assert_eq!(
            env.chat(&key, json!({"model": "m", "messages": user("x")}))
                .await
                .status(),
            200
        );
    }
    let mut used: Vec<String> = mock
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(
        used,
        [
            "Bearer sk-second",
            "Bearer sk-third",
            "Bearer sk-upstream-secret"
        ]
    );

    let r = env
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/api/providers/{id}"),
        )
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn active_probes_notice_a_provider_going_down_and_coming_back() {
    let env = TestEnv::with(Options {
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_millis(300),
        health_probe_interval: Some(Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&upstream)
        .await;
    let id = env
        .add_provider("probed", &format!("{}/v1", upstream.uri()), &["m"])
        .await;
    let status = || async {
        env.admin(
            reqwest::Method::GET,
            &format!("/admin/api/providers/{id}/health"),
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["status"]
            .clone()
    };
    // Without any traffic, the probes find it down...
    wait_until(Duration::from_secs(10), || async {
        status().await == "down"
    })
    .await;
    let seen = upstream.received_requests().await.unwrap();
    assert!(seen.iter().all(|r| r.url.path() == "/v1/models"));
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer sk-upstream-secret"
    );
    // ...and back up once it answers again.
    upstream.reset().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": []})),
        )
        .mount(&upstream)
        .await;
    wait_until(Duration::from_secs(10), || async { status().await == "up" }).await;
}

#[tokio::test]
async fn an_exhausted_credential_is_set_aside_not_the_provider() {
    let env = TestEnv::with(Options {
        breaker_threshold: 2,
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer sk-exhausted",
        ))
        .respond_with(
            ResponseTemplate::new(429).set_body_json(
                json!({"error": {"message": "quota", "type": "insufficient_quota"}}),
            ),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 1, 1)))
        .mount(&mock)
        .await;
    let id = env
        .add_provider("pool", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let r = env
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/api/providers/{id}"),
        )
        .json(&json!({"api_keys": ["sk-exhausted"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, key) = env.add_key("ci").await;
    for _ in 0..6 {
        let r = env
            .chat(&key, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    // The exhausted key's breaker is open: calls now take one attempt.
    for _ in 0..4 {
        let r = env
            .chat(&key, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.headers()["x-aigw-attempts"], "1");
    }
    let health: Value = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/providers/{id}/health"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let breaker = health["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["model"] == "#credential1")
        .unwrap()
        .clone();
    assert_eq!(breaker["state"], "open");
}

#[tokio::test]
async fn test_connection_calls_the_provider_once_and_reports_its_error() {
    let env = TestEnv::start().await;
    let good = answering("pong").await;
    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})))
        .mount(&refusing)
        .await;
    let ok_id = env
        .add_provider("good", &format!("{}/v1", good.uri()), &["m"])
        .await;
    let bad_id = env
        .add_provider("bad", &format!("{}/v1", refusing.uri()), &["m"])
        .await;
    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/providers/{ok_id}/test"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ok"], true);
    let sent: Value = good.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["max_tokens"], 1);
    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/providers/{bad_id}/test"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    // The provider's refusal, never its words (they may echo the key).
    assert_eq!(body["error"]["type"], "upstream_auth_error", "{body}");
    assert!(!body.to_string().contains("Incorrect API key"), "{body}");
    assert!(!body.to_string().contains("sk-upstream-secret"));
}
