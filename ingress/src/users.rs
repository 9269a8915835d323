//! Admin users, their roles and personal tokens: `/admin/api/users...` and
//! `GET /admin/api/me`.
//!
//! Every change is a command on the admin user aggregate with the calling
//! principal as actor; the registry row is refreshed from the events and
//! announced to every replica before the call returns. Invariants:
//! - names are 1-128 bytes without control characters; emails 3-254 bytes,
//!   one `@` with text on both sides, no spaces or control characters, and
//!   unique among users (case-insensitively); at most 16 roles, a team
//!   admin's team must exist;
//! - a token's secret is shown once, in the answer that creates it, and
//!   stored only as its hash; it expires (default 90 days, at most 2
//!   years ahead);
//! - the last active owner cannot lose the owner role or be disabled
//!   (409), so the bootstrap token can be turned off for good.

use std::collections::BTreeSet;

use aigw_events::{AdminUserCommand, AdminUserError, META_ACTOR, Role};
use aigw_runtime::crypto::{display_prefix, generate_admin_token, hash_api_key};
use aigw_runtime::registry;
use aigw_runtime::store::metadata;
use aigw_runtime::users::{self, KIND_USERS, UserEntry};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::{NotFound, command_error, parse_id, parse_json};
use crate::auth::{Admin, Principal};
use crate::chat::body_bytes;
use crate::error::ApiError;

impl NotFound for AdminUserError {
    fn is_not_found(&self) -> bool {
        matches!(self, AdminUserError::NotFound | AdminUserError::NoSuchToken)
    }
}

const MAX_ROLES: usize = 16;
const MAX_EMAIL_BYTES: usize = 254;
const DEFAULT_TOKEN_DAYS: i64 = 90;
const MAX_TOKEN_DAYS: i64 = 730;

/// One role as the API takes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    /// `owner`, `admin`, `team_admin`, `viewer` or `billing_viewer`.
    #[schema(pattern = "^(owner|admin|team_admin|viewer|billing_viewer)$")]
    pub role: String,
    /// The team of a `team_admin` (required for it, refused otherwise).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub team_id: Option<Uuid>,
}

/// What an owner sends to create or change a user. On `PATCH`, an absent
/// field keeps its value (roles change with `PUT .../roles`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// 1-128 bytes, no control characters.
    #[serde(default)]
    pub name: Option<String>,
    /// Unique among users.
    #[serde(default)]
    pub email: Option<String>,
    /// At most 16; only when creating.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub roles: Option<Vec<RoleInput>>,
}

/// The whole set of roles a user is to hold.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesInput {
    #[schema(max_items = 16)]
    pub roles: Vec<RoleInput>,
}

/// A new personal token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// 1-128 bytes, no control characters.
    pub name: String,
    /// When it stops working: in the future, at most 2 years ahead
    /// (default: 90 days from now).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

fn bad(message: &str, param: &'static str) -> ApiError {
    ApiError::BadRequest {
        message: message.into(),
        param: Some(param),
        code: None,
    }
}

fn check_name(name: &str, param: &'static str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(bad(
            &format!("'{param}' must be 1-128 bytes, without control characters."),
            param,
        ));
    }
    Ok(name.to_string())
}

fn check_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let fine = email.len() >= 3
        && email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !fine {
        return Err(bad(
            "'email' must be an address like name@example.com (at most 254 bytes).",
            "email",
        ));
    }
    Ok(email.to_string())
}

fn check_roles(state: &AppState, input: Vec<RoleInput>) -> Result<Vec<Role>, ApiError> {
    if input.len() > MAX_ROLES {
        return Err(bad("At most 16 roles.", "roles"));
    }
    let mut roles = BTreeSet::new();
    for r in input {
        let role = match (r.role.as_str(), r.team_id) {
            ("owner", None) => Role::Owner,
            ("admin", None) => Role::Admin,
            ("viewer", None) => Role::Viewer,
            ("billing_viewer", None) => Role::BillingViewer,
            ("team_admin", Some(team_id)) => {
                if state.registry.team(team_id).is_none() {
                    return Err(bad(&format!("No such team: {team_id}."), "roles"));
                }
                Role::TeamAdmin { team_id }
            }
            ("team_admin", None) => return Err(bad("A team_admin role needs 'team_id'.", "roles")),
            ("owner" | "admin" | "viewer" | "billing_viewer", Some(_)) => {
                return Err(bad("Only a team_admin role has a 'team_id'.", "roles"));
            }
            _ => {
                return Err(bad(
                    "'role' must be one of owner, admin, team_admin, viewer, billing_viewer.",
                    "roles",
                ));
            }
        };
        roles.insert(role);
    }
    Ok(roles.into_iter().collect())
}

fn role_view(role: &Role) -> Value {
    match role {
        Role::TeamAdmin { team_id } => json!({ "role": role.name(), "team_id": team_id }),
        _ => json!({ "role": role.name() }),
    }
}

fn user_view(u: &UserEntry) -> Value {
    let s = &u.state;
    let now = Utc::now();
    json!({
        "id": u.id,
        "object": "admin_user",
        "name": s.name,
        "email": s.email,
        "status": s.status,
        "roles": s.roles.iter().map(role_view).collect::<Vec<_>>(),
        "live_tokens": s.tokens.iter().filter(|t| t.is_live(now)).count(),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "disabled_at": s.disabled_at,
    })
}

fn token_view(t: &aigw_events::AdminToken) -> Value {
    json!({
        "id": t.id,
        "object": "admin_token",
        "name": t.name,
        "prefix": t.prefix,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
        "live": t.is_live(Utc::now()),
    })
}

fn no_user() -> ApiError {
    ApiError::NotFound {
        message: "No such user.".into(),
        code: "not_found",
    }
}

fn find(state: &AppState, id: &str) -> Result<std::sync::Arc<UserEntry>, ApiError> {
    let id = parse_id(id, "user")?;
    state.registry.user(id).ok_or_else(no_user)
}

fn email_taken(state: &AppState, email: &str, except: Option<Uuid>) -> bool {
    state
        .registry
        .users()
        .iter()
        .any(|u| u.state.email.eq_ignore_ascii_case(email) && Some(u.id) != except)
}

/// Whether some active owner other than `id` exists.
fn another_owner(state: &AppState, id: Uuid) -> bool {
    state
        .registry
        .users()
        .iter()
        .any(|u| u.id != id && u.state.is_owner())
}

fn last_owner() -> ApiError {
    ApiError::Conflict("This is the last active owner: make another user an owner first.".into())
}

/// Runs a command on user `id` by `actor` and syncs the registry.
pub(crate) async fn user_command(
    state: &AppState,
    id: Uuid,
    actor: &str,
    command: AdminUserCommand,
) -> Result<std::sync::Arc<UserEntry>, ApiError> {
    state
        .stores
        .users
        .execute_with_metadata(&id.to_string(), command, metadata(&[(META_ACTOR, actor)]))
        .await
        .map_err(|e| command_error(e, "user"))?;
    users::refresh_user(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_user(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_USERS, id).await;
    state.registry.user(id).ok_or_else(no_user)
}

#[utoipa::path(
    get,
    path = "/admin/api/me",
    tag = "users",
    summary = "Who is calling: the user (or the bootstrap token) and their roles",
    responses((status = 200, description = "The caller.", body = Object))
)]
pub async fn me(principal: Principal) -> Json<Value> {
    Json(json!({
        "object": "principal",
        "user_id": principal.user_id,
        "name": principal.name,
        "email": principal.email,
        "actor": principal.actor,
        "via": match (&principal.session, principal.user_id) {
            (Some(_), _) => "session",
            (None, Some(_)) => "token",
            (None, None) => "bootstrap_token",
        },
        "token_id": principal.token_id,
        // Sent back in x-aigw-csrf on every state-changing request.
        "csrf_token": principal.session.as_ref().map(|s| s.csrf.clone()),
        "roles": principal.roles.iter().map(role_view).collect::<Vec<_>>(),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/api/users",
    tag = "users",
    summary = "Every admin user (disabled ones too)",
    responses((status = 200, description = "The users.", body = Object))
)]
pub async fn list_users(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .users()
        .iter()
        .map(|u| user_view(u))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

#[utoipa::path(
    post,
    path = "/admin/api/users",
    tag = "users",
    summary = "Create an admin user",
    request_body = UserInput,
    responses((status = 201, description = "The user.", body = Object))
)]
pub async fn create_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: UserInput = parse_json(&body_bytes(&state, body)?)?;
    let name = check_name(
        input
            .name
            .as_deref()
            .ok_or_else(|| bad("Missing required parameter: 'name'.", "name"))?,
        "name",
    )?;
    let email = check_email(
        input
            .email
            .as_deref()
            .ok_or_else(|| bad("Missing required parameter: 'email'.", "email"))?,
    )?;
    let roles = check_roles(&state, input.roles.unwrap_or_default())?;
    if email_taken(&state, &email, None) {
        return Err(ApiError::Conflict(format!(
            "A user with the email {email:?} already exists."
        )));
    }
    let id = Uuid::now_v7();
    let command = AdminUserCommand::CreateUser {
        name,
        email,
        roles,
        actor: actor.clone(),
        at: Utc::now(),
    };
    let user = user_command(&state, id, &actor, command).await?;
    Ok((StatusCode::CREATED, Json(user_view(&user))))
}

#[utoipa::path(
    get,
    path = "/admin/api/users/{id}",
    tag = "users",
    summary = "One admin user",
    params(("id" = String, Path, description = "The user id.")),
    responses((status = 200, description = "The user.", body = Object))
)]
pub async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = find(&state, &id)?;
    Ok(Json(user_view(&user)))
}

#[utoipa::path(
    patch,
    path = "/admin/api/users/{id}",
    tag = "users",
    summary = "Rename a user or change their email",
    params(("id" = String, Path, description = "The user id.")),
    request_body = UserInput,
    responses((status = 200, description = "The user.", body = Object))
)]
pub async fn update_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let input: UserInput = parse_json(&body_bytes(&state, body)?)?;
    let user = find(&state, &id)?;
    if input.roles.is_some() {
        return Err(bad(
            "Roles change with PUT /admin/api/users/{id}/roles.",
            "roles",
        ));
    }
    let name = match input.name.as_deref() {
        Some(n) => check_name(n, "name")?,
        None => user.state.name.clone(),
    };
    let email = match input.email.as_deref() {
        Some(e) => check_email(e)?,
        None => user.state.email.clone(),
    };
    if email_taken(&state, &email, Some(user.id)) {
        return Err(ApiError::Conflict(format!(
            "A user with the email {email:?} already exists."
        )));
    }
    let command = AdminUserCommand::UpdateUser {
        name,
        email,
        actor: actor.clone(),
        at: Utc::now(),
    };
    let user = user_command(&state, user.id, &actor, command).await?;
    Ok(Json(user_view(&user)))
}

#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}",
    tag = "users",
    summary = "Disable a user: none of their tokens works any more (refused for the last owner)",
    params(("id" = String, Path, description = "The user id.")),
    responses((status = 200, description = "The disabled user.", body = Object))
)]
pub async fn disable_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = find(&state, &id)?;
    if user.state.is_owner() && !another_owner(&state, user.id) {
        return Err(last_owner());
    }
    let command = AdminUserCommand::DisableUser {
        actor: actor.clone(),
        at: Utc::now(),
    };
    let user = user_command(&state, user.id, &actor, command).await?;
    crate::sessions::end_all_of_user(&state, user.id, &actor).await?;
    Ok(Json(user_view(&user)))
}

#[utoipa::path(
    put,
    path = "/admin/api/users/{id}/roles",
    tag = "users",
    summary = "Set a user's roles: each role added is granted, each one left out revoked",
    params(("id" = String, Path, description = "The user id.")),
    request_body = RolesInput,
    responses((status = 200, description = "The user.", body = Object))
)]
pub async fn set_roles(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let input: RolesInput = parse_json(&body_bytes(&state, body)?)?;
    let user = find(&state, &id)?;
    let wanted = check_roles(&state, input.roles)?;
    if user.state.is_owner() && !wanted.contains(&Role::Owner) && !another_owner(&state, user.id) {
        return Err(last_owner());
    }
    let now = Utc::now();
    // Grants first, so a user is never left with less than both sets share.
    for role in wanted.iter().filter(|r| !user.state.roles.contains(r)) {
        let command = AdminUserCommand::GrantRole {
            role: *role,
            actor: actor.clone(),
            at: now,
        };
        user_command(&state, user.id, &actor, command).await?;
    }
    for role in user.state.roles.iter().filter(|r| !wanted.contains(r)) {
        let command = AdminUserCommand::RevokeRole {
            role: *role,
            actor: actor.clone(),
            at: now,
        };
        user_command(&state, user.id, &actor, command).await?;
    }
    let user = state.registry.user(user.id).ok_or_else(no_user)?;
    Ok(Json(user_view(&user)))
}

#[utoipa::path(
    get,
    path = "/admin/api/users/{id}/tokens",
    tag = "users",
    summary = "A user's personal tokens (never their secrets)",
    params(("id" = String, Path, description = "The user id.")),
    responses((status = 200, description = "The tokens.", body = Object))
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = find(&state, &id)?;
    let data: Vec<Value> = user.state.tokens.iter().map(token_view).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[utoipa::path(
    post,
    path = "/admin/api/users/{id}/tokens",
    tag = "users",
    summary = "Create a personal token (its secret is shown only here)",
    params(("id" = String, Path, description = "The user id.")),
    request_body = TokenInput,
    responses((status = 201, description = "The token, with its secret as `token`.", body = Object))
)]
pub async fn create_token(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: TokenInput = parse_json(&body_bytes(&state, body)?)?;
    let user = find(&state, &id)?;
    let name = check_name(&input.name, "name")?;
    let now = Utc::now();
    let expires_at = input
        .expires_at
        .unwrap_or(now + Duration::days(DEFAULT_TOKEN_DAYS));
    if expires_at <= now || expires_at > now + Duration::days(MAX_TOKEN_DAYS) {
        return Err(bad(
            "'expires_at' must be in the future, at most 2 years ahead.",
            "expires_at",
        ));
    }
    let secret = generate_admin_token();
    let token_id = Uuid::now_v7();
    let command = AdminUserCommand::IssueToken {
        token_id,
        name,
        token_hash: hash_api_key(secret.expose_secret()),
        prefix: display_prefix(secret.expose_secret()),
        expires_at: Some(expires_at),
        actor: actor.clone(),
        at: now,
    };
    let user = user_command(&state, user.id, &actor, command).await?;
    let token = user
        .state
        .token(token_id)
        .ok_or_else(|| ApiError::Internal("the token just issued is missing".into()))?;
    let mut view = token_view(token);
    // The only time the secret is ever shown.
    view["token"] = Value::String(secret.expose_secret().to_string());
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}/tokens/{token_id}",
    tag = "users",
    summary = "Revoke a personal token",
    params(
        ("id" = String, Path, description = "The user id."),
        ("token_id" = String, Path, description = "The token id."),
    ),
    responses((status = 200, description = "The revoked token.", body = Object))
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = find(&state, &id)?;
    let token_id = parse_id(&token_id, "token")?;
    let command = AdminUserCommand::RevokeToken {
        token_id,
        actor: actor.clone(),
        at: Utc::now(),
    };
    let user = user_command(&state, user.id, &actor, command).await?;
    let token = user.state.token(token_id).ok_or_else(no_user)?;
    Ok(Json(token_view(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_names_are_bounded() {
        assert!(check_email("a@b").is_ok());
        assert!(check_email(" ada@example.com ").is_ok());
        for bad in ["", "@b", "a@", "ab", "a b@c", "a@b@c", "a\u{0}@b"] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_email(&format!("{}@b", "a".repeat(253))).is_err());
        assert!(check_name("Ada", "name").is_ok());
        assert!(check_name("  ", "name").is_err());
        assert!(check_name(&"x".repeat(129), "name").is_err());
        assert!(check_name("a\nb", "name").is_err());
    }
}
