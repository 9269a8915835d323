//! Admission: what a key may do, checked before a request is queued.
//!
//! Scopes (403), expiry (401), output caps (400), rate limits (429
//! `rate_limit_exceeded`), budgets (429 `insufficient_quota`) and, for
//! synchronous requests, the key's concurrency limit (429
//! `concurrency_limit_exceeded`). Rate, budget and concurrency state is
//! shared by every replica through the limits bucket (see
//! `aigw_runtime::limits`); a budget is held at the request's worst-case
//! cost (`aigw_runtime::worst_case`) at the dearest target the key may use,
//! and settled by the dispatcher to the actual cost, which can never be
//! more (the dispatcher only uses targets whose worst case fits the hold).

use aigw_events::wire::{Endpoint, LeaseRef, Reservation};
use aigw_runtime::limits::{Budget, BudgetRefusal, Hold, LeasedHold, RateDecision, Slot};
use aigw_runtime::worst_case::{self, TargetLimits};
use aigw_runtime::{KeyEntry, Target, estimate};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// Requests refused by their key's `max_concurrency`.
pub(crate) const CONCURRENCY_REFUSED: &str = "aigw_concurrency_refused_total";

/// `x-ratelimit-*` headers, as OpenAI sends them.
#[derive(Debug, Clone, Default)]
pub struct RateHeaders(Vec<(HeaderName, HeaderValue)>);

impl RateHeaders {
    fn from_decision(d: &RateDecision) -> Self {
        let mut out = Vec::new();
        let mut push = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                out.push((HeaderName::from_static(name), v));
            }
        };
        if let Some(limit) = d.limit_requests {
            push("x-ratelimit-limit-requests", limit.to_string());
            push(
                "x-ratelimit-remaining-requests",
                d.remaining_requests.to_string(),
            );
            push(
                "x-ratelimit-reset-requests",
                duration_text(d.reset_requests_ms),
            );
        }
        if let Some(limit) = d.limit_tokens {
            push("x-ratelimit-limit-tokens", limit.to_string());
            push(
                "x-ratelimit-remaining-tokens",
                d.remaining_tokens.to_string(),
            );
            push("x-ratelimit-reset-tokens", duration_text(d.reset_tokens_ms));
        }
        Self(out)
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Durations the way OpenAI writes them: `12ms`, `1.5s`, `6m0s`.
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let text = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Records how long an admission took, however it ends, in
/// `aigw_admission_seconds` (by whether the key has limits).
struct Timed {
    started: std::time::Instant,
    limited: bool,
}

impl Drop for Timed {
    fn drop(&mut self) {
        let limited = if self.limited { "yes" } else { "no" };
        metrics::histogram!("aigw_admission_seconds", "limited" => limited)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// What a budget hold came to: taken (from a lease, or not), or refused.
type HoldOutcome = aigw_runtime::Result<Result<Option<LeaseRef>, BudgetRefusal>>;

/// What admission decided for an accepted request.
#[derive(Debug, Default)]
pub struct Admitted {
    pub headers: RateHeaders,
    pub reservation: Option<Reservation>,
    pub rate_tokens: Option<u64>,
    /// The key's concurrency slot (keys with `max_concurrency`), held until
    /// this is dropped: once the answer has been relayed.
    pub slot: Option<Slot>,
}

/// Checks scopes, rate limits and budgets; takes the rate tokens and the
/// budget hold of an admitted synchronous request, and its concurrency slot.
pub async fn admit(
    state: &AppState,
    key: &KeyEntry,
    model: &str,
    endpoint: Endpoint,
    body: &Value,
    targets: &[Target],
    request_id: Uuid,
) -> Result<Admitted, ApiError> {
    let slot = take_slot(state, key, request_id).await?;
    let mut admitted = admit_for(
        state,
        key,
        model,
        endpoint,
        body,
        targets,
        request_id,
        state.request_timeout,
    )
    .await?;
    admitted.slot = slot;
    Ok(admitted)
}

/// Takes one of the key's `max_concurrency` slots (none for a key without
/// one); 429 `concurrency_limit_exceeded` when every slot is taken. Taken
/// before the rate limits and budget, so a refused request costs neither.
async fn take_slot(
    state: &AppState,
    key: &KeyEntry,
    request_id: Uuid,
) -> Result<Option<Slot>, ApiError> {
    let Some(max) = key.state.settings.limits.max_concurrency else {
        return Ok(None);
    };
    match state.limiter.acquire_slot(key.id, request_id, max).await {
        Ok(Some(slot)) => Ok(Some(slot)),
        Ok(None) => {
            metrics::counter!(CONCURRENCY_REFUSED).increment(1);
            Err(ApiError::ConcurrencyLimited(max))
        }
        Err(e) => Err(ApiError::Unavailable(format!("concurrency state: {e}"))),
    }
}

/// [`admit`], with a budget hold that lasts `hold_for` (plus a margin)
/// unless settled first: a synchronous call's timeout, or a job's queue time.
#[allow(clippy::too_many_arguments)]
pub async fn admit_for(
    state: &AppState,
    key: &KeyEntry,
    model: &str,
    endpoint: Endpoint,
    body: &Value,
    targets: &[Target],
    request_id: Uuid,
    hold_for: std::time::Duration,
) -> Result<Admitted, ApiError> {
    let settings = &key.state.settings;
    let limits = &settings.limits;
    let _timed = Timed {
        started: std::time::Instant::now(),
        limited: limits.rpm.is_some()
            || limits.tpm.is_some()
            || limits.budget_micros.is_some()
            || limits.budget_tokens.is_some(),
    };
    let allowed = allowed_targets(settings, model, targets)?;
    check_output(endpoint, body, &allowed)?;

    let mut admitted = Admitted::default();
    let now = Utc::now();
    let now_ms = now.timestamp_millis();

    // What the rate limits take: one request and the estimated tokens.
    let rate = (limits.rpm.is_some() || limits.tpm.is_some()).then(|| {
        estimate::prompt_tokens(body).saturating_add(estimate::max_output_tokens(body, 0))
    });
    // What the budget holds: the worst case at the dearest target it could go
    // to; an unpriced model holds nothing (its usage is flagged, not billed).
    let budget = match limits.budget_micros.is_some() || limits.budget_tokens.is_some() {
        false => None,
        true => {
            let (period, micros, tokens) = key.state.budgets_at(now);
            let (hold_micros, hold_tokens) = worst_case_hold(endpoint, body, &allowed)?;
            let expires = now
                + chrono::Duration::from_std(hold_for).unwrap_or_default()
                + chrono::Duration::minutes(5);
            let hold = Hold {
                micros: hold_micros,
                tokens: hold_tokens,
                expires_ms: expires.timestamp_millis(),
            };
            Some((
                Budget {
                    period,
                    micros,
                    tokens,
                },
                hold,
            ))
        }
    };

    // The rate take and the budget hold go to NATS at the same time (one
    // round trip instead of two). A request the rate limits refuse gives its
    // hold back; a request the budget refuses keeps its rate take, as it
    // would have had the two run one after the other.
    let take_rate = async {
        match rate {
            Some(tokens) => Some(
                state
                    .limiter
                    .admit_rate(key.id, limits.rpm, limits.tpm, tokens, now_ms)
                    .await,
            ),
            None => None,
        }
    };
    let hold_budget = async {
        match &budget {
            Some((budget, hold)) => Some(
                state
                    .limiter
                    .reserve(key.id, budget, request_id, *hold, now_ms)
                    .await,
            ),
            None => None,
        }
    };
    let (rate_outcome, budget_outcome) = tokio::join!(take_rate, hold_budget);
    let give_back = |budget_outcome: &Option<HoldOutcome>| {
        if let (Some(Ok(Ok(lease))), Some((budget, hold))) = (budget_outcome, &budget) {
            let leased = lease.map(|from| LeasedHold {
                from,
                micros: hold.micros,
                tokens: hold.tokens,
            });
            let (limiter, key_id, period) = (state.limiter.clone(), key.id, budget.period.clone());
            tokio::spawn(async move {
                if let Err(e) = limiter.release(key_id, &period, request_id, leased).await {
                    tracing::warn!(%request_id, error = %e, "releasing the budget hold of a rate-limited request failed (it expires on its own)");
                }
            });
        }
    };

    if let (Some(decision), Some(tokens)) = (rate_outcome, rate) {
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                give_back(&budget_outcome);
                return Err(ApiError::Unavailable(format!("rate limit state: {e}")));
            }
        };
        admitted.headers = RateHeaders::from_decision(&decision);
        if !decision.allowed {
            give_back(&budget_outcome);
            return Err(ApiError::RateLimited {
                retry_after: decision.retry_after_secs,
                headers: admitted.headers,
            });
        }
        admitted.rate_tokens = limits.tpm.map(|_| tokens);
    }

    if let (Some(outcome), Some((budget, hold))) = (budget_outcome, budget) {
        let outcome = outcome.map_err(|e| ApiError::Unavailable(format!("budget state: {e}")))?;
        let lease = match outcome {
            Ok(lease) => lease,
            Err(refusal) => return Err(ApiError::InsufficientQuota {
                message: match refusal {
                    BudgetRefusal::Spend => "This key's spend budget is exhausted for this period; an admin can top it up.",
                    BudgetRefusal::Tokens => "This key's token budget is exhausted for this period; an admin can top it up.",
                }
                .into(),
                headers: admitted.headers,
            }),
        };
        admitted.reservation = Some(Reservation {
            period: budget.period,
            micros: hold.micros,
            tokens: hold.tokens,
            lease,
        });
    }
    Ok(admitted)
}

/// The targets the key's scopes allow (the same rule the dispatcher applies
/// again to every target it routes or fails over to).
pub(crate) fn allowed_targets<'a>(
    settings: &aigw_events::key::KeySettings,
    model: &str,
    targets: &'a [Target],
) -> Result<Vec<&'a Target>, ApiError> {
    let scopes = &settings.scopes;
    let allowed: Vec<&Target> = targets
        .iter()
        .filter(|t| t.allowed_by(scopes, model))
        .collect();
    if !allowed.is_empty() {
        return Ok(allowed);
    }
    let model_ok = targets.iter().any(|t| t.model_allowed_by(scopes, model));
    Err(if model_ok {
        ApiError::Forbidden {
            message: "This key may not use the providers that serve this model.".into(),
            code: "provider_not_allowed",
        }
    } else {
        ApiError::Forbidden {
            message: format!("This key may not use the model `{model}`."),
            code: "model_not_allowed",
        }
    })
}

/// A chat request's output cap is at most what the model can produce (the
/// largest of its allowed targets' maximum output, as the catalog knows it).
fn check_output(endpoint: Endpoint, body: &Value, allowed: &[&Target]) -> Result<(), ApiError> {
    let Some(asked) = worst_case::requested_output(body) else {
        return Ok(());
    };
    if endpoint != Endpoint::Chat {
        return Ok(());
    }
    let ceiling = allowed
        .iter()
        .map(|t| TargetLimits::of(&t.provider.spec, &t.model).output_ceiling())
        .max()
        .unwrap_or(worst_case::MAX_OUTPUT_TOKENS);
    if asked <= ceiling {
        return Ok(());
    }
    let param = if body.get("max_completion_tokens").is_some_and(Value::is_u64) {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    Err(ApiError::BadRequest {
        message: format!(
            "'{param}' is too large: {asked}. This model supports at most {ceiling} output tokens."
        ),
        param: Some(param),
        code: None,
    })
}

/// The budget hold of a request: its worst-case cost and tokens at the
/// dearest of the targets it may go to (micro-dollars, tokens). A worst
/// case that does not fit the integers is refused, never wrapped.
fn worst_case_hold(
    endpoint: Endpoint,
    body: &Value,
    allowed: &[&Target],
) -> Result<(i64, i64), ApiError> {
    let too_large = || {
        ApiError::BadRequest {
        message: "This request's worst-case usage is too large to hold against a budget; lower 'max_tokens', 'n' or the size of the input.".into(),
        param: None,
        code: Some("request_too_large"),
    }
    };
    let mut held = (0i64, 0i64);
    for t in allowed {
        let limits = TargetLimits::of(&t.provider.spec, &t.model);
        let worst = worst_case::worst_usage(endpoint, body, &limits).map_err(|_| too_large())?;
        let micros = aigw_events::pricing::hold_micros(t.provider.spec.price(&t.model), &worst)
            .ok_or_else(too_large)?;
        let tokens = i64::try_from(worst.total()).map_err(|_| too_large())?;
        held = (held.0.max(micros), held.1.max(tokens));
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_like_openai() {
        assert_eq!(duration_text(12), "12ms");
        assert_eq!(duration_text(1500), "1.5s");
        assert_eq!(duration_text(2000), "2s");
        assert_eq!(duration_text(360_000), "6m0s");
    }
}
