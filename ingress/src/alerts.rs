//! `GET /admin/api/alerts`: the budget alerts recorded (see
//! `aigw_projector::alerts`), newest first, with their delivery state.
//!
//! Invariant: bounded: at most [`MAX_LIMIT`] rows a page, filtered by the
//! budget's owner (a key today) and paged by time.

use aigw_projector::alerts::{ALERT_COLUMNS, AlertRow};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::billing::query;
use crate::error::ApiError;

/// Largest page.
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Only the alerts of this key's budget.
    pub key: Option<Uuid>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only alerts recorded before this time (the `at` of the previous
    /// page's last row).
    pub before: Option<DateTime<Utc>>,
}

/// `GET /admin/api/alerts[?key=&limit=&before=]`.
#[utoipa::path(
    get,
    path = "/admin/api/alerts",
    tag = "reports",
    summary = "Budget alerts, newest first",
    params(AlertsQuery),
    responses((status = 200, description = "The alerts, each with its delivery state.", body = crate::openapi::admin::ObjectList))
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::BadRequest {
                message: format!("'limit' must be from 1 to {MAX_LIMIT}."),
                param: Some("limit"),
                code: None,
            });
        }
    };
    let rows: Vec<AlertRow> = sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM budget_alerts
         WHERE ($1::uuid IS NULL OR target_id = $1)
           AND ($2::timestamptz IS NULL OR at < $2)
         ORDER BY at DESC, id DESC LIMIT $3"
    ))
    .bind(q.key)
    .bind(q.before)
    .bind(limit)
    .fetch_all(&state.stores.pool)
    .await
    .map_err(ApiError::internal)?;
    let data: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut v = row.to_json();
            v["delivery"] = json!({
                "delivered": row.delivered_at.is_some(),
                "delivered_at": row.delivered_at,
                "attempts": row.attempts,
                "last_status": row.last_status,
                "last_error": row.last_error,
            });
            v
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
