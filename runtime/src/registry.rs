//! The registry: every key, provider, alias, team, project and admin user,
//! cached in memory by each process.
//!
//! PostgreSQL tables `api_keys` and `providers` hold the current state folded
//! from events. Each process keeps a copy in memory, so authentication and
//! routing never query the database per request; a change is announced on
//! NATS (`<ns>.registry.<kind>`, payload: the id) and every replica reloads that
//! row at once, with a full reload every few seconds in case a notice was lost.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aigw_events::deployments::Lookup;
use aigw_events::key::KeyScopes;
use aigw_events::provider::ProviderSpec;
use aigw_events::{
    AliasAggregate, AliasSpec, KeyAggregate, KeyStatus, Names, ProviderAggregate, Strategy,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::teams::{
    KIND_PROJECTS, KIND_TEAMS, Lineage, LineageError, ProjectEntry, TeamEntry, UnitRow,
    project_entry, team_entry,
};
use crate::users::{KIND_USERS, UserEntry, user_entry};
use crate::{Result, RuntimeError, store};

pub const KIND_KEYS: &str = "keys";
pub const KIND_PROVIDERS: &str = "providers";
pub const KIND_ALIASES: &str = "aliases";

/// A key and its whole current state (settings, limits, scopes, top-ups).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    pub id: Uuid,
    pub state: KeyAggregate,
}

impl KeyEntry {
    pub fn status(&self) -> KeyStatus {
        self.state.status
    }

    /// Whether `hash` is this key's current secret, or its previous one
    /// still within its grace period.
    pub fn accepts(&self, hash: &str, now: DateTime<Utc>) -> bool {
        self.state.key_hash == hash
            || self
                .state
                .previous
                .as_ref()
                .is_some_and(|p| p.key_hash == hash && p.until > now)
    }
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
    /// The id the provider is called with (for Azure, a deployment name).
    pub model: String,
    /// Share of traffic under the weighted strategy.
    pub weight: u32,
}

impl Target {
    pub fn new(provider: Arc<ProviderEntry>, model: &str) -> Self {
        Self {
            provider,
            model: model.to_string(),
            weight: 1,
        }
    }

    /// The model this target serves, when it is not the id the provider is
    /// called with: an Azure deployment's model.
    pub fn served_model(&self) -> Option<&str> {
        self.provider
            .spec
            .served_model(&self.model)
            .filter(|m| *m != self.model)
    }

    /// Whether `scopes` let a request for `requested` go here: the rule of
    /// `KeyScopes::allows_target`, where an Azure deployment may be allowed
    /// by its name or by the model it serves.
    pub fn allowed_by(&self, scopes: &KeyScopes, requested: &str) -> bool {
        let (id, name) = (self.provider.id.to_string(), &self.provider.spec.name);
        scopes.allows_target(requested, &self.model, &id, name)
            || self
                .served_model()
                .is_some_and(|m| scopes.allows_target(requested, m, &id, name))
    }

    /// Whether `scopes` allow the model side of this target, whatever the
    /// provider: the name asked for, the id called or the model served.
    pub fn model_allowed_by(&self, scopes: &KeyScopes, requested: &str) -> bool {
        scopes.allows_model(requested)
            || scopes.allows_model(&self.model)
            || self.served_model().is_some_and(|m| scopes.allows_model(m))
    }

    /// `provider/model`, for logs and routing records.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider.spec.name, self.model)
    }
}

/// Why a model could not be resolved to any provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no provider named {0:?}")]
    UnknownProvider(String),
    #[error("the provider {0:?} is disabled")]
    ProviderDisabled(String),
    #[error("the model `{0}` does not exist or you do not have access to it")]
    UnknownModel(String),
    /// Several deployments of one provider serve the model named.
    #[error(
        "the model `{model}` is served by several deployments of provider `{provider}` ({}): name one of them as `model`, or ask an admin for an alias over them",
        deployments.join(", ")
    )]
    AmbiguousModel {
        model: String,
        provider: String,
        deployments: Vec<String>,
    },
}

/// Where `name` goes at `provider` when the caller names the provider (a
/// pin, `provider/model`, an alias target): the id it serves the name by,
/// or the name as given where the provider takes ids it does not list.
fn at_provider(provider: &Arc<ProviderEntry>, name: &str) -> Result<Target, ResolveError> {
    match provider.spec.lookup(name) {
        Lookup::Serves(id) => Ok(Target::new(provider.clone(), id)),
        Lookup::NotServed if provider.spec.takes_unlisted() => {
            Ok(Target::new(provider.clone(), name))
        }
        Lookup::NotServed => Err(ResolveError::UnknownModel(name.to_string())),
        Lookup::Ambiguous(deployments) => Err(ambiguous(provider, name, deployments)),
    }
}

fn ambiguous(provider: &ProviderEntry, name: &str, deployments: Vec<&str>) -> ResolveError {
    ResolveError::AmbiguousModel {
        model: name.to_string(),
        provider: provider.spec.name.clone(),
        deployments: deployments.into_iter().map(str::to_string).collect(),
    }
}

#[derive(Default)]
pub(crate) struct State {
    keys: HashMap<Uuid, Arc<KeyEntry>>,
    /// Current and grace-period secrets' hashes.
    by_hash: HashMap<String, Uuid>,
    providers: HashMap<Uuid, Arc<ProviderEntry>>,
    aliases: HashMap<String, Arc<AliasSpec>>,
    /// Live (not deleted) teams and projects.
    teams: HashMap<Uuid, Arc<TeamEntry>>,
    projects: HashMap<Uuid, Arc<ProjectEntry>>,
    /// Admin users (disabled ones too) and their tokens' hashes.
    pub(crate) users: HashMap<Uuid, Arc<UserEntry>>,
    pub(crate) user_by_token: HashMap<String, Uuid>,
}

impl State {
    fn put_key(&mut self, entry: KeyEntry) {
        self.remove_key(entry.id);
        self.by_hash.insert(entry.state.key_hash.clone(), entry.id);
        if let Some(previous) = &entry.state.previous {
            self.by_hash.insert(previous.key_hash.clone(), entry.id);
        }
        self.keys.insert(entry.id, Arc::new(entry));
    }

    fn remove_key(&mut self, id: Uuid) {
        if let Some(old) = self.keys.remove(&id) {
            self.by_hash.remove(&old.state.key_hash);
            if let Some(previous) = &old.state.previous {
                self.by_hash.remove(&previous.key_hash);
            }
        }
    }
}

pub struct Registry {
    pub(crate) pool: PgPool,
    state: RwLock<State>,
    pub(crate) miss_lookups: tokio::sync::Semaphore,
    /// When the last reload on a miss started (bounds reloads to 5 a second).
    last_miss_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
}

type KeyRow = (Uuid, serde_json::Value);
type ProviderRow = (Uuid, serde_json::Value, DateTime<Utc>, DateTime<Utc>);

const KEY_COLUMNS: &str = "id, state";
const PROVIDER_COLUMNS: &str = "id, spec, created_at, updated_at";

impl Registry {
    /// A registry filled from the database.
    pub async fn load(pool: PgPool) -> Result<Arc<Self>> {
        let registry = Arc::new(Self {
            pool,
            state: RwLock::new(State::default()),
            miss_lookups: tokio::sync::Semaphore::new(4),
            last_miss_reload: tokio::sync::Mutex::new(None),
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
        let aliases: Vec<(String, serde_json::Value)> =
            sqlx::query_as("SELECT name, spec FROM aliases WHERE NOT removed")
                .fetch_all(&self.pool)
                .await?;
        let teams: Vec<UnitRow> = sqlx::query_as("SELECT id, state FROM teams WHERE NOT deleted")
            .fetch_all(&self.pool)
            .await?;
        let projects: Vec<UnitRow> =
            sqlx::query_as("SELECT id, state FROM projects WHERE NOT deleted")
                .fetch_all(&self.pool)
                .await?;
        let users: Vec<UnitRow> = sqlx::query_as("SELECT id, state FROM admin_users")
            .fetch_all(&self.pool)
            .await?;
        let mut fresh = State::default();
        for row in users {
            fresh.put_user(user_entry(row)?);
        }
        for row in teams {
            let entry = team_entry(row)?;
            fresh.teams.insert(entry.id, Arc::new(entry));
        }
        for row in projects {
            let entry = project_entry(row)?;
            fresh.projects.insert(entry.id, Arc::new(entry));
        }
        for row in keys {
            fresh.put_key(key_entry(row)?);
        }
        for (name, spec) in aliases {
            let spec: AliasSpec = serde_json::from_value(spec)
                .map_err(|e| RuntimeError::Corrupt(format!("alias {name}: {e}")))?;
            fresh.aliases.insert(name, Arc::new(spec));
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
        let entry = row.map(key_entry).transpose()?;
        let mut state = self.write();
        match entry {
            Some(entry) => state.put_key(entry),
            None => state.remove_key(id),
        }
        Ok(())
    }

    pub async fn reload_team(&self, id: Uuid) -> Result<()> {
        let row: Option<UnitRow> =
            sqlx::query_as("SELECT id, state FROM teams WHERE id = $1 AND NOT deleted")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let entry = row.map(team_entry).transpose()?;
        let mut state = self.write();
        match entry {
            Some(entry) => state.teams.insert(id, Arc::new(entry)),
            None => state.teams.remove(&id),
        };
        Ok(())
    }

    pub async fn reload_project(&self, id: Uuid) -> Result<()> {
        let row: Option<UnitRow> =
            sqlx::query_as("SELECT id, state FROM projects WHERE id = $1 AND NOT deleted")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let entry = row.map(project_entry).transpose()?;
        let mut state = self.write();
        match entry {
            Some(entry) => state.projects.insert(id, Arc::new(entry)),
            None => state.projects.remove(&id),
        };
        Ok(())
    }

    /// Live teams, oldest first.
    pub fn teams(&self) -> Vec<Arc<TeamEntry>> {
        let mut all: Vec<_> = self.read().teams.values().cloned().collect();
        all.sort_by_key(|t| (t.state.created_at, t.id));
        all
    }

    pub fn team(&self, id: Uuid) -> Option<Arc<TeamEntry>> {
        self.read().teams.get(&id).cloned()
    }

    /// Live projects, oldest first.
    pub fn projects(&self) -> Vec<Arc<ProjectEntry>> {
        let mut all: Vec<_> = self.read().projects.values().cloned().collect();
        all.sort_by_key(|p| (p.state.created_at, p.id));
        all
    }

    pub fn project(&self, id: Uuid) -> Option<Arc<ProjectEntry>> {
        self.read().projects.get(&id).cloned()
    }

    /// The project and team above `key` (see `teams`): an error when the
    /// key names a project (or the project a team) this registry does not
    /// know, never the key's own limits alone.
    pub fn lineage(&self, key: &KeyEntry) -> Result<Lineage, LineageError> {
        let Some(project_id) = key.state.settings.project_id else {
            return Ok(Lineage::default());
        };
        let state = self.read();
        let project = state
            .projects
            .get(&project_id)
            .cloned()
            .ok_or(LineageError::NoProject(project_id))?;
        let team = state
            .teams
            .get(&project.state.team_id)
            .cloned()
            .ok_or(LineageError::NoTeam(project.state.team_id))?;
        Ok(Lineage {
            project: Some(project),
            team: Some(team),
        })
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

    /// Looks a secret's hash up in the database when the in-memory registry
    /// does not know it: a key created a moment ago on another replica may
    /// not have been announced here yet. Only unknown keys get here, and at
    /// most a few lookups run at once, so a flood of bad keys cannot load
    /// the database.
    pub async fn find_missing_key(&self, hash: &str, now: DateTime<Utc>) -> Option<Arc<KeyEntry>> {
        let _permit = tokio::time::timeout(Duration::from_secs(3), self.miss_lookups.acquire())
            .await
            .ok()?
            .ok()?;
        // Another lookup may have loaded it while we waited.
        if let Some(found) = self.key_by_hash(hash, now) {
            return Some(found);
        }
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM api_keys WHERE key_hash = $1 OR previous_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
        self.reload_key(id?).await.ok()?;
        self.key_by_hash(hash, now)
    }

    pub async fn reload_alias(&self, name: &str) -> Result<()> {
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT spec FROM aliases WHERE name = $1 AND NOT removed")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        let spec = row
            .map(|(spec,)| serde_json::from_value::<AliasSpec>(spec))
            .transpose()
            .map_err(|e| RuntimeError::Corrupt(format!("alias {name}: {e}")))?;
        let mut state = self.write();
        match spec {
            Some(spec) => state.aliases.insert(name.to_string(), Arc::new(spec)),
            None => state.aliases.remove(name),
        };
        Ok(())
    }

    pub fn alias(&self, name: &str) -> Option<Arc<AliasSpec>> {
        self.read().aliases.get(name).cloned()
    }

    pub fn aliases(&self) -> Vec<Arc<AliasSpec>> {
        let mut all: Vec<_> = self.read().aliases.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The key whose secret (current, or previous within its grace period)
    /// hashes to `hash`, whatever its status.
    pub fn key_by_hash(&self, hash: &str, now: DateTime<Utc>) -> Option<Arc<KeyEntry>> {
        let state = self.read();
        let id = state.by_hash.get(hash)?;
        state.keys.get(id).filter(|k| k.accepts(hash, now)).cloned()
    }

    pub fn keys(&self) -> Vec<Arc<KeyEntry>> {
        let mut keys: Vec<_> = self.read().keys.values().cloned().collect();
        keys.sort_by_key(|k| (k.state.created_at, k.id));
        keys
    }

    pub fn key(&self, id: Uuid) -> Option<Arc<KeyEntry>> {
        self.read().keys.get(&id).cloned()
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
    /// `model` is a model id some provider lists (for Azure: a deployment
    /// name, or a model exactly one of the provider's deployments serves),
    /// or `provider/model`. A pinned provider (by id or name) is used for
    /// whatever model is asked, except that an Azure provider serves only
    /// its deployments. A model that several deployments of one provider
    /// serve is refused as ambiguous, rather than guessed.
    pub fn resolve(&self, model: &str, pin: Option<&str>) -> Result<Vec<Target>, ResolveError> {
        if let Some(pin) = pin {
            let provider = self
                .provider(pin)
                .ok_or_else(|| ResolveError::UnknownProvider(pin.to_string()))?;
            if provider.spec.disabled {
                return Err(ResolveError::ProviderDisabled(provider.spec.name.clone()));
            }
            let model = match model.split_once('/') {
                Some((prefix, rest)) if prefix == provider.spec.name => rest,
                _ => model,
            };
            return Ok(vec![at_provider(&provider, model)?]);
        }
        if let Some(alias) = self.alias(model) {
            let targets: Vec<Target> = alias
                .targets
                .iter()
                .filter_map(|t| {
                    let provider = self.provider(&t.provider)?;
                    if provider.spec.disabled {
                        return None;
                    }
                    let target = at_provider(&provider, &t.model).ok()?;
                    Some(Target {
                        weight: t.weight,
                        ..target
                    })
                })
                .collect();
            if targets.is_empty() {
                return Err(ResolveError::UnknownModel(model.to_string()));
            }
            return Ok(targets);
        }
        let providers: Vec<_> = self
            .providers()
            .into_iter()
            .filter(|p| !p.spec.disabled)
            .collect();
        let mut direct = Vec::new();
        for p in &providers {
            match p.spec.lookup(model) {
                Lookup::Serves(id) => direct.push(Target::new(p.clone(), id)),
                Lookup::Ambiguous(deployments) => return Err(ambiguous(p, model, deployments)),
                Lookup::NotServed => {}
            }
        }
        if !direct.is_empty() {
            return Ok(direct);
        }
        if let Some((prefix, rest)) = model.split_once('/')
            && let Some(p) = providers.iter().find(|p| p.spec.name == prefix)
        {
            return Ok(vec![at_provider(p, rest)?]);
        }
        Err(ResolveError::UnknownModel(model.to_string()))
    }

    /// Like [`Registry::resolve`], but on a miss reloads from the database
    /// once (at most five times a second in all) and tries again: a provider
    /// or alias created a moment ago on another replica may not have been
    /// announced here yet.
    pub async fn resolve_fresh(
        &self,
        model: &str,
        pin: Option<&str>,
    ) -> Result<Vec<Target>, ResolveError> {
        match self.resolve(model, pin) {
            Ok(targets) => Ok(targets),
            Err(first) => {
                {
                    let mut last = self.last_miss_reload.lock().await;
                    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
                    if !due {
                        return Err(first);
                    }
                    *last = Some(std::time::Instant::now());
                    if let Err(e) = self.reload_all().await {
                        tracing::warn!(error = %e, "registry reload on a miss failed");
                        return Err(first);
                    }
                }
                self.resolve(model, pin)
            }
        }
    }

    /// The routing strategy an alias asks for, if `model` is an alias.
    pub fn strategy_for(&self, model: &str) -> Option<Strategy> {
        self.alias(model).map(|a| a.strategy)
    }

    /// Keeps this registry current: reloads a row when a change is announced,
    /// and everything every `full_every`. The subscription is in place (and
    /// the registry reloaded once more) before this returns, so no change
    /// made after it returns can be missed.
    pub async fn follow(
        self: &Arc<Self>,
        client: async_nats::Client,
        names: &Names,
        full_every: Duration,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let subject = names.registry_wildcard();
        let mut changes = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| RuntimeError::Nats(format!("subscribing to {subject}: {e}")))?;
        client
            .flush()
            .await
            .map_err(|e| RuntimeError::Nats(format!("subscribing to {subject}: {e}")))?;
        self.reload_all().await?;
        let registry = self.clone();
        Ok(tokio::spawn(async move {
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
        }))
    }

    async fn apply_notice(&self, subject: &str, payload: &[u8]) -> Result<()> {
        if subject.ends_with(KIND_ALIASES) {
            return match std::str::from_utf8(payload) {
                Ok(name) => self.reload_alias(name).await,
                Err(_) => Ok(()),
            };
        }
        let id = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok());
        let Some(id) = id else { return Ok(()) };
        if subject.ends_with(KIND_KEYS) {
            self.reload_key(id).await
        } else if subject.ends_with(KIND_TEAMS) {
            self.reload_team(id).await
        } else if subject.ends_with(KIND_PROJECTS) {
            self.reload_project(id).await
        } else if subject.ends_with(KIND_USERS) {
            self.reload_user(id).await
        } else if subject.ends_with(KIND_PROVIDERS) {
            self.reload_provider(id).await
        } else {
            Ok(())
        }
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain maps.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn key_entry(row: KeyRow) -> Result<KeyEntry> {
    let (id, state) = row;
    let state = serde_json::from_value(state)
        .map_err(|e| RuntimeError::Corrupt(format!("key {id}: {e}")))?;
    Ok(KeyEntry { id, state })
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
    let state = serde_json::to_value(&key).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO api_keys (id, name, key_hash, previous_hash, prefix, status, state,
                               created_at, revoked_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, key_hash = EXCLUDED.key_hash,
           previous_hash = EXCLUDED.previous_hash, prefix = EXCLUDED.prefix,
           status = EXCLUDED.status, state = EXCLUDED.state,
           revoked_at = EXCLUDED.revoked_at, version = EXCLUDED.version
         WHERE api_keys.version < EXCLUDED.version",
    )
    .bind(id)
    .bind(&key.settings.name)
    .bind(&key.key_hash)
    .bind(key.previous.as_ref().map(|p| p.key_hash.clone()))
    .bind(&key.prefix)
    .bind(key.status.as_str())
    .bind(state)
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

/// Rewrites an alias's registry row from its events (newer versions win).
pub async fn refresh_alias(pool: &PgPool, name: &str) -> Result<()> {
    let Some((alias, version)) = store::load::<AliasAggregate>(pool, name).await? else {
        return Ok(());
    };
    let (Some(spec), Some(updated_at)) = (alias.spec, alias.updated_at) else {
        return Ok(());
    };
    let spec = serde_json::to_value(&spec).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO aliases (name, spec, removed, updated_at, version) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, removed = EXCLUDED.removed,
           updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
         WHERE aliases.version < EXCLUDED.version",
    )
    .bind(name)
    .bind(spec)
    .bind(alias.removed)
    .bind(updated_at)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Tells every replica that a key or provider changed.
pub async fn announce(client: &async_nats::Client, names: &Names, kind: &str, id: Uuid) {
    announce_name(client, names, kind, &id.to_string()).await;
}

/// Tells every replica that the registry entry `name` of `kind` changed.
pub async fn announce_name(client: &async_nats::Client, names: &Names, kind: &str, name: &str) {
    let subject = names.registry_subject(kind);
    if let Err(e) = client.publish(subject, name.to_string().into()).await {
        tracing::warn!(error = %e, "could not announce a registry change; replicas catch up on their next full reload");
    }
    let _ = client.flush().await;
}
