//! The seam between the dispatcher and provider wire formats.
//!
//! Every adapter speaks OpenAI's chat format to the rest of aigw: it takes an
//! OpenAI chat completion body and gives back either a complete OpenAI
//! `chat.completion` JSON or a stream of OpenAI `chat.completion.chunk` JSON
//! payloads. Translation to and from a provider's own format stays inside
//! the adapter.

use aigw_events::Usage;
use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_events::wire::Endpoint;
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::Value;

use crate::openai::{self, UpstreamError};
use crate::{anthropic, azure, bedrock, cohere, embeddings, gemini, media};

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
    let credentials = Credentials {
        api_key,
        session_token: None,
    };
    chat_with(http, provider, credentials, body, stream).await
}

/// [`chat`] with every secret the provider may need.
pub async fn chat_with(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    credentials: Credentials<'_>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let name = provider.name.as_str();
    let api_key = credentials.api_key;
    match provider.kind {
        ProviderKind::OpenaiCompatible => {
            let body = openai::adjust_for_preset(provider.preset.as_deref(), body);
            openai::chat(http, name, &provider.base_url, api_key, &body, stream).await
        }
        ProviderKind::Azure => azure::chat(http, provider, api_key, body, stream).await,
        ProviderKind::Anthropic => anthropic::chat(http, provider, api_key, body, stream).await,
        ProviderKind::Gemini => gemini::chat(http, provider, api_key, body, stream).await,
        ProviderKind::Bedrock => bedrock::chat(http, provider, credentials, body, stream).await,
        ProviderKind::Cohere => cohere::chat(http, provider, api_key, body, stream).await,
        ProviderKind::Stability
        | ProviderKind::Elevenlabs
        | ProviderKind::Assemblyai
        | ProviderKind::Replicate
        | ProviderKind::Runway => Err(media::unsupported(provider, Endpoint::Chat)),
    }
}

/// Calls `provider`'s embeddings with an OpenAI-format body (model already
/// set): OpenAI-compatible `/embeddings`, or natively Gemini and Cohere.
/// Other providers are refused with a clear error.
pub async fn embeddings(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    match provider.kind {
        ProviderKind::OpenaiCompatible => {
            openai::call(
                http,
                &provider.name,
                &provider.base_url,
                api_key,
                "embeddings",
                body,
                false,
            )
            .await
        }
        ProviderKind::Gemini => embeddings::gemini(http, provider, api_key, body).await,
        ProviderKind::Cohere => embeddings::cohere(http, provider, api_key, body).await,
        _ => Err(media::unsupported(provider, Endpoint::Embeddings)),
    }
}
