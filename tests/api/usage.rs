//! `/admin/api/usage`: usage across keys and the request log, as the admin
//! web UI reads them.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

async fn get(env: &TestEnv, path: &str) -> (u16, Value) {
    let r = env.admin(reqwest::Method::GET, path).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn usage_and_the_request_log_cover_every_key() {
    let env = TestEnv::start().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m1", "ok", 10, 5)))
        .mount(&upstream)
        .await;
    env.add_provider("p1", &upstream.uri(), &["m1"]).await;
    let (a, key_a) = env.add_key("a").await;
    let (_, key_b) = env.add_key("b").await;
    for key in [&key_a, &key_b, &key_b] {
        let r = env
            .chat(key, json!({"model": "m1", "messages": user("hi")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    wait_until(Duration::from_secs(30), || async {
        get(&env, "/admin/api/usage").await.1["totals"]["requests"] == 3
    })
    .await;
    let (_, usage) = get(&env, "/admin/api/usage").await;
    assert_eq!(usage["totals"]["total_tokens"], 45);
    assert_eq!(usage["data"].as_array().unwrap().len(), 2, "{usage}");
    let (_, empty) = get(&env, "/admin/api/usage?to=2000-01-01").await;
    assert_eq!(empty["totals"]["requests"], 0);

    let (_, log) = get(&env, "/admin/api/usage/requests").await;
    let rows = log["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(rows[0]["provider"], "p1");
    let (_, only_a) = get(&env, &format!("/admin/api/usage/requests?key_id={a}")).await;
    assert_eq!(only_a["data"].as_array().unwrap().len(), 1);
    let (_, errors) = get(&env, "/admin/api/usage/requests?status=error").await;
    assert_eq!(errors["data"].as_array().unwrap().len(), 0);
    let (status, _) = get(&env, "/admin/api/usage/requests?status=maybe").await;
    assert_eq!(status, 400);

    let id = rows[0]["id"].as_str().unwrap();
    let (_, detail) = get(&env, &format!("/admin/api/usage/requests/{id}")).await;
    let types: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"RequestAccepted"));
    assert_eq!(types.last(), Some(&"RequestCompleted"));
    let (status, _) = get(
        &env,
        &format!("/admin/api/usage/requests/{}", uuid::Uuid::now_v7()),
    )
    .await;
    assert_eq!(status, 404);

    let r = env
        .http
        .get(env.url("/admin/api/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the usage API needs the admin token");
}
