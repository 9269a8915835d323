//! `GET /admin/api/billing?group_by=...`: spend over a time range grouped by
//! one dimension, from the request log (the per-request truth the
//! projector writes), as JSON or CSV.
//!
//! Invariants:
//! - A dimension is one [`Dimension`] arm naming a request log column; one
//!   more dimension is one arm in [`Dimension::ALL`], [`Dimension::name`]
//!   and [`Dimension::column`]. Team and project are the key's as of the
//!   request's admission (moving a key later does not rewrite its past).
//! - The range is half-open `[from, to)` over `finished_at` (when the
//!   request's cost was recorded, as in `billing_monthly`), at most
//!   [`MAX_RANGE_DAYS`] long; a date `to` includes its whole day (a month,
//!   its whole month). Default: the current month.
//! - Every dimension but `tag` puts each request in exactly one row (a
//!   request without a value is in the row whose group is `null`), so the
//!   rows sum exactly to `total`. A request with several tags counts in each
//!   of their rows, so tag rows can sum to more than the total (untagged
//!   requests are in the `null` row).
//! - At most [`MAX_ROWS`] rows; `truncated` says when there were more.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::csv;
use crate::error::ApiError;

/// Longest range one report covers.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Most rows one report holds.
pub const MAX_ROWS: usize = 10_000;

/// What billing can be grouped by: each a request log column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Team,
    Project,
    Key,
    User,
    Tag,
    Model,
    Provider,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Team,
        Dimension::Project,
        Dimension::Key,
        Dimension::User,
        Dimension::Tag,
        Dimension::Model,
        Dimension::Provider,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Team => "team",
            Dimension::Project => "project",
            Dimension::Key => "key",
            Dimension::User => "user",
            Dimension::Tag => "tag",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
        }
    }

    /// The request log column whose value names a request's group.
    fn column(self) -> &'static str {
        match self {
            Dimension::Team => "team_id",
            Dimension::Project => "project_id",
            Dimension::Key => "key_id",
            Dimension::User => "user_id",
            Dimension::Tag => "tags",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
        }
    }

    /// Whether each request is in exactly one row (rows sum to the total).
    pub fn partitions(self) -> bool {
        self != Dimension::Tag
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The group expression (text) and the `FROM` clause: an array column
    /// is unnested, an empty or missing array as one `null` group.
    fn source(self) -> (String, String) {
        let column = self.column();
        if column == "tags" {
            (
                "g.value".into(),
                format!(
                    "request_log r CROSS JOIN LATERAL
                     unnest(coalesce(nullif(r.{column}, '{{}}'), ARRAY[NULL::text])) AS g(value)"
                ),
            )
        } else {
            (format!("r.{column}::text"), "request_log r".into())
        }
    }
}

/// One row's sums (or the total's).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Sums {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_micros: i64,
    pub unpriced_requests: i64,
}

/// The sum columns, in [`Sums`] order, as [`CSV_COLUMNS`] names them.
const SUMS: &str = "count(*)::int8 AS requests,
    count(*) FILTER (WHERE r.status = 'failed')::int8 AS errors,
    coalesce(sum(r.prompt_tokens), 0)::int8 AS prompt_tokens,
    coalesce(sum(r.completion_tokens), 0)::int8 AS completion_tokens,
    coalesce(sum(r.cached_tokens), 0)::int8 AS cached_tokens,
    coalesce(sum(r.cache_write_5m_tokens), 0)::int8 AS cache_write_5m_tokens,
    coalesce(sum(r.cache_write_1h_tokens), 0)::int8 AS cache_write_1h_tokens,
    coalesce(sum(r.reasoning_tokens), 0)::int8 AS reasoning_tokens,
    coalesce(sum(r.cost_micros), 0)::int8 AS cost_micros,
    count(*) FILTER (WHERE r.cost_micros IS NULL
        AND coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0) > 0)::int8
        AS unpriced_requests";

/// The columns of a CSV report after the group's.
pub const CSV_COLUMNS: [&str; 11] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "cost_micros",
    "cost_usd",
    "unpriced_requests",
];

impl Sums {
    /// Values in [`CSV_COLUMNS`] order; `cost_usd` exact, in decimal.
    pub fn cells(&self) -> [String; 11] {
        [
            self.requests.to_string(),
            self.errors.to_string(),
            self.prompt_tokens.to_string(),
            self.completion_tokens.to_string(),
            self.cached_tokens.to_string(),
            self.cache_write_5m_tokens.to_string(),
            self.cache_write_1h_tokens.to_string(),
            self.reasoning_tokens.to_string(),
            self.cost_micros.to_string(),
            usd_text(self.cost_micros),
            self.unpriced_requests.to_string(),
        ]
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
            "cached_tokens": self.cached_tokens,
            "cache_write_5m_tokens": self.cache_write_5m_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_micros": self.cost_micros,
            "cost_usd": super::usd(self.cost_micros),
            "unpriced_requests": self.unpriced_requests,
        })
    }
}

/// Micro-dollars as an exact decimal dollar amount (`1.234567`).
pub fn usd_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// A range bound: a date (`YYYY-MM-DD`), a month (`YYYY-MM`) or an RFC 3339
/// time. As `to`, a date or month includes its whole day or month.
pub fn bound(s: &str, is_end: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    let midnight = |d: NaiveDate| Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return midnight(if is_end { day.succ_opt()? } else { day });
    }
    let first = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?;
    midnight(if is_end { next_month(first)? } else { first })
}

fn next_month(first: NaiveDate) -> Option<NaiveDate> {
    if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
}

/// `[from, to)` from the query, validated; the current month by default.
pub fn range(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let bad = |param: &'static str| ApiError::BadRequest {
        message: format!(
            "'{param}' must be a date (YYYY-MM-DD), a month (YYYY-MM) or an RFC 3339 time."
        ),
        param: Some(param),
        code: None,
    };
    let this_month = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Utc.from_utc_datetime(&d))
        .ok_or_else(|| ApiError::Internal("the current month".into()))?;
    let from = match from {
        Some(s) => bound(s, false).ok_or_else(|| bad("from"))?,
        None => this_month,
    };
    let to = match to {
        Some(s) => bound(s, true).ok_or_else(|| bad("to"))?,
        None => {
            let next = next_month(this_month.date_naive())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| Utc.from_utc_datetime(&d))
                .ok_or_else(|| ApiError::Internal("the next month".into()))?;
            next.max(from + chrono::Duration::days(1))
        }
    };
    if to <= from || (to - from) > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::BadRequest {
            message: format!("'to' must be after 'from', at most {MAX_RANGE_DAYS} days later."),
            param: Some("to"),
            code: None,
        });
    }
    Ok((from, to))
}

/// A grouped report.
pub struct Report {
    pub dimension: Dimension,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub rows: Vec<(Option<String>, Sums)>,
    pub total: Sums,
    pub truncated: bool,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    value: Option<String>,
    #[sqlx(flatten)]
    sums: Sums,
}

/// Reads the report: the rows (most expensive first) and the total, in one
/// snapshot so they agree.
pub async fn report(
    pool: &sqlx::PgPool,
    dimension: Dimension,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    key: Option<Uuid>,
) -> Result<Report, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let filter =
        "r.finished_at >= $1 AND r.finished_at < $2 AND ($3::uuid IS NULL OR r.key_id = $3)";
    let (group, source) = dimension.source();
    let mut rows: Vec<GroupRow> = sqlx::query_as(&format!(
        "SELECT {group} AS value, {SUMS} FROM {source} WHERE {filter}
         GROUP BY 1 ORDER BY cost_micros DESC, requests DESC, 1 NULLS LAST LIMIT $4"
    ))
    .bind(from)
    .bind(to)
    .bind(key)
    .bind(MAX_ROWS as i64 + 1)
    .fetch_all(&mut *tx)
    .await?;
    let total: Sums = sqlx::query_as(&format!("SELECT {SUMS} FROM request_log r WHERE {filter}"))
        .bind(from)
        .bind(to)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    Ok(Report {
        dimension,
        from,
        to,
        rows: rows.into_iter().map(|r| (r.value, r.sums)).collect(),
        total,
        truncated,
    })
}

/// How the caller wants the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// `format=json|csv`, else `Accept: text/csv`, else JSON.
    pub fn of(format: Option<&str>, headers: &HeaderMap) -> Result<Self, ApiError> {
        match format {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some(_) => Err(ApiError::BadRequest {
                message: "'format' must be 'json' or 'csv'.".into(),
                param: Some("format"),
                code: None,
            }),
            None => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Ok(if accept.contains("text/csv") {
                    Format::Csv
                } else {
                    Format::Json
                })
            }
        }
    }
}

impl Report {
    pub fn into_response(self, format: Format) -> Result<Response, ApiError> {
        match format {
            Format::Json => Ok(axum::Json(self.to_json()).into_response()),
            Format::Csv => {
                let body = csv::write(self.dimension.name(), &self.rows)?;
                let file = format!(
                    "attachment; filename=\"aigw-billing-{}-{}-{}.csv\"",
                    self.dimension.name(),
                    self.from.format("%Y%m%dT%H%M%SZ"),
                    self.to.format("%Y%m%dT%H%M%SZ"),
                );
                let mut response = body.into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                );
                if let Ok(v) = HeaderValue::from_str(&file) {
                    headers.insert(header::CONTENT_DISPOSITION, v);
                }
                Ok(response)
            }
        }
    }

    fn to_json(&self) -> Value {
        let data: Vec<Value> = self
            .rows
            .iter()
            .map(|(group, sums)| {
                let mut row = sums.to_json();
                row["group"] = json!(group);
                row
            })
            .collect();
        json!({
            "object": "billing_report",
            "group_by": self.dimension.name(),
            "from": self.from,
            "to": self.to,
            "data": data,
            "total": self.total.to_json(),
            "rows_sum_to_total": self.dimension.partitions() && !self.truncated,
            "truncated": self.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let now = at("2026-12-04T15:00:00Z");
        assert_eq!(
            range(None, None, now).unwrap(),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            range(Some("2026-11-02"), Some("2026-11-03"), now).unwrap(),
            (at("2026-11-02T00:00:00Z"), at("2026-11-04T00:00:00Z"))
        );
        assert_eq!(
            range(Some("2026-02"), Some("2026-02"), now).unwrap(),
            (at("2026-02-01T00:00:00Z"), at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            range(
                Some("2026-11-02T10:00:00+02:00"),
                Some("2026-11-02T12:00:00Z"),
                now
            )
            .unwrap(),
            (at("2026-11-02T08:00:00Z"), at("2026-11-02T12:00:00Z"))
        );
        for (from, to) in [
            (Some("yesterday"), None),
            (Some("2026-11-05"), Some("2026-11-04")),
            (Some("2020-01-01"), Some("2026-01-01")),
            (Some("2026-11-02T12:00:00Z"), Some("2026-11-02T12:00:00Z")),
        ] {
            assert!(range(from, to, now).is_err(), "{from:?} {to:?}");
        }
    }

    #[test]
    fn dimensions() {
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.name()), Some(d));
        }
        assert_eq!(Dimension::parse("tenant"), None);
        assert!(!Dimension::Tag.partitions());
        assert!(Dimension::Key.partitions());
        assert_eq!(usd_text(1_234_567), "1.234567");
        assert_eq!(usd_text(5), "0.000005");
        assert_eq!(usd_text(0), "0.000000");
    }
}
