//! `GET /admin/api/quarantine`: the poison events the projector quarantined
//! (events it could not fold into the views), newest first, with their error.
//! Read-only: an event leaves the quarantine when a rebuild applies it.

use aigw_runtime::views::quarantine;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// Most events one call returns.
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /admin/api/quarantine[?limit=]`: `{"object":"list","data":[...],
/// "total","has_more"}`, newest first.
#[utoipa::path(
    get,
    path = "/admin/api/quarantine",
    operation_id = "list_quarantine",
    tag = "reports",
    summary = "Quarantined events, newest first",
    params(QuarantineQuery),
    responses((status = 200, description = "The quarantine.", body = crate::openapi::admin::ObjectList))
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<QuarantineQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let (events, total) = quarantine::list(&state.stores.pool, limit)
        .await
        .map_err(ApiError::internal)?;
    let has_more = total > events.len() as i64;
    Ok(Json(json!({
        "object": "list",
        "data": events,
        "total": total,
        "has_more": has_more,
    })))
}
