//! The projector role: follows the event history in commit-safe order and
//! maintains the read views (usage per key, day and model; the key and
//! provider registry), checkpointing in the same transaction as each update.
//!
//! Order and gaps: events are read by (writing transaction id, position), only
//! up to the oldest transaction still running. Transactions older than that
//! can no longer add rows, so nothing committed late is ever skipped.
//! Replicas take a transaction-scoped advisory lock per batch, so several
//! projectors never apply the same events twice.
//!
//! Poison events: an event that cannot be read, or whose view writes fail,
//! is quarantined with its error (`quarantine`, `apply`) in the same
//! transaction as the checkpoint, and the views move on past it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

pub mod alerts;
pub mod apply;
pub use aigw_runtime::audit;
pub mod quarantine;
pub mod rebuild;
mod views;

use aigw_events::alert::AlertLevel;
use aigw_events::{
    AdminUserEvent, AliasEvent, KeyEvent, ProjectEvent, ProviderEvent, RequestEvent, TeamEvent,
};
pub use aigw_runtime::checkpoint::{Position, checkpoint, save_checkpoint};
pub use aigw_runtime::outcome::{BillingKey, Outcome, month_of};
use aigw_runtime::readiness::Readiness;
use aigw_runtime::{CommonArgs, RuntimeError, db, registry};
use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use clap::Args;
use sqlx::{PgConnection, PgPool};
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

    /// Budget alert delivery.
    #[command(flatten)]
    pub alerts: alerts::AlertArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why an event cannot be folded (it is then quarantined as unreadable).
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("payload is not a {aggregate_type} event: {source}")]
    Payload {
        aggregate_type: &'static str,
        source: serde_json::Error,
    },
    #[error("{aggregate_type} aggregate id is not a UUID")]
    AggregateId { aggregate_type: &'static str },
}

/// Events quarantined, by `reason` ([`quarantine::Reason`]).
const QUARANTINED: &str = "aigw_projector_quarantined_total";
/// Unix time at which this projector last read to the end of the event
/// history: `time()` minus it is how far behind the views may be (it keeps
/// growing while the projector is behind, stuck or stopped).
const CAUGHT_UP: &str = "aigw_projector_caught_up_timestamp_seconds";

pub(crate) use aigw_runtime::checkpoint::VIEWS as CHECKPOINT;
pub(crate) const LOCK: &str = "aigw-projector:views";

/// Runs until `shutdown` fires.
pub async fn run(
    common: CommonArgs,
    args: ProjectorArgs,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    run_ready(common, args, shutdown, Readiness::default()).await
}

/// [`run`], marking `readiness` started once the schema is current.
pub async fn run_ready(
    common: CommonArgs,
    args: ProjectorArgs,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> Result<(), ProjectorError> {
    args.alerts.check().map_err(RuntimeError::Config)?;
    let pool = db::prepare(&common.database_url, common.db_max_connections.min(4)).await?;
    // At 0 from the start, so the first quarantined event is an increase;
    // before ready, so a probe that sees ready sees them.
    for reason in [
        quarantine::Reason::Unreadable,
        quarantine::Reason::WriteFailed,
    ] {
        metrics::counter!(QUARANTINED, "reason" => reason.as_str()).increment(0);
    }
    metrics::counter!(alerts::ALERTS, "level" => aigw_events::AlertLevel::Key.as_str())
        .increment(0);
    readiness.started(pool.clone(), None);
    let egress = aigw_runtime::egress::Egress::new(common.allow_private_egress())
        .map_err(|e| RuntimeError::Config(format!("webhook client: {e}")))?;
    let delivery = tokio::spawn(alerts::deliver(
        pool.clone(),
        egress,
        args.alerts.clone(),
        args.poll.max(Duration::from_millis(100)),
        shutdown.clone(),
    ));
    tracing::info!("projector ready");
    loop {
        let reading = Utc::now();
        let projected = project_batch(&pool, args.batch).await;
        // A short batch read everything committed when it started.
        if projected.as_ref().is_ok_and(|n| (*n as i64) < args.batch) {
            metrics::gauge!(CAUGHT_UP).set(reading.timestamp_millis() as f64 / 1000.0);
        }
        let pause = match projected {
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
    let _ = delivery.await;
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
    pub images: i64,
    pub characters: i64,
    pub audio_seconds: i64,
    pub cached_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub reasoning_tokens: i64,
    /// Requests with tokens billed at a fallback rate (their class had no price).
    pub price_fallback_requests: i64,
    /// Rerank search units.
    pub searches: i64,
}

impl UsageDelta {
    fn add(&mut self, o: &Outcome) {
        self.requests += 1;
        self.errors += i64::from(o.failed);
        self.prompt_tokens += o.usage.prompt_tokens as i64;
        self.completion_tokens += o.usage.completion_tokens as i64;
        self.estimated_requests += i64::from(o.estimated);
        self.latency_ms += o.latency_ms as i64;
        self.images += o.usage.images as i64;
        self.characters += o.usage.characters as i64;
        self.audio_seconds += o.usage.audio_seconds as i64;
        self.cached_tokens += o.usage.cached_tokens as i64;
        self.cache_write_5m_tokens += o.usage.cache_write_5m_tokens as i64;
        self.cache_write_1h_tokens += o.usage.cache_write_1h_tokens as i64;
        self.reasoning_tokens += o.usage.reasoning_tokens as i64;
        self.price_fallback_requests += i64::from(o.price_fallback);
        self.searches += o.usage.searches as i64;
        match o.cost_micros {
            Some(c) => self.cost_micros += c,
            None if !o.usage.is_empty() => self.unpriced_requests += 1,
            None => {}
        }
    }
}

/// Row key of the daily usage view.
pub type UsageKey = (Uuid, NaiveDate, String);
/// Row key of the hourly usage view: key, hour, provider, model.
pub type HourlyKey = (Uuid, DateTime<Utc>, String, String);

/// What the request log learns about one request from a batch; `None` leaves
/// a column as it was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub key_id: Option<Uuid>,
    /// The key's project and team as of the request.
    pub project_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub attempts: i32,
    pub status: Option<String>,
    pub http_status: Option<i32>,
    pub error_type: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cached_tokens: Option<i64>,
    pub cache_write_5m_tokens: Option<i64>,
    pub cache_write_1h_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub cost_micros: Option<i64>,
    pub price_fallback: Option<bool>,
    pub latency_ms: Option<i64>,
    pub stream: Option<bool>,
    pub estimated: Option<bool>,
    /// The end user the caller named (`None`: unknown yet, or none).
    pub user_id: Option<String>,
    /// The caller's tags, comma-joined (tags never hold a comma); `None`:
    /// unknown yet, or none.
    pub tags: Option<String>,
}

fn read<E: serde::de::DeserializeOwned>(
    aggregate_type: &'static str,
    payload: &str,
) -> Result<E, FoldError> {
    serde_json::from_str(payload).map_err(|source| FoldError::Payload {
        aggregate_type,
        source,
    })
}

fn uuid_of(aggregate_type: &'static str, aggregate_id: &str) -> Result<Uuid, FoldError> {
    Uuid::parse_str(aggregate_id).map_err(|_| FoldError::AggregateId { aggregate_type })
}

/// What a batch of events changes.
///
/// Every view is a sum over events or a last-writer-wins per request, so the
/// result does not depend on where batch boundaries fall: a rebuild gives the
/// same views as the live projector.
#[derive(Debug, Default)]
pub struct BatchEffect {
    pub usage: HashMap<UsageKey, UsageDelta>,
    pub billing: HashMap<BillingKey, UsageDelta>,
    pub hourly: HashMap<HourlyKey, UsageDelta>,
    pub requests: HashMap<Uuid, LogRow>,
    /// Keys, projects and teams whose requests finished in the batch, with
    /// the days they finished on (whose budget periods alerts check).
    pub spenders: BTreeMap<(AlertLevel, Uuid), BTreeSet<NaiveDate>>,
    pub keys: BTreeSet<Uuid>,
    pub providers: BTreeSet<Uuid>,
    pub aliases: BTreeSet<String>,
    pub teams: BTreeSet<Uuid>,
    pub projects: BTreeSet<Uuid>,
    pub users: BTreeSet<Uuid>,
}

impl BatchEffect {
    /// Folds one stored event (its JSON payload) into the batch. An event
    /// that cannot be folded leaves the batch as it was.
    pub fn apply(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        payload: &str,
    ) -> Result<(), FoldError> {
        match aggregate_type {
            "request" => {
                let event = read::<RequestEvent>("request", payload)?;
                let id = uuid_of("request", aggregate_id)?;
                self.apply_request(id, event);
            }
            // The registry rows are refolded from the aggregate's whole
            // history; a payload that does not read would fail that fold.
            "key" => {
                read::<KeyEvent>("key", payload)?;
                self.keys.insert(uuid_of("key", aggregate_id)?);
            }
            "provider" => {
                read::<ProviderEvent>("provider", payload)?;
                self.providers.insert(uuid_of("provider", aggregate_id)?);
            }
            "alias" => {
                read::<AliasEvent>("alias", payload)?;
                self.aliases.insert(aggregate_id.to_string());
            }
            "team" => {
                read::<TeamEvent>("team", payload)?;
                self.teams.insert(uuid_of("team", aggregate_id)?);
            }
            "project" => {
                read::<ProjectEvent>("project", payload)?;
                self.projects.insert(uuid_of("project", aggregate_id)?);
            }
            "admin_user" => {
                read::<AdminUserEvent>("admin_user", payload)?;
                self.users.insert(uuid_of("admin_user", aggregate_id)?);
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_request(&mut self, id: Uuid, event: RequestEvent) {
        let row = self.requests.entry(id).or_default();
        match event {
            RequestEvent::RequestAccepted {
                key_id,
                model,
                stream,
                at,
                ..
            } => {
                row.at = Some(at);
                row.key_id = Some(key_id);
                row.model = Some(model);
                row.stream = Some(stream);
                row.status.get_or_insert_with(|| "running".into());
            }
            RequestEvent::AttemptRecorded(attempt) => {
                row.attempts += 1;
                row.provider = Some(attempt.provider);
            }
            event => {
                let Some(o) = Outcome::of(event) else { return };
                row.finished_at = Some(o.at);
                row.key_id = Some(o.key_id);
                row.project_id = o.project_id;
                row.team_id = o.team_id;
                row.model = Some(o.model.clone());
                if o.provider.is_some() {
                    row.provider.clone_from(&o.provider);
                }
                row.status = Some(if o.failed { "failed" } else { "succeeded" }.into());
                row.http_status = Some(i32::from(o.status));
                row.error_type.clone_from(&o.error_type);
                row.prompt_tokens = Some(o.usage.prompt_tokens as i64);
                row.completion_tokens = Some(o.usage.completion_tokens as i64);
                row.cached_tokens = Some(o.usage.cached_tokens as i64);
                row.cache_write_5m_tokens = Some(o.usage.cache_write_5m_tokens as i64);
                row.cache_write_1h_tokens = Some(o.usage.cache_write_1h_tokens as i64);
                row.reasoning_tokens = Some(o.usage.reasoning_tokens as i64);
                row.cost_micros = o.cost_micros;
                row.price_fallback = Some(o.price_fallback);
                row.latency_ms = Some(o.latency_ms as i64);
                row.estimated = Some(o.estimated);
                row.user_id.clone_from(&o.attribution.user);
                row.tags = (!o.attribution.tags.is_empty()).then(|| o.attribution.tags.join(","));
                let levels = [
                    Some((AlertLevel::Key, o.key_id)),
                    o.project_id.map(|id| (AlertLevel::Project, id)),
                    o.team_id.map(|id| (AlertLevel::Team, id)),
                ];
                for spender in levels.into_iter().flatten() {
                    self.spenders
                        .entry(spender)
                        .or_default()
                        .insert(o.at.date_naive());
                }
                self.usage
                    .entry((o.key_id, o.at.date_naive(), o.model.clone()))
                    .or_default()
                    .add(&o);
                self.billing
                    .entry((o.key_id, o.month(), o.model.clone()))
                    .or_default()
                    .add(&o);
                let hour = o.at.duration_trunc(TimeDelta::hours(1)).unwrap_or(o.at);
                self.hourly
                    .entry((
                        o.key_id,
                        hour,
                        o.provider.clone().unwrap_or_default(),
                        o.model.clone(),
                    ))
                    .or_default()
                    .add(&o);
            }
        }
    }

    /// Writes the batch into the views whose table names end in `suffix`
    /// (empty for the live views, `_new` during a rebuild).
    pub async fn write(&self, tx: &mut PgConnection, suffix: &str) -> Result<(), sqlx::Error> {
        views::write_usage(tx, &self.usage, suffix).await?;
        views::write_billing(tx, &self.billing, suffix).await?;
        views::write_hourly(tx, &self.hourly, suffix).await?;
        views::write_requests(tx, &self.requests, suffix).await?;
        Ok(())
    }
}

/// Applies the next batch of events, quarantining poison ones; returns how
/// many events it got past.
pub async fn project_batch(pool: &PgPool, limit: i64) -> Result<usize, ProjectorError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(LOCK)
        .execute(&mut *tx)
        .await?;
    let after = checkpoint(&mut tx, CHECKPOINT).await?;
    let events = apply::read_events(&mut tx, &after, limit).await?;
    let Some(last) = events.last().map(apply::StoredEvent::position) else {
        tx.rollback().await?;
        return Ok(0);
    };
    let applied = apply::apply(&mut tx, &events, "").await?;
    alerts::detect(&mut tx, &applied.spenders, Utc::now()).await?;
    save_checkpoint(&mut tx, CHECKPOINT, &last).await?;
    tx.commit().await?;
    for poison in &applied.quarantined {
        let event = &poison.event;
        tracing::error!(
            aggregate_type = %event.aggregate_type,
            aggregate_id = %event.aggregate_id,
            sequence = event.sequence,
            event_type = %event.event_type,
            reason = poison.reason.as_str(),
            error = %poison.error,
            "event quarantined; the views go on without it"
        );
        metrics::counter!(QUARANTINED, "reason" => poison.reason.as_str()).increment(1);
    }
    refresh_registry(pool, &applied).await;
    Ok(events.len())
}

/// Refolds the registry rows of the aggregates a batch touched. Rows are
/// rebuilt from the events themselves and only newer versions win, so this
/// is safe to repeat after the commit; one that fails (an aggregate with an
/// unreadable event) is logged and does not hold up the others.
pub(crate) async fn refresh_registry(pool: &PgPool, applied: &apply::Applied) {
    for id in &applied.keys {
        if let Err(e) = registry::refresh_key(pool, *id).await {
            tracing::error!(key_id = %id, error = %e, "refreshing a key failed");
        }
    }
    for id in &applied.providers {
        if let Err(e) = registry::refresh_provider(pool, *id).await {
            tracing::error!(provider_id = %id, error = %e, "refreshing a provider failed");
        }
    }
    for name in &applied.aliases {
        if let Err(e) = registry::refresh_alias(pool, name).await {
            tracing::error!(alias = %name, error = %e, "refreshing an alias failed");
        }
    }
    for id in &applied.teams {
        if let Err(e) = aigw_runtime::teams::refresh_team(pool, *id).await {
            tracing::error!(team_id = %id, error = %e, "refreshing a team failed");
        }
    }
    for id in &applied.projects {
        if let Err(e) = aigw_runtime::teams::refresh_project(pool, *id).await {
            tracing::error!(project_id = %id, error = %e, "refreshing a project failed");
        }
    }
    for id in &applied.users {
        if let Err(e) = aigw_runtime::users::refresh_user(pool, *id).await {
            tracing::error!(user_id = %id, error = %e, "refreshing an admin user failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_events::{Attribution, Usage};
    use chrono::{DateTime, Utc};
    use serde_json::to_value;

    #[test]
    fn an_unpriced_request_that_used_only_media_units_is_counted_unpriced() {
        for usage in [
            Usage {
                searches: 1,
                ..Usage::default()
            },
            Usage {
                images: 1,
                ..Usage::default()
            },
        ] {
            let outcome = Outcome {
                key_id: Uuid::nil(),
                project_id: None,
                team_id: None,
                provider: None,
                model: "rerank".into(),
                usage,
                estimated: false,
                failed: false,
                status: 200,
                error_type: None,
                cost_micros: None,
                price_fallback: false,
                latency_ms: 1,
                at: Utc::now(),
                attribution: Attribution::default(),
            };
            let mut delta = UsageDelta::default();
            delta.add(&outcome);
            assert_eq!(delta.unpriced_requests, 1, "{usage:?}");
        }
    }

    #[test]
    fn folds_request_outcomes_by_key_day_and_model() {
        let key = Uuid::now_v7();
        let at: DateTime<Utc> = "2026-11-26T23:59:00Z".parse().unwrap();
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 4,
            cache_write_5m_tokens: 2,
            cache_write_1h_tokens: 1,
            reasoning_tokens: 3,
            images: 1,
            characters: 40,
            audio_seconds: 3,
            searches: 2,
        };
        let completed = RequestEvent::RequestCompleted {
            key_id: key,
            project_id: None,
            team_id: None,
            provider_id: Uuid::nil(),
            provider: "p".into(),
            model: "m".into(),
            usage,
            usage_estimated: false,
            cost_micros: Some(100),
            price_fallback: true,
            attribution: Attribution {
                user: Some("u".into()),
                tags: vec!["a".into(), "b".into()],
            },
            latency_ms: 7,
            at,
        };
        let failed = RequestEvent::RequestFailed {
            key_id: key,
            project_id: None,
            team_id: None,
            model: "m".into(),
            status: 502,
            error_type: "upstream_error".into(),
            message: "x".into(),
            usage,
            usage_estimated: true,
            cost_micros: None,
            price_fallback: false,
            attribution: Attribution::default(),
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
        let rid = Uuid::now_v7();
        let mut effect = BatchEffect::default();
        for e in [accepted, completed.clone(), failed, completed] {
            effect
                .apply(
                    "request",
                    &rid.to_string(),
                    &to_value(e).unwrap().to_string(),
                )
                .unwrap();
        }
        let revoked = KeyEvent::KeyRevoked {
            actor: "admin".into(),
            at,
        };
        effect
            .apply(
                "key",
                &key.to_string(),
                &to_value(revoked).unwrap().to_string(),
            )
            .unwrap();
        assert_eq!(effect.requests[&rid].user_id.as_deref(), Some("u"));
        assert_eq!(effect.requests[&rid].tags.as_deref(), Some("a,b"));
        assert!(effect.spenders[&(AlertLevel::Key, key)].contains(&at.date_naive()));
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
                images: 3,
                characters: 120,
                audio_seconds: 9,
                cached_tokens: 12,
                cache_write_5m_tokens: 6,
                cache_write_1h_tokens: 3,
                reasoning_tokens: 9,
                price_fallback_requests: 2,
                searches: 6,
            }
        );
        assert!(effect.keys.contains(&key));
        let month: NaiveDate = "2026-11-01".parse().unwrap();
        let b = effect.billing[&(key, month, "m".to_string())];
        assert_eq!((b.requests, b.errors, b.cost_micros), (3, 1, 200));
        let hour: DateTime<Utc> = "2026-11-26T23:00:00Z".parse().unwrap();
        assert_eq!(
            effect.hourly[&(key, hour, "p".to_string(), "m".to_string())].requests,
            2
        );
        assert_eq!(
            effect.hourly[&(key, hour, String::new(), "m".to_string())].errors,
            1
        );
        let row = &effect.requests[&rid];
        assert_eq!(row.status.as_deref(), Some("succeeded"));
        assert_eq!(row.provider.as_deref(), Some("p"));
        assert_eq!(
            (row.at, row.stream, row.cost_micros),
            (Some(at), Some(false), Some(100))
        );
        assert_eq!(
            (
                row.cached_tokens,
                row.cache_write_5m_tokens,
                row.cache_write_1h_tokens,
                row.reasoning_tokens,
                row.price_fallback
            ),
            (Some(4), Some(2), Some(1), Some(3), Some(true))
        );
    }

    #[test]
    fn events_from_before_token_classes_fold_as_they_always_did() {
        // A v1.0 outcome: no classes, no fallback flag, no cost.
        let old = r#"{"RequestCompleted": {"key_id": "0193a1f0-0000-7000-8000-000000000001",
            "provider_id": "0193a1f0-0000-7000-8000-000000000002", "provider": "local",
            "model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 20},
            "usage_estimated": false, "latency_ms": 125, "at": "2026-11-26T10:00:01Z"}}"#;
        let mut effect = BatchEffect::default();
        effect
            .apply("request", &Uuid::now_v7().to_string(), old)
            .unwrap();
        let (_, d) = effect.usage.iter().next().unwrap();
        assert_eq!(
            *d,
            UsageDelta {
                requests: 1,
                prompt_tokens: 10,
                completion_tokens: 20,
                latency_ms: 125,
                unpriced_requests: 1,
                ..UsageDelta::default()
            }
        );
        let row = effect.requests.values().next().unwrap();
        assert_eq!(
            (row.cached_tokens, row.reasoning_tokens, row.price_fallback),
            (Some(0), Some(0), Some(false))
        );
    }

    #[test]
    fn an_event_that_does_not_fold_leaves_the_batch_as_it_was() {
        let key = Uuid::now_v7();
        let at: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        let accepted = to_value(RequestEvent::RequestAccepted {
            key_id: key,
            model: "m".into(),
            stream: false,
            at,
            route: None,
        })
        .unwrap()
        .to_string();
        let mut effect = BatchEffect::default();
        for (aggregate_type, aggregate_id, payload) in [
            (
                "request",
                Uuid::now_v7().to_string(),
                "{\"RequestCompleted\":{}}".to_string(),
            ),
            (
                "request",
                Uuid::now_v7().to_string(),
                "not json".to_string(),
            ),
            ("request", "not-a-uuid".to_string(), accepted.clone()),
            ("key", key.to_string(), "{}".to_string()),
            ("key", "not-a-uuid".to_string(), accepted.clone()),
            ("provider", Uuid::now_v7().to_string(), "[]".to_string()),
            (
                "alias",
                "fast".to_string(),
                "{\"AliasRenamed\":{}}".to_string(),
            ),
            (
                "admin_user",
                Uuid::now_v7().to_string(),
                "{\"UserCreated\":{}}".to_string(),
            ),
            (
                "admin_user",
                "not-a-uuid".to_string(),
                "{\"UserDisabled\":{\"actor\":\"a\",\"at\":\"2026-12-04T10:00:00Z\"}}".to_string(),
            ),
        ] {
            let result = effect.apply(aggregate_type, &aggregate_id, &payload);
            assert!(result.is_err(), "{aggregate_type} {aggregate_id} {payload}");
        }
        assert!(effect.requests.is_empty());
        assert!(effect.keys.is_empty() && effect.providers.is_empty() && effect.aliases.is_empty());
        assert!(effect.users.is_empty());
        // A readable admin user event marks the user's registry row for refresh.
        let user = Uuid::now_v7();
        let disabled = "{\"UserDisabled\":{\"actor\":\"a\",\"at\":\"2026-12-04T10:00:00Z\"}}";
        effect
            .apply("admin_user", &user.to_string(), disabled)
            .unwrap();
        assert!(effect.users.contains(&user));
        assert!(matches!(
            effect.apply("request", "x", &accepted),
            Err(FoldError::AggregateId { .. })
        ));
        assert!(matches!(
            effect.apply("request", &Uuid::now_v7().to_string(), "{}"),
            Err(FoldError::Payload { .. })
        ));
        // Aggregates the views do not follow are not read at all.
        assert!(effect.apply("job", "anything", "not json").is_ok());
    }
}
