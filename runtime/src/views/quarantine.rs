//! The quarantine of poison events (`projector_quarantine`) as the admin
//! API and the CLI read it. The projector owns the table (it writes it in
//! the transaction that moves its checkpoint past the event); here is only
//! the read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

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
