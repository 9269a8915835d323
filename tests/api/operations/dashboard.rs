//! The Grafana dashboard (`deploy/grafana/aigw.json`): a dashboard Grafana
//! can import (a `${datasource}` variable, panels on the 24-column grid
//! without overlaps, PromQL targets that parse, only variables it defines),
//! that queries only metrics a running aigw exports, and that shows every
//! metric it exports.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user};

const DASHBOARD: &str = include_str!("../../../deploy/grafana/aigw.json");

/// Metric names an expression selects.
#[derive(Default)]
struct Selected(BTreeSet<String>);

impl ExprVisitor for Selected {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = vs.name.clone().or_else(|| {
            vs.matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__")
                .map(|m| m.value.clone())
        });
        match name {
            Some(name) => {
                self.0.insert(name);
                Ok(true)
            }
            None => Err(format!("a selector without a metric name: {expr}")),
        }
    }
}

/// The Grafana variables (`$name`, `${name}`, `${name:format}`) `text`
/// uses, and `text` with each replaced by what PromQL can parse in its
/// place (an interval for the built-in ones, `.*` for the dashboard's).
fn grafana_variables(text: &str) -> (BTreeSet<String>, String) {
    let mut used = BTreeSet::new();
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(inner) => {
                let end = inner.find('}').expect("unclosed ${");
                let name = inner[..end].split(':').next().unwrap();
                (name.to_string(), end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (after[..end].to_string(), end)
            }
        };
        assert!(!name.is_empty(), "a lone $ in {text}");
        if name.starts_with("__") {
            out.push_str("5m");
        } else {
            out.push_str(".*");
            used.insert(name);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    (used, out)
}

/// Parses one PromQL expression of the dashboard; the metric names it
/// selects.
fn metrics_of(expr: &str, variables: &HashSet<String>) -> BTreeSet<String> {
    let (used, promql) = grafana_variables(expr);
    for v in &used {
        assert!(
            variables.contains(v),
            "${v} is not a variable of the dashboard: {expr}"
        );
    }
    let parsed = parser::parse(&promql).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut selected = Selected::default();
    walk_expr(&mut selected, &parsed).unwrap();
    selected.0
}

/// Checks the dashboard's shape; every metric name it queries.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    for field in ["title", "uid"] {
        assert!(
            dashboard[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}"
        );
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    let templating = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        templating.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable named datasource"
    );
    let variables: HashSet<String> = templating
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let mut metrics = BTreeSet::new();
    for v in templating.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], datasource, "variable {}", v["name"]);
        let query = v["definition"].as_str().unwrap();
        assert_eq!(v["query"]["query"], query);
        // label_values(<selector>, <label>)
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(metric, label): {query}"))
            .0;
        metrics.extend(metrics_of(inner, &variables));
    }

    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() > 10);
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id twice"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: off the grid {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        match panel["type"].as_str().unwrap() {
            "row" => assert_eq!(panel["panels"], json!([]), "{title}"),
            "timeseries" | "stat" | "gauge" | "bargauge" | "table" => {
                assert_eq!(panel["datasource"], datasource, "{title}");
                let targets = panel["targets"].as_array().unwrap();
                assert!(!targets.is_empty(), "{title}: no target");
                let mut refs = HashSet::new();
                for t in targets {
                    assert_eq!(t["datasource"], datasource, "{title}");
                    assert!(
                        refs.insert(t["refId"].as_str().unwrap()),
                        "{title}: refId twice"
                    );
                    metrics.extend(metrics_of(t["expr"].as_str().unwrap(), &variables));
                }
            }
            other => panic!("{title}: unexpected panel type {other}"),
        }
    }
    metrics
}

/// Metric families on a `/metrics` page: name and type.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Whether `name` is a series of one of `families` (a histogram or
/// summary also has `_sum` and `_count`, a histogram `_bucket`).
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    let kind = |base: &str| families.get(base).map(String::as_str);
    if let Some(base) = name
        .strip_suffix("_sum")
        .or_else(|| name.strip_suffix("_count"))
    {
        return matches!(kind(base), Some("summary" | "histogram"));
    }
    name.strip_suffix("_bucket")
        .is_some_and(|base| kind(base) == Some("histogram"))
}

/// Which family `name` (a series name) belongs to.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> &'a str {
    ["_sum", "_count", "_bucket"]
        .iter()
        .find_map(|s| {
            name.strip_suffix(s)
                .filter(|base| families.contains_key(*base))
        })
        .unwrap_or(name)
}

#[test]
fn the_dashboard_is_valid_and_its_expressions_parse() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let metrics = queried_metrics(&dashboard);
    assert!(
        metrics.iter().all(|m| m.starts_with("aigw_")),
        "{metrics:?}"
    );
    // The checks themselves: a broken expression, an unknown variable.
    let vars = HashSet::from(["instance".to_string()]);
    assert!(
        std::panic::catch_unwind(|| metrics_of("sum(rate(aigw_x[$__rate_interval])", &vars))
            .is_err()
    );
    assert!(
        std::panic::catch_unwind(|| metrics_of("aigw_x{provider=~\"$provider\"}", &vars)).is_err()
    );
    assert_eq!(
        metrics_of(
            "sum(rate(aigw_a{instance=~\"${instance:regex}\"}[$__rate_interval])) / max(aigw_b)",
            &vars
        ),
        BTreeSet::from(["aigw_a".to_string(), "aigw_b".to_string()])
    );
}

#[tokio::test]
async fn the_dashboard_queries_every_metric_aigw_exports_and_no_other() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let queried = queried_metrics(&dashboard);

    // Traffic that moves every metric that is not about a rare event: a
    // key with a rate limit, a budget and a concurrency cap; a plain and a
    // streamed chat; a job with a webhook, and one cancelled while its
    // provider is slow; health probes; the projector.
    let env = TestEnv::with(Options {
        health_probe_interval: Some(Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    let chunk = json!({
        "id": "chatcmpl-d", "object": "chat.completion.chunk", "created": 1_764_000_000,
        "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("take your time"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("m", "late", 3, 1))
                .set_delay(Duration::from_secs(30)),
        )
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!("data: {chunk}\n\ndata: [DONE]\n\n"),
            "text/event-stream",
        ))
        .with_priority(2)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "hi", 3, 1)))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]})),
        )
        .mount(&mock)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    env.add_provider("dash", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let created: Value = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "dash", "rpm": 1000, "budget_usd": 10.0,
                      "budget_period": "total", "max_concurrency": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    for stream in [false, true] {
        let r = env
            .chat(
                key,
                json!({"model": "m", "messages": user("hi"), "stream": stream}),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let job: Value = env
        .http
        .post(env.url("/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "messages": user("hi"),
                      "webhook_url": format!("{}/hook", receiver.uri())}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_url = env.url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()));
    let slow: Value = env
        .http
        .post(env.url("/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "messages": user("take your time")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancelled = env
        .http
        .delete(env.url(&format!("/v1/jobs/{}", slow["id"].as_str().unwrap())))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);

    // Everything arrives asynchronously (webhook, probes, projector).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (page, missing) = loop {
        let page = env
            .http
            .get(env.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let found = families(&page);
        let missing: Vec<&String> = queried.iter().filter(|m| !exported(m, &found)).collect();
        let delivered = env
            .http
            .get(&job_url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["webhook"]["status"]
            == "delivered";
        if (missing.is_empty() && delivered) || Instant::now() > deadline {
            let missing: Vec<String> = missing.into_iter().cloned().collect();
            break (page, missing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics aigw does not export: {missing:?}"
    );
    let found = families(&page);
    let shown: BTreeSet<&str> = queried.iter().map(|m| family_of(m, &found)).collect();
    let unshown: Vec<&String> = found
        .keys()
        .filter(|f| f.starts_with("aigw_") && !shown.contains(f.as_str()))
        .collect();
    assert!(
        unshown.is_empty(),
        "aigw exports metrics no panel of deploy/grafana/aigw.json shows (add one): {unshown:?}"
    );
}
