//! OpenTelemetry traces: an `aigw ingress` and an `aigw dispatcher`
//! process export OTLP/HTTP protobuf to a receiver of this test, and one
//! request's spans (the ingress's server span, its publish span, the
//! dispatcher's consumer span, the upstream attempt and the event commit)
//! form one tree under the caller's `traceparent`, with the GenAI
//! attributes, no prompt or completion text unless `AIGW_TRACE_CONTENT=true`,
//! the trace id in the JSON logs, and the batch flushed on SIGTERM.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, free_port, user, wait_until};
use crate::upstream::{self, Script};

const PROMPT: &str = "prompt-canary-7f3e: what is the airspeed of a swallow?";
const COMPLETION: &str = "completion-canary-91ab: African or European?";

/// OTLP span kinds (`opentelemetry.proto.trace.v1.Span.SpanKind`).
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Seen {
    /// The exporting process's `aigw.role` resource attribute.
    role: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
}

impl Seen {
    fn attr(&self, key: &str) -> &str {
        self.attrs
            .get(key)
            .unwrap_or_else(|| panic!("span {:?} has no {key}: {:?}", self.name, self.attrs))
    }
}

fn render(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| render(&Some(v.clone())))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), render(&kv.value)))
        .collect()
}

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Seen>>>,
    /// Every export as received (for searching text anywhere in it).
    raw: Arc<Mutex<Vec<String>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

/// `POST /v1/traces`: an OTLP/HTTP protobuf export.
async fn export(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    received.content_types.lock().unwrap().push(content_type);
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    received.raw.lock().unwrap().push(format!("{request:?}"));
    let mut spans = received.spans.lock().unwrap();
    for resource_spans in &request.resource_spans {
        let resource = attrs(
            resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default(),
        );
        let role = resource.get("aigw.role").cloned().unwrap_or_default();
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                spans.push(Seen {
                    role: role.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    attrs: attrs(&span.attributes),
                });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// A small OTLP/HTTP receiver.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

/// The ingress and dispatcher processes; killed when dropped.
struct Roles {
    ingress: Child,
    dispatcher: Child,
    base: String,
    ingress_log: PathBuf,
}

impl Roles {
    /// Starts both, exporting to `collector` (the ingress through the
    /// standard variable, the dispatcher through aigw's own), with `vars`.
    async fn start(env: &TestEnv, collector: &str, vars: &[(&str, &str)]) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let ingress_log =
            std::env::temp_dir().join(format!("aigw-test-traces-{}.log", Uuid::now_v7().simple()));
        let spawn = |mut cmd: Command| {
            for (k, v) in vars {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        };
        let mut ingress = env.role_process("ingress");
        ingress
            .env("AIGW_LISTEN", &listen)
            .env("AIGW_LOG", "info")
            .env("AIGW_LOG_FORMAT", "json")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
            .stderr(Stdio::from(File::create(&ingress_log).unwrap()));
        let mut dispatcher = env.role_process("dispatcher");
        dispatcher.env("AIGW_OTLP_ENDPOINT", collector);
        let roles = Self {
            ingress: spawn(ingress),
            dispatcher: spawn(dispatcher),
            base: format!("http://{listen}"),
            ingress_log,
        };
        env.wait_ready(&roles.base).await;
        roles
    }

    /// SIGTERM to both; waits for them to exit cleanly.
    async fn stop(&mut self) {
        for child in [&mut self.ingress, &mut self.dispatcher] {
            let pid = child.id().to_string();
            let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(status.success());
        }
        for child in [&mut self.ingress, &mut self.dispatcher] {
            let mut waited = Duration::ZERO;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(waited < Duration::from_secs(20), "a role did not stop");
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            };
            assert!(status.success(), "{status:?}");
        }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        for child in [&mut self.ingress, &mut self.dispatcher] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.ingress_log);
    }
}

fn price(input: f64, output: f64) -> serde_json::Value {
    json!({"input_usd_per_mtok": input, "output_usd_per_mtok": output})
}

/// A deployment (database, NATS, the provider `tracy` serving `m` at a
/// price from `base_url`, a key) whose roles run as processes.
async fn deployment(base_url: &str) -> (TestEnv, String, String) {
    let env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        ..Default::default()
    })
    .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "tracy",
            "base_url": base_url,
            "api_key": "sk-upstream-secret",
            "models": ["m"],
            "prices": {"m": price(1.5, 2.0)},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (key_id, key) = env.add_key("traced").await;
    (env, key_id, key)
}

/// The spans of `trace_id` received so far.
fn of_trace(received: &Received, trace_id: &str) -> Vec<Seen> {
    received
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

fn one<'a>(spans: &'a [Seen], what: &str, f: impl Fn(&Seen) -> bool) -> &'a Seen {
    let found: Vec<&Seen> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {spans:#?}");
    found[0]
}

/// Waits until the five spans of one request are in, and checks their tree.
async fn request_tree(received: &Received, trace_id: &str, caller_span: &str) -> Vec<Seen> {
    wait_until(Duration::from_secs(20), || async {
        let spans = of_trace(received, trace_id);
        ["http", "publish", "dispatch", "upstream", "commit"]
            .iter()
            .all(|kind| spans.iter().any(|s| name_kind(s) == *kind))
    })
    .await;
    let spans = of_trace(received, trace_id);
    let http = one(&spans, "the ingress span", |s| s.kind == SERVER);
    assert_eq!(http.role, "ingress");
    assert_eq!(
        http.parent, caller_span,
        "the caller's traceparent is honoured"
    );
    assert_eq!(http.name, "POST /v1/chat/completions");
    let publish = one(&spans, "the publish span", |s| s.kind == PRODUCER);
    assert_eq!(publish.role, "ingress");
    assert_eq!(publish.parent, http.span_id);
    let dispatch = one(&spans, "the dispatch span", |s| s.kind == CONSUMER);
    assert_eq!(dispatch.role, "dispatcher");
    assert_eq!(
        dispatch.parent, publish.span_id,
        "the JetStream hop carries the context"
    );
    let attempt = one(&spans, "the attempt span", |s| s.name == "chat m");
    assert_eq!(attempt.role, "dispatcher");
    assert_eq!(attempt.kind, CLIENT);
    assert_eq!(attempt.parent, dispatch.span_id);
    let commit = one(&spans, "the commit span", |s| {
        s.name == "commit request events"
    });
    assert_eq!(commit.parent, dispatch.span_id);
    assert_eq!(commit.attr("db.system.name"), "postgresql");
    spans
}

fn name_kind(s: &Seen) -> &'static str {
    match (s.kind, s.name.as_str()) {
        (SERVER, _) => "http",
        (PRODUCER, _) => "publish",
        (CONSUMER, _) => "dispatch",
        (_, "chat m") => "upstream",
        (_, "commit request events") => "commit",
        _ => "other",
    }
}

fn traceparent() -> (String, String, String) {
    let trace_id = Uuid::new_v4().simple().to_string();
    let span_id = Uuid::new_v4().simple().to_string()[..16].to_string();
    let header = format!("00-{trace_id}-{span_id}-01");
    (trace_id, span_id, header)
}

#[tokio::test]
async fn one_request_is_one_trace_across_ingress_and_dispatcher() {
    let (collector, received) = receiver().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "m-2026-01-01",
            COMPLETION,
            11,
            7,
        )))
        .mount(&upstream)
        .await;
    let (env, key_id, key) = deployment(&format!("{}/v1", upstream.uri())).await;
    let roles = Roles::start(&env, &collector, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;

    let (trace_id, caller_span, header) = traceparent();
    let response = env
        .http
        .post(format!("{}/v1/chat/completions", roles.base))
        .bearer_auth(&key)
        .header("traceparent", header)
        .json(&json!({"model": "m", "messages": user(PROMPT), "temperature": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();

    let spans = request_tree(&received, &trace_id, &caller_span).await;
    let http = one(&spans, "http", |s| s.kind == SERVER);
    assert_eq!(http.attr("aigw.key_id"), key_id);
    assert_eq!(http.attr("aigw.request_id"), request_id);
    assert_eq!(http.attr("gen_ai.operation.name"), "chat");
    assert_eq!(http.attr("gen_ai.request.model"), "m");
    assert_eq!(http.attr("aigw.provider"), "tracy");
    assert_eq!(http.attr("http.response.status_code"), "200");

    let dispatch = one(&spans, "dispatch", |s| s.kind == CONSUMER);
    assert_eq!(dispatch.attr("messaging.system"), "nats");
    assert_eq!(dispatch.attr("aigw.request_id"), request_id);
    assert_eq!(dispatch.attr("aigw.key_id"), key_id);
    assert_eq!(dispatch.attr("aigw.provider"), "tracy");
    assert_eq!(dispatch.attr("aigw.attempts"), "1");
    assert_eq!(dispatch.attr("gen_ai.usage.input_tokens"), "11");
    assert_eq!(dispatch.attr("gen_ai.usage.output_tokens"), "7");

    let attempt = one(&spans, "attempt", |s| s.name == "chat m");
    for (key, value) in [
        ("gen_ai.system", "openai"),
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "m"),
        ("gen_ai.request.temperature", "0.5"),
        ("gen_ai.response.model", "m-2026-01-01"),
        ("gen_ai.response.id", "chatcmpl-test"),
        ("gen_ai.response.finish_reasons", "stop"),
        ("gen_ai.usage.input_tokens", "11"),
        ("gen_ai.usage.output_tokens", "7"),
        ("aigw.provider", "tracy"),
        ("aigw.attempt", "1"),
        ("aigw.key_id", key_id.as_str()),
        ("server.address", "127.0.0.1"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(attempt.attr(key), value, "{key}");
    }
    // 11 tokens at $1.5 and 7 at $2 per million: $0.0000305, rounded to
    // whole micro-dollars as recorded.
    let cost: f64 = attempt.attr("aigw.cost_usd").parse().unwrap();
    assert!((0.00003..=0.000031).contains(&cost), "{cost}");
    assert!(!attempt.attrs.contains_key("gen_ai.input.messages"));
    assert!(!attempt.attrs.contains_key("gen_ai.output.messages"));

    // No text, key or credential anywhere in what was exported.
    let raw = received.raw.lock().unwrap().join("\n");
    for secret in [
        "prompt-canary",
        "completion-canary",
        key.as_str(),
        "sk-upstream-secret",
    ] {
        assert!(!raw.contains(secret), "{secret} was exported");
    }
    assert!(
        received
            .content_types
            .lock()
            .unwrap()
            .iter()
            .all(|ct| ct == "application/x-protobuf")
    );

    // The ingress's JSON logs of the request name its trace.
    let logs = std::fs::read_to_string(&roles.ingress_log).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains(&request_id) && l.contains("\"request\""))
        .unwrap_or_else(|| panic!("no request log line in:\n{logs}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span"]["trace_id"], trace_id.as_str(), "{line}");

    // The largest tracestate a caller can send (32 members of 250-byte
    // keys and values) is served (the dispatcher continues the trace
    // without it); a malformed traceparent starts a trace of aigw's own.
    let tracestate: Vec<String> = (0..32)
        .map(|i| format!("{}={}", format!("k{i:02}").repeat(83), "v".repeat(250)))
        .collect();
    let (big_trace, _, big) = traceparent();
    for (header, state) in [
        (big.as_str(), tracestate.join(",")),
        ("00-not-a-trace-01", String::new()),
    ] {
        let response = env
            .http
            .post(format!("{}/v1/chat/completions", roles.base))
            .bearer_auth(&key)
            .header("traceparent", header)
            .header("tracestate", state)
            .json(&json!({"model": "m", "messages": user("hi")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let of_request = |kind: i32| {
            received
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.kind == kind && s.attrs.get("aigw.request_id") == Some(&request_id))
                .cloned()
        };
        wait_until(Duration::from_secs(20), || async {
            of_request(SERVER).is_some() && of_request(CONSUMER).is_some()
        })
        .await;
        let http = of_request(SERVER).unwrap();
        let dispatch = of_request(CONSUMER).unwrap();
        assert_eq!(dispatch.trace_id, http.trace_id);
        if header == big {
            assert_eq!(http.trace_id, big_trace);
        } else {
            assert_eq!(http.parent, "", "a root span");
            assert_ne!(http.trace_id, trace_id);
        }
    }
}

#[tokio::test]
async fn content_is_traced_only_when_asked_and_shutdown_flushes_the_batch() {
    let (collector, received) = receiver().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", COMPLETION, 11, 7)))
        .mount(&upstream)
        .await;
    let (env, _, key) = deployment(&format!("{}/v1", upstream.uri())).await;
    // A schedule far longer than the test: only the flush on shutdown
    // gets the spans out.
    let mut roles = Roles::start(
        &env,
        &collector,
        &[
            ("AIGW_TRACE_CONTENT", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    )
    .await;

    let (trace_id, caller_span, header) = traceparent();
    let response = env
        .http
        .post(format!("{}/v1/chat/completions", roles.base))
        .bearer_auth(&key)
        .header("traceparent", header)
        .json(&json!({"model": "m", "messages": user(PROMPT)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The dispatcher records the request right after answering.
    wait_until(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_type = 'request'
             AND event_type IN ('RequestCompleted', 'RequestFailed')",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert!(
        of_trace(&received, &trace_id).is_empty(),
        "exported before the schedule"
    );

    roles.stop().await;
    let spans = request_tree(&received, &trace_id, &caller_span).await;
    let attempt = one(&spans, "attempt", |s| s.name == "chat m");
    assert!(
        attempt.attr("gen_ai.input.messages").contains(PROMPT),
        "{:?}",
        attempt.attrs
    );
    assert!(attempt.attr("gen_ai.output.messages").contains(COMPLETION));
}

#[tokio::test]
async fn a_streamed_answer_is_traced_with_its_content_when_asked() {
    let (collector, received) = receiver().await;
    let upstream = upstream::start(Script {
        pieces: vec!["stream-canary ".into(), "in ".into(), "pieces".into()],
        delay: Duration::from_millis(10),
        finish: true,
        break_after: None,
    })
    .await;
    let (env, _, key) = deployment(&upstream.base_url).await;
    let roles = Roles::start(
        &env,
        &collector,
        &[
            ("AIGW_TRACE_CONTENT", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;

    let (trace_id, caller_span, header) = traceparent();
    let response = env
        .http
        .post(format!("{}/v1/chat/completions", roles.base))
        .bearer_auth(&key)
        .header("traceparent", header)
        .json(&json!({"model": "m", "messages": user(PROMPT), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("[DONE]"), "{body}");

    let spans = request_tree(&received, &trace_id, &caller_span).await;
    let attempt = one(&spans, "attempt", |s| s.name == "chat m");
    assert!(attempt.attr("gen_ai.input.messages").contains(PROMPT));
    assert!(
        attempt
            .attr("gen_ai.output.messages")
            .contains("stream-canary in pieces"),
        "{:?}",
        attempt.attrs
    );
    assert!(attempt.attrs.contains_key("gen_ai.response.model"));
    assert!(attempt.attrs.contains_key("gen_ai.usage.output_tokens"));
}

#[tokio::test]
async fn a_gemini_key_in_the_query_is_never_logged_or_traced() {
    let (collector, received) = receiver().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", COMPLETION, 11, 7)))
        .mount(&upstream)
        .await;
    let (env, _, key) = deployment(&format!("{}/v1", upstream.uri())).await;
    let mut roles = Roles::start(&env, &collector, &[]).await;
    let wrong = "aig_wrong-query-canary";
    let mut traces = Vec::new();
    for (k, status) in [(key.as_str(), 200), (wrong, 401)] {
        let (trace_id, _, header) = traceparent();
        let response = env
            .http
            .post(format!(
                "{}/v1beta/models/m:generateContent?key={k}",
                roles.base
            ))
            .header("traceparent", header)
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        traces.push(trace_id);
    }
    wait_until(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_type = 'request'
             AND event_type IN ('RequestCompleted', 'RequestFailed')",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    roles.stop().await;
    for trace_id in &traces {
        wait_until(Duration::from_secs(20), || async {
            of_trace(&received, trace_id)
                .iter()
                .any(|s| s.kind == SERVER)
        })
        .await;
        let spans = of_trace(&received, trace_id);
        let http = one(&spans, "the ingress span", |s| s.kind == SERVER);
        assert_eq!(http.attr("url.path"), "/v1beta/models/m:generateContent");
    }
    let exported = received.raw.lock().unwrap().join("\n");
    let log = std::fs::read_to_string(&roles.ingress_log).unwrap();
    assert!(log.contains("/v1beta/models/m:generateContent"), "{log}");
    for secret in [key.as_str(), wrong] {
        assert!(!exported.contains(secret), "a key in the traces");
        assert!(!log.contains(secret), "a key in the log:\n{log}");
    }
}
