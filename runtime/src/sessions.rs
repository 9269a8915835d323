//! Admin UI sessions and the sign-in history in PostgreSQL.
//!
//! Invariants:
//! - a session is found only by the SHA-256 of its cookie's secret; the
//!   secret itself is never stored;
//! - a session authenticates only while it is not ended, its absolute
//!   expiry is ahead and it was seen within the idle timeout; every check
//!   reads the table, so an end (logout, a disabled user) holds on every
//!   replica at once;
//! - `last_seen_at` is written at most once a minute per session, so a
//!   busy UI does not write on every call;
//! - the sign-in history rows are folded from the sign-in aggregate's
//!   events, once each (`(sign_in_id, kind)` is unique).

use std::time::Duration;

use aigw_events::{SignInAggregate, SignInEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Result, RuntimeError};

/// A live session, as a request authenticated by its cookie sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session by the hash of its secret.
pub async fn create(
    pool: &PgPool,
    id: Uuid,
    secret_hash: &str,
    user_id: Uuid,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO admin_sessions (id, secret_hash, user_id, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(id)
    .bind(secret_hash)
    .bind(user_id)
    .bind(now)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The live session whose secret hashes to `secret_hash`, touched as seen.
pub async fn find_live(
    pool: &PgPool,
    secret_hash: &str,
    idle: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Session>> {
    let idle = chrono::Duration::from_std(idle)
        .map_err(|e| RuntimeError::Config(format!("session idle timeout: {e}")))?;
    let row: Option<(Uuid, Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, user_id, expires_at, last_seen_at FROM admin_sessions
          WHERE secret_hash = $1 AND ended_at IS NULL",
    )
    .bind(secret_hash)
    .fetch_optional(pool)
    .await?;
    let Some((id, user_id, expires_at, last_seen_at)) = row else {
        return Ok(None);
    };
    if expires_at <= now || last_seen_at + idle <= now {
        return Ok(None);
    }
    if now - last_seen_at >= chrono::Duration::seconds(60) {
        sqlx::query("UPDATE admin_sessions SET last_seen_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?;
    }
    Ok(Some(Session {
        id,
        user_id,
        expires_at,
    }))
}

/// Ends one session; whether it was live.
pub async fn end(pool: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let done =
        sqlx::query("UPDATE admin_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The ids of a user's sessions not yet ended (expired ones included).
pub async fn open_of_user(pool: &PgPool, user_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM admin_sessions WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user_id)
            .fetch_all(pool)
            .await?,
    )
}

/// One row of the sign-in history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SignInRow {
    pub seq: i64,
    pub sign_in_id: Uuid,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub method: String,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub at: DateTime<Utc>,
}

/// Writes the history rows of sign-in `id` from its events (each once).
pub async fn refresh_sign_in(pool: &PgPool, id: Uuid) -> Result<()> {
    let payloads: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT payload::jsonb FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(<SignInAggregate as cqrs_es::Aggregate>::TYPE)
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let mut user: Option<(Uuid, String, String)> = None;
    for (payload,) in payloads {
        let event: SignInEvent = serde_json::from_value(payload)
            .map_err(|e| RuntimeError::Corrupt(format!("sign-in {id}: {e}")))?;
        let (kind, user_id, email, method, reason, client, at) = match event {
            SignInEvent::SignInSucceeded {
                user_id,
                email,
                method,
                client,
                at,
                ..
            } => {
                user = Some((user_id, email.clone(), method.clone()));
                (
                    "succeeded",
                    Some(user_id),
                    Some(email),
                    method,
                    None,
                    client,
                    at,
                )
            }
            SignInEvent::SignInFailed {
                email,
                method,
                reason,
                client,
                at,
            } => ("failed", None, email, method, Some(reason), client, at),
            SignInEvent::SessionEnded {
                reason, client, at, ..
            } => {
                let (user_id, email, method) = user.clone().unzip3();
                (
                    "ended",
                    user_id,
                    email,
                    method.unwrap_or_default(),
                    Some(reason),
                    client,
                    at,
                )
            }
        };
        sqlx::query(
            "INSERT INTO admin_sign_ins
               (sign_in_id, kind, user_id, email, method, reason, ip, user_agent, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (sign_in_id, kind) DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(user_id)
        .bind(email)
        .bind(method)
        .bind(reason)
        .bind(client.ip)
        .bind(client.user_agent)
        .bind(at)
        .execute(pool)
        .await?;
    }
    Ok(())
}

trait Unzip3<A, B, C> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>);
}

impl<A, B, C> Unzip3<A, B, C> for Option<(A, B, C)> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>) {
        match self {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        }
    }
}

/// The newest sign-in history rows before `before` (a `seq`), newest
/// first, at most `limit`; optionally of one user only.
pub async fn history(
    pool: &PgPool,
    before: Option<i64>,
    user_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SignInRow>> {
    Ok(sqlx::query_as(
        "SELECT seq, sign_in_id, kind, user_id, email, method, reason, ip, user_agent, at
           FROM admin_sign_ins
          WHERE ($1::bigint IS NULL OR seq < $1) AND ($2::uuid IS NULL OR user_id = $2)
          ORDER BY seq DESC LIMIT $3",
    )
    .bind(before)
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
