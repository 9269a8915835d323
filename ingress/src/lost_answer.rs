//! Waiting for a request's first answer frame without hanging when the
//! answer is lost.
//!
//! Answers travel on a core NATS reply subject: fast, but not durable. A
//! frame published while the ingress's connection is moving to another
//! server (a NATS node lost or restarted) is gone, and the caller would
//! wait for `AIGW_REQUEST_TIMEOUT` (330 s by default) for nothing.
//!
//! Invariants:
//! - The dispatcher sends a request's answer before it records the
//!   request's outcome (`RequestCompleted`/`RequestFailed`). So once the
//!   outcome is in the event store and no frame has come for
//!   [`GRACE`] after that was first seen, the answer was sent and lost:
//!   the caller gets a clean 502 `answer_lost` naming the request id (the
//!   request log has it, billed if it succeeded) instead of waiting.
//! - Requests answered within [`CHECK_AFTER`] (nearly all) never touch the
//!   database; longer ones cost one primary-key lookup every [`EVERY`].
//! - A store that cannot be read changes nothing: the wait goes on, bounded
//!   by the request timeout as before.

use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;

/// Answers lost in transit (the caller got `answer_lost`).
pub const LOST: &str = "aigw_answers_lost_total";

/// How long a request waits for its first frame before the store is looked at.
pub const CHECK_AFTER: Duration = Duration::from_secs(5);
/// How often the store is looked at after that.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long a recorded request's frame may still be on its way.
pub const GRACE: Duration = Duration::from_secs(3);

/// The first frame on `replies`, waiting at most `wait`; a clean
/// `answer_lost` error once request `id` is recorded and its frame has not
/// come within [`GRACE`].
pub async fn first_frame(
    pool: &PgPool,
    id: Uuid,
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<async_nats::Message, ApiError> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut next_check = start + CHECK_AFTER;
    let mut recorded_since: Option<Instant> = None;
    loop {
        let wake = next_check.min(deadline);
        tokio::select! {
            frame = replies.next() => {
                return frame.ok_or_else(|| ApiError::Unavailable("reply subscription closed".into()));
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ApiError::Timeout);
        }
        next_check = now + EVERY;
        match recorded_since {
            Some(since) if now.duration_since(since) >= GRACE => {
                tracing::warn!(request_id = %id, "the request is recorded but its answer never came: lost in transit");
                metrics::counter!(LOST).increment(1);
                return Err(ApiError::AnswerLost(id));
            }
            Some(_) => {}
            None => {
                if is_recorded(pool, id).await {
                    recorded_since = Some(now);
                }
            }
        }
    }
}

/// Whether request `id`'s outcome is in the event store (false when the
/// store cannot be read).
async fn is_recorded(pool: &PgPool, id: Uuid) -> bool {
    let found = sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM events
         WHERE aggregate_type = 'request' AND aggregate_id = $1
           AND event_type IN ('RequestCompleted', 'RequestFailed')
         LIMIT 1",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await;
    match found {
        Ok(row) => row.is_some(),
        Err(e) => {
            tracing::debug!(request_id = %id, error = %e, "looking for a request's outcome");
            false
        }
    }
}
