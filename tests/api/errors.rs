//! Every error the API promises, in OpenAI's error JSON with the right status.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, free_port, user};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let ctype = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"].get("code").is_some(), "{body}");
    (status, body)
}

#[tokio::test]
async fn bad_requests_are_400_401_404_413() {
    let env = TestEnv::start().await;
    env.add_provider("p", "http://127.0.0.1:9/v1", &["m"]).await;
    let (_, key) = env.add_key("ci").await;
    let url = env.url("/v1/chat/completions");
    let post = |body: &'static str| {
        env.http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, param) in [
        ("{not json", Value::Null),
        ("[1,2]", Value::Null),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            json!("model"),
        ),
        (r#"{"model":"m"}"#, json!("messages")),
        (
            r#"{"model":42,"messages":[{"role":"user","content":"x"}]}"#,
            json!("model"),
        ),
        (r#"{"model":"m","messages":"hello"}"#, json!("messages")),
        (
            r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
            json!("stream"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":"ten"}"#,
            json!("max_tokens"),
        ),
    ] {
        let (status, err) = error_of(post(body).await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert_eq!(err["error"]["param"], param, "{body}");
    }

    // No key, a wrong key, both header styles.
    let ok = json!({"model": "m", "messages": user("x")});
    let (status, err) = error_of(env.http.post(&url).json(&ok).send().await.unwrap()).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (401, json!("missing_api_key"))
    );
    let (status, err) = error_of(env.chat("aig_wrong", ok.clone()).await).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (401, json!("invalid_api_key"))
    );
    let r = env
        .http
        .post(&url)
        .header("x-api-key", "aig_wrong")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A model nobody serves; a provider that does not exist.
    let (status, err) = error_of(
        env.chat(&key, json!({"model": "nope", "messages": user("x")}))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, json!("model_not_found"))
    );
    let (status, err) = error_of(
        env.chat(
            &key,
            json!({"model": "m", "messages": user("x"), "provider": "ghost"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, json!("provider_not_found"))
    );

    // Over the body limit (256 KiB in tests).
    let big = "x".repeat(300 * 1024);
    let (status, err) = error_of(
        env.chat(&key, json!({"model": "m", "messages": user(&big)}))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (413, json!("request_too_large"))
    );

    // Unknown paths and methods.
    let (status, _) = error_of(env.http.get(env.url("/v1/nope")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(env.http.get(&url).bearer_auth(&key).send().await.unwrap()).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn upstream_failures_map_to_openai_errors() {
    let env = TestEnv::with(Options {
        upstream_timeout: Duration::from_millis(800),
        ..Options::default()
    })
    .await;
    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {"message": "This model's maximum context length is 8 tokens.",
                      "type": "invalid_request_error", "param": "messages",
                      "code": "context_length_exceeded"}
        })))
        .mount(&bad)
        .await;
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&down)
        .await;
    let limited = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}})),
        )
        .mount(&limited)
        .await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&slow)
        .await;
    env.add_provider("bad", &format!("{}/v1", bad.uri()), &["bad"])
        .await;
    env.add_provider("down", &format!("{}/v1", down.uri()), &["down"])
        .await;
    env.add_provider("limited", &format!("{}/v1", limited.uri()), &["limited"])
        .await;
    env.add_provider("slow", &format!("{}/v1", slow.uri()), &["slow"])
        .await;
    let refused = format!("http://127.0.0.1:{}/v1", free_port());
    env.add_provider("refused", &refused, &["refused"]).await;
    let (_, key) = env.add_key("ci").await;
    let call = |model: &str| env.chat(&key, json!({"model": model, "messages": user("x")}));

    let (status, err) = error_of(call("bad").await).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "context_length_exceeded");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length")
    );

    let (status, err) = error_of(call("down").await).await;
    assert_eq!(status, 502);
    assert_eq!(err["error"]["type"], "upstream_error");

    let response = call("limited").await;
    assert_eq!(response.headers()["retry-after"], "7");
    let (status, _) = error_of(response).await;
    assert_eq!(status, 429);

    let (status, err) = error_of(call("slow").await).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (504, json!("upstream_timeout"))
    );

    let (status, err) = error_of(call("refused").await).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (502, json!("upstream_unreachable"))
    );

    // No error message carries the provider's credential.
    for model in ["bad", "down", "limited", "slow", "refused"] {
        let text = call(model).await.text().await.unwrap();
        assert!(!text.contains("sk-upstream-secret"), "{text}");
    }
}

#[tokio::test]
async fn admin_api_needs_its_token_and_is_off_without_one() {
    let env = TestEnv::start().await;
    let r = env
        .http
        .get(env.url("/admin/api/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .http
        .get(env.url("/admin/api/keys"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({"name": "x", "base_url": "ftp://nope", "models": ["m"]}))
        .send()
        .await
        .unwrap();
    let (status, _) = error_of(r).await;
    assert_eq!(status, 400);
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({"name": "x", "base_url": "http://h/v1", "models": ["m"], "typo": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = env
        .admin(reqwest::Method::DELETE, "/admin/api/keys/not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let off = TestEnv::with(Options {
        admin_token: None,
        dispatcher: false,
        projector: false,
        ..Options::default()
    })
    .await;
    let r = off
        .http
        .get(off.url("/admin/api/keys"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(r).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (403, json!("admin_disabled"))
    );
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let env = TestEnv::start().await;
    let r = env.http.get(env.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = env.http.get(env.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    let r = env
        .http
        .request(reqwest::Method::OPTIONS, env.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let text = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("aigw_http_requests_total"), "{text}");
}

/// Found by schemathesis (`tests/api/openapi.rs`): a path parameter that is
/// not UTF-8 and a query value out of its type's range were answered by
/// axum's extractors as plain text, not OpenAI's error JSON.
#[tokio::test]
async fn extractor_rejections_are_openai_errors() {
    let env = TestEnv::start().await;
    let (_, key) = env.add_key("ci").await;
    for path in [
        "/admin/api/keys/%FF",
        "/admin/api/providers/%C3%28/health",
        "/admin/api/aliases/%FF",
        "/admin/api/jobs?limit=9223372036854775808",
        "/admin/api/jobs?limit=ten",
    ] {
        let r = env.admin(reqwest::Method::GET, path).send().await.unwrap();
        let (status, body) = error_of(r).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{path}");
    }
    for path in [
        "/v1/jobs/%FF",
        "/v1/jobs?limit=9223372036854775808",
        "/v1/jobs?after=x&limit=-",
    ] {
        let r = env
            .http
            .get(env.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(r).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}
