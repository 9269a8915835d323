//! A key's `max_concurrency`: requests in flight at once, held across
//! ingress replicas, freed however a request ends, streams included.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::harness::{TestEnv, completion, sse_data, user, wait_until};
use crate::upstream::{self, Script};

/// An OpenAI-compatible upstream that answers after `delay` and counts how
/// many calls it has at once (wiremock cannot tell).
#[derive(Clone, Default)]
struct Counting {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

async fn slow_chat(State((count, delay)): State<(Counting, Duration)>) -> axum::Json<Value> {
    count.calls.fetch_add(1, Ordering::SeqCst);
    let now = count.now.fetch_add(1, Ordering::SeqCst) + 1;
    count.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    count.now.fetch_sub(1, Ordering::SeqCst);
    axum::Json(completion("m", "slowly", 5, 5))
}

async fn counting_upstream(delay: Duration) -> (String, Counting) {
    let count = Counting::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(slow_chat))
        .with_state((count.clone(), delay));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), count)
}

async fn create_key(env: &TestEnv, body: Value) -> (String, String, Value) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    (
        v["id"].as_str().unwrap().into(),
        v["key"].as_str().unwrap().into(),
        v,
    )
}

async fn own_key(env: &TestEnv, key: &str) -> Value {
    env.http
        .get(env.url("/v1/key"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until no request of the key holds a slot.
async fn wait_all_freed(env: &TestEnv, key: &str) {
    wait_until(Duration::from_secs(20), || async {
        own_key(env, key).await["in_flight"] == 0
    })
    .await;
}

#[tokio::test]
async fn max_concurrency_holds_across_two_replicas() {
    let mut env = TestEnv::start().await;
    let second = env.start_ingress().await;
    let (base_url, count) = counting_upstream(Duration::from_millis(1500)).await;
    env.add_provider("slow", &base_url, &["m"]).await;
    let (_, key, view) = create_key(&env, json!({"name": "three", "max_concurrency": 3})).await;
    assert_eq!(view["limits"]["max_concurrency"], 3);

    let bases = [env.base.clone(), second];
    let mut calls = Vec::new();
    for i in 0..10 {
        let url = format!("{}/v1/chat/completions", bases[i % 2]);
        let (http, key) = (env.http.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "messages": user("hi")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").cloned();
            let body: Value = r.json().await.unwrap();
            (status, retry_after, body)
        }));
    }
    let mut ok = 0;
    for call in calls {
        let (status, retry_after, body) = call.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(
                    body["error"]["code"], "concurrency_limit_exceeded",
                    "{body}"
                );
                assert!(retry_after.is_some());
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(count.most.load(Ordering::SeqCst) <= 3);
    assert_eq!(ok, count.calls.load(Ordering::SeqCst));
    // All ten arrived while the first three ran (1.5 s each).
    assert_eq!(ok, 3);

    // Every slot is given back: three more at once all pass.
    wait_all_freed(&env, &key).await;
    let again = futures::future::join_all((0..3).map(|i| {
        let url = format!("{}/v1/chat/completions", bases[i % 2]);
        env.http
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"model": "m", "messages": user("again")}))
            .send()
    }))
    .await;
    for r in again {
        assert_eq!(r.unwrap().status(), 200);
    }
    assert!(count.most.load(Ordering::SeqCst) <= 3);
}

#[tokio::test]
async fn a_stream_holds_its_slot_until_relayed_and_a_refusal_costs_nothing() {
    let env = TestEnv::start().await;
    let upstream = upstream::start(Script {
        pieces: (0..8).map(|i| format!("w{i} ")).collect(),
        delay: Duration::from_millis(200),
        finish: true,
        break_after: None,
    })
    .await;
    env.add_provider("streaming", &upstream.base_url, &["m"])
        .await;
    let (id, key, _) = create_key(
        &env,
        // Room for exactly the three calls below that are let in.
        json!({"name": "one", "max_concurrency": 1, "rpm": 3}),
    )
    .await;

    let stream = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("hi"), "stream": true}),
        )
        .await;
    assert_eq!(stream.status(), 200);
    // The stream has started (its headers came) and runs ~1.6 s more.
    assert_eq!(own_key(&env, &key).await["in_flight"], 1);
    let refused = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("me too"), "stream": true}),
        )
        .await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "concurrency_limit_exceeded");
    let data = sse_data(&stream.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");

    wait_all_freed(&env, &key).await;
    // (This upstream only streams.)
    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("now"), "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sse_data(&r.text().await.unwrap()).last().unwrap(), "[DONE]");

    // A caller who leaves mid-stream frees the slot too.
    let stream = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("bye"), "stream": true}),
        )
        .await;
    // (The refused call took nothing from the rate limit, or this third
    // call in the minute would be over `rpm`.)
    assert_eq!(stream.status(), 200);
    drop(stream);
    wait_all_freed(&env, &key).await;

    // Without the limit, nothing is counted.
    let r = env
        .admin(reqwest::Method::PATCH, &format!("/admin/api/keys/{id}"))
        .json(&json!({"max_concurrency": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view = own_key(&env, &key).await;
    assert!(view["limits"]["max_concurrency"].is_null());
    assert!(view.get("in_flight").is_none());
    let bad = env
        .admin(reqwest::Method::PATCH, &format!("/admin/api/keys/{id}"))
        .json(&json!({"max_concurrency": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
