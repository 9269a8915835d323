//! Answers in the caller's dialect (the dispatcher side of the dialect
//! seam; requests are translated in `aigw_runtime::dialect`).
//!
//! Invariants:
//! - A request in a dialect that its target speaks natively goes there
//!   verbatim (only `model` renamed, aigw's credential in place of the
//!   caller's) and its answer, JSON or SSE, comes back verbatim; aigw only
//!   reads the usage from it.
//! - Otherwise the adapter gets the OpenAI chat translation, and its
//!   OpenAI answer is rendered back in the caller's dialect here, with the
//!   usage aigw billed (token classes included).
//! - A new dialect is one module here and one arm in each function below.

pub mod anthropic_native;
pub mod anthropic_out;

use aigw_events::provider::ProviderSpec;
use aigw_events::wire::{Dialect, DispatchRequest};
use aigw_runtime::dialect::anthropic_in;

/// Puts a request's body in the internal shape: a body in another dialect
/// is kept as `native_body` and `body` becomes its OpenAI chat
/// translation. The ingress checked the body already (with this same
/// translation), so a failure here means a body aigw never accepted: it is
/// left as it is, and the upstream judges it.
pub fn prepare(request: &mut DispatchRequest) {
    match request.dialect {
        Dialect::OpenaiChat => {}
        Dialect::AnthropicMessages { .. } => {
            if request.native_body.is_some() || request.body.is_null() {
                return;
            }
            match anthropic_in::to_chat(&request.body) {
                Ok(t) => {
                    request.native_body = Some(std::mem::replace(&mut request.body, t.body));
                    request.native_only = t.native_only;
                }
                Err(e) => {
                    tracing::warn!(request_id = %request.request_id, error = %e, "a queued Anthropic body does not translate");
                }
            }
        }
    }
}

/// Why `provider` cannot take `request`, if it cannot: a field of the
/// caller's body that only a provider speaking the caller's dialect can
/// honour. The ingress refuses such a request unless every target of its
/// model speaks it; this catches a route changed since.
pub fn untranslatable(request: &DispatchRequest, provider: &ProviderSpec) -> Option<String> {
    let field = request.native_only.as_ref()?;
    (!native_to(request, provider)).then(|| {
        format!("'{field}' has no equivalent at this provider: send it to a model served natively")
    })
}

/// Whether `provider` takes `request` in its own dialect, verbatim.
pub fn native_to(request: &DispatchRequest, provider: &ProviderSpec) -> bool {
    request.native_body.is_some() && provider.kind.speaks(&request.dialect)
}
