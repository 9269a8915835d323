//! PostgreSQL host lists and read replicas: `AIGW_DATABASE_URL` listing
//! several hosts with `target_session_attrs=read-write` (a dead or read-only
//! host listed first is skipped; a failover to another host is followed),
//! and `AIGW_DATABASE_READ_URL` serving the read-heavy routes while writes
//! stay on the primary.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, free_port, user, wait_until};
use crate::temp_postgres::TempPostgres;

async fn mock_provider(env: &TestEnv) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 3, 2)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    mock
}

/// One chat request through `env`, recorded; returns its request id.
async fn chat_recorded(env: &TestEnv, key: &str) -> String {
    let r = env
        .chat(key, json!({"model": "m", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    env.wait_recorded(&id).await;
    id
}

/// The database name of `env` (the path of its URL).
fn database_name(env: &TestEnv) -> String {
    let url = &env.common.database_url;
    let path = url.rsplit_once('/').unwrap().1;
    path.split('?').next().unwrap().to_string()
}

#[tokio::test]
async fn a_dead_host_listed_first_is_skipped() {
    let dead = free_port();
    let env = TestEnv::with(Options {
        database_hosts: Some(format!("127.0.0.1:{dead},127.0.0.1:5432")),
        ..Options::default()
    })
    .await;
    assert!(env.common.database_url.contains(','));
    let _mock = mock_provider(&env).await;
    let (_, key) = env.add_key("ci").await;
    chat_recorded(&env, &key).await;
}

#[tokio::test]
async fn a_read_only_host_is_skipped_and_a_failover_to_it_is_followed() {
    let standby = TempPostgres::start();
    let primary = TempPostgres::start();
    standby.set_read_only(true).await;
    let env = TestEnv::with(Options {
        database_hosts: Some(format!("{},{}", standby.host(), primary.host())),
        ..Options::default()
    })
    .await;
    // The "replica" holds the same schema, as a promoted one would.
    let db = database_name(&env);
    let standby_url = format!("postgres://postgres@{}/{db}", standby.host());
    standby.set_read_only(false).await;
    aigw_runtime::db::prepare(&standby_url, 1)
        .await
        .unwrap()
        .close()
        .await;
    standby.set_read_only(true).await;

    let _mock = mock_provider(&env).await;
    let (_, key) = env.add_key("ci").await;
    let id = chat_recorded(&env, &key).await;
    let events_on = |host: String, aggregate: String| {
        let url = format!("postgres://postgres@{host}/{db}");
        async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
                .bind(aggregate)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            n
        }
    };
    // Written to the read-write host only.
    assert!(events_on(primary.host(), id.clone()).await > 0);
    assert_eq!(events_on(standby.host(), id).await, 0);

    // Failover: the primary dies, the standby is promoted.
    primary.stop();
    standby.set_read_only(false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let issued = loop {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/keys")
            .json(&json!({"name": "after-failover"}))
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 201
        {
            let body: Value = r.json().await.unwrap();
            break body["id"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write succeeded after the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(events_on(standby.host(), issued).await > 0);
    // Reads follow too.
    let r = env
        .admin(reqwest::Method::GET, "/admin/api/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn read_heavy_routes_read_from_the_read_url_and_writes_stay_on_the_primary() {
    // A replica whose views differ from the primary's: a database of its own.
    let run = std::env::var("AIGW_TEST_RUN").unwrap_or_else(|_| "local".into());
    let replica_url = format!(
        "postgres://postgres@127.0.0.1:5432/aigw_t_{run}_{}",
        Uuid::now_v7().simple()
    );
    let replica = aigw_runtime::db::prepare(&replica_url, 2).await.unwrap();
    let env = TestEnv::with(Options {
        database_read_url: Some(replica_url),
        ..Options::default()
    })
    .await;
    let _mock = mock_provider(&env).await;
    // Written on the primary (the key works at once).
    let (key_id, key) = env.add_key("ci").await;
    let id = chat_recorded(&env, &key).await;
    let key_uuid = Uuid::parse_str(&key_id).unwrap();
    wait_until(Duration::from_secs(30), || async {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT sum(requests)::bigint FROM usage_daily WHERE key_id = $1")
                .bind(key_uuid)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        n == Some(1)
    })
    .await;
    let replica_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&replica)
        .await
        .unwrap();
    assert_eq!(replica_events, 0);

    // Read from the replica: it has not seen the request.
    assert_eq!(env.stats(&key).await["totals"]["requests"], 0);
    let log: Value = env
        .admin(reqwest::Method::GET, "/admin/api/requests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["data"], json!([]), "{log}");

    // What the replica holds is what they show.
    sqlx::query(
        "INSERT INTO usage_daily (key_id, day, model, requests, prompt_tokens)
         VALUES ($1, current_date, 'm', 7, 21)",
    )
    .bind(key_uuid)
    .execute(&replica)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO usage_hourly (key_id, hour, provider, model, requests, prompt_tokens)
         VALUES ($1, date_trunc('hour', now()), 'p', 'm', 7, 4321)",
    )
    .bind(key_uuid)
    .execute(&replica)
    .await
    .unwrap();
    let stats = env.stats(&key).await;
    assert_eq!(stats["totals"]["requests"], 7, "{stats}");
    let admin: Value = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/stats?key={key_id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(admin.to_string().contains("4321"), "{admin}");
    // Request detail of the primary's request: not on the replica.
    let detail = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/usage/requests/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(detail.status(), 404);
}
