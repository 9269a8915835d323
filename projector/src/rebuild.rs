//! `aigw projector rebuild`: projects the whole history into fresh `*_new`
//! tables, then swaps them in with renames in one short transaction, so
//! readers keep working throughout and only wait for the swap itself.
//!
//! Every event is tried again, quarantined ones included: the rebuild
//! quarantines what still fails into `projector_quarantine_new`, and the swap
//! makes that the quarantine, so an event whose cause was fixed leaves it.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::apply::{self, Applied};
use crate::{CHECKPOINT, LOCK, Position, ProjectorError, quarantine, save_checkpoint};

/// The views a rebuild replaces (the key and provider tables are folded
/// per aggregate and are refreshed, not rebuilt).
pub const VIEWS: [&str; 4] = [
    "usage_daily",
    "usage_hourly",
    "billing_monthly",
    "request_log",
];

const REBUILD_LOCK: &str = "aigw-projector:rebuild";

#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    pub events: u64,
    /// Events left out of the rebuilt views (now the quarantine's content).
    pub quarantined: u64,
    pub elapsed: Duration,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds every view from the start of history; `progress` gets the number
/// of events replayed so far after each batch.
pub async fn rebuild(
    pool: &PgPool,
    batch: i64,
    mut progress: impl FnMut(u64),
) -> Result<RebuildReport, ProjectorError> {
    let started = Instant::now();
    // One rebuild at a time: a second one waits for the first to finish. The
    // session lock dies with its connection if this process does.
    let mut guard = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(REBUILD_LOCK)
        .execute(&mut *guard)
        .await?;
    {
        let mut conn = pool.acquire().await?;
        for view in VIEWS {
            sqlx::query(&format!("DROP TABLE IF EXISTS {view}_new"))
                .execute(&mut *conn)
                .await?;
            sqlx::query(&format!(
                "CREATE TABLE {view}_new (LIKE {view} INCLUDING ALL)"
            ))
            .execute(&mut *conn)
            .await?;
        }
        quarantine::prepare_rebuild(&mut conn).await?;
    }
    let mut at = Position::start();
    let mut events = 0u64;
    let mut quarantined = 0u64;
    // Bulk of the history, without holding the projector's lock.
    loop {
        let mut tx = pool.begin().await?;
        let batch_events = apply::read_events(&mut tx, &at, batch).await?;
        let Some(last) = batch_events.last().map(apply::StoredEvent::position) else {
            tx.rollback().await?;
            break;
        };
        let applied = apply::apply(&mut tx, &batch_events, "_new").await?;
        tx.commit().await?;
        at = last;
        events += batch_events.len() as u64;
        quarantined += applied.quarantined.len() as u64;
        progress(events);
    }
    // Catch up and swap while the live projector waits on its lock.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(LOCK)
        .execute(&mut *tx)
        .await?;
    let mut touched = Applied::default();
    loop {
        let batch_events = apply::read_events(&mut tx, &at, batch).await?;
        let Some(last) = batch_events.last().map(apply::StoredEvent::position) else {
            break;
        };
        let applied = apply::apply(&mut tx, &batch_events, "_new").await?;
        at = last;
        events += batch_events.len() as u64;
        quarantined += applied.quarantined.len() as u64;
        touched.keys.extend(applied.keys);
        touched.providers.extend(applied.providers);
        touched.aliases.extend(applied.aliases);
        touched.users.extend(applied.users);
    }
    save_checkpoint(&mut tx, CHECKPOINT, &at).await?;
    quarantine::adopt_rebuilt(&mut tx).await?;
    for view in VIEWS {
        for sql in [
            format!("ALTER TABLE {view} RENAME TO {view}_old"),
            format!("ALTER TABLE {view}_new RENAME TO {view}"),
            format!("DROP TABLE {view}_old"),
        ] {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    progress(events);
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(REBUILD_LOCK)
        .execute(&mut *guard)
        .await?;
    drop(guard);
    crate::refresh_registry(pool, &touched).await;
    Ok(RebuildReport {
        events,
        quarantined,
        elapsed: started.elapsed(),
    })
}
