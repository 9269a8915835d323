//! The seam between the dispatcher and provider wire formats.
//!
//! Every adapter speaks OpenAI's chat format to the rest of aigw: it takes an
//! OpenAI chat completion body and gives back either a complete OpenAI
//! `chat.completion` JSON or a stream of OpenAI `chat.completion.chunk` JSON
//! payloads. Translation to and from a provider's own format stays inside
//! the adapter.

use aigw_events::Usage;
use aigw_events::provider::{ProviderKind, ProviderSpec};
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::Value;

use crate::openai::{self, UpstreamError};

/// A successful upstream answer, already in OpenAI's format.
pub enum Answer {
    /// A complete `chat.completion` JSON body (non-streamed request).
    Full { body: Bytes, usage: Option<Usage> },
    /// `chat.completion.chunk` payloads as they arrive.
    Stream(BoxStream<'static, StreamItem>),
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

/// Calls `provider` with an OpenAI-format `body` (model already set).
pub async fn chat(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    match provider.kind {
        ProviderKind::OpenaiCompatible => {
            openai::chat(
                http,
                &provider.name,
                &provider.base_url,
                api_key,
                body,
                stream,
            )
            .await
        }
    }
}
