//! The Azure OpenAI adapter: OpenAI's body and answers, Azure's URLs
//! (`/openai/deployments/{deployment}/...?api-version=`, or the v1 API under
//! `/openai/v1`) and its `api-key` header.
//!
//! The body's `model` is the deployment to call: the registry resolves every
//! name a caller uses (a deployment, or a model one deployment serves) to a
//! deployment of the provider (`aigw_events::deployments`), and the
//! dispatcher puts it in the body. It goes into the URL on the dated API,
//! and stays in the body on the v1 API.

use aigw_events::provider::ProviderSpec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use futures::StreamExt;
use futures::future::ready;

use super::{Call, Capabilities, Provider, Reply};
use crate::answer::{Answer, StreamItem};
use crate::providers::openai;
use crate::upstream::UpstreamError;
use aigw_events::wire::Endpoint;

/// Azure OpenAI: chat.
pub struct Azure;

impl Provider for Azure {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Chat],
            native: &[],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "azure.ai.openai".into()
    }

    fn chat<'a>(&'a self, call: Call<'a>, body: &'a Value, stream: bool) -> Reply<'a> {
        Box::pin(chat(call.http, call.spec, call.api_key(), body, stream))
    }
}

/// Data-plane version used when the provider names none (latest GA in the
/// reference).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The chat URL for `deployment` on this provider.
pub fn chat_url(provider: &ProviderSpec, deployment: &str) -> String {
    let base = provider.base_url.trim_end_matches('/');
    if base.ends_with("/openai/v1") {
        // The v1 API: no api-version; the body's model is the deployment.
        return format!("{base}/chat/completions");
    }
    let deployment = crate::convert::path_segment(deployment);
    let version = provider
        .setting("api_version")
        .unwrap_or(DEFAULT_API_VERSION);
    let version = crate::convert::path_segment(version);
    format!("{base}/openai/deployments/{deployment}/chat/completions?api-version={version}")
}

pub async fn chat(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
    stream: bool,
) -> Result<Answer, UpstreamError> {
    let deployment = body.get("model").and_then(Value::as_str).unwrap_or("");
    let mut request = http.post(chat_url(provider, deployment)).json(body);
    if let Some(key) = api_key {
        request = request.header("api-key", key.expose_secret());
    }
    match openai::exchange(request, &provider.name, stream).await? {
        Answer::Stream(items) => Ok(Answer::Stream(
            items.filter(|item| ready(!is_filter_only(item))).boxed(),
        )),
        full => Ok(full),
    }
}

/// Azure's content-filter annotation chunks: no choices and no usage (the
/// first one also has an empty `id` and `object`). OpenAI clients do not
/// expect them, so they are dropped.
fn is_filter_only(item: &StreamItem) -> bool {
    let StreamItem::Data(data) = item else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    let no_choices = v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty());
    let no_usage = v.get("usage").is_none_or(Value::is_null);
    no_choices && no_usage && v.get("prompt_filter_results").is_some()
}
