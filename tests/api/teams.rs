//! Teams and projects: admin CRUD with validation and conflicts, every
//! change an event with its actor; a key's effective scopes (the
//! intersection of its own, its project's and its team's) on every route;
//! a project's RPM shared by its keys; a team's budget shared by keys
//! hammered on two ingress replicas, never exceeded and billed exactly.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

/// $1/$2 per million tokens; each answer uses 10 + 100 tokens: 210 micros.
const COST_MICROS: i64 = 210;

async fn admin(env: &TestEnv, m: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = env.admin(m, path);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(env: &TestEnv, path: &str, body: Value) -> (u16, Value) {
    admin(env, reqwest::Method::POST, path, Some(body)).await
}

async fn created(env: &TestEnv, path: &str, body: Value) -> Value {
    let (status, v) = post(env, path, body).await;
    assert_eq!(status, 201, "{v}");
    v
}

async fn priced_upstream(env: &TestEnv, name: &str, models: &[&str]) -> MockServer {
    slow_upstream(env, name, models, 0).await
}

async fn slow_upstream(env: &TestEnv, name: &str, models: &[&str], delay_ms: u64) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "ok", 10, 100))
                .set_delay(Duration::from_millis(delay_ms)),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
            "model": "m",
            "usage": {"prompt_tokens": 8, "total_tokens": 8}
        })))
        .mount(&mock)
        .await;
    let prices: serde_json::Map<String, Value> = models
        .iter()
        .map(|m| {
            (
                m.to_string(),
                json!({"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}),
            )
        })
        .collect();
    created(
        env,
        "/admin/api/providers",
        json!({
            "name": name,
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": models,
            "prices": prices,
        }),
    )
    .await;
    mock
}

async fn own_key(env: &TestEnv, base: &str, key: &str) -> Value {
    env.http
        .get(format!("{base}/v1/key"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn call(env: &TestEnv, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = env
        .http
        .post(env.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn teams_and_projects_crud_validation_and_conflicts() {
    let env = TestEnv::start().await;
    let team = created(
        &env,
        "/admin/api/teams",
        json!({"name": "ml", "rpm": 100, "budget_usd": 5.0, "budget_period": "monthly",
               "allowed_providers": ["b"]}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_string();
    assert_eq!(team["object"], "team");
    assert_eq!(team["limits"]["budget_usd"], 5.0);
    assert_eq!(team["scopes"]["allowed_providers"], json!(["b"]));

    // Validation: every value has a limit; unknown fields are refused.
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x".repeat(129)}),
        json!({"name": "bad\u{7}name"}),
        json!({"name": "t", "rpm": 0}),
        json!({"name": "t", "budget_usd": -1.0}),
        json!({"name": "t", "budget_tokens": 2_000_000_000_000_000_i64}),
        json!({"name": "t", "allowed_models": vec!["m"; 257]}),
        json!({"name": "t", "colour": "red"}),
        json!({"name": "t", "team_id": team_id}),
    ] {
        let (status, v) = post(&env, "/admin/api/teams", bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    let (status, v) = post(&env, "/admin/api/teams", json!({"name": "ml"})).await;
    assert_eq!(status, 409, "a second team named ml: {v}");

    // Projects need a live team.
    let (status, _) = post(&env, "/admin/api/projects", json!({"name": "p"})).await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &env,
        "/admin/api/projects",
        json!({"name": "p", "team_id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_eq!(status, 400);
    let project = created(
        &env,
        "/admin/api/projects",
        json!({"name": "search", "team_id": team_id, "tpm": 1000}),
    )
    .await;
    let project_id = project["id"].as_str().unwrap().to_string();
    assert_eq!(project["team_name"], "ml");

    // A key in an unknown project is refused; in a live one, it belongs.
    let (status, _) = post(
        &env,
        "/admin/api/keys",
        json!({"name": "k", "project_id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_eq!(status, 400);
    let key = created(
        &env,
        "/admin/api/keys",
        json!({"name": "k", "project_id": project_id}),
    )
    .await;
    let key_id = key["id"].as_str().unwrap().to_string();
    assert_eq!(key["project_id"], project_id.as_str());

    // A team with projects and a project with keys are not deleted.
    let (status, v) = admin(
        &env,
        reqwest::Method::DELETE,
        &format!("/admin/api/teams/{team_id}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("project"));
    let (status, v) = admin(
        &env,
        reqwest::Method::DELETE,
        &format!("/admin/api/projects/{project_id}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("key"));

    // Rename and reconfigure; a project never changes team.
    let (status, v) = admin(
        &env,
        reqwest::Method::PATCH,
        &format!("/admin/api/teams/{team_id}"),
        Some(json!({"name": "ml-platform", "rpm": null})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "ml-platform");
    assert_eq!(v["limits"]["rpm"], Value::Null);
    let (status, _) = admin(
        &env,
        reqwest::Method::PATCH,
        &format!("/admin/api/projects/{project_id}"),
        Some(json!({"team_id": uuid::Uuid::now_v7()})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, v) = admin(
        &env,
        reqwest::Method::GET,
        &format!("/admin/api/teams/{team_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["projects"], 1);
    assert_eq!(v["budget"]["budget_usd"], 5.0);

    // Moving the key out of the project is an event; then both go.
    let (status, v) = admin(
        &env,
        reqwest::Method::PATCH,
        &format!("/admin/api/keys/{key_id}"),
        Some(json!({"project_id": null})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["project_id"], Value::Null);
    for path in [
        format!("/admin/api/projects/{project_id}"),
        format!("/admin/api/teams/{team_id}"),
    ] {
        let (status, v) = admin(&env, reqwest::Method::DELETE, &path, None).await;
        assert_eq!(status, 200, "{path}: {v}");
        let (status, _) = admin(&env, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, list) = admin(&env, reqwest::Method::GET, "/admin/api/teams", None).await;
    assert_eq!(list["data"], json!([]));

    // Every change is an event, with the admin as actor.
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, payload::jsonb FROM events
         WHERE aggregate_type IN ('team', 'project') ORDER BY aggregate_type DESC, sequence",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "TeamCreated",
            "TeamRenamed",
            "TeamReconfigured",
            "TeamDeleted",
            "ProjectCreated",
            "ProjectDeleted"
        ]
    );
    for (t, payload) in &events {
        let actor = payload[t]["actor"].as_str().unwrap();
        assert!(actor.starts_with("admin:"), "{payload}");
    }
}

#[tokio::test]
async fn a_team_s_scopes_bind_its_keys_on_every_route() {
    let env = TestEnv::start().await;
    let a = priced_upstream(&env, "a", &["only-a"]).await;
    let _b = priced_upstream(&env, "b", &["m"]).await;
    let team = created(
        &env,
        "/admin/api/teams",
        json!({"name": "t", "allowed_providers": ["b"]}),
    )
    .await;
    let project = created(
        &env,
        "/admin/api/projects",
        json!({"name": "p", "team_id": team["id"]}),
    )
    .await;
    // The key itself allows everything.
    let key = created(
        &env,
        "/admin/api/keys",
        json!({"name": "k", "project_id": project["id"]}),
    )
    .await;
    let key = key["key"].as_str().unwrap();

    let chat = json!({"model": "only-a", "messages": user("hi")});
    let (status, v) = call(&env, key, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "provider_not_allowed");
    let (status, v) = call(
        &env,
        key,
        "/v1/embeddings",
        json!({"model": "only-a", "input": "x"}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = call(&env, key, "/v1/jobs", chat).await;
    assert_eq!(status, 403, "{v}");
    // Anthropic's routes too, with Anthropic's error shape.
    let messages = json!({"model": "only-a", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hi"}]});
    for route in ["/v1/messages", "/v1/messages/count_tokens"] {
        let (status, v) = call(&env, key, route, messages.clone()).await;
        assert_eq!(status, 403, "{route}: {v}");
        assert_eq!(v["type"], "error", "{route}: {v}");
        assert_eq!(v["error"]["type"], "permission_error", "{route}: {v}");
    }
    // Pinning the provider does not get around it either.
    let (status, _) = call(
        &env,
        key,
        "/v1/chat/completions",
        json!({"model": "a/only-a", "messages": user("hi")}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(a.received_requests().await.unwrap().is_empty());

    // What B serves works, and is all the key sees.
    let (status, v) = call(
        &env,
        key,
        "/v1/chat/completions",
        json!({"model": "m", "messages": user("hi")}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let models: Value = env
        .http
        .get(env.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m"], "{models}");
}

#[tokio::test]
async fn a_project_s_rpm_is_shared_by_its_keys() {
    let env = TestEnv::start().await;
    let _b = priced_upstream(&env, "b", &["m"]).await;
    let team = created(&env, "/admin/api/teams", json!({"name": "t"})).await;
    let project = created(
        &env,
        "/admin/api/projects",
        json!({"name": "p", "team_id": team["id"], "rpm": 3}),
    )
    .await;
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let k = created(
            &env,
            "/admin/api/keys",
            json!({"name": name, "project_id": project["id"], "rpm": 100}),
        )
        .await;
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    let body = json!({"model": "m", "messages": user("hi")});
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = env
            .http
            .post(env.url("/v1/chat/completions"))
            .bearer_auth(&keys[i % 2])
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let remaining = r
            .headers()
            .get("x-ratelimit-remaining-requests")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap();
        statuses.push((status, remaining, v));
    }
    let codes: Vec<u16> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(codes, [200, 200, 200, 429]);
    // The headers report the most limiting level: the project's 3.
    assert_eq!(statuses[0].1.as_deref(), Some("2"));
    let refused = &statuses[3].2;
    assert_eq!(refused["error"]["code"], "rate_limit_exceeded");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("project rate limit"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_team_budget_shared_by_three_keys_holds_across_two_replicas() {
    let mut env = TestEnv::start().await;
    let second = env.start_ingress().await;
    let bases = [env.base.clone(), second];
    // Slow answers: every request is in flight at once, holding its worst case.
    let _b = slow_upstream(&env, "b", &["m"], 300).await;
    let body = json!({"model": "m", "messages": user("hi"), "max_tokens": 1000});
    // Room for about 12 worst cases (each holds a few thousand micros).
    let budget_micros: i64 = 30_000;
    let team = created(
        &env,
        "/admin/api/teams",
        json!({"name": "t", "budget_usd": budget_micros as f64 / 1e6, "budget_period": "total"}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_string();
    let project = created(
        &env,
        "/admin/api/projects",
        json!({"name": "p", "team_id": team_id}),
    )
    .await;
    let mut keys = Vec::new();
    for i in 0..3 {
        // Each key's own budget alone would allow far more.
        let k = created(
            &env,
            "/admin/api/keys",
            json!({"name": format!("k{i}"), "project_id": project["id"], "budget_usd": 1.0}),
        )
        .await;
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    let mut calls = Vec::new();
    for i in 0..90 {
        let url = format!("{}/v1/chat/completions", bases[i % 2]);
        let (http, key, body) = (env.http.clone(), keys[i % 3].clone(), body.clone());
        calls.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut ok = 0i64;
    for c in calls {
        let (status, v) = c.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("team budget exhausted"),
                    "{v}"
                );
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!((5..90).contains(&ok), "{ok} succeeded");

    // Every hold settled: the team spent exactly what its keys' successes
    // cost, never more than its budget.
    let team_path = format!("/admin/api/teams/{team_id}");
    wait_until(Duration::from_secs(30), || async {
        let (_, t) = admin(&env, reqwest::Method::GET, &team_path, None).await;
        t["budget"]["held_usd"] == 0.0
    })
    .await;
    let (_, t) = admin(&env, reqwest::Method::GET, &team_path, None).await;
    let spent = t["budget"]["spent_micros"].as_i64().unwrap();
    assert_eq!(spent, ok * COST_MICROS, "{t}");
    assert!(spent <= budget_micros);
    let mut keys_spent = 0;
    for key in &keys {
        keys_spent += own_key(&env, &bases[0], key).await["spent_micros"]
            .as_i64()
            .unwrap();
    }
    assert_eq!(keys_spent, spent);
    // The events and the request log say the same, to the micro-dollar.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum((payload::jsonb #>> '{RequestCompleted,cost_micros}')::int8), 0)::int8
         FROM events WHERE event_type = 'RequestCompleted'
           AND payload::jsonb #>> '{RequestCompleted,team_id}' = $1",
    )
    .bind(&team_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(recorded, spent);
    wait_until(Duration::from_secs(30), || async {
        let logged: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(cost_micros), 0)::int8 FROM request_log WHERE team_id = $1::uuid",
        )
        .bind(&team_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        logged == spent
    })
    .await;

    // The key sees the team as what limits it.
    let mine = own_key(&env, &bases[1], &keys[0]).await;
    assert_eq!(mine["limited_by"], "team", "{mine}");
    assert_eq!(mine["team_id"], team_id.as_str());
    assert_eq!(mine["team_name"], "t");
    assert_eq!(mine["project_name"], "p");
    assert_eq!(mine["levels"].as_array().unwrap().len(), 3, "{mine}");

    // A lost team entry starts again from the request log, not from zero.
    let names = env.common.names().unwrap();
    let (_, js) = aigw_runtime::nats::connect(&env.common.nats_url, "purger")
        .await
        .unwrap();
    let kv = js
        .get_key_value(format!("{}_limits", names.namespace()))
        .await
        .unwrap();
    kv.purge(format!("budget.team-{team_id}.total"))
        .await
        .unwrap();
    let (_, t) = admin(&env, reqwest::Method::GET, &team_path, None).await;
    assert_eq!(t["budget"]["spent_micros"], spent, "{t}");
}
