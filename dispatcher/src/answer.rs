//! What a provider call gives back ([`Answer`], [`StreamItem`]) and the
//! secrets it takes ([`Credentials`]): the vocabulary of the provider seam.
//!
//! Invariants: every provider speaks OpenAI's format to the rest of aigw:
//! a complete OpenAI JSON, a stream of OpenAI `chat.completion.chunk`
//! payloads, a media answer, or (`Native`) the caller's own dialect
//! verbatim. Translation to and from a provider's own format stays inside
//! its module under `crate::providers`.

use aigw_events::Usage;
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::SecretString;

use crate::upstream::UpstreamError;

/// A successful upstream answer, in OpenAI's format (or, `Native`, in the
/// caller's own dialect).
pub enum Answer {
    /// A complete `chat.completion` JSON body (non-streamed request).
    Full { body: Bytes, usage: Option<Usage> },
    /// `chat.completion.chunk` payloads as they arrive.
    Stream(BoxStream<'static, StreamItem>),
    /// A media answer (images JSON, audio), with what it consumed.
    Media {
        body: Bytes,
        content_type: String,
        usage: Usage,
    },
    /// An answer in the caller's own dialect, from an upstream that speaks
    /// it natively (relayed verbatim; see `dialect`).
    Native(NativeAnswer),
}

/// An upstream's answer in the caller's own dialect (relayed by
/// `crate::dialect`).
pub enum NativeAnswer {
    /// The answer JSON as sent, and the usage read from it.
    Full { body: Bytes, usage: Option<Usage> },
    /// The SSE events as `(event name, data)`.
    Stream(BoxStream<'static, Result<(String, String), UpstreamError>>),
}

/// One step of a streamed answer.
#[derive(Debug)]
pub enum StreamItem {
    /// An OpenAI `chat.completion.chunk` JSON payload (may carry `usage`).
    Data(String),
    /// The provider finished the stream cleanly.
    Done,
    /// The stream failed after it started.
    Error(UpstreamError),
}

/// The opened secrets of one attempt.
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The API key (for Bedrock SigV4, the secret access key).
    pub api_key: Option<&'a SecretString>,
    /// Bedrock SigV4 only: the session token of temporary AWS credentials.
    pub session_token: Option<&'a SecretString>,
}
