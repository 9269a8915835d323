//! Provider health: circuit breakers shared by every dispatcher replica.
//!
//! Each dispatcher counts consecutive failures per provider and model
//! locally; when they reach the threshold it opens the breaker in the NATS KV
//! bucket `<ns>_health`, and every replica (watching the bucket) stops
//! sending there at once. After the cooldown, one replica claims the
//! half-open probe with a compare-and-set; the probe's success closes the
//! breaker for everybody, its failure opens it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigw_events::Names;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Result, RuntimeError};

/// What a breaker stores in the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    pub provider_id: Uuid,
    pub model: String,
    /// No calls until then (ms since the epoch); 0 when closed.
    pub open_until_ms: i64,
    /// Whether the current open period is a half-open probe's claim.
    #[serde(default)]
    pub probing: bool,
    /// Times the breaker opened since it last closed.
    #[serde(default)]
    pub trips: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub changed_ms: i64,
}

impl BreakerState {
    pub fn is_open(&self, now_ms: i64) -> bool {
        self.open_until_ms > now_ms
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open a breaker.
    pub threshold: u32,
    /// How long an open breaker refuses calls before a probe.
    pub cooldown: Duration,
    /// How long a probe may take before another replica may probe.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            cooldown: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a call may go to a target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// This replica holds the half-open probe.
    Probe,
    Open {
        retry_in_ms: i64,
    },
}

fn bucket_key(provider: Uuid, model: &str) -> String {
    let digest = hex::encode(&Sha256::digest(model.as_bytes())[..8]);
    format!("cb.{provider}.{digest}")
}

/// The breakers of every provider and model, shared through NATS KV.
#[derive(Clone)]
pub struct Health {
    kv: kv::Store,
    config: BreakerConfig,
    /// Latest bucket values, kept current by a watch.
    seen: Arc<Mutex<HashMap<String, BreakerState>>>,
    /// This replica's consecutive failures.
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Health {
    /// Opens (creating if needed, with `replicas` replicas) the namespace's
    /// breaker bucket.
    pub async fn open(
        js: &jetstream::Context,
        names: &Names,
        config: BreakerConfig,
        replicas: usize,
    ) -> Result<Self> {
        let bucket = format!("{}_health", names.namespace());
        let kv = crate::nats::ensure_kv(js, &bucket, replicas).await?;
        let health = Self {
            kv,
            config,
            seen: Arc::default(),
            failures: Arc::default(),
        };
        Ok(health)
    }

    /// Follows the bucket so this replica sees breakers others open or close.
    pub async fn follow(&self) -> Result<tokio::task::JoinHandle<()>> {
        let mut watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| RuntimeError::Nats(format!("watching health: {e}")))?;
        let seen = self.seen.clone();
        Ok(tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                let mut map = seen.lock().unwrap_or_else(|e| e.into_inner());
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(state) = serde_json::from_slice::<BreakerState>(&entry.value) {
                            map.insert(entry.key, state);
                        }
                    }
                    _ => {
                        map.remove(&entry.key);
                    }
                }
            }
        }))
    }

    fn cached(&self, key: &str) -> Option<BreakerState> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, state: &BreakerState) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), state.clone());
    }

    /// Whether a call to `provider`/`model` may go ahead now; after the
    /// cooldown, exactly one replica wins the probe.
    pub async fn admit(&self, provider: Uuid, model: &str, now_ms: i64) -> Admission {
        let key = bucket_key(provider, model);
        let Some(state) = self.cached(&key) else {
            return Admission::Closed;
        };
        if state.open_until_ms == 0 {
            return Admission::Closed;
        }
        if state.is_open(now_ms) {
            return Admission::Open {
                retry_in_ms: state.open_until_ms - now_ms,
            };
        }
        // Cooldown over: try to claim the probe.
        let Ok(Some(entry)) = self.kv.entry(&key).await else {
            return Admission::Closed;
        };
        let Ok(mut current) = serde_json::from_slice::<BreakerState>(&entry.value) else {
            return Admission::Closed;
        };
        if current.open_until_ms == 0 {
            self.remember(&key, &current);
            return Admission::Closed;
        }
        if current.is_open(now_ms) {
            self.remember(&key, &current);
            return Admission::Open {
                retry_in_ms: current.open_until_ms - now_ms,
            };
        }
        current.open_until_ms = now_ms + self.config.probe_timeout.as_millis() as i64;
        current.probing = true;
        current.changed_ms = now_ms;
        let Ok(bytes) = serde_json::to_vec(&current) else {
            return Admission::Closed;
        };
        match self.kv.update(&key, bytes.into(), entry.revision).await {
            Ok(_) => {
                self.remember(&key, &current);
                Admission::Probe
            }
            Err(_) => Admission::Open {
                retry_in_ms: self.config.probe_timeout.as_millis() as i64,
            },
        }
    }

    /// A call succeeded: forget the failures; a probe's success (or any
    /// success while the breaker is recorded open) closes it for everybody.
    pub async fn success(&self, provider: Uuid, model: &str, now_ms: i64) {
        let key = bucket_key(provider, model);
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let recorded_open = self.cached(&key).is_some_and(|s| s.open_until_ms != 0);
        if recorded_open {
            let state = BreakerState {
                provider_id: provider,
                model: model.to_string(),
                changed_ms: now_ms,
                ..BreakerState::default()
            };
            if let Ok(bytes) = serde_json::to_vec(&state) {
                let _ = self.kv.put(&key, bytes.into()).await;
                self.remember(&key, &state);
                tracing::info!(%provider, model, "circuit closed");
            }
        }
    }

    /// A call failed in a way that says the target is unhealthy.
    pub async fn failure(
        &self,
        provider: Uuid,
        model: &str,
        error: &str,
        probe: bool,
        now_ms: i64,
    ) {
        let key = bucket_key(provider, model);
        let count = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let count = failures.entry(key.clone()).or_insert(0);
            *count += 1;
            *count
        };
        if !probe && count < self.config.threshold {
            return;
        }
        let previous = self.cached(&key).unwrap_or_default();
        let state = BreakerState {
            provider_id: provider,
            model: model.to_string(),
            open_until_ms: now_ms + self.config.cooldown.as_millis() as i64,
            probing: false,
            trips: previous.trips + 1,
            last_error: Some(error.to_string()),
            changed_ms: now_ms,
        };
        if let Ok(bytes) = serde_json::to_vec(&state) {
            if let Err(e) = self.kv.put(&key, bytes.into()).await {
                tracing::warn!(error = %e, "could not share an open circuit");
            }
            self.remember(&key, &state);
            tracing::warn!(%provider, model, error, "circuit opened");
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Every breaker in the bucket (for the health API).
    pub async fn all(&self) -> Result<Vec<BreakerState>> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| RuntimeError::Nats(format!("listing health: {e}")))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if let Ok(Some(value)) = self.kv.get(&key).await
                && let Ok(state) = serde_json::from_slice::<BreakerState>(&value)
            {
                out.push(state);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys_whatever_the_model() {
        let key = bucket_key(Uuid::nil(), "@cf/meta/llama-3.1:8b");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.=/".contains(c)),
            "{key}"
        );
        assert_ne!(key, bucket_key(Uuid::nil(), "other"));
    }

    #[test]
    fn open_until_decides() {
        let s = BreakerState {
            open_until_ms: 100,
            ..BreakerState::default()
        };
        assert!(s.is_open(99));
        assert!(!s.is_open(100));
    }
}
