//! The failed-attempt error: a typed [`UpstreamErrorKind`] plus the message
//! and the upstream's own status.
//!
//! Invariants: what the caller is told (HTTP status, OpenAI error `type`
//! and `code`) and the [`ErrorClass`] that decides failover, retries and
//! breakers are derived from the kind in one place,
//! [`UpstreamErrorKind::describe`]; no call site writes them out. Only the
//! kinds that relay an upstream's own type or code carry them.

use aigw_events::{ErrorClass, wire};
use serde_json::Value;

/// Why a stream ended early, after it had started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// The connection broke, stalled, or the provider sent an error event.
    Interrupted,
    /// The provider's error event said it is overloaded (Anthropic 529).
    Overloaded,
    /// The provider's error event said it is rate limited.
    RateLimited,
    /// The provider's error event said it timed out.
    TimedOut,
}

/// What went wrong, as the gateway classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The provider refused aigw's own credential (never relayed as is).
    Auth,
    /// The provider said 429; its error type and code are kept.
    RateLimited {
        upstream_type: Option<String>,
        code: Option<String>,
    },
    /// The provider refused the request as the caller's fault (4xx, its
    /// status kept), with its error type and code.
    Rejected {
        status: u16,
        upstream_type: Option<String>,
        code: Option<String>,
    },
    /// The provider answered 408.
    UpstreamTimeout { code: Option<String> },
    /// The provider failed (5xx, an error object in a 200, a model error),
    /// with its code.
    Failed { code: Option<String> },
    /// The provider's answer could not be read.
    InvalidResponse,
    /// An async media task (prediction) ended without a result.
    TaskFailed,
    /// An async transcription failed on the audio it was given.
    TranscriptionFailed,
    /// The stream failed after it started.
    StreamBroken(StreamFault),
    /// No answer in time (connect, whole call, or the request's deadline).
    Timeout,
    /// The provider could not be reached.
    Unreachable,
    /// The provider does not offer this endpoint through aigw.
    UnsupportedEndpoint,
    /// The request cannot be translated for this provider.
    UnsupportedForProvider,
    /// The request is invalid for this provider (`code` says what).
    Invalid { code: &'static str },
    /// The provider is misconfigured in aigw (missing setting).
    Misconfigured,
    /// The provider's sealed credential could not be opened.
    CredentialUnavailable,
    /// The caller went away.
    Cancelled,
    /// The uploaded file could not be read (not a provider's fault).
    UploadUnavailable,
    /// The stored request body is gone (not a provider's fault).
    BodyUnavailable,
    /// The request waited too long for a dispatcher.
    ExpiredInQueue,
    /// Dispatchers kept dying on this request.
    DeliveryLimit,
    /// No such model or provider.
    ModelNotFound,
    /// The model names several providers' models.
    AmbiguousModel,
    /// The key's scopes allow none of the model's providers.
    ProviderNotAllowed,
    /// The model's providers changed and the budget hold no longer covers them.
    HoldExceeded,
    /// Every provider's circuit is open.
    NoHealthyProvider,
}

/// What the caller is told, and how the failure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Described<'a> {
    pub class: ErrorClass,
    pub status: u16,
    pub error_type: &'a str,
    pub code: Option<&'a str>,
}

impl UpstreamErrorKind {
    /// The one place statuses, types, codes and classes are decided.
    pub fn describe(&self) -> Described<'_> {
        use ErrorClass as C;
        use UpstreamErrorKind as K;
        let d = |class, status, error_type, code| Described {
            class,
            status,
            error_type,
            code,
        };
        const UPSTREAM: &str = "upstream_error";
        const INVALID: &str = "invalid_request_error";
        const SERVER: &str = "server_error";
        match self {
            K::Auth => d(
                C::Upstream,
                502,
                "upstream_auth_error",
                Some("upstream_auth_error"),
            ),
            K::RateLimited {
                upstream_type,
                code,
            } => d(
                C::RateLimited,
                429,
                upstream_type.as_deref().unwrap_or("rate_limit_exceeded"),
                code.as_deref(),
            ),
            K::Rejected {
                status,
                upstream_type,
                code,
            } => d(
                C::Client,
                *status,
                upstream_type.as_deref().unwrap_or(INVALID),
                code.as_deref(),
            ),
            K::UpstreamTimeout { code } => d(C::Timeout, 504, "upstream_timeout", code.as_deref()),
            K::Failed { code } => d(C::Upstream, 502, UPSTREAM, code.as_deref()),
            K::InvalidResponse => d(
                C::Upstream,
                502,
                UPSTREAM,
                Some("upstream_invalid_response"),
            ),
            K::TaskFailed => d(C::Upstream, 502, UPSTREAM, Some("prediction_failed")),
            K::TranscriptionFailed => d(C::Client, 400, INVALID, Some("transcription_failed")),
            K::StreamBroken(fault) => {
                let status = match fault {
                    StreamFault::Interrupted => 502,
                    StreamFault::Overloaded => 529,
                    StreamFault::RateLimited => 429,
                    StreamFault::TimedOut => 504,
                };
                d(
                    C::StreamBroken,
                    status,
                    UPSTREAM,
                    Some("stream_interrupted"),
                )
            }
            K::Timeout => d(
                C::Timeout,
                504,
                "upstream_timeout",
                Some("upstream_timeout"),
            ),
            K::Unreachable => d(C::Connect, 502, UPSTREAM, Some("upstream_unreachable")),
            K::UnsupportedEndpoint => d(C::Client, 400, INVALID, Some("unsupported_endpoint")),
            K::UnsupportedForProvider => {
                d(C::Client, 400, INVALID, Some("unsupported_for_provider"))
            }
            K::Invalid { code } => d(C::Client, 400, INVALID, Some(code)),
            K::Misconfigured => d(C::Upstream, 502, UPSTREAM, Some("provider_misconfigured")),
            K::CredentialUnavailable => d(
                C::Upstream,
                502,
                UPSTREAM,
                Some("provider_credential_unavailable"),
            ),
            K::Cancelled => d(
                C::Cancelled,
                499,
                "client_closed_request",
                Some("client_closed_request"),
            ),
            // Not a provider's fault and no other provider would do better:
            // a non-retryable class, so no failover and no breaker trips.
            K::UploadUnavailable => d(C::Client, 502, SERVER, Some("upload_unavailable")),
            K::BodyUnavailable => d(C::Client, 502, SERVER, Some("body_unavailable")),
            K::ExpiredInQueue => d(C::Timeout, 504, SERVER, Some("expired_in_queue")),
            K::DeliveryLimit => d(C::Upstream, 502, UPSTREAM, Some("delivery_limit")),
            K::ModelNotFound => d(C::Client, 404, INVALID, Some("model_not_found")),
            K::AmbiguousModel => d(C::Client, 400, INVALID, Some("ambiguous_model")),
            K::ProviderNotAllowed => d(C::Client, 403, INVALID, Some("provider_not_allowed")),
            K::HoldExceeded => d(C::Upstream, 503, SERVER, Some("hold_exceeded")),
            K::NoHealthyProvider => d(C::Upstream, 503, SERVER, Some("no_healthy_provider")),
        }
    }
}

/// A failed attempt, classified, with what the caller is told.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    /// The upstream's HTTP status, when it answered.
    pub upstream_status: Option<u16>,
    pub message: String,
    pub retry_after: Option<String>,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            upstream_status: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, as an answer of the upstream with `status`.
    pub fn from_status(mut self, status: u16) -> Self {
        self.upstream_status = Some(status);
        self
    }

    /// The same error, telling the caller when to retry (seconds).
    pub fn retry_after(mut self, retry_after: Option<String>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Decides failover, retries and breakers.
    pub fn class(&self) -> ErrorClass {
        self.kind.describe().class
    }

    /// Status the caller gets.
    pub fn status(&self) -> u16 {
        self.kind.describe().status
    }

    /// OpenAI error `type` the caller gets.
    pub fn error_type(&self) -> &str {
        self.kind.describe().error_type
    }

    /// OpenAI error `code` the caller gets.
    pub fn code(&self) -> Option<&str> {
        self.kind.describe().code
    }

    /// The OpenAI error JSON the caller gets.
    pub fn body(&self) -> Value {
        let d = self.kind.describe();
        wire::error_body(&self.message, d.error_type, d.code)
    }

    /// The provider refused aigw's own credential for it. Its message is
    /// never relayed (it may echo the credential, or part of it): every
    /// such failure becomes this fixed 502, whatever the adapter.
    pub fn upstream_auth(provider: &str, upstream_status: u16) -> Self {
        Self::new(
            UpstreamErrorKind::Auth,
            format!("provider {provider} refused the gateway's credential for it"),
        )
        .from_status(upstream_status)
    }
}

/// A transport failure (connect, timeout) as an upstream error.
pub fn transport_error(e: &reqwest::Error, provider: &str) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::new(
            UpstreamErrorKind::Timeout,
            format!("provider {provider} did not answer in time"),
        )
    } else {
        UpstreamError::new(
            UpstreamErrorKind::Unreachable,
            format!("provider {provider} could not be reached"),
        )
    }
}

/// A stream that failed after it started.
pub fn broken(provider: &str, reason: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::StreamBroken(StreamFault::Interrupted),
        format!("provider {provider}: {reason}"),
    )
}

/// A response body aigw could not understand.
pub fn invalid_response(provider: &str, status: u16) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::InvalidResponse,
        format!("provider {provider} sent a response aigw could not read"),
    )
    .from_status(status)
}

/// A successful (200) answer that is not the JSON expected.
pub fn not_json(provider: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::InvalidResponse,
        format!("provider {provider} sent a response aigw cannot read"),
    )
    .from_status(200)
}

/// An async media task (prediction) that ended without a result.
pub fn task_failed(provider: &str, message: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::TaskFailed,
        format!("provider {provider}: {message}"),
    )
    .from_status(200)
}

/// A request aigw cannot translate for this provider (the caller's fault).
pub fn unsupported(provider: &str, what: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::UnsupportedForProvider,
        format!("provider {provider}: {what}"),
    )
}

/// The caller asked a provider for an endpoint it does not serve.
pub fn unsupported_endpoint(provider: &str, path: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::UnsupportedEndpoint,
        format!("provider {provider} does not offer {path} through aigw"),
    )
}

/// A provider misconfigured in aigw (missing setting or credential).
pub fn misconfigured(provider: &str, what: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Misconfigured,
        format!("provider {provider} is misconfigured: {what}"),
    )
}

/// The caller asked a provider for something it cannot do (never retried).
pub fn invalid(message: String, code: &'static str) -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Invalid { code }, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamErrorKind as K;

    /// The statuses, types, codes and classes callers and the failover
    /// logic have always seen, kind by kind.
    #[test]
    fn every_kind_describes_itself_as_before() {
        let s = |v: &str| Some(v.to_string());
        let table: Vec<(K, ErrorClass, u16, &str, Option<&str>)> = vec![
            (
                K::Auth,
                ErrorClass::Upstream,
                502,
                "upstream_auth_error",
                Some("upstream_auth_error"),
            ),
            (
                K::RateLimited {
                    upstream_type: None,
                    code: None,
                },
                ErrorClass::RateLimited,
                429,
                "rate_limit_exceeded",
                None,
            ),
            (
                K::RateLimited {
                    upstream_type: s("rate_limit_error"),
                    code: s("x"),
                },
                ErrorClass::RateLimited,
                429,
                "rate_limit_error",
                Some("x"),
            ),
            (
                K::Rejected {
                    status: 422,
                    upstream_type: None,
                    code: s("bad"),
                },
                ErrorClass::Client,
                422,
                "invalid_request_error",
                Some("bad"),
            ),
            (
                K::UpstreamTimeout { code: None },
                ErrorClass::Timeout,
                504,
                "upstream_timeout",
                None,
            ),
            (
                K::Failed { code: s("500") },
                ErrorClass::Upstream,
                502,
                "upstream_error",
                Some("500"),
            ),
            (
                K::StreamBroken(StreamFault::Overloaded),
                ErrorClass::StreamBroken,
                529,
                "upstream_error",
                Some("stream_interrupted"),
            ),
            (
                K::StreamBroken(StreamFault::Interrupted),
                ErrorClass::StreamBroken,
                502,
                "upstream_error",
                Some("stream_interrupted"),
            ),
            (
                K::Timeout,
                ErrorClass::Timeout,
                504,
                "upstream_timeout",
                Some("upstream_timeout"),
            ),
            (
                K::Unreachable,
                ErrorClass::Connect,
                502,
                "upstream_error",
                Some("upstream_unreachable"),
            ),
            (
                K::UnsupportedEndpoint,
                ErrorClass::Client,
                400,
                "invalid_request_error",
                Some("unsupported_endpoint"),
            ),
            (
                K::Invalid { code: "invalid_n" },
                ErrorClass::Client,
                400,
                "invalid_request_error",
                Some("invalid_n"),
            ),
            (
                K::Cancelled,
                ErrorClass::Cancelled,
                499,
                "client_closed_request",
                Some("client_closed_request"),
            ),
            (
                K::UploadUnavailable,
                ErrorClass::Client,
                502,
                "server_error",
                Some("upload_unavailable"),
            ),
            (
                K::ExpiredInQueue,
                ErrorClass::Timeout,
                504,
                "server_error",
                Some("expired_in_queue"),
            ),
            (
                K::ModelNotFound,
                ErrorClass::Client,
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                K::ProviderNotAllowed,
                ErrorClass::Client,
                403,
                "invalid_request_error",
                Some("provider_not_allowed"),
            ),
            (
                K::HoldExceeded,
                ErrorClass::Upstream,
                503,
                "server_error",
                Some("hold_exceeded"),
            ),
            (
                K::NoHealthyProvider,
                ErrorClass::Upstream,
                503,
                "server_error",
                Some("no_healthy_provider"),
            ),
        ];
        for (kind, class, status, error_type, code) in table {
            let e = UpstreamError::new(kind.clone(), "m");
            assert_eq!(
                (e.class(), e.status(), e.error_type(), e.code()),
                (class, status, error_type, code),
                "{kind:?}"
            );
            assert_eq!(e.body()["error"]["type"], error_type, "{kind:?}");
        }
    }

    #[test]
    fn only_provider_failures_are_retryable() {
        assert!(
            UpstreamError::new(K::Unreachable, "")
                .class()
                .is_retryable()
        );
        assert!(UpstreamError::new(K::Auth, "").class().is_retryable());
        assert!(
            !UpstreamError::new(K::BodyUnavailable, "")
                .class()
                .is_retryable()
        );
        assert!(!UpstreamError::new(K::Cancelled, "").class().is_retryable());
        let e = UpstreamError::upstream_auth("p", 401);
        assert_eq!(e.upstream_status, Some(401));
        assert_eq!(e.body()["error"]["code"], "upstream_auth_error");
    }
}
