//! The registry: every key and provider, cached in memory by each process.
//!
//! PostgreSQL tables `api_keys` and `providers` hold the current state folded
//! from events. Each process keeps a copy in memory, so authentication and
//! routing never query the database per request; a change is announced on
//! NATS (`<ns>.registry.<kind>`, payload: the id) and every replica reloads that
//! row at once, with a full reload every few seconds in case a notice was lost.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aigw_events::provider::ProviderSpec;
use aigw_events::{KeyAggregate, KeyStatus, Names, ProviderAggregate};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Result, RuntimeError, store};

pub const KIND_KEYS: &str = "keys";
pub const KIND_PROVIDERS: &str = "providers";

/// What authentication needs to know about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A configured, live provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    pub id: Uuid,
    pub spec: ProviderSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One place a request can go: a provider and the model id it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: Arc<ProviderEntry>,
    pub model: String,
}

/// Why a model could not be resolved to any provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no provider named {0:?}")]
    UnknownProvider(String),
    #[error("the model `{0}` does not exist or you do not have access to it")]
    UnknownModel(String),
}

#[derive(Default)]
struct State {
    keys_by_hash: HashMap<String, Arc<KeyEntry>>,
    hash_by_key: HashMap<Uuid, String>,
    providers: HashMap<Uuid, Arc<ProviderEntry>>,
}

pub struct Registry {
    pool: PgPool,
    state: RwLock<State>,
}

type KeyRow = (
    Uuid,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);
type ProviderRow = (Uuid, serde_json::Value, DateTime<Utc>, DateTime<Utc>);

const KEY_COLUMNS: &str = "id, name, key_hash, prefix, status, created_at, revoked_at";
const PROVIDER_COLUMNS: &str = "id, spec, created_at, updated_at";

impl Registry {
    /// A registry filled from the database.
    pub async fn load(pool: PgPool) -> Result<Arc<Self>> {
        let registry = Arc::new(Self {
            pool,
            state: RwLock::new(State::default()),
        });
        registry.reload_all().await?;
        Ok(registry)
    }

    pub async fn reload_all(&self) -> Result<()> {
        let keys: Vec<KeyRow> = sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys"))
            .fetch_all(&self.pool)
            .await?;
        let providers: Vec<ProviderRow> = sqlx::query_as(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE NOT removed"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut fresh = State::default();
        for row in keys {
            let (hash, entry) = key_entry(row);
            fresh.hash_by_key.insert(entry.id, hash.clone());
            fresh.keys_by_hash.insert(hash, Arc::new(entry));
        }
        for row in providers {
            let entry = provider_entry(row)?;
            fresh.providers.insert(entry.id, Arc::new(entry));
        }
        *self.write() = fresh;
        Ok(())
    }

    pub async fn reload_key(&self, id: Uuid) -> Result<()> {
        let row: Option<KeyRow> =
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let mut state = self.write();
        if let Some(old) = state.hash_by_key.remove(&id) {
            state.keys_by_hash.remove(&old);
        }
        if let Some(row) = row {
            let (hash, entry) = key_entry(row);
            state.hash_by_key.insert(id, hash.clone());
            state.keys_by_hash.insert(hash, Arc::new(entry));
        }
        Ok(())
    }

    pub async fn reload_provider(&self, id: Uuid) -> Result<()> {
        let row: Option<ProviderRow> = sqlx::query_as(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE id = $1 AND NOT removed"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let entry = row.map(provider_entry).transpose()?;
        let mut state = self.write();
        match entry {
            Some(entry) => state.providers.insert(id, Arc::new(entry)),
            None => state.providers.remove(&id),
        };
        Ok(())
    }

    /// The key whose secret hashes to `hash`, whatever its status.
    pub fn key_by_hash(&self, hash: &str) -> Option<Arc<KeyEntry>> {
        self.read().keys_by_hash.get(hash).cloned()
    }

    pub fn keys(&self) -> Vec<Arc<KeyEntry>> {
        let mut keys: Vec<_> = self.read().keys_by_hash.values().cloned().collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        keys
    }

    pub fn key(&self, id: Uuid) -> Option<Arc<KeyEntry>> {
        let state = self.read();
        let hash = state.hash_by_key.get(&id)?;
        state.keys_by_hash.get(hash).cloned()
    }

    /// Live providers, oldest first.
    pub fn providers(&self) -> Vec<Arc<ProviderEntry>> {
        let mut all: Vec<_> = self.read().providers.values().cloned().collect();
        all.sort_by_key(|p| (p.created_at, p.id));
        all
    }

    pub fn provider(&self, id_or_name: &str) -> Option<Arc<ProviderEntry>> {
        let state = self.read();
        if let Ok(id) = Uuid::parse_str(id_or_name)
            && let Some(p) = state.providers.get(&id)
        {
            return Some(p.clone());
        }
        state
            .providers
            .values()
            .find(|p| p.spec.name == id_or_name)
            .cloned()
    }

    /// Where a request for `model` can go, in preference order.
    ///
    /// `model` is a model id some provider lists, or `provider/model`. A pinned
    /// provider (by id or name) is used for whatever model is asked.
    pub fn resolve(&self, model: &str, pin: Option<&str>) -> Result<Vec<Target>, ResolveError> {
        if let Some(pin) = pin {
            let provider = self
                .provider(pin)
                .ok_or_else(|| ResolveError::UnknownProvider(pin.to_string()))?;
            let model = match model.split_once('/') {
                Some((prefix, rest)) if prefix == provider.spec.name => rest,
                _ => model,
            };
            return Ok(vec![Target {
                provider,
                model: model.to_string(),
            }]);
        }
        let providers = self.providers();
        let direct: Vec<Target> = providers
            .iter()
            .filter(|p| p.spec.models.iter().any(|m| m == model))
            .map(|p| Target {
                provider: p.clone(),
                model: model.to_string(),
            })
            .collect();
        if !direct.is_empty() {
            return Ok(direct);
        }
        if let Some((prefix, rest)) = model.split_once('/')
            && let Some(p) = providers.iter().find(|p| p.spec.name == prefix)
        {
            return Ok(vec![Target {
                provider: p.clone(),
                model: rest.to_string(),
            }]);
        }
        Err(ResolveError::UnknownModel(model.to_string()))
    }

    /// Keeps this registry current: reloads a row when a change is announced,
    /// and everything every `full_every`.
    pub fn follow(
        self: &Arc<Self>,
        client: async_nats::Client,
        names: &Names,
        full_every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        let subject = names.registry_wildcard();
        tokio::spawn(async move {
            let mut changes = match client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, %subject, "cannot follow registry changes");
                    return;
                }
            };
            let mut tick = tokio::time::interval(full_every);
            tick.tick().await;
            loop {
                let result = tokio::select! {
                    msg = changes.next() => {
                        let Some(msg) = msg else { return };
                        registry.apply_notice(&msg.subject, &msg.payload).await
                    }
                    _ = tick.tick() => registry.reload_all().await,
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "registry reload failed");
                }
            }
        })
    }

    async fn apply_notice(&self, subject: &str, payload: &[u8]) -> Result<()> {
        let id = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok());
        let Some(id) = id else { return Ok(()) };
        if subject.ends_with(KIND_KEYS) {
            self.reload_key(id).await
        } else if subject.ends_with(KIND_PROVIDERS) {
            self.reload_provider(id).await
        } else {
            Ok(())
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain maps.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn key_entry(row: KeyRow) -> (String, KeyEntry) {
    let (id, name, hash, prefix, status, created_at, revoked_at) = row;
    let status = match status.as_str() {
        "active" => KeyStatus::Active,
        "revoked" => KeyStatus::Revoked,
        _ => KeyStatus::Unissued,
    };
    (
        hash,
        KeyEntry {
            id,
            name,
            prefix,
            status,
            created_at,
            revoked_at,
        },
    )
}

fn provider_entry(row: ProviderRow) -> Result<ProviderEntry> {
    let (id, spec, created_at, updated_at) = row;
    let spec = serde_json::from_value(spec)
        .map_err(|e| RuntimeError::Corrupt(format!("provider {id}: {e}")))?;
    Ok(ProviderEntry {
        id,
        spec,
        created_at,
        updated_at,
    })
}

/// Rewrites a key's registry row from its events (newer versions win).
pub async fn refresh_key(pool: &PgPool, id: Uuid) -> Result<()> {
    let Some((key, version)) = store::load::<KeyAggregate>(pool, &id.to_string()).await? else {
        return Ok(());
    };
    let Some(created_at) = key.created_at else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO api_keys (id, name, key_hash, prefix, status, created_at, revoked_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status,
           revoked_at = EXCLUDED.revoked_at, version = EXCLUDED.version
         WHERE api_keys.version < EXCLUDED.version",
    )
    .bind(id)
    .bind(&key.name)
    .bind(&key.key_hash)
    .bind(&key.prefix)
    .bind(key.status.as_str())
    .bind(created_at)
    .bind(key.revoked_at)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Rewrites a provider's registry row from its events (newer versions win).
pub async fn refresh_provider(pool: &PgPool, id: Uuid) -> Result<()> {
    let Some((provider, version)) = store::load::<ProviderAggregate>(pool, &id.to_string()).await?
    else {
        return Ok(());
    };
    let (Some(spec), Some(created_at), Some(updated_at)) =
        (provider.spec, provider.created_at, provider.updated_at)
    else {
        return Ok(());
    };
    let spec_json =
        serde_json::to_value(&spec).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO providers (id, name, spec, removed, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, spec = EXCLUDED.spec,
           removed = EXCLUDED.removed, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
         WHERE providers.version < EXCLUDED.version",
    )
    .bind(id)
    .bind(&spec.name)
    .bind(spec_json)
    .bind(provider.removed)
    .bind(created_at)
    .bind(updated_at)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Tells every replica that a key or provider changed.
pub async fn announce(client: &async_nats::Client, names: &Names, kind: &str, id: Uuid) {
    let subject = names.registry_subject(kind);
    if let Err(e) = client.publish(subject, id.to_string().into()).await {
        tracing::warn!(error = %e, "could not announce a registry change; replicas catch up on their next full reload");
    }
    let _ = client.flush().await;
}
