//! Async jobs: submission, polling, listing, cancellation, isolation,
//! idempotency, crash safety, webhooks and priority below synchronous calls.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::billing::{projected_requests, run_aigw, snapshot, spawn_projector, today};
use crate::harness::{Options, TestEnv, completion, user, wait_until};

/// A priced OpenAI-compatible upstream serving `m` after `delay_ms`.
pub(crate) async fn upstream(env: &TestEnv, delay_ms: u64) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "done in the background", 10, 20))
                .set_delay(Duration::from_millis(delay_ms)),
        )
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": ["m"],
            "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

pub(crate) async fn submit(env: &TestEnv, key: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url("/v1/jobs"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn submit_ok(env: &TestEnv, key: &str, body: Value) -> String {
    let r = submit(env, key, body).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let job: Value = r.json().await.unwrap();
    job["id"].as_str().unwrap().to_string()
}

async fn get(env: &TestEnv, key: &str, path: &str) -> (u16, Value) {
    let r = env
        .http
        .get(env.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub(crate) async fn wait_status(env: &TestEnv, key: &str, id: &str, status: &str) -> Value {
    let url = format!("/v1/jobs/{id}");
    wait_until(Duration::from_secs(30), || async {
        get(env, key, &url).await.1["status"] == status
    })
    .await;
    get(env, key, &url).await.1
}

/// Event types of one job, in order.
async fn job_events(env: &TestEnv, id: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT event_type, payload::jsonb FROM events
         WHERE aggregate_type = 'job' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

fn chat_body() -> Value {
    json!({"model": "m", "messages": user("summarise this"), "max_tokens": 100})
}

#[tokio::test]
async fn a_job_is_queued_run_polled_listed_and_billed_once() {
    let env = TestEnv::start().await;
    let mock = upstream(&env, 0).await;
    let (_, key) = env.add_key("batch").await;

    let mut body = chat_body();
    body["metadata"] = json!({"batch": "nightly"});
    let r = submit(&env, &key, body).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = submit(&env, &key, chat_body()).await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let first: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", first["id"].as_str().unwrap())
    );
    assert_eq!(first["object"], "job");
    assert!(
        ["queued", "running", "succeeded"].contains(&first["status"].as_str().unwrap()),
        "{first}"
    );
    assert!(first["created_at"].as_i64().unwrap() > 1_700_000_000);

    let job = wait_status(&env, &key, &id, "succeeded").await;
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        "done in the background"
    );
    assert_eq!(job["result"]["object"], "chat.completion");
    assert_eq!(job["usage"]["total_tokens"], 30);
    // 10 tokens at $1/M + 20 at $2/M.
    assert_eq!(job["cost_usd"], 0.00005);
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["provider"], "p");
    assert_eq!(job["metadata"]["batch"], "nightly");
    assert_eq!(job["error"], Value::Null);
    assert!(job["finished_at"].as_i64().unwrap() >= job["created_at"].as_i64().unwrap());
    // What went upstream is the chat body, without the job's own fields.
    let sent: Value = mock.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert!(sent.get("metadata").is_none() && sent.get("webhook_url").is_none());

    // The job's history, and its run recorded like any request (once).
    let types: Vec<String> = job_events(&env, &id)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["JobSubmitted", "JobStarted", "JobFinished"]);
    let events = env.wait_recorded(&id).await;
    assert_eq!(
        events
            .iter()
            .filter(|(t, _)| t == "RequestCompleted")
            .count(),
        1
    );
    assert_eq!(
        events.last().unwrap().1["RequestCompleted"]["cost_micros"],
        50
    );

    // Listing: newest first, paginated, filtered by status.
    let third = submit_ok(&env, &key, chat_body()).await;
    for j in [&third, first["id"].as_str().unwrap()] {
        wait_status(&env, &key, j, "succeeded").await;
    }
    let (status, page) = get(&env, &key, "/v1/jobs?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["data"][0]["id"], third.as_str());
    assert_eq!(page["has_more"], true);
    let last = page["last_id"].as_str().unwrap();
    let (_, rest) = get(&env, &key, &format!("/v1/jobs?limit=2&after={last}")).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["id"], id.as_str());
    assert_eq!(rest["has_more"], false);
    let (_, ok) = get(&env, &key, "/v1/jobs?status=succeeded").await;
    assert_eq!(ok["data"].as_array().unwrap().len(), 3);
    let (_, none) = get(&env, &key, "/v1/jobs?status=queued").await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let (status, bad) = get(&env, &key, "/v1/jobs?status=done").await;
    assert_eq!(
        (status, bad["error"]["param"].clone()),
        (400, json!("status"))
    );

    wait_until(Duration::from_secs(30), || async {
        env.stats(&key).await["totals"]["requests"] == 3
    })
    .await;
}

#[tokio::test]
async fn bad_submissions_get_clear_errors() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env, 0).await;
    let (_, key) = env.add_key("k").await;
    let cases = [
        (
            json!({"model": "m", "messages": user("x"), "stream": true}),
            400,
            "stream",
        ),
        (
            json!({"model": "m", "messages": user("x"), "webhook_url": "file:///etc/passwd"}),
            400,
            "webhook_url",
        ),
        (
            json!({"model": "m", "messages": user("x"), "metadata": "x"}),
            400,
            "metadata",
        ),
        (json!({"messages": user("x")}), 400, "model"),
    ];
    for (body, status, param) in cases {
        let r = submit(&env, &key, body).await;
        assert_eq!(r.status(), status);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    let r = submit(&env, &key, json!({"model": "nope", "messages": user("x")})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    let r = env
        .http
        .post(env.url("/v1/jobs"))
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, e) = get(&env, &key, "/v1/jobs/not-a-uuid").await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (404, json!("job_not_found"))
    );
}

#[tokio::test]
async fn a_key_sees_only_its_own_jobs() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env, 0).await;
    let (alice_id, alice) = env.add_key("alice").await;
    let (_, bob) = env.add_key("bob").await;
    let id = submit_ok(&env, &alice, chat_body()).await;
    wait_status(&env, &alice, &id, "succeeded").await;

    let (status, e) = get(&env, &bob, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["error"]["code"], "job_not_found");
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, list) = get(&env, &bob, "/v1/jobs").await;
    assert_eq!(list["data"], json!([]));
    // The admin sees every key's jobs.
    let all: Value = env
        .admin(reqwest::Method::GET, "/admin/api/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    assert_eq!(all["data"][0]["status"], "succeeded");
    assert_eq!(all["data"][0]["key_id"], alice_id.as_str());
}

#[tokio::test]
async fn jobs_are_cancelled_queued_or_running_and_release_their_hold() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let mock = upstream(&env, 3000).await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "budgeted", "budget_usd": 1.0, "budget_period": "total"}))
        .send()
        .await
        .unwrap();
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    // Queued (no dispatcher yet): cancelled, then never run.
    let queued = submit_ok(&env, &key, chat_body()).await;
    let (_, own) = get(&env, &key, "/v1/key").await;
    assert!(own["held_usd"].as_f64().unwrap() > 0.0, "{own}");
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{queued}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");

    // Running: cancelled while the provider works on it.
    env.start_dispatcher();
    let running = submit_ok(&env, &key, chat_body()).await;
    wait_status(&env, &key, &running, "running").await;
    wait_until(Duration::from_secs(20), || async {
        !mock.received_requests().await.unwrap().is_empty()
    })
    .await;
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{running}/cancel")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The run ends as a failed request, but the provider did the work: the
    // call runs to its end and what it used is billed (10 + 20 tokens at
    // $1 and $2 per million: 50 micro-dollars).
    let events = env.wait_recorded(&running).await;
    let (_, failed) = events.last().unwrap();
    assert_eq!(failed["RequestFailed"]["status"], 499, "{failed}");
    assert_eq!(
        failed["RequestFailed"]["usage"]["prompt_tokens"], 10,
        "{failed}"
    );
    assert_eq!(failed["RequestFailed"]["usage"]["completion_tokens"], 20);
    assert_eq!(failed["RequestFailed"]["usage_estimated"], false);
    assert_eq!(failed["RequestFailed"]["cost_micros"], 50);

    // Both stay cancelled, neither was finished, every hold is released,
    // and only the running one reached the upstream.
    wait_until(Duration::from_secs(20), || async {
        get(&env, &key, "/v1/key").await.1["held_usd"] == 0.0
    })
    .await;
    assert_eq!(get(&env, &key, "/v1/key").await.1["spent_micros"], 50);
    for id in [&queued, &running] {
        let (_, job) = get(&env, &key, &format!("/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "cancelled");
        let types: Vec<String> = job_events(&env, id)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert!(!types.contains(&"JobFinished".to_string()), "{types:?}");
    }
    // The queued one never ran and cost nothing; the running one shows the
    // cost its request was billed (once the run's end is stored).
    let (_, job) = get(&env, &key, &format!("/v1/jobs/{queued}")).await;
    assert_eq!(
        (job["usage"].clone(), job["cost_usd"].clone()),
        (Value::Null, Value::Null)
    );
    wait_until(Duration::from_secs(20), || async {
        get(&env, &key, &format!("/v1/jobs/{running}")).await.1["cost_usd"] == 0.00005
    })
    .await;
    let (_, job) = get(&env, &key, &format!("/v1/jobs/{running}")).await;
    assert_eq!(job["usage"]["total_tokens"], 30, "{job}");
    let types: Vec<String> = job_events(&env, &running)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "JobRunBilled").count(),
        1,
        "{types:?}"
    );
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
    assert!(env.request_events(&queued).await.is_empty());

    // A finished job cannot be cancelled.
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"max_tokens": 7})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "quick", 1, 1)))
        .with_priority(1)
        .mount(&mock)
        .await;
    let done = submit_ok(
        &env,
        &key,
        json!({"model": "m", "messages": user("x"), "max_tokens": 7}),
    )
    .await;
    wait_status(&env, &key, &done, "succeeded").await;
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{done}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_job() {
    let env = TestEnv::start().await;
    let mock = upstream(&env, 0).await;
    let (_, key) = env.add_key("k").await;
    let post = || async {
        env.http
            .post(env.url("/v1/jobs"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "nightly-2026-11-26")
            .json(&chat_body())
            .send()
            .await
            .unwrap()
    };
    let first = post().await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let id = first.json::<Value>().await.unwrap()["id"].clone();
    wait_status(&env, &key, id.as_str().unwrap(), "succeeded").await;
    let again = post().await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let job: Value = again.json().await.unwrap();
    assert_eq!(job["id"], id);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
    let (_, list) = get(&env, &key, "/v1/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

/// Issue #6's acceptance: 20 jobs, the dispatcher and the projector killed
/// mid-run and restarted; every job finishes exactly once, billed once, the
/// audit is clean and the views equal a fresh rebuild.
#[tokio::test]
async fn twenty_jobs_survive_a_killed_dispatcher_and_projector() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        ack_wait: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let mock = upstream(&env, 1000).await;
    let (_, key) = env.add_key("batch").await;
    let doomed = env.spawn_dispatcher_process();
    let mut projector = spawn_projector(&env);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit_ok(&env, &key, chat_body()).await);
    }
    // Kill both while jobs are running (and others still queued).
    wait_until(Duration::from_secs(20), || async {
        !mock.received_requests().await.unwrap().is_empty()
    })
    .await;
    env.kill_process(doomed);
    env.start_dispatcher();
    wait_until(Duration::from_secs(30), || async {
        projected_requests(&env).await > 0
    })
    .await;
    projector.kill();
    let mut projector = spawn_projector(&env);

    for id in &ids {
        let job = wait_status(&env, &key, id, "succeeded").await;
        assert_eq!(
            job["result"]["choices"][0]["message"]["content"],
            "done in the background"
        );
        let types: Vec<String> = job_events(&env, id)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            types.iter().filter(|t| *t == "JobFinished").count(),
            1,
            "{types:?}"
        );
        let outcomes = env
            .request_events(id)
            .await
            .into_iter()
            .filter(|(t, _)| t == "RequestCompleted" || t == "RequestFailed")
            .count();
        assert_eq!(outcomes, 1);
    }
    // At least one job ran twice (its dispatcher was killed mid-call), yet
    // each is billed once.
    assert!(mock.received_requests().await.unwrap().len() > ids.len());
    wait_until(Duration::from_secs(30), || async {
        projected_requests(&env).await == 20
    })
    .await;
    projector.kill();
    let billed: i64 = sqlx::query_scalar("SELECT sum(cost_micros)::int8 FROM billing_monthly")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(billed, 20 * 50);
    let day = today();
    let report: Value = env
        .admin(reqwest::Method::POST, "/admin/api/audit")
        .json(&json!({"from": day, "to": day}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["requests"], 20);
    let live = snapshot(&env).await;
    let out = run_aigw(&env, &["projector", "rebuild"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(snapshot(&env).await, live);
}

pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_recorded() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env, 0).await;
    let (_, key) = env.add_key("hooks").await;
    let (_, own) = get(&env, &key, "/v1/key").await;
    let secret = own["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));

    // The receiver fails twice, then accepts.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let mut body = chat_body();
    body["webhook_url"] = json!(format!("{}/hook", receiver.uri()));
    let id = submit_ok(&env, &key, body).await;
    wait_until(Duration::from_secs(30), || async {
        get(&env, &key, &format!("/v1/jobs/{id}")).await.1["webhook"]["status"] == "delivered"
    })
    .await;

    let received = receiver.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    for (n, r) in received.iter().enumerate() {
        assert_eq!(
            r.headers["x-aigw-signature"].to_str().unwrap(),
            signature(&secret, &r.body),
            "attempt {n} is signed over its body"
        );
        assert_eq!(r.headers["x-aigw-job-id"].to_str().unwrap(), id);
        assert_eq!(
            r.headers["x-aigw-delivery-attempt"].to_str().unwrap(),
            (n + 1).to_string()
        );
        let job: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(job["id"], id.as_str());
        assert_eq!(job["status"], "succeeded");
        assert_eq!(
            job["result"]["choices"][0]["message"]["content"],
            "done in the background"
        );
    }
    // Another key's secret does not verify it.
    let (_, other) = env.add_key("other").await;
    let (_, other_view) = get(&env, &other, "/v1/key").await;
    assert_ne!(
        signature(
            other_view["webhook_secret"].as_str().unwrap(),
            &received[0].body
        ),
        received[0].headers["x-aigw-signature"].to_str().unwrap()
    );
    let attempts: Vec<Value> = job_events(&env, &id)
        .await
        .into_iter()
        .filter(|(t, _)| t == "WebhookAttempted")
        .map(|(_, p)| p["WebhookAttempted"].clone())
        .collect();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["http_status"], 503);
    assert_eq!(attempts[2]["delivered"], true);

    // A receiver that never accepts: attempts run out and are abandoned.
    let dead = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&dead)
        .await;
    let mut body = chat_body();
    body["webhook_url"] = json!(format!("{}/gone", dead.uri()));
    let id = submit_ok(&env, &key, body).await;
    wait_until(Duration::from_secs(30), || async {
        get(&env, &key, &format!("/v1/jobs/{id}")).await.1["webhook"]["status"] == "failed"
    })
    .await;
    assert_eq!(dead.received_requests().await.unwrap().len(), 4);
    let types: Vec<String> = job_events(&env, &id)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types.last().unwrap(), "WebhookAbandoned");
}

#[tokio::test]
async fn queued_jobs_do_not_hold_up_synchronous_calls() {
    let env = TestEnv::start().await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("slow", "eventually", 1, 1))
                .set_delay(Duration::from_millis(2000)),
        )
        .mount(&slow)
        .await;
    let fast = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("fast", "now", 1, 1)))
        .mount(&fast)
        .await;
    env.add_provider("slow", &format!("{}/v1", slow.uri()), &["slow"])
        .await;
    env.add_provider("fast", &format!("{}/v1", fast.uri()), &["fast"])
        .await;
    let (_, key) = env.add_key("mixed").await;
    // 60 jobs of 2 s each: with 4 job slots, 30 s of queue.
    for _ in 0..60 {
        submit_ok(&env, &key, json!({"model": "slow", "messages": user("x")})).await;
    }
    wait_until(Duration::from_secs(20), || async {
        !slow.received_requests().await.unwrap().is_empty()
    })
    .await;
    let started = Instant::now();
    for _ in 0..20 {
        let r = env
            .chat(&key, json!({"model": "fast", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    // Behind the jobs, the first of them would wait about 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "synchronous calls took {:?}",
        started.elapsed()
    );
    // The job runner kept to its slots.
    assert!(slow.received_requests().await.unwrap().len() <= 16);
}

/// With private webhook addresses refused (aigw's default), a caller cannot
/// make a dispatcher call the services next to it: literal private
/// addresses and `localhost` are refused at submission, and a name that
/// resolves to a private address is refused at delivery, before connecting.
#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_by_default() {
    let env = TestEnv::with(Options {
        allow_private_egress: false,
        ..Options::default()
    })
    .await;
    let _mock = upstream(&env, 0).await;
    let (_, key) = env.add_key("ssrf").await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let port = receiver.address().port();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]/hook".to_string(),
        "http://10.0.0.7/hook".to_string(),
    ] {
        let mut body = chat_body();
        body["webhook_url"] = json!(url);
        let r = submit(&env, &key, body).await;
        assert_eq!(r.status(), 400, "{url}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["param"], "webhook_url", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("public address"),
            "{err}"
        );
    }

    // A name for this machine (it resolves to a loopback address here):
    // accepted at submission, refused when resolved, never connected to.
    let host = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let resolved: Vec<std::net::IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    assert!(
        !resolved.is_empty()
            && !resolved
                .iter()
                .any(|ip| aigw_runtime::egress::is_public(*ip)),
        "the test needs this machine's name ({host:?}) to resolve to private addresses only: {resolved:?}"
    );
    let mut body = chat_body();
    body["webhook_url"] = json!(format!("http://{host}:{port}/hook"));
    let id = submit_ok(&env, &key, body).await;
    wait_until(Duration::from_secs(30), || async {
        get(&env, &key, &format!("/v1/jobs/{id}")).await.1["webhook"]["status"] == "failed"
    })
    .await;
    let (_, job) = get(&env, &key, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(receiver.received_requests().await.unwrap().is_empty());
    let attempts: Vec<Value> = job_events(&env, &id)
        .await
        .into_iter()
        .filter(|(t, _)| t == "WebhookAttempted")
        .map(|(_, p)| p["WebhookAttempted"].clone())
        .collect();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("no public address"),
        "{:?}",
        attempts[0]
    );
}

/// Rotating a key rotates its webhook secret too: deliveries after the
/// rotation verify with the new secret only, so an old secret that leaked
/// cannot forge them.
#[tokio::test]
async fn rotating_a_key_rotates_its_webhook_secret() {
    let env = TestEnv::start().await;
    let _mock = upstream(&env, 0).await;
    let (id, key) = env.add_key("rotating").await;
    let (_, before) = get(&env, &key, "/v1/key").await;
    let old_secret = before["webhook_secret"].as_str().unwrap().to_string();
    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/keys/{id}/rotate"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let new_key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, after) = get(&env, &new_key, "/v1/key").await;
    let new_secret = after["webhook_secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, old_secret);

    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let mut body = chat_body();
    body["webhook_url"] = json!(format!("{}/hook", receiver.uri()));
    let job = submit_ok(&env, &new_key, body).await;
    wait_until(Duration::from_secs(30), || async {
        get(&env, &new_key, &format!("/v1/jobs/{job}")).await.1["webhook"]["status"] == "delivered"
    })
    .await;
    let received = receiver.received_requests().await.unwrap();
    let signed = received[0].headers["x-aigw-signature"].to_str().unwrap();
    assert_eq!(signed, signature(&new_secret, &received[0].body));
    assert_ne!(signed, signature(&old_secret, &received[0].body));
}
