//! Routing administration: aliases (`/admin/api/aliases`) and provider
//! health (`/admin/api/health`, `/admin/api/providers/{id}/health`), read
//! from the circuit breakers the dispatchers share.

use aigw_events::{AliasCommand, AliasError, AliasSpec, AliasTarget, META_ACTOR, Strategy};
use aigw_runtime::health::BreakerState;
use aigw_runtime::registry::{self, KIND_ALIASES};
use aigw_runtime::store::metadata;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use cqrs_es::AggregateError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::admin::{NotFound, command_error, parse_id, parse_json};
use crate::auth::Admin;
use crate::chat::body_bytes;
use crate::error::ApiError;

impl NotFound for AliasError {
    fn is_not_found(&self) -> bool {
        matches!(self, AliasError::NotFound)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasInput {
    /// Required to create; 1-128 letters, digits, `-`, `_`, `.` or `:`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::admin::Strategy>)]
    pub strategy: Option<Strategy>,
    /// 1 to 64 targets.
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::openapi::admin::AliasTarget>>)]
    pub targets: Option<Vec<AliasTarget>>,
}

fn alias_view(a: &AliasSpec) -> Value {
    json!({ "object": "alias", "name": a.name, "strategy": a.strategy, "targets": a.targets })
}

fn validate(state: &AppState, spec: &AliasSpec) -> Result<(), ApiError> {
    check_alias(spec, |p| state.registry.provider(p).is_some())
}

/// Checks an alias: its name, 1 to 64 targets, each at a provider
/// `provider_exists` knows (by id or name), with a model and a weight.
pub fn check_alias(
    spec: &AliasSpec,
    provider_exists: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 128
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if !name_ok {
        return Err(ApiError::bad_request(
            "'name' must be 1-128 characters of letters, digits, '-', '_', '.' or ':'.",
        ));
    }
    if spec.targets.is_empty() || spec.targets.len() > 64 {
        return Err(ApiError::bad_request(
            "'targets' must list 1 to 64 targets.",
        ));
    }
    for t in &spec.targets {
        if !provider_exists(&t.provider) {
            return Err(ApiError::bad_request(format!(
                "target provider {:?} does not exist.",
                t.provider
            )));
        }
        if crate::validate::model_name(&t.model).is_err() || t.weight == 0 {
            return Err(ApiError::bad_request(format!(
                "every target needs a model ({} visible ASCII characters at most) and a positive weight.",
                crate::validate::MAX_MODEL_LEN
            )));
        }
    }
    Ok(())
}

/// Runs an alias command by `actor` and makes every replica see the result.
pub async fn execute(
    state: &AppState,
    name: &str,
    actor: &str,
    command: AliasCommand,
) -> Result<(), ApiError> {
    state
        .stores
        .aliases
        .execute_with_metadata(name, command, metadata(&[(META_ACTOR, actor)]))
        .await
        .map_err(|e: AggregateError<AliasError>| command_error(e, "alias"))?;
    registry::refresh_alias(&state.stores.pool, name)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_alias(name)
        .await
        .map_err(ApiError::internal)?;
    registry::announce_name(&state.client, &state.names, KIND_ALIASES, name).await;
    Ok(())
}

#[utoipa::path(
    post,
    path = "/admin/api/aliases",
    tag = "aliases",
    summary = "Define an alias",
    request_body = AliasInput,
    responses((status = 201, description = "The alias.", body = crate::openapi::admin::Alias))
)]
pub async fn create_alias(
    State(state): State<AppState>,
    Admin(actor): Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: AliasInput = parse_json(&body_bytes(&state, body)?)?;
    let spec = AliasSpec {
        name: input.name.unwrap_or_default().trim().to_string(),
        strategy: input.strategy.unwrap_or_default(),
        targets: input.targets.unwrap_or_default(),
    };
    validate(&state, &spec)?;
    let name = spec.name.clone();
    execute(
        &state,
        &name,
        &actor,
        AliasCommand::DefineAlias {
            spec: spec.clone(),
            actor: actor.clone(),
            at: Utc::now(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(alias_view(&spec))))
}

#[utoipa::path(
    get,
    path = "/admin/api/aliases",
    tag = "aliases",
    summary = "Every alias",
    responses((status = 200, description = "The aliases.", body = crate::openapi::admin::AliasList))
)]
pub async fn list_aliases(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .aliases()
        .iter()
        .map(|a| alias_view(a))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "No such alias.".into(),
        code: "not_found",
    }
}

#[utoipa::path(
    get,
    path = "/admin/api/aliases/{name}",
    tag = "aliases",
    summary = "One alias",
    params(("name" = String, Path, description = "The alias.")),
    responses((status = 200, description = "The alias.", body = crate::openapi::admin::Alias))
)]
pub async fn get_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .registry
        .alias(&name)
        .map(|a| Json(alias_view(&a)))
        .ok_or_else(not_found)
}

#[utoipa::path(
    patch,
    path = "/admin/api/aliases/{name}",
    tag = "aliases",
    summary = "Change an alias's strategy or targets",
    params(("name" = String, Path, description = "The alias.")),
    request_body = AliasInput,
    responses((status = 200, description = "The alias.", body = crate::openapi::admin::Alias))
)]
pub async fn update_alias(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let input: AliasInput = parse_json(&body_bytes(&state, body)?)?;
    let current = state.registry.alias(&name).ok_or_else(not_found)?;
    if input.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "An alias cannot be renamed; create a new one.",
        ));
    }
    let spec = AliasSpec {
        name: name.clone(),
        strategy: input.strategy.unwrap_or(current.strategy),
        targets: input.targets.unwrap_or_else(|| current.targets.clone()),
    };
    validate(&state, &spec)?;
    execute(
        &state,
        &name,
        &actor,
        AliasCommand::UpdateAlias {
            spec: spec.clone(),
            actor: actor.clone(),
            at: Utc::now(),
        },
    )
    .await?;
    Ok(Json(alias_view(&spec)))
}

#[utoipa::path(
    delete,
    path = "/admin/api/aliases/{name}",
    tag = "aliases",
    summary = "Remove an alias",
    params(("name" = String, Path, description = "The alias.")),
    responses((status = 200, description = "Removed.", body = crate::openapi::admin::Report))
)]
pub async fn delete_alias(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    execute(
        &state,
        &name,
        &actor,
        AliasCommand::RemoveAlias {
            actor: actor.clone(),
            at: Utc::now(),
        },
    )
    .await?;
    Ok(Json(
        json!({ "object": "alias", "name": name, "deleted": true }),
    ))
}

fn breaker_view(b: &BreakerState, now_ms: i64) -> Value {
    let state = if b.open_until_ms == 0 {
        "closed"
    } else if b.is_open(now_ms) && b.probing {
        "half_open"
    } else if b.is_open(now_ms) {
        "open"
    } else {
        "half_open"
    };
    let time = |ms: i64| Utc.timestamp_millis_opt(ms).single();
    json!({
        "model": b.model,
        "state": state,
        "open_until": (b.open_until_ms > 0).then(|| time(b.open_until_ms)).flatten(),
        "trips": b.trips,
        "last_error": b.last_error,
        "changed_at": time(b.changed_ms),
    })
}

/// `up` (every breaker closed), `degraded` (some open), `down` (all of the
/// provider's models open).
fn provider_health(
    state: &AppState,
    id: uuid::Uuid,
    breakers: &[BreakerState],
    now_ms: i64,
) -> Value {
    let mine: Vec<&BreakerState> = breakers.iter().filter(|b| b.provider_id == id).collect();
    // Credentials (`#credential<n>`) have breakers of their own; the
    // provider is down when its models are.
    let open = mine
        .iter()
        .filter(|b| b.open_until_ms != 0 && !b.model.starts_with('#'))
        .count();
    let degraded = mine.iter().any(|b| b.open_until_ms != 0);
    let models = state
        .registry
        .provider(&id.to_string())
        .map(|p| p.spec.served().len())
        .unwrap_or(0)
        .max(1);
    let status = if !degraded {
        "up"
    } else if open >= models {
        "down"
    } else {
        "degraded"
    };
    json!({
        "provider_id": id,
        "status": status,
        "breakers": mine.iter().map(|b| breaker_view(b, now_ms)).collect::<Vec<_>>(),
    })
}

#[utoipa::path(
    get,
    path = "/admin/api/health",
    tag = "providers",
    summary = "Every provider up, degraded or down, with its circuit breakers",
    responses((status = 200, description = "Health per provider.", body = crate::openapi::admin::ObjectList))
)]
pub async fn health_summary(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let breakers = state
        .health
        .all()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let now_ms = Utc::now().timestamp_millis();
    let data: Vec<Value> = state
        .registry
        .providers()
        .iter()
        .map(|p| {
            let mut v = provider_health(&state, p.id, &breakers, now_ms);
            v["name"] = Value::String(p.spec.name.clone());
            v["enabled"] = Value::Bool(!p.spec.disabled);
            v
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[utoipa::path(
    get,
    path = "/admin/api/providers/{id}/health",
    tag = "providers",
    summary = "One provider's health",
    params(("id" = String, Path, description = "The provider id.")),
    responses((status = 200, description = "Its health.", body = crate::openapi::admin::Report))
)]
pub async fn provider_health_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "provider")?;
    let provider = state
        .registry
        .provider(&id.to_string())
        .ok_or_else(|| ApiError::NotFound {
            message: "No such provider.".into(),
            code: "not_found",
        })?;
    let breakers = state
        .health
        .all()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let mut v = provider_health(&state, id, &breakers, Utc::now().timestamp_millis());
    v["name"] = Value::String(provider.spec.name.clone());
    v["enabled"] = Value::Bool(!provider.spec.disabled);
    Ok(Json(v))
}
