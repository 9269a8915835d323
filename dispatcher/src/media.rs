//! The media entry points (`/v1/images/generations`, `/v1/audio/speech`,
//! `/v1/audio/transcriptions`, and the free account check of media-only
//! providers), each a call through the provider seam.
//!
//! Invariants: no provider-specific code here; what a provider does is in
//! its module under `crate::providers`, what media providers share in
//! `crate::providers::media`.

use aigw_events::provider::ProviderSpec;
use aigw_runtime::egress::Egress;
use bytes::Bytes;
use secrecy::SecretString;
use serde_json::Value;

use crate::answer::Answer;
use crate::providers::{self, Call};
use crate::upstream::UpstreamError;

/// `POST /v1/images/generations` with an OpenAI-format body (model set);
/// `egress` fetches the output files async providers answer with.
pub async fn images(
    http: &reqwest::Client,
    egress: &Egress,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let call = Call::with_key(http, provider, api_key);
    providers::of(provider.kind)
        .images(call, egress, body)
        .await
}

/// `POST /v1/audio/speech` with an OpenAI-format body (model set).
pub async fn speech(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let call = Call::with_key(http, provider, api_key);
    providers::of(provider.kind).speech(call, body).await
}

/// `POST /v1/audio/transcriptions`: `body` is the JSON the ingress queued,
/// `audio` the uploaded file.
pub async fn transcriptions(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    audio: Bytes,
) -> Result<Answer, UpstreamError> {
    let call = Call::with_key(http, provider, api_key);
    providers::of(provider.kind)
        .transcriptions(call, body, audio)
        .await
}

/// For providers that serve only media: checks the endpoint and credential
/// with a free, read-only call (see `Provider::check_account`) instead of
/// a paid generation. `None` for providers that can chat (they are checked
/// with a one-token chat).
pub async fn check_account(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
) -> Option<Result<&'static str, UpstreamError>> {
    let call = Call::with_key(http, provider, api_key);
    Some(providers::of(provider.kind).check_account(call)?.await)
}
