//! Which targets a request may go to, decided again by the dispatcher.
//!
//! The ingress admitted the request against the targets it saw; by the time
//! a dispatcher takes it, providers, aliases and prices may have changed.
//! So every target the dispatcher routes or fails over to must, on its own:
//! - serve the request's endpoint (and as many images as it asks);
//! - be allowed by the key's scopes (`Target::allowed_by`: the same rule
//!   the ingress applied), so no alias, pin, `provider/model` or
//!   failover path reaches a provider or model the key may not use;
//! - fit the budget hold taken at admission: its worst-case cost and tokens
//!   (`aigw_runtime::worst_case`) at most what is held, so settling can
//!   never spend more than was held.
//!
//! A request none of whose targets qualifies is refused with a clear error,
//! never sent somewhere else.

use aigw_events::Usage;
use aigw_events::key::KeyScopes;
use aigw_events::pricing;
use aigw_events::wire::DispatchRequest;
use aigw_runtime::Target;
use aigw_runtime::worst_case::{self, TargetLimits};

use crate::Shared;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// The scopes the request was admitted under (older messages carry none:
/// the key's current scopes then apply).
pub fn scopes_of(shared: &Shared, request: &DispatchRequest) -> KeyScopes {
    request
        .scopes
        .clone()
        .or_else(|| {
            shared
                .registry
                .key(request.key_id)
                .map(|k| k.state.settings.scopes.clone())
        })
        .unwrap_or_default()
}

/// Whether the worst case of `request` at `target` fits its budget hold
/// (a request without a hold fits anywhere).
pub fn fits_hold(request: &DispatchRequest, target: &Target) -> bool {
    let Some(held) = &request.reservation else {
        return true;
    };
    let limits = TargetLimits::of(&target.provider.spec, &target.model);
    let Ok(worst) = worst_case::worst_usage(request.endpoint, &request.body, &limits) else {
        return false;
    };
    // An unpriced model bills nothing (its usage is flagged).
    let micros = pricing::hold_micros(target.provider.spec.price(&target.model), &worst);
    let tokens = i64::try_from(worst.total()).ok();
    micros.is_some_and(|m| m <= held.micros) && tokens.is_some_and(|t| t <= held.tokens)
}

/// Why no target is left, as the caller's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCandidate {
    /// No target serves the endpoint (or that many images).
    Unsupported,
    /// The key's scopes allow none of them.
    NotAllowed,
    /// None fits the budget hold (prices or limits changed since admission).
    OverHold,
}

impl NoCandidate {
    pub fn error(self, model: &str, path: &str) -> UpstreamError {
        let (kind, message) = match self {
            NoCandidate::Unsupported => (
                UpstreamErrorKind::UnsupportedEndpoint,
                format!("no provider of `{model}` offers {path} through aigw"),
            ),
            NoCandidate::NotAllowed => (
                UpstreamErrorKind::ProviderNotAllowed,
                "This key may not use the providers that serve this model.".to_string(),
            ),
            NoCandidate::OverHold => (
                UpstreamErrorKind::HoldExceeded,
                format!(
                    "the providers of `{model}` changed while the request waited, and its budget hold no longer covers them; retry"
                ),
            ),
        };
        UpstreamError::new(kind, message)
            .retry_after((self == NoCandidate::OverHold).then(|| "1".to_string()))
    }
}

/// The targets `request` may go to, in the resolver's order.
pub fn filter(
    shared: &Shared,
    request: &DispatchRequest,
    targets: Vec<Target>,
) -> Result<Vec<Target>, NoCandidate> {
    let serving: Vec<Target> = targets
        .into_iter()
        .filter(|t| {
            crate::providers::capabilities(t.provider.spec.kind)
                .serves_body(request.endpoint, &request.body)
        })
        .collect();
    if serving.is_empty() {
        return Err(NoCandidate::Unsupported);
    }
    let scopes = scopes_of(shared, request);
    let allowed: Vec<Target> = serving
        .into_iter()
        .filter(|t| t.allowed_by(&scopes, &request.model))
        .collect();
    if allowed.is_empty() {
        return Err(NoCandidate::NotAllowed);
    }
    let fitting: Vec<Target> = allowed
        .into_iter()
        .filter(|t| fits_hold(request, t))
        .collect();
    if fitting.is_empty() {
        return Err(NoCandidate::OverHold);
    }
    Ok(fitting)
}

/// Usage a provider reported, unless it is implausible (then the caller of
/// this treats it as unreported and estimates instead).
pub fn plausible(usage: Option<Usage>) -> Option<Usage> {
    usage.filter(Usage::is_plausible)
}
