//! Gemini's API: `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent` and `:countTokens` (also under `/v1/models/`,
//! where google-genai 3 calls them), `GET /v1beta/models` and
//! `GET /v1beta/models/{model}`.
//!
//! Invariants:
//! - The key comes as `x-goog-api-key` (or `Authorization` / `x-api-key`,
//!   the shared `auth` middleware) or as `?key=`. A key in the query is
//!   moved into the `x-goog-api-key` header and cut from the URI by
//!   [`query_key`] before anything else of these routes runs; the access
//!   log and the traces only ever record the path.
//! - A body is parsed and translated to OpenAI chat
//!   (`aigw_runtime::dialect::gemini_in`), then checked by the same
//!   `validate` as `/v1/chat/completions`, and admitted and queued by the
//!   same code (`chat::answer`): no limit, scope or budget differs by
//!   route. The wire carries the caller's body; the dispatcher relays it
//!   verbatim to Gemini-native targets and translates it for the others.
//! - `streamGenerateContent?alt=sse` streams Gemini's SSE events. Without
//!   `alt=sse` Gemini streams a JSON array; aigw answers that array whole,
//!   with one `GenerateContentResponse` (the complete answer), once it is
//!   done.
//! - Every error of these routes, authentication and body errors
//!   included, is Gemini's `{"error":{"code","message","status"}}` with
//!   the HTTP status OpenAI's shape had ([`gemini_errors`] rewrites them
//!   all in one place); mid-stream errors are a `data:` event of the same
//!   shape.

use aigw_events::raw_body::RawBody;
use aigw_events::wire;
use aigw_runtime::dialect::gemini_in;
use aigw_runtime::estimate;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::chat::{self, Inbound, body_bytes, unresolved};
use crate::dialects::Dialect;
use crate::error::ApiError;
use crate::validate::{ChatRequest, validate};
use crate::{AppState, RequestId, admission};

/// Largest error body rewritten into Gemini's shape (aigw's own errors
/// are far smaller; a larger one is summarized by its status).
const MAX_ERROR_BYTES: usize = 256 * 1024;
/// The header Gemini's clients send their key in.
pub const KEY_HEADER: &str = "x-goog-api-key";

/// Google's canonical status name for an HTTP status.
pub fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// Gemini's error JSON.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "message": message, "status": status_name(status)}})
}

/// Gemini's error as a stream event.
pub fn error_event(status: StatusCode, message: &str) -> Bytes {
    Bytes::from(format!("data: {}\r\n\r\n", error_body(status, message)))
}

/// Middleware of the Gemini routes: every error answer, whoever made it
/// (authentication, body limits, admission, the dispatcher, the
/// provider), in Gemini's shape with its status and headers kept.
pub async fn gemini_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let parsed = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
    if parsed
        .pointer("/error/status")
        .is_some_and(Value::is_string)
    {
        // Already Gemini's.
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("The request failed.")
                .to_string()
        });
    let body = error_body(status, &message).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The URI without its `key` parameters, and the first one's value.
fn split_key(uri: &Uri) -> Option<(Uri, String)> {
    let query = uri.query()?;
    let mut key = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let name = pair.split('=').next().unwrap_or("");
        if name == "key" {
            if key.is_none() {
                let decoded = Uri::try_from(format!("/?{pair}"))
                    .ok()
                    .and_then(|u| Query::<Vec<(String, String)>>::try_from_uri(&u).ok())
                    .and_then(|Query(pairs)| pairs.into_iter().next())
                    .map(|(_, v)| v);
                key = decoded.or(Some(String::new()));
            }
        } else {
            kept.push(pair);
        }
    }
    let key = key?;
    let path = uri.path();
    let rest = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = rest.parse().ok();
    Some((Uri::from_parts(parts).ok()?, key))
}

/// Middleware of the Gemini routes, ahead of the key check: a key given
/// as `?key=` becomes the `x-goog-api-key` header (unless one was sent)
/// and leaves the URI, so no later layer can record it.
pub async fn query_key(mut request: Request, next: Next) -> Response {
    if let Some((uri, key)) = split_key(request.uri()) {
        *request.uri_mut() = uri;
        if !request.headers().contains_key(KEY_HEADER)
            && let Ok(v) = HeaderValue::from_str(&key)
        {
            request.headers_mut().insert(KEY_HEADER, v);
        }
    }
    next.run(request).await
}

/// What a `POST /v1beta/models/{name}` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Generate,
    Stream,
    CountTokens,
}

/// `{model}:{method}` split, the model without a `models/` prefix.
fn model_and_method(name: &str) -> Result<(&str, Method), ApiError> {
    let unknown = || ApiError::NotFound {
        message: format!(
            "Unknown method in '{name}': use generateContent, streamGenerateContent or countTokens."
        ),
        code: "unknown_url",
    };
    let (model, method) = name.rsplit_once(':').ok_or_else(unknown)?;
    let method = match method {
        "generateContent" => Method::Generate,
        "streamGenerateContent" => Method::Stream,
        "countTokens" => Method::CountTokens,
        _ => return Err(unknown()),
    };
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty() {
        return Err(ApiError::bad_request("The model name is empty."));
    }
    Ok((model, method))
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("The request body is not valid JSON: {e}"),
        param: None,
        code: Some("invalid_json"),
    })
}

fn translate(native: &Value, model: &str, stream: bool) -> Result<gemini_in::Translated, ApiError> {
    gemini_in::to_chat(native, model, stream).map_err(|e| ApiError::BadRequest {
        message: e.message,
        param: None,
        code: Some("invalid_request"),
    })
}

/// `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent`
/// and `:countTokens`.
#[utoipa::path(
    post,
    path = "/v1beta/models/{name}",
    tag = "gemini",
    summary = "Gemini generateContent, streamGenerateContent (SSE with alt=sse) or countTokens",
    params(
        ("name" = String, Path, description = "`{model}:generateContent`, `{model}:streamGenerateContent` or `{model}:countTokens`."),
        ("alt" = Option<String>, Query, description = "`sse`: stream as server-sent events (otherwise a JSON array holding the whole answer)."),
        ("key" = Option<String>, Query, description = "The API key, instead of the `x-goog-api-key` header."),
    ),
    request_body = Object,
    responses((status = 200, description = "A GenerateContentResponse (JSON), its SSE events, or a token count.", content((serde_json::Value = "application/json"), (String = "text/event-stream"))))
)]
pub async fn post_model(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (model, method) = model_and_method(&name)?;
    let bytes = body_bytes(&state, body)?;
    let native = parse_json(&bytes)?;
    let sse = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(q)| q.iter().any(|(k, v)| k == "alt" && v == "sse"))
        .unwrap_or(false);
    match method {
        Method::CountTokens => count_tokens(&state, key, model, &native).await,
        Method::Generate => {
            generate(
                &state,
                key,
                &headers,
                model,
                (native, &bytes),
                false,
                request_id,
            )
            .await
        }
        Method::Stream if sse => {
            generate(
                &state,
                key,
                &headers,
                model,
                (native, &bytes),
                true,
                request_id,
            )
            .await
        }
        Method::Stream => {
            let response = generate(
                &state,
                key,
                &headers,
                model,
                (native, &bytes),
                false,
                request_id,
            )
            .await?;
            if !response.status().is_success() {
                return Ok(response);
            }
            // Gemini's stream without `alt=sse` is a JSON array.
            let (mut parts, body) = response.into_parts();
            let whole = axum::body::to_bytes(body, usize::MAX)
                .await
                .map_err(ApiError::internal)?;
            let mut array = Vec::with_capacity(whole.len() + 2);
            array.push(b'[');
            array.extend_from_slice(&whole);
            array.push(b']');
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Body::from(array)))
        }
    }
}

/// `POST /v1/models/{model}:generateContent` (and the other methods):
/// Gemini's `v1` version, the same as [`post_model`].
#[utoipa::path(
    post,
    path = "/v1/models/{name}",
    tag = "gemini",
    summary = "Gemini generateContent, streamGenerateContent or countTokens (the v1 path google-genai 3 calls)",
    params(
        ("name" = String, Path, description = "`{model}:generateContent`, `{model}:streamGenerateContent` or `{model}:countTokens`."),
        ("alt" = Option<String>, Query, description = "`sse`: stream as server-sent events (otherwise a JSON array holding the whole answer)."),
        ("key" = Option<String>, Query, description = "The API key, instead of the `x-goog-api-key` header."),
    ),
    request_body = Object,
    responses((status = 200, description = "A GenerateContentResponse (JSON), its SSE events, or a token count.", content((serde_json::Value = "application/json"), (String = "text/event-stream"))))
)]
pub async fn post_model_v1(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    caller: Caller,
    name: Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    post_model(state, request_id, caller, name, uri, headers, body).await
}

async fn generate(
    state: &AppState,
    key: std::sync::Arc<aigw_runtime::KeyEntry>,
    headers: &HeaderMap,
    model: &str,
    (native, raw): (Value, &Bytes),
    stream: bool,
    request_id: RequestId,
) -> Result<Response, ApiError> {
    let (chat, mut inbound) = admissible(native, model, stream)?;
    // A Gemini-native upstream gets these very bytes.
    inbound.native_raw = RawBody::from_bytes(raw).ok();
    chat::answer(state, key, headers, chat, request_id.0, inbound).await
}

/// A `generateContent` body submitted as a job (`/v1/jobs` with `url:
/// "/v1beta/models/{model}:generateContent"`; `name` is the part after
/// `models/`): checked and translated as that route would. Jobs do not
/// stream, so only `generateContent` is a job.
pub fn job_request(name: &str, native: Value) -> Result<(ChatRequest, Inbound), ApiError> {
    let (model, method) = model_and_method(name)?;
    if method != Method::Generate {
        return Err(ApiError::BadRequest {
            message: "A job runs `generateContent` only (jobs do not stream, and countTokens needs no job).".into(),
            param: Some("url"),
            code: Some("invalid_url"),
        });
    }
    admissible(native, model, false)
}

/// A generation body translated, and checked with the same limits as an
/// OpenAI chat completion.
fn admissible(
    native: Value,
    model: &str,
    stream: bool,
) -> Result<(ChatRequest, Inbound), ApiError> {
    let translated = translate(&native, model, stream)?;
    let internal = serde_json::to_vec(&translated.body).map_err(ApiError::internal)?;
    let chat = validate(&internal)?;
    let inbound = Inbound {
        dialect: Dialect::Gemini,
        wire: wire::Dialect::GeminiGenerate,
        native_body: Some(native),
        native_raw: None,
        native_only: translated.native_only,
    };
    Ok((chat, inbound))
}

/// `:countTokens`: aigw's estimate of a request's input tokens (the
/// estimator usage is flagged with when a provider reports none), never a
/// provider call; held to the key's effective scopes like a generation.
async fn count_tokens(
    state: &AppState,
    key: std::sync::Arc<aigw_runtime::KeyEntry>,
    model: &str,
    native: &Value,
) -> Result<Response, ApiError> {
    let request = native
        .get("generateContentRequest")
        .filter(|r| r.is_object())
        .unwrap_or(native);
    let translated = translate(request, model, false)?;
    let internal = serde_json::to_vec(&translated.body).map_err(ApiError::internal)?;
    let chat = validate(&internal)?;
    let targets = state
        .registry
        .resolve_fresh(&chat.model, None)
        .await
        .map_err(unresolved)?;
    let scopes = admission::lineage(state, &key)?.scopes(&key);
    admission::allowed_targets(&scopes, &chat.model, &targets)?;
    let tools = translated
        .body
        .get("tools")
        .map(|t| estimate::text_tokens(&t.to_string()))
        .unwrap_or(0);
    let total = estimate::prompt_tokens(&translated.body).saturating_add(tools);
    Ok((StatusCode::OK, Json(json!({"totalTokens": total}))).into_response())
}

/// One model in Gemini's `Model` shape.
fn model_entry(id: &str) -> Value {
    json!({
        "name": format!("models/{id}"),
        "baseModelId": id,
        "version": "aigw",
        "displayName": id,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    })
}

/// The ids of an OpenAI model list.
fn ids(list: &Value) -> impl Iterator<Item = &str> {
    list["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m["id"].as_str())
}

/// An OpenAI model list (`GET /v1/models`) in Gemini's list shape.
pub fn model_list(list: &Value) -> Value {
    let models: Vec<Value> = ids(list).map(model_entry).collect();
    json!({ "models": models })
}

/// `GET /v1beta/models`: the models the key may use, in Gemini's list shape.
#[utoipa::path(
    get,
    path = "/v1beta/models",
    tag = "gemini",
    summary = "The models this key may use, in Gemini's shape",
    responses((status = 200, description = "`{\"models\": [...]}`.", body = Object))
)]
pub async fn list_models(
    State(state): State<AppState>,
    Caller(key): Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(model_list(&crate::ops::model_list(&state, &key)?)))
}

/// `GET /v1beta/models/{model}`: one model the key may use.
#[utoipa::path(
    get,
    path = "/v1beta/models/{name}",
    tag = "gemini",
    summary = "One model this key may use, in Gemini's shape",
    params(("name" = String, Path, description = "The model name (`models/` prefix optional).")),
    responses((status = 200, description = "The model.", body = Object))
)]
pub async fn get_model(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = name.strip_prefix("models/").unwrap_or(&name);
    if ids(&crate::ops::model_list(&state, &key)?).any(|m| m == id) {
        return Ok(Json(model_entry(id)));
    }
    Err(ApiError::NotFound {
        message: format!("Model `{id}` is not available to this key."),
        code: "model_not_found",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_google_status_names() {
        for (status, name) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (413, "INVALID_ARGUMENT"),
            (429, "RESOURCE_EXHAUSTED"),
            (500, "INTERNAL"),
            (502, "UNAVAILABLE"),
            (503, "UNAVAILABLE"),
            (504, "DEADLINE_EXCEEDED"),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(status_name(status), name, "{status}");
            assert_eq!(error_body(status, "m")["error"]["code"], status.as_u16());
        }
    }

    #[test]
    fn a_query_key_leaves_the_uri() {
        let uri: Uri = "/v1beta/models/m:streamGenerateContent?alt=sse&key=aig_se%2Bcret"
            .parse()
            .unwrap();
        let (stripped, key) = split_key(&uri).unwrap();
        assert_eq!(key, "aig_se+cret");
        assert_eq!(
            stripped.to_string(),
            "/v1beta/models/m:streamGenerateContent?alt=sse"
        );
        let (stripped, key) = split_key(&"/v1beta/models?key=k".parse().unwrap()).unwrap();
        assert_eq!(
            (stripped.to_string().as_str(), key.as_str()),
            ("/v1beta/models", "k")
        );
        assert!(split_key(&"/v1beta/models?alt=sse".parse().unwrap()).is_none());
        assert!(split_key(&"/v1beta/models".parse().unwrap()).is_none());
    }

    #[test]
    fn names_split_into_model_and_method() {
        assert_eq!(
            model_and_method("gemini-2.5-flash:generateContent").unwrap(),
            ("gemini-2.5-flash", Method::Generate)
        );
        assert_eq!(
            model_and_method("models/a:b:streamGenerateContent").unwrap(),
            ("a:b", Method::Stream)
        );
        assert_eq!(
            model_and_method("m:countTokens").unwrap(),
            ("m", Method::CountTokens)
        );
        assert!(model_and_method("m:embedContent").is_err());
        assert!(model_and_method("m").is_err());
        assert!(model_and_method(":generateContent").is_err());
    }
}
