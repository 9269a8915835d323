//! Applying a batch of events to the views so that a poison event never
//! stops them: the batch is folded and written at once, and only when a view
//! refuses the write is it split, each part written under its own savepoint,
//! down to the single events that fail, which are quarantined.
//!
//! This relies on [`BatchEffect`]'s invariant that folds do not depend on
//! batch boundaries: writing the parts one after another, in history order,
//! gives the same views as writing the whole. An event is either wholly in
//! the views (every view it touches) or wholly quarantined, never half.
//!
//! Only errors a value can cause (PostgreSQL classes 22 data exception, 23
//! integrity violation, 54 program limit exceeded, e.g. a model name too long
//! for an index) quarantine; any other error (a lost connection, a deadlock,
//! a missing table) fails the batch, which is retried whole, as before:
//! those are not the event's fault and must not empty the views.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;

use uuid::Uuid;

use crate::quarantine::{self, EventRef, Poison, Reason};
use crate::{BatchEffect, Position};
use sqlx::{Connection, PgConnection};

/// One event as read from the history.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub payload: String,
    pub txid: String,
    pub pos: i64,
}

impl StoredEvent {
    pub fn position(&self) -> Position {
        Position {
            txid: self.txid.clone(),
            pos: self.pos,
        }
    }

    fn identity(&self) -> EventRef {
        EventRef {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            event_type: self.event_type.clone(),
            txid: self.txid.clone(),
            pos: self.pos,
        }
    }
}

/// Reads up to `limit` events after `after`, in (txid, pos) order, only from
/// transactions older than the oldest one still running.
pub async fn read_events(
    conn: &mut PgConnection,
    after: &Position,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, payload::text AS payload,
                txid::text AS txid, pos
         FROM events
         WHERE (txid, pos) > ($1::text::xid8, $2)
           AND txid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY events.txid, events.pos
         LIMIT $3",
    )
    .bind(&after.txid)
    .bind(after.pos)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// What applying a batch did besides writing the views.
#[derive(Debug, Default)]
pub struct Applied {
    /// Aggregates of the registry whose events were applied (to refresh).
    pub keys: BTreeSet<Uuid>,
    pub providers: BTreeSet<Uuid>,
    pub aliases: BTreeSet<String>,
    pub teams: BTreeSet<Uuid>,
    pub projects: BTreeSet<Uuid>,
    pub users: BTreeSet<Uuid>,
    /// Keys whose requests finished, with the days they finished on.
    pub spenders: BTreeMap<(aigw_events::alert::AlertLevel, Uuid), BTreeSet<NaiveDate>>,
    /// Events quarantined.
    pub quarantined: Vec<Poison>,
}

/// Folds `events` and writes them into the views ending in `suffix`,
/// quarantining (in `projector_quarantine{suffix}`) the ones that cannot be
/// read or written. On `Err` the caller's transaction is unusable and must be
/// rolled back; nothing of the batch is kept.
pub async fn apply(
    conn: &mut PgConnection,
    events: &[StoredEvent],
    suffix: &str,
) -> Result<Applied, sqlx::Error> {
    let mut applied = Applied::default();
    let mut whole = BatchEffect::default();
    let mut readable = Vec::with_capacity(events.len());
    for event in events {
        match whole.apply(&event.aggregate_type, &event.aggregate_id, &event.payload) {
            Ok(()) => readable.push(event),
            Err(e) => {
                applied
                    .quarantined
                    .push(Poison::new(event.identity(), Reason::Unreadable, &e))
            }
        }
    }
    // Parts still to write, the next one last; the whole batch is folded already.
    let mut parts: Vec<(&[&StoredEvent], Option<BatchEffect>)> = vec![(&readable, Some(whole))];
    while let Some((part, folded)) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let effect = folded.unwrap_or_else(|| fold(part));
        let mut savepoint = conn.begin().await?;
        match effect.write(&mut savepoint, suffix).await {
            Ok(()) => {
                savepoint.commit().await?;
                applied.keys.extend(effect.keys);
                applied.providers.extend(effect.providers);
                applied.aliases.extend(effect.aliases);
                applied.teams.extend(effect.teams);
                applied.projects.extend(effect.projects);
                applied.users.extend(effect.users);
                for (key, days) in effect.spenders {
                    applied.spenders.entry(key).or_default().extend(days);
                }
            }
            Err(e) if is_poison(&e) => {
                savepoint.rollback().await?;
                match part {
                    [event] => applied.quarantined.push(Poison::new(
                        event.identity(),
                        Reason::WriteFailed,
                        &e,
                    )),
                    _ => {
                        let (first, second) = part.split_at(part.len() / 2);
                        parts.push((second, None));
                        parts.push((first, None));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    quarantine::record(conn, suffix, &applied.quarantined).await?;
    Ok(applied)
}

/// Folds events already known to be readable.
fn fold(events: &[&StoredEvent]) -> BatchEffect {
    let mut effect = BatchEffect::default();
    for event in events {
        // Readable: the whole batch folded them without error.
        let _ = effect.apply(&event.aggregate_type, &event.aggregate_id, &event.payload);
    }
    effect
}

/// Whether a failed view write is the data's fault (see the module doc).
pub fn is_poison(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| matches!(code.get(..2), Some("22" | "23" | "54"))),
        // A value sqlx could not encode.
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::is_poison;

    /// A database error with only a SQLSTATE, as PostgreSQL reports one.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Sqlstate(code)))
    }

    #[test]
    fn only_errors_a_value_can_cause_quarantine() {
        // Index row too large, value out of range, invalid text, unique key.
        for code in ["54000", "22003", "22021", "22001", "23505"] {
            assert!(is_poison(&db(code)), "{code}");
        }
        // Deadlock, serialization failure, lost connection, missing table,
        // disk full, cancelled statement: not the event's fault.
        for code in ["40P01", "40001", "08006", "42P01", "53100", "57014"] {
            assert!(!is_poison(&db(code)), "{code}");
        }
        assert!(!is_poison(&sqlx::Error::PoolTimedOut));
        assert!(!is_poison(&sqlx::Error::Io(std::io::Error::other("reset"))));
    }
}
