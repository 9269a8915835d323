//! Nothing lost, nothing billed twice: dispatchers killed mid-request.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user, wait_until};

#[tokio::test]
async fn a_dispatcher_killed_mid_request_loses_nothing_and_bills_once() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ack_wait: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "survived", 5, 3))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;

    let doomed = env.spawn_dispatcher_process();
    let call = {
        let http = env.http.clone();
        let url = env.url("/v1/chat/completions");
        let key = key.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "messages": user("x")}))
                .send()
                .await
                .unwrap()
        })
    };
    // Kill the dispatcher while the upstream call is in flight.
    wait_until(Duration::from_secs(20), || async {
        !mock
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    env.kill_process(doomed);
    env.start_dispatcher();

    let response = call.await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "survived");
    // The upstream was called again by the second dispatcher...
    assert_eq!(mock.received_requests().await.unwrap().len(), 2);
    // ...but the request is recorded (and billed) exactly once.
    let events = env.wait_recorded(&request_id).await;
    let outcomes = events
        .iter()
        .filter(|(t, _)| t == "RequestCompleted" || t == "RequestFailed")
        .count();
    assert_eq!(outcomes, 1);
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.stats(&key).await["totals"]["prompt_tokens"], 5);
}

#[tokio::test]
async fn requests_wait_for_a_dispatcher_and_several_dispatchers_share_the_work() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 2, 2)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    // Accepted while no dispatcher runs: queued, not lost.
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (http, url, key) = (
            env.http.clone(),
            env.url("/v1/chat/completions"),
            key.clone(),
        );
        calls.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "messages": user("x")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.start_dispatcher();
    env.start_dispatcher();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 20
    })
    .await;
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RequestCompleted'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(recorded, 20);
}
