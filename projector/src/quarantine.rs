//! The quarantine of poison events (`projector_quarantine`): events the
//! projector could not fold into the views, each with its error, so that one
//! bad event never stops the views.
//!
//! Invariants: an event is quarantined in the same transaction as the
//! checkpoint that passes it, so the table lists exactly the events up to the
//! checkpoint that the views leave out. Its key is the event's identity
//! (aggregate type, id, sequence), so quarantining twice is harmless. A
//! rebuild quarantines into `projector_quarantine_new` and then
//! [`adopt_rebuilt`] makes that the quarantine: an event that now applies
//! leaves it, one that still fails keeps its first `quarantined_at`. A
//! request with a quarantined event that has not finished in the request log
//! is marked `quarantined` there, never left `running`.

use serde::Serialize;
use sqlx::PgConnection;

pub use aigw_runtime::views::quarantine::{MAX_ERROR_CHARS, error_text};

/// Why an event was quarantined (a low-cardinality metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The payload does not fold: it does not deserialize as its aggregate's
    /// event, or its aggregate id is not what the aggregate uses.
    Unreadable,
    /// What the event folds to was refused by a view (a value out of range,
    /// a key too large for an index, ...).
    WriteFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable",
            Reason::WriteFailed => "write_failed",
        }
    }
}

/// An event identity and position in the history, as the projector reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub txid: String,
    pub pos: i64,
}

/// An event being quarantined, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub event: EventRef,
    pub reason: Reason,
    /// Already cleaned by [`error_text`].
    pub error: String,
}

impl Poison {
    pub fn new(event: EventRef, reason: Reason, error: &dyn std::fmt::Display) -> Self {
        Self {
            event,
            reason,
            error: error_text(error),
        }
    }
}

/// Quarantines `poisons` in `projector_quarantine{suffix}` (empty suffix: the
/// live table; `_new` during a rebuild).
pub async fn record(
    conn: &mut PgConnection,
    suffix: &str,
    poisons: &[Poison],
) -> Result<(), sqlx::Error> {
    if poisons.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Poison) -> String| poisons.iter().map(f).collect::<Vec<_>>();
    sqlx::query(&format!(
        "INSERT INTO projector_quarantine{suffix} AS q (aggregate_type, aggregate_id, sequence,
                event_type, txid, pos, reason, error)
         SELECT a, i, s, t, x::xid8, p, r, e
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[],
                     $7::text[], $8::text[]) AS u(a, i, s, t, x, p, r, e)
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO UPDATE SET
           event_type = EXCLUDED.event_type, txid = EXCLUDED.txid, pos = EXCLUDED.pos,
           reason = EXCLUDED.reason, error = EXCLUDED.error"
    ))
    .bind(col(|p| p.event.aggregate_type.clone()))
    .bind(col(|p| p.event.aggregate_id.clone()))
    .bind(poisons.iter().map(|p| p.event.sequence).collect::<Vec<_>>())
    .bind(col(|p| p.event.event_type.clone()))
    .bind(col(|p| p.event.txid.clone()))
    .bind(poisons.iter().map(|p| p.event.pos).collect::<Vec<_>>())
    .bind(col(|p| p.reason.as_str().to_string()))
    .bind(col(|p| p.error.clone()))
    .execute(&mut *conn)
    .await?;
    // A request whose outcome is quarantined never finishes in the log:
    // say so rather than leave it "running" forever.
    let requests: Vec<uuid::Uuid> = poisons
        .iter()
        .filter(|p| p.event.aggregate_type == "request")
        .filter_map(|p| p.event.aggregate_id.parse().ok())
        .collect();
    if !requests.is_empty() {
        sqlx::query(&format!(
            "UPDATE request_log{suffix} SET status = 'quarantined'
             WHERE id = ANY($1) AND (status IS NULL OR status = 'running')"
        ))
        .bind(requests)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops and creates the empty `projector_quarantine_new` a rebuild fills.
pub async fn prepare_rebuild(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("DROP TABLE IF EXISTS projector_quarantine_new")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CREATE TABLE projector_quarantine_new (LIKE projector_quarantine INCLUDING ALL)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes what a rebuild quarantined the quarantine (in the rebuild's swap
/// transaction): events that applied this time leave it, events that still
/// fail keep the time they were first quarantined.
pub async fn adopt_rebuilt(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM projector_quarantine q WHERE NOT EXISTS (
           SELECT 1 FROM projector_quarantine_new n
           WHERE (n.aggregate_type, n.aggregate_id, n.sequence)
               = (q.aggregate_type, q.aggregate_id, q.sequence))",
        "INSERT INTO projector_quarantine
           SELECT * FROM projector_quarantine_new
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO UPDATE SET
           event_type = EXCLUDED.event_type, txid = EXCLUDED.txid, pos = EXCLUDED.pos,
           reason = EXCLUDED.reason, error = EXCLUDED.error",
        "DROP TABLE projector_quarantine_new",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_bounded_and_has_no_nul() {
        assert_eq!(error_text(&"short"), "short");
        assert_eq!(error_text(&"a\0b"), "a\u{FFFD}b");
        let exact = "é".repeat(MAX_ERROR_CHARS);
        assert_eq!(error_text(&exact), exact);
        let long = error_text(&"é".repeat(MAX_ERROR_CHARS + 1));
        assert_eq!(long.chars().count(), MAX_ERROR_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn reasons_are_stable_labels() {
        assert_eq!(Reason::Unreadable.as_str(), "unreadable");
        assert_eq!(Reason::WriteFailed.as_str(), "write_failed");
        assert_eq!(
            serde_json::to_value(Reason::WriteFailed).unwrap(),
            "write_failed"
        );
    }
}
