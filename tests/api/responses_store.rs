//! Stored responses of the Responses API against an OpenAI-compatible
//! upstream (wiremock): stored with the outcome, read back, continued
//! with `previous_response_id` (the upstream gets the whole
//! conversation), input items paged, deleted; only the creating key sees
//! one; `store: false` keeps nothing; a second recording stores nothing.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::acceptance::body;
use crate::anthropic_messages::{openai_provider, openai_upstream};
use crate::harness::TestEnv;
use crate::responses::responses;

async fn upstream() -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    mock
}

async fn call(env: &TestEnv, m: Method, key: &str, path: &str) -> (u16, Value) {
    let r = env
        .http
        .request(m, env.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Answers `body` and waits until its outcome (and so its stored
/// response, written in the same transaction) is recorded.
async fn answered(env: &TestEnv, key: &str, body: &Value) -> Value {
    let r = responses(env, key, body).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let id = answer["id"].as_str().unwrap();
    env.wait_recorded(&request_of(id)).await;
    answer
}

/// The request id a response id (`resp_` and 32 hex digits) names.
fn request_of(response_id: &str) -> String {
    Uuid::parse_str(response_id.strip_prefix("resp_").unwrap())
        .unwrap()
        .to_string()
}

async fn stored_events(env: &TestEnv, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'response' AND aggregate_id = $1
         ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stored_response_is_read_continued_listed_and_deleted_by_its_key_only() {
    let env = TestEnv::start().await;
    let mock = upstream().await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("owner").await;
    let (_, other) = env.add_key("other").await;

    let first = answered(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "Say hello", "instructions": "Be brief."}),
    )
    .await;
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(stored_events(&env, &id).await, ["ResponseStored"]);

    // Read back as answered.
    let (status, got) = call(&env, Method::GET, &key, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, first);
    assert_eq!(got["output"][0]["content"][0]["text"], "pong", "{got}");

    // Another key: it does not exist.
    for (m, p) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let (status, got) = call(&env, m, &other, &p).await;
        assert_eq!(status, 404, "{p}: {got}");
        assert_eq!(got["error"]["code"], "response_not_found", "{got}");
    }
    let r = responses(
        &env,
        &other,
        &json!({"model": "gpt-x", "input": "and?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let refused: Value = r.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "previous_response_not_found");
    assert_eq!(refused["error"]["param"], "previous_response_id");

    // Continued: the upstream gets the whole conversation.
    let second = answered(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "Again", "previous_response_id": id}),
    )
    .await;
    assert_eq!(second["previous_response_id"], json!(id));
    let requests = mock.received_requests().await.unwrap();
    let last = body(requests.last().unwrap());
    assert_eq!(
        last["messages"],
        json!([
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "pong"},
            {"role": "user", "content": "Again"},
        ]),
        "{last}"
    );
    // Budgeted and billed as the whole conversation, recorded once.
    assert_eq!(requests.len(), 2);

    // Input items of the continuation: the first turn's input and output,
    // then its own; newest first by default, paged.
    let second_id = second["id"].as_str().unwrap();
    let items = format!("/v1/responses/{second_id}/input_items");
    let (status, page) = call(&env, Method::GET, &key, &format!("{items}?limit=2")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true, "{page}");
    assert_eq!(page["data"][0]["content"][0]["text"], "Again", "{page}");
    assert_eq!(page["data"][1]["role"], "assistant", "{page}");
    let after = page["last_id"].as_str().unwrap();
    let (_, rest) = call(
        &env,
        Method::GET,
        &key,
        &format!("{items}?limit=2&after={after}"),
    )
    .await;
    assert_eq!(rest["has_more"], false, "{rest}");
    assert_eq!(rest["data"][0]["content"][0]["text"], "Say hello", "{rest}");
    let (_, asc) = call(
        &env,
        Method::GET,
        &key,
        &format!("{items}?order=asc&limit=100"),
    )
    .await;
    assert_eq!(asc["data"].as_array().unwrap().len(), 3, "{asc}");
    let (status, _) = call(&env, Method::GET, &key, &format!("{items}?limit=101")).await;
    assert_eq!(status, 400);

    // Deleted: an event; afterwards gone, and no longer a previous id.
    let (status, deleted) = call(&env, Method::DELETE, &key, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    assert_eq!(
        stored_events(&env, &id).await,
        ["ResponseStored", "ResponseDeleted"]
    );
    for m in [Method::GET, Method::DELETE] {
        let (status, _) = call(&env, m, &key, &format!("/v1/responses/{id}")).await;
        assert_eq!(status, 404);
    }
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(mock.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn store_false_and_streams_are_kept_as_asked() {
    let env = TestEnv::start().await;
    let mock = upstream().await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("k").await;

    let unstored = answered(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "hi", "store": false}),
    )
    .await;
    let id = unstored["id"].as_str().unwrap();
    let (status, _) = call(&env, Method::GET, &key, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    assert!(stored_events(&env, id).await.is_empty());

    // A streamed answer is stored as its `response.completed` carried it.
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let completed: Value = text
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|d| d["type"] == "response.completed")
        .expect("response.completed");
    let id = completed["response"]["id"].as_str().unwrap();
    env.wait_recorded(&request_of(id)).await;
    let (status, got) = call(&env, Method::GET, &key, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{got}");
    // (The stream's usage also carries the `cost_usd` the ingress added.)
    let mut streamed = completed["response"].clone();
    streamed["usage"]
        .as_object_mut()
        .unwrap()
        .remove("cost_usd");
    assert_eq!(got, streamed);

    // Unknown ids and bad previous ids, in OpenAI's shape.
    let (status, _) = call(&env, Method::GET, &key, "/v1/responses/resp_nope").await;
    assert_eq!(status, 404);
    let r = responses(
        &env,
        &key,
        &json!({"model": "gpt-x", "input": "x", "previous_response_id": 7}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_second_recording_stores_the_response_not_again() {
    let env = TestEnv::start().await;
    let stores = aigw_runtime::Stores::new(env.pool.clone());
    let request_id = Uuid::now_v7();
    let response_id = aigw_events::response::response_id(request_id);
    let record = || aigw_events::RequestCommand::RecordRequest {
        project_id: None,
        team_id: None,
        key_id: Uuid::nil(),
        model: "m".into(),
        stream: false,
        accepted_at: chrono::Utc::now(),
        route: None,
        attribution: Default::default(),
        attempts: vec![],
        outcome: aigw_events::Outcome::Failed {
            status: 502,
            error_type: "x".into(),
            message: "x".into(),
            usage: aigw_events::Usage::default(),
            usage_estimated: false,
            cost_micros: None,
            price_fallback: false,
            latency_ms: 0,
            at: chrono::Utc::now(),
        },
    };
    let store = |text: &str| aigw_events::ResponseCommand::StoreResponse {
        key_id: Uuid::nil(),
        input: vec![json!({"role": "user", "content": text})],
        response: json!({"id": response_id, "output": []}),
        at: chrono::Utc::now(),
    };
    let meta = aigw_runtime::store::metadata(&[]);
    let id = request_id.to_string();
    let first = stores
        .record_request_and_response(&id, record(), (&response_id, store("first")), &meta)
        .await
        .unwrap();
    let second = stores
        .record_request_and_response(&id, record(), (&response_id, store("second")), &meta)
        .await
        .unwrap();
    assert!(first);
    assert!(!second);
    assert_eq!(stored_events(&env, &response_id).await, ["ResponseStored"]);
    let kept = stores.response(&response_id).await.unwrap().unwrap();
    assert_eq!(kept.input[0]["content"], "first");
}
