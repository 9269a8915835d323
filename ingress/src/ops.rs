//! Health, readiness, metrics, the model list and the caller's usage stats.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when both NATS and PostgreSQL answer.
pub async fn ready(State(state): State<AppState>) -> Response {
    let nats_ok = state.client.connection_state() == async_nats::connection::State::Connected;
    let db_ok = sqlx::query("SELECT 1")
        .execute(&state.stores.pool)
        .await
        .is_ok();
    let status = if nats_ok && db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "nats": if nats_ok { "ok" } else { "down" },
        "database": if db_ok { "ok" } else { "down" },
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/models`: every model a configured provider serves.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let mut seen = BTreeMap::new();
    for provider in state.registry.providers() {
        for model in &provider.spec.models {
            seen.entry(model.clone()).or_insert_with(|| {
                json!({
                    "id": model,
                    "object": "model",
                    "created": provider.created_at.timestamp(),
                    "owned_by": provider.spec.name,
                })
            });
        }
    }
    Json(json!({ "object": "list", "data": seen.into_values().collect::<Vec<_>>() }))
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

type UsageRow = (NaiveDate, String, i64, i64, i64, i64, i64, i64);

/// `GET /stats`: the caller's usage by day and model, from the projector's view.
pub async fn stats(
    State(state): State<AppState>,
    Caller(key): Caller,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let rows: Vec<UsageRow> = sqlx::query_as(
        "SELECT day, model, requests, errors, prompt_tokens, completion_tokens,
                estimated_requests, latency_ms_total
         FROM usage_daily
         WHERE key_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3)
         ORDER BY day, model",
    )
    .bind(key.id)
    .bind(query.from)
    .bind(query.to)
    .fetch_all(&state.stores.pool)
    .await
    .map_err(ApiError::internal)?;
    let mut totals = [0i64; 4];
    let data: Vec<Value> = rows
        .into_iter()
        .map(
            |(day, model, requests, errors, prompt, completion, estimated, latency)| {
                totals[0] += requests;
                totals[1] += errors;
                totals[2] += prompt;
                totals[3] += completion;
                json!({
                    "day": day,
                    "model": model,
                    "requests": requests,
                    "errors": errors,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "estimated_requests": estimated,
                    "avg_latency_ms": if requests > 0 { latency / requests } else { 0 },
                })
            },
        )
        .collect();
    Ok(Json(json!({
        "object": "stats",
        "key_id": key.id,
        "totals": {
            "requests": totals[0],
            "errors": totals[1],
            "prompt_tokens": totals[2],
            "completion_tokens": totals[3],
            "total_tokens": totals[2] + totals[3],
        },
        "data": data,
    })))
}
