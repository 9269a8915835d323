//! `POST /admin/api/providers/{id}/test` ("test connection"): the check is
//! signed with every secret the provider's real calls are signed with.

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv};

const MODEL: &str = "amazon.nova-pro-v1:0";

/// A Bedrock provider with temporary AWS credentials works in production
/// (every call carries `x-amz-security-token`), so its connection test must
/// pass too: it used to open only the secret access key and fail with the
/// refusal AWS gives a signature without its session token.
#[tokio::test]
async fn bedrock_temporary_credentials_pass_the_connection_test() {
    let env = TestEnv::start().await;
    let bedrock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/[^/]+/converse$"))
        .and(header("x-amz-security-token", "the-session-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "p"}]}},
            "stopReason": "max_tokens",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        })))
        .expect(1)
        .mount(&bedrock)
        .await;
    // What AWS answers a request signed with temporary credentials but
    // sent without their session token.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"message": "The security token included in the request is invalid."}),
        ))
        .with_priority(10)
        .mount(&bedrock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"preset": "bedrock", "base_url": bedrock.uri(), "region": "us-east-1",
            "aws_access_key_id": "ASIATEMPORARY", "aws_secret_access_key": "the-secret",
            "aws_session_token": "the-session-token", "models": [MODEL]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/providers/{id}/test"),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["check"], "chat", "{body}");
    assert_eq!(body["model"], MODEL, "{body}");
    assert_eq!(body["provider"], created["name"], "{body}");
    assert!(body["latency_ms"].is_u64(), "{body}");
    let text = body.to_string();
    assert!(!text.contains("the-secret") && !text.contains("the-session-token"));
}

/// The check runs on a dispatcher: with none running, the admin hears so
/// at once, as OpenAI's error JSON, rather than waiting.
#[tokio::test]
async fn the_connection_test_without_a_dispatcher_is_a_clear_504() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        ..Options::default()
    })
    .await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&upstream)
        .await;
    let id = env
        .add_provider("lonely", &format!("{}/v1", upstream.uri()), &["m"])
        .await;
    let started = std::time::Instant::now();
    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/providers/{id}/test"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(body["error"]["code"], "no_dispatcher", "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
