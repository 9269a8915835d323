//! Running jobs: chat completions submitted with `POST /v1/jobs`.
//!
//! Jobs come from their own stream and consumer, so synchronous requests
//! never queue behind them. A delivery starts the job (an event), runs it
//! through the same routing, failover and pricing as a synchronous call
//! (answer captured instead of relayed), then finishes the job and records
//! the run's request in one transaction, settles the budget hold, delivers
//! the webhook, and only then acks. A crash anywhere before the ack means a
//! redelivery, which finds the job finished and only completes what is left
//! (settling is idempotent, webhooks go on from the last recorded attempt).
//! A body too large for the message is loaded from the bodies object store
//! after the start (so a store that stays unreachable uses up runs instead
//! of looping) and deleted once the job will not run again.

use std::sync::Arc;
use std::time::Duration;

use aigw_events::wire::DispatchRequest;
use aigw_events::{
    Delivery, JobCommand, JobError, JobResult, META_ACTOR, META_REQUEST_ID, Outcome, Usage,
};
use aigw_runtime::bodies;
use aigw_runtime::crypto::webhook_signature;
use aigw_runtime::egress;
use aigw_runtime::jobs::{self, JobRow, RequestRecord};
use aigw_runtime::store::metadata;
use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::process::{body_unavailable, failed, json_bytes, keep_alive, run};
use crate::record::{Billed, recorded_usage, request_command, settle};
use crate::reply::Replier;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// A message whose job row never appeared (its ingress died between queueing
/// and storing it, so its caller never got a 202) is dropped after this.
const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// Webhook delivery settings.
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    pub attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

/// Processes one delivery of a job message, start to ack. The job slot
/// (`permit`) is given back once the run is stored: a slow webhook keeps
/// its message (and in-progress acks) but not a slot.
pub async fn handle(shared: Arc<Shared>, msg: Message, permit: tokio::sync::OwnedSemaphorePermit) {
    let delivered = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
    let mut request: DispatchRequest = match serde_json::from_slice(&msg.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "unreadable job message; dropping it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let id = request.request_id;
    let pool = &shared.stores.pool;
    let meta = metadata(&[
        (META_REQUEST_ID, &id.to_string()),
        (META_ACTOR, "dispatcher"),
    ]);

    // Registered before the start, so a cancellation from now on is seen.
    let cancel = CancellationToken::new();
    shared.inflight.insert(id, cancel.clone());
    let progress = keep_alive(&msg, shared.ack_wait);
    let start = JobCommand::Start {
        delivery: delivered,
        at: Utc::now(),
    };
    let ack = match jobs::execute(pool, id, start, &meta, None).await {
        Ok(Ok(row)) => Some(run_job(&shared, &mut request, row.job.runs, &cancel, &meta).await),
        Ok(Err(JobError::NotSubmitted)) => {
            let age = (Utc::now() - request.accepted_at)
                .to_std()
                .unwrap_or_default();
            if age > ORPHAN_AFTER {
                tracing::warn!(job_id = %id, "job message without a stored job; dropping it");
                release_hold(&shared, &request).await;
                bodies::delete(&shared.bodies, &request).await;
                let _ = msg.ack_with(AckKind::Term).await;
            } else {
                // The ingress stores the job right after queueing it.
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(250))))
                    .await;
            }
            None
        }
        Ok(Err(JobError::AlreadyFinal(status))) => {
            // A redelivery of a finished job, or a job cancelled while queued.
            tracing::info!(job_id = %id, status, "job already final");
            match recorded_usage(&shared, &id.to_string()).await {
                Some((usage, cost)) => settle(&shared, &request, usage, cost, false).await,
                None => release_hold(&shared, &request).await,
            }
            Some(true)
        }
        Ok(Err(e)) => {
            tracing::error!(job_id = %id, error = %e, "job cannot start; dropping its message");
            release_hold(&shared, &request).await;
            bodies::delete(&shared.bodies, &request).await;
            let _ = msg.ack_with(AckKind::Term).await;
            None
        }
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "cannot start the job; retrying later");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            None
        }
    };
    drop(permit);
    if ack == Some(true) {
        // The job will not run again: its stored body, if any, is done with.
        bodies::delete(&shared.bodies, &request).await;
        match jobs::get(pool, id).await {
            Ok(Some(row)) => deliver_webhook(&shared, &row).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(job_id = %id, error = %e, "reading the job for its webhook"),
        }
    }
    progress.abort();
    shared.inflight.remove(&id);
    match ack {
        Some(true) => {
            if let Err(e) = msg.ack().await {
                tracing::warn!(job_id = %id, error = %e, "ack failed");
            }
        }
        Some(false) => {
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                .await;
        }
        None => {}
    }
}

/// Runs a started job and stores its end; false when it could not be stored,
/// or its stored body could not be read right now (the message is then
/// redelivered, and the next run counts towards the delivery limit). A body
/// that is gone fails the job (`body_unavailable`).
async fn run_job(
    shared: &Shared,
    request: &mut DispatchRequest,
    runs: u64,
    cancel: &CancellationToken,
    meta: &std::collections::HashMap<String, String>,
) -> bool {
    let id = request.request_id;
    let replier = Replier::capturing(shared.client.clone());
    // Something kept killing the dispatchers running this job: fail it
    // rather than loop.
    let (attempts, outcome, route) = if runs > shared.max_deliver {
        let err = UpstreamError::new(
            UpstreamErrorKind::DeliveryLimit,
            "the job could not be completed",
        );
        replier
            .error(err.status(), json_bytes(&err.body()), None, 0)
            .await;
        (vec![], failed(&err, Billed::nothing(), 0), None)
    } else {
        match bodies::load(&shared.bodies, request).await {
            Ok(()) => {
                // A body in another dialect: translated for the adapters,
                // the caller's kept for same-dialect targets.
                crate::dialect::prepare(request);
                run(shared, request, &replier, cancel).await
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(job_id = %id, error = %e, "cannot load the job's body; retrying later");
                return false;
            }
            Err(e) => {
                let err = body_unavailable(id, &e);
                replier
                    .error(err.status(), json_bytes(&err.body()), None, 0)
                    .await;
                (vec![], failed(&err, Billed::nothing(), 0), None)
            }
        }
    };
    let result = job_result(&replier, &outcome);
    // A Responses job's answer is stored like one from `/v1/responses`.
    let response = crate::record::stored_response(request, &outcome, replier.take_rendered());
    let (usage, cost) = match &outcome {
        Outcome::Completed {
            usage, cost_micros, ..
        }
        | Outcome::Failed {
            usage, cost_micros, ..
        } => (*usage, *cost_micros),
    };
    let command = request_command(request, attempts, outcome, route);
    let request_id = id.to_string();
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        let finish = JobCommand::Finish {
            result: result.clone(),
            at: Utc::now(),
        };
        let record = RequestRecord {
            request_id: &request_id,
            command: command.clone(),
            metadata: meta,
            response: response.clone(),
        };
        match jobs::execute(&shared.stores.pool, id, finish, meta, Some(record)).await {
            Ok(Ok(row)) => {
                metrics::counter!("aigw_jobs_finished_total", "status" => row.job.status.as_str())
                    .increment(1);
                settle(shared, request, usage, cost, true).await;
                return true;
            }
            Ok(Err(e)) => {
                // Finished by an earlier delivery we did not know about.
                tracing::warn!(job_id = %id, error = %e, "job refused its end");
                return true;
            }
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "storing the job's end failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(job_id = %id, "could not store the job's end; it stays unacked for redelivery");
    false
}

/// The job's end from the run's captured answer.
fn job_result(replier: &Replier, outcome: &Outcome) -> JobResult {
    let captured = replier.captured();
    match outcome {
        Outcome::Completed {
            usage, cost_micros, ..
        } => {
            let response = captured
                .as_ref()
                .and_then(|c| serde_json::from_slice::<Value>(&c.body).ok())
                .unwrap_or(Value::Null);
            JobResult::Succeeded {
                response,
                provider: captured.and_then(|c| c.provider),
                usage: *usage,
                cost_micros: *cost_micros,
            }
        }
        Outcome::Failed {
            status,
            error_type,
            message,
            usage,
            cost_micros,
            ..
        } => {
            let error = captured
                .and_then(|c| serde_json::from_slice::<Value>(&c.body).ok())
                .filter(|v| v.get("error").is_some())
                .unwrap_or_else(|| aigw_events::wire::error_body(message, error_type, None));
            JobResult::Failed {
                http_status: *status,
                error,
                usage: *usage,
                cost_micros: *cost_micros,
            }
        }
    }
}

/// Frees the budget hold of a job that will never run.
async fn release_hold(shared: &Shared, request: &DispatchRequest) {
    settle(shared, request, Usage::default(), Some(0), true).await;
}

/// POSTs the finished job to its webhook, signed, retrying with backoff;
/// every attempt is an event. Goes on from the attempts already recorded.
pub async fn deliver_webhook(shared: &Shared, row: &JobRow) {
    if !row.job.webhook_due() {
        return;
    }
    let Some(url) = row.job.spec.as_ref().and_then(|s| s.webhook_url.clone()) else {
        return;
    };
    let config = shared.webhooks;
    let meta = metadata(&[
        (META_REQUEST_ID, &row.id.to_string()),
        (META_ACTOR, "dispatcher"),
    ]);
    let body = match serde_json::to_vec(&jobs::job_object(row)) {
        Ok(b) => b,
        Err(_) => return,
    };
    // Signed with the key's current webhook secret (a rotation changes it).
    let secret = match shared.registry.key(row.key_id) {
        Some(key) => shared
            .sealer
            .webhook_secret(row.key_id, &key.state.key_hash)
            .map_err(|e| e.to_string()),
        None => Err("the job's key is unknown".to_string()),
    };
    let mut attempt = row.job.webhook.as_ref().map_or(0, |w| w.attempts);
    loop {
        attempt += 1;
        // Refused (a private address) before any connection, unless allowed.
        let request = shared.egress.request(reqwest::Method::POST, &url);
        let (http_status, error) = match (&secret, request) {
            (Err(e), _) => (None, Some(e.to_string())),
            (_, Err(refused)) => (None, Some(refused.to_string())),
            (Ok(secret), Ok(request)) => {
                let sent = request
                    .timeout(config.timeout)
                    .header("content-type", "application/json")
                    .header("x-aigw-signature", webhook_signature(secret, &body))
                    .header("x-aigw-job-id", row.id.to_string())
                    .header("x-aigw-delivery-attempt", attempt.to_string())
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) => (Some(r.status().as_u16()), None),
                    Err(e) => (None, Some(egress::transport_error(&e))),
                }
            }
        };
        let delivered = http_status.is_some_and(|s| (200..300).contains(&s));
        let last = !delivered && (attempt >= config.attempts || secret.is_err());
        let delivery = Delivery {
            attempt,
            http_status,
            error,
            delivered,
            at: Utc::now(),
        };
        metrics::counter!("aigw_webhook_attempts_total", "delivered" => delivered.to_string())
            .increment(1);
        let command = JobCommand::RecordDelivery { delivery, last };
        match jobs::execute(&shared.stores.pool, row.id, command, &meta, None).await {
            Ok(Ok(_)) => {}
            // Another delivery of the message finished it meanwhile.
            Ok(Err(_)) => return,
            Err(e) => {
                tracing::warn!(job_id = %row.id, error = %e, "recording a webhook attempt failed");
                return;
            }
        }
        if delivered || last {
            return;
        }
        let wait = egress::webhook_backoff(config.backoff, attempt);
        tokio::time::sleep(wait).await;
    }
}
