//! `GET /admin/api/alerts`: the budget alerts recorded (see
//! `aigw_projector::alerts`), newest first, with their delivery state.
//!
//! Invariant: bounded: at most [`MAX_LIMIT`] rows a page, filtered by the
//! budget's owner (a key, a project or a team) and level, and paged by
//! time.

use aigw_runtime::views::alerts::{ALERT_COLUMNS, AlertRow};
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
    /// Only the alerts of this owner's budget (a key, project or team id).
    pub target: Option<Uuid>,
    /// Only the alerts of budgets at this level: `key`, `project` or `team`.
    #[param(pattern = "^(key|project|team)$")]
    pub level: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only alerts recorded before this time (the `at` of the previous
    /// page's last row).
    pub before: Option<DateTime<Utc>>,
}

/// `GET /admin/api/alerts[?key=|target=&level=&limit=&before=]`.
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
    if let Some(level) = q.level.as_deref()
        && !matches!(level, "key" | "project" | "team")
    {
        return Err(ApiError::BadRequest {
            message: "'level' must be one of key, project, team.".into(),
            param: Some("level"),
            code: None,
        });
    }
    let target = match (q.key, q.target) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::BadRequest {
                message: "'key' and 'target' name different budgets.".into(),
                param: Some("target"),
                code: None,
            });
        }
        (a, b) => a.or(b),
    };
    let level = if q.key.is_some() {
        Some("key")
    } else {
        q.level.as_deref()
    };
    let rows: Vec<AlertRow> = sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM budget_alerts
         WHERE ($1::uuid IS NULL OR target_id = $1)
           AND ($2::timestamptz IS NULL OR at < $2)
           AND ($4::text IS NULL OR level = $4)
         ORDER BY at DESC, id DESC LIMIT $3"
    ))
    .bind(target)
    .bind(q.before)
    .bind(limit)
    .bind(level)
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
