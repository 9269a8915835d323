//! Egress to URLs that no admin chose: the output files of async image
//! providers (Replicate here; Runway shares the same fetch) are fetched for
//! `b64_json` through the public-only client, never following a redirect.
//! An image that cannot be fetched is answered as its URL (it was made and
//! paid for), exactly as for a file host that is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv};

/// A local listener that only counts the connections made to it.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}"), accepted)
}

/// A Replicate mock whose prediction of `model` succeeds at once with
/// `outputs` as its files.
async fn replicate(env: &TestEnv, model: &str, outputs: &[String]) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/models/{model}/predictions")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "p1", "status": "succeeded", "output": outputs
        })))
        .expect(1)
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({"preset": "replicate", "api_key": "r8_k",
            "base_url": format!("{}/v1", mock.uri())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

async fn generate(env: &TestEnv, key: &str, model: &str, n: u64) -> (u16, Value, Value) {
    let r = env
        .http
        .post(env.url("/v1/images/generations"))
        .bearer_auth(key)
        .json(&json!({"model": model, "prompt": "a fox", "n": n, "response_format": "b64_json"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    let events = env.wait_recorded(&id).await;
    (status, body, events.last().unwrap().1.clone())
}

#[tokio::test]
async fn provider_output_urls_on_private_addresses_are_never_connected_to() {
    let env = TestEnv::with(Options {
        allow_private_egress: false,
        ..Options::default()
    })
    .await;
    let (host, accepted) = counting_listener().await;
    let port = host.rsplit(':').next().unwrap().to_string();
    let outputs = vec![
        format!("{host}/out.png"),
        format!("http://localhost:{port}/out.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/out.png"),
    ];
    let model = "black-forest-labs/flux-dev";
    let _mock = replicate(&env, model, &outputs).await;
    let (_, key) = env.add_key("img").await;
    let (status, body, completed) = generate(&env, &key, model, 3).await;
    assert_eq!(status, 200, "{body}");
    let urls: Vec<Value> = outputs.iter().map(|u| json!({"url": u})).collect();
    assert_eq!(body["data"], json!(urls));
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // Made (and paid for) all the same.
    assert_eq!(completed["RequestCompleted"]["usage"]["images"], 3);
}

#[tokio::test]
async fn provider_output_redirects_are_not_followed() {
    // Private addresses allowed (the mocks are local): redirects still not.
    let env = TestEnv::start().await;
    let files = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/files/moved.png"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/files/internal.png", files.uri())),
        )
        .expect(1)
        .mount(&files)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/internal.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"\x89PNG".to_vec(), "image/png"))
        .expect(0)
        .named("the redirect's target")
        .mount(&files)
        .await;
    let moved = format!("{}/files/moved.png", files.uri());
    let model = "black-forest-labs/flux-schnell";
    let _mock = replicate(&env, model, std::slice::from_ref(&moved)).await;
    let (_, key) = env.add_key("img").await;
    let (status, body, completed) = generate(&env, &key, model, 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([{"url": moved}]));
    assert_eq!(completed["RequestCompleted"]["usage"]["images"], 1);
    // A followed redirect would have been fetched before the answer: the
    // target's `expect(0)` is checked when the mock drops.
}
