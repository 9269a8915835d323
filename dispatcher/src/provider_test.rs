//! The admin's "test connection" (`POST /admin/api/providers/{id}/test`),
//! answered here rather than in the ingress: every dispatcher replica
//! listens in one queue group on `Names::provider_test_subject`, so each
//! request is answered once, by any of them.
//!
//! Invariants: the check is made the way a real call is: credentials
//! opened by `Sealer::open_call_secrets` (the main credential and, for
//! Bedrock's temporary credentials, the session token) and the provider
//! called through the same adapters and HTTP client as routed requests;
//! the provider is reloaded from the database first, so a credential
//! changed a moment ago is the one tested. Not routed, not recorded, not
//! billed to any key (the provider may charge for the token). A reply
//! never carries a secret or the provider's own error text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_events::Names;
use aigw_events::names::PROVIDER_TEST_QUEUE;
use aigw_events::provider_test::{
    PROVIDER_TEST_TIMEOUT_SECS, ProviderTestReply, ProviderTestRequest,
};
use aigw_events::wire::error_body;
use futures::StreamExt;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::adapter::{self, Credentials};
use crate::media;
use crate::upstream::{UpstreamError, UpstreamErrorKind};
use crate::{DispatcherError, Shared};

/// Answers "test connection" requests until aborted.
pub async fn serve(
    shared: Arc<Shared>,
    names: &Names,
) -> Result<tokio::task::JoinHandle<()>, DispatcherError> {
    let mut requests = shared
        .client
        .queue_subscribe(names.provider_test_subject(), PROVIDER_TEST_QUEUE.into())
        .await
        .map_err(|e| DispatcherError::Nats(e.to_string()))?;
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let reply = match serde_json::from_slice::<ProviderTestRequest>(&message.payload) {
                    Ok(asked) => {
                        let span = tracing::info_span!(
                            "provider_test",
                            request_id = %asked.request_id,
                            provider_id = %asked.provider_id,
                        );
                        check(&shared, asked.provider_id).instrument(span).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed provider test request");
                        failed(
                            400,
                            "Malformed provider test request.",
                            "invalid_request_error",
                            None,
                        )
                    }
                };
                let sent = match serde_json::to_vec(&reply) {
                    Ok(bytes) => shared
                        .client
                        .publish(reply_to, bytes.into())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "provider test reply not sent");
                }
            });
        }
    }))
}

/// Tests provider `id`: a free read of the account for media-only
/// providers, else a one-token chat with its first model.
pub async fn check(shared: &Shared, id: Uuid) -> ProviderTestReply {
    if let Err(e) = shared.registry.reload_provider(id).await {
        tracing::warn!(error = %e, "provider reload before its test failed");
    }
    let Some(provider) = shared.registry.provider(&id.to_string()) else {
        return failed(
            404,
            "No such provider.",
            "invalid_request_error",
            Some("not_found"),
        );
    };
    let spec = &provider.spec;
    let Some(model) = spec.served().first().map(|m| m.to_string()) else {
        return failed(
            400,
            "The provider lists no model to test with.",
            "invalid_request_error",
            None,
        );
    };
    let secrets = match shared.sealer.open_call_secrets(id, spec, 0) {
        Ok(secrets) => secrets,
        Err(e) => return failed(400, &e.to_string(), "invalid_request_error", None),
    };
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    });
    let started = Instant::now();
    let call = async {
        // Media-only providers cannot chat: their credential is checked
        // with a free read of the account it belongs to instead.
        match media::check_account(&shared.http, spec, secrets.api_key.as_ref()).await {
            Some(checked) => checked,
            None => {
                let credentials = Credentials {
                    api_key: secrets.api_key.as_ref(),
                    session_token: secrets.session_token.as_ref(),
                };
                adapter::chat_with(&shared.http, spec, credentials, &body, false)
                    .await
                    .map(|_| "chat")
            }
        }
    };
    let limit = Duration::from_secs(PROVIDER_TEST_TIMEOUT_SECS);
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(check)) => ProviderTestReply::Passed {
            provider: spec.name.clone(),
            model,
            check: check.into(),
            latency_ms: started.elapsed().as_millis() as u64,
        },
        Ok(Err(e)) => upstream_failed(&e),
        Err(_) => upstream_failed(&UpstreamError::new(
            UpstreamErrorKind::UpstreamTimeout {
                code: Some("upstream_timeout".into()),
            },
            format!("provider {} did not answer in time", spec.name),
        )),
    }
}

/// An upstream failure as the reply: its status and body are the ones the
/// request path would answer with (`upstream::error`).
fn upstream_failed(e: &UpstreamError) -> ProviderTestReply {
    ProviderTestReply::Failed {
        status: e.status(),
        body: e.body(),
        retry_after: e.retry_after.clone(),
    }
}

fn failed(status: u16, message: &str, kind: &str, code: Option<&str>) -> ProviderTestReply {
    ProviderTestReply::Failed {
        status,
        body: error_body(message, kind, code),
        retry_after: None,
    }
}
