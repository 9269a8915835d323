//! Handling one accepted request: call the provider, answer the caller, record
//! the request's events exactly once, then ack the JetStream message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_events::wire::{DispatchRequest, Endpoint};
use aigw_events::{
    Attempt, ErrorClass, META_ACTOR, META_REQUEST_ID, Outcome, RequestCommand, Route, Usage,
};
use aigw_runtime::Target;
use aigw_runtime::bodies::{self, BodyError};
use aigw_runtime::crypto::{self, Binding, CredentialField};
use aigw_runtime::store::metadata;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::adapter::{self, Answer, StreamItem};
use crate::candidates;
use crate::media;
use crate::openai::{self, UpstreamError, broken};
use crate::reply::Replier;
use crate::routing::Slot;
use aigw_events::provider::ProviderKind;
use aigw_runtime::estimate;
use aigw_runtime::health::Admission;
use aigw_runtime::limits::LeasedHold;
use aigw_runtime::worst_case::{self, TargetLimits};

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

    let cancel = CancellationToken::new();
    shared.inflight.insert(id, cancel.clone());
    let progress = keep_alive(&msg, shared.ack_wait);
    let replier = Replier::new(shared.client.clone(), request.reply_to.clone(), delivered);

    let (attempts, outcome, route) = if expired {
        let err = UpstreamError {
            class: ErrorClass::Timeout,
            upstream_status: None,
            status: 504,
            error_type: "server_error".into(),
            code: Some("expired_in_queue".into()),
            message: "the request waited too long for a dispatcher".into(),
            retry_after: None,
        };
        (vec![], failed(&err, Usage::default(), false, 0), None)
    } else if delivered >= shared.max_deliver {
        // Something kept killing the dispatchers working on this request:
        // give up on it rather than loop.
        let err = UpstreamError {
            class: ErrorClass::Upstream,
            upstream_status: None,
            status: 502,
            error_type: "upstream_error".into(),
            code: Some("delivery_limit".into()),
            message: "the request could not be completed".into(),
            retry_after: None,
        };
        replier
            .error(err.status, json_bytes(&err.body()), None, 0)
            .await;
        (vec![], failed(&err, Usage::default(), false, 0), None)
    } else if let Err(e) = body {
        let err = body_unavailable(id, &e);
        replier
            .error(err.status, json_bytes(&err.body()), None, 0)
            .await;
        (vec![], failed(&err, Usage::default(), false, 0), None)
    } else {
        run(&shared, &request, &replier, &cancel).await
    };

    let outcome = priced(&shared, &attempts, outcome);
    let (usage, cost) = match &outcome {
        Outcome::Completed {
            usage, cost_micros, ..
        }
        | Outcome::Failed {
            usage, cost_micros, ..
        } => (*usage, *cost_micros),
    };
    let recorded = record(&shared, &request, attempts, outcome, route).await;
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
    if let Err(e) = msg.ack().await {
        // The request is recorded; a redelivery will find it and only ack.
        tracing::warn!(request_id = %id, error = %e, "ack failed");
    }
}

/// A request whose stored body is gone (expired or deleted): recorded as
/// failed, not retried. Not a provider's fault, so no failover or breaker.
pub(crate) fn body_unavailable(id: uuid::Uuid, e: &BodyError) -> UpstreamError {
    tracing::error!(request_id = %id, error = %e, "the request body is gone");
    UpstreamError {
        class: ErrorClass::Client,
        upstream_status: None,
        status: 502,
        error_type: "server_error".into(),
        code: Some("body_unavailable".into()),
        message: "the request body could not be read (it expired or was deleted before a dispatcher ran the request)".into(),
        retry_after: None,
    }
}

/// Sets the outcome's cost from the price in force for the model that
/// served it (or failed last). `None` flags a model without a price.
pub(crate) fn priced(shared: &Shared, attempts: &[Attempt], mut outcome: Outcome) -> Outcome {
    let (usage, cost) = match &mut outcome {
        Outcome::Completed {
            usage, cost_micros, ..
        }
        | Outcome::Failed {
            usage, cost_micros, ..
        } => (*usage, cost_micros),
    };
    *cost = if usage.is_empty() {
        Some(0)
    } else {
        attempts.last().and_then(|a| {
            shared
                .registry
                .provider(&a.provider_id.to_string())
                .and_then(|p| {
                    p.spec
                        .price(&a.model)
                        .and_then(|price| {
                            let cost = price.cost_micros(&usage);
                            if cost.is_none() {
                                tracing::error!(model = %a.model, "the cost does not fit in micro-dollars; flagged as unpriced");
                            }
                            cost
                        })
                })
        })
    };
    outcome
}

/// Usage and cost of an already recorded request, from its stored outcome.
pub(crate) async fn recorded_usage(shared: &Shared, id: &str) -> Option<(Usage, Option<i64>)> {
    let events = shared.stores.request_events(id).await.ok()?;
    events.into_iter().rev().find_map(|event| match event {
        aigw_events::RequestEvent::RequestCompleted {
            usage, cost_micros, ..
        }
        | aigw_events::RequestEvent::RequestFailed {
            usage, cost_micros, ..
        } => Some((usage, cost_micros)),
        _ => None,
    })
}

/// Settles the request's budget hold to its actual cost (idempotent) and
/// corrects the key's token bucket from the estimate to the actual usage.
pub(crate) async fn settle(
    shared: &Shared,
    request: &DispatchRequest,
    usage: Usage,
    cost: Option<i64>,
    correct_rate: bool,
) {
    let now_ms = Utc::now().timestamp_millis();
    if let Some(r) = &request.reservation {
        let mut delay = Duration::from_millis(20);
        for _ in 0..6 {
            match shared
                .limiter
                .settle(
                    request.key_id,
                    &r.period,
                    request.request_id,
                    LeasedHold::of(r),
                    cost.unwrap_or(0),
                    i64::try_from(usage.total()).unwrap_or(i64::MAX),
                    now_ms,
                )
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(request_id = %request.request_id, error = %e, "settling the budget failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
    if correct_rate
        && let Some(estimate) = request.rate_tokens
        && let Err(e) = shared
            .limiter
            .correct_tokens(request.key_id, estimate, usage.total())
            .await
    {
        tracing::warn!(request_id = %request.request_id, error = %e, "correcting the token rate failed");
    }
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
            let err = UpstreamError {
                class: ErrorClass::Client,
                upstream_status: None,
                status: 404,
                error_type: "invalid_request_error".into(),
                code: Some("model_not_found".into()),
                message: e.to_string(),
                retry_after: None,
            };
            replier.error(404, json_bytes(&err.body()), None, 0).await;
            return (vec![], failed(&err, Usage::default(), false, 0), None);
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
                    err.status,
                    json_bytes(&err.body()),
                    err.retry_after.as_deref(),
                    0,
                )
                .await;
            return (vec![], failed(&err, Usage::default(), false, 0), None);
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
            let credential = choose_credential(shared, target).await;
            let result = tokio::select! {
                r = attempt(shared, request, target, credential, replier, cancel, attempts.len() + 1) => r,
                _ = tokio::time::sleep_until(deadline.into()) => AttemptResult::Failed {
                    error: deadline_passed(),
                    usage: Usage::default(),
                    estimated: false,
                    started_stream: false,
                },
            };
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
            match result {
                AttemptResult::Done {
                    usage,
                    estimated,
                    status,
                } => {
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
                        usage,
                        usage_estimated: estimated,
                        cost_micros: None,
                        latency_ms: started.elapsed().as_millis() as u64,
                        at: Utc::now(),
                    };
                    return (attempts, outcome, Some(route));
                }
                AttemptResult::Failed {
                    error,
                    usage,
                    estimated,
                    started_stream,
                } => {
                    record.status = error.upstream_status;
                    record.error = Some(error.class);
                    attempts.push(record);
                    count_upstream(target, error_label(error.class));
                    if error.class.is_retryable() {
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
                    if started_stream || !error.class.is_retryable() {
                        // Bytes already reached the caller, or the caller's
                        // own request is at fault: no other target helps.
                        if !started_stream {
                            replier
                                .error(
                                    error.status,
                                    json_bytes(&error.body()),
                                    error.retry_after.as_deref(),
                                    attempts.len(),
                                )
                                .await;
                        }
                        let latency = started.elapsed().as_millis() as u64;
                        return (
                            attempts,
                            failed(&error, usage, estimated, latency),
                            Some(route),
                        );
                    }
                    tracing::info!(
                        request_id = %request.request_id,
                        target = %target.label(),
                        class = ?error.class,
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
        Some(e) if Instant::now() < deadline || e.class == ErrorClass::Timeout => e,
        Some(_) => deadline_passed(),
        None if attempts.is_empty() && soonest_retry_ms.is_some() => UpstreamError {
            class: ErrorClass::Upstream,
            upstream_status: None,
            status: 503,
            error_type: "server_error".into(),
            code: Some("no_healthy_provider".into()),
            message: format!(
                "every provider of `{}` is failing right now (circuit open); retry later",
                request.model
            ),
            retry_after: soonest_retry_ms.map(|ms| (ms / 1000 + 1).to_string()),
        },
        None => deadline_passed(),
    };
    replier
        .error(
            error.status,
            json_bytes(&error.body()),
            error.retry_after.as_deref(),
            attempts.len(),
        )
        .await;
    let latency = started.elapsed().as_millis() as u64;
    (
        attempts,
        failed(&error, Usage::default(), false, latency),
        Some(route),
    )
}

/// The health key of a provider's `n`th credential.
pub fn credential_key(n: usize) -> String {
    format!("#credential{n}")
}

/// The next credential in turn whose own breaker is not open (any, if all are).
async fn choose_credential(shared: &Shared, target: &Target) -> usize {
    let count = target.provider.spec.credentials().len();
    if count <= 1 {
        return 0;
    }
    let now_ms = Utc::now().timestamp_millis();
    let first = shared.router.next_credential(target.provider.id, count);
    let mut turn = first;
    for _ in 0..count {
        match shared
            .health
            .admit(target.provider.id, &credential_key(turn), now_ms)
            .await
        {
            Admission::Open { .. } => {
                turn = shared.router.next_credential(target.provider.id, count);
            }
            Admission::Closed | Admission::Probe => return turn,
        }
    }
    first
}

/// A credential refused (401/403) or exhausted (429) trips its own breaker,
/// so one bad key does not take the provider down.
async fn credential_health(
    shared: &Shared,
    target: &Target,
    credential: usize,
    result: &AttemptResult,
    now_ms: i64,
) {
    if target.provider.spec.credentials().len() <= 1 {
        return;
    }
    let key = credential_key(credential);
    match result {
        AttemptResult::Done { .. } => {
            shared
                .health
                .success(target.provider.id, &key, now_ms)
                .await
        }
        AttemptResult::Failed { error, .. }
            if error.class == ErrorClass::RateLimited
                || matches!(error.upstream_status, Some(401 | 403)) =>
        {
            shared
                .health
                .failure(target.provider.id, &key, &error.message, false, now_ms)
                .await
        }
        AttemptResult::Failed { .. } => {}
    }
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
    UpstreamError {
        class: ErrorClass::Timeout,
        upstream_status: None,
        status: 504,
        error_type: "upstream_timeout".into(),
        code: Some("upstream_timeout".into()),
        message: "no provider answered within the request's deadline".into(),
        retry_after: None,
    }
}

enum AttemptResult {
    Done {
        usage: Usage,
        estimated: bool,
        status: u16,
    },
    Failed {
        error: UpstreamError,
        /// Tokens the provider may bill even though the request failed.
        usage: Usage,
        estimated: bool,
        /// Whether bytes already reached the caller (no failover then).
        started_stream: bool,
    },
}

async fn attempt(
    shared: &Shared,
    request: &DispatchRequest,
    target: &Target,
    credential: usize,
    replier: &Replier,
    cancel: &CancellationToken,
    attempt_no: usize,
) -> AttemptResult {
    let provider = &target.provider.spec;
    let id = target.provider.id;
    let sealed = [
        provider
            .credentials()
            .get(credential)
            .map(|s| (*s, crypto::credential_field(provider, credential))),
        provider
            .sealed_session_token
            .as_deref()
            .map(|s| (s, CredentialField::SessionToken)),
    ];
    let opened = sealed.map(|s| {
        s.map(|(s, field)| shared.sealer.open(s, &Binding::new(id, field)))
            .transpose()
    });
    let [api_key, session_token] = match opened {
        [Ok(k), Ok(t)] => [k, t],
        [Err(e), _] | [_, Err(e)] => {
            tracing::error!(provider = %provider.name, error = %e, "cannot open the provider credential");
            return AttemptResult::Failed {
                error: UpstreamError {
                    class: ErrorClass::Upstream,
                    upstream_status: None,
                    status: 502,
                    error_type: "upstream_error".into(),
                    code: Some("provider_credential_unavailable".into()),
                    message: format!("provider {} is misconfigured", provider.name),
                    retry_after: None,
                },
                usage: Usage::default(),
                estimated: false,
                started_stream: false,
            };
        }
    };
    let body = upstream_body(request, &target.model, output_cap_for(request, target));
    let call = async {
        match request.endpoint {
            Endpoint::Chat => {
                let credentials = adapter::Credentials {
                    api_key: api_key.as_ref(),
                    session_token: session_token.as_ref(),
                };
                adapter::chat_with(&shared.http, provider, credentials, &body, request.stream).await
            }
            Endpoint::Embeddings => {
                adapter::embeddings(&shared.http, provider, api_key.as_ref(), &body).await
            }
            Endpoint::Images => {
                media::images(
                    &shared.http,
                    &shared.egress,
                    provider,
                    api_key.as_ref(),
                    &body,
                )
                .await
            }
            Endpoint::Speech => {
                media::speech(&shared.http, provider, api_key.as_ref(), &body).await
            }
            Endpoint::Transcriptions => match upload(shared, request).await {
                Ok(audio) => {
                    media::transcriptions(&shared.http, provider, api_key.as_ref(), &body, audio)
                        .await
                }
                Err(e) => Err(e),
            },
        }
    };
    tokio::pin!(call);
    let mut caller_left = false;
    let answer = tokio::select! {
        a = &mut call => a,
        _ = cancel.cancelled() => {
            caller_left = true;
            if runs_to_completion(request, provider.kind) {
                // The caller left (or cancelled the job), but the provider
                // works, and bills, all the same: let the call end (the
                // request's deadline still applies) so what it used is
                // known and billed.
                call.await
            } else {
                Err(cancelled())
            }
        }
    };
    if caller_left {
        let (usage, estimated) = match answer {
            Ok(Answer::Full { body, usage }) => match candidates::plausible(usage) {
                Some(u) => (u, false),
                None => (estimate_from_body(request, &body), true),
            },
            Ok(Answer::Media { usage, .. }) => (usage, false),
            Ok(Answer::Stream(_)) | Err(_) => (Usage::default(), false),
        };
        return AttemptResult::Failed {
            error: cancelled(),
            usage,
            estimated,
            started_stream: false,
        };
    }
    match answer {
        Err(error) => AttemptResult::Failed {
            error,
            usage: Usage::default(),
            estimated: false,
            started_stream: false,
        },
        Ok(Answer::Full { body, usage }) => {
            let (usage, estimated) = match candidates::plausible(usage) {
                Some(u) => (u, false),
                None => (estimate_from_body(request, &body), true),
            };
            replier
                .response(200, &provider.name, attempt_no, None, body)
                .await;
            AttemptResult::Done {
                usage,
                estimated,
                status: 200,
            }
        }
        Ok(Answer::Media {
            body,
            content_type,
            usage,
        }) => {
            let content_type = (content_type != "application/json").then_some(content_type);
            replier
                .response(
                    200,
                    &provider.name,
                    attempt_no,
                    content_type.as_deref(),
                    body,
                )
                .await;
            AttemptResult::Done {
                usage,
                estimated: false,
                status: 200,
            }
        }
        Ok(Answer::Stream(items)) => {
            replier.start(&provider.name, attempt_no).await;
            relay_stream(request, &provider.name, items, replier, cancel).await
        }
    }
}

/// Whether a call is let run to its end when the caller goes away: every
/// non-streamed call, except those of providers aigw cancels upstream
/// (polled predictions and tasks), which then produce, and bill, nothing
/// more. A stream stops, and bills what was relayed (see `relay_stream`).
fn runs_to_completion(request: &DispatchRequest, kind: ProviderKind) -> bool {
    !request.stream
        && !matches!(
            kind,
            ProviderKind::Replicate | ProviderKind::Runway | ProviderKind::Assemblyai
        )
}

/// The uploaded audio of a transcription request.
async fn upload(shared: &Shared, request: &DispatchRequest) -> Result<Bytes, UpstreamError> {
    use tokio::io::AsyncReadExt;
    let lost = |e: String| {
        tracing::error!(request_id = %request.request_id, error = %e, "reading the upload");
        // Not a provider's fault and no other provider would do better: a
        // non-retryable class, so no failover and no breaker trips.
        UpstreamError {
            class: ErrorClass::Client,
            upstream_status: None,
            status: 502,
            error_type: "server_error".into(),
            code: Some("upload_unavailable".into()),
            message: "the uploaded file could not be read".into(),
            retry_after: None,
        }
    };
    let mut object = shared
        .media
        .get(request.request_id.to_string().as_str())
        .await
        .map_err(|e| lost(e.to_string()))?;
    let mut audio = Vec::new();
    object
        .read_to_end(&mut audio)
        .await
        .map_err(|e| lost(e.to_string()))?;
    Ok(Bytes::from(audio))
}

/// Relays an upstream SSE stream frame by frame, watching for usage.
async fn relay_stream(
    request: &DispatchRequest,
    provider: &str,
    mut items: futures::stream::BoxStream<'static, StreamItem>,
    replier: &Replier,
    cancel: &CancellationToken,
) -> AttemptResult {
    let mut usage: Option<Usage> = None;
    let mut completion_text = 0u64;
    let mut end: Result<(), UpstreamError> = Err(broken(provider, "the stream ended early"));
    loop {
        let next = tokio::select! {
            n = items.next() => n,
            _ = cancel.cancelled() => { end = Err(cancelled()); break; }
        };
        let data = match next {
            None => break,
            Some(StreamItem::Error(e)) => {
                end = Err(e);
                break;
            }
            Some(StreamItem::Done) => {
                end = Ok(());
                break;
            }
            Some(StreamItem::Data(data)) => data,
        };
        let data = data.trim();
        if data.is_empty() {
            continue;
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            tracing::debug!(provider, "skipping a non-JSON SSE event");
            continue;
        };
        if let Some(err) = chunk.get("error").filter(|e| e.is_object()) {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("stream error");
            end = Err(broken(provider, message));
            break;
        }
        completion_text += chunk_text_tokens(&chunk);
        let chunk_usage = chunk
            .get("usage")
            .filter(|u| !u.is_null())
            .and_then(openai::parse_usage)
            .filter(Usage::is_plausible);
        let has_choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        let forward = match chunk_usage {
            None => Some(Bytes::copy_from_slice(data.as_bytes())),
            Some(u) => {
                usage = Some(u);
                if request.include_usage {
                    Some(Bytes::copy_from_slice(data.as_bytes()))
                } else if has_choices {
                    // Usage rode on a content chunk: pass the content on, not
                    // the usage the caller did not ask for.
                    if let Some(obj) = chunk.as_object_mut() {
                        obj.remove("usage");
                    }
                    Some(json_bytes(&chunk))
                } else {
                    None
                }
            }
        };
        if let Some(bytes) = forward {
            replier.chunk(bytes).await;
        }
    }
    let (usage, estimated) = match usage {
        Some(u) => (u, false),
        None => (
            Usage {
                prompt_tokens: estimate::prompt_tokens(&request.body),
                completion_tokens: completion_text,
                ..Default::default()
            },
            true,
        ),
    };
    match end {
        Ok(()) => {
            replier.end().await;
            AttemptResult::Done {
                usage,
                estimated,
                status: 200,
            }
        }
        Err(error) => {
            if error.class != ErrorClass::Cancelled {
                replier
                    .error(error.status, json_bytes(&error.body()), None, 0)
                    .await;
            }
            AttemptResult::Failed {
                error,
                usage,
                estimated,
                started_stream: true,
            }
        }
    }
}

fn chunk_text_tokens(chunk: &Value) -> u64 {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .filter_map(|c| c.get("delta"))
                .map(|d| {
                    let content = d.get("content").and_then(Value::as_str).unwrap_or("");
                    let args: String = d
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .map(|calls| {
                            calls
                                .iter()
                                .filter_map(|c| c.pointer("/function/arguments"))
                                .filter_map(Value::as_str)
                                .collect()
                        })
                        .unwrap_or_default();
                    estimate::text_tokens(content) + estimate::text_tokens(&args)
                })
                .sum()
        })
        .unwrap_or(0)
}

fn estimate_from_body(request: &DispatchRequest, body: &Bytes) -> Usage {
    let completion = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .map(estimate::text_tokens)
        })
        .unwrap_or(0);
    Usage {
        prompt_tokens: estimate::prompt_tokens(&request.body),
        completion_tokens: completion,
        ..Default::default()
    }
}

/// The output cap a budgeted chat request must carry to `target` (the
/// field and its value), when its hold assumed one that nothing else
/// enforces (see `worst_case::injected_output_cap`).
pub fn output_cap_for(request: &DispatchRequest, target: &Target) -> Option<(&'static str, u64)> {
    if request.reservation.is_none() || request.endpoint != Endpoint::Chat {
        return None;
    }
    let spec = &target.provider.spec;
    let limits = TargetLimits::of(spec, &target.model);
    let cap = worst_case::injected_output_cap(&request.body, &limits)?;
    // OpenAI's reasoning models refuse `max_tokens`; other OpenAI-compatible
    // servers may not know `max_completion_tokens` (the native adapters
    // read either).
    let openai = spec.kind == ProviderKind::Azure || spec.preset.as_deref() == Some("openai");
    let field = if openai {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    Some((field, cap))
}

/// The body sent upstream: the caller's, with the provider's model id and
/// the output cap the budget hold assumed (if any), and always asking for
/// usage on streams (so billing uses the provider's count).
pub fn upstream_body(
    request: &DispatchRequest,
    model: &str,
    output_cap: Option<(&'static str, u64)>,
) -> Value {
    let mut body = request.body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_string()));
        if let Some((field, cap)) = output_cap {
            obj.insert(field.into(), Value::from(cap));
        }
        if request.stream {
            let options = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            } else {
                *options = serde_json::json!({"include_usage": true});
            }
        }
    }
    body
}

fn cancelled() -> UpstreamError {
    UpstreamError {
        class: ErrorClass::Cancelled,
        upstream_status: None,
        status: 499,
        error_type: "client_closed_request".into(),
        code: Some("client_closed_request".into()),
        message: "the caller went away".into(),
        retry_after: None,
    }
}

pub(crate) fn failed(
    error: &UpstreamError,
    usage: Usage,
    estimated: bool,
    latency_ms: u64,
) -> Outcome {
    Outcome::Failed {
        status: error.status,
        error_type: error.error_type.clone(),
        message: error.message.clone(),
        usage,
        usage_estimated: estimated,
        cost_micros: None,
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

/// The command recording a request's whole story.
pub(crate) fn request_command(
    request: &DispatchRequest,
    attempts: Vec<Attempt>,
    outcome: Outcome,
    route: Option<Route>,
) -> RequestCommand {
    RequestCommand::RecordRequest {
        key_id: request.key_id,
        model: request.model.clone(),
        stream: request.stream,
        accepted_at: request.accepted_at,
        route,
        attempts,
        outcome,
    }
}

/// What became of recording a request's story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// This delivery's story is stored.
    Stored,
    /// Another delivery's story was stored first; this one was refused.
    Before,
    /// The database could not be reached; nothing was stored.
    Failed,
}

/// Stores the request's story, retrying on database trouble; a second
/// recording of the same request is refused as a whole (one outcome per
/// request, however many deliveries run at once).
async fn record(
    shared: &Shared,
    request: &DispatchRequest,
    attempts: Vec<Attempt>,
    outcome: Outcome,
    route: Option<Route>,
) -> Recorded {
    let id = request.request_id.to_string();
    let meta = metadata(&[(META_REQUEST_ID, &id), (META_ACTOR, "dispatcher")]);
    let command = request_command(request, attempts, outcome, route);
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        match shared
            .stores
            .record_request(&id, command.clone(), &meta)
            .await
        {
            Ok(true) => {
                metrics::counter!("aigw_requests_recorded_total").increment(1);
                return Recorded::Stored;
            }
            Ok(false) => {
                tracing::info!(request_id = %id, "request was already recorded");
                return Recorded::Before;
            }
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "recording failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(request_id = %id, "could not record the request; it stays unacked for redelivery");
    Recorded::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn request(body: Value, stream: bool) -> DispatchRequest {
        DispatchRequest {
            request_id: Uuid::nil(),
            key_id: Uuid::nil(),
            reply_to: "r".into(),
            accepted_at: Utc::now(),
            model: "alias".into(),
            stream,
            include_usage: false,
            provider: None,
            deadline: None,
            reservation: None,
            rate_tokens: None,
            endpoint: Endpoint::Chat,
            body,
            scopes: None,
            body_object: None,
        }
    }

    #[test]
    fn streams_always_ask_for_usage() {
        let r = request(
            json!({"model":"alias","messages":[],"stream":true,"seed":7}),
            true,
        );
        let body = upstream_body(&r, "real-model", None);
        assert_eq!(body["model"], "real-model");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["seed"], 7);
        let r = request(
            json!({"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}),
            true,
        );
        let body = upstream_body(&r, "m", None);
        assert_eq!(
            body["stream_options"],
            json!({"include_usage": true, "x": 1})
        );
        let r = request(json!({"model":"m"}), false);
        assert!(upstream_body(&r, "m", None).get("stream_options").is_none());
    }

    fn target(preset: Option<&str>, kind: ProviderKind, model: &str) -> Target {
        use aigw_events::provider::ProviderSpec;
        Target {
            provider: std::sync::Arc::new(aigw_runtime::ProviderEntry {
                id: Uuid::nil(),
                spec: ProviderSpec {
                    name: "p".into(),
                    kind,
                    preset: preset.map(str::to_string),
                    models: vec![model.into()],
                    ..ProviderSpec::default()
                },
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            model: model.into(),
            weight: 1,
        }
    }

    #[test]
    fn a_budgeted_request_without_a_cap_carries_the_cap_its_hold_assumed() {
        let mut r = request(json!({"model":"m","messages":[]}), false);
        let custom = target(None, ProviderKind::OpenaiCompatible, "m");
        // No hold: nothing to enforce.
        assert_eq!(output_cap_for(&r, &custom), None);
        r.reservation = Some(aigw_events::wire::Reservation {
            period: "total".into(),
            micros: 1,
            tokens: 1,
            lease: None,
        });
        let cap = worst_case::DEFAULT_OUTPUT_CAP;
        assert_eq!(output_cap_for(&r, &custom), Some(("max_tokens", cap)));
        let body = upstream_body(&r, "m", output_cap_for(&r, &custom));
        assert_eq!(body["max_tokens"], cap);
        // A model whose maximum output the catalog knows is bounded by it.
        let known = target(Some("openai"), ProviderKind::OpenaiCompatible, "gpt-5.4");
        assert_eq!(output_cap_for(&r, &known), None);
        // An unknown model at OpenAI gets the field its reasoning models take.
        let openai = target(Some("openai"), ProviderKind::OpenaiCompatible, "gpt-x");
        assert_eq!(
            output_cap_for(&r, &openai),
            Some(("max_completion_tokens", cap))
        );
        // The caller's own cap is never replaced.
        let mut capped = r.clone();
        capped.body = json!({"model":"m","messages":[],"max_tokens":5});
        assert_eq!(output_cap_for(&capped, &custom), None);
    }

    #[test]
    fn counts_tool_call_arguments() {
        let chunk = json!({"choices":[{"delta":{"content":"abcd","tool_calls":[{"function":{"arguments":"abcdefgh"}}]}}]});
        assert_eq!(chunk_text_tokens(&chunk), 3);
    }
}
