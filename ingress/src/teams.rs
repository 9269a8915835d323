//! Teams and projects: `/admin/api/teams` and `/admin/api/projects`.
//!
//! Every change is a command on the team or project aggregate (with the
//! admin identity as actor); the registry row is refreshed from the events
//! and announced to every replica before the call returns. Names are
//! validated like keys' and unique among live teams (projects: among live
//! projects); limits and scopes go through the very rules of
//! `KeyInput::apply`. A team with live projects, or a project with
//! unrevoked keys, is not deleted (409, saying why).

use std::sync::Arc;

use aigw_events::key::{BudgetPeriod, KeySettings};
use aigw_events::wire::Level;
use aigw_events::{META_ACTOR, Policy, ProjectCommand, TeamCommand, UnitError};
use aigw_runtime::limits::Owner;
use aigw_runtime::registry;
use aigw_runtime::store::metadata;
use aigw_runtime::teams::{self, KIND_PROJECTS, KIND_TEAMS, ProjectEntry, TeamEntry};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::{NotFound, command_error, parse_id, parse_json};
use crate::auth::Admin;
use crate::chat::body_bytes;
use crate::error::ApiError;
use crate::keys::{KeyInput, limits_view, present, scopes_view, usd};
use crate::roles::TeamScope;

impl NotFound for UnitError {
    fn is_not_found(&self) -> bool {
        matches!(self, UnitError::NotFound)
    }
}

/// What an admin sends to create or change a team or a project. On
/// `PATCH`, an absent field keeps its value and `null` removes a limit.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitInput {
    /// 1-128 bytes, no control characters; unique.
    #[serde(default)]
    pub name: Option<String>,
    /// A project's team (required when creating a project; a project
    /// never changes team).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub team_id: Option<Uuid>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 1)]
    pub rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 0)]
    pub budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub budget_tokens: Option<Option<i64>>,
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::schemas::BudgetPeriod>)]
    pub budget_period: Option<BudgetPeriod>,
    /// Percentages of `budget_usd` whose crossing is an alert (1 to 100,
    /// at most 10); `null`: the defaults, 50, 80 and 100.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_items = 10)]
    pub alert_thresholds: Option<Option<Vec<u8>>>,
    #[serde(default)]
    #[schema(max_items = 256)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    #[schema(max_items = 256)]
    pub allowed_providers: Option<Vec<String>>,
}

impl UnitInput {
    /// `(name, policy)` with this input's changes applied, validated by
    /// the rules of a key's settings.
    pub fn apply(self, name: &str, policy: &Policy) -> Result<(String, Policy), ApiError> {
        let base = KeySettings {
            name: name.to_string(),
            limits: policy.limits.clone(),
            scopes: policy.scopes.clone(),
            ..KeySettings::default()
        };
        let input = KeyInput {
            name: self.name,
            rpm: self.rpm,
            tpm: self.tpm,
            budget_usd: self.budget_usd,
            budget_tokens: self.budget_tokens,
            budget_period: self.budget_period,
            alert_thresholds: self.alert_thresholds,
            allowed_models: self.allowed_models,
            allowed_providers: self.allowed_providers,
            ..KeyInput::default()
        };
        let s = input.apply(base)?;
        Ok((
            s.name,
            Policy {
                limits: s.limits,
                scopes: s.scopes,
            },
        ))
    }
}

fn no_team() -> ApiError {
    ApiError::NotFound {
        message: "No such team.".into(),
        code: "not_found",
    }
}

fn no_project() -> ApiError {
    ApiError::NotFound {
        message: "No such project.".into(),
        code: "not_found",
    }
}

fn taken(what: &str, name: &str) -> ApiError {
    ApiError::Conflict(format!("A {what} named {name:?} already exists."))
}

fn team_view(state: &AppState, t: &TeamEntry) -> Value {
    let s = &t.state;
    let projects = state
        .registry
        .projects()
        .iter()
        .filter(|p| p.state.team_id == t.id)
        .count();
    json!({
        "id": t.id,
        "object": "team",
        "name": s.name,
        "limits": limits_view(&s.policy.limits),
        "scopes": scopes_view(&s.policy.scopes),
        "projects": projects,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

fn project_view(state: &AppState, p: &ProjectEntry) -> Value {
    let s = &p.state;
    let keys = live_keys(state, p.id);
    json!({
        "id": p.id,
        "object": "project",
        "name": s.name,
        "team_id": s.team_id,
        "team_name": state.registry.team(s.team_id).map(|t| t.state.name.clone()),
        "limits": limits_view(&s.policy.limits),
        "scopes": scopes_view(&s.policy.scopes),
        "keys": keys,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

/// Unrevoked keys of a project.
fn live_keys(state: &AppState, project: Uuid) -> usize {
    state
        .registry
        .keys()
        .iter()
        .filter(|k| {
            k.state.settings.project_id == Some(project)
                && k.state.status == aigw_events::KeyStatus::Active
        })
        .count()
}

/// The level's budget in the current period: spent, held, remaining.
pub(crate) async fn level_budget(
    state: &AppState,
    owner: Owner,
    policy: &Policy,
) -> Result<Value, ApiError> {
    let (period, micros, tokens) = policy.budgets_at(Utc::now());
    let used = state
        .limiter
        .budget(owner, &period)
        .await
        .map_err(|e| ApiError::Unavailable(format!("budget state: {e}")))?;
    let (held_micros, held_tokens) = used.held();
    Ok(json!({
        "period": period,
        "budget_usd": micros.map(usd),
        "spent_usd": usd(used.spent_micros),
        "spent_micros": used.spent_micros,
        "held_usd": usd(held_micros),
        "remaining_usd": micros.map(|b| usd(b.saturating_sub(used.spent_micros).saturating_sub(held_micros).max(0))),
        "budget_tokens": tokens,
        "alert_thresholds": policy.limits.alert_thresholds(),
        "spent_tokens": used.spent_tokens,
        "held_tokens": held_tokens,
        "remaining_tokens": tokens.map(|b| b.saturating_sub(used.spent_tokens).saturating_sub(held_tokens).max(0)),
    }))
}

async fn sync_team(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    teams::refresh_team(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_team(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_TEAMS, id).await;
    Ok(())
}

async fn sync_project(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    teams::refresh_project(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_project(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_PROJECTS, id).await;
    Ok(())
}

/// Runs a team command by `actor` and syncs the registry.
pub(crate) async fn team_command(
    state: &AppState,
    id: Uuid,
    actor: &str,
    command: TeamCommand,
) -> Result<(), ApiError> {
    state
        .stores
        .teams
        .execute_with_metadata(&id.to_string(), command, metadata(&[(META_ACTOR, actor)]))
        .await
        .map_err(|e| command_error(e, "team"))?;
    sync_team(state, id).await
}

/// Runs a project command by `actor` and syncs the registry.
pub(crate) async fn project_command(
    state: &AppState,
    id: Uuid,
    actor: &str,
    command: ProjectCommand,
) -> Result<(), ApiError> {
    state
        .stores
        .projects
        .execute_with_metadata(&id.to_string(), command, metadata(&[(META_ACTOR, actor)]))
        .await
        .map_err(|e| command_error(e, "project"))?;
    sync_project(state, id).await
}

fn name_taken_by_team(state: &AppState, name: &str, except: Option<Uuid>) -> bool {
    state
        .registry
        .teams()
        .iter()
        .any(|t| t.state.name == name && Some(t.id) != except)
}

fn name_taken_by_project(state: &AppState, name: &str, except: Option<Uuid>) -> bool {
    state
        .registry
        .projects()
        .iter()
        .any(|p| p.state.name == name && Some(p.id) != except)
}

fn found<T>(entry: Option<Arc<T>>, missing: fn() -> ApiError) -> Result<Arc<T>, ApiError> {
    entry.ok_or_else(missing)
}

// ---- teams ----

#[utoipa::path(
    get,
    path = "/admin/api/teams",
    tag = "teams",
    summary = "Every team",
    responses((status = 200, description = "The teams.", body = crate::openapi::admin::TeamList))
)]
pub async fn list_teams(State(state): State<AppState>, scope: TeamScope) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .teams()
        .iter()
        .filter(|t| scope.allows(Some(t.id)))
        .map(|t| team_view(&state, t))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

#[utoipa::path(
    post,
    path = "/admin/api/teams",
    tag = "teams",
    summary = "Create a team",
    request_body = UnitInput,
    responses((status = 201, description = "The team.", body = crate::openapi::admin::Team))
)]
pub async fn create_team(
    State(state): State<AppState>,
    Admin(actor): Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: UnitInput = parse_json(&body_bytes(&state, body)?)?;
    if input.name.is_none() {
        return Err(ApiError::BadRequest {
            message: "Missing required parameter: 'name'.".into(),
            param: Some("name"),
            code: None,
        });
    }
    if input.team_id.is_some() {
        return Err(ApiError::bad_request("A team has no 'team_id'."));
    }
    let (name, policy) = input.apply("", &Policy::default())?;
    create_team_as(&state, &actor, name, policy)
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

/// Creates a team named `name` (refused if the name is taken).
pub(crate) async fn create_team_as(
    state: &AppState,
    actor: &str,
    name: String,
    policy: Policy,
) -> Result<Value, ApiError> {
    if name_taken_by_team(state, &name, None) {
        return Err(taken("team", &name));
    }
    let id = Uuid::now_v7();
    let command = TeamCommand::CreateTeam {
        name,
        policy,
        actor: actor.to_string(),
        at: Utc::now(),
    };
    team_command(state, id, actor, command).await?;
    let team = found(state.registry.team(id), no_team)?;
    Ok(team_view(state, &team))
}

#[utoipa::path(
    get,
    path = "/admin/api/teams/{id}",
    tag = "teams",
    summary = "One team, with its budget",
    params(("id" = String, Path, description = "The team id.")),
    responses((status = 200, description = "The team.", body = crate::openapi::admin::Team))
)]
pub async fn get_team(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "team")?;
    let team = found(state.registry.team(id), no_team)?;
    let mut view = team_view(&state, &team);
    view["budget"] =
        level_budget(&state, Owner::Level(Level::Team(id)), &team.state.policy).await?;
    Ok(Json(view))
}

#[utoipa::path(
    patch,
    path = "/admin/api/teams/{id}",
    tag = "teams",
    summary = "Rename a team or change its limits and scopes (`null` removes a limit)",
    params(("id" = String, Path, description = "The team id.")),
    request_body = UnitInput,
    responses((status = 200, description = "The team.", body = crate::openapi::admin::Team))
)]
pub async fn update_team(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "team")?;
    let input: UnitInput = parse_json(&body_bytes(&state, body)?)?;
    if input.team_id.is_some() {
        return Err(ApiError::bad_request("A team has no 'team_id'."));
    }
    let team = found(state.registry.team(id), no_team)?;
    let (name, policy) = input.apply(&team.state.name, &team.state.policy)?;
    change_team(&state, &actor, &team, name, policy).await
}

/// Renames and reconfigures `team` (each an event only when it changes).
pub(crate) async fn change_team(
    state: &AppState,
    actor: &str,
    team: &TeamEntry,
    name: String,
    policy: Policy,
) -> Result<Json<Value>, ApiError> {
    let id = team.id;
    if name != team.state.name {
        if name_taken_by_team(state, &name, Some(id)) {
            return Err(taken("team", &name));
        }
        let command = TeamCommand::RenameTeam {
            name,
            actor: actor.to_string(),
            at: Utc::now(),
        };
        team_command(state, id, actor, command).await?;
    }
    if policy != team.state.policy {
        let command = TeamCommand::ReconfigureTeam {
            policy,
            actor: actor.to_string(),
            at: Utc::now(),
        };
        team_command(state, id, actor, command).await?;
    }
    let team = found(state.registry.team(id), no_team)?;
    Ok(Json(team_view(state, &team)))
}

#[utoipa::path(
    delete,
    path = "/admin/api/teams/{id}",
    tag = "teams",
    summary = "Delete a team (refused while it has projects)",
    params(("id" = String, Path, description = "The team id.")),
    responses((status = 200, description = "The deleted team.", body = crate::openapi::admin::Deleted))
)]
pub async fn delete_team(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "team")?;
    found(state.registry.team(id), no_team)?;
    let projects = state
        .registry
        .projects()
        .iter()
        .filter(|p| p.state.team_id == id)
        .count();
    if projects > 0 {
        return Err(ApiError::Conflict(format!(
            "This team still has {projects} project(s): delete them first."
        )));
    }
    let command = TeamCommand::DeleteTeam {
        actor: actor.clone(),
        at: Utc::now(),
    };
    team_command(&state, id, &actor, command).await?;
    Ok(Json(json!({ "id": id, "object": "team", "deleted": true })))
}

// ---- projects ----

#[utoipa::path(
    get,
    path = "/admin/api/projects",
    tag = "teams",
    summary = "Every project",
    responses((status = 200, description = "The projects.", body = crate::openapi::admin::ProjectList))
)]
pub async fn list_projects(State(state): State<AppState>, scope: TeamScope) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .projects()
        .iter()
        .filter(|p| scope.allows(Some(p.state.team_id)))
        .map(|p| project_view(&state, p))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

#[utoipa::path(
    post,
    path = "/admin/api/projects",
    tag = "teams",
    summary = "Create a project in a team",
    request_body = UnitInput,
    responses((status = 201, description = "The project.", body = crate::openapi::admin::Project))
)]
pub async fn create_project(
    State(state): State<AppState>,
    Admin(actor): Admin,
    scope: TeamScope,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: UnitInput = parse_json(&body_bytes(&state, body)?)?;
    if input.name.is_none() {
        return Err(ApiError::BadRequest {
            message: "Missing required parameter: 'name'.".into(),
            param: Some("name"),
            code: None,
        });
    }
    let Some(team_id) = input.team_id else {
        return Err(ApiError::BadRequest {
            message: "Missing required parameter: 'team_id'.".into(),
            param: Some("team_id"),
            code: None,
        });
    };
    if !scope.allows(Some(team_id)) {
        return Err(ApiError::Forbidden {
            message: "A team admin creates projects only in their team.".into(),
            code: "team_scope",
        });
    }
    let (name, policy) = input.apply("", &Policy::default())?;
    create_project_as(&state, &actor, name, team_id, policy)
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

/// Creates a project named `name` in team `team_id`.
pub(crate) async fn create_project_as(
    state: &AppState,
    actor: &str,
    name: String,
    team_id: Uuid,
    policy: Policy,
) -> Result<Value, ApiError> {
    if state.registry.team(team_id).is_none() {
        return Err(ApiError::BadRequest {
            message: format!("No such team: {team_id}."),
            param: Some("team_id"),
            code: None,
        });
    }
    if name_taken_by_project(state, &name, None) {
        return Err(taken("project", &name));
    }
    let id = Uuid::now_v7();
    let command = ProjectCommand::CreateProject {
        name,
        team_id,
        policy,
        actor: actor.to_string(),
        at: Utc::now(),
    };
    project_command(state, id, actor, command).await?;
    let project = found(state.registry.project(id), no_project)?;
    Ok(project_view(state, &project))
}

#[utoipa::path(
    get,
    path = "/admin/api/projects/{id}",
    tag = "teams",
    summary = "One project, with its budget",
    params(("id" = String, Path, description = "The project id.")),
    responses((status = 200, description = "The project.", body = crate::openapi::admin::Project))
)]
pub async fn get_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "project")?;
    let project = found(state.registry.project(id), no_project)?;
    let mut view = project_view(&state, &project);
    view["budget"] = level_budget(
        &state,
        Owner::Level(Level::Project(id)),
        &project.state.policy,
    )
    .await?;
    Ok(Json(view))
}

#[utoipa::path(
    patch,
    path = "/admin/api/projects/{id}",
    tag = "teams",
    summary = "Rename a project or change its limits and scopes (`null` removes a limit)",
    params(("id" = String, Path, description = "The project id.")),
    request_body = UnitInput,
    responses((status = 200, description = "The project.", body = crate::openapi::admin::Project))
)]
pub async fn update_project(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "project")?;
    let input: UnitInput = parse_json(&body_bytes(&state, body)?)?;
    let project = found(state.registry.project(id), no_project)?;
    if input.team_id.is_some_and(|t| t != project.state.team_id) {
        return Err(ApiError::bad_request(
            "A project stays in its team; create a new project in the other team and move the keys.",
        ));
    }
    let (name, policy) = input.apply(&project.state.name, &project.state.policy)?;
    change_project(&state, &actor, &project, name, policy).await
}

/// Renames and reconfigures `project` (each an event only when it changes).
pub(crate) async fn change_project(
    state: &AppState,
    actor: &str,
    project: &ProjectEntry,
    name: String,
    policy: Policy,
) -> Result<Json<Value>, ApiError> {
    let id = project.id;
    if name != project.state.name {
        if name_taken_by_project(state, &name, Some(id)) {
            return Err(taken("project", &name));
        }
        let command = ProjectCommand::RenameProject {
            name,
            actor: actor.to_string(),
            at: Utc::now(),
        };
        project_command(state, id, actor, command).await?;
    }
    if policy != project.state.policy {
        let command = ProjectCommand::ReconfigureProject {
            policy,
            actor: actor.to_string(),
            at: Utc::now(),
        };
        project_command(state, id, actor, command).await?;
    }
    let project = found(state.registry.project(id), no_project)?;
    Ok(Json(project_view(state, &project)))
}

#[utoipa::path(
    delete,
    path = "/admin/api/projects/{id}",
    tag = "teams",
    summary = "Delete a project (refused while keys belong to it)",
    params(("id" = String, Path, description = "The project id.")),
    responses((status = 200, description = "The deleted project.", body = crate::openapi::admin::Deleted))
)]
pub async fn delete_project(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "project")?;
    found(state.registry.project(id), no_project)?;
    let keys = live_keys(&state, id);
    if keys > 0 {
        return Err(ApiError::Conflict(format!(
            "This project still has {keys} key(s): move them to another project or revoke them first."
        )));
    }
    let command = ProjectCommand::DeleteProject {
        actor: actor.clone(),
        at: Utc::now(),
    };
    project_command(&state, id, &actor, command).await?;
    Ok(Json(
        json!({ "id": id, "object": "project", "deleted": true }),
    ))
}
