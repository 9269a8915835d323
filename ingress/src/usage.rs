//! `/admin/api/usage`: the admin's view of usage across every key (from the
//! projector's `usage_daily`) and the request log (from the request events),
//! which the admin web UI charts and lists.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::parse_id;
use crate::classes::{self, Classes, ClassesColumn};
use crate::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

type UsageRow = (
    NaiveDate,
    Uuid,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    ClassesColumn,
);

fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// `GET /admin/api/usage[?from=&to=]`: requests, errors, tokens and cost by
/// day, key and model, with totals.
#[utoipa::path(
    get,
    path = "/admin/api/usage",
    tag = "reports",
    summary = "Requests, errors, tokens and cost by day, key and model",
    params(UsageQuery),
    responses((status = 200, description = "Usage with totals.", body = crate::openapi::admin::Report))
)]
pub async fn usage(
    State(state): State<AppState>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let rows: Vec<UsageRow> = sqlx::query_as(&format!(
        "SELECT day, key_id, model, requests, errors, prompt_tokens, completion_tokens,
                latency_ms_total, cost_micros, unpriced_requests, {}
         FROM usage_daily
         WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2)
         ORDER BY day, key_id, model",
        classes::COLUMNS
    ))
    .bind(query.from)
    .bind(query.to)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let mut totals = [0i64; 5];
    let mut class_totals = Classes::default();
    let data: Vec<Value> = rows
        .into_iter()
        .map(
            |(
                day,
                key_id,
                model,
                requests,
                errors,
                prompt,
                completion,
                latency,
                cost,
                unpriced,
                sqlx::types::Json(classes),
            )| {
                class_totals.add(&classes);
                totals[0] += requests;
                totals[1] += errors;
                totals[2] += prompt;
                totals[3] += completion;
                totals[4] += cost;
                classes.shown_in(json!({
                    "day": day,
                    "key_id": key_id,
                    "model": model,
                    "requests": requests,
                    "errors": errors,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "avg_latency_ms": if requests > 0 { latency / requests } else { 0 },
                    "cost_usd": usd(cost),
                    "cost_micros": cost,
                    "unpriced_requests": unpriced,
                }))
            },
        )
        .collect();
    Ok(Json(json!({
        "object": "usage",
        "totals": class_totals.shown_in(json!({
            "requests": totals[0],
            "errors": totals[1],
            "prompt_tokens": totals[2],
            "completion_tokens": totals[3],
            "total_tokens": totals[2] + totals[3],
            "cost_usd": usd(totals[4]),
            "cost_micros": totals[4],
        })),
        "data": data,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub key_id: Option<Uuid>,
    pub model: Option<String>,
    /// `ok` or `error`.
    #[param(pattern = "^(ok|error)$")]
    pub status: Option<String>,
    /// Only requests attributed to this end user.
    pub user: Option<String>,
    /// Only requests carrying this tag.
    pub tag: Option<String>,
}

type OutcomeRow = (String, String, Value);

/// `GET /admin/api/usage/requests[?limit=&key_id=&model=&status=&user=&tag=]`:
/// the most recent recorded requests, newest first, each with its outcome
/// and attribution.
#[utoipa::path(
    get,
    path = "/admin/api/usage/requests",
    operation_id = "usage_requests",
    tag = "reports",
    summary = "The latest requests, newest first",
    params(RequestsQuery),
    responses((status = 200, description = "The requests.", body = crate::openapi::admin::ObjectList))
)]
pub async fn requests(
    State(state): State<AppState>,
    query: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    crate::billing::attribution_filters(query.user.as_deref(), query.tag.as_deref())?;
    let event_type = match query.status.as_deref() {
        None | Some("") => None,
        Some("ok") => Some("RequestCompleted"),
        Some("error") => Some("RequestFailed"),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown status {other:?}; use 'ok' or 'error'."
            )));
        }
    };
    let rows: Vec<OutcomeRow> = sqlx::query_as(
        "SELECT aggregate_id, event_type, payload::jsonb FROM events
         WHERE aggregate_type = 'request'
           AND event_type IN ('RequestCompleted', 'RequestFailed')
           AND ($1::text IS NULL OR event_type = $1)
           AND ($2::text IS NULL OR payload::jsonb -> event_type ->> 'key_id' = $2)
           AND ($3::text IS NULL OR payload::jsonb -> event_type ->> 'model' = $3)
           AND ($5::text IS NULL
                OR payload::jsonb -> event_type -> 'attribution' ->> 'user' = $5)
           AND ($6::text IS NULL
                OR payload::jsonb -> event_type -> 'attribution' -> 'tags' ? $6)
         ORDER BY pos DESC LIMIT $4",
    )
    .bind(event_type)
    .bind(query.key_id.map(|k| k.to_string()))
    .bind(query.model.filter(|m| !m.is_empty()))
    .bind(limit)
    .bind(&query.user)
    .bind(&query.tag)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(id, event_type, payload)| outcome_view(&id, &event_type, &payload))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

fn outcome_view(id: &str, event_type: &str, payload: &Value) -> Value {
    let p = payload.get(event_type).unwrap_or(payload);
    let usage = p.get("usage").cloned().unwrap_or(Value::Null);
    json!({
        "id": id,
        "status": if event_type == "RequestCompleted" { "ok" } else { "error" },
        "key_id": p.get("key_id"),
        "provider": p.get("provider"),
        "model": p.get("model"),
        "http_status": p.get("status"),
        "error_type": p.get("error_type"),
        "message": p.get("message"),
        "usage": usage,
        "cost_usd": p.get("cost_micros").and_then(Value::as_i64).map(usd),
        "latency_ms": p.get("latency_ms"),
        "at": p.get("at"),
        "user": p.get("attribution").and_then(|a| a.get("user")),
        "tags": p.get("attribution").and_then(|a| a.get("tags")).cloned().unwrap_or_else(|| json!([])),
    })
}

/// `GET /admin/api/usage/requests/{id}`: one request's whole story (accepted,
/// each attempt, outcome), in order.
#[utoipa::path(
    get,
    path = "/admin/api/usage/requests/{id}",
    tag = "reports",
    summary = "One request's events",
    params(("id" = String, Path, description = "The request id.")),
    responses((status = 200, description = "The request and its events.", body = crate::openapi::admin::Report))
)]
pub async fn request_detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "request")?;
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, payload::jsonb FROM events
         WHERE aggregate_type = 'request' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    if rows.is_empty() {
        return Err(ApiError::NotFound {
            message: "No such request.".into(),
            code: "not_found",
        });
    }
    let events: Vec<Value> = rows
        .into_iter()
        .map(|(t, payload)| {
            let body = payload.get(&t).cloned().unwrap_or(payload);
            json!({ "type": t, "data": body })
        })
        .collect();
    Ok(Json(
        json!({ "object": "request", "id": id, "events": events }),
    ))
}
