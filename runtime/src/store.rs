//! The event stores (cqrs-es over postgres-es), one per aggregate.

use std::collections::HashMap;
use std::sync::Arc;

use aigw_events::{
    AliasAggregate, KeyAggregate, ProviderAggregate, RequestAggregate, RequestEvent,
};
use cqrs_es::{Aggregate, AggregateError};
use postgres_es::{PostgresCqrs, postgres_cqrs};
use sqlx::PgPool;

use crate::{Result, RuntimeError};

/// Command handlers for every aggregate, sharing one pool.
#[derive(Clone)]
pub struct Stores {
    pub pool: PgPool,
    pub keys: Arc<PostgresCqrs<KeyAggregate>>,
    pub providers: Arc<PostgresCqrs<ProviderAggregate>>,
    pub requests: Arc<PostgresCqrs<RequestAggregate>>,
    pub aliases: Arc<PostgresCqrs<AliasAggregate>>,
}

impl Stores {
    pub fn new(pool: PgPool) -> Self {
        Self {
            keys: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            providers: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            requests: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            aliases: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            pool,
        }
    }

    /// Whether a request's story is already stored (a redelivery found it done).
    pub async fn request_recorded(&self, request_id: &str) -> Result<bool> {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2)",
        )
        .bind(RequestAggregate::TYPE)
        .bind(request_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(found)
    }
}

impl Stores {
    /// A request's stored events, in order.
    pub async fn request_events(&self, request_id: &str) -> Result<Vec<RequestEvent>> {
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
            "SELECT payload::jsonb FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(RequestAggregate::TYPE)
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(p,)| {
                serde_json::from_value(p)
                    .map_err(|e| RuntimeError::Corrupt(format!("request {request_id}: {e}")))
            })
            .collect()
    }
}

/// Folds an aggregate's stored events into its current state and last sequence.
pub async fn load<A: Aggregate>(pool: &PgPool, id: &str) -> Result<Option<(A, i64)>> {
    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT sequence, payload::jsonb FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(id)
    .fetch_all(pool)
    .await?;
    let Some(last) = rows.last().map(|(s, _)| *s) else {
        return Ok(None);
    };
    let mut aggregate = A::default();
    for (_, payload) in rows {
        let event = serde_json::from_value(payload)
            .map_err(|e| RuntimeError::Corrupt(format!("{} {id}: {e}", A::TYPE)))?;
        aggregate.apply(event);
    }
    Ok(Some((aggregate, last)))
}

/// Metadata stored with an event: who caused it and for which request.
pub fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// True when a command failed only because another writer got there first.
pub fn is_conflict<E: std::error::Error>(err: &AggregateError<E>) -> bool {
    matches!(err, AggregateError::AggregateConflict)
}
