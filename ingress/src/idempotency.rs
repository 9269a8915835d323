//! `Idempotency-Key` on `POST /v1/chat/completions`: the first request with a
//! given (API key, Idempotency-Key) claims it in PostgreSQL (primary key, so
//! concurrent repeats cannot both run); its answer is stored, and a repeat
//! within 24 hours gets that answer back without running or billing again.
//!
//! Answers stored: successes and the caller's own errors (4xx). A 5xx,
//! a timeout or a streamed answer releases the claim, so the request may be
//! retried. A claim whose first request never finished (an ingress that died)
//! can be taken over once the request timeout has passed.
//!
//! A replay carries the stored answer's cost (`x-aigw-cost-usd`, or the
//! `unpriced` flag): the cost the first answer showed, kept with it.

use std::time::Duration;

use aigw_events::wire::AnswerCost;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use uuid::Uuid;

use crate::cost::Dialect;
use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 255;

/// The caller's `Idempotency-Key`, if any.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= MAX_LEN => Ok(Some(s.to_string())),
        _ => Err(ApiError::BadRequest {
            message: format!("'Idempotency-Key' must be 1 to {MAX_LEN} visible ASCII characters."),
            param: None,
            code: Some("invalid_idempotency_key"),
        }),
    }
}

/// What a claim found.
pub enum Claim {
    /// This request runs; store or release its answer afterwards.
    Claimed,
    /// A first request already answered: its status, body and cost.
    Done {
        request_id: Uuid,
        status: u16,
        body: Vec<u8>,
        cost: Option<AnswerCost>,
    },
    /// A first request is still running.
    InProgress,
}

pub async fn claim(
    pool: &sqlx::PgPool,
    key_id: Uuid,
    idempotency_key: &str,
    request_id: Uuid,
    request_timeout: Duration,
) -> Result<Claim, ApiError> {
    let stale = request_timeout.as_secs_f64() + 30.0;
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys AS i (key_id, idempotency_key, request_id)
         VALUES ($1, $2, $3)
         ON CONFLICT (key_id, idempotency_key) DO UPDATE
           SET request_id = EXCLUDED.request_id, created_at = now(), status = NULL, body = NULL,
               cost_micros = NULL, cost_unpriced = false
           WHERE i.created_at < now() - interval '24 hours'
              OR (i.status IS NULL AND i.created_at < now() - make_interval(secs => $4))
         RETURNING request_id",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .bind(request_id)
    .bind(stale)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)?;
    if claimed == Some(request_id) {
        return Ok(Claim::Claimed);
    }
    let row: Option<ClaimRow> = sqlx::query_as(
        "SELECT request_id, status, body, cost_micros, cost_unpriced FROM idempotency_keys
         WHERE key_id = $1 AND idempotency_key = $2",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(match row {
        Some((request_id, Some(status), body, cost_micros, unpriced)) => Claim::Done {
            request_id,
            status: u16::try_from(status).unwrap_or(500),
            body: body.unwrap_or_default(),
            cost: match (cost_micros, unpriced) {
                (Some(m), _) => Some(AnswerCost::Micros(m)),
                (None, true) => Some(AnswerCost::Unpriced),
                // An error answer, or one stored before costs were kept.
                (None, false) => None,
            },
        },
        _ => Claim::InProgress,
    })
}

/// A claim as stored: request, status, body, cost, unpriced flag.
type ClaimRow = (Uuid, Option<i32>, Option<Vec<u8>>, Option<i64>, bool);

/// The first request's answer, as it is kept for replays.
pub struct Stored<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// What it cost, when it was a priced or flagged answer.
    pub cost: Option<AnswerCost>,
}

/// Stores the first request's answer.
pub async fn store(
    pool: &sqlx::PgPool,
    key_id: Uuid,
    idempotency_key: &str,
    request_id: Uuid,
    answer: Stored<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $4, body = $5, cost_micros = $6, cost_unpriced = $7
         WHERE key_id = $1 AND idempotency_key = $2 AND request_id = $3",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .bind(request_id)
    .bind(i32::from(answer.status))
    .bind(answer.body)
    .bind(answer.cost.and_then(AnswerCost::micros))
    .bind(answer.cost == Some(AnswerCost::Unpriced))
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives the claim up, so the request may be retried.
pub async fn release(
    pool: &sqlx::PgPool,
    key_id: Uuid,
    idempotency_key: &str,
    request_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE key_id = $1 AND idempotency_key = $2 AND request_id = $3 AND status IS NULL",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .bind(request_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The stored answer, replayed with its cost.
pub fn replay(request_id: Uuid, status: u16, body: Vec<u8>, cost: Option<AnswerCost>) -> Response {
    let mut response = Response::new(Body::from(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Ok(v) = HeaderValue::from_str(&request_id.to_string()) {
        headers.insert("x-aigw-original-request-id", v);
    }
    if let Some(cost) = cost {
        Dialect::OpenAi.answer_headers(headers, cost);
    }
    response
}
