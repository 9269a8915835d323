//! The chat and embeddings entry points, each a call through the provider
//! seam ([`crate::providers`]); `chat` is what the ingress's connection
//! test calls. The answer types are re-exported from [`crate::answer`].
//!
//! Invariants: no provider-specific code here.

use aigw_events::provider::ProviderSpec;
use secrecy::SecretString;
use serde_json::Value;

pub use crate::answer::{Answer, Credentials, StreamItem};
use crate::providers::{self, Call};
use crate::upstream::UpstreamError;

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
