//! Handling one accepted request, start to ack: load its body, route it over
//! the targets it may go to (`candidates`) with retries and failover, one
//! call at a time (`attempt`), record its outcome exactly once and settle
//! its budget (`record`), then ack the JetStream message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_events::wire::{DispatchRequest, Endpoint};
use aigw_events::{Attempt, ErrorClass, Outcome, Route, Usage};
use aigw_runtime::Target;
use aigw_runtime::bodies::{self, BodyError};
use aigw_runtime::registry::ResolveError;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Shared;
use crate::attempt::{AttemptResult, attempt, choose_credential, credential_health};
use crate::candidates;
use crate::record::{Billed, Recorded, record, recorded_usage, settle};
use crate::reply::Replier;
use crate::routing::Slot;
use crate::spans;
use crate::upstream::{UpstreamError, UpstreamErrorKind};
use aigw_runtime::estimate;
use aigw_runtime::health::Admission;

/// Processes one delivery of a request message, start to ack.
pub async fn handle(shared: Arc<Shared>, msg: Message) {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
    let mut request: DispatchRequest = match serde_json::from_slice(&msg.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "unreadable request message; dropping it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let id = request.request_id;
    let span = tracing::Span::current();
    spans::request(&span, &request);
    tracing::debug!(request_id = %id, delivered, "handling");
    if delivered > 1 {
        match shared.stores.request_recorded(&id.to_string()).await {
            Ok(true) => {
                tracing::info!(request_id = %id, "redelivered request already recorded; acking");
                // The earlier delivery may have died before settling its budget.
                if let Some((usage, cost)) = recorded_usage(&shared, &id.to_string()).await {
                    settle(&shared, &request, usage, cost, false).await;
                }
                bodies::delete(&shared.bodies, &request).await;
                let _ = msg.ack().await;
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "cannot check the event store; retrying later");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        }
    }

    let expired = request.deadline.is_some_and(|d| d < Utc::now());
    // A body that waited in the object store; an expired request, or one
    // past the delivery limit, is recorded without it.
    let body = if expired || delivered >= shared.max_deliver {
        Ok(())
    } else {
        bodies::load(&shared.bodies, &mut request).await
    };
    if let Err(e) = &body
        && e.is_retryable()
    {
        tracing::warn!(request_id = %id, error = %e, "cannot load the request body; retrying later");
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    }
    // A body in another dialect: translated for the adapters, the
    // caller's kept for same-dialect targets.
    crate::dialect::prepare(&mut request);
    tracing::debug!(request_id = %id, "body ready");

    let cancel = CancellationToken::new();
    shared.inflight.insert(id, cancel.clone());
    let progress = keep_alive(&msg, shared.ack_wait);
    let replier = Replier::new(shared.client.clone(), request.reply_to.clone(), delivered);

    let (attempts, outcome, route) = if expired {
        let err = UpstreamError::new(
            UpstreamErrorKind::ExpiredInQueue,
            "the request waited too long for a dispatcher",
        );
        (vec![], failed(&err, Billed::nothing(), 0), None)
    } else if delivered >= shared.max_deliver {
        // Something kept killing the dispatchers working on this request:
        // give up on it rather than loop.
        let err = UpstreamError::new(
            UpstreamErrorKind::DeliveryLimit,
            "the request could not be completed",
        );
        replier
            .error(err.status(), json_bytes(&err.body()), None, 0)
            .await;
        (vec![], failed(&err, Billed::nothing(), 0), None)
    } else if let Err(e) = body {
        let err = body_unavailable(id, &e);
        replier
            .error(err.status(), json_bytes(&err.body()), None, 0)
            .await;
        (vec![], failed(&err, Billed::nothing(), 0), None)
    } else {
        run(&shared, &request, &replier, &cancel).await
    };

    let (usage, cost) = match &outcome {
        Outcome::Completed {
            usage, cost_micros, ..
        }
        | Outcome::Failed {
            usage, cost_micros, ..
        } => (*usage, *cost_micros),
    };
    spans::outcome(&span, &outcome, attempts.len());
    tracing::debug!(request_id = %id, "recording");
    let rendered = replier.take_rendered();
    let recorded = record(&shared, &request, attempts, outcome, route, rendered).await;
    tracing::debug!(request_id = %id, ?recorded, "recorded");
    progress.abort();
    shared.inflight.remove(&id);
    match recorded {
        Recorded::Stored => settle(&shared, &request, usage, cost, true).await,
        Recorded::Before => {
            // Another delivery recorded it first (both ran at once): the
            // stored outcome is the bill, so settle to it, not to ours.
            if let Some((usage, cost)) = recorded_usage(&shared, &id.to_string()).await {
                settle(&shared, &request, usage, cost, false).await;
            }
        }
        Recorded::Failed => {
            // Not stored: leave it to a redelivery rather than lose it.
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                .await;
            return;
        }
    }
    if request.endpoint == Endpoint::Transcriptions
        && let Err(e) = shared.media.delete(id.to_string().as_str()).await
    {
        // It expires with the bucket's max age anyway.
        tracing::debug!(request_id = %id, error = %e, "deleting the upload");
    }
    bodies::delete(&shared.bodies, &request).await;
    tracing::debug!(request_id = %id, "settled; acking");
    if let Err(e) = msg.ack().await {
        // The request is recorded; a redelivery will find it and only ack.
        tracing::warn!(request_id = %id, error = %e, "ack failed");
    }
}

/// A request whose stored body is gone (expired or deleted): recorded as
/// failed, not retried. Not a provider's fault, so no failover or breaker.
pub(crate) fn body_unavailable(id: uuid::Uuid, e: &BodyError) -> UpstreamError {
    tracing::error!(request_id = %id, error = %e, "the request body is gone");
    UpstreamError::new(
        UpstreamErrorKind::BodyUnavailable,
        "the request body could not be read (it expired or was deleted before a dispatcher ran the request)",
    )
}

/// Keeps the JetStream message from being redelivered while we still work on
/// it (in-progress acks, three per ack-wait period).
pub(crate) fn keep_alive(msg: &Message, ack_wait: Duration) -> tokio::task::JoinHandle<()> {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let msg = msg.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = msg.ack_with(AckKind::Progress).await;
        }
    })
}

pub(crate) async fn run(
    shared: &Shared,
    request: &DispatchRequest,
    replier: &Replier,
    cancel: &CancellationToken,
) -> (Vec<Attempt>, Outcome, Option<Route>) {
    let started = Instant::now();
    let targets = match shared
        .registry
        .resolve_fresh(&request.model, request.provider.as_deref())
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let kind = match e {
                ResolveError::AmbiguousModel { .. } => UpstreamErrorKind::AmbiguousModel,
                ResolveError::UnknownModel(_)
                | ResolveError::UnknownProvider(_)
                | ResolveError::ProviderDisabled(_) => UpstreamErrorKind::ModelNotFound,
            };
            let err = UpstreamError::new(kind, e.to_string());
            replier
                .error(err.status(), json_bytes(&err.body()), None, 0)
                .await;
            return (vec![], failed(&err, Billed::nothing(), 0), None);
        }
    };
    // Only targets this request may go to: its endpoint, the key's scopes,
    // its budget hold (see `candidates`).
    let targets = match candidates::filter(shared, request, targets) {
        Ok(t) => t,
        Err(none) => {
            let err = none.error(&request.model, request.endpoint.path());
            replier
                .error(
                    err.status(),
                    json_bytes(&err.body()),
                    err.retry_after.as_deref(),
                    0,
                )
                .await;
            return (vec![], failed(&err, Billed::nothing(), 0), None);
        }
    };
    let estimate = Usage {
        prompt_tokens: estimate::prompt_tokens(&request.body),
        completion_tokens: estimate::max_output_tokens(&request.body, 256),
        ..Default::default()
    };
    let strategy = shared
        .registry
        .strategy_for(&request.model)
        .unwrap_or(shared.limits.strategy);
    let plan = shared.router.plan(targets, strategy, estimate);
    tracing::debug!(request_id = %request.request_id, "targets resolved");
    let mut route = Route {
        strategy: plan.strategy.as_str().to_string(),
        order: plan.order.iter().map(Target::label).collect(),
        reason: plan.reason.clone(),
    };
    let deadline = {
        let own = Instant::now() + shared.limits.request_deadline;
        let caller = request
            .deadline
            .and_then(|d| (d - Utc::now()).to_std().ok())
            .map(|left| Instant::now() + left);
        caller.map_or(own, |c| c.min(own))
    };

    let mut attempts: Vec<Attempt> = Vec::new();
    let mut last_error: Option<UpstreamError> = None;
    let mut skipped = Vec::new();
    let mut soonest_retry_ms: Option<i64> = None;
    'targets: for target in &plan.order {
        let now_ms = Utc::now().timestamp_millis();
        let probe = match shared
            .health
            .admit(target.provider.id, &target.model, now_ms)
            .await
        {
            Admission::Closed => false,
            Admission::Probe => true,
            Admission::Open { retry_in_ms } => {
                skipped.push(format!("{} (circuit open)", target.label()));
                soonest_retry_ms =
                    Some(soonest_retry_ms.map_or(retry_in_ms, |s| s.min(retry_in_ms)));
                continue;
            }
        };
        // A provider at its concurrency cap is skipped while others remain;
        // the last one is waited for, until the deadline.
        let is_last = plan.order.last().is_some_and(|l| std::ptr::eq(l, target));
        let _slot = match shared
            .router
            .try_slot(target.provider.id, target.provider.spec.max_concurrency)
        {
            Slot::Uncapped => None,
            Slot::Held(permit) => Some(permit),
            Slot::Full if !is_last => {
                skipped.push(format!("{} (at its concurrency cap)", target.label()));
                continue;
            }
            Slot::Full => match shared
                .router
                .cap(target.provider.id, target.provider.spec.max_concurrency)
            {
                Some(sem) => {
                    match tokio::time::timeout_at(deadline.into(), sem.acquire_owned()).await {
                        Ok(Ok(permit)) => Some(permit),
                        _ => break 'targets,
                    }
                }
                None => None,
            },
        };
        for retry in 0..=shared.limits.retries_per_target {
            if attempts.len() >= shared.limits.max_attempts || Instant::now() >= deadline {
                break 'targets;
            }
            let attempt_start = Instant::now();
            let started_at = Utc::now();
            tracing::debug!(request_id = %request.request_id, target = %target.label(), "admitted");
            let credential = choose_credential(shared, target).await;
            tracing::debug!(request_id = %request.request_id, "calling the target");
            let span = spans::attempt(request, target, attempts.len() + 1);
            let result = tokio::select! {
                r = attempt(shared, request, target, credential, replier, cancel, attempts.len() + 1)
                    .instrument(span.clone()) => r,
                _ = tokio::time::sleep_until(deadline.into()) => AttemptResult::Failed {
                    error: deadline_passed(),
                    billed: Billed::nothing(),
                    started_stream: false,
                },
            };
            spans::attempt_result(&span, &result);
            tracing::debug!(request_id = %request.request_id, "target called");
            drop(span);
            let latency_ms = attempt_start.elapsed().as_millis() as u64;
            let mut record = Attempt {
                provider_id: target.provider.id,
                provider: target.provider.spec.name.clone(),
                model: target.model.clone(),
                status: None,
                latency_ms,
                error: None,
                started_at,
            };
            metrics::histogram!("aigw_upstream_latency_seconds", "provider" => target.provider.spec.name.clone())
                .record(attempt_start.elapsed().as_secs_f64());
            let now_ms = Utc::now().timestamp_millis();
            credential_health(shared, target, credential, &result, now_ms).await;
            tracing::debug!(request_id = %request.request_id, "credential health noted");
            match result {
                AttemptResult::Done { billed, status } => {
                    record.status = Some(status);
                    attempts.push(record);
                    count_upstream(target, "ok");
                    shared.router.observe_latency(target, latency_ms as f64);
                    shared
                        .health
                        .success(target.provider.id, &target.model, now_ms)
                        .await;
                    if !skipped.is_empty() {
                        route.reason = format!("{}; skipped {}", route.reason, skipped.join(", "));
                    }
                    let outcome = Outcome::Completed {
                        provider_id: target.provider.id,
                        provider: target.provider.spec.name.clone(),
                        model: target.model.clone(),
                        usage: billed.usage,
                        usage_estimated: billed.estimated,
                        cost_micros: billed.cost_micros,
                        price_fallback: billed.price_fallback,
                        latency_ms: started.elapsed().as_millis() as u64,
                        at: Utc::now(),
                    };
                    return (attempts, outcome, Some(route));
                }
                AttemptResult::Failed {
                    error,
                    billed,
                    started_stream,
                } => {
                    record.status = error.upstream_status;
                    record.error = Some(error.class());
                    attempts.push(record);
                    count_upstream(target, error_label(error.class()));
                    if error.class().is_retryable() {
                        shared
                            .health
                            .failure(
                                target.provider.id,
                                &target.model,
                                &error.message,
                                probe,
                                now_ms,
                            )
                            .await;
                    }
                    if started_stream || !error.class().is_retryable() {
                        // Bytes already reached the caller, or the caller's
                        // own request is at fault: no other target helps.
                        if !started_stream {
                            replier
                                .error(
                                    error.status(),
                                    json_bytes(&error.body()),
                                    error.retry_after.as_deref(),
                                    attempts.len(),
                                )
                                .await;
                        }
                        let latency = started.elapsed().as_millis() as u64;
                        return (attempts, failed(&error, billed, latency), Some(route));
                    }
                    tracing::info!(
                        request_id = %request.request_id,
                        target = %target.label(),
                        class = ?error.class(),
                        retry,
                        "attempt failed"
                    );
                    let wait = backoff(retry, error.retry_after.as_deref());
                    last_error = Some(error);
                    let retry_here = retry < shared.limits.retries_per_target
                        && !probe
                        && wait <= shared.limits.max_backoff
                        && Instant::now() + wait < deadline;
                    if !retry_here {
                        continue 'targets;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => break 'targets,
                    }
                }
            }
        }
    }
    if !skipped.is_empty() {
        route.reason = format!("{}; skipped {}", route.reason, skipped.join(", "));
    }
    let error = match last_error {
        Some(e) if Instant::now() < deadline || e.class() == ErrorClass::Timeout => e,
        Some(_) => deadline_passed(),
        None if attempts.is_empty() && soonest_retry_ms.is_some() => UpstreamError::new(
            UpstreamErrorKind::NoHealthyProvider,
            format!(
                "every provider of `{}` is failing right now (circuit open); retry later",
                request.model
            ),
        )
        .retry_after(soonest_retry_ms.map(|ms| (ms / 1000 + 1).to_string())),
        None => deadline_passed(),
    };
    replier
        .error(
            error.status(),
            json_bytes(&error.body()),
            error.retry_after.as_deref(),
            attempts.len(),
        )
        .await;
    let latency = started.elapsed().as_millis() as u64;
    (
        attempts,
        failed(&error, Billed::nothing(), latency),
        Some(route),
    )
}

/// How long to wait before retrying the same target: the upstream's
/// `Retry-After` (seconds) when it gave one, else exponential from 100 ms.
fn backoff(retry: u32, retry_after: Option<&str>) -> Duration {
    if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<f64>().ok())
        && secs.is_finite()
        && secs >= 0.0
    {
        return Duration::from_secs_f64(secs.min(3600.0));
    }
    Duration::from_millis(100 * 2u64.pow(retry.min(6)))
}

fn deadline_passed() -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Timeout,
        "no provider answered within the request's deadline",
    )
}

/// A failed outcome, with what the provider may bill for it.
pub(crate) fn failed(error: &UpstreamError, billed: Billed, latency_ms: u64) -> Outcome {
    Outcome::Failed {
        status: error.status(),
        error_type: error.error_type().to_string(),
        message: error.message.clone(),
        usage: billed.usage,
        usage_estimated: billed.estimated,
        cost_micros: billed.cost_micros,
        price_fallback: billed.price_fallback,
        latency_ms,
        at: Utc::now(),
    }
}

pub(crate) fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn error_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Connect => "connect",
        ErrorClass::Timeout => "timeout",
        ErrorClass::RateLimited => "rate_limited",
        ErrorClass::Upstream => "upstream",
        ErrorClass::Client => "client",
        ErrorClass::StreamBroken => "stream_broken",
        ErrorClass::Cancelled => "cancelled",
    }
}

fn count_upstream(target: &Target, outcome: &'static str) {
    metrics::counter!(
        "aigw_upstream_requests_total",
        "provider" => target.provider.spec.name.clone(),
        "outcome" => outcome
    )
    .increment(1);
}
