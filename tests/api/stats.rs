//! The projector's usage view, served as `GET /stats`.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user, wait_until};

#[tokio::test]
async fn stats_show_a_keys_requests_tokens_and_errors_by_model_and_day() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 10, 4)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("a").await;
    let (_, other) = env.add_key("b").await;
    for _ in 0..3 {
        let r = env
            .chat(&key, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("x"), "provider": "ghost"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = env
        .chat(&other, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);

    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 3
    })
    .await;
    let stats = env.stats(&key).await;
    assert_eq!(stats["totals"]["prompt_tokens"], 30);
    assert_eq!(stats["totals"]["completion_tokens"], 12);
    assert_eq!(stats["totals"]["total_tokens"], 42);
    assert_eq!(stats["data"][0]["model"], "m");
    assert!(stats["data"][0]["p95_latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        stats["data"][0]["day"],
        chrono::Utc::now().date_naive().to_string()
    );
    wait_until(Duration::from_secs(30), || async {
        env.stats(&other).await["totals"]["requests"] == 1
    })
    .await;
}

#[tokio::test]
async fn a_projector_started_late_catches_up() {
    let mut env = TestEnv::with(Options {
        projector: false,
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 1, 2)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("a").await;
    for _ in 0..5 {
        let r = env
            .chat(&key, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.stats(&key).await["totals"]["requests"], 0);
    env.start_projector();
    // Two projectors at once must not double count.
    env.start_projector();
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = env.stats(&key).await;
    assert_eq!(stats["totals"]["requests"], 5);
    assert_eq!(stats["totals"]["completion_tokens"], 10);
}
