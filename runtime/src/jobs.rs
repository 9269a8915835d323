//! The job store: a job's events and its row in `jobs`, written together.
//!
//! Every change to a job locks its row, runs the job aggregate's command
//! handler (cqrs-es) on the folded state, appends the events in postgres-es's
//! format and updates the row, all in one transaction. The dispatcher's
//! finishing command also records the run's request events in that same
//! transaction, so a job is finished and billed together or not at all.

use std::collections::HashMap;

use aigw_events::{JobAggregate, JobCommand, JobError, JobSpec, JobStatus, RequestCommand};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{EventRows, create_in, record_request_in};
use crate::{Result, RuntimeError};

/// A job as stored: its fold and the sequence of its last event.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub key_id: Uuid,
    pub job: JobAggregate,
    pub version: i64,
}

/// The outcome of a submission.
#[derive(Debug)]
pub enum Submitted {
    Created(JobRow),
    /// An earlier job of the same key has the same Idempotency-Key.
    Existing(JobRow),
    /// The key already has as many jobs queued or running as it may.
    Full,
}

/// What `list` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub key_id: Option<Uuid>,
    pub status: Option<JobStatus>,
    /// Only jobs listed after this one (cursor).
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// A request to record in the same transaction as a job command.
pub struct RequestRecord<'a> {
    pub request_id: &'a str,
    pub command: RequestCommand,
    pub metadata: &'a HashMap<String, String>,
    /// The stored response a Responses job's answer makes (its id and
    /// command), created with the request's story or not at all.
    pub response: Option<(String, aigw_events::response::ResponseCommand)>,
}

/// A job as the API shows it (`GET /v1/jobs/{id}`, lists, webhooks).
/// `cost_usd` is the cost its run's request events record (`null` while it
/// has none yet, and for a model without a price).
pub fn job_object(row: &JobRow) -> serde_json::Value {
    use aigw_events::JobResult;
    use serde_json::{Value, json};
    let job = &row.job;
    let spec = job.spec.clone().unwrap_or_default();
    let unix = |t: Option<DateTime<Utc>>| t.map_or(Value::Null, |t| json!(t.timestamp()));
    let usage_json = aigw_events::Usage::to_openai;
    let cost = |c: &Option<i64>| c.map_or(Value::Null, |m| json!(m as f64 / 1_000_000.0));
    let (result, error, usage, cost_usd, provider) = match &job.result {
        Some(JobResult::Succeeded {
            response,
            provider,
            usage,
            cost_micros,
        }) => (
            response.clone(),
            Value::Null,
            usage_json(usage),
            cost(cost_micros),
            json!(provider),
        ),
        Some(JobResult::Failed {
            error,
            usage,
            cost_micros,
            ..
        }) => (
            Value::Null,
            error.get("error").cloned().unwrap_or_else(|| error.clone()),
            usage_json(usage),
            cost(cost_micros),
            Value::Null,
        ),
        // Cancelled: no result, but a run that ended after the
        // cancellation was billed, and shows what it cost.
        None => {
            let (usage, cost_usd) = job
                .cancelled_run
                .as_ref()
                .map_or((Value::Null, Value::Null), |run| {
                    (usage_json(&run.usage), cost(&run.cost_micros))
                });
            (Value::Null, Value::Null, usage, cost_usd, Value::Null)
        }
    };
    let webhook = job.webhook.as_ref().map_or(Value::Null, |w| {
        json!({
            "status": w.status,
            "attempts": w.attempts,
            "last_status": w.last.as_ref().and_then(|d| d.http_status),
            "last_error": w.last.as_ref().and_then(|d| d.error.clone()),
        })
    });
    json!({
        "id": row.id,
        "object": "job",
        "status": job.status.as_str(),
        "model": spec.model,
        "created_at": unix(job.created_at),
        "started_at": unix(job.started_at),
        "finished_at": unix(job.finished_at),
        "attempts": job.runs,
        "metadata": spec.metadata,
        "webhook_url": spec.webhook_url,
        "webhook": webhook,
        "provider": provider,
        "result": result,
        "error": error,
        "usage": usage,
        "cost_usd": cost_usd,
    })
}

type Row = (Uuid, Uuid, serde_json::Value, i64);

fn row(r: Row) -> Result<JobRow> {
    let (id, key_id, state, version) = r;
    let job = serde_json::from_value(state)
        .map_err(|e| RuntimeError::Corrupt(format!("job {id}: {e}")))?;
    Ok(JobRow {
        id,
        key_id,
        job,
        version,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| RuntimeError::Corrupt(e.to_string()))
}

/// Appends `events` after `version` in the events table.
async fn append(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    version: i64,
    events: &[aigw_events::JobEvent],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    EventRows::new(version, events, metadata)?
        .insert(&mut *tx, JobAggregate::TYPE, &id.to_string())
        .await?;
    Ok(())
}

/// The caller's job with this Idempotency-Key, if submitted within 24 hours.
pub async fn find_idempotent(pool: &PgPool, key_id: Uuid, key: &str) -> Result<Option<JobRow>> {
    let found: Option<Row> = sqlx::query_as(
        "SELECT id, key_id, state, version FROM jobs
         WHERE key_id = $1 AND idempotency_key = $2 AND created_at > now() - interval '24 hours'",
    )
    .bind(key_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    found.map(row).transpose()
}

/// How many jobs of `key_id` are queued or running, counted up to `up_to`.
pub async fn open_jobs<'e>(db: impl sqlx::PgExecutor<'e>, key_id: Uuid, up_to: u64) -> Result<u64> {
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM jobs
          WHERE key_id = $1 AND status IN ('queued', 'running') LIMIT $2) open",
    )
    .bind(key_id)
    .bind(i64::try_from(up_to).unwrap_or(i64::MAX))
    .fetch_one(db)
    .await?;
    Ok(open.max(0) as u64)
}

/// Stores a new job: its `JobSubmitted` event and its row, together. With
/// `max_open`, a key that already has that many jobs queued or running gets
/// [`Submitted::Full`] instead; submissions of one key take turns on an
/// advisory lock for that check, so concurrent ones cannot overshoot it.
pub async fn submit(
    pool: &PgPool,
    id: Uuid,
    spec: JobSpec,
    at: DateTime<Utc>,
    metadata: &HashMap<String, String>,
    max_open: Option<u64>,
) -> Result<Submitted> {
    let key_id = spec.key_id;
    let idempotency_key = spec.idempotency_key.clone();
    let model = spec.model.clone();
    let mut job = JobAggregate::default();
    let sink = EventSink::<JobAggregate>::default();
    job.handle(JobCommand::Submit { spec, at }, &(), &sink)
        .await
        .map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    let events = sink.collect().await;

    let mut tx = pool.begin().await?;
    if let Some(k) = &idempotency_key {
        // An Idempotency-Key is only remembered for 24 hours.
        sqlx::query(
            "UPDATE jobs SET idempotency_key = NULL
             WHERE key_id = $1 AND idempotency_key = $2 AND created_at <= now() - interval '24 hours'",
        )
        .bind(key_id)
        .bind(k)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(max) = max_open {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('aigw.open_jobs.' || $1::text, 0))",
        )
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        if open_jobs(&mut *tx, key_id, max).await? >= max {
            tx.rollback().await?;
            // A repeat of an accepted submission is not a new job.
            if let Some(k) = &idempotency_key
                && let Some(existing) = find_idempotent(pool, key_id, k).await?
            {
                return Ok(Submitted::Existing(existing));
            }
            return Ok(Submitted::Full);
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, key_id, status, model, created_at, updated_at, idempotency_key, state, version)
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)
         ON CONFLICT (key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
    )
    .bind(id)
    .bind(key_id)
    .bind(job.status.as_str())
    .bind(&model)
    .bind(at)
    .bind(&idempotency_key)
    .bind(to_json(&job)?)
    .bind(events.len() as i64)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        tx.rollback().await?;
        let k = idempotency_key.unwrap_or_default();
        return match find_idempotent(pool, key_id, &k).await? {
            Some(existing) => Ok(Submitted::Existing(existing)),
            None => Err(RuntimeError::Corrupt(
                "idempotent job vanished while submitting".into(),
            )),
        };
    }
    append(&mut tx, id, 0, &events, metadata).await?;
    tx.commit().await?;
    Ok(Submitted::Created(JobRow {
        id,
        key_id,
        version: events.len() as i64,
        job,
    }))
}

/// Runs `command` on the job, under its row lock, optionally recording a
/// request in the same transaction. The inner error is the aggregate's
/// refusal (nothing was written).
pub async fn execute(
    pool: &PgPool,
    id: Uuid,
    command: JobCommand,
    metadata: &HashMap<String, String>,
    request: Option<RequestRecord<'_>>,
) -> Result<std::result::Result<JobRow, JobError>> {
    let mut tx = pool.begin().await?;
    let found: Option<Row> =
        sqlx::query_as("SELECT id, key_id, state, version FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(found) = found else {
        return Ok(Err(JobError::NotSubmitted));
    };
    let mut current = row(found)?;
    let sink = EventSink::<JobAggregate>::default();
    if let Err(e) = current.job.handle(command, &(), &sink).await {
        return Ok(Err(e));
    }
    let events = sink.collect().await;
    if let Some(r) = request {
        // In a savepoint: a request another delivery recorded first is a
        // unique violation, which must not abort the job's own change.
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        if record_request_in(&mut *savepoint, r.request_id, r.command, r.metadata).await? {
            if let Some((response_id, store)) = r.response
                && create_in::<aigw_events::response::ResponseAggregate>(
                    &mut savepoint,
                    &response_id,
                    store,
                    r.metadata,
                )
                .await?
                .is_none()
            {
                tracing::warn!(%response_id, "the response was stored already");
            }
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
    }
    if !events.is_empty() {
        append(&mut tx, id, current.version, &events, metadata).await?;
        current.version += events.len() as i64;
        sqlx::query(
            "UPDATE jobs SET status = $2, state = $3, version = $4, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(current.job.status.as_str())
        .bind(to_json(&current.job)?)
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(current))
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<JobRow>> {
    let found: Option<Row> =
        sqlx::query_as("SELECT id, key_id, state, version FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    found.map(row).transpose()
}

/// Jobs, newest first, one page (`limit + 1` rows, so the caller can tell
/// whether more follow).
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<JobRow>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT j.id, j.key_id, j.state, j.version FROM jobs j
         WHERE ($1::uuid IS NULL OR j.key_id = $1)
           AND ($2::text IS NULL OR j.status = $2)
           AND ($3::uuid IS NULL OR (j.created_at, j.id) <
                (SELECT a.created_at, a.id FROM jobs a WHERE a.id = $3))
         ORDER BY j.created_at DESC, j.id DESC
         LIMIT $4",
    )
    .bind(filter.key_id)
    .bind(filter.status.map(JobStatus::as_str))
    .bind(filter.after)
    .bind(filter.limit + 1)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(row).collect()
}
