//! Gemini's API (`/v1beta/models/{model}:generateContent` and friends):
//! to an OpenAI-compatible upstream (translated both ways, streaming and
//! a tool round trip included) and to a Gemini upstream (verbatim both
//! ways); the key by header or `?key=`; errors in Gemini's shape; and the
//! same admission as `/v1/chat/completions` (scopes, budgets, rates),
//! billed to the micro-dollar. (The google-genai SDK: `genai_sdk`.)

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::acceptance::{body, sse_response};
use crate::anthropic_messages::openai_upstream;
use crate::harness::{TestEnv, user};

/// 400 fresh input tokens at $2, 600 cache reads at $0.50, 20 output at $8
/// (the usage `openai_upstream` reports).
const COST_MICROS: i64 = 800 + 300 + 160;

pub(crate) async fn openai_provider(env: &TestEnv, mock: &MockServer) {
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "oai", "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-upstream-secret", "models": ["gpt-x"],
            "prices": {"gpt-x": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0,
                "cached_input_usd_per_mtok": 0.5}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// `POST /v1beta/models/{name}` (name: `model:method`, with any query),
/// keyed by `x-goog-api-key`.
async fn gemini(env: &TestEnv, key: &str, name: &str, body: &Value) -> reqwest::Response {
    env.http
        .post(env.url(&format!("/v1beta/models/{name}")))
        .header("x-goog-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

pub(crate) fn contents(text: &str) -> Value {
    json!([{"role": "user", "parts": [{"text": text}]}])
}

/// The JSON payloads of a Gemini SSE body.
fn events(text: &str) -> Vec<Value> {
    text.split("\r\n\r\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

/// The error of a Gemini error answer: (code, status).
async fn gemini_error(r: reqwest::Response) -> (u64, String, String) {
    let b: Value = r.json().await.unwrap();
    (
        b["error"]["code"].as_u64().unwrap_or_else(|| panic!("{b}")),
        b["error"]["status"].as_str().unwrap().to_string(),
        b["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn gemini_requests_reach_an_openai_upstream_translated_both_ways() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("gemini").await;

    // Plain, with a system instruction and generation settings.
    let r = gemini(
        &env,
        &key,
        "gpt-x:generateContent",
        &json!({"contents": contents("ping"),
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2, "stopSequences": ["END"]}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aigw-cost-usd"], "0.001260");
    let id = request_id(&r);
    let got: Value = r.json().await.unwrap();
    assert_eq!(
        got["candidates"][0]["content"],
        json!({"role": "model", "parts": [{"text": "pong"}]}),
        "{got}"
    );
    assert_eq!(got["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        got["usageMetadata"],
        json!({"promptTokenCount": 1000, "candidatesTokenCount": 20, "thoughtsTokenCount": 0,
            "cachedContentTokenCount": 600, "totalTokenCount": 1020})
    );
    assert_eq!(got["modelVersion"], "gpt-x");
    let events_of = env.wait_recorded(&id).await;
    let done = &events_of.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["cost_micros"], COST_MICROS, "{done}");
    let sent = body(&mock.received_requests().await.unwrap()[0]);
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ping"}])
    );
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["model"], "gpt-x");

    // A tool call, and its result sent back paired by name.
    let tools = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]);
    let r = gemini(
        &env,
        &key,
        "gpt-x:generateContent",
        &json!({"contents": contents("weather in Paris?"), "tools": tools}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    let call = &got["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(
        *call,
        json!({"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}),
        "{got}"
    );
    let r = gemini(
        &env,
        &key,
        "gpt-x:generateContent",
        &json!({"tools": tools, "contents": [
            {"role": "user", "parts": [{"text": "weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}]}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(
        got["candidates"][0]["content"]["parts"][0]["text"],
        "It is sunny."
    );
    let requests = mock.received_requests().await.unwrap();
    let round_trip = body(requests.last().unwrap());
    let turns = round_trip["messages"].as_array().unwrap();
    assert_eq!(turns[1]["tool_calls"][0]["id"], "call_1_0", "{round_trip}");
    assert_eq!(
        turns[2],
        json!({"role": "tool", "tool_call_id": "call_1_0", "content": "{\"sky\":\"sunny\"}"})
    );
    assert_eq!(
        round_trip["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );

    // Streamed as SSE, the key in the query.
    let r = env
        .http
        .post(env.url(&format!(
            "/v1beta/models/gpt-x:streamGenerateContent?alt=sse&key={key}"
        )))
        .json(&json!({"contents": contents("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    let streamed = events(&text);
    let said: String = streamed
        .iter()
        .flat_map(|e| {
            e["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(said, "pong streamed", "{text}");
    let last = streamed.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP", "{text}");
    assert_eq!(last["usageMetadata"]["cachedContentTokenCount"], 600);
    // The recorded cost, in Gemini's camelCase, on the last chunk only.
    assert_eq!(
        last["usageMetadata"]["costUsd"],
        json!(COST_MICROS as f64 / 1e6),
        "{text}"
    );
    assert_eq!(text.matches("costUsd").count(), 1, "{text}");
    let recorded = env.wait_recorded(&id).await;
    let done = &recorded.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 1000, "{done}");
    assert_eq!(done["cost_micros"], COST_MICROS, "{done}");
    let upstream = body(mock.received_requests().await.unwrap().last().unwrap());
    assert_eq!(upstream["stream"], true);

    // Without alt=sse: a JSON array holding the whole answer.
    let r = gemini(
        &env,
        &key,
        "gpt-x:streamGenerateContent",
        &json!({"contents": contents("ping")}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got.as_array().unwrap().len(), 1, "{got}");
    assert_eq!(
        got[0]["candidates"][0]["content"]["parts"][0]["text"],
        "pong"
    );

    // countTokens: an estimate, no provider call.
    let calls = mock.received_requests().await.unwrap().len();
    let r = gemini(
        &env,
        &key,
        "gpt-x:countTokens",
        &json!({"contents": contents("count these words please")}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert!(got["totalTokens"].as_u64().unwrap() > 0, "{got}");
    assert_eq!(mock.received_requests().await.unwrap().len(), calls);

    // The model list in Gemini's shape, keyed by query.
    let r = env
        .http
        .get(env.url(&format!("/v1beta/models?key={key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert!(
        got["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "models/gpt-x"
                && m["supportedGenerationMethods"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("generateContent"))),
        "{got}"
    );
    let r = env
        .http
        .get(env.url("/v1beta/models/gpt-x"))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .get(env.url("/v1beta/models/nobody-serves-this"))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(gemini_error(r).await.1, "NOT_FOUND");
}

#[tokio::test]
async fn gemini_to_gemini_is_verbatim_both_ways() {
    let env = TestEnv::start().await;
    let upstream = MockServer::start().await;
    let usage = json!({"promptTokenCount": 5100, "candidatesTokenCount": 40,
        "thoughtsTokenCount": 10, "cachedContentTokenCount": 2000, "totalTokenCount": 5150});
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "hm", "thought": true}, {"text": "pong", "thoughtSignature": "sig-up"}]},
            "finishReason": "STOP", "index": 0, "safetyRatings": []}],
        "usageMetadata": usage, "modelVersion": "gemini-real-001", "responseId": "up-1",
        "x_upstream_extra": true});
    let stream = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "po"}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 5100, "totalTokenCount": 5100}, "modelVersion": "gemini-real-001"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ng"}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": "gemini-real-001"}),
    ]
    .iter()
    .map(|e| format!("data: {e}\r\n\r\n"))
    .collect::<String>();
    let answer_for = answer.clone();
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-real:generateContent"))
        .respond_with(move |_: &Request| {
            ResponseTemplate::new(200).set_body_json(answer_for.clone())
        })
        .mount(&upstream)
        .await;
    let stream_for = stream.clone();
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-real:streamGenerateContent"))
        .respond_with(move |_: &Request| sse_response(stream_for.clone()))
        .mount(&upstream)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "google", "preset": "gemini", "api_key": "goog-upstream-secret",
            "base_url": upstream.uri(), "models": ["gemini-real"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/aliases")
        .json(&json!({"name": "gem-alias", "targets": [{"provider": "google", "model": "gemini-real"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (_, key) = env.add_key("native").await;

    // What only Gemini reads, and a field nobody knows yet.
    let sent = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello", "thoughtSignature": "sig-earlier"}]},
            {"role": "user", "parts": [{"text": "again"},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]}],
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "tools": [{"googleSearch": {}}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"topK": 5, "maxOutputTokens": 200,
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}},
        "x_future_field": {"nested": [1, "two"]},
    });
    let r = gemini(&env, &key, "gem-alias:generateContent", &sent).await;
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    assert!(
        r.headers().get("x-aigw-cost-flagged").is_some()
            || r.headers().get("x-aigw-cost-usd").is_some()
    );
    let id = request_id(&r);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got, answer, "the answer comes back verbatim");
    let requests = upstream.received_requests().await.unwrap();
    let first = &requests[0];
    assert_eq!(body(first), sent, "the body goes verbatim");
    assert_eq!(first.headers["x-goog-api-key"], "goog-upstream-secret");
    assert!(first.url.query().is_none(), "{}", first.url);
    assert!(first.headers.get("authorization").is_none());
    let recorded = env.wait_recorded(&id).await;
    let done = &recorded.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 5100, "{done}");
    assert_eq!(done["usage"]["cached_tokens"], 2000, "{done}");
    assert_eq!(done["usage"]["reasoning_tokens"], 10, "{done}");
    assert_eq!(done["usage"]["completion_tokens"], 50, "{done}");

    // Streamed, keyed by query: the upstream's events, byte for byte.
    let r = env
        .http
        .post(env.url(&format!(
            "/v1beta/models/gem-alias:streamGenerateContent?key={key}&alt=sse"
        )))
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    assert_eq!(r.text().await.unwrap(), stream);
    let requests = upstream.received_requests().await.unwrap();
    let last = requests.last().unwrap();
    assert_eq!(body(last), sent);
    assert_eq!(last.url.query(), Some("alt=sse"), "never the caller's key");
    assert_eq!(last.headers["x-goog-api-key"], "goog-upstream-secret");
    let recorded = env.wait_recorded(&id).await;
    let done = &recorded.last().unwrap().1["RequestCompleted"];
    assert_eq!(done["usage"]["prompt_tokens"], 5100, "{done}");
    assert_eq!(done["usage"]["completion_tokens"], 50, "{done}");
}

#[tokio::test]
async fn gemini_routes_are_held_to_the_same_admission_as_chat_completions() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let create = |settings: Value| {
        let env = &env;
        async move {
            let r = env
                .admin(reqwest::Method::POST, "/admin/api/keys")
                .json(&settings)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let b: Value = r.json().await.unwrap();
            b["key"].as_str().unwrap().to_string()
        }
    };
    let generate = json!({"contents": contents("x"), "generationConfig": {"maxOutputTokens": 100}});
    let chat = json!({"model": "gpt-x", "max_tokens": 100, "messages": user("x")});

    // A key scoped to another model: refused on every route.
    let scoped = create(json!({"name": "scoped", "allowed_models": ["other"]})).await;
    assert_eq!(env.chat(&scoped, chat.clone()).await.status(), 403);
    for name in ["gpt-x:generateContent", "gpt-x:countTokens"] {
        let r = gemini(&env, &scoped, name, &generate).await;
        assert_eq!(r.status(), 403, "{name}");
        assert_eq!(gemini_error(r).await.1, "PERMISSION_DENIED");
    }
    let r = env
        .http
        .get(env.url("/v1beta/models/gpt-x"))
        .header("x-goog-api-key", &scoped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a model outside the scopes is not listed");

    // A budget below one worst case: refused before any provider call,
    // streamed or not.
    let calls = mock.received_requests().await.unwrap().len();
    let poor =
        create(json!({"name": "poor", "budget_usd": 0.0005, "budget_period": "total"})).await;
    assert_eq!(env.chat(&poor, chat.clone()).await.status(), 429);
    for name in [
        "gpt-x:generateContent",
        "gpt-x:streamGenerateContent?alt=sse",
    ] {
        let r = gemini(&env, &poor, name, &generate).await;
        assert_eq!(r.status(), 429, "{name}");
        assert_eq!(gemini_error(r).await.1, "RESOURCE_EXHAUSTED");
    }
    assert_eq!(mock.received_requests().await.unwrap().len(), calls);

    // An RPM of 1: the second request is refused, whichever route.
    let limited = create(json!({"name": "rpm", "rpm": 1})).await;
    let r = gemini(&env, &limited, "gpt-x:generateContent", &generate).await;
    assert_eq!(r.status(), 200);
    assert_eq!(env.chat(&limited, chat.clone()).await.status(), 429);
    let r = gemini(&env, &limited, "gpt-x:generateContent", &generate).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());

    // Errors in Gemini's shape.
    let (_, key) = env.add_key("plain").await;
    let r = gemini(&env, "aig_wrong", "gpt-x:generateContent", &generate).await;
    assert_eq!(gemini_error(r).await.1, "UNAUTHENTICATED");
    let r = env
        .http
        .post(env.url("/v1beta/models/gpt-x:generateContent?key=aig_wrong"))
        .json(&generate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(gemini_error(r).await.1, "UNAUTHENTICATED");
    let r = env
        .http
        .post(env.url("/v1beta/models/gpt-x:generateContent"))
        .json(&generate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .http
        .post(env.url("/v1beta/models/gpt-x:generateContent"))
        .header("x-goog-api-key", &key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(gemini_error(r).await.1, "INVALID_ARGUMENT");
    for (bad, names) in [
        (json!({"contents": []}), "contents"),
        (
            json!({"contents": contents("x"), "generationConfig": {"responseModalities": ["IMAGE"]}}),
            "responseModalities",
        ),
        (
            json!({"contents": contents("x"), "tools": [{"codeExecution": {}}]}),
            "codeExecution",
        ),
    ] {
        let r = gemini(&env, &key, "gpt-x:generateContent", &bad).await;
        assert_eq!(r.status(), 400, "{bad}");
        let (code, status, message) = gemini_error(r).await;
        assert_eq!((code, status.as_str()), (400, "INVALID_ARGUMENT"));
        assert!(message.contains(names), "{message}");
    }
    for name in ["nobody-serves-this:generateContent", "gpt-x:embedContent"] {
        let r = gemini(&env, &key, name, &generate).await;
        assert_eq!(r.status(), 404, "{name}");
        let (code, status, _) = gemini_error(r).await;
        assert_eq!((code, status.as_str()), (404, "NOT_FOUND"));
    }
}

/// A Gemini upstream: a function call when tools are offered and no
/// result came back yet, the answer to a result, else `pong` (streamed in
/// two events).
pub(crate) fn gemini_upstream(r: &Request) -> ResponseTemplate {
    let b = body(r);
    let usage = json!({"promptTokenCount": 30, "candidatesTokenCount": 4, "totalTokenCount": 34});
    let answered = b["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .any(|p| p.get("functionResponse").is_some());
    let part = if b.get("tools").is_some() && !answered {
        json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})
    } else if answered {
        json!({"text": "It is sunny."})
    } else {
        json!({"text": "pong"})
    };
    let answer = |parts: Value, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        json!({"candidates": [c], "usageMetadata": usage, "modelVersion": "gemini-real"})
    };
    if r.url.path().ends_with(":streamGenerateContent") {
        let events = [
            answer(json!([{"text": "pong"}]), None),
            answer(json!([{"text": " streamed"}]), Some("STOP")),
        ];
        return sse_response(
            events
                .iter()
                .map(|e| format!("data: {e}\r\n\r\n"))
                .collect(),
        );
    }
    ResponseTemplate::new(200).set_body_json(answer(json!([part]), Some("STOP")))
}

#[tokio::test]
async fn upstream_failures_reach_gemini_callers_in_geminis_shape() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    // A refusal of the request, a broken stream, and a server error.
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let b = body(r);
            let text = b["messages"][0]["content"].as_str().unwrap_or("").to_string();
            match text.as_str() {
                "too long" => ResponseTemplate::new(400).set_body_json(json!({"error": {
                    "message": "context too long", "type": "invalid_request_error",
                    "param": null, "code": "context_length_exceeded"}})),
                "cut" => sse_response(format!(
                    "data: {}\n\n",
                    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                        "choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": null}]})
                )),
                _ => ResponseTemplate::new(500).set_body_string("boom"),
            }
        })
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("failures").await;

    let r = gemini(
        &env,
        &key,
        "gpt-x:generateContent",
        &json!({"contents": contents("too long")}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let (code, status, message) = gemini_error(r).await;
    assert_eq!((code, status.as_str()), (400, "INVALID_ARGUMENT"));
    assert!(message.contains("context too long"), "{message}");

    let r = gemini(
        &env,
        &key,
        "gpt-x:generateContent",
        &json!({"contents": contents("fail")}),
    )
    .await;
    let http = r.status().as_u16();
    assert!(http >= 500, "{http}");
    let (code, status, _) = gemini_error(r).await;
    assert_eq!(code, u64::from(http));
    assert!(
        ["INTERNAL", "UNAVAILABLE"].contains(&status.as_str()),
        "{status}"
    );

    // A stream cut mid-way ends with Gemini's error event.
    let r = gemini(
        &env,
        &key,
        "gpt-x:streamGenerateContent?alt=sse",
        &json!({"contents": contents("cut")}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let streamed = events(&text);
    assert_eq!(
        streamed[0]["candidates"][0]["content"]["parts"][0]["text"], "half",
        "{text}"
    );
    let last = streamed.last().unwrap();
    assert!(last["error"]["status"].is_string(), "{text}");
    assert!(last["error"]["code"].is_u64(), "{text}");
    assert!(last.get("candidates").is_none(), "{text}");
}

#[tokio::test]
async fn a_budgeted_key_cannot_send_an_uncapped_body_to_a_gemini_upstream() {
    let env = TestEnv::start().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(gemini_upstream)
        .mount(&upstream)
        .await;
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "google", "preset": "gemini", "api_key": "goog-upstream-secret",
            "base_url": upstream.uri(), "models": ["gemini-real"],
            "prices": {"gemini-real": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "budgeted", "budget_usd": 10.0, "budget_period": "total"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // No output cap: the one the budget hold assumed goes along.
    let sent = json!({"contents": contents("hi"), "generationConfig": {"temperature": 0.1}});
    let r = gemini(&env, &key, "gemini-real:generateContent", &sent).await;
    assert_eq!(r.status(), 200);
    let requests = upstream.received_requests().await.unwrap();
    let got = body(&requests[0]);
    assert!(
        got["generationConfig"]["maxOutputTokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{got}"
    );
    let mut expected = sent.clone();
    expected["generationConfig"]["maxOutputTokens"] =
        got["generationConfig"]["maxOutputTokens"].clone();
    assert_eq!(got, expected, "nothing else changes");
    // The caller's own cap is left alone.
    let capped = json!({"contents": contents("hi"), "generationConfig": {"maxOutputTokens": 7}});
    let r = gemini(&env, &key, "gemini-real:generateContent", &capped).await;
    assert_eq!(r.status(), 200);
    let requests = upstream.received_requests().await.unwrap();
    assert_eq!(body(requests.last().unwrap()), capped);

    // Streamed from the priced Gemini upstream: the chunk that finishes the
    // answer carries the recorded cost as `usageMetadata.costUsd`.
    let r = gemini(
        &env,
        &key,
        "gemini-real:streamGenerateContent?alt=sse",
        &capped,
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    let streamed = events(&text);
    let last = streamed.last().unwrap();
    let shown = last["usageMetadata"]["costUsd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cost in {text}"));
    let recorded = env.wait_recorded(&id).await;
    let done = &recorded.last().unwrap().1["RequestCompleted"];
    assert_eq!(
        (shown * 1e6).round() as i64,
        done["cost_micros"].as_i64().unwrap(),
        "{done}"
    );
    assert_eq!(text.matches("costUsd").count(), 1, "{text}");
}

#[tokio::test]
async fn an_idempotency_key_replays_a_gemini_answer() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(openai_upstream)
        .mount(&mock)
        .await;
    openai_provider(&env, &mock).await;
    let (_, key) = env.add_key("idem").await;
    let send = |name: &'static str| {
        let (env, key) = (&env, key.clone());
        async move {
            env.http
                .post(env.url(&format!("/v1beta/models/{name}")))
                .header("x-goog-api-key", key)
                .header("Idempotency-Key", "gemini-once")
                .json(&json!({"contents": contents("ping")}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = send("gpt-x:generateContent").await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = send("gpt-x:generateContent").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
    // Not with a stream, and said in Gemini's shape.
    let r = send("gpt-x:streamGenerateContent?alt=sse").await;
    assert_eq!(r.status(), 400);
    assert_eq!(gemini_error(r).await.1, "INVALID_ARGUMENT");
}
