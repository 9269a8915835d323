//! The projector role: follows the event history in commit-safe order and
//! maintains the read views (usage per key, day and model; the key and
//! provider registry), checkpointing in the same transaction as each update.
//!
//! Order and gaps: events are read by (writing transaction id, position), only
//! up to the oldest transaction still running. Transactions older than that
//! can no longer add rows, so nothing committed late is ever skipped.
//! Replicas take a transaction-scoped advisory lock per batch, so several
//! projectors never apply the same events twice.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aigw_events::{RequestEvent, Usage};
use aigw_runtime::{CommonArgs, RuntimeError, db, registry};
use chrono::NaiveDate;
use clap::Args;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, Args)]
pub struct ProjectorArgs {
    /// Pause between polls when there is nothing new.
    #[arg(long, env = "AIGW_PROJECTOR_POLL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,

    /// Events applied per transaction.
    #[arg(long, env = "AIGW_PROJECTOR_BATCH", default_value_t = 2000)]
    pub batch: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

const CHECKPOINT: &str = "views";
const LOCK: &str = "aigw-projector:views";

/// Runs until `shutdown` fires.
pub async fn run(
    common: CommonArgs,
    args: ProjectorArgs,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let pool = db::prepare(&common.database_url, common.db_max_connections.min(4)).await?;
    tracing::info!("projector ready");
    loop {
        let pause = match project_batch(&pool, args.batch).await {
            Ok(0) => args.poll,
            Ok(n) => {
                metrics::counter!("aigw_projected_events_total").increment(n as u64);
                tracing::debug!(events = n, "projected");
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(error = %e, "projection failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("projector stopped");
    Ok(())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageDelta {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub estimated_requests: i64,
    pub latency_ms: i64,
    pub cost_micros: i64,
    pub unpriced_requests: i64,
}

/// Row key of the usage view.
pub type UsageKey = (Uuid, NaiveDate, String);

/// What a batch of events changes.
#[derive(Debug, Default)]
pub struct BatchEffect {
    pub usage: HashMap<UsageKey, UsageDelta>,
    pub keys: BTreeSet<Uuid>,
    pub providers: BTreeSet<Uuid>,
    pub aliases: BTreeSet<String>,
}

impl BatchEffect {
    /// Folds one stored event into the batch.
    pub fn apply(&mut self, aggregate_type: &str, aggregate_id: &str, payload: serde_json::Value) {
        match aggregate_type {
            "request" => match serde_json::from_value::<RequestEvent>(payload) {
                Ok(event) => self.apply_request(event),
                Err(e) => tracing::error!(%aggregate_id, error = %e, "unreadable request event"),
            },
            "key" => {
                if let Ok(id) = Uuid::parse_str(aggregate_id) {
                    self.keys.insert(id);
                }
            }
            "provider" => {
                if let Ok(id) = Uuid::parse_str(aggregate_id) {
                    self.providers.insert(id);
                }
            }
            "alias" => {
                self.aliases.insert(aggregate_id.to_string());
            }
            _ => {}
        }
    }

    fn apply_request(&mut self, event: RequestEvent) {
        let (key_id, model, at, usage, estimated, failed, latency, cost) = match event {
            RequestEvent::RequestCompleted {
                key_id,
                model,
                usage,
                usage_estimated,
                cost_micros,
                latency_ms,
                at,
                ..
            } => (
                key_id,
                model,
                at,
                usage,
                usage_estimated,
                false,
                latency_ms,
                cost_micros,
            ),
            RequestEvent::RequestFailed {
                key_id,
                model,
                usage,
                usage_estimated,
                cost_micros,
                latency_ms,
                at,
                ..
            } => (
                key_id,
                model,
                at,
                usage,
                usage_estimated,
                true,
                latency_ms,
                cost_micros,
            ),
            RequestEvent::RequestAccepted { .. } | RequestEvent::AttemptRecorded(_) => return,
        };
        let Usage {
            prompt_tokens,
            completion_tokens,
        } = usage;
        let delta = self
            .usage
            .entry((key_id, at.date_naive(), model))
            .or_default();
        delta.requests += 1;
        delta.errors += i64::from(failed);
        delta.prompt_tokens += prompt_tokens as i64;
        delta.completion_tokens += completion_tokens as i64;
        delta.estimated_requests += i64::from(estimated);
        delta.latency_ms += latency as i64;
        match cost {
            Some(c) => delta.cost_micros += c,
            None if prompt_tokens + completion_tokens > 0 => delta.unpriced_requests += 1,
            None => {}
        }
    }
}

type EventRow = (String, String, serde_json::Value, String, i64);

/// Applies the next batch of events; returns how many it applied.
pub async fn project_batch(pool: &PgPool, limit: i64) -> Result<usize, ProjectorError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(LOCK)
        .execute(&mut *tx)
        .await?;
    let checkpoint: Option<(String, i64)> =
        sqlx::query_as("SELECT txid::text, pos FROM projector_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(&mut *tx)
            .await?;
    let (txid, pos) = checkpoint.unwrap_or_else(|| ("0".to_string(), 0));
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, payload::jsonb, txid::text, pos FROM events
         WHERE (txid, pos) > ($1::text::xid8, $2)
           AND txid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY txid, pos
         LIMIT $3",
    )
    .bind(&txid)
    .bind(pos)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let Some((_, _, _, last_txid, last_pos)) = rows.last().cloned() else {
        tx.rollback().await?;
        return Ok(0);
    };
    let count = rows.len();
    let mut effect = BatchEffect::default();
    for (aggregate_type, aggregate_id, payload, _, _) in rows {
        effect.apply(&aggregate_type, &aggregate_id, payload);
    }
    write_usage(&mut tx, &effect.usage).await?;
    sqlx::query(
        "INSERT INTO projector_checkpoints (name, txid, pos) VALUES ($1, $2::text::xid8, $3)
         ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, pos = EXCLUDED.pos",
    )
    .bind(CHECKPOINT)
    .bind(&last_txid)
    .bind(last_pos)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // Registry rows are rebuilt from the events themselves and only newer
    // versions win, so doing this after the commit is safe to repeat.
    for id in effect.keys {
        registry::refresh_key(pool, id).await?;
    }
    for id in effect.providers {
        registry::refresh_provider(pool, id).await?;
    }
    for name in effect.aliases {
        registry::refresh_alias(pool, &name).await?;
    }
    Ok(count)
}

async fn write_usage(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    usage: &HashMap<UsageKey, UsageDelta>,
) -> Result<(), sqlx::Error> {
    if usage.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::new();
    let mut days = Vec::new();
    let mut models = Vec::new();
    let mut cols: [Vec<i64>; 8] = Default::default();
    for ((key, day, model), d) in usage {
        keys.push(*key);
        days.push(*day);
        models.push(model.clone());
        for (col, v) in cols.iter_mut().zip([
            d.requests,
            d.errors,
            d.prompt_tokens,
            d.completion_tokens,
            d.estimated_requests,
            d.latency_ms,
            d.cost_micros,
            d.unpriced_requests,
        ]) {
            col.push(v);
        }
    }
    let [
        requests,
        errors,
        prompt,
        completion,
        estimated,
        latency,
        cost,
        unpriced,
    ] = cols;
    sqlx::query(
        "INSERT INTO usage_daily AS u (key_id, day, model, requests, errors, prompt_tokens,
                completion_tokens, estimated_requests, latency_ms_total, cost_micros,
                unpriced_requests)
         SELECT * FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::int8[], $5::int8[],
                $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[])
         ON CONFLICT (key_id, day, model) DO UPDATE SET
           requests = u.requests + EXCLUDED.requests,
           errors = u.errors + EXCLUDED.errors,
           prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
           completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
           estimated_requests = u.estimated_requests + EXCLUDED.estimated_requests,
           latency_ms_total = u.latency_ms_total + EXCLUDED.latency_ms_total,
           cost_micros = u.cost_micros + EXCLUDED.cost_micros,
           unpriced_requests = u.unpriced_requests + EXCLUDED.unpriced_requests",
    )
    .bind(keys)
    .bind(days)
    .bind(models)
    .bind(requests)
    .bind(errors)
    .bind(prompt)
    .bind(completion)
    .bind(estimated)
    .bind(latency)
    .bind(cost)
    .bind(unpriced)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::to_value;

    #[test]
    fn folds_request_outcomes_by_key_day_and_model() {
        let key = Uuid::now_v7();
        let at: DateTime<Utc> = "2026-11-26T23:59:00Z".parse().unwrap();
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
        };
        let completed = RequestEvent::RequestCompleted {
            key_id: key,
            provider_id: Uuid::nil(),
            provider: "p".into(),
            model: "m".into(),
            usage,
            usage_estimated: false,
            cost_micros: Some(100),
            latency_ms: 7,
            at,
        };
        let failed = RequestEvent::RequestFailed {
            key_id: key,
            model: "m".into(),
            status: 502,
            error_type: "upstream_error".into(),
            message: "x".into(),
            usage,
            usage_estimated: true,
            cost_micros: None,
            latency_ms: 3,
            at,
        };
        let accepted = RequestEvent::RequestAccepted {
            key_id: key,
            model: "m".into(),
            stream: false,
            at,
            route: None,
        };
        let mut effect = BatchEffect::default();
        for e in [accepted, completed.clone(), failed, completed] {
            effect.apply("request", "r", to_value(e).unwrap());
        }
        effect.apply("key", &key.to_string(), serde_json::json!({}));
        let d = effect.usage[&(key, at.date_naive(), "m".to_string())];
        assert_eq!(
            d,
            UsageDelta {
                requests: 3,
                errors: 1,
                prompt_tokens: 30,
                completion_tokens: 15,
                estimated_requests: 1,
                latency_ms: 17,
                cost_micros: 200,
                unpriced_requests: 1,
            }
        );
        assert!(effect.keys.contains(&key));
    }
}
