//! The quarantine of poison events (`projector_quarantine`) as the admin
//! API and the CLI read it. The projector owns the table (it writes it in
//! the transaction that moves its checkpoint past the event); here is only
//! the read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

/// Longest error text kept, in characters.
pub const MAX_ERROR_CHARS: usize = 1000;

/// `error` as stored: at most [`MAX_ERROR_CHARS`] characters, without NUL
/// (which PostgreSQL text refuses, and which a quoted payload value can carry).
pub fn error_text(error: &dyn std::fmt::Display) -> String {
    let full = error.to_string();
    let mut out: String = full
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if full.chars().nth(MAX_ERROR_CHARS).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// One quarantined event, as the admin API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QuarantinedEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub txid: String,
    pub pos: i64,
    pub reason: String,
    pub error: String,
    pub quarantined_at: DateTime<Utc>,
}

/// The `limit` most recently quarantined events, newest first, and how many
/// there are in all.
pub async fn list<'e>(
    db: impl PgExecutor<'e> + Copy,
    limit: i64,
) -> Result<(Vec<QuarantinedEvent>, i64), sqlx::Error> {
    let events = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, txid::text AS txid, pos,
                reason, error, quarantined_at
         FROM projector_quarantine
         ORDER BY quarantined_at DESC, txid DESC, pos DESC
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM projector_quarantine")
        .fetch_one(db)
        .await?;
    Ok((events, total))
}
