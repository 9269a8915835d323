//! A request whose answer is lost on its way back (the core NATS reply
//! subject, during a failover) ends in a clean `502 answer_lost` as soon as
//! its outcome is recorded, not after the request timeout. The test plays
//! the dispatcher: it takes the request off the stream, records its
//! outcome as a dispatcher does, and never answers.

use std::time::{Duration, Instant};

use aigw_events::{Attempt, ErrorClass, Outcome, RequestCommand, Usage};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user, wait_until};

#[tokio::test]
async fn a_recorded_request_whose_answer_is_lost_fails_cleanly_at_once() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        // Far longer than the test may take: the answer must not be a timeout.
        request_timeout: Duration::from_secs(120),
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 10, 4)))
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "p", "base_url": format!("{}/v1", mock.uri()),
                      "api_key": "sk-upstream", "models": ["m"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let provider_id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (key_id, key) = env.add_key("k").await;

    let started = Instant::now();
    let call = {
        let (http, url, key) = (env.http.clone(), env.url("/v1/chat/completions"), key);
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "messages": user("hi")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        })
    };

    // The request reaches the stream; its id rides in Nats-Msg-Id.
    let names = env.common.names().unwrap();
    let (_, js) = aigw_runtime::nats::connect(&env.common.nats_url, "test-dispatcher")
        .await
        .unwrap();
    let stream_name = names.requests_stream();
    wait_until(Duration::from_secs(10), || async {
        let mut s = js.get_stream(&stream_name).await.unwrap();
        s.info().await.unwrap().state.messages == 1
    })
    .await;
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let message = stream.get_raw_message(last).await.unwrap();
    let request_id = message.headers.get("Nats-Msg-Id").unwrap().to_string();

    // Recorded as a dispatcher records it, after answering: the answer
    // is what got lost.
    let now = chrono::Utc::now();
    let recorded = aigw_runtime::store::record_request_in(
        &env.pool,
        &request_id,
        RequestCommand::RecordRequest {
            project_id: None,
            team_id: None,
            key_id: key_id.parse().unwrap(),
            model: "m".into(),
            stream: false,
            accepted_at: now,
            route: None,
            attribution: Default::default(),
            attempts: vec![Attempt {
                provider_id,
                provider: "p".into(),
                model: "m".into(),
                status: Some(200),
                latency_ms: 3,
                error: None::<ErrorClass>,
                started_at: now,
            }],
            outcome: Outcome::Completed {
                provider_id,
                provider: "p".into(),
                model: "m".into(),
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: 4,
                    ..Usage::default()
                },
                usage_estimated: false,
                cost_micros: None,
                price_fallback: false,
                latency_ms: 3,
                at: now,
            },
        },
        &aigw_runtime::store::metadata(&[("request_id", &request_id)]),
    )
    .await
    .unwrap();
    assert!(recorded);

    let (status, body) = call.await.unwrap();
    let waited = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "answer_lost", "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&request_id),
        "{body}"
    );
    // Within the check delay, the grace and a little slack: not the
    // request timeout.
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    let page = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("aigw_answers_lost_total 1"), "{page}");
}
