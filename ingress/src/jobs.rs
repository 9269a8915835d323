//! `/v1/jobs`: chat completions that run in the background.
//!
//! `POST /v1/jobs` admits the request like a synchronous call (scopes, rate
//! limits, a budget hold; not the key's concurrency limit, which counts
//! synchronous calls: a key's jobs are capped by how many it may have queued
//! or running, `AIGW_MAX_QUEUED_JOBS_PER_KEY`), queues it on the jobs
//! stream, stores the job and answers 202 with its `Location`. The dispatchers run jobs from their own
//! consumer, below synchronous traffic. Callers poll `GET /v1/jobs/{id}`,
//! list their jobs, and cancel with `DELETE /v1/jobs/{id}`; a key only ever
//! sees its own jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use aigw_events::wire::DispatchRequest;
use aigw_events::{JobCommand, JobError, JobSpec, JobStatus, META_ACTOR, META_REQUEST_ID};
use aigw_runtime::jobs::{self, JobRow, ListFilter, Submitted};
use aigw_runtime::store::metadata;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Admin, Caller};
use crate::chat::Inbound;
use crate::error::ApiError;
use crate::validate::{self, ChatRequest, invalid};
use crate::{AppState, RequestId, admission, attribution, chat, dialects, idempotency};

/// How long a queued job holds its worst-case cost on the key's budget.
const JOB_HOLD: Duration = Duration::from_secs(24 * 3600);
const MAX_WEBHOOK_URL: usize = 2048;

/// A submission's own fields, taken out of the chat body.
#[derive(Debug, Default, PartialEq)]
struct JobFields {
    webhook_url: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// Most bytes of an envelope's `url`.
const MAX_URL: usize = 512;

/// Splits `webhook_url` and `metadata` off the body and validates them. The
/// rest is a non-streamed chat completion request, or an envelope: `url`
/// names the route whose dialect `body` speaks (`dialects::job_request`).
fn split_body(bytes: &[u8], id: Uuid) -> Result<(JobFields, ChatRequest, Inbound), ApiError> {
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}")))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_request("The body must be a JSON object."));
    };
    let mut fields = JobFields::default();
    match obj.remove("webhook_url") {
        None | Some(Value::Null) => {}
        Some(Value::String(url)) => fields.webhook_url = Some(check_webhook_url(&url)?),
        Some(_) => return Err(invalid("'webhook_url' must be a string.", "webhook_url")),
    }
    match obj.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(m) => fields.metadata = validate::metadata(m)?,
    }
    let (chat, inbound) = match obj.remove("url") {
        None | Some(Value::Null) => {
            let rest = serde_json::to_vec(&value).map_err(ApiError::internal)?;
            (validate::validate(&rest)?, Inbound::openai())
        }
        Some(Value::String(url)) => {
            if url.len() > MAX_URL {
                return Err(invalid(
                    format!("'url' must be one of {}.", dialects::JOB_URLS),
                    "url",
                ));
            }
            let body = match obj.remove("body") {
                Some(body @ Value::Object(_)) => body,
                _ => {
                    return Err(invalid(
                        "With 'url', the request goes in 'body' (a JSON object).",
                        "body",
                    ));
                }
            };
            if let Some(extra) = obj.keys().next() {
                return Err(ApiError::BadRequest {
                    message: format!(
                        "'{extra}' is not a job field: with 'url', the request's own fields go in 'body'."
                    ),
                    param: None,
                    code: Some("unknown_field"),
                });
            }
            dialects::job_request(&url, body, id)?
        }
        Some(_) => return Err(invalid("'url' must be a string.", "url")),
    };
    if chat.stream {
        return Err(invalid(
            "Jobs cannot stream; poll the job or give a 'webhook_url' instead.",
            "stream",
        ));
    }
    Ok((fields, chat, inbound))
}

fn check_webhook_url(url: &str) -> Result<String, ApiError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| invalid("'webhook_url' is not a valid URL.", "webhook_url"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || url.len() > MAX_WEBHOOK_URL
        || url.chars().any(char::is_control)
    {
        return Err(invalid(
            format!(
                "'webhook_url' must be an http or https URL of at most {MAX_WEBHOOK_URL} characters."
            ),
            "webhook_url",
        ));
    }
    Ok(url.to_string())
}

fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| no_such_job(raw))
}

fn no_such_job(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("No job with id '{id}'."),
        code: "job_not_found",
    }
}

fn accepted(row: &JobRow, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(jobs::job_object(row))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", row.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `POST /v1/jobs`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Submit a request of any dialect (chat, Responses, Messages, generateContent, embeddings, rerank, moderation) to run in the background",
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 hours returns the first job.")),
    request_body = crate::openapi::schemas::JobRequest,
    responses((status = 202, description = "Queued; `Location` names the job.", body = crate::openapi::schemas::Job, headers(("location" = String, description = "/v1/jobs/{id}"))))
)]
pub async fn submit(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = chat::body_bytes(&state, body)?;
    let (fields, mut chat, mut inbound) = split_body(&bytes, request_id.0)?;
    // A Responses continuation carries its whole conversation, read from
    // the stored responses (this key's only), as on `/v1/responses`.
    if inbound.wire == aigw_events::wire::Dialect::OpenaiResponses
        && let Some(native) = &inbound.native_body
        && native
            .get("previous_response_id")
            .is_some_and(|p| !p.is_null())
    {
        let mut native = native.clone();
        dialects::stored_responses::continue_from_previous(&state, key.id, &mut native).await?;
        (chat, inbound) = dialects::responses::job_request(native, request_id.0)?;
    }
    let attribution = attribution::resolve(
        &headers,
        chat.body.get("user").and_then(Value::as_str),
        fields
            .metadata
            .get("tags")
            .map(|t| Value::String(t.clone()))
            .as_ref(),
    )?;
    if !state.webhook_allow_private
        && let Some(url) = &fields.webhook_url
        && let Some(why) = aigw_runtime::egress::refused_url(url)
    {
        return Err(invalid(
            format!("'webhook_url' must reach a public address: {why}."),
            "webhook_url",
        ));
    }
    let pool = &state.stores.pool;
    let idem = idempotency::key_of(&headers)?;
    if let Some(k) = &idem
        && let Some(existing) = jobs::find_idempotent(pool, key.id, k)
            .await
            .map_err(ApiError::internal)?
    {
        return Ok(accepted(&existing, true));
    }
    // Fail fast at the cap (checked again, exactly, when the job is stored).
    if let Some(max) = state.max_queued_jobs_per_key
        && jobs::open_jobs(pool, key.id, max)
            .await
            .map_err(ApiError::internal)?
            >= max
    {
        return Err(ApiError::TooManyJobs(max));
    }
    if fields.webhook_url.is_some() && !state.sealer.is_configured() {
        return Err(invalid(
            "Webhooks are signed with a secret derived from AIGW_MASTER_KEY, which this gateway does not have.",
            "webhook_url",
        ));
    }
    let targets = state
        .registry
        .resolve_fresh(&chat.model, chat.provider.as_deref())
        .await
        .map_err(chat::unresolved)?;
    chat::natively_served(&inbound, &targets, &chat.model)?;
    let id = request_id.0;
    let admitted = admission::admit_for(
        &state,
        &key,
        &chat.model,
        chat.endpoint,
        &chat.body,
        &targets,
        id,
        JOB_HOLD,
    )
    .await?;
    let now = Utc::now();
    let mut message = DispatchRequest {
        request_id: id,
        key_id: key.id,
        reply_to: String::new(),
        accepted_at: now,
        // A body in another dialect travels as the caller sent it; the
        // dispatcher translates it again where the target needs it.
        body: inbound.native_body.unwrap_or(chat.body),
        raw_body: None,
        model: chat.model.clone(),
        stream: false,
        include_usage: false,
        provider: chat.provider,
        deadline: None,
        reservation: admitted.reservation.clone(),
        rate_tokens: admitted.rate_tokens,
        endpoint: chat.endpoint,
        scopes: Some(admitted.scopes.clone()),
        body_object: None,
        project_id: admitted.project_id,
        team_id: admitted.team_id,
        rate_levels: admitted.rate_levels.clone(),
        rate_on_key: admitted.rate_on_key,
        attribution,
        dialect: inbound.wire,
        native_body: None,
        native_only: None,
    };
    let release = || async {
        if let Some(r) = &admitted.reservation {
            let _ = state.limiter.release_reservation(key.id, id, r).await;
        }
    };
    // Queued first, stored second: a job the caller was told about always
    // has its message (one whose job was never stored is dropped by the
    // dispatcher a minute later).
    if let Err(e) = publish(&state, &mut message).await {
        release().await;
        return Err(e);
    }
    let spec = JobSpec {
        key_id: key.id,
        model: chat.model,
        webhook_url: fields.webhook_url,
        metadata: fields.metadata,
        idempotency_key: idem,
    };
    let meta = metadata(&[
        (META_REQUEST_ID, &id.to_string()),
        (META_ACTOR, &format!("key:{}", key.id)),
    ]);
    let submitted =
        match jobs::submit(pool, id, spec, now, &meta, state.max_queued_jobs_per_key).await {
            Ok(s) => s,
            Err(e) => {
                release().await;
                return Err(ApiError::Unavailable(format!("storing the job: {e}")));
            }
        };
    metrics::counter!("aigw_jobs_submitted_total").increment(1);
    let mut response = match submitted {
        Submitted::Created(row) => accepted(&row, false),
        Submitted::Existing(row) => {
            release().await;
            accepted(&row, true)
        }
        // Its message, queued already, is dropped by the dispatcher as one
        // whose job was never stored.
        Submitted::Full => {
            release().await;
            return Err(ApiError::TooManyJobs(
                state.max_queued_jobs_per_key.unwrap_or_default(),
            ));
        }
    };
    admitted.headers.apply(response.headers_mut());
    Ok(response)
}

async fn publish(state: &AppState, message: &mut DispatchRequest) -> Result<(), ApiError> {
    let subject = state.names.job_subject(&message.request_id.to_string());
    chat::publish_on(state, subject, message, "the job").await
}

/// The caller's own job, or 404 (another key's job does not exist for it).
async fn own_job(state: &AppState, key_id: Uuid, raw: &str) -> Result<JobRow, ApiError> {
    let id = job_id(raw)?;
    match jobs::get(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(row) if row.key_id == key_id => Ok(row),
        _ => Err(no_such_job(raw)),
    }
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "One of the caller's jobs",
    params(("id" = String, Path, description = "The job id.")),
    responses((status = 200, description = "The job.", body = crate::openapi::schemas::Job))
)]
pub async fn get_job(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = own_job(&state, key.id, &id).await?;
    Ok(Json(jobs::job_object(&row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(pattern = "^(queued|running|succeeded|failed|cancelled)$")]
    status: Option<String>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A job id: the previous page's `last_id`.
    after: Option<String>,
    /// Admin only: one key's jobs.
    key: Option<Uuid>,
}

fn filter(q: &ListQuery, key_id: Option<Uuid>) -> Result<ListFilter, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            invalid(
                "'status' must be queued, running, succeeded, failed or cancelled.",
                "status",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("'limit' must be between 1 and 100.", "limit"));
    }
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => {
            Some(Uuid::parse_str(a).map_err(|_| invalid("'after' is not a job id.", "after"))?)
        }
    };
    Ok(ListFilter {
        key_id,
        status,
        after,
        limit,
    })
}

/// A page of jobs; `view` renders each (the admin's view adds `key_id`).
async fn list(
    state: &AppState,
    filter: ListFilter,
    view: fn(&JobRow) -> Value,
) -> Result<Json<Value>, ApiError> {
    let mut rows = jobs::list(&state.stores.pool, &filter)
        .await
        .map_err(ApiError::internal)?;
    let has_more = rows.len() as i64 > filter.limit;
    rows.truncate(filter.limit as usize);
    Ok(Json(json!({
        "object": "list",
        "data": rows.iter().map(view).collect::<Vec<_>>(),
        "first_id": rows.first().map(|r| r.id),
        "last_id": rows.last().map(|r| r.id),
        "has_more": has_more,
    })))
}

/// `GET /v1/jobs?status=&limit=&after=`: the caller's jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "The caller's jobs, newest first",
    params(ListQuery),
    responses((status = 200, description = "A page of jobs.", body = crate::openapi::schemas::JobList))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    Caller(key): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = crate::billing::query(q)?;
    list(&state, filter(&q, Some(key.id))?, jobs::job_object).await
}

/// `DELETE /v1/jobs/{id}` (or `POST /v1/jobs/{id}/cancel`).
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "Cancel a queued or running job",
    params(("id" = String, Path, description = "The job id.")),
    responses((status = 200, description = "The cancelled job.", body = crate::openapi::schemas::Job))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = own_job(&state, key.id, &id).await?;
    cancel(&state, row.id, &format!("key:{}", key.id)).await
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a queued or running job (the same as `DELETE /v1/jobs/{id}`)",
    params(("id" = String, Path, description = "The job id.")),
    responses((status = 200, description = "The cancelled job.", body = crate::openapi::schemas::Job))
)]
pub async fn cancel_job_post(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<Value>, ApiError> {
    cancel_job(state, caller, id).await
}

async fn cancel(state: &AppState, id: Uuid, actor: &str) -> Result<Json<Value>, ApiError> {
    let meta = metadata(&[(META_REQUEST_ID, &id.to_string()), (META_ACTOR, actor)]);
    let command = JobCommand::Cancel {
        actor: actor.to_string(),
        at: Utc::now(),
    };
    match jobs::execute(&state.stores.pool, id, command, &meta, None)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(row) => {
            // A dispatcher running it stops the upstream call.
            let _ = state
                .client
                .publish(state.names.cancel_subject(&id.to_string()), Bytes::new())
                .await;
            metrics::counter!("aigw_jobs_cancelled_total").increment(1);
            Ok(Json(jobs::job_object(&row)))
        }
        Err(JobError::AlreadyFinal(status)) => Err(ApiError::Conflict(format!(
            "The job has already {status} and cannot be cancelled."
        ))),
        Err(JobError::NotSubmitted) => Err(no_such_job(&id.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// A job as the admin sees it: with the key it belongs to.
fn admin_view(row: &JobRow) -> Value {
    let mut view = jobs::job_object(row);
    view["key_id"] = json!(row.key_id);
    view
}

/// `GET /admin/api/jobs?status=&key=&limit=&after=`: every key's jobs.
#[utoipa::path(
    get,
    path = "/admin/api/jobs",
    tag = "jobs",
    summary = "Every key's jobs, newest first",
    params(ListQuery),
    responses((status = 200, description = "A page of jobs.", body = crate::openapi::schemas::JobList))
)]
pub async fn admin_list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = crate::billing::query(q)?;
    let f = filter(&q, q.key)?;
    list(&state, f, admin_view).await
}

/// `GET /admin/api/jobs/{id}`.
#[utoipa::path(
    get,
    path = "/admin/api/jobs/{id}",
    tag = "jobs",
    summary = "Any job",
    params(("id" = String, Path, description = "The job id.")),
    responses((status = 200, description = "The job.", body = crate::openapi::schemas::Job))
)]
pub async fn admin_get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let uuid = job_id(&id)?;
    match jobs::get(&state.stores.pool, uuid)
        .await
        .map_err(ApiError::internal)?
    {
        Some(row) => Ok(Json(admin_view(&row))),
        None => Err(no_such_job(&id)),
    }
}

/// `DELETE /admin/api/jobs/{id}`.
#[utoipa::path(
    delete,
    path = "/admin/api/jobs/{id}",
    tag = "jobs",
    summary = "Cancel any job",
    params(("id" = String, Path, description = "The job id.")),
    responses((status = 200, description = "The cancelled job.", body = crate::openapi::schemas::Job))
)]
pub async fn admin_cancel(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let uuid = job_id(&id)?;
    cancel(&state, uuid, &admin).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(bytes: &str) -> Option<&'static str> {
        match split_body(bytes.as_bytes(), Uuid::nil()) {
            Ok(_) => None,
            Err(ApiError::BadRequest { param, .. }) => Some(param.unwrap_or("")),
            Err(_) => Some("other"),
        }
    }

    #[test]
    fn an_envelope_carries_a_body_of_the_dialect_its_url_names() {
        let (fields, chat, inbound) = split_body(
            br#"{"url":"/v1/messages","metadata":{"batch":"7"},
                "body":{"model":"claude","max_tokens":64,"metadata":{"user_id":"u1"},
                        "messages":[{"role":"user","content":"hi"}]}}"#,
            Uuid::nil(),
        )
        .unwrap();
        assert_eq!(fields.metadata.get("batch").map(String::as_str), Some("7"));
        assert_eq!(chat.model, "claude");
        assert!(matches!(
            inbound.wire,
            aigw_events::wire::Dialect::AnthropicMessages { .. }
        ));
        // The caller's body travels as sent, its own metadata included.
        assert_eq!(
            inbound.native_body.unwrap()["metadata"]["user_id"],
            Value::from("u1")
        );

        let (_, chat, inbound) = split_body(
            br#"{"url":"/v1beta/models/gemini-x:generateContent",
                "body":{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}}"#,
            Uuid::nil(),
        )
        .unwrap();
        assert_eq!(chat.model, "gemini-x");
        assert_eq!(inbound.wire, aigw_events::wire::Dialect::GeminiGenerate);

        let (_, chat, inbound) = split_body(
            br#"{"url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}"#,
            Uuid::nil(),
        )
        .unwrap();
        assert_eq!(chat.model, "m");
        assert!(inbound.native_body.is_none());

        // Every dialect's body and the other JSON endpoints.
        let id = Uuid::now_v7();
        let (_, chat, inbound) = split_body(
            br#"{"url":"/v1/responses","body":{"model":"m","input":"hi","store":true}}"#,
            id,
        )
        .unwrap();
        assert_eq!(chat.model, "m");
        assert_eq!(inbound.wire, aigw_events::wire::Dialect::OpenaiResponses);
        assert_eq!(
            inbound.dialect,
            dialects::Dialect::Responses { request_id: id }
        );
        for (url, body, endpoint) in [
            (
                "/v1/embeddings",
                r#"{"model":"e","input":"hi"}"#,
                aigw_events::wire::Endpoint::Embeddings,
            ),
            (
                "/v1/rerank",
                r#"{"model":"r","query":"q","documents":["a","b"],"top_n":1}"#,
                aigw_events::wire::Endpoint::Rerank,
            ),
            (
                "/v1/moderations",
                r#"{"input":"hi"}"#,
                aigw_events::wire::Endpoint::Moderations,
            ),
        ] {
            let envelope = format!(r#"{{"url":"{url}","body":{body}}}"#);
            let (_, chat, inbound) = split_body(envelope.as_bytes(), id).unwrap();
            assert_eq!(chat.endpoint, endpoint, "{url}");
            assert_eq!(inbound.wire, aigw_events::wire::Dialect::OpenaiChat);
        }

        let gemini = r#""body":{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
        for (body, param) in [
            // Not a route jobs run; a stream; countTokens.
            (format!(r#"{{"url":"/v1/audio/speech",{gemini}}}"#), "url"),
            // A rerank body without documents.
            (
                r#"{"url":"/v1/rerank","body":{"model":"r","query":"q"}}"#.to_string(),
                "documents",
            ),
            (
                format!(r#"{{"url":"/v1beta/models/g:streamGenerateContent",{gemini}}}"#),
                "url",
            ),
            (format!(r#"{{"url":"/v1beta/models/g:countTokens",{gemini}}}"#), "url"),
            (format!(r#"{{"url":"{}",{gemini}}}"#, "x".repeat(600)), "url"),
            (r#"{"url":7,"body":{}}"#.to_string(), "url"),
            (r#"{"url":"/v1/messages"}"#.to_string(), "body"),
            (r#"{"url":"/v1/messages","body":[1]}"#.to_string(), "body"),
            // Request fields beside the envelope instead of inside it.
            (
                format!(r#"{{"url":"/v1beta/models/g:generateContent","model":"m",{gemini}}}"#),
                "",
            ),
            // A streamed Messages body.
            (
                r#"{"url":"/v1/messages","body":{"model":"c","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}}"#.to_string(),
                "stream",
            ),
        ] {
            assert_eq!(status(&body), Some(param), "{body}");
        }
    }

    #[test]
    fn splits_and_validates_job_fields() {
        let (fields, chat, _) = split_body(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "webhook_url":"https://example.com/hook","metadata":{"batch":"7"}}"#,
            Uuid::nil(),
        )
        .unwrap();
        assert_eq!(
            fields.webhook_url.as_deref(),
            Some("https://example.com/hook")
        );
        assert_eq!(fields.metadata.get("batch").map(String::as_str), Some("7"));
        assert!(chat.body.get("webhook_url").is_none());
        assert!(chat.body.get("metadata").is_none());

        let msg = r#""model":"m","messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            status(&format!(r#"{{{msg},"stream":true}}"#)),
            Some("stream")
        );
        assert_eq!(
            status(&format!(r#"{{{msg},"webhook_url":"ftp://x/y"}}"#)),
            Some("webhook_url")
        );
        assert_eq!(
            status(&format!(r#"{{{msg},"webhook_url":"not a url"}}"#)),
            Some("webhook_url")
        );
        assert_eq!(
            status(&format!(r#"{{{msg},"metadata":{{"a":1}}}}"#)),
            Some("metadata")
        );
        assert_eq!(
            status(&format!(r#"{{{msg},"metadata":[]}}"#)),
            Some("metadata")
        );
        let many: Vec<String> = (0..17).map(|i| format!(r#""k{i}":"v""#)).collect();
        assert_eq!(
            status(&format!(r#"{{{msg},"metadata":{{{}}}}}"#, many.join(","))),
            Some("metadata")
        );
        assert_eq!(status(r#"{"messages":[]}"#), Some("model"));
        assert_eq!(status(&format!(r#"{{{msg}}}"#)), None);
    }
}
