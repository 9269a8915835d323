//! Admin views of usage, billing and the request log, and cost audits, all
//! read from the projector's views (`usage_hourly`, `billing_monthly`,
//! `request_log`).
//!
//! Latency percentiles are computed at query time from the request log
//! (`percentile_cont` over the rows of the group): exact, and the request log
//! exists anyway, whereas mergeable histograms per hour would be approximate.
//!
//! `/admin/api/billing` without `group_by` answers per key and month from
//! `billing_monthly`, as it always has; with `group_by` it is a report of
//! the request log over a time range (`group_by`), as JSON or CSV (`csv`).

pub mod csv;
pub mod group_by;

use std::collections::{BTreeMap, HashMap};

use aigw_runtime::audit::{self, AuditScope};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::parse_json;
use crate::chat::body_bytes;
use crate::classes::{self, Classes, ClassesColumn};
use crate::error::ApiError;

/// A day given as `YYYY-MM-DD`, or a month as `YYYY-MM` (its first day).
fn day<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let s = if s.len() == 7 { format!("{s}-01") } else { s };
    s.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom("expected YYYY-MM-DD or YYYY-MM"))
}

/// A query string, or 400 with OpenAI's error JSON (axum's own rejection
/// is plain text).
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(crate) fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    #[serde(default, deserialize_with = "day")]
    pub from: Option<NaiveDate>,
    #[serde(default, deserialize_with = "day")]
    pub to: Option<NaiveDate>,
    pub key: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// `hour` or `day` (the default).
    #[param(pattern = "^(hour|day)$")]
    pub group: Option<String>,
}

type StatsRow = (
    Uuid,
    DateTime<Utc>,
    String,
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
    ClassesColumn,
);
type LatencyKey = (Uuid, DateTime<Utc>, String, String);

/// `GET /admin/api/stats`: usage by key, provider, model and hour or day,
/// with latency p50/p95.
#[utoipa::path(
    get,
    path = "/admin/api/stats",
    operation_id = "admin_stats",
    tag = "reports",
    summary = "Usage statistics of every key",
    params(StatsQuery),
    responses((status = 200, description = "The statistics.", body = crate::openapi::admin::Report))
)]
pub async fn stats(
    State(state): State<AppState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let unit = match q.group.as_deref() {
        None | Some("day") => "day",
        Some("hour") => "hour",
        Some(_) => return Err(ApiError::bad_request("group must be 'hour' or 'day'")),
    };
    let to = q.to.and_then(|d| d.succ_opt());
    let rows: Vec<StatsRow> = sqlx::query_as(&format!(
        "SELECT key_id, date_trunc($1, hour, 'UTC') AS t, provider, model, sum(requests)::int8,
                sum(errors)::int8, sum(prompt_tokens)::int8, sum(completion_tokens)::int8,
                sum(cost_micros)::int8, sum(unpriced_requests)::int8, sum(latency_ms_total)::int8,
                sum(images)::int8, sum(characters)::int8, sum(audio_seconds)::int8, {}
         FROM usage_hourly
         WHERE ($2::date IS NULL OR hour >= $2::date::timestamp AT TIME ZONE 'UTC')
           AND ($3::date IS NULL OR hour < $3::date::timestamp AT TIME ZONE 'UTC')
           AND ($4::uuid IS NULL OR key_id = $4)
           AND ($5::text IS NULL OR model = $5)
           AND ($6::text IS NULL OR provider = $6)
         GROUP BY 1, 2, 3, 4 ORDER BY 2, 1, 3, 4",
        classes::SUMS
    ))
    .bind(unit)
    .bind(q.from)
    .bind(to)
    .bind(q.key)
    .bind(&q.model)
    .bind(&q.provider)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let latencies: Vec<(Uuid, DateTime<Utc>, String, String, f64, f64)> = sqlx::query_as(
        "SELECT key_id, date_trunc($1, finished_at, 'UTC') AS t,
                CASE WHEN status = 'succeeded' THEN provider ELSE '' END AS p, model,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
         FROM request_log
         WHERE finished_at IS NOT NULL
           AND ($2::date IS NULL OR finished_at >= $2::date::timestamp AT TIME ZONE 'UTC')
           AND ($3::date IS NULL OR finished_at < $3::date::timestamp AT TIME ZONE 'UTC')
           AND ($4::uuid IS NULL OR key_id = $4)
           AND ($5::text IS NULL OR model = $5)
         GROUP BY 1, 2, 3, 4",
    )
    .bind(unit)
    .bind(q.from)
    .bind(to)
    .bind(q.key)
    .bind(&q.model)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let latencies: HashMap<LatencyKey, (f64, f64)> = latencies
        .into_iter()
        .map(|(k, t, p, m, p50, p95)| ((k, t, p, m), (p50, p95)))
        .collect();
    let data: Vec<Value> = rows
        .into_iter()
        .map(
            |(
                key,
                t,
                provider,
                model,
                requests,
                errors,
                prompt,
                completion,
                cost,
                unpriced,
                latency,
                images,
                characters,
                audio_seconds,
                sqlx::types::Json(classes),
            )| {
                let (p50, p95) = latencies
                    .get(&(key, t, provider.clone(), model.clone()))
                    .copied()
                    .unwrap_or_default();
                classes.shown_in(json!({
                    "key_id": key,
                    unit: t,
                    "provider": provider,
                    "model": model,
                    "requests": requests,
                    "errors": errors,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "cost_micros": cost,
                    "cost_usd": usd(cost),
                    "unpriced_requests": unpriced,
                    "images": images,
                    "characters": characters,
                    "audio_seconds": audio_seconds,
                    "avg_latency_ms": if requests > 0 { latency / requests } else { 0 },
                    "p50_latency_ms": p50,
                    "p95_latency_ms": p95,
                }))
            },
        )
        .collect();
    Ok(Json(
        json!({ "object": "list", "group": unit, "data": data }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BillingQuery {
    /// Without `group_by`: a day (`YYYY-MM-DD`) or month (`YYYY-MM`) whose
    /// month is the first. With `group_by`: the range's start, a day, a
    /// month or an RFC 3339 time (default: the current month).
    pub from: Option<String>,
    /// Without `group_by`: the last month's day or month. With `group_by`:
    /// the range's end, exclusive as an RFC 3339 time, inclusive as a day
    /// or month; at most 366 days after `from`.
    pub to: Option<String>,
    pub key: Option<Uuid>,
    /// Group the range's spend by `team`, `project`, `key`, `user`, `tag`,
    /// `model` or `provider` (from the request log). A request with several tags
    /// counts in each of their rows.
    #[param(pattern = "^(team|project|key|user|tag|model|provider)$")]
    pub group_by: Option<String>,
    /// `json` (the default) or `csv` (with `group_by`); `Accept: text/csv`
    /// asks for CSV too.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

/// A legacy `from`/`to`: `YYYY-MM-DD`, or `YYYY-MM` (its first day).
fn legacy_day(value: Option<&str>, param: &'static str) -> Result<Option<NaiveDate>, ApiError> {
    let Some(s) = value else { return Ok(None) };
    let s = if s.len() == 7 {
        format!("{s}-01")
    } else {
        s.to_string()
    };
    s.parse().map(Some).map_err(|_| ApiError::BadRequest {
        message: format!("'{param}' must be YYYY-MM-DD or YYYY-MM."),
        param: Some(param),
        code: None,
    })
}

type BillingRow = (
    Uuid,
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
    ClassesColumn,
);

/// `GET /admin/api/billing?from=&to=&key=`: per key and month, line items per
/// model. `from`/`to` select the months they fall in. With
/// `group_by=team|project|key|user|tag|model|provider`: the spend of a time range by that
/// dimension, with its total, as JSON or CSV (`format=csv`).
#[utoipa::path(
    get,
    path = "/admin/api/billing",
    tag = "reports",
    summary = "Cost per key and month, or over a range grouped by a dimension (JSON or CSV)",
    params(BillingQuery),
    responses((status = 200, description = "The billing rows; with `group_by`, a report with `data` (one row per group: `group`, requests, errors, every token class, cost), `total`, and `rows_sum_to_total` (false for `tag`: a request with several tags counts in each). With `format=csv`, the rows as CSV (a header row first) as an attachment.", content((crate::openapi::admin::Report = "application/json"), (String = "text/csv"))))
)]
pub async fn billing(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<BillingQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    if let Some(name) = q.group_by.as_deref() {
        let dimension = group_by::Dimension::parse(name).ok_or_else(|| ApiError::BadRequest {
            message: "'group_by' must be one of team, project, key, user, tag, model, provider."
                .into(),
            param: Some("group_by"),
            code: None,
        })?;
        let format = group_by::Format::of(q.format.as_deref(), &headers)?;
        let range = group_by::range(q.from.as_deref(), q.to.as_deref(), Utc::now())?;
        let report = group_by::report(&state.read_pool, dimension, range, q.key)
            .await
            .map_err(ApiError::internal)?;
        return report.into_response(format);
    }
    if q.format.as_deref().is_some_and(|f| f != "json") {
        return Err(ApiError::BadRequest {
            message: "'format=csv' needs 'group_by'.".into(),
            param: Some("format"),
            code: None,
        });
    }
    let from = legacy_day(q.from.as_deref(), "from")?;
    let to = legacy_day(q.to.as_deref(), "to")?;
    Ok(monthly(&state, from, to, q.key).await?.into_response())
}

/// Per key and month, from `billing_monthly`.
async fn monthly(
    state: &AppState,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    key: Option<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let rows: Vec<BillingRow> = sqlx::query_as(&format!(
        "SELECT key_id, month, model, requests, errors, prompt_tokens, completion_tokens,
                cost_micros, unpriced_requests, images, characters, audio_seconds, {}
         FROM billing_monthly
         WHERE ($1::date IS NULL OR month >= date_trunc('month', $1::date)::date)
           AND ($2::date IS NULL OR month <= $2::date)
           AND ($3::uuid IS NULL OR key_id = $3)
         ORDER BY key_id, month, model",
        classes::COLUMNS
    ))
    .bind(from)
    .bind(to)
    .bind(key)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    type Bill = (Vec<Value>, [i64; 8], Classes);
    let mut bills: BTreeMap<(Uuid, NaiveDate), Bill> = BTreeMap::new();
    for (
        key,
        month,
        model,
        requests,
        errors,
        prompt,
        completion,
        cost,
        unpriced,
        images,
        characters,
        audio_seconds,
        sqlx::types::Json(row_classes),
    ) in rows
    {
        let (items, totals, class_totals) = bills.entry((key, month)).or_default();
        class_totals.add(&row_classes);
        for (t, v) in totals.iter_mut().zip([
            requests,
            errors,
            prompt,
            completion,
            cost,
            images,
            characters,
            audio_seconds,
        ]) {
            *t += v;
        }
        items.push(row_classes.shown_in(json!({
            "model": model,
            "requests": requests,
            "errors": errors,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_micros": cost,
            "cost_usd": usd(cost),
            "unpriced_requests": unpriced,
            "images": images,
            "characters": characters,
            "audio_seconds": audio_seconds,
        })));
    }
    let data: Vec<Value> = bills
        .into_iter()
        .map(|((key, month), (items, t, class_totals))| {
            class_totals.shown_in(json!({
                "key_id": key,
                "month": month.format("%Y-%m").to_string(),
                "requests": t[0],
                "errors": t[1],
                "prompt_tokens": t[2],
                "completion_tokens": t[3],
                "cost_micros": t[4],
                "cost_usd": usd(t[4]),
                "images": t[5],
                "characters": t[6],
                "audio_seconds": t[7],
                "line_items": items,
            }))
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    pub key: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// `succeeded`, `failed` or `running`.
    #[param(pattern = "^(succeeded|failed|running)$")]
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Cursor: the `next` of the previous page (newest first).
    pub before: Option<Uuid>,
    /// Only requests attributed to this end user (`x-aigw-user` or `user`).
    pub user: Option<String>,
    /// Only requests carrying this tag.
    pub tag: Option<String>,
}

/// Checks `user` and `tag` filters by the rules their values were stored
/// under: a value no request can carry is a 400, not an empty list.
pub(crate) fn attribution_filters(user: Option<&str>, tag: Option<&str>) -> Result<(), ApiError> {
    if let Some(u) = user {
        crate::validate::check("user", u, crate::attribution::user_rule)?;
    }
    if let Some(t) = tag {
        crate::validate::check("tag", t, crate::attribution::tag_rule)?;
    }
    Ok(())
}

type LogRow = (
    Uuid,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    i32,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Value,
);

/// `GET /admin/api/requests`: the request log, newest first, filtered and
/// paginated by cursor. Request bodies are never stored in it.
#[utoipa::path(
    get,
    path = "/admin/api/requests",
    operation_id = "request_log",
    tag = "reports",
    summary = "The request log, newest first, by cursor",
    params(RequestsQuery),
    responses((status = 200, description = "A page of the log.", body = crate::openapi::admin::Report))
)]
pub async fn requests(
    State(state): State<AppState>,
    q: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    attribution_filters(q.user.as_deref(), q.tag.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT id, at, finished_at, key_id, model, provider, attempts, status, http_status,
                error_type, prompt_tokens, completion_tokens, cost_micros, latency_ms,
                jsonb_build_object('stream', stream, 'usage_estimated', estimated,
                    'cached_tokens', cached_tokens, 'cache_write_5m_tokens', cache_write_5m_tokens,
                    'cache_write_1h_tokens', cache_write_1h_tokens,
                    'reasoning_tokens', reasoning_tokens, 'price_fallback', price_fallback,
                    'user', user_id, 'tags', coalesce(tags, '{}'))
         FROM request_log
         WHERE ($1::uuid IS NULL OR key_id = $1)
           AND ($2::text IS NULL OR model = $2)
           AND ($3::text IS NULL OR provider = $3)
           AND ($4::text IS NULL OR status = $4)
           AND ($5::timestamptz IS NULL OR at >= $5)
           AND ($6::timestamptz IS NULL OR at < $6)
           AND ($7::uuid IS NULL OR id < $7)
           AND ($9::text IS NULL OR user_id = $9)
           AND ($10::text IS NULL OR tags @> ARRAY[$10::text])
         ORDER BY id DESC
         LIMIT $8",
    )
    .bind(q.key)
    .bind(&q.model)
    .bind(&q.provider)
    .bind(&q.status)
    .bind(q.from)
    .bind(q.to)
    .bind(q.before)
    .bind(limit + 1)
    .bind(&q.user)
    .bind(&q.tag)
    .fetch_all(&state.read_pool)
    .await
    .map_err(ApiError::internal)?;
    let more = rows.len() as i64 > limit;
    let data: Vec<Value> = rows
        .into_iter()
        .take(limit as usize)
        .map(
            |(
                id,
                at,
                finished_at,
                key,
                model,
                provider,
                attempts,
                status,
                http_status,
                error_type,
                prompt,
                completion,
                cost,
                latency,
                more_columns,
            )| {
                let mut row = json!({
                    "id": id,
                    "at": at,
                    "finished_at": finished_at,
                    "key_id": key,
                    "model": model,
                    "provider": provider,
                    "attempts": attempts,
                    "status": status,
                    "http_status": http_status,
                    "error_type": error_type,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "cost_micros": cost,
                    "latency_ms": latency,
                });
                // Stream, estimate, token classes, fallback flag, user, tags.
                if let (Some(obj), Value::Object(more)) = (row.as_object_mut(), more_columns) {
                    obj.extend(more);
                }
                row
            },
        )
        .collect();
    let next = if more {
        data.last().map(|r| r["id"].clone())
    } else {
        None
    };
    Ok(Json(
        json!({ "object": "list", "data": data, "has_more": more, "next": next }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AuditInput {
    #[serde(default, deserialize_with = "day")]
    from: Option<NaiveDate>,
    #[serde(default, deserialize_with = "day")]
    to: Option<NaiveDate>,
    #[serde(default)]
    key: Option<Uuid>,
}

/// `POST /admin/api/audit` `{"from","to","key"}`: the same audit as `aigw
/// audit`; `clean` is false when the billing view differs from the history
/// or leaves out quarantined events (listed in `quarantined`).
#[utoipa::path(
    post,
    path = "/admin/api/audit",
    tag = "reports",
    summary = "Audit the billing view against the event history",
    request_body = AuditInput,
    responses((status = 200, description = "The audit report (`clean`).", body = crate::openapi::admin::Report))
)]
pub async fn run_audit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let input: AuditInput = parse_json(&body_bytes(&state, body)?)?;
    let (Some(from), Some(to)) = (input.from, input.to) else {
        return Err(ApiError::bad_request("'from' and 'to' are required"));
    };
    if from > to {
        return Err(ApiError::bad_request("'from' must not be after 'to'"));
    }
    let scope = AuditScope {
        from,
        to,
        key: input.key,
    };
    let report = audit::audit(&state.stores.pool, scope, 10_000, |_| {})
        .await
        .map_err(ApiError::internal)?;
    let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
    body["clean"] = Value::Bool(report.is_clean());
    Ok(Json(body))
}
