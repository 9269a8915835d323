//! Keys' limits, budgets, scopes, expiry and rotation, under concurrency and
//! across replicas, and every change as an event.

use std::time::Duration;

use aigw_runtime::limits::{Budget, BudgetRefusal, Hold, LeasedHold, Limiter};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

/// Input $1 and output $2 per million tokens; each answer uses 10 + 100
/// tokens, so costs 10 + 200 = 210 micro-dollars.
const COST_MICROS: i64 = 210;

/// Keep the returned server alive as long as the provider is used: a
/// dropped wiremock server goes back to a pool and serves other tests.
async fn priced_upstream(env: &TestEnv, delay_ms: u64) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "ok", 10, 100))
                .set_delay(Duration::from_millis(delay_ms)),
        )
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "priced",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret",
            "models": ["m", "free-model"],
            "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

/// What admission holds for `body` at the priced upstream ($1/$2 per M).
fn worst_micros(body: &Value) -> i64 {
    use aigw_events::provider::{Price, ProviderKind};
    use aigw_runtime::worst_case::{TargetLimits, worst_usage};
    let limits = TargetLimits {
        kind: ProviderKind::OpenaiCompatible,
        context: None,
        max_output: None,
    };
    let worst = worst_usage(aigw_events::wire::Endpoint::Chat, body, &limits).unwrap();
    Price::tokens(1_000_000, 2_000_000)
        .cost_micros(&worst)
        .unwrap()
}

pub(crate) async fn create_key(env: &TestEnv, body: Value) -> (String, String) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().into(),
        v["key"].as_str().unwrap().into(),
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

/// 100 concurrent requests against a budget that covers 10 worst cases.
async fn budget_holds_under_concurrency(replicas: usize) {
    let mut env = TestEnv::start().await;
    let mut bases = vec![env.base.clone()];
    for _ in 1..replicas {
        bases.push(env.start_ingress().await);
    }
    let _upstream = priced_upstream(&env, 300).await;
    // Worst case of one request: its prompt bound (every byte of its keys
    // and values, plus framing) at $1/M plus max_tokens 1000 at $2/M.
    let worst = worst_micros(&json!({"model": "m", "messages": user("hi"), "max_tokens": 1000}));
    let budget_micros = 10 * worst;
    let (_, key) = create_key(
        &env,
        json!({"name": "tight", "budget_usd": budget_micros as f64 / 1e6, "budget_period": "total"}),
    )
    .await;
    let mut calls = Vec::new();
    for i in 0..100 {
        let url = format!("{}/v1/chat/completions", bases[i % bases.len()]);
        let (http, key) = (env.http.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "messages": user("hi"), "max_tokens": 1000}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut ok = 0i64;
    for call in calls {
        let (status, body) = call.await.unwrap();
        match status {
            200 => ok += 1,
            429 => assert_eq!(body["error"]["code"], "insufficient_quota", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 10, "only {ok} succeeded");
    // Every hold is settled once the dispatchers have recorded the requests.
    wait_until(Duration::from_secs(30), || async {
        own_key(&env, &key).await["held_usd"] == 0.0
    })
    .await;
    let mine = own_key(&env, &key).await;
    let spent = mine["spent_micros"].as_i64().unwrap();
    assert_eq!(spent, ok * COST_MICROS, "{mine}");
    assert!(spent <= budget_micros);
    // The events say the same, to the micro-dollar.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum((payload::jsonb #>> '{RequestCompleted,cost_micros}')::int8), 0)::int8
         FROM events WHERE event_type = 'RequestCompleted'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(recorded, spent);
}

#[tokio::test]
async fn a_budget_is_never_exceeded_by_concurrent_requests() {
    budget_holds_under_concurrency(1).await;
}

#[tokio::test]
async fn a_budget_holds_across_two_ingress_replicas() {
    budget_holds_under_concurrency(2).await;
}

#[tokio::test]
async fn an_rpm_limit_holds_across_two_replicas() {
    let mut env = TestEnv::start().await;
    let second = env.start_ingress().await;
    let _upstream = priced_upstream(&env, 0).await;
    let (_, key) = create_key(&env, json!({"name": "rpm", "rpm": 30})).await;
    let mut ok = 0;
    let mut limited = None;
    let started = std::time::Instant::now();
    for i in 0..40 {
        let base = if i % 2 == 0 { &env.base } else { &second };
        let r = env
            .http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "m", "messages": user("x")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "30");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited = Some(r),
            other => panic!("unexpected {other}"),
        }
    }
    // The bucket refills at 30/min (one request every 2 s): on a slow
    // machine the 40 calls take long enough for some to be earned back.
    let refilled = (started.elapsed().as_secs_f64() / 2.0).ceil() as i32;
    assert!(
        (30..=31 + refilled).contains(&ok),
        "{ok} requests got through a limit of 30 in {:?}",
        started.elapsed()
    );
    let r = limited.unwrap();
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(r.headers().contains_key("x-ratelimit-reset-requests"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

/// The limits' group commit across two replicas: two `Limiter`s (each with
/// its own NATS connection) on one bucket, hundreds of concurrent changes to
/// the same entries, batched within each replica and racing between them,
/// admit exactly what the limits allow and settle each request once.
#[tokio::test]
async fn group_commits_of_two_replicas_hold_limits_exactly() {
    let env = TestEnv::start().await;
    let names = env.common.names().unwrap();
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let (_, js) = aigw_runtime::nats::connect(&env.common.nats_url, name)
            .await
            .unwrap();
        replicas.push(Limiter::open(&js, &names, 1).await.unwrap());
    }
    let key = Uuid::now_v7();
    let now_ms = chrono::Utc::now().timestamp_millis();

    // 300 admissions at one instant (nothing refills): rpm 1,000 and tpm
    // 5,000 at 50 tokens each let exactly 100 through.
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let limiter = replicas[i % 2].clone();
            tokio::spawn(async move {
                limiter
                    .admit_rate(key, Some(1_000), Some(5_000), 50, now_ms)
                    .await
                    .unwrap()
                    .allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for call in calls {
        allowed += usize::from(call.await.unwrap());
    }
    assert_eq!(allowed, 100);
    let rate = replicas[0].rate(key).await.unwrap();
    assert_eq!((rate.requests, rate.tokens), (900.0, 0.0));

    // 200 holds of 300 micro-dollars on a budget of 10,000: exactly 33 fit.
    let budget = Budget {
        period: "total".into(),
        micros: Some(10_000),
        tokens: None,
    };
    let hold = Hold {
        micros: 300,
        tokens: 0,
        expires_ms: now_ms + 600_000,
    };
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let (limiter, budget) = (replicas[i % 2].clone(), budget.clone());
            tokio::spawn(async move {
                let request = Uuid::now_v7();
                let outcome = limiter
                    .reserve(key, &budget, request, hold, now_ms)
                    .await
                    .unwrap();
                (request, outcome)
            })
        })
        .collect();
    let (mut held, mut refused) = (Vec::new(), 0);
    for call in calls {
        match call.await.unwrap() {
            (request, Ok(None)) => held.push(request),
            (_, Ok(Some(lease))) => panic!("a replica without leases took a hold from {lease:?}"),
            (_, Err(refusal)) => {
                assert_eq!(refusal, BudgetRefusal::Spend);
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (33, 167));

    // Each hold settled twice, once through each replica, all at once:
    // exactly one settlement per request counts.
    let calls: Vec<_> = held
        .iter()
        .flat_map(|request| {
            replicas.iter().map(move |limiter| {
                let (limiter, request) = (limiter.clone(), *request);
                tokio::spawn(async move {
                    limiter
                        .settle(key, "total", request, None, 100, 7, now_ms)
                        .await
                        .unwrap()
                })
            })
        })
        .collect();
    let mut settled = 0;
    for call in calls {
        settled += usize::from(call.await.unwrap());
    }
    assert_eq!(settled, 33);
    let state = replicas[1].budget(key, "total").await.unwrap();
    assert_eq!(state.spent_micros, 3_300);
    assert_eq!(state.spent_tokens, 33 * 7);
    assert!(state.holds.is_empty(), "{state:?}");
}

#[tokio::test]
async fn budget_exhaustion_top_up_and_the_key_history() {
    let env = TestEnv::start().await;
    let _upstream = priced_upstream(&env, 0).await;
    // A worst case holds 2067 and settles to 210: with 2500, three calls fit
    // one after the other (630 spent), and a fourth's hold does not.
    let (id, key) = create_key(
        &env,
        json!({"name": "small", "owner": "team-a", "budget_usd": 0.0025, "budget_period": "monthly"}),
    )
    .await;
    let body = json!({"model": "m", "messages": user("hi"), "max_tokens": 1000});
    assert_eq!(worst_micros(&body), 2067);
    let call = || env.chat(&key, body.clone());
    let settled = || async {
        wait_until(Duration::from_secs(30), || async {
            own_key(&env, &key).await["held_usd"] == 0.0
        })
        .await
    };
    for _ in 0..3 {
        assert_eq!(call().await.status(), 200);
        settled().await;
    }
    let r = call().await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");

    let mine = own_key(&env, &key).await;
    assert_eq!(mine["spent_micros"], 3 * COST_MICROS);
    assert_eq!(mine["budget_usd"], 0.0025);
    assert_eq!(mine["remaining_usd"], 0.00187);
    assert_eq!(mine["limits"]["budget_period"], "monthly");

    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/keys/{id}/topup"),
        )
        .json(&json!({"amount_usd": 0.01}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(call().await.status(), 200);
    settled().await;

    let r = env
        .admin(reqwest::Method::PATCH, &format!("/admin/api/keys/{id}"))
        .json(&json!({"rpm": 100, "budget_usd": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["limits"]["rpm"], 100);
    assert_eq!(view["limits"]["budget_usd"], Value::Null);

    let detail: Value = env
        .admin(reqwest::Method::GET, &format!("/admin/api/keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["owner"], "team-a");
    assert_eq!(detail["budget"]["spent_micros"], 4 * COST_MICROS);

    let history: Value = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/keys/{id}/events"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["KeyIssued", "KeyToppedUp", "KeyUpdated"]);
    assert!(
        history["data"][1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    assert_eq!(history["data"][1]["data"]["amount_micros"], 10_000);
}

#[tokio::test]
async fn scopes_expiry_and_rotation() {
    let env = TestEnv::start().await;
    let _upstream = priced_upstream(&env, 0).await;
    let (_, scoped) = create_key(
        &env,
        json!({"name": "scoped", "allowed_models": ["free-model"]}),
    )
    .await;
    let r = env
        .chat(&scoped, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_allowed");
    let r = env
        .chat(
            &scoped,
            json!({"model": "free-model", "messages": user("x")}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let (_, other_provider) = create_key(
        &env,
        json!({"name": "p", "allowed_providers": ["somebody-else"]}),
    )
    .await;
    let r = env
        .chat(
            &other_provider,
            json!({"model": "m", "messages": user("x")}),
        )
        .await;
    assert_eq!(r.status(), 403);

    let (_, expired) = create_key(
        &env,
        json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    let r = env
        .chat(&expired, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "expired_api_key");

    // Rotation with a grace period: both secrets work, then only the new one.
    let (id, old) = create_key(&env, json!({"name": "rotating"})).await;
    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/keys/{id}/rotate"),
        )
        .json(&json!({"grace_seconds": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated["id"], id.as_str());
    let ok = |k: String| {
        let env = &env;
        async move {
            env.chat(&k, json!({"model": "m", "messages": user("x")}))
                .await
                .status()
        }
    };
    assert_eq!(ok(old.clone()).await, 200);
    assert_eq!(ok(new.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(ok(old.clone()).await, 401);
    assert_eq!(ok(new.clone()).await, 200);
    // Without a grace period the old secret stops at once.
    let r = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/keys/{id}/rotate"),
        )
        .send()
        .await
        .unwrap();
    let newest: Value = r.json().await.unwrap();
    assert_eq!(ok(new).await, 401);
    assert_eq!(ok(newest["key"].as_str().unwrap().to_string()).await, 200);
}

#[tokio::test]
async fn unpriced_models_are_flagged_and_prices_apply_from_their_change() {
    let env = TestEnv::start().await;
    let _upstream = priced_upstream(&env, 0).await;
    let (_, key) = create_key(&env, json!({"name": "k"})).await;
    let r = env
        .chat(&key, json!({"model": "free-model", "messages": user("x")}))
        .await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let events = env.wait_recorded(&id).await;
    assert_eq!(
        events.last().unwrap().1["RequestCompleted"]["cost_micros"],
        Value::Null
    );
    wait_until(Duration::from_secs(30), || async {
        let listed: Value = env
            .admin(reqwest::Method::GET, "/admin/api/unpriced")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed["data"][0]["model"] == "free-model"
    })
    .await;

    // Price it: later requests cost the new price, earlier ones keep theirs.
    let providers: Value = env
        .admin(reqwest::Method::GET, "/admin/api/providers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = providers["data"][0]["id"].as_str().unwrap();
    let r = env
        .admin(reqwest::Method::PATCH, &format!("/admin/api/providers/{pid}"))
        .json(&json!({"prices": {"free-model": {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 10.0}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(5), || async {
        let r = env
            .chat(&key, json!({"model": "free-model", "messages": user("x")}))
            .await;
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let events = env.wait_recorded(&id).await;
        events.last().unwrap().1["RequestCompleted"]["cost_micros"] == 1100
    })
    .await;
    assert_eq!(
        env.request_events(&id).await.last().unwrap().1["RequestCompleted"]["cost_micros"],
        Value::Null
    );
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Admission leases across two replicas: two ingress-like `Limiter`s admit
/// from leases while a third (dispatcher-like) settles every admitted
/// request, twice at once (as a redelivery racing the first try would). The limits hold, every request is billed once, and once the
/// replicas go idle their leases are closed and nothing stays held.
#[tokio::test]
async fn leases_of_two_replicas_hold_limits_and_bill_once() {
    let env = TestEnv::start().await;
    let names = env.common.names().unwrap();
    let mut replicas = Vec::new();
    for name in ["lease-a", "lease-b", "settler"] {
        let (_, js) = aigw_runtime::nats::connect(&env.common.nats_url, name)
            .await
            .unwrap();
        let limiter = Limiter::open(&js, &names, 1).await.unwrap();
        replicas.push(if name == "settler" {
            limiter
        } else {
            limiter.with_leases()
        });
    }
    let settler = replicas.pop().unwrap();
    let key = Uuid::now_v7();

    // Rate: 3,000 admissions in waves of 100 every 20 ms against rpm 2,000.
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..3_000 {
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let limiter = replicas[i % 2].clone();
        calls.push(tokio::spawn(async move {
            limiter
                .admit_rate(key, Some(2_000), None, 0, now_ms())
                .await
                .unwrap()
                .allowed
        }));
    }
    let mut allowed = 0u64;
    for call in calls {
        allowed += u64::from(call.await.unwrap());
    }
    // The bucket refills at 2,000/min while the waves run.
    let refill = (started.elapsed().as_secs_f64() * 2_000.0 / 60.0).ceil() as u64;
    assert!(
        allowed <= 2_000 + refill,
        "{allowed} admitted by a limit of 2,000 (+{refill} refilled)"
    );
    // Leases left unused at the end are at most an eighth of what was left
    // when each replica took its last one.
    assert!(allowed >= 1_500, "only {allowed} of 2,000 admitted");
    let leased = replicas[0].lease_admissions() + replicas[1].lease_admissions();
    assert!(
        leased * 2 > allowed,
        "{leased} of {allowed} admissions came from leases"
    );

    // Budget: 600,000 micro-dollars, holds of 1,000, actual cost 300. The
    // holds are settled as they come (after 0-3 ms), so about 2,000 fit.
    let budget = Budget {
        period: "total".into(),
        micros: Some(600_000),
        tokens: None,
    };
    let mut calls = Vec::new();
    for i in 0..3_000u64 {
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (limiter, settler, budget) = (
            replicas[i as usize % 2].clone(),
            settler.clone(),
            budget.clone(),
        );
        calls.push(tokio::spawn(async move {
            let request = Uuid::now_v7();
            let hold = Hold {
                micros: 1_000,
                tokens: 10,
                expires_ms: now_ms() + 600_000,
            };
            let lease = match limiter
                .reserve(key, &budget, request, hold, now_ms())
                .await
                .unwrap()
            {
                Ok(lease) => lease,
                Err(refusal) => {
                    assert_eq!(refusal, BudgetRefusal::Spend);
                    return (0, 0);
                }
            };
            let leased = lease.map(|from| LeasedHold {
                from,
                micros: hold.micros,
                tokens: hold.tokens,
            });
            if i % 4 != 0 {
                tokio::time::sleep(Duration::from_micros(i * 7 % 3_000)).await;
            }
            // Settled twice at once (a redelivery racing the first try).
            let (a, b) = tokio::join!(
                settler.settle(key, "total", request, leased, 300, 7, now_ms()),
                limiter.settle(key, "total", request, leased, 300, 7, now_ms()),
            );
            (1, u64::from(a.unwrap()) + u64::from(b.unwrap()))
        }));
    }
    let (mut held, mut settled) = (0u64, 0u64);
    for call in calls {
        let (h, s) = call.await.unwrap();
        held += h;
        settled += s;
    }
    assert_eq!(settled, held, "each admitted request settles exactly once");
    assert!(
        held <= 2_000,
        "{held} requests of 300 on a budget of 600,000"
    );
    assert!(held >= 1_000, "only {held} admitted");
    assert!(replicas[0].lease_admissions() + replicas[1].lease_admissions() > leased);
    // Idle replicas close their leases: nothing stays held, and the spend
    // is every admitted request's cost, once.
    let mut state = settler.budget(key, "total").await.unwrap();
    for _ in 0..100 {
        if state.leases.is_empty() && state.holds.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = settler.budget(key, "total").await.unwrap();
    }
    assert!(
        state.leases.is_empty() && state.holds.is_empty(),
        "{state:?}"
    );
    assert_eq!(state.held(), (0, 0));
    assert_eq!(state.spent_micros, 300 * held as i64);
    assert_eq!(state.spent_tokens, 7 * held as i64);
}

/// The same through the HTTP API, with real dispatchers: a key far from its
/// limits is admitted from leases on two ingress replicas, and its spend is
/// exactly the sum of the requests' costs once the leases are closed.
#[tokio::test]
async fn leased_admissions_bill_exactly_across_two_ingress_replicas() {
    let mut env = TestEnv::start().await;
    let second = env.start_ingress().await;
    let _upstream = priced_upstream(&env, 0).await;
    let (key_id, key) = create_key(
        &env,
        json!({"name": "roomy", "rpm": 100_000, "tpm": 100_000_000, "budget_usd": 50, "budget_period": "total"}),
    )
    .await;
    let key_id: Uuid = key_id.parse().unwrap();
    // Watch the shared budget entry while the calls run: replicas' leases
    // show up in it.
    let names = env.common.names().unwrap();
    let (_, js) = aigw_runtime::nats::connect(&env.common.nats_url, "watcher")
        .await
        .unwrap();
    let watcher = Limiter::open(&js, &names, 1).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let watch = {
        let (watcher, stop) = (watcher.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = 0usize;
            while !stop.is_cancelled() {
                let state = watcher.budget(key_id, "total").await.unwrap();
                seen = seen.max(state.leases.len());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    let bases = [env.base.clone(), second];
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut calls = Vec::new();
    for i in 0..300 {
        let url = format!("{}/v1/chat/completions", bases[i % 2]);
        let (http, key, permit) = (
            env.http.clone(),
            key.clone(),
            semaphore.clone().acquire_owned().await.unwrap(),
        );
        calls.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "messages": user("hi"), "max_tokens": 100}))
                .send()
                .await
                .unwrap();
            drop(permit);
            let remaining: u64 = r.headers()["x-ratelimit-remaining-requests"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (r.status().as_u16(), remaining)
        }));
    }
    for call in calls {
        let (status, remaining) = call.await.unwrap();
        assert_eq!(status, 200);
        assert!(remaining < 100_000, "{remaining}");
    }
    stop.cancel();
    let leases_seen = watch.await.unwrap();
    assert!(leases_seen >= 1, "no replica admitted from a lease");
    // Once the leases are closed and every request settled, nothing is held
    // and the spend is 300 requests' cost, to the micro-dollar.
    wait_until(Duration::from_secs(30), || async {
        let mine = own_key(&env, &key).await;
        mine["held_usd"] == 0.0 && mine["spent_micros"] == 300 * COST_MICROS
    })
    .await;
    let state = watcher.budget(key_id, "total").await.unwrap();
    assert!(
        state.leases.is_empty() && state.holds.is_empty(),
        "{state:?}"
    );
    assert_eq!(state.spent_micros, 300 * COST_MICROS);
}

/// A lost limits bucket does not reset a budget: a missing budget entry
/// starts from what the request log says the key spent in the period.
#[tokio::test]
async fn a_lost_budget_entry_starts_again_from_the_request_log() {
    let env = TestEnv::start().await;
    let _upstream = priced_upstream(&env, 0).await;
    let (key_id, key) = create_key(
        &env,
        json!({"name": "lost", "budget_usd": 0.01, "budget_period": "monthly"}),
    )
    .await;
    for _ in 0..3 {
        let r = env
            .chat(
                &key,
                json!({"model": "m", "messages": user("hi"), "max_tokens": 100}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    // Settled, leases closed, and projected into the request log.
    wait_until(Duration::from_secs(30), || async {
        let mine = own_key(&env, &key).await;
        let logged: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(cost_micros), 0)::int8 FROM request_log WHERE key_id = $1::uuid",
        )
        .bind(&key_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        mine["spent_micros"] == 3 * COST_MICROS
            && mine["held_usd"] == 0.0
            && logged == 3 * COST_MICROS
    })
    .await;

    // The bucket's entry is lost (purged, as a wiped NATS store would lose it).
    let names = env.common.names().unwrap();
    let (_, js) = aigw_runtime::nats::connect(&env.common.nats_url, "purger")
        .await
        .unwrap();
    let kv = js
        .get_key_value(format!("{}_limits", names.namespace()))
        .await
        .unwrap();
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    kv.purge(format!("budget.{key_id}.{period}")).await.unwrap();

    // Read back, and written again by the next request: the spend goes on
    // from the request log instead of from zero.
    let mine = own_key(&env, &key).await;
    assert_eq!(mine["spent_micros"], 3 * COST_MICROS, "{mine}");
    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("hi"), "max_tokens": 100}),
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(30), || async {
        let mine = own_key(&env, &key).await;
        mine["spent_micros"] == 4 * COST_MICROS && mine["held_usd"] == 0.0
    })
    .await;
}
