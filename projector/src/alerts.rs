//! Budget alerts: detected where spend is projected, recorded once, and
//! delivered to the admin's webhook until it acknowledges them.
//!
//! Where: in the projector, inside the transaction that writes a batch to
//! the request log and moves the checkpoint. The request log is the spend
//! the budgets start from (`aigw_runtime::limits::owner_spend`), and inside
//! that transaction it already counts the batch, so each key, project and
//! team whose requests finished in the batch is checked against its budget
//! for the periods they finished in (a project's or team's requests are the
//! ones its keys made while in it, as the request log records them). The dispatcher's settle is not the place: a settle that
//! crashes before recording an alert is redone as a no-op (settling is
//! idempotent), so the crossing would be lost; here a crash rolls the batch
//! back and it is projected, and checked, again.
//!
//! Exactly once: the check is a level, not an edge (every threshold the
//! spend has reached gets its alert if it has none yet), and each alert is
//! a `BudgetAlertAggregate` created at version 0 under
//! `alert:<level>:<id>:<period>:<pct>`: the events table's primary key lets
//! only the first creation in, whichever replica or redelivery tries again
//! (projector replicas are serialized by their advisory lock anyway). The
//! alert's outbox row (`budget_alerts`) is written in the same transaction
//! as its event, so there is one row per event, never zero or two.
//!
//! Delivery: a loop claims due rows (`FOR UPDATE SKIP LOCKED`, then pushed
//! past the attempt's timeout so a crashed replica's claim expires), POSTs
//! them signed with `AIGW_ALERT_WEBHOOK_SECRET` exactly as job webhooks are
//! signed (`webhook_signature`, `x-aigw-signature: sha256=...`), through the
//! same egress client and SSRF rules, and retries on the job webhooks'
//! backoff until a 2xx; rows are in PostgreSQL, so restarts lose nothing.
//! A receiver may still see an alert twice if a replica dies between the
//! 2xx and marking it delivered: `x-aigw-alert-id` names it for dedup.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aigw_events::alert::{self, AlertLevel};
use aigw_events::key::KeyLimits;
use aigw_events::wire::Level;
use aigw_events::{
    BudgetAlertAggregate, BudgetAlertCommand, BudgetAlertEvent, KeyAggregate, META_ACTOR,
    ProjectAggregate, TeamAggregate,
};
use aigw_runtime::crypto::webhook_signature;
use aigw_runtime::egress::{self, Egress};
use aigw_runtime::limits::{Owner, owner_spend};
use aigw_runtime::store::{create_in, metadata};
use aigw_runtime::views::alerts::{ALERT_COLUMNS, AlertRow};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use secrecy::SecretString;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Budget alerts recorded, by `level`.
pub const ALERTS: &str = "aigw_budget_alerts_total";

/// Shortest webhook secret accepted.
pub const MIN_SECRET_LEN: usize = 32;

/// Where budget alerts are delivered.
#[derive(Debug, Clone, Args)]
pub struct AlertArgs {
    /// Admin webhook that receives every budget alert (POST, JSON); unset:
    /// alerts are recorded and listed but not delivered.
    #[arg(long, env = "AIGW_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,

    /// Secret (at least 32 characters) that signs alert deliveries like job
    /// webhooks: `x-aigw-signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[arg(long, env = "AIGW_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<SecretString>,

    /// Wait after the first failed delivery, doubled after each further
    /// one (at most 10 minutes); deliveries go on until a 2xx.
    #[arg(long, env = "AIGW_ALERT_WEBHOOK_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub alert_webhook_backoff: Duration,

    /// Time allowed for one delivery.
    #[arg(long, env = "AIGW_ALERT_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub alert_webhook_timeout: Duration,
}

impl Default for AlertArgs {
    fn default() -> Self {
        Self {
            alert_webhook_url: None,
            alert_webhook_secret: None,
            alert_webhook_backoff: Duration::from_secs(1),
            alert_webhook_timeout: Duration::from_secs(10),
        }
    }
}

impl AlertArgs {
    /// Refuses a webhook URL that is not http(s) and a secret that is too
    /// short (before anything starts).
    pub fn check(&self) -> Result<(), String> {
        use secrecy::ExposeSecret;
        if let Some(url) = &self.alert_webhook_url
            && !matches!(
                reqwest::Url::parse(url)
                    .map(|u| u.scheme().to_string())
                    .as_deref(),
                Ok("http" | "https")
            )
        {
            return Err("AIGW_ALERT_WEBHOOK_URL must be an http or https URL".into());
        }
        if let Some(secret) = &self.alert_webhook_secret
            && secret.expose_secret().chars().count() < MIN_SECRET_LEN
        {
            return Err(format!(
                "AIGW_ALERT_WEBHOOK_SECRET must be at least {MIN_SECRET_LEN} characters"
            ));
        }
        Ok(())
    }
}

/// A budget to check: its owner's limits and, for a key, its top-ups.
struct Budgeted {
    limits: KeyLimits,
    topups: BTreeMap<String, i64>,
}

/// The budgets of the owners at `level` among `ids` that have a money
/// budget, from the registry rows (a key's, a project's or a team's folded
/// state). A state that does not read is logged and skipped: one bad row
/// never stops the views.
async fn budgets(
    tx: &mut PgConnection,
    level: AlertLevel,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Budgeted)>, sqlx::Error> {
    let (table, limits_path) = match level {
        AlertLevel::Key => ("api_keys", "state -> 'settings' -> 'limits'"),
        AlertLevel::Project => ("projects", "state -> 'policy' -> 'limits'"),
        AlertLevel::Team => ("teams", "state -> 'policy' -> 'limits'"),
    };
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT id, state FROM {table}
         WHERE id = ANY($1) AND {limits_path} ->> 'budget_micros' IS NOT NULL"
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, state) in rows {
        let read = match level {
            AlertLevel::Key => serde_json::from_value::<KeyAggregate>(state).map(|k| Budgeted {
                limits: k.settings.limits,
                topups: k.topups.into_iter().map(|(p, t)| (p, t.0)).collect(),
            }),
            AlertLevel::Project => {
                serde_json::from_value::<ProjectAggregate>(state).map(|p| Budgeted {
                    limits: p.policy.limits,
                    topups: BTreeMap::new(),
                })
            }
            AlertLevel::Team => serde_json::from_value::<TeamAggregate>(state).map(|t| Budgeted {
                limits: t.policy.limits,
                topups: BTreeMap::new(),
            }),
        };
        match read {
            Ok(b) => out.push((id, b)),
            Err(e) => tracing::error!(
                level = level.as_str(), id = %id, error = %e,
                "unreadable state; no budget alerts for it"
            ),
        }
    }
    Ok(out)
}

/// Records an alert for every threshold each key, project or team in
/// `spenders` has reached in the budget periods of the days its requests
/// finished on, unless it has one; returns how many were recorded. Runs in
/// the projector's batch transaction, after the batch is written.
pub async fn detect(
    tx: &mut PgConnection,
    spenders: &BTreeMap<(AlertLevel, Uuid), BTreeSet<NaiveDate>>,
    now: DateTime<Utc>,
) -> Result<usize, aigw_runtime::RuntimeError> {
    let meta = metadata(&[(META_ACTOR, "projector")]);
    let mut recorded = 0;
    for level in [AlertLevel::Key, AlertLevel::Project, AlertLevel::Team] {
        let ids: Vec<Uuid> = spenders
            .keys()
            .filter(|(l, _)| *l == level)
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        for (id, budgeted) in budgets(&mut *tx, level, &ids).await? {
            let limits = &budgeted.limits;
            let thresholds = limits.alert_thresholds();
            let days = spenders.get(&(level, id)).into_iter().flatten();
            let periods: BTreeSet<String> = days
                .filter_map(|d| d.and_hms_opt(12, 0, 0))
                .map(|d| limits.budget_period.period_id(d.and_utc()))
                .collect();
            for period in periods {
                let extra = budgeted.topups.get(&period).copied().unwrap_or(0);
                let Some(budget) = limits.budget_micros.map(|b| b.saturating_add(extra)) else {
                    continue;
                };
                let owner = match level {
                    AlertLevel::Key => Owner::Key(id),
                    AlertLevel::Project => Owner::Level(Level::Project(id)),
                    AlertLevel::Team => Owner::Level(Level::Team(id)),
                };
                let (spent, _) = owner_spend(&mut *tx, owner, &period).await?;
                for threshold in alert::reached(&thresholds, spent, budget) {
                    let alert_id =
                        BudgetAlertAggregate::aggregate_id(level, id, &period, threshold);
                    let command = BudgetAlertCommand::RecordCrossing {
                        level,
                        id,
                        period: period.clone(),
                        threshold,
                        spent,
                        budget,
                        at: now,
                    };
                    let Some(events) =
                        create_in::<BudgetAlertAggregate>(&mut *tx, &alert_id, command, &meta)
                            .await?
                    else {
                        continue;
                    };
                    for event in events {
                        outbox(&mut *tx, &alert_id, &event).await?;
                    }
                    metrics::counter!(ALERTS, "level" => level.as_str()).increment(1);
                    tracing::info!(alert = %alert_id, spent, budget, "budget threshold crossed");
                    recorded += 1;
                }
            }
        }
    }
    Ok(recorded)
}

/// The outbox row of a recorded alert.
async fn outbox(
    tx: &mut PgConnection,
    id: &str,
    event: &BudgetAlertEvent,
) -> Result<(), sqlx::Error> {
    let BudgetAlertEvent::BudgetThresholdCrossed {
        level,
        id: target,
        period,
        threshold,
        spent,
        budget,
        at,
    } = event;
    sqlx::query(
        "INSERT INTO budget_alerts (id, level, target_id, period, threshold, spent_micros,
                budget_micros, at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(level.as_str())
    .bind(target)
    .bind(period)
    .bind(i32::from(*threshold))
    .bind(spent)
    .bind(budget)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Claims the next due alert: locked against other replicas, and its next
/// attempt pushed past this one's timeout (a crash mid-delivery lets
/// another replica retry it then).
async fn claim(pool: &PgPool, hold: Duration) -> Result<Option<AlertRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE budget_alerts SET attempts = attempts + 1,
                next_attempt_at = now() + make_interval(secs => $1)
         WHERE id = (SELECT id FROM budget_alerts
                     WHERE delivered_at IS NULL AND next_attempt_at <= now()
                     ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(hold.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// What one delivery attempt got.
struct Attempted {
    status: Option<u16>,
    error: Option<String>,
}

async fn send(egress: &Egress, args: &AlertArgs, url: &str, row: &AlertRow) -> Attempted {
    let body = match serde_json::to_vec(&row.to_json()) {
        Ok(b) => b,
        Err(e) => {
            return Attempted {
                status: None,
                error: Some(e.to_string()),
            };
        }
    };
    let request = match egress.request(reqwest::Method::POST, url) {
        Ok(r) => r,
        Err(refused) => {
            return Attempted {
                status: None,
                error: Some(refused.to_string()),
            };
        }
    };
    let mut request = request
        .timeout(args.alert_webhook_timeout)
        .header("content-type", "application/json")
        .header("x-aigw-alert-id", &row.id)
        .header("x-aigw-delivery-attempt", row.attempts.to_string());
    if let Some(secret) = &args.alert_webhook_secret {
        request = request.header("x-aigw-signature", webhook_signature(secret, &body));
    }
    match request.body(body).send().await {
        Ok(r) => Attempted {
            status: Some(r.status().as_u16()),
            error: None,
        },
        Err(e) => Attempted {
            status: None,
            error: Some(egress::transport_error(&e)),
        },
    }
}

/// Delivers due alerts until `shutdown`; nothing without a webhook URL.
pub async fn deliver(
    pool: PgPool,
    egress: Egress,
    args: AlertArgs,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let Some(url) = args.alert_webhook_url.clone() else {
        return;
    };
    let hold = args.alert_webhook_timeout + Duration::from_secs(5);
    loop {
        let pause = match claim(&pool, hold).await {
            Ok(Some(row)) => {
                let attempt = send(&egress, &args, &url, &row).await;
                let delivered = attempt.status.is_some_and(|s| (200..300).contains(&s));
                metrics::counter!("aigw_webhook_attempts_total", "delivered" => delivered.to_string())
                    .increment(1);
                let wait = egress::webhook_backoff(
                    args.alert_webhook_backoff,
                    u32::try_from(row.attempts).unwrap_or(u32::MAX),
                );
                let saved = sqlx::query(
                    "UPDATE budget_alerts SET last_status = $2, last_error = $3,
                            delivered_at = CASE WHEN $4 THEN now() END,
                            next_attempt_at = now() + make_interval(secs => $5)
                     WHERE id = $1",
                )
                .bind(&row.id)
                .bind(attempt.status.map(i32::from))
                .bind(&attempt.error)
                .bind(delivered)
                .bind(wait.as_secs_f64())
                .execute(&pool)
                .await;
                if let Err(e) = saved {
                    tracing::warn!(alert = %row.id, error = %e, "recording an alert delivery failed");
                }
                if !delivered {
                    tracing::warn!(alert = %row.id, status = ?attempt.status, error = ?attempt.error, "alert delivery failed; retrying later");
                }
                Duration::ZERO
            }
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "claiming a budget alert failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_settings_are_checked() {
        let ok = AlertArgs {
            alert_webhook_url: Some("https://hooks.example.com/aigw".into()),
            alert_webhook_secret: Some(SecretString::from("x".repeat(32))),
            ..Default::default()
        };
        assert!(ok.check().is_ok());
        let short = AlertArgs {
            alert_webhook_secret: Some(SecretString::from("x".repeat(31))),
            ..ok.clone()
        };
        assert!(short.check().is_err());
        let ftp = AlertArgs {
            alert_webhook_url: Some("ftp://example.com".into()),
            ..ok
        };
        assert!(ftp.check().is_err());
        assert!(AlertArgs::default().check().is_ok());
    }
}
