//! Health, readiness, metrics, the model list and the caller's usage stats.

use std::collections::{BTreeMap, BTreeSet};

use aigw_events::deployments::Lookup;
use aigw_runtime::Target;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::classes::{self, Classes, ClassesColumn};
use crate::error::ApiError;

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process answers.", body = Object))
)]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when both NATS and PostgreSQL answer.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    summary = "Readiness: NATS and PostgreSQL answer",
    responses((status = 200, description = "Ready.", body = Object), (status = 503, description = "NATS or PostgreSQL is down.", body = Object))
)]
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

/// `GET /v1/models`: the models this key may use: those of enabled
/// providers its scopes allow (for Azure, the deployment names and the
/// models exactly one deployment serves; a model that several deployments
/// of a provider serve is refused, so not listed), and the aliases with at
/// least one such target.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "inference",
    summary = "The models this key may use",
    responses((status = 200, description = "The models, in OpenAI's format (in Gemini's, `{\"models\": [...]}`, when the key comes as `x-goog-api-key`, as google-genai sends it).", body = crate::openapi::schemas::ModelList))
)]
pub async fn models(
    State(state): State<AppState>,
    Caller(key): Caller,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let list = model_list(&state, &key)?;
    if headers.contains_key(crate::dialects::gemini::KEY_HEADER) {
        return Ok(Json(crate::dialects::gemini::model_list(&list)));
    }
    Ok(Json(list))
}

/// The models `key` may use, in OpenAI's list shape.
pub fn model_list(
    state: &AppState,
    key: &std::sync::Arc<aigw_runtime::KeyEntry>,
) -> Result<Value, ApiError> {
    let scopes = &crate::admission::lineage(state, key)?.scopes(key);
    let mut seen = BTreeMap::new();
    let providers: Vec<_> = state
        .registry
        .providers()
        .into_iter()
        .filter(|p| !p.spec.disabled)
        .collect();
    let ambiguous: BTreeSet<String> = providers
        .iter()
        .flat_map(|p| p.spec.ambiguous_models().into_iter().map(str::to_string))
        .collect();
    for provider in &providers {
        for model in provider.spec.caller_names() {
            if ambiguous.contains(model) {
                continue;
            }
            let Lookup::Serves(id) = provider.spec.lookup(model) else {
                continue;
            };
            if !Target::new(provider.clone(), id).allowed_by(scopes, model) {
                continue;
            }
            seen.entry(model.to_string()).or_insert_with(|| {
                json!({
                    "id": model,
                    "object": "model",
                    "created": provider.created_at.timestamp(),
                    "owned_by": provider.spec.name,
                })
            });
        }
    }
    for alias in state.registry.aliases() {
        let usable = state
            .registry
            .resolve(&alias.name, None)
            .is_ok_and(|targets| targets.iter().any(|t| t.allowed_by(scopes, &alias.name)));
        if usable {
            seen.entry(alias.name.clone()).or_insert_with(
                || json!({"id": alias.name, "object": "model", "created": 0, "owned_by": "aigw"}),
            );
        }
    }
    Ok(json!({ "object": "list", "data": seen.into_values().collect::<Vec<_>>() }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

type UsageRow = (
    NaiveDate,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    ClassesColumn,
);

/// `GET /stats`: the caller's usage by day and model, from the projector's
/// view, with each token class.
#[utoipa::path(
    get,
    path = "/stats",
    operation_id = "caller_stats",
    tag = "caller",
    summary = "The caller's usage by day and model",
    params(StatsQuery),
    responses((status = 200, description = "Usage and totals.", body = crate::openapi::schemas::Stats))
)]
pub async fn stats(
    State(state): State<AppState>,
    Caller(key): Caller,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let rows: Vec<UsageRow> = sqlx::query_as(&format!(
        "SELECT day, model, requests, errors, prompt_tokens, completion_tokens,
                estimated_requests, latency_ms_total, cost_micros, unpriced_requests, images,
                characters, audio_seconds, {}
         FROM usage_daily
         WHERE key_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3)
         ORDER BY day, model",
        classes::COLUMNS
    ))
    .bind(key.id)
    .bind(query.from)
    .bind(query.to)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    // Latency percentiles come from the request log, exact per day and model.
    let percentiles: Vec<(NaiveDate, String, f64, f64)> = sqlx::query_as(
        "SELECT (finished_at AT TIME ZONE 'UTC')::date AS d, model,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
         FROM request_log
         WHERE key_id = $1 AND finished_at IS NOT NULL
           AND ($2::date IS NULL OR finished_at >= $2::date::timestamp AT TIME ZONE 'UTC')
           AND ($3::date IS NULL OR finished_at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC')
         GROUP BY 1, 2",
    )
    .bind(key.id)
    .bind(query.from)
    .bind(query.to)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let percentiles: BTreeMap<(NaiveDate, String), (f64, f64)> = percentiles
        .into_iter()
        .map(|(d, m, p50, p95)| ((d, m), (p50, p95)))
        .collect();
    let mut totals = [0i64; 8];
    let mut class_totals = Classes::default();
    let data: Vec<Value> = rows
        .into_iter()
        .map(
            |(
                day,
                model,
                requests,
                errors,
                prompt,
                completion,
                estimated,
                latency,
                cost,
                unpriced,
                images,
                characters,
                audio_seconds,
                sqlx::types::Json(classes),
            )| {
                class_totals.add(&classes);
                for (total, v) in totals.iter_mut().zip([
                    requests,
                    errors,
                    prompt,
                    completion,
                    cost,
                    images,
                    characters,
                    audio_seconds,
                ]) {
                    *total += v;
                }
                let (p50, p95) = percentiles
                    .get(&(day, model.clone()))
                    .copied()
                    .unwrap_or_default();
                classes.shown_in(json!({
                    "p50_latency_ms": p50,
                    "p95_latency_ms": p95,
                    "day": day,
                    "model": model,
                    "requests": requests,
                    "errors": errors,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "estimated_requests": estimated,
                "cost_usd": cost as f64 / 1_000_000.0,
                "cost_micros": cost,
                "unpriced_requests": unpriced,
                    "images": images,
                    "characters": characters,
                    "audio_seconds": audio_seconds,
                    "avg_latency_ms": if requests > 0 { latency / requests } else { 0 },
                }))
            },
        )
        .collect();
    Ok(Json(json!({
        "object": "stats",
        "key_id": key.id,
        "totals": class_totals.shown_in(json!({
            "requests": totals[0],
            "errors": totals[1],
            "prompt_tokens": totals[2],
            "completion_tokens": totals[3],
            "total_tokens": totals[2] + totals[3],
            "cost_usd": totals[4] as f64 / 1_000_000.0,
            "cost_micros": totals[4],
            "images": totals[5],
            "characters": totals[6],
            "audio_seconds": totals[7],
        })),
        "data": data,
    })))
}

type UnpricedRow = (String, i64, i64, i64, Option<NaiveDate>);

/// `GET /admin/api/unpriced`: models served without a price (their usage is
/// recorded and flagged, never billed as $0 silently), so an admin can price them.
#[utoipa::path(
    get,
    path = "/admin/api/unpriced",
    tag = "providers",
    summary = "Models served without a price",
    responses((status = 200, description = "The unpriced models.", body = crate::openapi::admin::ObjectList))
)]
pub async fn unpriced(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows: Vec<UnpricedRow> = sqlx::query_as(
        "SELECT model, sum(unpriced_requests)::int8, sum(prompt_tokens)::int8,
                sum(completion_tokens)::int8, max(day)
         FROM usage_daily WHERE unpriced_requests > 0 GROUP BY model ORDER BY model",
    )
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(model, requests, prompt, completion, last)| {
            json!({"model": model, "unpriced_requests": requests, "prompt_tokens": prompt,
                   "completion_tokens": completion, "last_day": last})
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
