//! Stored responses of OpenAI's Responses API: `GET /v1/responses/{id}`,
//! `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, and
//! the `previous_response_id` of `POST /v1/responses`.
//!
//! Invariants:
//! - A stored response (`aigw_events::response`) is read from the event
//!   store by its aggregate id, never from a projection: a response the
//!   dispatcher just stored is readable on every replica at once.
//! - Only the key that created a response reads, lists, deletes or
//!   continues it; for any other key, and once deleted, it does not exist
//!   (404 in OpenAI's shape).
//! - A continuation's body is the previous response's input and output
//!   items, then its own: expanded here, before translation and
//!   admission (its budget hold counts the whole conversation), and the
//!   expanded body is what is queued. It is bounded by
//!   `AIGW_MAX_BODY_BYTES` like any body (413 beyond it). Each stored
//!   response holds its whole conversation, so a chain of any depth is one
//!   load.
//! - The caller is answered before its outcome (and stored response) is
//!   recorded: a read of a response whose request was accepted within
//!   the last 10 minutes and is not recorded yet waits for the recording,
//!   at most `SETTLE_WAIT` (5 s).
//! - `input_items` pages with `limit` 1-100 (default 20), `order`
//!   `asc`|`desc` (default `desc`) and `after` (an item id of the list);
//!   an item stored without an id is listed with `in_<position>`.

use std::time::{Duration, Instant};

use aigw_events::response::ResponseCommand;
use aigw_events::{META_ACTOR, META_REQUEST_ID, ResponseAggregate};
use aigw_runtime::dialect::responses_in;
use aigw_runtime::store::metadata;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::validate::invalid;

/// The longest response id looked up (aigw's are 41 characters).
const MAX_ID_CHARS: usize = 128;

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("Response with id '{id}' not found."),
        code: "response_not_found",
    }
}

/// The caller's live stored response `id`, if there is one.
async fn own(
    state: &AppState,
    key_id: Uuid,
    id: &str,
) -> Result<Option<ResponseAggregate>, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_CHARS {
        return Ok(None);
    }
    let found = settled(state, id).await.map_err(ApiError::internal)?;
    Ok(found.filter(|r| r.owned_by(key_id)))
}

/// How long a read waits for a response whose request is still being
/// recorded (the caller is answered before the outcome is stored).
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The stored response `id`; when there is none yet but its request was
/// accepted lately and is not recorded yet, waits for the recording (a
/// client continuing at once after its answer), at most [`SETTLE_WAIT`].
/// An id that names no recent request is answered at once.
async fn settled(state: &AppState, id: &str) -> aigw_runtime::Result<Option<ResponseAggregate>> {
    let deadline = Instant::now() + SETTLE_WAIT;
    let request = id
        .strip_prefix("resp_")
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .filter(|uuid| {
            uuid.get_timestamp().is_some_and(|t| {
                let (secs, _) = t.to_unix();
                let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
                now.saturating_sub(secs) <= 600
            })
        });
    loop {
        let found = state.stores.response(id).await?;
        let Some(request) = request.filter(|_| found.is_none()) else {
            return Ok(found);
        };
        if Instant::now() >= deadline || state.stores.request_recorded(&request.to_string()).await?
        {
            // Recorded without a stored response, or not in time: one
            // last look (recorded and stored are one transaction).
            return state.stores.response(id).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Expands a body's `previous_response_id` (when set) into its input:
/// the previous response's input and output items come first.
pub async fn continue_from_previous(
    state: &AppState,
    key_id: Uuid,
    native: &mut Value,
) -> Result<(), ApiError> {
    let id = match native.get("previous_response_id") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(id)) => id.clone(),
        Some(_) => {
            return Err(invalid(
                "'previous_response_id' must be a string.",
                "previous_response_id",
            ));
        }
    };
    let previous = own(state, key_id, &id)
        .await?
        .ok_or(ApiError::PreviousResponseNotFound(id))?;
    responses_in::expand(native, &previous.input, previous.output());
    let size = serde_json::to_vec(native).map_or(usize::MAX, |b| b.len());
    if size > state.max_body_bytes {
        return Err(ApiError::PayloadTooLarge(state.max_body_bytes));
    }
    Ok(())
}

/// `GET /v1/responses/{id}`.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}",
    tag = "inference",
    summary = "One of the caller's stored responses",
    params(("id" = String, Path, description = "The response id (`resp_...`).")),
    responses((status = 200, description = "The response object, as it was answered.", body = crate::openapi::schemas::ResponseObject))
)]
pub async fn get_response(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let response = own(&state, key.id, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(response.response))
}

/// `DELETE /v1/responses/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/responses/{id}",
    tag = "inference",
    summary = "Delete one of the caller's stored responses",
    params(("id" = String, Path, description = "The response id (`resp_...`).")),
    responses((status = 200, description = "Deleted: `{\"id\", \"object\": \"response.deleted\", \"deleted\": true}`.", body = crate::openapi::schemas::ResponseDeleted))
)]
pub async fn delete_response(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if own(&state, key.id, &id).await?.is_none() {
        return Err(not_found(&id));
    }
    let actor = format!("key:{}", key.id);
    let meta = metadata(&[(META_REQUEST_ID, &id), (META_ACTOR, &actor)]);
    let command = ResponseCommand::DeleteResponse {
        actor: actor.clone(),
        at: Utc::now(),
    };
    match state
        .stores
        .responses
        .execute_with_metadata(&id, command, meta)
        .await
    {
        Ok(()) => Ok(Json(
            json!({"id": id, "object": "response.deleted", "deleted": true}),
        )),
        // Deleted at the same moment by another call.
        Err(cqrs_es::AggregateError::UserError(_)) => Err(not_found(&id)),
        Err(e) if aigw_runtime::store::is_conflict(&e) => Err(not_found(&id)),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InputItemsQuery {
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `asc` (oldest first) or `desc` (default).
    #[param(pattern = "^(asc|desc)$")]
    order: Option<String>,
    /// An item id: the previous page's `last_id`.
    after: Option<String>,
}

/// A page of `items` (ids filled in) by the query.
fn page(mut items: Vec<Value>, q: &InputItemsQuery) -> Result<Value, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("'limit' must be between 1 and 100.", "limit"));
    }
    for (i, item) in items.iter_mut().enumerate() {
        if let Some(obj) = item.as_object_mut()
            && !obj.get("id").is_some_and(Value::is_string)
        {
            obj.insert("id".into(), Value::String(format!("in_{i}")));
        }
    }
    match q.order.as_deref() {
        None | Some("") | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => return Err(invalid("'order' must be asc or desc.", "order")),
    }
    let id_of = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_string);
    let start = match q.after.as_deref() {
        None | Some("") => 0,
        Some(after) => {
            items
                .iter()
                .position(|v| id_of(v).as_deref() == Some(after))
                .ok_or_else(|| invalid("'after' is not an item of this response.", "after"))?
                + 1
        }
    };
    let rest = items.get(start..).unwrap_or_default();
    let limit = limit as usize;
    let data: Vec<Value> = rest.iter().take(limit).cloned().collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": data.first().and_then(id_of),
        "last_id": data.last().and_then(id_of),
        "has_more": rest.len() > limit,
    }))
}

/// `GET /v1/responses/{id}/input_items?limit=&order=&after=`.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}/input_items",
    tag = "inference",
    summary = "The input items of one of the caller's stored responses (the whole conversation it answered)",
    params(("id" = String, Path, description = "The response id (`resp_...`)."), InputItemsQuery),
    responses((status = 200, description = "A page of input items.", body = crate::openapi::schemas::InputItemList))
)]
pub async fn input_items(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
    q: Result<Query<InputItemsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = crate::billing::query(q)?;
    let response = own(&state, key.id, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(page(response.input, &q)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<i64>, order: Option<&str>, after: Option<&str>) -> InputItemsQuery {
        InputItemsQuery {
            limit,
            order: order.map(str::to_string),
            after: after.map(str::to_string),
        }
    }

    #[test]
    fn input_items_page_in_either_order() {
        let items: Vec<Value> = (0..5)
            .map(|i| json!({"role": "user", "content": i}))
            .collect();
        let p = page(items.clone(), &query(Some(2), Some("asc"), None)).unwrap();
        assert_eq!(p["first_id"], "in_0");
        assert_eq!(p["last_id"], "in_1");
        assert_eq!(p["has_more"], true);
        let p = page(items.clone(), &query(Some(2), Some("asc"), Some("in_3"))).unwrap();
        assert_eq!(p["data"].as_array().unwrap().len(), 1);
        assert_eq!(p["has_more"], false);
        let p = page(items.clone(), &query(None, None, None)).unwrap();
        assert_eq!(p["first_id"], "in_4");
        assert!(page(items.clone(), &query(Some(0), None, None)).is_err());
        assert!(page(items.clone(), &query(None, Some("up"), None)).is_err());
        assert!(page(items, &query(None, None, Some("nope"))).is_err());
    }
}
