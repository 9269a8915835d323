//! The event stores (cqrs-es over postgres-es), one per aggregate.

use std::collections::HashMap;
use std::sync::Arc;

use aigw_events::{
    AdminUserAggregate, AliasAggregate, KeyAggregate, ProjectAggregate, ProviderAggregate,
    RequestAggregate, RequestCommand, RequestEvent, ResponseAggregate, ResponseCommand,
    SignInAggregate, TeamAggregate,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
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
    pub teams: Arc<PostgresCqrs<TeamAggregate>>,
    pub projects: Arc<PostgresCqrs<ProjectAggregate>>,
    pub users: Arc<PostgresCqrs<AdminUserAggregate>>,
    pub sign_ins: Arc<PostgresCqrs<SignInAggregate>>,
    pub responses: Arc<PostgresCqrs<ResponseAggregate>>,
}

impl Stores {
    pub fn new(pool: PgPool) -> Self {
        Self {
            keys: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            providers: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            requests: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            aliases: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            teams: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            projects: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            users: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            sign_ins: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
            responses: Arc::new(postgres_cqrs(pool.clone(), vec![], ())),
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
    /// Records a new request's whole story in one statement.
    ///
    /// The events come from the request aggregate's own command handler
    /// (cqrs-es), and are stored in postgres-es's table and format, exactly as
    /// `CqrsFramework::execute` would. A request aggregate is only ever
    /// written once, so there is no history to load first: this skips the
    /// load and the explicit transaction (six round trips become one) on the
    /// hot path. Returns `false` when the request was already recorded (the
    /// primary key refuses a second first event, and with it the whole
    /// statement: one outcome per request, however many deliveries race).
    pub async fn record_request(
        &self,
        request_id: &str,
        command: RequestCommand,
        metadata: &HashMap<String, String>,
    ) -> Result<bool> {
        record_request_in(&self.pool, request_id, command, metadata).await
    }

    /// Records a request's story and, in the same transaction, creates the
    /// stored response `response` answers it with (`ResponseAggregate`,
    /// at version 0). `false` when the request was recorded already: then
    /// nothing is stored, the response neither (one response per request,
    /// however many deliveries race).
    pub async fn record_request_and_response(
        &self,
        request_id: &str,
        command: RequestCommand,
        response: (&str, ResponseCommand),
        metadata: &HashMap<String, String>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if !record_request_in(&mut *tx, request_id, command, metadata).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let (response_id, store) = response;
        if create_in::<ResponseAggregate>(&mut tx, response_id, store, metadata)
            .await?
            .is_none()
        {
            tracing::warn!(%response_id, "the response was stored already");
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A stored response, folded from its events (read from the event
    /// store itself: what a replica just wrote is read at once).
    pub async fn response(&self, response_id: &str) -> Result<Option<ResponseAggregate>> {
        Ok(load::<ResponseAggregate>(&self.pool, response_id)
            .await?
            .map(|(r, _)| r))
    }

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

/// Events of one aggregate, numbered after its current version, as the
/// columns of one `INSERT ... SELECT FROM UNNEST` into the events table.
pub(crate) struct EventRows {
    sequences: Vec<i64>,
    types: Vec<String>,
    payloads: Vec<serde_json::Value>,
    metadata: serde_json::Value,
}

impl EventRows {
    pub(crate) fn new<V: DomainEvent>(
        version: i64,
        events: &[V],
        metadata: &HashMap<String, String>,
    ) -> Result<Self> {
        let json = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| RuntimeError::Corrupt(e.to_string()))
        };
        let mut rows = Self {
            sequences: Vec::with_capacity(events.len()),
            types: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: json(serde_json::to_value(metadata))?,
        };
        for (i, event) in events.iter().enumerate() {
            rows.sequences.push(version + i as i64 + 1);
            rows.types.push(event.event_type());
            rows.payloads.push(json(serde_json::to_value(event))?);
        }
        Ok(rows)
    }

    /// Inserts the events in one statement: all of them, or (when another
    /// writer took one of their sequence numbers first: a unique violation,
    /// SQLSTATE 23505) none. This is the expected-version check: events are
    /// numbered after the version the writer loaded.
    pub(crate) async fn insert<'e, E: sqlx::PgExecutor<'e>>(
        self,
        executor: E,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> std::result::Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT $1, $2, s, t, $3, p, $4 FROM UNNEST($5::int8[], $6::text[], $7::json[]) AS u(s, t, p)",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(aigw_events::EVENT_VERSION)
        .bind(sqlx::types::Json(self.metadata))
        .bind(self.sequences)
        .bind(self.types)
        .bind(self.payloads)
        .execute(executor)
        .await
    }
}

/// [`Stores::record_request`] on any connection, e.g. inside a transaction
/// (a job's run is recorded together with the job's own events).
pub async fn record_request_in<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    request_id: &str,
    command: RequestCommand,
    metadata: &HashMap<String, String>,
) -> Result<bool> {
    let mut aggregate = RequestAggregate::default();
    let sink = EventSink::<RequestAggregate>::default();
    if aggregate.handle(command, &(), &sink).await.is_err() {
        return Ok(false);
    }
    let events = sink.collect().await;
    // Version 0 expected: a second recording of the request (a concurrent or
    // later delivery) conflicts on the first event's sequence, and inserts
    // nothing at all. Inside a transaction the conflict aborts it: callers
    // there record in a savepoint (see `jobs::execute`).
    let result = EventRows::new(0, &events, metadata)?
        .insert(executor, RequestAggregate::TYPE, request_id)
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates a new aggregate of type `A` under `id` by `command`, inside the
/// caller's transaction: its events are inserted at version 0 under a
/// savepoint, so an aggregate that exists already (a second creation, by
/// this writer or a racing one) inserts nothing, leaves the transaction
/// usable, and gives `Ok(None)`. `Ok(Some(events))` are the events stored.
pub async fn create_in<A>(
    tx: &mut sqlx::PgConnection,
    id: &str,
    command: A::Command,
    metadata: &HashMap<String, String>,
) -> Result<Option<Vec<A::Event>>>
where
    A: Aggregate<Services = ()>,
{
    let mut aggregate = A::default();
    let sink = EventSink::<A>::default();
    if aggregate.handle(command, &(), &sink).await.is_err() {
        return Ok(None);
    }
    let events = sink.collect().await;
    let rows = EventRows::new(0, &events, metadata)?;
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
    match rows.insert(&mut *savepoint, A::TYPE, id).await {
        Ok(_) => {
            savepoint.commit().await?;
            Ok(Some(events))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            savepoint.rollback().await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
