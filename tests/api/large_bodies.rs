//! Bodies up to the configured limit (`AIGW_MAX_BODY_BYTES`, 10 MiB here)
//! work end to end although the test NATS server keeps its default 1 MiB
//! `max_payload`: requests larger than one NATS message reach the provider
//! intact, synchronously and as jobs, and their stored bodies are deleted
//! afterwards; answers larger than one message (embeddings, images, a chat
//! completion, a single SSE chunk, an error) reach the caller intact,
//! synchronously, by job polling, by webhook and by idempotent replay; a
//! body over the limit is a 413 with OpenAI's error JSON. The same holds on
//! a NATS server with a `max_payload` far below aigw's usual frame size.

use std::time::Duration;

use aigw_dispatcher::upstream::{Part, multipart};
use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, sse_data, user, wait_until};
use crate::jobs::signature;

/// `AIGW_MAX_BODY_BYTES` of these tests (aigw's default).
const LIMIT: usize = 10 * 1024 * 1024;

async fn start() -> TestEnv {
    TestEnv::with(Options {
        max_body_bytes: LIMIT,
        ..Default::default()
    })
    .await
}

/// `len` base64 characters, varied as an image's would be (xorshift).
fn base64_data(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// A vision chat body of about `size` bytes: a question and a base64 PNG
/// in an `image_url` content part.
fn vision_body(size: usize, seed: u64) -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You describe images precisely."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {
                    "url": format!("data:image/png;base64,iVBORw0KGgo{}", base64_data(size, seed)),
                    "detail": "high",
                }},
            ]},
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "seed": 7,
    })
}

/// The bytes wiremock answers for `set_body_json(v)`.
fn bytes_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn without_model(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("model");
    v
}

/// The body the provider got last, parsed.
async fn last_sent(mock: &MockServer) -> Value {
    mock.received_requests()
        .await
        .unwrap()
        .last()
        .unwrap()
        .body_json()
        .unwrap()
}

async fn post(env: &TestEnv, key: &str, route: &str, body: &Value) -> reqwest::Response {
    env.http
        .post(env.url(route))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_job(env: &TestEnv, key: &str, id: &str) -> Value {
    env.http
        .get(env.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Submits a job and waits until it succeeded; returns it.
async fn job_succeeds(env: &TestEnv, key: &str, body: &Value) -> Value {
    let r = post(env, key, "/v1/jobs", body).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(Duration::from_secs(60), || async {
        let job = get_job(env, key, &id).await;
        assert!(
            !["failed", "cancelled"].contains(&job["status"].as_str().unwrap()),
            "{}",
            job["error"]
        );
        job["status"] == "succeeded"
    })
    .await;
    get_job(env, key, &id).await
}

/// Names of the objects left in the namespace's bodies bucket.
async fn stored_bodies(env: &TestEnv) -> Vec<String> {
    let client = async_nats::connect(&env.common.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = aigw_events::Names::new(&env.common.namespace)
        .unwrap()
        .bodies_bucket();
    let store = js.get_object_store(&bucket).await.unwrap();
    let mut list = store.list().await.unwrap();
    let mut names = vec![];
    while let Some(info) = list.next().await {
        names.push(info.unwrap().name);
    }
    names
}

#[tokio::test]
async fn chat_bodies_larger_than_a_nats_message_reach_the_provider_intact() {
    let env = start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-4o",
            "A red fox.",
            900,
            5,
        )))
        .expect(4)
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["gpt-4o"])
        .await;
    let (_, key) = env.add_key("vision").await;

    for (n, size) in [2_000_000, 9_000_000].into_iter().enumerate() {
        let body = vision_body(size, n as u64);
        let len = serde_json::to_vec(&body).unwrap().len();
        assert!(len > size && len < LIMIT, "{len}");

        let r = post(&env, &key, "/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 200, "{size}: {}", r.text().await.unwrap());
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], "A red fox.");
        assert!(
            without_model(last_sent(&mock).await) == without_model(body.clone()),
            "the provider got another body than the caller's {len} bytes"
        );

        let job = job_succeeds(&env, &key, &body).await;
        assert_eq!(
            job["result"]["choices"][0]["message"]["content"],
            "A red fox."
        );
        assert!(
            without_model(last_sent(&mock).await) == without_model(body),
            "the provider got another body than the job's {len} bytes"
        );
    }
    // Each stored body is deleted once its request is recorded.
    wait_until(Duration::from_secs(30), || async {
        stored_bodies(&env).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_served_and_one_byte_more_is_a_413() {
    let env = start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-4o", "ok", 9, 1)))
        .expect(1)
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["gpt-4o"])
        .await;
    let (_, key) = env.add_key("k").await;
    const HEAD: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":""#;
    const TAIL: &str = r#""}]}"#;
    let of_len = |len: usize| format!("{HEAD}{}{TAIL}", "x".repeat(len - HEAD.len() - TAIL.len()));
    let send = |route: &'static str, body: String| {
        env.http
            .post(env.url(route))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = send("/v1/chat/completions", of_len(LIMIT)).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = last_sent(&mock).await;
    assert_eq!(
        sent["messages"][0]["content"].as_str().unwrap().len(),
        LIMIT - HEAD.len() - TAIL.len()
    );

    for route in ["/v1/chat/completions", "/v1/jobs"] {
        let r = send(route, of_len(LIMIT + 1)).await.unwrap();
        assert_eq!(r.status(), 413, "{route}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert_eq!(err["error"]["code"], "request_too_large", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&LIMIT.to_string()),
            "{err}"
        );
    }
}

#[tokio::test]
async fn answers_larger_than_a_nats_message_reach_the_caller_intact() {
    let env = start().await;
    let mock = MockServer::start().await;
    // About 3 MB each: 150,000 floats; one 3 MB PNG; a 3 MB completion.
    let vector: Vec<f64> = (0..150_000)
        .map(|i| ((i * 7919) % 100_003) as f64 / 100_003.0 - 0.5)
        .collect();
    let embeddings = json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "emb",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    });
    let image = json!({
        "created": 1_764_000_000,
        "data": [{"b64_json": format!("iVBORw0KGgo{}", base64_data(3_000_000, 3)), "revised_prompt": "a fox"}]
    });
    let big_completion = completion("big", &base64_data(3_000_000, 4), 10, 750_000);
    for (route, answer) in [
        ("/v1/embeddings", &embeddings),
        ("/v1/images/generations", &image),
        ("/v1/chat/completions", &big_completion),
    ] {
        assert!(serde_json::to_vec(answer).unwrap().len() > 3_000_000);
        Mock::given(method("POST"))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&mock)
            .await;
    }
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["emb", "img", "big"])
        .await;
    let (_, key) = env.add_key("big").await;

    let r = post(
        &env,
        &key,
        "/v1/embeddings",
        &json!({"model": "emb", "input": "the fox"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The provider's bytes, unchanged.
    assert!(
        r.bytes().await.unwrap() == bytes_of(&embeddings),
        "embeddings"
    );

    let r = post(
        &env,
        &key,
        "/v1/images/generations",
        &json!({"model": "img", "prompt": "a fox", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == bytes_of(&image), "image");

    // A chat answer, stored for idempotent replays.
    let chat = json!({"model": "big", "messages": user("write a lot")});
    let ask = || {
        env.http
            .post(env.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "big-1")
            .json(&chat)
            .send()
    };
    let r = ask().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == bytes_of(&big_completion),
        "chat"
    );
    let again = ask().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(
        again.bytes().await.unwrap() == bytes_of(&big_completion),
        "replay"
    );

    // As a job: polled, delivered to its webhook, and replayed.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let mut job_body = chat.clone();
    job_body["webhook_url"] = json!(format!("{}/hook", receiver.uri()));
    let r = env
        .http
        .post(env.url("/v1/jobs"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "big-job")
        .json(&job_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(Duration::from_secs(60), || async {
        get_job(&env, &key, &id).await["webhook"]["status"] == "delivered"
    })
    .await;
    let job = get_job(&env, &key, &id).await;
    assert_eq!(job["status"], "succeeded");
    assert!(job["result"] == big_completion, "polled job");
    let hook = &receiver.received_requests().await.unwrap()[0];
    let secret = env
        .http
        .get(env.url("/v1/key"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        hook.headers["x-aigw-signature"].to_str().unwrap(),
        signature(&secret, &hook.body)
    );
    let delivered: Value = serde_json::from_slice(&hook.body).unwrap();
    assert!(delivered["result"] == big_completion, "webhook");
    let replayed = env
        .http
        .post(env.url("/v1/jobs"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "big-job")
        .json(&job_body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 202);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["id"], id.as_str());
    assert!(replayed["result"] == big_completion, "replayed job");
}

#[tokio::test]
async fn a_stream_chunk_or_an_error_larger_than_a_nats_message_arrives_whole() {
    let env = start().await;
    let mock = MockServer::start().await;
    let content = base64_data(2_000_000, 5);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_764_000_000,
        "model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 500_000, "total_tokens": 500_005}});
    let sse = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": content}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage.to_string(),
        "[DONE]".to_string(),
    ]
    .iter()
    .map(|d| format!("data: {d}\n\n"))
    .collect::<String>();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "m", "stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
        .expect(1)
        .mount(&mock)
        .await;
    // Some providers answer 200 with an error object; this one is 2 MB.
    let message = base64_data(2_000_000, 6);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "broken"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"error": {"message": message, "type": "server_error", "code": "overloaded"}}),
        ))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m", "broken"])
        .await;
    let (_, key) = env.add_key("k").await;

    let r = env
        .chat(
            &key,
            json!({"model": "m", "messages": user("x"), "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "ended");
    let texts: Vec<String> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .map(|c| {
            assert!(c.get("error").is_none(), "{c}");
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(texts[1] == content, "the 2 MB chunk arrived whole");

    let r = env
        .chat(&key, json!({"model": "broken", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 502);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "overloaded");
    assert!(
        err["error"]["message"] == format!("provider p: {message}"),
        "the 2 MB error arrived whole"
    );
}

/// A stored body that is gone when a dispatcher gets to it (expired or
/// deleted) fails its request cleanly: the caller and the job get
/// `body_unavailable`, each run is recorded once with no provider call, and
/// no message is left to be redelivered.
#[tokio::test]
async fn a_body_gone_from_the_store_is_a_recorded_failure_not_a_retry_loop() {
    let mut env = TestEnv::with(Options {
        max_body_bytes: LIMIT,
        dispatcher: false,
        ..Default::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-4o", "ok", 9, 1)))
        .expect(0)
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["gpt-4o"])
        .await;
    let (_, key) = env.add_key("k").await;
    let body = vision_body(2_000_000, 9);

    // A job queued and a synchronous call waiting while no dispatcher runs.
    let r = post(&env, &key, "/v1/jobs", &body).await;
    assert_eq!(r.status(), 202);
    let job_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let waiting = {
        let request = env
            .http
            .post(env.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    wait_until(Duration::from_secs(30), || async {
        stored_bodies(&env).await.len() == 2
    })
    .await;
    let client = async_nats::connect(&env.common.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = aigw_events::Names::new(&env.common.namespace).unwrap();
    let store = js.get_object_store(names.bodies_bucket()).await.unwrap();
    for name in stored_bodies(&env).await {
        store.delete(&name).await.unwrap();
    }
    env.start_dispatcher();

    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 502);
    let sync_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "body_unavailable", "{err}");
    wait_until(Duration::from_secs(30), || async {
        get_job(&env, &key, &job_id).await["status"] == "failed"
    })
    .await;
    let job = get_job(&env, &key, &job_id).await;
    assert_eq!(job["error"]["code"], "body_unavailable", "{job}");
    assert_eq!(job["attempts"], 1);

    for id in [&sync_id, &job_id] {
        let types: Vec<String> = env
            .wait_recorded(id)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(types, ["RequestAccepted", "RequestFailed"], "{id}");
    }
    for stream in [names.requests_stream(), names.jobs_stream()] {
        wait_until(Duration::from_secs(30), || async {
            let mut s = js.get_stream(&stream).await.unwrap();
            s.info().await.unwrap().state.messages == 0
        })
        .await;
    }
    let started: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'job' AND aggregate_id = $1
         AND event_type = 'JobStarted'",
    )
    .bind(&job_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(started, 1);
}

/// On a NATS server with a small `max_payload` (64 KiB here, below aigw's
/// usual 512 KiB frame pieces and the object store's 128 KiB chunks),
/// requests and answers larger than a message still get through: frames
/// and stored bodies are sized from the server's limit.
#[tokio::test]
async fn a_small_nats_max_payload_limits_nothing() {
    let env = TestEnv::with(Options {
        max_body_bytes: LIMIT,
        nats_max_payload: Some(64 * 1024),
        ..Default::default()
    })
    .await;
    let mock = MockServer::start().await;
    let answer = completion("gpt-4o", &base64_data(300_000, 10), 90_000, 75_000);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": base64_data(300_000, 11)},
                    "finish_reason": "stop"}]})
            ),
            "text/event-stream",
        ))
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&answer))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "text": "Let's begin.", "usage": {"type": "duration", "seconds": 20}
        })))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["gpt-4o", "whisper-1"])
        .await;
    let (_, key) = env.add_key("k").await;
    let body = vision_body(300_000, 12);

    // An upload travels through the media object store the same way.
    let audio = base64_data(300_000, 13).into_bytes();
    let (content_type, form) = multipart(&[
        (
            "file",
            Part::File {
                filename: "a.mp3".into(),
                content_type: "audio/mpeg".into(),
                bytes: audio.clone().into(),
            },
        ),
        ("model", Part::Text("whisper-1".into())),
    ]);
    let r = env
        .http
        .post(env.url("/v1/audio/transcriptions"))
        .bearer_auth(&key)
        .header("content-type", content_type)
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(r.json::<Value>().await.unwrap()["text"], "Let's begin.");
    let sent = mock.received_requests().await.unwrap()[0].body.clone();
    assert!(
        sent.windows(audio.len()).any(|w| w == audio),
        "the upload reached the provider whole"
    );

    let r = post(&env, &key, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(r.bytes().await.unwrap() == bytes_of(&answer), "answer");
    assert!(last_sent(&mock).await == body, "request");

    let job = job_succeeds(&env, &key, &body).await;
    assert!(job["result"] == answer, "job");
    assert!(last_sent(&mock).await == body, "job's request");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(&env, &key, "/v1/chat/completions", &streamed).await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.len(), 2, "a chunk and [DONE]");
    let chunk: Value = serde_json::from_str(&events[0]).unwrap();
    assert!(
        chunk["choices"][0]["delta"]["content"] == base64_data(300_000, 11),
        "{}",
        &events[0][..200.min(events[0].len())]
    );

    wait_until(Duration::from_secs(30), || async {
        stored_bodies(&env).await.is_empty()
    })
    .await;
}
