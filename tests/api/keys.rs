//! Keys and providers through the admin API: hashes only, revocation
//! everywhere within a second, credentials never shown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

#[tokio::test]
async fn revoked_keys_fail_on_every_replica_within_a_second() {
    let mut env = TestEnv::start().await;
    let second = env.start_ingress().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 1, 1)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (id, key) = env.add_key("doomed").await;
    let body = json!({"model": "m", "messages": user("x")});
    for base in [env.base.clone(), second.clone()] {
        let r = env
            .http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(
            status,
            200,
            "key must work on {base} before revocation: {}",
            r.text().await.unwrap()
        );
    }

    let r = env
        .admin(reqwest::Method::DELETE, &format!("/admin/api/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked: Value = r.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    let revoked_at = Instant::now();
    for base in [env.base.clone(), second] {
        let url = format!("{base}/v1/chat/completions");
        wait_until(Duration::from_secs(1), || async {
            let r = env
                .http
                .post(&url)
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status() == 401
        })
        .await;
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));

    // Its history is two events, in order, with who did it.
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, metadata::jsonb FROM events WHERE aggregate_type = 'key'
         AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["KeyIssued", "KeyRevoked"]);
    assert!(events[1].1["actor"].as_str().unwrap().starts_with("admin:"));
}

#[tokio::test]
async fn secrets_are_shown_once_and_stored_only_hashed_or_sealed() {
    let env = TestEnv::start().await;
    let provider_id = env.add_provider("p", "http://127.0.0.1:9/v1", &["m"]).await;
    let (key_id, key) = env.add_key("ci").await;
    assert!(key.starts_with("aig_") && key.len() >= 40);

    for path in [
        "/admin/api/providers".to_string(),
        format!("/admin/api/providers/{provider_id}"),
        "/admin/api/keys".to_string(),
        format!("/admin/api/keys/{key_id}"),
    ] {
        let text = env
            .admin(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("sk-upstream-secret"), "{path}: {text}");
        assert!(!text.contains(&key), "{path}: {text}");
    }
    let listed: Value = env
        .admin(reqwest::Method::GET, "/admin/api/providers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["has_credential"], true);

    // Neither the key nor the credential is anywhere in the database.
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, ' ') FROM events")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let tables: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(t::text, ' ') FROM api_keys t) || (SELECT string_agg(p::text, ' ') FROM providers p)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    for text in [&dump, &tables] {
        assert!(!text.contains("sk-upstream-secret"));
        assert!(!text.contains(&key));
    }

    // Removing a provider removes its models.
    let r = env
        .admin(
            reqwest::Method::DELETE,
            &format!("/admin/api/providers/{provider_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .chat(&key, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 404);
    let r = env
        .admin(
            reqwest::Method::DELETE,
            &format!("/admin/api/providers/{provider_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
