//! `/v1/rerank` and `/v1/moderations` go through the same machinery as chat:
//! Cohere's native `/v2/rerank` and the OpenAI-compatible `/rerank` of
//! Jina, SiliconFlow and Voyage, each billed by its own unit (search units
//! or tokens) and held at its worst case; OpenAI's moderation relayed as it
//! came; scopes, budgets, idempotency, jobs and `/stats` as for any request.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, wait_until};
use crate::jobs::{submit_ok, wait_status};
use crate::media::{add, completed, post};

/// A new key with `body`'s settings.
async fn create_key(env: &TestEnv, body: Value) -> String {
    crate::quotas::create_key(env, body).await.1
}

/// A Cohere provider (the preset: `rerank-v3.5` at $2 per 1,000 searches)
/// whose `/v2/rerank` expects `expected` and answers two results.
async fn cohere(env: &TestEnv, expected: Value) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/rerank"))
        .and(header("authorization", "Bearer co-key"))
        .and(body_json(expected))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "rr-1",
            "results": [{"index": 2, "relevance_score": 0.98}, {"index": 0, "relevance_score": 0.12}],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        })))
        .mount(&mock)
        .await;
    add(
        env,
        json!({"preset": "cohere", "api_key": "co-key", "base_url": mock.uri()}),
    )
    .await;
    mock
}

#[tokio::test]
async fn cohere_reranks_natively_billed_per_search_unit_and_shown_in_stats() {
    let env = TestEnv::start().await;
    let mock = cohere(
        &env,
        json!({"model": "rerank-v3.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."],
            "top_n": 2}),
    )
    .await;
    let key = create_key(&env, json!({"name": "rr"})).await;
    let r = post(
        &env,
        &key,
        "/v1/rerank",
        json!({"model": "rerank-v3.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", {"text": "Madrid is in Spain."}, "Paris is the capital."],
            "top_n": 2, "return_documents": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": "rr-1", "model": "rerank-v3.5", "results": [
            {"index": 2, "relevance_score": 0.98, "document": {"text": "Paris is the capital."}},
            {"index": 0, "relevance_score": 0.12, "document": {"text": "Berlin is in Germany."}}],
            "meta": {"billed_units": {"search_units": 1}}})
    );
    assert_eq!(done["usage"]["searches"], 1, "{done}");
    assert_eq!(done["usage_estimated"], false);
    // One search unit at $2 per 1,000.
    assert_eq!(done["cost_micros"], 2_000);
    // Cohere's SDKs call /v2/rerank: the same route.
    let r = post(
        &env,
        &key,
        "/v2/rerank",
        json!({"model": "rerank-v3.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."],
            "top_n": 2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["results"][0],
        json!({"index": 2, "relevance_score": 0.98})
    );
    // What Cohere's v2 rerank cannot express is refused by name.
    let r = post(
        &env,
        &key,
        "/v1/rerank",
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "max_chunks_per_doc": 3}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'max_chunks_per_doc'"),
        "{error}"
    );
    assert_eq!(mock.received_requests().await.unwrap().len(), 2);
    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["searches"] == 2
    })
    .await;
    let stats = env.stats(&key).await;
    assert_eq!(stats["data"][0]["model"], "rerank-v3.5");
    assert_eq!(stats["totals"]["cost_micros"], 4_000);
}

#[tokio::test]
async fn openai_compatible_rerankers_get_the_callers_body_and_bill_tokens() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    // Jina's (and SiliconFlow's) shape.
    Mock::given(method("POST"))
        .and(path("/v1/rerank"))
        .and(header("authorization", "Bearer jina-key"))
        .and(body_json(json!({"model": "jina-reranker-v2-base-multilingual",
            "query": "organic skincare", "documents": ["aloe vera cream", "bold makeup"],
            "top_n": 1, "return_documents": true})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "jina-reranker-v2-base-multilingual",
            "usage": {"total_tokens": 42},
            "results": [{"index": 0, "relevance_score": 0.87, "document": {"text": "aloe vera cream"}}]
        })))
        .expect(1)
        .mount(&mock)
        .await;
    // Voyage's: `top_k` in, `data` out, documents as strings.
    Mock::given(method("POST"))
        .and(path("/v1/rerank"))
        .and(body_json(json!({"model": "rerank-2.5", "query": "q",
            "documents": ["a", "b"], "top_k": 1, "return_documents": true})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "model": "rerank-2.5", "usage": {"total_tokens": 7},
            "data": [{"index": 1, "relevance_score": 0.5, "document": "b"}]
        })))
        .expect(1)
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"name": "jina", "base_url": format!("{}/v1", mock.uri()), "api_key": "jina-key",
            "models": ["jina-reranker-v2-base-multilingual", "rerank-2.5"],
            "prices": {"jina-reranker-v2-base-multilingual": {"input_usd_per_mtok": 1000.0, "output_usd_per_mtok": 0.0}}}),
    )
    .await;
    let key = create_key(&env, json!({"name": "jina"})).await;
    let r = post(
        &env,
        &key,
        "/v1/rerank",
        json!({"model": "jina-reranker-v2-base-multilingual", "query": "organic skincare",
            "documents": ["aloe vera cream", "bold makeup"], "top_n": 1, "return_documents": true,
            "provider": "jina"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["results"],
        json!([{"index": 0, "relevance_score": 0.87, "document": {"text": "aloe vera cream"}}])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 42, "total_tokens": 42})
    );
    // 42 tokens at $1,000 per million.
    assert_eq!(done["cost_micros"], 42_000);

    let r = post(
        &env,
        &key,
        "/v1/rerank",
        json!({"model": "rerank-2.5", "query": "q", "documents": ["a", "b"], "top_k": 1,
            "return_documents": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["results"],
        json!([{"index": 1, "relevance_score": 0.5, "document": {"text": "b"}}])
    );
    // No price for this model: its tokens are recorded, flagged unpriced.
    assert_eq!(done["usage"]["prompt_tokens"], 7);
    assert!(done["cost_micros"].is_null(), "{done}");
}

#[tokio::test]
async fn the_voyage_sdk_reranks_through_aigw_at_cohere_and_at_voyage() {
    let env = TestEnv::start().await;
    // The SDK sends `top_k` and `truncation`: Cohere gets `top_n`.
    let _cohere = cohere(
        &env,
        json!({"model": "rerank-v3.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."],
            "top_n": 2}),
    )
    .await;
    let voyage = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/rerank"))
        .and(body_json(
            json!({"model": "rerank-2.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."],
            "top_k": 2, "truncation": true}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "model": "rerank-2.5", "usage": {"total_tokens": 30},
            "data": [{"index": 2, "relevance_score": 0.9}, {"index": 1, "relevance_score": 0.2}]
        })))
        .expect(1)
        .mount(&voyage)
        .await;
    add(
        &env,
        json!({"name": "voyage", "base_url": format!("{}/v1", voyage.uri()), "api_key": "vo-key",
            "models": ["rerank-2.5"]}),
    )
    .await;
    let key = create_key(&env, json!({"name": "voyage-sdk"})).await;
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/voyage_sdk.py");
    let python = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python");
    let base = format!("{}/v1", env.base);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("VOYAGE_BASE_URL", base)
            .env("VOYAGE_API_KEY", key)
            .env("MODELS", "rerank-v3.5,rerank-2.5")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "rerank-v3.5: [(2, 'Paris is the capital.', 0.98), (0, 'Berlin is in Germany.', 0.12)] 0\n\
         rerank-2.5: [(2, 'Paris is the capital.', 0.9), (1, 'Madrid is in Spain.', 0.2)] 30\n"
    );
}

#[tokio::test]
async fn rerank_bodies_scopes_and_budgets_are_checked_before_any_provider_call() {
    let env = TestEnv::start().await;
    let mock = cohere(
        &env,
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
    )
    .await;
    let key = create_key(&env, json!({"name": "any"})).await;
    let many: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let long_query = "é".repeat(32_769);
    for (body, param) in [
        (json!({"model": "rerank-v3.5", "documents": ["a"]}), "query"),
        (
            json!({"model": "rerank-v3.5", "query": "", "documents": ["a"]}),
            "query",
        ),
        (json!({"model": "rerank-v3.5", "query": "q"}), "documents"),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": []}),
            "documents",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": [1]}),
            "documents",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": [{"title": "a"}]}),
            "documents",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": many}),
            "documents",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": 0}),
            "top_n",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": -1}),
            "top_n",
        ),
        (
            json!({"model": "rerank-v3.5", "query": long_query, "documents": ["a"]}),
            "query",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": 1, "top_k": 1}),
            "top_k",
        ),
        (
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "return_documents": "yes"}),
            "return_documents",
        ),
        (json!({"query": "q", "documents": ["a"]}), "model"),
    ] {
        let r = post(&env, &key, "/v1/rerank", body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    // A key scoped to other models may not rerank.
    let scoped = create_key(
        &env,
        json!({"name": "scoped", "allowed_models": ["gpt-5.4"]}),
    )
    .await;
    let r = post(
        &env,
        &scoped,
        "/v1/rerank",
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
    )
    .await;
    assert_eq!(r.status(), 403);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_allowed");
    // A budget below one search unit ($0.002) holds nothing: refused. Were
    // search units not held, a rerank billed only by them would pass free.
    let poor = create_key(
        &env,
        json!({"name": "poor", "budget_usd": 0.001, "budget_period": "total"}),
    )
    .await;
    let r = post(
        &env,
        &poor,
        "/v1/rerank",
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    assert_eq!(mock.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn moderations_are_relayed_estimated_idempotent_and_run_as_jobs() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    let answer = json!({
        "id": "modr-1", "model": "omni-moderation-latest",
        "results": [{"flagged": true, "categories": {"violence": true},
            "category_scores": {"violence": 0.91},
            "category_applied_input_types": {"violence": ["text"]}}]
    });
    Mock::given(method("POST"))
        .and(path("/v1/moderations"))
        .and(header("authorization", "Bearer sk-mod"))
        .and(body_json(
            json!({"model": "omni-moderation-latest", "input": "I want to hurt them."}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer.clone()))
        .mount(&mock)
        .await;
    add(
        &env,
        json!({"preset": "openai", "api_key": "sk-mod", "base_url": format!("{}/v1", mock.uri())}),
    )
    .await;
    let key = create_key(&env, json!({"name": "mod"})).await;
    let request = || {
        env.http
            .post(env.url("/v1/moderations"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "mod-once")
            .json(&json!({"input": "I want to hurt them."}))
    };
    let r = request().send().await.unwrap();
    assert_eq!(r.status(), 200);
    let done = completed(&env, &r).await;
    assert_eq!(r.json::<Value>().await.unwrap(), answer);
    // OpenAI reports no usage for moderation: estimated, flagged, and free.
    assert_eq!(done["usage_estimated"], true);
    assert!(done["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(done["cost_micros"], 0);
    // The same Idempotency-Key gets the stored answer, not a second call.
    let again = request().send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), answer);
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
    // Bad inputs are 400s naming the field.
    for body in [
        json!({}),
        json!({"input": ""}),
        json!({"input": []}),
        json!({"input": [{"type": "audio", "audio": "x"}]}),
        json!({"input": ["ok", {"type": "text", "text": "mixed"}]}),
    ] {
        let r = post(&env, &key, "/v1/moderations", body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["param"], "input", "{error}");
    }
    // As a job.
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/moderations", "body": {"input": "I want to hurt them."}}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    assert_eq!(job["result"], answer, "{job}");
}

#[tokio::test]
async fn rerank_and_responses_bodies_run_as_jobs() {
    let env = TestEnv::start().await;
    // Kept alive: a dropped mock server goes back to wiremock's pool, reset.
    let _cohere = cohere(
        &env,
        json!({"model": "rerank-v3.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."]}),
    )
    .await;
    let openai = crate::jobs::upstream(&env, 0).await;
    let key = create_key(&env, json!({"name": "jobs"})).await;
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/rerank", "body": {"model": "rerank-v3.5", "query": "capital of France?",
            "documents": ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."]}}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    assert_eq!(job["result"]["results"][0]["index"], 2, "{job}");
    assert_eq!(job["cost_usd"], json!(0.002));

    // A stored Responses body: the job's answer is a response object, kept
    // like one from `/v1/responses`, and a later job may continue from it.
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/responses", "body": {"model": "m", "input": "summarise", "store": true}}),
    )
    .await;
    let job = wait_status(&env, &key, &id, "succeeded").await;
    let result = &job["result"];
    assert_eq!(result["object"], "response", "{job}");
    assert_eq!(
        result["output"][0]["content"][0]["text"],
        "done in the background"
    );
    let response_id = result["id"].as_str().unwrap().to_string();
    let r = env
        .http
        .get(env.url(&format!("/v1/responses/{response_id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = submit_ok(
        &env,
        &key,
        json!({"url": "/v1/responses", "body": {"model": "m", "input": "and shorter",
            "previous_response_id": response_id}}),
    )
    .await;
    wait_status(&env, &key, &id, "succeeded").await;
    let sent: Value = openai.received_requests().await.unwrap()[1]
        .body_json()
        .unwrap();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents,
        ["summarise", "done in the background", "and shorter"],
        "{sent}"
    );
}
