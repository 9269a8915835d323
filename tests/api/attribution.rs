//! Attribution (issue #13): a request's end user and tags, from the body or
//! the headers, through every endpoint into the outcome event, the request
//! log and billing grouped by any dimension (JSON and CSV).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{TestEnv, completion, user, wait_until};

/// A provider at $1 in / $2 out per million tokens: a chat costs 10 + 2*4 =
/// 18 micro-dollars, a stream 20 + 2*5 = 30, an embedding 100.
async fn provider(env: &TestEnv) -> MockServer {
    let mock = MockServer::start().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}});
    let sse = [
        chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
        chunk(json!({"content": "!"}), json!("stop")),
        usage,
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .collect::<String>()
        + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 10, 4)))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
            "model": "m",
            "usage": {"prompt_tokens": 100, "total_tokens": 100}
        })))
        .mount(&mock)
        .await;
    let price = json!({"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0});
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "p",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream",
            "models": ["m", "other"],
            "prices": {"m": price, "other": price},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    mock
}

async fn post(
    env: &TestEnv,
    key: &str,
    route: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> reqwest::Response {
    let mut request = env.http.post(env.url(route)).bearer_auth(key).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn admin_get(env: &TestEnv, route: &str) -> Value {
    let r = env.admin(reqwest::Method::GET, route).send().await.unwrap();
    assert_eq!(r.status(), 200, "{route}: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// A refused request: route, headers, body, and the param the 400 names.
type Refused<'a> = (&'a str, Vec<(&'a str, &'a str)>, Value, &'a str);

const SUMMED: [&str; 10] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "cost_micros",
    "unpriced_requests",
];

#[tokio::test]
async fn attribution_reaches_the_log_and_billing_groups_by_every_dimension() {
    let env = TestEnv::start().await;
    let _mock = provider(&env).await;
    let (key_a, secret_a) = env.add_key("a").await;
    let (key_b, secret_b) = env.add_key("b").await;

    // Refused before anything is queued, with the offending param.
    let nine = (1..=9)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let long = "t".repeat(65);
    let chat = json!({"model": "m", "messages": user("hi")});
    let bad: Vec<Refused> = vec![
        (
            "/v1/chat/completions",
            vec![("x-aigw-tags", nine.as_str())],
            chat.clone(),
            "x-aigw-tags",
        ),
        (
            "/v1/chat/completions",
            vec![("x-aigw-tags", "a b")],
            chat.clone(),
            "x-aigw-tags",
        ),
        (
            "/v1/chat/completions",
            vec![("x-aigw-tags", long.as_str())],
            chat.clone(),
            "x-aigw-tags",
        ),
        (
            "/v1/chat/completions",
            vec![],
            json!({"model": "m", "messages": user("hi"), "metadata": {"tags": "ok,no;pe"}}),
            "metadata.tags",
        ),
        (
            "/v1/embeddings",
            vec![("x-aigw-tags", nine.as_str())],
            json!({"model": "m", "input": "x"}),
            "x-aigw-tags",
        ),
        (
            "/v1/jobs",
            vec![],
            json!({"model": "m", "messages": user("hi"), "metadata": {"tags": nine}}),
            "metadata.tags",
        ),
    ];
    let too_long_user = "u".repeat(257);
    let mut bad = bad;
    bad.push((
        "/v1/chat/completions",
        vec![("x-aigw-user", too_long_user.as_str())],
        chat.clone(),
        "x-aigw-user",
    ));
    for (route, headers, body, param) in bad {
        let r = post(&env, &secret_a, route, &headers, body).await;
        assert_eq!(r.status(), 400, "{route} {headers:?}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
    }

    // Body attribution; headers win over it; every endpoint; a stream; a job.
    let mut ids = BTreeMap::new();
    let mut send =
        async |name: &str, secret: &str, route: &str, h: &[(&str, &str)], body: Value| {
            let r = post(&env, secret, route, h, body).await;
            assert!(r.status().is_success(), "{name}: {}", r.status());
            let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let _ = r.bytes().await.unwrap();
            ids.insert(name.to_string(), id);
        };
    send(
        "body",
        &secret_a,
        "/v1/chat/completions",
        &[],
        json!({"model": "m", "messages": user("hi"), "user": "alice",
               "metadata": {"tags": "env:prod, team/x,env:prod"}}),
    )
    .await;
    send(
        "header",
        &secret_a,
        "/v1/chat/completions",
        &[("x-aigw-user", "bob"), ("x-aigw-tags", "env:prod")],
        json!({"model": "other", "messages": user("hi"), "user": "not-bob",
               "metadata": {"tags": "ignored"}}),
    )
    .await;
    send(
        "stream",
        &secret_b,
        "/v1/chat/completions",
        &[("x-aigw-user", "carol"), ("x-aigw-tags", "stream")],
        json!({"model": "m", "messages": user("hi"), "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await;
    send(
        "embeddings",
        &secret_b,
        "/v1/embeddings",
        &[("x-aigw-tags", "emb,team/x")],
        json!({"model": "m", "input": "x", "user": "alice"}),
    )
    .await;
    send(
        "plain",
        &secret_b,
        "/v1/chat/completions",
        &[],
        chat.clone(),
    )
    .await;
    let job = post(
        &env,
        &secret_a,
        "/v1/jobs",
        &[("x-aigw-user", "dave")],
        json!({"model": "m", "messages": user("hi"), "metadata": {"tags": "batch"}}),
    )
    .await;
    assert_eq!(job.status(), 202);
    let job: Value = job.json().await.unwrap();
    ids.insert("job".into(), job["id"].as_str().unwrap().to_string());

    // Every outcome is projected into the request log with its attribution.
    wait_until(Duration::from_secs(30), || async {
        crate::billing::projected_requests(&env).await == 6
    })
    .await;
    let row = async |name: &str| -> (Option<String>, Option<Vec<String>>) {
        sqlx::query_as("SELECT user_id, tags FROM request_log WHERE id = $1::uuid")
            .bind(&ids[name])
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        row("body").await,
        (Some("alice".into()), strings(&["env:prod", "team/x"]))
    );
    assert_eq!(
        row("header").await,
        (Some("bob".into()), strings(&["env:prod"]))
    );
    assert_eq!(
        row("stream").await,
        (Some("carol".into()), strings(&["stream"]))
    );
    assert_eq!(
        row("embeddings").await,
        (Some("alice".into()), strings(&["emb", "team/x"]))
    );
    assert_eq!(row("plain").await, (None, None));
    assert_eq!(row("job").await, (Some("dave".into()), strings(&["batch"])));
    // The outcome event carries it (events are the truth).
    let events = env.request_events(&ids["header"]).await;
    let (_, outcome) = events.last().unwrap();
    assert_eq!(
        outcome["RequestCompleted"]["attribution"],
        json!({"user": "bob", "tags": ["env:prod"]})
    );

    // The request lists filter by user and by tag.
    let by_tag = admin_get(&env, "/admin/api/requests?tag=env:prod").await;
    let found: Vec<&str> = by_tag["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(found.len(), 2, "{by_tag}");
    assert!(found.contains(&ids["body"].as_str()) && found.contains(&ids["header"].as_str()));
    let by_user = admin_get(&env, "/admin/api/requests?user=alice").await;
    assert_eq!(by_user["data"].as_array().unwrap().len(), 2, "{by_user}");
    assert_eq!(by_user["data"][0]["user"], "alice");
    let usage_by_user = admin_get(&env, "/admin/api/usage/requests?user=carol").await;
    assert_eq!(
        usage_by_user["data"].as_array().unwrap().len(),
        1,
        "{usage_by_user}"
    );
    assert_eq!(usage_by_user["data"][0]["tags"], json!(["stream"]));
    let usage_by_tag = admin_get(&env, "/admin/api/usage/requests?tag=team/x").await;
    assert_eq!(
        usage_by_tag["data"].as_array().unwrap().len(),
        2,
        "{usage_by_tag}"
    );
    for route in [
        "/admin/api/requests?tag=a%20b",
        "/admin/api/usage/requests?tag=a%20b",
    ] {
        let r = env.admin(reqwest::Method::GET, route).send().await.unwrap();
        assert_eq!(r.status(), 400, "{route}");
    }

    // Billing by every dimension: rows sum to the total, except tags,
    // where a request counts once per tag.
    let total = admin_get(&env, "/admin/api/billing?group_by=key").await["total"].clone();
    assert_eq!(total["requests"], 6, "{total}");
    // 18 + 18 + 30 + 100 + 18 + 18 micro-dollars.
    assert_eq!(total["cost_micros"], 202, "{total}");
    for dimension in ["team", "project", "key", "user", "tag", "model", "provider"] {
        let report = admin_get(&env, &format!("/admin/api/billing?group_by={dimension}")).await;
        assert_eq!(report["total"], total, "{dimension}");
        let rows = report["data"].as_array().unwrap();
        for column in SUMMED {
            let sum: i64 = rows.iter().map(|r| r[column].as_i64().unwrap()).sum();
            if dimension == "tag" {
                assert!(
                    sum >= total[column].as_i64().unwrap(),
                    "{dimension} {column}"
                );
            } else {
                assert_eq!(
                    sum,
                    total[column].as_i64().unwrap(),
                    "{dimension} {column}: {report}"
                );
            }
        }
        assert_eq!(report["rows_sum_to_total"], dimension != "tag");

        // The CSV has the same numbers, row for row.
        let csv = env
            .admin(
                reqwest::Method::GET,
                &format!("/admin/api/billing?group_by={dimension}&format=csv"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(csv.status(), 200);
        assert!(
            csv.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(
            csv.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let text = csv.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().unwrap().clone();
        assert_eq!(&header[0], dimension);
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), rows.len(), "{dimension}");
        for (record, row) in records.iter().zip(rows) {
            assert_eq!(&record[0], row["group"].as_str().unwrap_or(""));
            for (i, name) in header.iter().enumerate().skip(1) {
                if name == "cost_usd" {
                    let micros = row["cost_micros"].as_i64().unwrap();
                    assert_eq!(
                        &record[i],
                        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
                    );
                } else {
                    assert_eq!(
                        record[i].parse::<i64>().unwrap(),
                        row[name].as_i64().unwrap(),
                        "{dimension} {name}"
                    );
                }
            }
        }
    }
    // The groups themselves.
    let by = async |dimension: &str| -> BTreeMap<String, i64> {
        admin_get(&env, &format!("/admin/api/billing?group_by={dimension}")).await["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["group"].as_str().unwrap_or("(none)").to_string(),
                    r["requests"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let tags = by("tag").await;
    assert_eq!(tags["env:prod"], 2);
    assert_eq!(tags["team/x"], 2);
    assert_eq!(tags["(none)"], 1);
    let users = by("user").await;
    assert_eq!(users["alice"], 2);
    assert_eq!(users["(none)"], 1);
    let keys = by("key").await;
    assert_eq!((keys[&key_a], keys[&key_b]), (3, 3));
    assert_eq!(by("model").await["other"], 1);
    assert_eq!(by("provider").await["p"], 6);
    // `Accept: text/csv` asks for CSV too; a key filter narrows the report.
    let accept = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/api/billing?group_by=user&key={key_a}"),
        )
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let text = accept.text().await.unwrap();
    assert!(text.starts_with("user,requests,"), "{text}");
    assert_eq!(text.lines().count(), 1 + 3, "{text}");

    // Bad reports are 400s naming their param; no group_by keeps the
    // monthly shape.
    for (query, param) in [
        ("group_by=tenant", "group_by"),
        ("group_by=key&format=xml", "format"),
        ("group_by=key&from=yesterday", "from"),
        ("group_by=key&from=2020-01-01&to=2026-01-01", "to"),
        ("format=csv", "format"),
    ] {
        let r = env
            .admin(reqwest::Method::GET, &format!("/admin/api/billing?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{query}: {e}");
    }
    let monthly = admin_get(&env, "/admin/api/billing").await;
    let cost: i64 = monthly["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["cost_micros"].as_i64().unwrap())
        .sum();
    assert_eq!(cost, 202, "{monthly}");
}
