//! Teams and projects in the registry, and a key's lineage: the project
//! and team whose limits and scopes apply to it on top of its own.
//!
//! Invariants: a key with a `project_id` is only ever admitted with its
//! project and that project's team known (a lineage that cannot be
//! resolved refuses the request, it never falls back to the key alone);
//! its effective scopes are its own within every level's
//! (`KeyScopes::within`), and every level's rate limits and budget are
//! enforced, each on its own shared counter.

use std::sync::Arc;

use aigw_events::key::KeyScopes;
use aigw_events::wire::Level;
use aigw_events::{Policy, ProjectAggregate, TeamAggregate, UnitStatus};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{KeyEntry, Result, RuntimeError, store};

pub const KIND_TEAMS: &str = "teams";
pub const KIND_PROJECTS: &str = "projects";

#[derive(Debug, Clone, PartialEq)]
pub struct TeamEntry {
    pub id: Uuid,
    pub state: TeamAggregate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectEntry {
    pub id: Uuid,
    pub state: ProjectAggregate,
}

/// The levels above a key, as the registry knows them now.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    pub project: Option<Arc<ProjectEntry>>,
    pub team: Option<Arc<TeamEntry>>,
}

/// One level's limits, named.
#[derive(Debug, Clone, Copy)]
pub struct LevelPolicy<'a> {
    pub level: Level,
    pub name: &'a str,
    pub policy: &'a Policy,
}

/// Why a key's lineage cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    #[error("the key's project {0} does not exist")]
    NoProject(Uuid),
    #[error("the project's team {0} does not exist")]
    NoTeam(Uuid),
}

impl Lineage {
    /// The levels above the key, nearest first (project, then team).
    pub fn levels(&self) -> Vec<LevelPolicy<'_>> {
        let mut out = Vec::new();
        if let Some(p) = &self.project {
            out.push(LevelPolicy {
                level: Level::Project(p.id),
                name: &p.state.name,
                policy: &p.state.policy,
            });
        }
        if let Some(t) = &self.team {
            out.push(LevelPolicy {
                level: Level::Team(t.id),
                name: &t.state.name,
                policy: &t.state.policy,
            });
        }
        out
    }

    /// What the key may use: its own scopes within every level's.
    pub fn scopes(&self, key: &KeyEntry) -> KeyScopes {
        key.state
            .settings
            .scopes
            .within(self.levels().iter().map(|l| &l.policy.scopes))
    }

    pub fn project_id(&self) -> Option<Uuid> {
        self.project.as_ref().map(|p| p.id)
    }

    pub fn team_id(&self) -> Option<Uuid> {
        self.team.as_ref().map(|t| t.id)
    }
}

pub(crate) type UnitRow = (Uuid, serde_json::Value);

pub(crate) fn team_entry((id, state): UnitRow) -> Result<TeamEntry> {
    let state = serde_json::from_value(state)
        .map_err(|e| RuntimeError::Corrupt(format!("team {id}: {e}")))?;
    Ok(TeamEntry { id, state })
}

pub(crate) fn project_entry((id, state): UnitRow) -> Result<ProjectEntry> {
    let state = serde_json::from_value(state)
        .map_err(|e| RuntimeError::Corrupt(format!("project {id}: {e}")))?;
    Ok(ProjectEntry { id, state })
}

/// Rewrites a team's registry row from its events (newer versions win).
pub async fn refresh_team(pool: &PgPool, id: Uuid) -> Result<()> {
    let Some((team, version)) = store::load::<TeamAggregate>(pool, &id.to_string()).await? else {
        return Ok(());
    };
    let Some(created_at) = team.created_at else {
        return Ok(());
    };
    let state = serde_json::to_value(&team).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO teams (id, name, deleted, state, created_at, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, deleted = EXCLUDED.deleted,
           state = EXCLUDED.state, version = EXCLUDED.version
         WHERE teams.version < EXCLUDED.version",
    )
    .bind(id)
    .bind(&team.name)
    .bind(team.status == UnitStatus::Deleted)
    .bind(state)
    .bind(created_at)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Rewrites a project's registry row from its events (newer versions win).
pub async fn refresh_project(pool: &PgPool, id: Uuid) -> Result<()> {
    let Some((project, version)) = store::load::<ProjectAggregate>(pool, &id.to_string()).await?
    else {
        return Ok(());
    };
    let Some(created_at) = project.created_at else {
        return Ok(());
    };
    let state = serde_json::to_value(&project).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO projects (id, team_id, name, deleted, state, created_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, deleted = EXCLUDED.deleted,
           state = EXCLUDED.state, version = EXCLUDED.version
         WHERE projects.version < EXCLUDED.version",
    )
    .bind(id)
    .bind(project.team_id)
    .bind(&project.name)
    .bind(project.status == UnitStatus::Deleted)
    .bind(state)
    .bind(created_at)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}
