//! Billing, request log and usage views; cost audits (CLI and HTTP); rebuilds.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{MASTER_KEY, Options, TestEnv, completion, user, wait_until};

/// A provider serving `m` (priced: $1 in, $2 out per million tokens, so 10 in
/// + 4 out cost 18 micro-dollars) and `bad` (always 500, unpriced).
async fn priced_provider(env: &TestEnv) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"model": "bad"})))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 10, 4)))
        .mount(&mock)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream",
            "models": ["m", "bad"],
            "prices": {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

async fn get(env: &TestEnv, path: &str) -> Value {
    let r = env.admin(reqwest::Method::GET, path).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

pub async fn projected_requests(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM request_log WHERE finished_at IS NOT NULL")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Every row of every view, as sorted JSON text.
pub async fn snapshot(env: &TestEnv) -> Vec<String> {
    let mut all = Vec::new();
    for view in [
        "usage_daily",
        "usage_hourly",
        "billing_monthly",
        "request_log",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT '{view} ' || to_jsonb(t)::text FROM {view} t ORDER BY 1"
        ))
        .fetch_all(&env.pool)
        .await
        .unwrap();
        all.extend(rows);
    }
    all
}

fn aigw(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.args(args)
        .env("AIGW_NATS_URL", &env.common.nats_url)
        .env("AIGW_DATABASE_URL", &env.common.database_url)
        .env("AIGW_NAMESPACE", &env.common.namespace)
        .env("AIGW_MASTER_KEY", MASTER_KEY)
        .env("AIGW_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

pub async fn run_aigw(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = aigw(env, args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

#[tokio::test]
async fn billing_request_log_and_stats_are_built_from_the_events() {
    let env = TestEnv::start().await;
    let _mock = priced_provider(&env).await;
    let (a_id, a) = env.add_key("a").await;
    let (_, b) = env.add_key("b").await;
    for _ in 0..3 {
        let r = env
            .chat(&a, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = env
        .chat(&a, json!({"model": "bad", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 502);
    let r = env
        .chat(&b, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(30), || async {
        projected_requests(&env).await == 5
    })
    .await;

    let bill = get(
        &env,
        &format!("/admin/api/billing?key={a_id}&from={}", today()),
    )
    .await;
    let bill = &bill["data"][0];
    assert_eq!(bill["key_id"], a_id.as_str());
    assert_eq!(bill["requests"], 4);
    assert_eq!(bill["errors"], 1);
    assert_eq!(bill["cost_micros"], 54);
    let items = bill["line_items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["model"], "bad");
    assert_eq!(items[1]["model"], "m");
    assert_eq!(items[1]["prompt_tokens"], 30);
    assert_eq!(items[1]["cost_micros"], 54);
    let all = get(&env, "/admin/api/billing").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);

    // The request log, newest first, two per page.
    let page = get(&env, &format!("/admin/api/requests?key={a_id}&limit=2")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["model"], "bad");
    assert_eq!(page["data"][0]["status"], "failed");
    assert_eq!(page["data"][0]["http_status"], 502);
    let next = page["next"].as_str().unwrap();
    let rest = get(
        &env,
        &format!("/admin/api/requests?key={a_id}&limit=2&before={next}"),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2);
    assert_eq!(rest["has_more"], false);
    let ok = &rest["data"][0];
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["provider"], "p");
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["prompt_tokens"], 10);
    assert_eq!(ok["cost_micros"], 18);
    assert_eq!(ok["stream"], false);
    assert!(ok.get("messages").is_none());
    let failed = get(&env, "/admin/api/requests?status=failed").await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);

    // Usage by hour, provider and model, with latency percentiles.
    let stats = get(&env, &format!("/admin/api/stats?group=hour&key={a_id}")).await;
    let rows = stats["data"].as_array().unwrap();
    let m = rows.iter().find(|r| r["model"] == "m").unwrap();
    assert_eq!(m["provider"], "p");
    assert_eq!(m["requests"], 3);
    assert_eq!(m["cost_micros"], 54);
    assert!(m["p95_latency_ms"].as_f64().unwrap() >= m["p50_latency_ms"].as_f64().unwrap());
    let bad = rows.iter().find(|r| r["model"] == "bad").unwrap();
    assert_eq!(bad["errors"], 1);
    let by_day = get(&env, "/admin/api/stats").await;
    assert_eq!(by_day["group"], "day");
    assert_eq!(by_day["data"].as_array().unwrap().len(), 3);
    let r = env
        .admin(reqwest::Method::GET, "/admin/api/stats?group=week")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn audit_finds_a_corrupted_billing_row_and_a_rebuild_restores_the_views() {
    let env = TestEnv::start().await;
    let _mock = priced_provider(&env).await;
    let (a_id, a) = env.add_key("a").await;
    let (b_id, b) = env.add_key("b").await;
    for key in [&a, &a, &b] {
        let r = env
            .chat(key, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = env
        .chat(&b, json!({"model": "bad", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 502);
    wait_until(Duration::from_secs(30), || async {
        projected_requests(&env).await == 4
    })
    .await;

    let day = today();
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/audit")
        .json(&json!({"from": day, "to": day}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["requests"], 4);
    assert_eq!(report["expected_cost_micros"], 54);
    let out = run_aigw(&env, &["audit", "--from", &day, "--to", &day]).await;
    assert!(out.status.success(), "{out:?}");

    let live = snapshot(&env).await;
    sqlx::query(
        "UPDATE billing_monthly SET cost_micros = cost_micros + 1000
         WHERE key_id = $1::uuid AND model = 'm'",
    )
    .bind(&a_id)
    .execute(&env.pool)
    .await
    .unwrap();

    let out = run_aigw(
        &env,
        &["audit", "--from", &day, "--to", &day, "--format", "csv"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let cells: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(cells[0], a_id);
    assert_eq!(cells[2], "m");
    assert_eq!(cells[3], "0.000036");
    assert_eq!(cells[4], "0.001036");

    let out = run_aigw(
        &env,
        &["audit", "--from", &day, "--to", &day, "--format", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["differences"].as_array().unwrap().len(), 1);
    assert_eq!(json["differences"][0]["expected"]["cost_micros"], 36);
    assert_eq!(json["differences"][0]["recorded"]["cost_micros"], 1036);

    let r = env
        .admin(reqwest::Method::POST, "/admin/api/audit")
        .json(&json!({"from": day, "to": day, "key": b_id}))
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["clean"], true, "{report}");

    // A rebuild (while the live projector runs) gives back the live views.
    let out = run_aigw(&env, &["projector", "rebuild"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(snapshot(&env).await, live);
    let out = run_aigw(&env, &["audit", "--from", &day, "--to", &day]).await;
    assert!(out.status.success(), "{out:?}");
    // The live projector still works on the swapped tables.
    let r = env
        .chat(&a, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(30), || async {
        projected_requests(&env).await == 5
    })
    .await;
}

/// A child process killed when dropped, so a failed test leaves none behind.
pub struct Killed(Child);

impl Killed {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn spawn_projector(env: &TestEnv) -> Killed {
    Killed(
        aigw(env, &["projector"])
            .env("AIGW_PROJECTOR_BATCH", "3")
            .env("AIGW_PROJECTOR_POLL", "10ms")
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_projector_killed_mid_run_never_double_counts() {
    let env = TestEnv::with(Options {
        projector: false,
        ..Options::default()
    })
    .await;
    let _mock = priced_provider(&env).await;
    let (_, a) = env.add_key("a").await;
    for _ in 0..30 {
        let r = env
            .chat(&a, json!({"model": "m", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    // Kill projectors (tiny batches) mid-run a few times, then let one finish.
    for _ in 0..3 {
        let mut child = spawn_projector(&env);
        wait_until(Duration::from_secs(30), || async {
            projected_requests(&env).await > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        child.kill();
    }
    let mut child = spawn_projector(&env);
    wait_until(Duration::from_secs(30), || async {
        projected_requests(&env).await == 30
    })
    .await;
    child.kill();
    let live = snapshot(&env).await;
    let billed: i64 = sqlx::query_scalar("SELECT sum(cost_micros)::int8 FROM billing_monthly")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(billed, 30 * 18);
    let out = run_aigw(&env, &["projector", "rebuild"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(snapshot(&env).await, live);
}
