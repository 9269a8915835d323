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
//!
//! A key in a project is limited by the project's and the team's limits
//! too (each level's own shared counters; refusals name the level) and may
//! only use what every level's scopes allow.

use aigw_events::key::KeyScopes;
use aigw_events::wire::{Endpoint, LeaseRef, Level, LevelHold, Reservation};
use aigw_runtime::limits::{Budget, BudgetRefusal, Hold, Owner, RateDecision, Slot};
use aigw_runtime::teams::Lineage;
use aigw_runtime::worst_case::{self, TargetLimits};
use aigw_runtime::{KeyEntry, Target, estimate};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::Utc;
use futures::future::join_all;
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

    /// The headers of the most limiting level: for requests and for
    /// tokens, the level with the fewest left.
    fn most_limiting(decisions: &[RateDecision]) -> Self {
        let requests = decisions
            .iter()
            .filter(|d| d.limit_requests.is_some())
            .min_by_key(|d| d.remaining_requests);
        let tokens = decisions
            .iter()
            .filter(|d| d.limit_tokens.is_some())
            .min_by_key(|d| d.remaining_tokens);
        let mut merged = RateDecision {
            allowed: true,
            retry_after_secs: 0,
            limit_requests: None,
            remaining_requests: 0,
            reset_requests_ms: 0,
            limit_tokens: None,
            remaining_tokens: 0,
            reset_tokens_ms: 0,
        };
        if let Some(d) = requests {
            merged.limit_requests = d.limit_requests;
            merged.remaining_requests = d.remaining_requests;
            merged.reset_requests_ms = d.reset_requests_ms;
        }
        if let Some(d) = tokens {
            merged.limit_tokens = d.limit_tokens;
            merged.remaining_tokens = d.remaining_tokens;
            merged.reset_tokens_ms = d.reset_tokens_ms;
        }
        Self::from_decision(&merged)
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

/// What admission decided for an accepted request.
#[derive(Debug, Default)]
pub struct Admitted {
    pub headers: RateHeaders,
    pub reservation: Option<Reservation>,
    pub rate_tokens: Option<u64>,
    /// Whether `rate_tokens` came from the key's own TPM bucket...
    pub rate_on_key: bool,
    /// ...and from which levels' above it.
    pub rate_levels: Vec<Level>,
    /// The key's effective scopes (its own within its project's and
    /// team's), which the dispatcher applies again to every target.
    pub scopes: KeyScopes,
    /// The key's project and team as of admission.
    pub project_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
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

/// The key's project and team; 403 when the registry does not know them
/// (the key is never admitted on its own limits alone).
pub fn lineage(state: &AppState, key: &KeyEntry) -> Result<Lineage, ApiError> {
    state.registry.lineage(key).map_err(|e| {
        tracing::warn!(key_id = %key.id, error = %e, "a key's project or team is unknown");
        ApiError::Forbidden {
            message: "This key's project or team no longer exists; ask an admin to move the key."
                .into(),
            code: "project_not_found",
        }
    })
}

/// One level's rate limits for a request (the key's, its project's, its team's).
struct RateLevel {
    owner: Owner,
    rpm: Option<u32>,
    tpm: Option<u64>,
}

/// [`admit`], with a budget hold that lasts `hold_for` (plus a margin)
/// unless settled first: a synchronous call's timeout, or a job's queue time.
///
/// Every level counts: the key's own limits and its project's and team's
/// (see `aigw_runtime::teams`), each on its own shared entry. Scopes are
/// the intersection of the levels'; the budget hold is taken at every level
/// with a budget, all or nothing (`Limiter::reserve_levels`).
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
    let lineage = lineage(state, key)?;
    let levels = lineage.levels();
    let now = Utc::now();
    let now_ms = now.timestamp_millis();

    // Rate limits and budgets of every level, key first.
    let limits = &settings.limits;
    let mut rates = Vec::new();
    let mut budgets: Vec<(Owner, Budget)> = Vec::new();
    if limits.rpm.is_some() || limits.tpm.is_some() {
        rates.push(RateLevel {
            owner: Owner::Key(key.id),
            rpm: limits.rpm,
            tpm: limits.tpm,
        });
    }
    if limits.budget_micros.is_some() || limits.budget_tokens.is_some() {
        let (period, micros, tokens) = key.state.budgets_at(now);
        budgets.push((
            Owner::Key(key.id),
            Budget {
                period,
                micros,
                tokens,
            },
        ));
    }
    for level in &levels {
        let l = &level.policy.limits;
        if l.rpm.is_some() || l.tpm.is_some() {
            rates.push(RateLevel {
                owner: Owner::Level(level.level),
                rpm: l.rpm,
                tpm: l.tpm,
            });
        }
        if l.budget_micros.is_some() || l.budget_tokens.is_some() {
            let (period, micros, tokens) = level.policy.budgets_at(now);
            budgets.push((
                Owner::Level(level.level),
                Budget {
                    period,
                    micros,
                    tokens,
                },
            ));
        }
    }
    let _timed = Timed {
        started: std::time::Instant::now(),
        limited: !rates.is_empty() || !budgets.is_empty(),
    };
    let scopes = lineage.scopes(key);
    let allowed = allowed_targets(&scopes, model, targets)?;
    check_output(endpoint, body, &allowed)?;

    let mut admitted = Admitted {
        scopes: scopes.clone(),
        project_id: lineage.project_id(),
        team_id: lineage.team_id(),
        ..Admitted::default()
    };

    // What the rate limits take: one request and the estimated tokens.
    let tokens = (!rates.is_empty()).then(|| {
        estimate::prompt_tokens(body).saturating_add(estimate::max_output_tokens(body, 0))
    });
    // What the budgets hold: the worst case at the dearest target it could
    // go to; an unpriced model holds nothing (its usage is flagged, not
    // billed).
    let hold = match budgets.is_empty() {
        true => None,
        false => {
            let (hold_micros, hold_tokens) = worst_case_hold(endpoint, body, &allowed)?;
            let expires = now
                + chrono::Duration::from_std(hold_for).unwrap_or_default()
                + chrono::Duration::minutes(5);
            Some(Hold {
                micros: hold_micros,
                tokens: hold_tokens,
                expires_ms: expires.timestamp_millis(),
            })
        }
    };

    // The rate takes and the budget holds go to NATS at the same time (one
    // round trip instead of two). A request the rate limits refuse gives its
    // holds back; a request the budget refuses keeps its rate takes, as it
    // would have had the two run one after the other.
    let take_rates = join_all(rates.iter().map(|r| {
        state
            .limiter
            .admit_rate(r.owner, r.rpm, r.tpm, tokens.unwrap_or(0), now_ms)
    }));
    let hold_budgets = async {
        match hold {
            Some(hold) => Some(
                state
                    .limiter
                    .reserve_levels(&budgets, request_id, hold, now_ms)
                    .await,
            ),
            None => None,
        }
    };
    let (rate_outcomes, budget_outcome) = tokio::join!(take_rates, hold_budgets);
    let reservation = match (&budget_outcome, hold) {
        (Some(Ok(Ok(leases))), Some(hold)) => Some(reservation_of(&budgets, leases, hold)),
        _ => None,
    };
    let give_back = |reservation: &Option<Reservation>| {
        if let Some(r) = reservation.clone() {
            let (limiter, key_id) = (state.limiter.clone(), key.id);
            tokio::spawn(async move {
                if let Err(e) = limiter.release_reservation(key_id, request_id, &r).await {
                    tracing::warn!(%request_id, error = %e, "releasing the budget hold of a rate-limited request failed (it expires on its own)");
                }
            });
        }
    };

    if let Some(tokens) = tokens {
        let mut decisions = Vec::with_capacity(rate_outcomes.len());
        for outcome in rate_outcomes {
            match outcome {
                Ok(d) => decisions.push(d),
                Err(e) => {
                    give_back(&reservation);
                    return Err(ApiError::Unavailable(format!("rate limit state: {e}")));
                }
            }
        }
        admitted.headers = RateHeaders::most_limiting(&decisions);
        if let Some(i) = decisions.iter().position(|d| !d.allowed) {
            give_back(&reservation);
            return Err(ApiError::RateLimited {
                retry_after: decisions[i].retry_after_secs,
                headers: admitted.headers,
                level: rates[i].owner.kind(),
            });
        }
        if rates.iter().any(|r| r.tpm.is_some()) {
            admitted.rate_tokens = Some(tokens);
        }
        admitted.rate_levels = rates
            .iter()
            .filter(|r| r.tpm.is_some())
            .filter_map(|r| match r.owner {
                Owner::Level(level) => Some(level),
                Owner::Key(_) => None,
            })
            .collect();
        admitted.rate_on_key = limits.tpm.is_some();
    }

    if let Some(outcome) = budget_outcome {
        let outcome = outcome.map_err(|e| ApiError::Unavailable(format!("budget state: {e}")))?;
        if let Err((i, refusal)) = outcome {
            let level = budgets[i].0.kind();
            let what = match refusal {
                BudgetRefusal::Spend => "spend",
                BudgetRefusal::Tokens => "token",
            };
            let message = match level {
                "key" => format!(
                    "This key's {what} budget is exhausted for this period; an admin can top it up."
                ),
                level => format!(
                    "{level} budget exhausted: this key's {level}'s {what} budget is exhausted for this period; an admin can raise it."
                ),
            };
            return Err(ApiError::InsufficientQuota {
                message,
                headers: admitted.headers,
            });
        }
        admitted.reservation = reservation;
    }
    Ok(admitted)
}

/// The reservation of holds taken at every level of `budgets` (key first,
/// if it has a budget of its own).
fn reservation_of(
    budgets: &[(Owner, Budget)],
    leases: &[Option<LeaseRef>],
    hold: Hold,
) -> Reservation {
    let mut r = Reservation {
        period: String::new(),
        micros: hold.micros,
        tokens: hold.tokens,
        lease: None,
        on_key: false,
        levels: Vec::new(),
    };
    for ((owner, budget), lease) in budgets.iter().zip(leases) {
        match owner {
            Owner::Key(_) => {
                r.on_key = true;
                r.period.clone_from(&budget.period);
                r.lease = *lease;
            }
            Owner::Level(level) => r.levels.push(LevelHold {
                level: *level,
                period: budget.period.clone(),
                lease: *lease,
            }),
        }
    }
    if !r.on_key {
        r.period = r
            .levels
            .first()
            .map(|l| l.period.clone())
            .unwrap_or_default();
    }
    r
}

/// The targets the key's scopes allow (the same rule the dispatcher applies
/// again to every target it routes or fails over to).
pub(crate) fn allowed_targets<'a>(
    scopes: &KeyScopes,
    model: &str,
    targets: &'a [Target],
) -> Result<Vec<&'a Target>, ApiError> {
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
