//! Shared upstream plumbing: the HTTP exchange ([`http`]), SSE framing
//! ([`sse`]), `multipart/form-data` bodies ([`multipart`]), the typed
//! upstream error ([`error`]) and where an upstream failure is classified
//! ([`classify`]).
//!
//! Invariants: nothing here knows a provider's wire format; provider
//! modules (`crate::providers`) build on it and never classify an HTTP
//! failure or write out an error's status, type or code themselves.

pub mod classify;
pub mod error;
pub mod http;
pub mod multipart;
pub mod sse;

pub use classify::{error_from_response, error_in_answer};
pub use error::{
    StreamFault, UpstreamError, UpstreamErrorKind, broken, invalid, invalid_response,
    misconfigured, not_json, task_failed, transport_error, unsupported, unsupported_endpoint,
};
pub use http::{read_json, send, send_raw, url};
pub use multipart::{Part, multipart};
