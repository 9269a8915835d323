//! `Idempotency-Key`: a repeat returns the first answer, runs and bills once.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

async fn chat(env: &TestEnv, key: &str, idem: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_answer_and_bills_once() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 10, 4)))
        .expect(2)
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (a_id, a) = env.add_key("a").await;
    let (_, b) = env.add_key("b").await;
    let body = json!({"model": "m", "messages": user("x")});

    let first = chat(&env, &a, "order-1", body.clone()).await;
    assert_eq!(first.status(), 200);
    let first_id = first.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let first: Value = first.json().await.unwrap();
    for _ in 0..2 {
        let again = chat(&env, &a, "order-1", body.clone()).await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(
            again.headers()["x-aigw-original-request-id"],
            first_id.as_str()
        );
        let again: Value = again.json().await.unwrap();
        assert_eq!(again, first);
    }
    // Another key's identical Idempotency-Key is its own request.
    let other = chat(&env, &b, "order-1", body.clone()).await;
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("idempotent-replayed").is_none());

    // Streams cannot be idempotent: refused before anything runs.
    let r = chat(
        &env,
        &a,
        "order-2",
        json!({"model": "m", "messages": user("x"), "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 400);

    wait_until(Duration::from_secs(30), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM request_log WHERE status IS NOT NULL")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        n == 2
    })
    .await;
    let billed: i64 =
        sqlx::query_scalar("SELECT requests FROM billing_monthly WHERE key_id = $1::uuid")
            .bind(&a_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(billed, 1);
}
