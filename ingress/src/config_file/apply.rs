//! Applying a plan: each change is the admin API's own command (through the
//! same functions its handlers call), recorded with the file as its actor.
//!
//! Invariants:
//! - appliers take turns: a PostgreSQL advisory lock (held by a transaction,
//!   so it goes when the applier does, even killed) is taken before the
//!   running state is read, so replicas starting at once with the same
//!   file plan one after the other and only the first changes anything;
//!   no duplicate provider or key can come from two appliers;
//! - the file is checked whole before the first command (see `desired`);
//! - a command that fails stops the apply: what ran is said, and applying
//!   again goes on from there (the plan is recomputed from the state).

use aigw_events::AliasCommand;
use chrono::Utc;
use uuid::Uuid;

use super::desired::{self, Env};
use super::plan::{self, Change, Plan};
use super::schema::{Declared, Problems};
use super::{ConfigError, Options};
use crate::AppState;
use crate::error::ApiError;

/// The advisory lock every applier of a configuration file takes.
const LOCK: i64 = 0x6169_6777_636f_6e66; // "aigwconf"

/// A key the apply issued: its secret was shown to nobody.
#[derive(Debug, Clone)]
pub struct Issued {
    pub name: String,
    pub id: Uuid,
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub plan: Plan,
    pub issued: Vec<Issued>,
}

/// Reads the running state afresh and plans `declared` against it.
pub async fn plan(
    state: &AppState,
    file: &str,
    declared: &Declared,
    env: Env<'_>,
    prune: bool,
) -> Result<Plan, ConfigError> {
    state.registry.reload_all().await?;
    let desired = desired::build(state, declared, env, prune).map_err(|list| {
        ConfigError::Invalid(Problems {
            file: file.to_string(),
            list,
        })
    })?;
    Ok(plan::diff(state, &desired, prune))
}

/// Plans and applies `declared`, one applier at a time.
pub async fn apply(
    state: &AppState,
    file: &str,
    declared: &Declared,
    env: Env<'_>,
    options: &Options,
) -> Result<Applied, ConfigError> {
    let mut lock = state.stores.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK)
        .execute(&mut *lock)
        .await?;
    let plan = plan(state, file, declared, env, options.prune).await?;
    let mut issued = Vec::new();
    for (done, change) in plan.changes.iter().enumerate() {
        let ran = run(state, &options.actor, change).await;
        match ran {
            Ok(Some(key)) => issued.push(key),
            Ok(None) => {}
            Err(error) => {
                return Err(ConfigError::Failed {
                    change: change.headline(),
                    done,
                    error,
                });
            }
        }
        tracing::info!(change = %change.headline(), actor = %options.actor, "configuration change applied");
    }
    lock.rollback().await?;
    Ok(Applied { plan, issued })
}

/// One change, through the admin API's functions.
async fn run(state: &AppState, actor: &str, change: &Change) -> Result<Option<Issued>, ApiError> {
    match change {
        Change::CreateProvider { id, spec } => {
            crate::admin::configure(state, actor, *id, spec.clone()).await?;
        }
        Change::UpdateProvider { id, to, .. } => {
            crate::admin::replace(state, actor, *id, to.clone()).await?;
        }
        Change::RemoveProvider { id, .. } => crate::admin::remove(state, actor, *id).await?,
        Change::DefineAlias(spec) => {
            let command = AliasCommand::DefineAlias {
                spec: spec.clone(),
                actor: actor.to_string(),
                at: Utc::now(),
            };
            crate::routing::execute(state, &spec.name, actor, command).await?;
        }
        Change::UpdateAlias { to, .. } => {
            let command = AliasCommand::UpdateAlias {
                spec: to.clone(),
                actor: actor.to_string(),
                at: Utc::now(),
            };
            crate::routing::execute(state, &to.name, actor, command).await?;
        }
        Change::RemoveAlias(name) => {
            let command = AliasCommand::RemoveAlias {
                actor: actor.to_string(),
                at: Utc::now(),
            };
            crate::routing::execute(state, name, actor, command).await?;
        }
        Change::IssueKey(settings) => {
            // The secret is dropped here: a key declared in a file gets its
            // secret from `POST /admin/api/keys/{id}/rotate`.
            let (entry, _secret) = crate::keys::issue(state, actor, settings.clone()).await?;
            return Ok(Some(Issued {
                name: settings.name.clone(),
                id: entry.id,
            }));
        }
        Change::UpdateKey { id, to, .. } => {
            crate::keys::reconfigure(state, actor, *id, to.clone()).await?;
        }
        Change::RevokeKey { id, .. } => {
            crate::keys::revoke(state, actor, *id).await?;
        }
    }
    Ok(None)
}
