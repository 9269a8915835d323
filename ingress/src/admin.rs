//! `/admin/api`: providers and keys. Every change is a command that becomes
//! an event; the registry row is refreshed from the events and the change is
//! announced to every replica before the call returns.

use std::collections::BTreeMap;

use aigw_events::deployments::{Deployments, deployment_prices};
use aigw_events::pricing::PriceUsd;
use aigw_events::provider::{Price, ProviderKind, ProviderSpec};
use aigw_events::{KeyError, META_ACTOR, ProviderCommand, ProviderError};
use aigw_runtime::ProviderEntry;
use aigw_runtime::catalog;
use aigw_runtime::crypto::{Binding, CredentialField};
use aigw_runtime::registry::{self, KIND_PROVIDERS};
use aigw_runtime::store::metadata;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;
use cqrs_es::AggregateError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::chat::body_bytes;
use crate::error::ApiError;
use crate::presets::preset_error;
use crate::validate;

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

pub fn parse_id(id: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound {
        message: format!("No such {what}."),
        code: "not_found",
    })
}

// ---- providers ----

/// The body of `POST /admin/api/providers`: a catalog preset and its key,
/// or a custom OpenAI-compatible endpoint (described for the OpenAPI
/// document; the handler tells them apart by `preset`).
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ProviderInput {
    Preset(Box<crate::openapi::admin::PresetProvider>),
    Custom(NewProvider),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    pub name: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// More API keys, used in turn with `api_key`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub prices: BTreeMap<String, PriceInput>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Seals one credential of provider `id`, bound to its field.
fn seal(state: &AppState, id: Uuid, field: CredentialField, key: &str) -> Result<String, ApiError> {
    state
        .sealer
        .seal(key, &Binding::new(id, field))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Seals the extra credentials of provider `id` (blank ones dropped first,
/// so each is bound to its final position).
pub(crate) fn seal_all(
    state: &AppState,
    id: Uuid,
    keys: &[String],
) -> Result<Vec<String>, ApiError> {
    keys.iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(n, k)| seal(state, id, CredentialField::Extra(n), k))
        .collect()
}

pub(crate) fn check_concurrency(max: Option<u32>) -> Result<Option<u32>, ApiError> {
    if max == Some(0) {
        return Err(ApiError::bad_request(
            "'max_concurrency' must be positive (or null for no cap).",
        ));
    }
    Ok(max)
}

/// A model's prices as admins write them (USD per million tokens of each
/// class, per image, per million characters, per audio hour): exactly
/// [`aigw_events::pricing::PriceUsd`], the one place USD amounts become
/// integer rates, under the name the admin API documents.
pub type PriceInput = PriceUsd;

pub(crate) fn parse_prices(
    input: &BTreeMap<String, PriceInput>,
) -> Result<BTreeMap<String, Price>, ApiError> {
    if input.len() > MAX_MODELS {
        return Err(ApiError::bad_request(format!(
            "'prices' may name at most {MAX_MODELS} models."
        )));
    }
    input
        .iter()
        .map(|(model, p)| {
            validate::model_name(model)
                .map_err(|why| ApiError::bad_request(format!("'prices': {model:?} must {why}.")))?;
            let price = p.to_price().map_err(|_| {
                ApiError::bad_request(format!(
                    "'prices.{model}' must hold non-negative USD amounts per million tokens."
                ))
            })?;
            Ok((model.clone(), price))
        })
        .collect()
}

/// A price in USD, as the admin API shows it.
pub(crate) fn price_view(p: &Price) -> Value {
    json!(PriceUsd::from(p))
}

pub(crate) fn provider_view(p: &ProviderEntry) -> Value {
    json!({
        "id": p.id,
        "object": "provider",
        "name": p.spec.name,
        "kind": p.spec.kind,
        "base_url": p.spec.base_url,
        "models": p.spec.served(),
        "deployments": p.spec.by_deployment().then(|| {
            p.spec.deployment_models().into_iter().collect::<BTreeMap<_, _>>()
        }),
        "has_credential": p.spec.sealed_credential.is_some(),
        "has_session_token": p.spec.sealed_session_token.is_some(),
        "credentials": p.spec.credentials().len(),
        "max_concurrency": p.spec.max_concurrency,
        "enabled": !p.spec.disabled,
        "prices": p.spec.prices.iter().map(|(m, pr)| (m.clone(), price_view(pr))).collect::<BTreeMap<_, _>>(),
        "preset": p.spec.preset,
        "settings": p.spec.settings,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

/// Most models one provider may list.
pub const MAX_MODELS: usize = 1_024;

/// A provider name as given (trimmed), checked (see `validate::provider_name`).
pub fn provider_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    validate::provider_name(name)
        .map_err(|why| ApiError::bad_request(format!("'name' must {why}.")))?;
    Ok(name.to_string())
}

/// A provider's model ids (trimmed, blanks dropped): at least one, at most
/// [`MAX_MODELS`], each a valid model name.
pub fn model_ids(models: &[String]) -> Result<Vec<String>, ApiError> {
    let models: Vec<String> = models
        .iter()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if models.is_empty() || models.len() > MAX_MODELS {
        return Err(ApiError::bad_request(format!(
            "'models' must list 1 to {MAX_MODELS} model ids."
        )));
    }
    for m in &models {
        validate::model_name(m)
            .map_err(|why| ApiError::bad_request(format!("'models': {m:?} must {why}.")))?;
    }
    Ok(models)
}

/// An Azure provider's deployments (blank models dropped, as not said):
/// 1 to [`MAX_MODELS`], each name and each model a valid model name.
pub fn deployment_map(deployments: &Deployments) -> Result<Deployments, ApiError> {
    if deployments.is_empty() || deployments.len() > MAX_MODELS {
        return Err(ApiError::BadRequest {
            message: format!("'deployments' must list 1 to {MAX_MODELS} deployments."),
            param: Some("deployments"),
            code: None,
        });
    }
    let bad = |what: &str, value: &str, why: String| ApiError::BadRequest {
        message: format!("'deployments': the {what} {value:?} must {why}."),
        param: Some("deployments"),
        code: None,
    };
    deployments
        .iter()
        .map(|(name, model)| {
            validate::model_name(name).map_err(|why| bad("deployment name", name, why))?;
            let model = model.as_deref().map(str::trim).filter(|m| !m.is_empty());
            if let Some(m) = model {
                validate::model_name(m).map_err(|why| bad("model", m, why))?;
            }
            Ok((name.clone(), model.map(str::to_string)))
        })
        .collect()
}

fn validate_base_url(url: &str) -> Result<(), ApiError> {
    if url.len() > 2048 || url.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "'base_url' must be at most 2048 characters, without control characters.",
        ));
    }
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

#[utoipa::path(
    post,
    path = "/admin/api/providers",
    tag = "providers",
    summary = "Add a provider: a preset and its key, or any OpenAI-compatible endpoint",
    request_body = ProviderInput,
    responses((status = 201, description = "The provider.", body = crate::openapi::admin::Provider))
)]
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
    let id = Uuid::now_v7();
    let spec = custom_spec(&state, id, &new)?;
    if state.registry.provider(&spec.name).is_some() {
        return Err(ApiError::Conflict(format!(
            "A provider named {:?} already exists.",
            spec.name
        )));
    }
    let entry = configure(&state, &actor, id, spec).await?;
    Ok((StatusCode::CREATED, Json(provider_view(&entry))))
}

/// Provider `id` as a custom OpenAI-compatible endpoint: every field
/// checked, every credential sealed (bound to `id`). Whether the name is
/// taken is the caller's question.
pub fn custom_spec(
    state: &AppState,
    id: Uuid,
    new: &NewProvider,
) -> Result<ProviderSpec, ApiError> {
    let name = provider_name(&new.name)?;
    validate_base_url(&new.base_url)?;
    let models = model_ids(&new.models)?;
    let sealed_credential = match new.api_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(key) => Some(seal(state, id, CredentialField::ApiKey, key)?),
    };
    Ok(ProviderSpec {
        name,
        kind: ProviderKind::OpenaiCompatible,
        base_url: new.base_url.trim_end_matches('/').to_string(),
        models,
        sealed_credential,
        prices: parse_prices(&new.prices)?,
        extra_credentials: seal_all(state, id, &new.api_keys)?,
        max_concurrency: check_concurrency(new.max_concurrency)?,
        disabled: !new.enabled.unwrap_or(true),
        ..Default::default()
    })
}

/// Stores provider `id` (a `ConfigureProvider` command by `actor`) and
/// makes every replica see it.
pub async fn configure(
    state: &AppState,
    actor: &str,
    id: Uuid,
    spec: ProviderSpec,
) -> Result<ProviderEntry, ApiError> {
    provider_command(
        state,
        actor,
        id,
        ProviderCommand::ConfigureProvider {
            spec,
            actor: actor.to_string(),
            at: Utc::now(),
        },
    )
    .await?;
    sync_provider(state, id).await
}

/// Replaces provider `id`'s spec (an `UpdateProvider` command by `actor`).
pub async fn replace(
    state: &AppState,
    actor: &str,
    id: Uuid,
    spec: ProviderSpec,
) -> Result<ProviderEntry, ApiError> {
    provider_command(
        state,
        actor,
        id,
        ProviderCommand::UpdateProvider {
            spec,
            actor: actor.to_string(),
            at: Utc::now(),
        },
    )
    .await?;
    sync_provider(state, id).await
}

/// Removes provider `id` (a `RemoveProvider` command by `actor`).
pub async fn remove(state: &AppState, actor: &str, id: Uuid) -> Result<(), ApiError> {
    provider_command(
        state,
        actor,
        id,
        ProviderCommand::RemoveProvider {
            actor: actor.to_string(),
            at: Utc::now(),
        },
    )
    .await?;
    registry::refresh_provider(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_provider(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_PROVIDERS, id).await;
    Ok(())
}

async fn provider_command(
    state: &AppState,
    actor: &str,
    id: Uuid,
    command: ProviderCommand,
) -> Result<(), ApiError> {
    state
        .stores
        .providers
        .execute_with_metadata(&id.to_string(), command, metadata(&[(META_ACTOR, actor)]))
        .await
        .map_err(|e| command_error(e, "provider"))
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

/// Fields of a provider an admin can change; absent ones stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Azure: replaces the deployments (deployment name to the model it
    /// serves, `null` when not said), in place of `models`.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub deployments: Option<Deployments>,
    /// Replaces the prices of the models it names (a price change takes
    /// effect from now on; past requests keep the price they ran with).
    /// For Azure, a deployment or a model its deployments serve.
    #[serde(default)]
    pub prices: Option<BTreeMap<String, PriceInput>>,
    /// Replaces the extra API keys (used in turn with `api_key`).
    #[serde(default)]
    pub api_keys: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::keys::present")]
    pub max_concurrency: Option<Option<u32>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Bedrock with AWS keys only: new (e.g. renewed temporary) credentials.
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<String>,
    /// `""` removes the session token.
    #[serde(default)]
    pub aws_session_token: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/admin/api/providers/{id}",
    tag = "providers",
    summary = "Change a provider",
    params(("id" = String, Path, description = "The provider id.")),
    request_body = ProviderPatch,
    responses((status = 200, description = "The provider.", body = crate::openapi::admin::Provider))
)]
pub async fn update_provider(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "provider")?;
    let patch: ProviderPatch = parse_json(&body_bytes(&state, body)?)?;
    let current = state
        .registry
        .provider(&id.to_string())
        .ok_or_else(|| ApiError::NotFound {
            message: "No such provider.".into(),
            code: "not_found",
        })?;
    // An Azure provider stored before `deployments` existed is written back
    // in today's shape (the same deployment, served the same way).
    let mut spec = current.spec.clone().with_deployment_map();
    patch_aws_credentials(&state, id, &mut spec, &patch)?;
    if let Some(name) = patch.name {
        let name = provider_name(&name)?;
        if state.registry.provider(&name).is_some_and(|p| p.id != id) {
            return Err(ApiError::Conflict(format!(
                "A provider named {name:?} already exists."
            )));
        }
        spec.name = name;
    }
    if let Some(url) = patch.base_url {
        validate_base_url(&url)?;
        spec.base_url = url.trim_end_matches('/').to_string();
    }
    if let Some(key) = patch.api_key {
        spec.sealed_credential = match key.trim() {
            "" => None,
            key => Some(seal(&state, id, CredentialField::ApiKey, key)?),
        };
    }
    if spec.by_deployment() {
        patch_deployments(
            &mut spec,
            patch.models.is_some(),
            patch.deployments.as_ref(),
            patch.prices.as_ref(),
        )?;
    } else {
        if patch.deployments.is_some() {
            return Err(ApiError::BadRequest {
                message: "'deployments' apply only to an Azure provider.".into(),
                param: Some("deployments"),
                code: None,
            });
        }
        if let Some(models) = &patch.models {
            spec.models = model_ids(models)?;
        }
        if let Some(prices) = &patch.prices {
            spec.prices.extend(parse_prices(prices)?);
        }
    }
    if let Some(keys) = patch.api_keys {
        spec.extra_credentials = seal_all(&state, id, &keys)?;
    }
    if let Some(max) = patch.max_concurrency {
        spec.max_concurrency = check_concurrency(max)?;
    }
    if let Some(enabled) = patch.enabled {
        spec.disabled = !enabled;
    }
    let entry = replace(&state, &actor, id, spec).await?;
    Ok(Json(provider_view(&entry)))
}

/// Changes an Azure provider's deployments and prices. Its prices stay keyed
/// by deployment: a price given for a model goes to each deployment serving
/// it, a deployment keeps its price while it serves the same model, and a
/// new one takes the catalog's price of its model.
fn patch_deployments(
    spec: &mut ProviderSpec,
    models: bool,
    deployments: Option<&Deployments>,
    prices: Option<&BTreeMap<String, PriceInput>>,
) -> Result<(), ApiError> {
    if models {
        return Err(ApiError::BadRequest {
            message: "An Azure provider serves its deployments: change 'deployments' (deployment name to model) instead of 'models'.".into(),
            param: Some("models"),
            code: None,
        });
    }
    if deployments.is_none() && prices.is_none() {
        return Ok(());
    }
    let deployments = match deployments {
        Some(d) => deployment_map(d)?,
        None => spec.deployments.clone(),
    };
    let given = parse_prices(prices.unwrap_or(&BTreeMap::new()))?;
    if let Some(name) = given.keys().find(|k| {
        !deployments.contains_key(*k) && !deployments.values().any(|m| m.as_ref() == Some(*k))
    }) {
        return Err(ApiError::BadRequest {
            message: format!(
                "'prices': {name:?} is neither a deployment of this provider nor a model one serves."
            ),
            param: Some("prices"),
            code: None,
        });
    }
    let preset = spec.preset.clone();
    spec.prices = deployment_prices(
        &deployments,
        &given,
        Some((&spec.deployments, &spec.prices)),
        |m| catalog::model_price(preset.as_deref(), m),
    );
    spec.models = deployments.keys().cloned().collect();
    spec.deployments = deployments;
    Ok(())
}

/// Renews the AWS keys of a Bedrock provider that signs with them (SigV4).
fn patch_aws_credentials(
    state: &AppState,
    provider: Uuid,
    spec: &mut ProviderSpec,
    patch: &ProviderPatch,
) -> Result<(), ApiError> {
    let fields = [
        &patch.aws_access_key_id,
        &patch.aws_secret_access_key,
        &patch.aws_session_token,
    ];
    if fields.iter().all(|f| f.is_none()) {
        return Ok(());
    }
    if spec.kind != ProviderKind::Bedrock || spec.setting("auth") != Some("sigv4") {
        return Err(ApiError::bad_request(
            "AWS credentials apply only to a Bedrock provider configured with AWS keys.",
        ));
    }
    if let Some(id) = patch.aws_access_key_id.as_deref().map(str::trim) {
        if id.is_empty() {
            return Err(ApiError::bad_request(
                "'aws_access_key_id' must not be empty.",
            ));
        }
        catalog::valid_setting("aws_access_key_id", id).map_err(preset_error)?;
        spec.settings
            .insert("aws_access_key_id".into(), id.to_string());
    }
    if let Some(secret) = patch.aws_secret_access_key.as_deref().map(str::trim) {
        if secret.is_empty() {
            return Err(ApiError::bad_request(
                "'aws_secret_access_key' must not be empty.",
            ));
        }
        spec.sealed_credential = Some(seal(state, provider, CredentialField::ApiKey, secret)?);
    }
    if let Some(token) = patch.aws_session_token.as_deref().map(str::trim) {
        spec.sealed_session_token = match token {
            "" => None,
            token => {
                catalog::valid_session_token(token).map_err(preset_error)?;
                Some(seal(state, provider, CredentialField::SessionToken, token)?)
            }
        };
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/admin/api/providers",
    tag = "providers",
    summary = "Configured providers",
    responses((status = 200, description = "The providers.", body = crate::openapi::admin::ProviderList))
)]
pub async fn list_providers(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .providers()
        .iter()
        .map(|p| provider_view(p))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

#[utoipa::path(
    get,
    path = "/admin/api/providers/{id}",
    tag = "providers",
    summary = "One provider",
    params(("id" = String, Path, description = "The provider id.")),
    responses((status = 200, description = "The provider.", body = crate::openapi::admin::Provider))
)]
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

#[utoipa::path(
    delete,
    path = "/admin/api/providers/{id}",
    tag = "providers",
    summary = "Remove a provider",
    params(("id" = String, Path, description = "The provider id.")),
    responses((status = 200, description = "Removed.", body = crate::openapi::admin::Deleted))
)]
pub async fn delete_provider(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "provider")?;
    remove(&state, &actor, id).await?;
    Ok(Json(
        json!({ "id": id, "object": "provider", "deleted": true }),
    ))
}

/// `POST /admin/api/providers/{id}/test`: a one-token chat with the
/// provider's first model, straight from the ingress, to check the endpoint
/// and credential (media-only providers: a free read of the key's account).
/// Not routed, not recorded, not billed to any key (the provider may charge
/// for the token).
#[utoipa::path(
    post,
    path = "/admin/api/providers/{id}/test",
    tag = "providers",
    summary = "Test the provider with a one-token chat (or an account read)",
    params(("id" = String, Path, description = "The provider id.")),
    responses((status = 200, description = "The provider answered.", body = crate::openapi::admin::ProviderTest))
)]
pub async fn test_provider(
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
    let spec = &provider.spec;
    let model = spec
        .served()
        .first()
        .map(|m| m.to_string())
        .ok_or_else(|| ApiError::bad_request("The provider lists no model to test with."))?;
    let key = match spec.sealed_credential.as_deref() {
        None => None,
        Some(sealed) => Some(
            state
                .sealer
                .open(sealed, &Binding::new(id, CredentialField::ApiKey))
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
    };
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    });
    let started = std::time::Instant::now();
    // Media-only providers cannot chat: their credential is checked with a
    // free read of the account it belongs to instead.
    let answer = match aigw_dispatcher::media::check_account(&state.http, spec, key.as_ref()).await
    {
        Some(checked) => checked,
        None => aigw_dispatcher::adapter::chat(&state.http, spec, key.as_ref(), &body, false)
            .await
            .map(|_| "chat"),
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    match answer {
        Ok(check) => Ok(Json(json!({
            "ok": true,
            "provider": spec.name,
            "model": model,
            "check": check,
            "latency_ms": latency_ms,
        }))),
        Err(e) => Err(ApiError::Relayed {
            status: axum::http::StatusCode::from_u16(e.status())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
            body: Bytes::from(serde_json::to_vec(&e.body()).unwrap_or_default()),
            retry_after: e.retry_after,
        }),
    }
}
