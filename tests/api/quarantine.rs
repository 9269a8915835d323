//! Poison events: one event that cannot be read, or whose view writes fail,
//! is quarantined (table, metric, admin endpoint, audit) and the views move
//! on; `projector rebuild` and the audit never stop on it, and a rebuild
//! recovers an event whose cause was fixed.

use std::time::Duration;

use aigw_events::{Attempt, ErrorClass, Outcome, RequestCommand, RequestEvent, Usage};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::billing::{projected_requests, run_aigw, snapshot, today};
use crate::harness::{Options, TestEnv, completion, user, wait_until};

/// A provider serving `m` at $1 in, $2 out per million tokens (10 in + 4
/// out: 18 micro-dollars a call).
async fn provider(env: &TestEnv) -> (MockServer, Uuid) {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 10, 4)))
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream",
            "models": ["m"],
            "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (mock, id)
}

/// One chat through the HTTP API, waited for until its events are stored.
async fn chat(env: &TestEnv, key: &str) {
    let r = env
        .chat(key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    env.wait_recorded(&id).await;
}

async fn quarantine(env: &TestEnv, query: &str) -> Value {
    let r = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/quarantine{query}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The value of one Prometheus sample of this process, 0 when absent.
async fn metric(env: &TestEnv, sample: &str) -> f64 {
    let text = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn audit_http(env: &TestEnv) -> Value {
    let day = today();
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/audit")
        .json(&json!({"from": day, "to": day}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Random characters, which (unlike a repeated one) PostgreSQL cannot
/// compress below the btree limit of an index row.
fn random_text(len: usize) -> String {
    std::iter::repeat_with(|| Uuid::new_v4().simple().to_string())
        .flat_map(|s| s.chars().collect::<Vec<_>>())
        .take(len)
        .collect()
}

#[tokio::test]
async fn a_model_too_long_for_the_views_is_quarantined_and_the_views_move_on() {
    // The projector starts once every event is stored, so the poison event
    // sits in one batch with good ones.
    let mut env = TestEnv::with(Options {
        projector: false,
        ..Options::default()
    })
    .await;
    let (_mock, provider_id) = provider(&env).await;
    let (key_id, key) = env.add_key("a").await;
    chat(&env, &key).await;
    chat(&env, &key).await;

    // What a 5,000-character model pinned to a provider that answers 404
    // records, through the dispatcher's own recording path.
    let bad_id = Uuid::now_v7().to_string();
    let model = random_text(5000);
    let now = chrono::Utc::now();
    let recorded = aigw_runtime::store::record_request_in(
        &env.pool,
        &bad_id,
        RequestCommand::RecordRequest {
            project_id: None,
            team_id: None,
            key_id: key_id.parse().unwrap(),
            model: model.clone(),
            stream: false,
            accepted_at: now,
            route: None,
            attribution: Default::default(),
            attempts: vec![Attempt {
                provider_id,
                provider: "p".into(),
                model: model.clone(),
                status: Some(404),
                latency_ms: 3,
                error: Some(ErrorClass::Client),
                started_at: now,
            }],
            outcome: Outcome::Failed {
                status: 404,
                error_type: "invalid_request_error".into(),
                message: "The model does not exist.".into(),
                usage: Usage::default(),
                usage_estimated: false,
                cost_micros: None,
                price_fallback: false,
                latency_ms: 3,
                at: now,
            },
        },
        &aigw_runtime::store::metadata(&[("request_id", &bad_id)]),
    )
    .await
    .unwrap();
    assert!(recorded);
    chat(&env, &key).await;

    env.start_projector();
    wait_until(Duration::from_secs(60), || async {
        projected_requests(&env).await == 3
    })
    .await;
    let stats = env.stats(&key).await;
    assert_eq!(stats["totals"]["requests"], 3, "{stats}");
    assert_eq!(stats["totals"]["cost_micros"], 3 * 18, "{stats}");

    // Only the outcome event failed: the request's other events are in the
    // request log.
    let listed = quarantine(&env, "").await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["has_more"], false);
    let entry = &listed["data"][0];
    assert_eq!(entry["aggregate_type"], "request");
    assert_eq!(entry["aggregate_id"], bad_id.as_str());
    assert_eq!(entry["sequence"], 3);
    assert_eq!(entry["event_type"], "RequestFailed");
    assert_eq!(entry["reason"], "write_failed");
    let error = entry["error"].as_str().unwrap();
    assert!(!error.is_empty() && error.chars().count() <= 1000);
    let first_quarantined_at = entry["quarantined_at"].clone();
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM request_log WHERE id = $1::uuid")
            .bind(&bad_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    // Its outcome never reached the log, and the log says so.
    assert_eq!(status.as_deref(), Some("quarantined"));
    assert!(
        metric(
            &env,
            "aigw_projector_quarantined_total{reason=\"write_failed\"}"
        )
        .await
            >= 1.0
    );
    // `limit` is bounded; the endpoint is an admin one.
    assert_eq!(
        quarantine(&env, "?limit=0").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(quarantine(&env, "?limit=1000000").await["total"], 1);
    let r = env
        .admin(reqwest::Method::GET, "/admin/api/quarantine?limit=many")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = env
        .http
        .get(env.url("/admin/api/quarantine"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The live projector keeps going.
    chat(&env, &key).await;
    wait_until(Duration::from_secs(60), || async {
        projected_requests(&env).await == 4
    })
    .await;

    // The audit leaves the event out of both sides and lists it.
    let report = audit_http(&env).await;
    assert_eq!(report["clean"], false, "{report}");
    assert_eq!(report["differences"], json!([]), "{report}");
    assert_eq!(report["requests"], 4);
    assert_eq!(report["expected_cost_micros"], 4 * 18);
    let listed = report["quarantined"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{report}");
    assert_eq!(listed[0]["request_id"], bad_id.as_str());
    assert_eq!(listed[0]["key_id"], key_id.as_str());
    assert_eq!(listed[0]["model"], model.as_str());
    assert!(!listed[0]["quarantined_at"].is_null());
    let day = today();
    let out = run_aigw(&env, &["audit", "--from", &day, "--to", &day]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("quarantined request") && l.contains(&bad_id)),
        "{table}"
    );
    let out = run_aigw(
        &env,
        &["audit", "--from", &day, "--to", &day, "--format", "csv"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8(out.stderr).unwrap().contains(&bad_id));

    // A rebuild gets past it too, to the same views and the same quarantine.
    let live = snapshot(&env).await;
    let out = run_aigw(&env, &["projector", "rebuild"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8(out.stderr).unwrap().contains(&bad_id));
    assert_eq!(snapshot(&env).await, live);
    let listed = quarantine(&env, "").await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["data"][0]["aggregate_id"], bad_id.as_str());
    assert_eq!(listed["data"][0]["quarantined_at"], first_quarantined_at);
}

#[tokio::test]
async fn an_unreadable_event_is_quarantined_and_a_rebuild_recovers_it_once_fixed() {
    let env = TestEnv::start().await;
    let (_mock, provider_id) = provider(&env).await;
    let (key_id, key) = env.add_key("a").await;
    chat(&env, &key).await;

    // A stored outcome that does not deserialize as a request event.
    let bad_id = Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('request', $1, 1, 'RequestCompleted', $2, $3::text::json, '{}')",
    )
    .bind(&bad_id)
    .bind(aigw_events::EVENT_VERSION)
    .bind(json!({"RequestCompleted": {"key_id": key_id, "cost_micros": "a lot"}}).to_string())
    .execute(&env.pool)
    .await
    .unwrap();
    chat(&env, &key).await;
    wait_until(Duration::from_secs(60), || async {
        projected_requests(&env).await == 2
    })
    .await;

    let listed = quarantine(&env, "?limit=10").await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["data"][0]["aggregate_id"], bad_id.as_str());
    assert_eq!(listed["data"][0]["reason"], "unreadable");
    assert!(
        metric(
            &env,
            "aigw_projector_quarantined_total{reason=\"unreadable\"}"
        )
        .await
            >= 1.0
    );
    let day = today();
    let out = run_aigw(
        &env,
        &["audit", "--from", &day, "--to", &day, "--format", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["differences"], json!([]), "{report}");
    assert_eq!(report["quarantined"][0]["request_id"], bad_id.as_str());
    assert_eq!(report["quarantined"][0]["key_id"], Value::Null);

    // The operator repairs the payload; a rebuild applies it and it leaves
    // the quarantine.
    let fixed = RequestEvent::RequestCompleted {
        project_id: None,
        team_id: None,
        key_id: key_id.parse().unwrap(),
        provider_id,
        provider: "p".into(),
        model: "m".into(),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 4,
            ..Usage::default()
        },
        usage_estimated: false,
        cost_micros: Some(1000),
        price_fallback: false,
        attribution: Default::default(),
        latency_ms: 5,
        at: chrono::Utc::now(),
    };
    sqlx::query(
        "UPDATE events SET payload = $2::text::json
         WHERE aggregate_type = 'request' AND aggregate_id = $1",
    )
    .bind(&bad_id)
    .bind(serde_json::to_string(&fixed).unwrap())
    .execute(&env.pool)
    .await
    .unwrap();
    let out = run_aigw(&env, &["projector", "rebuild"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(quarantine(&env, "").await["total"], 0);
    assert_eq!(projected_requests(&env).await, 3);
    let billed: i64 = sqlx::query_scalar("SELECT sum(cost_micros)::int8 FROM billing_monthly")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(billed, 2 * 18 + 1000);
    let out = run_aigw(&env, &["audit", "--from", &day, "--to", &day]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(audit_http(&env).await["clean"], true);
}
