//! Active health probes: a cheap `GET {base_url}/models` per provider, so a
//! provider that went down is noticed before callers pay for it, and one that
//! recovered gets traffic back without waiting for a real request.

use std::sync::Arc;
use std::time::Duration;

use aigw_events::provider::ProviderKind;
use aigw_runtime::crypto::{Binding, CredentialField};
use chrono::Utc;
use secrecy::ExposeSecret;

use crate::Shared;

/// Probes every enabled OpenAI-compatible provider each `every`.
pub fn spawn(shared: Arc<Shared>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for provider in shared.registry.providers() {
                let spec = &provider.spec;
                if spec.disabled || spec.kind != ProviderKind::OpenaiCompatible {
                    continue;
                }
                let url = format!("{}/models", spec.base_url.trim_end_matches('/'));
                let mut request = shared.http.get(url).timeout(Duration::from_secs(10));
                if let Some(sealed) = spec.sealed_credential.as_deref()
                    && let Ok(key) = shared
                        .sealer
                        .open(sealed, &Binding::new(provider.id, CredentialField::ApiKey))
                {
                    request = request.bearer_auth(key.expose_secret());
                }
                let healthy = match request.send().await {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
                let now_ms = Utc::now().timestamp_millis();
                for model in &spec.models {
                    if healthy {
                        shared.health.success(provider.id, model, now_ms).await;
                    } else {
                        shared
                            .health
                            .failure(provider.id, model, "health probe failed", false, now_ms)
                            .await;
                    }
                }
                metrics::counter!(
                    "aigw_health_probes_total",
                    "provider" => spec.name.clone(),
                    "healthy" => healthy.to_string()
                )
                .increment(1);
            }
        }
    })
}
