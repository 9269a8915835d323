//! Full queues: the requests and jobs streams' limits (503 `queue_full`,
//! applied to streams that already exist) and the cap on a key's queued
//! jobs (429).

use std::time::Duration;

use aigw_events::Names;
use aigw_runtime::nats::StreamLimits;
use async_nats::jetstream::stream::DiscardPolicy;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user, wait_until};

/// A provider for `m` that is never reached (no dispatcher runs): requests
/// and jobs stay queued.
async fn provider(env: &TestEnv) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 1, 1)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    mock
}

fn queue_only() -> Options {
    Options {
        dispatcher: false,
        projector: false,
        request_timeout: Duration::from_secs(20),
        ..Options::default()
    }
}

async fn jetstream(env: &TestEnv) -> async_nats::jetstream::Context {
    let client = async_nats::connect(&env.common.nats_url).await.unwrap();
    async_nats::jetstream::new(client)
}

fn names(env: &TestEnv) -> Names {
    Names::new(&env.common.namespace).unwrap()
}

async fn submit_job(env: &TestEnv, base: &str, key: &str) -> reqwest::Response {
    env.http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "messages": user("later")}))
        .send()
        .await
        .unwrap()
}

async fn expect_queue_full(r: reqwest::Response) {
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
}

/// Starts an ingress replica of `env` with other stream limits (which it
/// applies to the existing streams); returns its base URL.
async fn replica_with(env: &mut TestEnv, streams: StreamLimits) -> (String, CancellationToken) {
    let mut common = env.common.clone();
    common.streams = streams;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (args, stop) = (env.ingress_args(), CancellationToken::new());
    let token = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = aigw_ingress::run(common, args, listener, token).await {
            panic!("ingress failed: {e}");
        }
    });
    env.wait_ready(&base).await;
    (base, stop)
}

#[tokio::test]
async fn a_full_requests_stream_answers_503_and_existing_streams_get_the_limits() {
    let mut env = TestEnv::with(queue_only()).await;
    let _mock = provider(&env).await;
    let (_, key) = env.add_key("flood").await;
    let js = jetstream(&env).await;
    let stream_name = names(&env).requests_stream();

    // A stream as an older aigw made it: no limits, discarding old messages.
    let mut config = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.max_messages = -1;
    config.max_bytes = -1;
    config.discard = DiscardPolicy::Old;
    js.update_stream(&config).await.unwrap();

    // A replica with a limit of two queued requests brings the stream to it.
    let limits = StreamLimits {
        requests_max_msgs: 2,
        requests_max_bytes: 1 << 20,
        ..env.common.streams.clone()
    };
    let (second, _stop) = replica_with(&mut env, limits).await;
    let config = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(config.max_messages, 2);
    assert_eq!(config.max_bytes, 1 << 20);
    assert_eq!(config.discard, DiscardPolicy::New);

    // Two requests wait in the queue (nobody dispatches them)...
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, key) = (
                env.http.clone(),
                env.url("/v1/chat/completions"),
                key.clone(),
            );
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(key)
                    .json(&json!({"model": "m", "messages": user("queued")}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    wait_until(Duration::from_secs(20), || async {
        let mut stream = js.get_stream(&stream_name).await.unwrap();
        stream.info().await.unwrap().state.messages == 2
    })
    .await;
    // ...so a third is refused at once, by either replica, and the old
    // messages stay (they are not discarded to make room).
    for base in [env.base.clone(), second] {
        let r = env
            .http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "m", "messages": user("one too many")}))
            .send()
            .await
            .unwrap();
        expect_queue_full(r).await;
    }
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 504);
    }
}

#[tokio::test]
async fn a_full_jobs_stream_answers_503() {
    let env = TestEnv::with(Options {
        streams: StreamLimits {
            jobs_max_msgs: 2,
            ..Options::default().streams
        },
        ..queue_only()
    })
    .await;
    let _mock = provider(&env).await;
    let (_, key) = env.add_key("batch").await;
    for _ in 0..2 {
        assert_eq!(submit_job(&env, &env.base, &key).await.status(), 202);
    }
    expect_queue_full(submit_job(&env, &env.base, &key).await).await;
    // The refused job was not stored either.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn a_key_may_have_only_so_many_jobs_queued() {
    let env = TestEnv::with(Options {
        max_queued_jobs_per_key: 3,
        ..queue_only()
    })
    .await;
    let _mock = provider(&env).await;
    let (_, key) = env.add_key("eager").await;
    let (_, other) = env.add_key("other").await;

    // Ten at once: exactly three get in, however they interleave.
    let submissions =
        futures::future::join_all((0..10).map(|_| submit_job(&env, &env.base, &key))).await;
    let mut accepted = Vec::new();
    for r in submissions {
        match r.status().as_u16() {
            202 => accepted.push(
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "too_many_queued_jobs", "{body}");
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!(accepted.len(), 3);

    // Another key is not affected; a cancelled job makes room.
    assert_eq!(submit_job(&env, &env.base, &other).await.status(), 202);
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{}", accepted[0])))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(submit_job(&env, &env.base, &key).await.status(), 202);
    assert_eq!(submit_job(&env, &env.base, &key).await.status(), 429);
}
