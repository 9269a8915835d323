//! What a provider call gives back ([`Answer`], [`StreamItem`]) and the
//! secrets it takes ([`Credentials`]), plus [`chat`], the entry point the
//! ingress's connection test calls.
//!
//! Invariants: every provider (`crate::providers`) speaks OpenAI's format to
//! the rest of aigw: it takes an OpenAI body and gives back a complete
//! OpenAI JSON or a stream of OpenAI `chat.completion.chunk` payloads (or,
//! `Native`, the caller's own dialect verbatim). Translation to and from a
//! provider's own format stays inside its module.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::Value;

use crate::providers::{self, Call};
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
    Native(crate::dialect::NativeAnswer),
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

/// Calls `provider` with an OpenAI-format `body` (model already set).
pub async fn chat(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let call = Call::with_key(http, provider, api_key);
    providers::of(provider.kind).chat(call, body, stream).await
}

/// [`chat`] with every secret the provider may need.
pub async fn chat_with(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    credentials: Credentials<'_>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let call = Call {
        http,
        spec: provider,
        credentials,
    };
    providers::of(provider.kind).chat(call, body, stream).await
}

/// Calls `provider`'s embeddings with an OpenAI-format body (model set).
pub async fn embeddings(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let call = Call::with_key(http, provider, api_key);
    providers::of(provider.kind).embeddings(call, body).await
}
