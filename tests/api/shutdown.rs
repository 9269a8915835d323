//! Graceful shutdown of every role on SIGTERM, under load: the ingress
//! finishes what is in flight, the dispatcher finishes or hands back what it
//! holds (never leaving a request to the ack wait), the projector stops at
//! a checkpoint. Every request ends as one recorded outcome.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, free_port, user, wait_until};

/// The ack wait of these tests: a request left to it would take this long.
const ACK_WAIT: Duration = Duration::from_secs(30);

async fn slow_upstream(env: &TestEnv, delay: Duration) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "ok", 3, 2))
                .set_delay(delay),
        )
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    mock
}

/// Sends `count` chat requests to `base`, one every `every`; each answer
/// comes back as (status, request id, seconds taken).
fn load(
    env: &TestEnv,
    base: &str,
    key: &str,
    count: usize,
    every: Duration,
) -> tokio::task::JoinHandle<Vec<(u16, String, f64)>> {
    let (http, url, key) = (
        env.http.clone(),
        format!("{base}/v1/chat/completions"),
        key.to_string(),
    );
    tokio::spawn(async move {
        let mut calls = vec![];
        for _ in 0..count {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let response = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({"model": "m", "messages": user("hi")}))
                    .timeout(ACK_WAIT)
                    .send()
                    .await
                    .unwrap();
                let id = response
                    .headers()
                    .get("x-request-id")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                (
                    response.status().as_u16(),
                    id,
                    started.elapsed().as_secs_f64(),
                )
            }));
            tokio::time::sleep(every).await;
        }
        let mut out = vec![];
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    })
}

/// Every request is recorded with exactly one outcome, and the usage view
/// counts each once.
async fn recorded_once(env: &TestEnv, key: &str, answers: &[(u16, String, f64)]) {
    for (_, id, _) in answers {
        let events = env.wait_recorded(id).await;
        let outcomes = events
            .iter()
            .filter(|(t, _)| t == "RequestCompleted" || t == "RequestFailed")
            .count();
        assert_eq!(outcomes, 1, "request {id}: {events:?}");
    }
    let count = answers.len();
    wait_until(Duration::from_secs(30), || async {
        env.stats(key).await["totals"]["requests"] == count
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let totals: Value = env.stats(key).await["totals"].clone();
    assert_eq!(totals["requests"], count);
    assert_eq!(totals["prompt_tokens"], 3 * count);
}

#[tokio::test]
async fn a_stopping_dispatcher_finishes_its_requests_and_leaves_none_to_the_ack_wait() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ack_wait: ACK_WAIT,
        ..Options::default()
    })
    .await;
    let _mock = slow_upstream(&env, Duration::from_millis(1500)).await;
    let (_, key) = env.add_key("ci").await;
    let doomed = env.spawn_dispatcher_process();
    env.spawn_dispatcher_process();

    let base = env.base.clone();
    let calls = load(&env, &base, &key, 40, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(800)).await;
    env.terminate_process(doomed);
    let status = env.wait_exit(doomed, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");

    let answers = calls.await.unwrap();
    for (status, id, secs) in &answers {
        assert_eq!(*status, 200, "{id}");
        // 1.5 s upstream: well under the ack wait, even when handed back.
        assert!(*secs < 10.0, "{id} took {secs}s");
    }
    recorded_once(&env, &key, &answers).await;
}

#[tokio::test]
async fn requests_still_running_at_the_end_of_the_grace_go_to_another_dispatcher_at_once() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ack_wait: ACK_WAIT,
        ..Options::default()
    })
    .await;
    let mock = slow_upstream(&env, Duration::from_secs(3)).await;
    let (_, key) = env.add_key("ci").await;
    let mut doomed = env.dispatcher_process();
    doomed.env("AIGW_SHUTDOWN_GRACE", "500ms");
    let doomed = env.spawn_child(doomed);

    let base = env.base.clone();
    let calls = load(&env, &base, &key, 5, Duration::ZERO);
    wait_until(Duration::from_secs(20), || async {
        mock.received_requests().await.unwrap_or_default().len() == 5
    })
    .await;
    env.spawn_dispatcher_process();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    env.terminate_process(doomed);
    let status = env.wait_exit(doomed, Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(stopping.elapsed() < Duration::from_secs(5));

    let answers = calls.await.unwrap();
    for (status, id, secs) in &answers {
        assert_eq!(*status, 200, "{id}");
        // Handed back after the 0.5 s grace and run again (3 s): far from
        // the 30 s ack wait.
        assert!(*secs < 12.0, "{id} took {secs}s");
    }
    // Called again by the other dispatcher, recorded and billed once.
    assert_eq!(mock.received_requests().await.unwrap().len(), 10);
    recorded_once(&env, &key, &answers).await;
}

#[tokio::test]
async fn a_stopping_ingress_finishes_its_in_flight_requests_and_exits() {
    let mut env = TestEnv::start().await;
    let _mock = slow_upstream(&env, Duration::from_millis(1500)).await;
    let (_, key) = env.add_key("ci").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut ingress = env.role_process("ingress");
    ingress.env("AIGW_LISTEN", &listen);
    let ingress = env.spawn_child(ingress);
    let base = format!("http://{listen}");
    env.wait_ready(&base).await;

    let calls = load(&env, &base, &key, 10, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(600)).await;
    env.terminate_process(ingress);
    let status = env.wait_exit(ingress, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    // Stopped accepting.
    assert!(env.http.get(format!("{base}/health")).send().await.is_err());

    let answers = calls.await.unwrap();
    for (status, id, secs) in &answers {
        assert_eq!(*status, 200, "{id}");
        assert!(*secs < 10.0, "{id} took {secs}s");
    }
    recorded_once(&env, &key, &answers).await;
}

#[tokio::test]
async fn a_stopping_projector_exits_at_a_checkpoint_and_the_next_one_counts_nothing_twice() {
    let mut env = TestEnv::with(Options {
        projector: false,
        ..Options::default()
    })
    .await;
    let _mock = slow_upstream(&env, Duration::ZERO).await;
    let (_, key) = env.add_key("ci").await;
    let mut projector = env.role_process("projector");
    projector.env("AIGW_PROJECTOR_POLL", "20ms");
    let projector = env.spawn_child(projector);

    let base = env.base.clone();
    let first = load(&env, &base, &key, 20, Duration::from_millis(10))
        .await
        .unwrap();
    // Stop it while it is projecting the first requests.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    env.terminate_process(projector);
    let status = env.wait_exit(projector, Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(stopping.elapsed() < Duration::from_secs(5));

    let second = load(&env, &base, &key, 10, Duration::ZERO).await.unwrap();
    env.start_projector();
    let all: Vec<_> = first.into_iter().chain(second).collect();
    assert!(all.iter().all(|(status, _, _)| *status == 200));
    recorded_once(&env, &key, &all).await;
}
