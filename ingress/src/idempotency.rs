//! `Idempotency-Key` on `POST /v1/chat/completions`: the first request with a
//! given (API key, Idempotency-Key) claims it in PostgreSQL (primary key, so
//! concurrent repeats cannot both run); its answer is stored, and a repeat
//! within 24 hours gets that answer back without running or billing again.
//!
//! Answers stored: successes and the caller's own errors (4xx). A 5xx,
//! a timeout or a streamed answer releases the claim, so the request may be
//! retried. A claim whose first request never finished (an ingress that died)
//! can be taken over once the request timeout has passed.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use uuid::Uuid;

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
    /// A first request already answered: its status and body.
    Done {
        request_id: Uuid,
        status: u16,
        body: Vec<u8>,
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
           SET request_id = EXCLUDED.request_id, created_at = now(), status = NULL, body = NULL
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
    let row: Option<(Uuid, Option<i32>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT request_id, status, body FROM idempotency_keys
         WHERE key_id = $1 AND idempotency_key = $2",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(match row {
        Some((request_id, Some(status), body)) => Claim::Done {
            request_id,
            status: u16::try_from(status).unwrap_or(500),
            body: body.unwrap_or_default(),
        },
        _ => Claim::InProgress,
    })
}

/// Stores the first request's answer.
pub async fn store(
    pool: &sqlx::PgPool,
    key_id: Uuid,
    idempotency_key: &str,
    request_id: Uuid,
    status: u16,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $4, body = $5
         WHERE key_id = $1 AND idempotency_key = $2 AND request_id = $3",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .bind(request_id)
    .bind(i32::from(status))
    .bind(body)
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

/// The stored answer, replayed.
pub fn replay(request_id: Uuid, status: u16, body: Vec<u8>) -> Response {
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
    response
}
