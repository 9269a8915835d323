//! Admin users in the registry: their rows, folded from the admin user
//! aggregate's events, and the in-memory index of their tokens' hashes.
//!
//! Invariants: a token authenticates only while its user is active and the
//! token itself is live (unrevoked, unexpired) in the user's current state;
//! the hash index only finds candidates. A token unknown to this replica
//! (made a moment ago on another) is looked up by its hash in
//! `admin_tokens`, with at most a few such lookups at once, like API keys.

use std::sync::Arc;
use std::time::Duration;

use aigw_events::{AdminToken, AdminUserAggregate};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::registry::State;
use crate::teams::UnitRow;
use crate::{Registry, Result, RuntimeError, store};

pub const KIND_USERS: &str = "users";

/// An admin user and their whole current state.
#[derive(Debug, Clone, PartialEq)]
pub struct UserEntry {
    pub id: Uuid,
    pub state: AdminUserAggregate,
}

impl UserEntry {
    /// The token of this user whose secret hashes to `hash`, if it
    /// authenticates at `now` (user active, token live).
    pub fn live_token(&self, hash: &str, now: DateTime<Utc>) -> Option<&AdminToken> {
        if !self.state.is_active() {
            return None;
        }
        self.state
            .tokens
            .iter()
            .find(|t| t.token_hash == hash && t.is_live(now))
    }
}

pub(crate) fn user_entry((id, state): UnitRow) -> Result<UserEntry> {
    let state = serde_json::from_value(state)
        .map_err(|e| RuntimeError::Corrupt(format!("admin user {id}: {e}")))?;
    Ok(UserEntry { id, state })
}

impl State {
    pub(crate) fn put_user(&mut self, entry: UserEntry) {
        self.remove_user(entry.id);
        for t in &entry.state.tokens {
            self.user_by_token.insert(t.token_hash.clone(), entry.id);
        }
        self.users.insert(entry.id, Arc::new(entry));
    }

    fn remove_user(&mut self, id: Uuid) {
        if let Some(old) = self.users.remove(&id) {
            for t in &old.state.tokens {
                self.user_by_token.remove(&t.token_hash);
            }
        }
    }
}

impl Registry {
    pub async fn reload_user(&self, id: Uuid) -> Result<()> {
        let row: Option<UnitRow> =
            sqlx::query_as("SELECT id, state FROM admin_users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let entry = row.map(user_entry).transpose()?;
        let mut state = self.write();
        match entry {
            Some(entry) => state.put_user(entry),
            None => state.remove_user(id),
        }
        Ok(())
    }

    /// Every admin user (disabled ones too), oldest first.
    pub fn users(&self) -> Vec<Arc<UserEntry>> {
        let mut all: Vec<_> = self.read().users.values().cloned().collect();
        all.sort_by_key(|u| (u.state.created_at, u.id));
        all
    }

    pub fn user(&self, id: Uuid) -> Option<Arc<UserEntry>> {
        self.read().users.get(&id).cloned()
    }

    /// Whether any admin user exists (disabled ones too).
    pub fn has_users(&self) -> bool {
        !self.read().users.is_empty()
    }

    /// Whether some active user holds the owner role.
    pub fn has_owner(&self) -> bool {
        self.read().users.values().any(|u| u.state.is_owner())
    }

    /// The user whose live token hashes to `hash`, and that token.
    pub fn user_by_token(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Option<(Arc<UserEntry>, AdminToken)> {
        let state = self.read();
        let user = state.users.get(state.user_by_token.get(hash)?)?;
        let token = user.live_token(hash, now)?.clone();
        Some((user.clone(), token))
    }

    /// [`Registry::user_by_token`], looking the hash up in the database
    /// when this replica does not know it (see the module's invariants).
    pub async fn find_user_token(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Option<(Arc<UserEntry>, AdminToken)> {
        if let Some(found) = self.user_by_token(hash, now) {
            return Some(found);
        }
        if self.read().user_by_token.contains_key(hash) {
            // Known, but revoked, expired or disabled.
            return None;
        }
        let _permit = tokio::time::timeout(Duration::from_secs(3), self.miss_lookups.acquire())
            .await
            .ok()?
            .ok()?;
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM admin_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
        self.reload_user(id?).await.ok()?;
        self.user_by_token(hash, now)
    }
}

/// Rewrites an admin user's registry row and token index from their events
/// (newer versions win; the index only grows, each hash naming its user).
pub async fn refresh_user(pool: &PgPool, id: Uuid) -> Result<()> {
    let Some((user, version)) = store::load::<AdminUserAggregate>(pool, &id.to_string()).await?
    else {
        return Ok(());
    };
    let Some(created_at) = user.created_at else {
        return Ok(());
    };
    let state = serde_json::to_value(&user).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO admin_users (id, name, email, disabled, state, created_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
           disabled = EXCLUDED.disabled, state = EXCLUDED.state, version = EXCLUDED.version
         WHERE admin_users.version < EXCLUDED.version",
    )
    .bind(id)
    .bind(&user.name)
    .bind(&user.email)
    .bind(!user.is_active())
    .bind(state)
    .bind(created_at)
    .bind(version)
    .execute(pool)
    .await?;
    let hashes: Vec<String> = user.tokens.iter().map(|t| t.token_hash.clone()).collect();
    let token_ids: Vec<Uuid> = user.tokens.iter().map(|t| t.id).collect();
    sqlx::query(
        "INSERT INTO admin_tokens (token_hash, user_id, token_id)
         SELECT h, $1, t FROM UNNEST($2::text[], $3::uuid[]) AS u(h, t)
         ON CONFLICT (token_hash) DO NOTHING",
    )
    .bind(id)
    .bind(hashes)
    .bind(token_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether the database holds an active owner (read at start, before any
/// registry exists).
pub async fn owner_exists(pool: &PgPool) -> Result<bool> {
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM admin_users
          WHERE NOT disabled AND state -> 'roles' @> '[{\"role\": \"owner\"}]'::jsonb)",
    )
    .fetch_one(pool)
    .await?;
    Ok(found)
}
