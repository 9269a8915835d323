//! Budget alerts (issue #13): crossing 50, 80 and 100 % of a key's budget
//! records one alert each, delivered signed to the admin's webhook and
//! retried until acknowledged, never twice however often it is looked for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aigw_projector::alerts::AlertArgs;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user, wait_until};
use crate::jobs::signature;

const SECRET: &str = "alert-secret-of-at-least-32-characters!!";

/// Each answer reports 3000 prompt tokens: 3000 micro-dollars at $1 per
/// million (more than the small worst case admission held, which is well
/// under the 1000 left before the last request).
async fn provider(env: &TestEnv) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 3000, 0)))
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream",
            "models": ["m"],
            "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

async fn alerts(env: &TestEnv, key: &str) -> Vec<Value> {
    let r = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/alerts?key={key}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

async fn alert_events(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
         WHERE aggregate_type = 'budget_alert' AND event_type = 'BudgetThresholdCrossed'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn thresholds_alert_once_each_signed_and_retried() {
    // The receiver fails the first delivery; the retry is acknowledged.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let mut env = TestEnv::with(Options {
        alerts: AlertArgs {
            alert_webhook_url: Some(format!("{}/alerts", receiver.uri())),
            alert_webhook_secret: Some(SecretString::from(SECRET)),
            alert_webhook_backoff: Duration::from_millis(100),
            alert_webhook_timeout: Duration::from_secs(2),
        },
        ..Default::default()
    })
    .await;
    // A second projector replica looks for the same crossings.
    env.start_projector();
    let _mock = provider(&env).await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "alerted", "budget_usd": 0.01, "budget_period": "monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let (key_id, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["key"].as_str().unwrap().to_string(),
    );
    assert_eq!(created["limits"]["alert_thresholds"], json!([50, 80, 100]));
    // Thresholds are validated.
    for bad in [
        json!([0]),
        json!([101]),
        json!([50, 50]),
        json!(vec![5; 11]),
    ] {
        let r = env
            .admin(reqwest::Method::PATCH, &format!("/admin/api/keys/{key_id}"))
            .json(&json!({"alert_thresholds": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    // 3000, 6000, 9000, 12000 of 10000 micro-dollars: 30 % (nothing), then 50,
    // 80 and 100 % crossed, one request at a time.
    let expected = [0, 1, 2, 3];
    for (n, want) in expected.into_iter().enumerate() {
        let r = env
            .chat(
                &secret,
                json!({"model": "m", "messages": user("hi"), "max_tokens": 1}),
            )
            .await;
        assert_eq!(r.status(), 200, "request {n}: {}", r.text().await.unwrap());
        wait_until(Duration::from_secs(30), || async {
            crate::billing::projected_requests(&env).await == n as i64 + 1
        })
        .await;
        // Projected and checked in one transaction: the alerts are there.
        assert_eq!(alerts(&env, &key_id).await.len(), want, "after request {n}");
    }
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let listed = alerts(&env, &key_id).await;
    let thresholds: Vec<i64> = listed
        .iter()
        .map(|a| a["threshold"].as_i64().unwrap())
        .collect();
    assert_eq!(thresholds, [100, 80, 50], "newest first: {listed:?}");
    for a in &listed {
        assert_eq!(a["level"], "key");
        assert_eq!(a["target_id"], key_id.as_str());
        assert_eq!(a["period"], period.as_str());
        assert_eq!(a["budget_micros"], 10_000);
        assert_eq!(
            a["id"],
            format!("alert:key:{key_id}:{period}:{}", a["threshold"]).as_str()
        );
    }
    assert_eq!(listed[0]["spent_micros"], 12_000);

    // Each delivered once, signed; the first delivery failed and was retried.
    wait_until(Duration::from_secs(30), || async {
        alerts(&env, &key_id)
            .await
            .iter()
            .all(|a| a["delivery"]["delivered"] == true)
    })
    .await;
    let received = receiver.received_requests().await.unwrap();
    assert_eq!(received.len(), 4, "3 alerts, one retried");
    let mut per_alert: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &received {
        assert_eq!(
            r.headers["x-aigw-signature"].to_str().unwrap(),
            signature(SECRET, &r.body)
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "budget.threshold_crossed");
        let id = r.headers["x-aigw-alert-id"].to_str().unwrap().to_string();
        assert_eq!(body["id"], id.as_str());
        let attempt = r.headers["x-aigw-delivery-attempt"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        per_alert.entry(id).or_default().push(attempt);
    }
    assert_eq!(per_alert.len(), 3);
    let first = received[0].headers["x-aigw-alert-id"].to_str().unwrap();
    assert_eq!(per_alert[first], [1, 2], "the failed delivery was retried");
    let attempts: BTreeSet<usize> = per_alert.values().map(Vec::len).collect();
    assert_eq!(attempts, BTreeSet::from([1, 2]));
    let retried = alerts(&env, &key_id)
        .await
        .into_iter()
        .find(|a| a["id"] == first)
        .unwrap();
    assert_eq!(retried["delivery"]["attempts"], 2);

    // Looking again (a replica, a redelivered batch) records nothing new.
    assert_eq!(alert_events(&env).await, 3);
    let today = chrono::Utc::now().date_naive();
    let spenders = BTreeMap::from([(
        (aigw_events::alert::AlertLevel::Key, key_id.parse().unwrap()),
        BTreeSet::from([today]),
    )]);
    let mut tx = env.pool.begin().await.unwrap();
    let again = aigw_projector::alerts::detect(&mut tx, &spenders, chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, 0);
    // More spend past 100 % crosses nothing new.
    let r = env
        .chat(
            &secret,
            json!({"model": "m", "messages": user("hi"), "max_tokens": 1}),
        )
        .await;
    let status = r.status();
    if status == 200 {
        wait_until(Duration::from_secs(30), || async {
            crate::billing::projected_requests(&env).await == 5
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alert_events(&env).await, 3);
    assert_eq!(alerts(&env, &key_id).await.len(), 3);
    assert_eq!(receiver.received_requests().await.unwrap().len(), 4);

    // Another key's filter sees none.
    let (other, _) = env.add_key("other").await;
    assert!(alerts(&env, &other).await.is_empty());
    let r = env
        .admin(reqwest::Method::GET, "/admin/api/alerts?limit=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn listed(env: &TestEnv, query: &str) -> Vec<Value> {
    let r = env
        .admin(reqwest::Method::GET, &format!("/admin/api/alerts?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    let body: Value = r.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

async fn created(env: &TestEnv, path: &str, body: Value) -> Value {
    let r = env
        .admin(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_team_s_and_a_project_s_budgets_alert_at_their_own_level() {
    let env = TestEnv::start().await;
    let _mock = provider(&env).await;
    // The team's budget is spent by two keys of two projects; one project
    // has a budget of its own with one threshold.
    let team = created(
        &env,
        "/admin/api/teams",
        json!({"name": "t", "budget_usd": 0.01, "budget_period": "monthly"}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_string();
    let p1 = created(
        &env,
        "/admin/api/projects",
        json!({"name": "p1", "team_id": team_id, "budget_usd": 0.1,
               "budget_period": "monthly", "alert_thresholds": [5]}),
    )
    .await;
    let p1_id = p1["id"].as_str().unwrap().to_string();
    let p2 = created(
        &env,
        "/admin/api/projects",
        json!({"name": "p2", "team_id": team_id}),
    )
    .await;
    let mut secrets = Vec::new();
    for p in [&p1, &p2] {
        let k = created(
            &env,
            "/admin/api/keys",
            json!({"name": "k", "project_id": p["id"]}),
        )
        .await;
        secrets.push(k["key"].as_str().unwrap().to_string());
    }
    // 3000 micro-dollars a request, alternating projects: the team's 50 %
    // is crossed by the second request (6000 of 10000), 80 % by the third.
    for (n, want_team) in [0usize, 1, 2].into_iter().enumerate() {
        let r = env
            .chat(
                &secrets[n % 2],
                json!({"model": "m", "messages": user("hi"), "max_tokens": 1}),
            )
            .await;
        assert_eq!(r.status(), 200, "request {n}: {}", r.text().await.unwrap());
        wait_until(Duration::from_secs(30), || async {
            crate::billing::projected_requests(&env).await == n as i64 + 1
        })
        .await;
        let team_alerts = listed(&env, &format!("target={team_id}")).await;
        assert_eq!(team_alerts.len(), want_team, "after request {n}");
    }
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let team_alerts = listed(&env, "level=team").await;
    let thresholds: Vec<i64> = team_alerts
        .iter()
        .map(|a| a["threshold"].as_i64().unwrap())
        .collect();
    assert_eq!(thresholds, [80, 50]);
    for a in &team_alerts {
        assert_eq!(a["level"], "team");
        assert_eq!(a["target_id"], team_id.as_str());
        assert_eq!(a["budget_micros"], 10_000);
        assert_eq!(
            a["id"],
            format!("alert:team:{team_id}:{period}:{}", a["threshold"]).as_str()
        );
    }
    assert_eq!(team_alerts[0]["spent_micros"], 9_000);
    // Project 1 spent 6000 of 100000: its own 5 % threshold, once.
    let project_alerts = listed(&env, "level=project").await;
    assert_eq!(project_alerts.len(), 1, "{project_alerts:?}");
    assert_eq!(project_alerts[0]["target_id"], p1_id.as_str());
    assert_eq!(project_alerts[0]["threshold"], 5);
    assert_eq!(project_alerts[0]["spent_micros"], 6_000);
    // The keys have no budgets: no key alerts.
    assert!(listed(&env, "level=key").await.is_empty());
    // Looked for again, nothing new.
    let spenders = BTreeMap::from([
        (
            (
                aigw_events::alert::AlertLevel::Team,
                team_id.parse().unwrap(),
            ),
            BTreeSet::from([chrono::Utc::now().date_naive()]),
        ),
        (
            (
                aigw_events::alert::AlertLevel::Project,
                p1_id.parse().unwrap(),
            ),
            BTreeSet::from([chrono::Utc::now().date_naive()]),
        ),
    ]);
    let mut tx = env.pool.begin().await.unwrap();
    let again = aigw_projector::alerts::detect(&mut tx, &spenders, chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, 0);
    // Bad filters are 400s naming their param.
    for (query, param) in [
        ("level=org", "level"),
        (&format!("key={p1_id}&target={team_id}") as &str, "target"),
    ] {
        let r = env
            .admin(reqwest::Method::GET, &format!("/admin/api/alerts?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param);
    }
}
