//! A request's outcome: priced once, when its usage is known, with the
//! price of the target that served it; recorded exactly once (the events
//! go in one statement that expects none yet, so two deliveries that finish
//! at once store one outcome), and the budget hold settled to it
//! (idempotently, by request). A Responses answer to keep (`store` not
//! false) is stored in the same transaction as the outcome, so it is
//! stored exactly when the outcome is: once.
//!
//! [`Billed`] is the only place a request's cost is computed: the answer's
//! cost frame header, a stream's usage chunk and the outcome event all carry
//! the value it holds, so what a caller is shown is what is recorded.

use std::time::Duration;

use aigw_events::pricing::Cost;
use aigw_events::response::{self, ResponseCommand};
use aigw_events::wire::{self, DispatchRequest};
use aigw_events::{Attempt, META_ACTOR, META_REQUEST_ID, Outcome, RequestCommand, Route, Usage};
use aigw_runtime::Target;
use aigw_runtime::dialect::responses_in;
use aigw_runtime::store::metadata;
use chrono::Utc;
use serde_json::Value;

use crate::Shared;
use crate::spans;
use aigw_runtime::limits::{Owner, holds_of};
use aigw_runtime::traces;
use tracing::Instrument;

/// What a call consumed and what that costs, priced once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Billed {
    pub usage: Usage,
    /// The usage is aigw's estimate (the provider reported none).
    pub estimated: bool,
    /// Micro-dollars; `None` flags a model without a price (or a cost that
    /// does not fit in micro-dollars).
    pub cost_micros: Option<i64>,
    /// Some tokens were of a class the price has no rate for, billed at the
    /// fallback rate (`aigw_events::pricing::Cost::fallback`).
    pub price_fallback: bool,
}

impl Billed {
    /// Nothing used, nothing owed.
    pub(crate) fn nothing() -> Self {
        Self {
            usage: Usage::default(),
            estimated: false,
            cost_micros: Some(0),
            price_fallback: false,
        }
    }

    /// `usage` at `target`, priced with the target's price for its model:
    /// the price the request was routed with, whose worst case the
    /// dispatcher checked against the budget hold (`candidates::fits_hold`),
    /// so the cost never exceeds the hold even if an admin changes the price
    /// while the request runs. Empty usage costs nothing, priced or not.
    pub(crate) fn priced(target: &Target, usage: Usage, estimated: bool) -> Self {
        let cost = if usage.is_empty() {
            Some(Cost {
                micros: 0,
                fallback: false,
            })
        } else {
            target.provider.spec.price(&target.model).and_then(|price| {
                let cost = price.cost(&usage);
                if cost.is_none() {
                    tracing::error!(model = %target.model, "the cost does not fit in micro-dollars; flagged as unpriced");
                }
                cost
            })
        };
        Self {
            usage,
            estimated,
            cost_micros: cost.map(|c| c.micros),
            price_fallback: cost.is_some_and(|c| c.fallback),
        }
    }
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

/// Settles the request's budget holds (the key's and its project's and
/// team's) to its actual cost, each level once (idempotent, by request or
/// leased hold), and corrects each level's token bucket from the estimate
/// to the actual usage.
pub(crate) async fn settle(
    shared: &Shared,
    request: &DispatchRequest,
    usage: Usage,
    cost: Option<i64>,
    correct_rate: bool,
) {
    let now_ms = Utc::now().timestamp_millis();
    if let Some(r) = &request.reservation {
        let tokens = i64::try_from(usage.total()).unwrap_or(i64::MAX);
        let settles = holds_of(request.key_id, r).into_iter().map(|hold| async move {
            let mut delay = Duration::from_millis(20);
            for _ in 0..6 {
                match shared
                    .limiter
                    .settle(
                        hold.owner,
                        &hold.period,
                        request.request_id,
                        hold.leased,
                        cost.unwrap_or(0),
                        tokens,
                        now_ms,
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(request_id = %request.request_id, level = hold.owner.kind(), error = %e, "settling the budget failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
        futures::future::join_all(settles).await;
    }
    if correct_rate && let Some(estimate) = request.rate_tokens {
        let mut owners: Vec<Owner> = request
            .rate_levels
            .iter()
            .map(|l| Owner::Level(*l))
            .collect();
        if request.rate_on_key {
            owners.insert(0, Owner::Key(request.key_id));
        }
        for owner in owners {
            if let Err(e) = shared
                .limiter
                .correct_tokens(owner, estimate, usage.total())
                .await
            {
                tracing::warn!(request_id = %request.request_id, level = owner.kind(), error = %e, "correcting the token rate failed");
            }
        }
    }
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
        project_id: request.project_id,
        team_id: request.team_id,
        model: request.model.clone(),
        stream: request.stream,
        accepted_at: request.accepted_at,
        route,
        attempts,
        outcome,
        attribution: request.attribution.clone(),
    }
}

/// What became of recording a request's story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
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
pub(crate) async fn record(
    shared: &Shared,
    request: &DispatchRequest,
    attempts: Vec<Attempt>,
    outcome: Outcome,
    route: Option<Route>,
    rendered: Option<Value>,
) -> Recorded {
    let id = request.request_id.to_string();
    let meta = metadata(&[(META_REQUEST_ID, &id), (META_ACTOR, "dispatcher")]);
    let stored = stored_response(request, &outcome, rendered);
    let command = request_command(request, attempts, outcome, route);
    let span = spans::commit(&id);
    let recorded = store(shared, &id, command, stored.as_ref(), &meta)
        .instrument(span.clone())
        .await;
    if recorded == Recorded::Failed {
        traces::error(&span, "database");
    }
    recorded
}

/// The stored response a Responses request's answer makes (the response
/// id and its command): none unless the request is in the Responses
/// dialect, did not say `store: false`, completed, and its answer was
/// rendered whole; none either when it is over
/// [`response::MAX_STORED_BYTES`] (logged: the caller was answered, and a
/// later read or continuation of it is a 404).
pub(crate) fn stored_response(
    request: &DispatchRequest,
    outcome: &Outcome,
    rendered: Option<Value>,
) -> Option<(String, ResponseCommand)> {
    if request.dialect != wire::Dialect::OpenaiResponses
        || !matches!(outcome, Outcome::Completed { .. })
    {
        return None;
    }
    let native = request.native_body.as_ref()?;
    if native.get("store").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    let response = rendered?;
    let input = responses_in::input_items(native);
    if !response::fits(&input, &response) {
        tracing::warn!(request_id = %request.request_id, limit = response::MAX_STORED_BYTES,
            "the response is too large to store; it is not stored");
        metrics::counter!("aigw_responses_not_stored_total").increment(1);
        return None;
    }
    let command = ResponseCommand::StoreResponse {
        key_id: request.key_id,
        input,
        response,
        at: Utc::now(),
    };
    Some((response::response_id(request.request_id), command))
}

async fn store(
    shared: &Shared,
    id: &str,
    command: RequestCommand,
    response: Option<&(String, ResponseCommand)>,
    meta: &std::collections::HashMap<String, String>,
) -> Recorded {
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        let result = match response {
            None => {
                shared
                    .stores
                    .record_request(id, command.clone(), meta)
                    .await
            }
            Some((response_id, store)) => {
                shared
                    .stores
                    .record_request_and_response(
                        id,
                        command.clone(),
                        (response_id, store.clone()),
                        meta,
                    )
                    .await
            }
        };
        match result {
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
