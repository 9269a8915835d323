//! Azure OpenAI providers whose deployments are models, through the real
//! HTTP API: each deployment called at its own URL (or, on the v1 API, as
//! the body's `model`), billed at the price of the model it serves, reached
//! by its name or by its model when exactly one deployment serves it; a
//! deployment whose model is not said served unpriced; a provider stored
//! before deployments existed still served; scopes, holds and limits
//! following each deployment's model. The mocks speak Azure's wire format:
//! `api-key` header, `/openai/deployments/{deployment}/chat/completions` with
//! `api-version`, or `/openai/v1/chat/completions`, and Azure's
//! content-filter annotations in the answers.

use std::time::Duration;

use aigw_runtime::crypto::{Binding, CredentialField, Sealer};
use aigw_runtime::registry::{self, KIND_PROVIDERS};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{MASTER_KEY, TestEnv, sse_data, user, wait_until};

const API_KEY: &str = "az-secret-key";
const API_VERSION: &str = "2024-10-21";

/// A chat completion as Azure answers it (content-filter annotations on
/// the prompt and on each choice).
fn azure_completion(model: &str, prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-az",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "system_fingerprint": "fp_az",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
            "hate": {"filtered": false, "severity": "safe"}}}],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("from {model}"), "refusal": null},
            "finish_reason": "stop",
            "logprobs": null,
            "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}},
        }],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    })
}

/// Azure's dated API for one deployment: its URL, the API version and the
/// `api-key` header, answering with `usage`.
async fn deployment(server: &MockServer, name: &str, model: &str, usage: (u64, u64), calls: u64) {
    Mock::given(method("POST"))
        .and(path(format!("/openai/deployments/{name}/chat/completions")))
        .and(query_param("api-version", API_VERSION))
        .and(header("api-key", API_KEY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(azure_completion(model, usage.0, usage.1)),
        )
        .expect(calls)
        .named(name)
        .mount(server)
        .await;
}

async fn add_azure(env: &TestEnv, body: Value) -> Value {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn key_with(env: &TestEnv, body: Value) -> String {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn chat(env: &TestEnv, key: &str, model: &str) -> (u16, Value) {
    let r = env
        .chat(key, json!({"model": model, "messages": user("Hello")}))
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn model_ids(env: &TestEnv, key: &str) -> Vec<String> {
    let models: Value = env
        .http
        .get(env.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// The key's `/stats` once it shows `requests` requests.
async fn stats_after(env: &TestEnv, key: &str, requests: i64) -> Value {
    wait_until(Duration::from_secs(60), || async {
        env.stats(key).await["totals"]["requests"] == requests
    })
    .await;
    env.stats(key).await
}

/// The `/stats` row of `model` (the id the provider was called with: for
/// Azure, the deployment).
fn row<'a>(stats: &'a Value, model: &str) -> &'a Value {
    stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no row for {model}: {stats}"))
}

/// Micro-dollars of `prompt` and `completion` tokens at USD-per-million
/// rates given in micro-dollars per million, rounded up as aigw does.
fn micros(prompt: i64, completion: i64, input: i64, output: i64) -> i64 {
    (prompt * input + completion * output + 999_999) / 1_000_000
}

/// gpt-5.4 in the Azure preset's catalog: $2.50 in, $15 out per million.
const GPT54: (i64, i64) = (2_500_000, 15_000_000);
/// The admin's price for gpt-4o-mini (not in the catalog): $0.15 / $0.60.
const MINI: (i64, i64) = (150_000, 600_000);

#[tokio::test]
async fn two_deployments_each_at_its_own_url_billed_at_its_models_price() {
    let env = TestEnv::start().await;
    let server = MockServer::start().await;
    // Two calls by the deployment's name, one by its model's.
    deployment(&server, "my-gpt4o-mini", "gpt-4o-mini", (1_000, 500), 2).await;
    deployment(&server, "prod-5", "gpt-5.4", (2_000, 300), 2).await;
    let created = add_azure(
        &env,
        json!({
            "preset": "azure",
            "name": "azure-east",
            "api_key": API_KEY,
            "base_url": server.uri(),
            "deployments": {"my-gpt4o-mini": "gpt-4o-mini", "prod-5": "gpt-5.4"},
            "prices": {"gpt-4o-mini": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}},
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let shown: Value = env
        .admin(reqwest::Method::GET, &format!("/admin/api/providers/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shown["deployments"],
        json!({"my-gpt4o-mini": "gpt-4o-mini", "prod-5": "gpt-5.4"})
    );
    assert_eq!(shown["models"], json!(["my-gpt4o-mini", "prod-5"]));
    assert_eq!(shown["prices"]["prod-5"]["output_usd_per_mtok"], 15.0);
    assert_eq!(shown["prices"]["my-gpt4o-mini"]["input_usd_per_mtok"], 0.15);

    let key = key_with(&env, json!({"name": "azure"})).await;
    // Deployment names, and model names one deployment serves; not the
    // preset's other catalog model.
    let mut listed = model_ids(&env, &key).await;
    listed.sort();
    assert_eq!(
        listed,
        ["gpt-4o-mini", "gpt-5.4", "my-gpt4o-mini", "prod-5"]
    );
    for (model, answered_by) in [
        ("my-gpt4o-mini", "gpt-4o-mini"),
        ("prod-5", "gpt-5.4"),
        ("gpt-5.4", "gpt-5.4"),
        ("gpt-4o-mini", "gpt-4o-mini"),
    ] {
        let (status, body) = chat(&env, &key, model).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("from {answered_by}")
        );
    }
    let (status, body) = chat(&env, &key, "gpt-5.4-mini").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");

    // Azure's wire format: the api-key header only, and the deployment as
    // the body's model.
    for request in server.received_requests().await.unwrap() {
        assert!(request.headers.get("authorization").is_none());
        let deployment = request.url.path().split('/').nth(3).unwrap().to_string();
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["model"], deployment.as_str());
    }

    // Each billed at its model's price, to the micro-dollar, by deployment
    // whichever name the caller used.
    let stats = stats_after(&env, &key, 4).await;
    let mini = micros(1_000, 500, MINI.0, MINI.1);
    let five = micros(2_000, 300, GPT54.0, GPT54.1);
    assert_eq!((mini, five), (450, 9_500));
    for (deployment, cost) in [("my-gpt4o-mini", mini), ("prod-5", five)] {
        let r = row(&stats, deployment);
        assert_eq!(r["requests"], 2, "{deployment}: {r}");
        assert_eq!(r["cost_micros"], 2 * cost, "{deployment}: {r}");
        assert_eq!(r["unpriced_requests"], 0, "{deployment}: {r}");
    }
    assert_eq!(stats["totals"]["cost_micros"], 2 * mini + 2 * five);
}

#[tokio::test]
async fn the_v1_api_sends_each_deployment_as_the_model_in_the_body() {
    let env = TestEnv::start().await;
    let server = MockServer::start().await;
    for (name, model) in [("my-gpt4o-mini", "gpt-4o-mini"), ("prod-5", "gpt-5.4")] {
        Mock::given(method("POST"))
            .and(path("/openai/v1/chat/completions"))
            .and(header("api-key", API_KEY))
            .and(body_partial_json(json!({"model": name, "stream": false})))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(azure_completion(model, 1_000, 100)),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    // A streamed answer as Azure sends it: a first chunk with only the
    // prompt's filter results, the usage in the last one.
    let stream = [
        json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
               "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.4",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "streamed"},
                            "finish_reason": null, "content_filter_results": {}}]}),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.4",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3_000, "completion_tokens": 700, "total_tokens": 3_700}}),
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .collect::<String>()
        + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .and(header("api-key", API_KEY))
        .and(body_partial_json(
            json!({"model": "prod-5", "stream": true}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(stream),
        )
        .expect(1)
        .mount(&server)
        .await;
    add_azure(
        &env,
        json!({
            "preset": "azure",
            "api_key": API_KEY,
            "base_url": format!("{}/openai/v1", server.uri()),
            "deployments": {"my-gpt4o-mini": "gpt-4o-mini", "prod-5": "gpt-5.4"},
            "prices": {"my-gpt4o-mini": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}},
        }),
    )
    .await;
    let key = key_with(&env, json!({"name": "v1"})).await;
    for model in ["gpt-5.4", "my-gpt4o-mini"] {
        let r = env
            .chat(
                &key,
                json!({"model": model, "messages": user("Hello"), "stream": false}),
            )
            .await;
        assert_eq!(r.status(), 200, "{model}: {}", r.text().await.unwrap());
    }
    let r = env
        .chat(
            &key,
            json!({"model": "prod-5", "messages": user("Hello"), "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().any(|e| e.contains("streamed")), "{events:?}");
    for request in server.received_requests().await.unwrap() {
        assert!(
            request.url.query().is_none(),
            "no api-version on the v1 API"
        );
    }

    let stats = stats_after(&env, &key, 3).await;
    assert_eq!(
        row(&stats, "my-gpt4o-mini")["cost_micros"],
        micros(1_000, 100, MINI.0, MINI.1)
    );
    // "gpt-5.4", and "prod-5" streamed.
    assert_eq!(
        row(&stats, "prod-5")["cost_micros"],
        micros(1_000, 100, GPT54.0, GPT54.1) + micros(3_000, 700, GPT54.0, GPT54.1)
    );
    assert_eq!(row(&stats, "prod-5")["estimated_requests"], 0);
}

#[tokio::test]
async fn a_model_two_deployments_serve_is_refused_naming_them_and_scopes_take_either_name() {
    let env = TestEnv::start().await;
    let server = MockServer::start().await;
    deployment(&server, "east", "gpt-5.4", (10, 10), 4).await;
    deployment(&server, "west", "gpt-5.4", (10, 10), 1).await;
    deployment(&server, "mini", "gpt-5.4-mini", (10, 10), 0).await;
    let created = add_azure(
        &env,
        json!({
            "preset": "azure",
            "api_key": API_KEY,
            "base_url": server.uri(),
            "deployments": {"east": "gpt-5.4", "west": "gpt-5.4", "mini": "gpt-5.4-mini"},
        }),
    )
    .await;
    // Another provider serving the model does not make the name less
    // ambiguous (and, added later, comes after Azure in priority order).
    let direct = MockServer::start().await;
    env.add_provider("direct", &direct.uri(), &["gpt-5.4"])
        .await;
    let open = key_with(&env, json!({"name": "open"})).await;

    // Ambiguous: a 400 naming both deployments, nothing called.
    let (status, body) = chat(&env, &open, "gpt-5.4").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "ambiguous_model");
    assert_eq!(body["error"]["param"], "model");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("east") && message.contains("west"),
        "{message}"
    );
    let mut listed = model_ids(&env, &open).await;
    listed.sort();
    assert_eq!(listed, ["east", "gpt-5.4-mini", "mini", "west"]);
    let (status, body) = chat(&env, &open, "east").await;
    assert_eq!(status, 200, "{body}");

    // Scopes may name the model: every deployment serving it...
    let by_model = key_with(
        &env,
        json!({"name": "by-model", "allowed_models": ["gpt-5.4"]}),
    )
    .await;
    for model in ["east", "west"] {
        let (status, body) = chat(&env, &by_model, model).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    for model in ["mini", "gpt-5.4-mini"] {
        let (status, body) = chat(&env, &by_model, model).await;
        assert_eq!(status, 403, "{model}: {body}");
        assert_eq!(body["error"]["code"], "model_not_allowed");
    }
    let mut listed = model_ids(&env, &by_model).await;
    listed.sort();
    assert_eq!(listed, ["east", "west"]);
    // ...or a deployment: that one only.
    let by_deployment = key_with(
        &env,
        json!({"name": "by-deployment", "allowed_models": ["east"]}),
    )
    .await;
    let (status, body) = chat(&env, &by_deployment, "east").await;
    assert_eq!(status, 200, "{body}");
    for model in ["west", "mini"] {
        let (status, body) = chat(&env, &by_deployment, model).await;
        assert_eq!(status, 403, "{model}: {body}");
    }
    assert_eq!(model_ids(&env, &by_deployment).await, ["east"]);

    // The admin takes a deployment away: the model name is unambiguous
    // again, and keeps its catalog price.
    let id = created["id"].as_str().unwrap();
    let r = env
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/api/providers/{id}"),
        )
        .json(&json!({"deployments": {"east": "gpt-5.4", "mini": "gpt-5.4-mini"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["models"], json!(["east", "mini"]));
    assert_eq!(patched["prices"]["east"]["output_usd_per_mtok"], 15.0);
    let r = env
        .chat(
            &by_model,
            json!({"model": "gpt-5.4", "messages": user("Hello")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-provider"], "azure");
    assert!(direct.received_requests().await.unwrap().is_empty());
    let stats = stats_after(&env, &open, 1).await;
    assert_eq!(
        row(&stats, "east")["cost_micros"],
        micros(10, 10, GPT54.0, GPT54.1)
    );
    let stats = stats_after(&env, &by_model, 3).await;
    assert_eq!(
        row(&stats, "east")["cost_micros"],
        2 * micros(10, 10, GPT54.0, GPT54.1)
    );
    // Deployment names and models follow the model-name rule.
    for bad in [
        json!({"two words": "gpt-5.4"}),
        json!({"d": "gpt 5.4"}),
        json!({}),
    ] {
        let r = env
            .admin(
                reqwest::Method::PATCH,
                &format!("/admin/api/providers/{id}"),
            )
            .json(&json!({"deployments": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], "deployments", "{body}");
    }
}

#[tokio::test]
async fn one_deployment_without_its_model_is_served_under_its_name_unpriced_and_flagged() {
    let env = TestEnv::start().await;
    let server = MockServer::start().await;
    deployment(&server, "my-dep", "gpt-4o-mini", (1_000, 500), 1).await;
    let created = add_azure(
        &env,
        json!({"preset": "azure", "api_key": API_KEY, "base_url": server.uri(), "deployment": "my-dep"}),
    )
    .await;
    assert_eq!(created["models"], json!(["my-dep"]));
    assert_eq!(created["deployments"], json!({"my-dep": null}));
    assert_eq!(created["prices"], json!({}));
    let key = key_with(&env, json!({"name": "k"})).await;
    assert_eq!(model_ids(&env, &key).await, ["my-dep"]);
    for model in ["gpt-5.4", "gpt-5.4-mini"] {
        let (status, body) = chat(&env, &key, model).await;
        assert_eq!(status, 404, "{model}: {body}");
    }
    let (status, body) = chat(&env, &key, "my-dep").await;
    assert_eq!(status, 200, "{body}");
    let stats = stats_after(&env, &key, 1).await;
    let r = row(&stats, "my-dep");
    assert_eq!(r["unpriced_requests"], 1, "{r}");
    assert_eq!(r["cost_micros"], 0, "{r}");
    assert_eq!(r["prompt_tokens"], 1_000, "{r}");
    let unpriced: Value = env
        .admin(reqwest::Method::GET, "/admin/api/unpriced")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unpriced["data"][0]["model"], "my-dep", "{unpriced}");
}

#[tokio::test]
async fn holds_and_output_limits_follow_each_deployments_model() {
    let env = TestEnv::start().await;
    let server = MockServer::start().await;
    // gpt-5.4's catalogued maximum output bounds the provider: nothing is
    // added to the caller's body.
    Mock::given(method("POST"))
        .and(path("/openai/deployments/prod-5/chat/completions"))
        .and(header("api-key", API_KEY))
        .and(body_partial_json(json!({"max_tokens": 100})))
        .respond_with(ResponseTemplate::new(200).set_body_json(azure_completion("gpt-5.4", 20, 10)))
        .expect(1)
        .mount(&server)
        .await;
    // A deployment of unknown model: the hold assumed the default cap,
    // which the dispatcher sends.
    Mock::given(method("POST"))
        .and(path("/openai/deployments/raw/chat/completions"))
        .and(header("api-key", API_KEY))
        .and(body_partial_json(json!({"max_completion_tokens": 32_768})))
        .respond_with(ResponseTemplate::new(200).set_body_json(azure_completion("x", 20, 10)))
        .expect(1)
        .mount(&server)
        .await;
    add_azure(
        &env,
        json!({
            "preset": "azure",
            "api_key": API_KEY,
            "base_url": server.uri(),
            "deployments": {"prod-5": "gpt-5.4", "raw": null},
        }),
    )
    .await;
    let key = key_with(
        &env,
        json!({"name": "budgeted", "budget_usd": 1.0, "budget_period": "total"}),
    )
    .await;
    // Without max_tokens, prod-5 holds gpt-5.4's 128,000 output tokens at
    // $15 a million: $1.92, more than the budget.
    let (status, body) = chat(&env, &key, "prod-5").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    // Above gpt-5.4's catalogued maximum output.
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-5.4", "messages": user("Hello"), "max_tokens": 200_000}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "max_tokens", "{body}");
    let r = env
        .chat(
            &key,
            json!({"model": "prod-5", "messages": user("Hello"), "max_tokens": 100}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Unpriced: it holds nothing, and is capped at what the hold assumed.
    let (status, body) = chat(&env, &key, "raw").await;
    assert_eq!(status, 200, "{body}");
    let stats = stats_after(&env, &key, 2).await;
    assert_eq!(
        row(&stats, "prod-5")["cost_micros"],
        micros(20, 10, GPT54.0, GPT54.1)
    );
    assert_eq!(row(&stats, "raw")["unpriced_requests"], 1);
}

#[tokio::test]
async fn a_provider_stored_before_deployments_still_serves_its_deployment() {
    let env = TestEnv::start().await;
    let server = MockServer::start().await;
    deployment(&server, "legacy-dep", "gpt-4o", (1_000, 100), 2).await;
    // As an aigw before deployments stored it: the preset's models and their
    // prices, and the one deployment as a setting.
    let id = Uuid::now_v7();
    let sealer = Sealer::new(Some(&SecretString::from(MASTER_KEY)));
    let sealed = sealer
        .seal(API_KEY, &Binding::new(id, CredentialField::ApiKey))
        .unwrap();
    let stored = json!({"ProviderConfigured": {"spec": {
        "name": "azure-old", "kind": "azure", "base_url": server.uri(),
        "models": ["gpt-5.4", "gpt-5.4-mini"], "sealed_credential": sealed,
        "prices": {
            "gpt-5.4": {"input_micros_per_mtok": 2_500_000, "output_micros_per_mtok": 15_000_000},
            "gpt-5.4-mini": {"input_micros_per_mtok": 750_000, "output_micros_per_mtok": 4_500_000}},
        "preset": "azure",
        "settings": {"deployment": "legacy-dep", "api_version": API_VERSION}},
        "actor": "admin", "at": "2026-11-26T12:00:00Z"}});
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('provider', $1, 1, 'ProviderConfigured', '1.0', $2::text::json, '{}')",
    )
    .bind(id.to_string())
    .bind(stored.to_string())
    .execute(&env.pool)
    .await
    .unwrap();
    registry::refresh_provider(&env.pool, id).await.unwrap();
    let client = async_nats::connect(&env.common.nats_url).await.unwrap();
    registry::announce(&client, &env.common.names().unwrap(), KIND_PROVIDERS, id).await;

    let key = key_with(&env, json!({"name": "k"})).await;
    wait_until(Duration::from_secs(10), || async {
        model_ids(&env, &key).await == ["legacy-dep"]
    })
    .await;
    let shown: Value = env
        .admin(reqwest::Method::GET, &format!("/admin/api/providers/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["deployments"], json!({"legacy-dep": null}));
    // Not billed at gpt-5.4's price any more, nor reached by its name.
    let (status, body) = chat(&env, &key, "gpt-5.4").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = chat(&env, &key, "legacy-dep").await;
    assert_eq!(status, 200, "{body}");
    let stats = stats_after(&env, &key, 1).await;
    assert_eq!(row(&stats, "legacy-dep")["unpriced_requests"], 1);

    // The admin says which model it serves: a new event in today's shape,
    // the stored one untouched; from now on it is billed at that price.
    let r = env
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/api/providers/{id}"),
        )
        .json(&json!({"deployments": {"legacy-dep": "gpt-5.4"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let events: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT sequence, payload::jsonb FROM events
         WHERE aggregate_type = 'provider' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].1, stored, "the stored event is never rewritten");
    let spec = &events[1].1["ProviderUpdated"]["spec"];
    assert_eq!(spec["deployments"], json!({"legacy-dep": "gpt-5.4"}));
    assert_eq!(spec["models"], json!(["legacy-dep"]));
    assert!(spec["settings"].get("deployment").is_none(), "{spec}");
    assert_eq!(spec["settings"]["api_version"], API_VERSION);
    let (status, body) = chat(&env, &key, "gpt-5.4").await;
    assert_eq!(status, 200, "{body}");
    let stats = stats_after(&env, &key, 2).await;
    let r = row(&stats, "legacy-dep");
    assert_eq!(
        r["cost_micros"],
        micros(1_000, 100, GPT54.0, GPT54.1),
        "{r}"
    );
    assert_eq!(r["unpriced_requests"], 1, "{r}");
}
