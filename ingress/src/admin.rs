//! `/admin/api`: providers and keys. Every change is a command that becomes
//! an event; the registry row is refreshed from the events and the change is
//! announced to every replica before the call returns.

use aigw_events::provider::{ProviderKind, ProviderSpec};
use aigw_events::{KeyCommand, KeyError, META_ACTOR, ProviderCommand, ProviderError};
use aigw_runtime::crypto::{display_prefix, generate_api_key, hash_api_key};
use aigw_runtime::registry::{self, KIND_KEYS, KIND_PROVIDERS};
use aigw_runtime::store::metadata;
use aigw_runtime::{KeyEntry, ProviderEntry};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;
use cqrs_es::AggregateError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::chat::body_bytes;
use crate::error::ApiError;

/// Parses a JSON body, answering 400 with serde's explanation.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        message: format!("Invalid request body: {e}"),
        param: None,
        code: Some("invalid_body"),
    })
}

/// Domain errors that mean "no such thing" (404) rather than a conflict.
pub trait NotFound: std::error::Error {
    fn is_not_found(&self) -> bool;
}

impl NotFound for KeyError {
    fn is_not_found(&self) -> bool {
        matches!(self, KeyError::NotFound)
    }
}

impl NotFound for ProviderError {
    fn is_not_found(&self) -> bool {
        matches!(self, ProviderError::NotFound)
    }
}

pub fn command_error<E: NotFound>(e: AggregateError<E>, what: &str) -> ApiError {
    match e {
        AggregateError::UserError(inner) if inner.is_not_found() => ApiError::NotFound {
            message: format!("No such {what}."),
            code: "not_found",
        },
        AggregateError::UserError(inner) => ApiError::Conflict(inner.to_string()),
        AggregateError::AggregateConflict => {
            ApiError::Conflict(format!("The {what} was changed concurrently; retry."))
        }
        other => ApiError::internal(other),
    }
}

fn parse_id(id: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound {
        message: format!("No such {what}."),
        code: "not_found",
    })
}

// ---- providers ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    pub name: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
}

pub(crate) fn provider_view(p: &ProviderEntry) -> Value {
    json!({
        "id": p.id,
        "object": "provider",
        "name": p.spec.name,
        "kind": p.spec.kind,
        "base_url": p.spec.base_url,
        "models": p.spec.models,
        "has_credential": p.spec.sealed_credential.is_some(),
        "preset": p.spec.preset,
        "settings": p.spec.settings,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

fn validate_base_url(url: &str) -> Result<(), ApiError> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'base_url' is not a valid URL: {url:?}")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none() {
        return Err(ApiError::bad_request(
            "'base_url' must be an absolute http:// or https:// URL.",
        ));
    }
    Ok(())
}

pub async fn create_provider(
    State(state): State<AppState>,
    Admin(actor): Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bytes = body_bytes(&state, body)?;
    if crate::presets::names_a_preset(&bytes) {
        return crate::presets::create_from_preset(&state, actor, &bytes).await;
    }
    let new: NewProvider = parse_json(&bytes)?;
    let name = new.name.trim().to_string();
    if name.is_empty() || name.len() > 64 || name.contains('/') {
        return Err(ApiError::bad_request(
            "'name' must be 1-64 characters without '/'.",
        ));
    }
    validate_base_url(&new.base_url)?;
    let models: Vec<String> = new
        .models
        .iter()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if models.is_empty() {
        return Err(ApiError::bad_request(
            "'models' must list at least one model id.",
        ));
    }
    if state.registry.provider(&name).is_some() {
        return Err(ApiError::Conflict(format!(
            "A provider named {name:?} already exists."
        )));
    }
    let sealed_credential = match new.api_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(key) => Some(
            state
                .sealer
                .seal(key)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
    };
    let spec = ProviderSpec {
        name,
        kind: ProviderKind::OpenaiCompatible,
        base_url: new.base_url.trim_end_matches('/').to_string(),
        models,
        sealed_credential,
        ..Default::default()
    };
    let id = Uuid::now_v7();
    state
        .stores
        .providers
        .execute_with_metadata(
            &id.to_string(),
            ProviderCommand::ConfigureProvider {
                spec,
                actor: actor.clone(),
                at: Utc::now(),
            },
            metadata(&[(META_ACTOR, &actor)]),
        )
        .await
        .map_err(|e| command_error(e, "provider"))?;
    let entry = sync_provider(&state, id).await?;
    Ok((StatusCode::CREATED, Json(provider_view(&entry))))
}

pub(crate) async fn sync_provider(state: &AppState, id: Uuid) -> Result<ProviderEntry, ApiError> {
    registry::refresh_provider(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_provider(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_PROVIDERS, id).await;
    state
        .registry
        .provider(&id.to_string())
        .map(|p| (*p).clone())
        .ok_or_else(|| ApiError::NotFound {
            message: "No such provider.".into(),
            code: "not_found",
        })
}

pub async fn list_providers(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .providers()
        .iter()
        .map(|p| provider_view(p))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

pub async fn get_provider(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "provider")?;
    state
        .registry
        .provider(&id.to_string())
        .map(|p| Json(provider_view(&p)))
        .ok_or_else(|| ApiError::NotFound {
            message: "No such provider.".into(),
            code: "not_found",
        })
}

pub async fn delete_provider(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "provider")?;
    state
        .stores
        .providers
        .execute_with_metadata(
            &id.to_string(),
            ProviderCommand::RemoveProvider {
                actor: actor.clone(),
                at: Utc::now(),
            },
            metadata(&[(META_ACTOR, &actor)]),
        )
        .await
        .map_err(|e| command_error(e, "provider"))?;
    registry::refresh_provider(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_provider(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_PROVIDERS, id).await;
    Ok(Json(
        json!({ "id": id, "object": "provider", "deleted": true }),
    ))
}

// ---- keys ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
}

fn key_view(k: &KeyEntry) -> Value {
    json!({
        "id": k.id,
        "object": "api_key",
        "name": k.name,
        "prefix": k.prefix,
        "status": k.status.as_str(),
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}

pub async fn create_key(
    State(state): State<AppState>,
    Admin(actor): Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewKey = parse_json(&body_bytes(&state, body)?)?;
    let name = new.name.trim().to_string();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_request("'name' must be 1-128 characters."));
    }
    let secret = generate_api_key();
    let id = Uuid::now_v7();
    state
        .stores
        .keys
        .execute_with_metadata(
            &id.to_string(),
            KeyCommand::IssueKey {
                name,
                key_hash: hash_api_key(secret.expose_secret()),
                prefix: display_prefix(secret.expose_secret()),
                actor: actor.clone(),
                at: Utc::now(),
            },
            metadata(&[(META_ACTOR, &actor)]),
        )
        .await
        .map_err(|e| command_error(e, "key"))?;
    let entry = sync_key(&state, id).await?;
    let mut view = key_view(&entry);
    // The only time the secret is ever shown.
    view["key"] = Value::String(secret.expose_secret().to_string());
    Ok((StatusCode::CREATED, Json(view)))
}

async fn sync_key(state: &AppState, id: Uuid) -> Result<KeyEntry, ApiError> {
    registry::refresh_key(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_key(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_KEYS, id).await;
    state
        .registry
        .key(id)
        .map(|k| (*k).clone())
        .ok_or_else(|| ApiError::NotFound {
            message: "No such key.".into(),
            code: "not_found",
        })
}

pub async fn list_keys(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state.registry.keys().iter().map(|k| key_view(k)).collect();
    Json(json!({ "object": "list", "data": data }))
}

pub async fn get_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    state
        .registry
        .key(id)
        .map(|k| Json(key_view(&k)))
        .ok_or_else(|| ApiError::NotFound {
            message: "No such key.".into(),
            code: "not_found",
        })
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    state
        .stores
        .keys
        .execute_with_metadata(
            &id.to_string(),
            KeyCommand::RevokeKey {
                actor: actor.clone(),
                at: Utc::now(),
            },
            metadata(&[(META_ACTOR, &actor)]),
        )
        .await
        .map_err(|e| command_error(e, "key"))?;
    let entry = sync_key(&state, id).await?;
    Ok(Json(key_view(&entry)))
}
