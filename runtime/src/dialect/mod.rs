//! Request bodies of the ingress dialects in the internal shape.
//!
//! Every adapter takes an OpenAI chat body, so a request that arrives in
//! another dialect is translated into one here: by the ingress, to admit it
//! (worst-case holds, token estimates, limits all read the internal shape),
//! and by the dispatcher, which gets the caller's body verbatim on the wire
//! and translates it again only when the target does not speak the
//! caller's dialect natively. One module per dialect; the answers are
//! rendered back in `aigw_dispatcher::dialect`.
//!
//! Invariants:
//! - Translation is a pure function of the body: the ingress and the
//!   dispatcher always agree on it, and no JSON input makes it panic.
//! - A field that changes the answer and that the internal shape cannot
//!   express is never dropped: it is reported (`native_only`), and such a
//!   request may only go to a target that speaks its dialect natively.
//! - Advisory fields (hints, metadata) are dropped, and listed in the
//!   README.

pub mod anthropic_in;
pub mod gemini_in;
pub mod responses_in;

/// A body that is not a valid request of its dialect: the message, and the
/// field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DialectError {
    pub message: String,
    /// The offending field (a JSON path such as `messages[2].content[0]`).
    pub param: String,
}

impl DialectError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: param.into(),
        }
    }
}
