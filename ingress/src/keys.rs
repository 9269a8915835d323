//! API keys: the admin's `/admin/api/keys` and the caller's `GET /v1/key`.
//!
//! Every change is a command on the key aggregate (with the admin identity
//! as actor); the registry row is refreshed from the events and announced
//! to every replica before the call returns.

use aigw_events::key::{BudgetPeriod, KeyLimits, KeyScopes, KeySettings};
use aigw_events::provider::usd_to_micros;
use aigw_events::{KeyCommand, META_ACTOR};
use aigw_runtime::KeyEntry;
use aigw_runtime::crypto::{display_prefix, generate_api_key, hash_api_key};
use aigw_runtime::limits::Owner;
use aigw_runtime::registry::{self, KIND_KEYS};
use aigw_runtime::store::metadata;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::{command_error, parse_id, parse_json};
use crate::auth::{Admin, Caller};
use crate::chat::body_bytes;
use crate::error::ApiError;
use crate::roles::TeamScope;
use crate::validate;

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

/// Settings an admin sends when creating or changing a key. On `PATCH`, an
/// absent field keeps its value and `null` removes a limit.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<Option<String>>,
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
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 1)]
    pub max_concurrency: Option<Option<u32>>,
    /// Percentages of `budget_usd` whose crossing is an alert (1 to 100,
    /// at most 10); `null`: the defaults, 50, 80 and 100.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_items = 10)]
    pub alert_thresholds: Option<Option<Vec<u8>>>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_providers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// The project the key belongs to (`null`: none); its team's and its
    /// limits and scopes apply on top of the key's own.
    #[serde(default, deserialize_with = "present")]
    pub project_id: Option<Option<Uuid>>,
}

impl KeyInput {
    /// `base` with this input's changes applied, validated.
    pub fn apply(self, mut base: KeySettings) -> Result<KeySettings, ApiError> {
        if let Some(name) = self.name {
            base.name = name.trim().to_string();
        }
        if base.name.is_empty() || validate::plain_text(&base.name, 128).is_err() {
            return Err(ApiError::bad_request(
                "'name' must be 1-128 bytes, without control characters.",
            ));
        }
        if let Some(owner) = self.owner {
            base.owner = owner
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty());
        }
        if base
            .owner
            .as_deref()
            .is_some_and(|o| validate::plain_text(o, 128).is_err())
        {
            return Err(ApiError::bad_request(
                "'owner' must be at most 128 bytes, without control characters.",
            ));
        }
        if let Some(rpm) = self.rpm {
            if rpm == Some(0) {
                return Err(ApiError::bad_request(
                    "'rpm' must be positive (or null for no limit).",
                ));
            }
            base.limits.rpm = rpm;
        }
        if let Some(tpm) = self.tpm {
            if tpm.is_some_and(|t| !(1..=MAX_TOKEN_BUDGET as u64).contains(&t)) {
                return Err(ApiError::bad_request(format!(
                    "'tpm' must be from 1 to {MAX_TOKEN_BUDGET} (or null for no limit)."
                )));
            }
            base.limits.tpm = tpm;
        }
        if let Some(budget) = self.budget_usd {
            base.limits.budget_micros = budget
                .map(|usd| {
                    usd_to_micros(usd).ok_or_else(|| {
                        ApiError::bad_request("'budget_usd' must be a non-negative amount.")
                    })
                })
                .transpose()?;
        }
        if let Some(tokens) = self.budget_tokens {
            if tokens.is_some_and(|t| !(0..=MAX_TOKEN_BUDGET).contains(&t)) {
                return Err(ApiError::bad_request(format!(
                    "'budget_tokens' must be from 0 to {MAX_TOKEN_BUDGET}."
                )));
            }
            base.limits.budget_tokens = tokens;
        }
        if let Some(period) = self.budget_period {
            base.limits.budget_period = period;
        }
        if let Some(max) = self.max_concurrency {
            if max == Some(0) {
                return Err(ApiError::BadRequest {
                    message: "'max_concurrency' must be positive (or null for no limit).".into(),
                    param: Some("max_concurrency"),
                    code: None,
                });
            }
            base.limits.max_concurrency = max;
        }
        if let Some(thresholds) = self.alert_thresholds {
            if thresholds
                .as_deref()
                .is_some_and(|t| !aigw_events::alert::valid_thresholds(t))
            {
                return Err(ApiError::BadRequest {
                    message: format!(
                        "'alert_thresholds' must be 1 to {} distinct percentages from 1 to 100 (or null for the defaults).",
                        aigw_events::alert::MAX_THRESHOLDS
                    ),
                    param: Some("alert_thresholds"),
                    code: None,
                });
            }
            base.limits.alert_thresholds = thresholds.map(|mut t| {
                t.sort_unstable();
                t
            });
        }
        let clean = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        if let Some(models) = self.allowed_models {
            base.scopes.allowed_models =
                scope_list("allowed_models", clean(models), validate::model_name)?;
        }
        if let Some(providers) = self.allowed_providers {
            base.scopes.allowed_providers = scope_list(
                "allowed_providers",
                clean(providers),
                validate::provider_ref,
            )?;
        }
        if let Some(expires) = self.expires_at {
            base.expires_at = expires;
        }
        if let Some(project) = self.project_id {
            base.project_id = project;
        }
        Ok(base)
    }
}

/// The largest token budget (and TPM limit) a key may have.
pub const MAX_TOKEN_BUDGET: i64 = 1_000_000_000_000_000;
/// Most entries in a key's `allowed_models` or `allowed_providers`.
pub const MAX_SCOPE_ENTRIES: usize = 256;

/// A scope list: at most [`MAX_SCOPE_ENTRIES`] entries, each valid by `rule`.
fn scope_list(
    field: &str,
    list: Vec<String>,
    rule: fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ApiError> {
    if list.len() > MAX_SCOPE_ENTRIES {
        return Err(ApiError::bad_request(format!(
            "'{field}' may have at most {MAX_SCOPE_ENTRIES} entries."
        )));
    }
    for entry in &list {
        rule(entry)
            .map_err(|why| ApiError::bad_request(format!("'{field}': {entry:?} must {why}.")))?;
    }
    Ok(list)
}

pub(crate) fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

pub(crate) fn limits_view(l: &KeyLimits) -> Value {
    json!({
        "rpm": l.rpm,
        "tpm": l.tpm,
        "budget_usd": l.budget_micros.map(usd),
        "budget_tokens": l.budget_tokens,
        "budget_period": l.budget_period,
        "max_concurrency": l.max_concurrency,
        "alert_thresholds": l.alert_thresholds(),
    })
}

pub(crate) fn scopes_view(s: &KeyScopes) -> Value {
    json!({ "allowed_models": s.allowed_models, "allowed_providers": s.allowed_providers })
}

/// A key's settings must name a live project, if any (400 otherwise).
pub fn check_project(state: &AppState, settings: &KeySettings) -> Result<(), ApiError> {
    match settings.project_id {
        Some(id) if state.registry.project(id).is_none() => Err(ApiError::BadRequest {
            message: format!("No such project: {id}."),
            param: Some("project_id"),
            code: None,
        }),
        _ => Ok(()),
    }
}

pub fn key_view(k: &KeyEntry) -> Value {
    let s = &k.state;
    json!({
        "id": k.id,
        "object": "api_key",
        "name": s.settings.name,
        "owner": s.settings.owner,
        "prefix": s.prefix,
        "status": if s.is_expired(Utc::now()) && s.status.as_str() == "active" { "expired" } else { s.status.as_str() },
        "limits": limits_view(&s.settings.limits),
        "scopes": scopes_view(&s.settings.scopes),
        "expires_at": s.settings.expires_at,
        "project_id": s.settings.project_id,
        "created_at": s.created_at,
        "revoked_at": s.revoked_at,
    })
}

/// The current period's budget: spent, held by running requests, remaining.
async fn budget_view(state: &AppState, k: &KeyEntry) -> Result<Value, ApiError> {
    let now = Utc::now();
    let (period, budget_micros, budget_tokens) = k.state.budgets_at(now);
    let used = state
        .limiter
        .budget(k.id, &period)
        .await
        .map_err(|e| ApiError::Unavailable(format!("budget state: {e}")))?;
    let (held_micros, held_tokens) = used.held();
    Ok(json!({
        "period": period,
        "budget_usd": budget_micros.map(usd),
        "spent_usd": usd(used.spent_micros),
        "held_usd": usd(held_micros),
        "remaining_usd": budget_micros.map(|b| usd((b - used.spent_micros - held_micros).max(0))),
        "budget_tokens": budget_tokens,
        "spent_tokens": used.spent_tokens,
        "held_tokens": held_tokens,
        "remaining_tokens": budget_tokens.map(|b| (b - used.spent_tokens - held_tokens).max(0)),
        "spent_micros": used.spent_micros,
    }))
}

async fn sync_key(state: &AppState, id: Uuid) -> Result<std::sync::Arc<KeyEntry>, ApiError> {
    registry::refresh_key(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)?;
    state
        .registry
        .reload_key(id)
        .await
        .map_err(ApiError::internal)?;
    registry::announce(&state.client, &state.names, KIND_KEYS, id).await;
    state.registry.key(id).ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "No such key.".into(),
        code: "not_found",
    }
}

async fn execute(
    state: &AppState,
    id: Uuid,
    actor: &str,
    command: KeyCommand,
) -> Result<(), ApiError> {
    state
        .stores
        .keys
        .execute_with_metadata(&id.to_string(), command, metadata(&[(META_ACTOR, actor)]))
        .await
        .map_err(|e| command_error(e, "key"))
}

#[utoipa::path(
    post,
    path = "/admin/api/keys",
    tag = "keys",
    summary = "Create an API key (its secret is shown only here)",
    request_body = crate::openapi::admin::NewKey,
    responses((status = 201, description = "The key, with its secret as `key`.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn create_key(
    State(state): State<AppState>,
    Admin(actor): Admin,
    scope: TeamScope,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: KeyInput = parse_json(&body_bytes(&state, body)?)?;
    if input.name.is_none() {
        return Err(ApiError::BadRequest {
            message: "Missing required parameter: 'name'.".into(),
            param: Some("name"),
            code: None,
        });
    }
    let settings = input.apply(KeySettings::default())?;
    check_project(&state, &settings)?;
    scope.check_key(&state, &settings)?;
    let (entry, secret) = issue(&state, &actor, settings).await?;
    let mut view = key_view(&entry);
    // The only time the secret is ever shown.
    view["key"] = Value::String(secret.expose_secret().to_string());
    Ok((StatusCode::CREATED, Json(view)))
}

/// Issues a new key with `settings` (an `IssueKey` command by `actor`);
/// returns it and its secret, which nothing stores.
pub async fn issue(
    state: &AppState,
    actor: &str,
    settings: KeySettings,
) -> Result<(std::sync::Arc<KeyEntry>, secrecy::SecretString), ApiError> {
    let secret = generate_api_key();
    let id = Uuid::now_v7();
    execute(
        state,
        id,
        actor,
        KeyCommand::IssueKey {
            settings,
            key_hash: hash_api_key(secret.expose_secret()),
            prefix: display_prefix(secret.expose_secret()),
            actor: actor.to_string(),
            at: Utc::now(),
        },
    )
    .await?;
    Ok((sync_key(state, id).await?, secret))
}

/// Replaces key `id`'s settings (an `UpdateKey` command by `actor`).
pub async fn reconfigure(
    state: &AppState,
    actor: &str,
    id: Uuid,
    settings: KeySettings,
) -> Result<std::sync::Arc<KeyEntry>, ApiError> {
    execute(
        state,
        id,
        actor,
        KeyCommand::UpdateKey {
            settings,
            actor: actor.to_string(),
            at: Utc::now(),
        },
    )
    .await?;
    sync_key(state, id).await
}

/// Revokes key `id` (a `RevokeKey` command by `actor`).
pub async fn revoke(
    state: &AppState,
    actor: &str,
    id: Uuid,
) -> Result<std::sync::Arc<KeyEntry>, ApiError> {
    execute(
        state,
        id,
        actor,
        KeyCommand::RevokeKey {
            actor: actor.to_string(),
            at: Utc::now(),
        },
    )
    .await?;
    sync_key(state, id).await
}

#[utoipa::path(
    get,
    path = "/admin/api/keys",
    tag = "keys",
    summary = "Every key",
    responses((status = 200, description = "The keys.", body = crate::openapi::admin::KeyList))
)]
pub async fn list_keys(State(state): State<AppState>, scope: TeamScope) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .keys()
        .iter()
        .filter(|k| scope.allows_key(&state, &k.state.settings))
        .map(|k| key_view(k))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

type UsageRow = (NaiveDate, String, i64, i64, i64, i64, i64);

#[utoipa::path(
    get,
    path = "/admin/api/keys/{id}",
    tag = "keys",
    summary = "One key, with its budget and recent usage",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The key.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn get_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    let entry = state.registry.key(id).ok_or_else(not_found)?;
    let mut view = key_view(&entry);
    view["budget"] = budget_view(&state, &entry).await?;
    let recent: Vec<UsageRow> = sqlx::query_as(
        "SELECT day, model, requests, errors, prompt_tokens, completion_tokens, cost_micros
         FROM usage_daily WHERE key_id = $1 ORDER BY day DESC, model LIMIT 90",
    )
    .bind(id)
    .fetch_all(&state.stores.pool)
    .await
    .map_err(ApiError::internal)?;
    view["recent_usage"] = recent
        .into_iter()
        .map(|(day, model, requests, errors, prompt, completion, cost)| {
            json!({"day": day, "model": model, "requests": requests, "errors": errors,
                   "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": usd(cost)})
        })
        .collect();
    Ok(Json(view))
}

#[utoipa::path(
    patch,
    path = "/admin/api/keys/{id}",
    tag = "keys",
    summary = "Change a key (`null` removes a limit)",
    params(("id" = String, Path, description = "The key id.")),
    request_body = KeyInput,
    responses((status = 200, description = "The key.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn update_key(
    State(state): State<AppState>,
    Admin(actor): Admin,
    scope: TeamScope,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    let input: KeyInput = parse_json(&body_bytes(&state, body)?)?;
    let current = state.registry.key(id).ok_or_else(not_found)?;
    let settings = input.apply(current.state.settings.clone())?;
    check_project(&state, &settings)?;
    scope.check_key(&state, &settings)?;
    let entry = reconfigure(&state, &actor, id, settings).await?;
    Ok(Json(key_view(&entry)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    #[serde(default)]
    pub amount_usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/admin/api/keys/{id}/topup",
    tag = "keys",
    summary = "Add to the current period's budget",
    params(("id" = String, Path, description = "The key id.")),
    request_body = TopUp,
    responses((status = 200, description = "The key with its budget.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn top_up(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    let input: TopUp = parse_json(&body_bytes(&state, body)?)?;
    let amount_micros = match input.amount_usd {
        None => 0,
        Some(v) => usd_to_micros(v)
            .filter(|m| *m > 0)
            .ok_or_else(|| ApiError::bad_request("'amount_usd' must be a positive amount."))?,
    };
    let tokens = input.tokens.unwrap_or(0);
    if !(0..=MAX_TOKEN_BUDGET).contains(&tokens) || (amount_micros == 0 && tokens == 0) {
        return Err(ApiError::bad_request(format!(
            "A top-up needs a positive 'amount_usd' or 'tokens' (at most {MAX_TOKEN_BUDGET})."
        )));
    }
    // The period's budget with every top-up must still be a sane amount.
    if let Some(key) = state.registry.key(id) {
        let (_, micros, budget_tokens) = key.state.budgets_at(Utc::now());
        let max_micros = usd_to_micros(aigw_events::pricing::MAX_USD).unwrap_or(i64::MAX);
        let fits = micros
            .unwrap_or(0)
            .checked_add(amount_micros)
            .is_some_and(|m| m <= max_micros)
            && budget_tokens
                .unwrap_or(0)
                .checked_add(tokens)
                .is_some_and(|t| t <= MAX_TOKEN_BUDGET);
        if !fits {
            return Err(ApiError::bad_request(
                "This top-up would take the key's budget for the period past the largest amount aigw holds.",
            ));
        }
    }
    execute(
        &state,
        id,
        &actor,
        KeyCommand::TopUpKey {
            amount_micros,
            tokens,
            actor: actor.clone(),
            at: Utc::now(),
        },
    )
    .await?;
    let entry = sync_key(&state, id).await?;
    let mut view = key_view(&entry);
    view["budget"] = budget_view(&state, &entry).await?;
    Ok(Json(view))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old secret keeps working (0: it stops at once).
    #[serde(default)]
    pub grace_seconds: u64,
}

#[utoipa::path(
    post,
    path = "/admin/api/keys/{id}/rotate",
    tag = "keys",
    summary = "A new secret for the key",
    params(("id" = String, Path, description = "The key id.")),
    request_body(content = Option<Rotate>),
    responses((status = 200, description = "The key, with its new secret as `key`.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn rotate(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    let bytes = body_bytes(&state, body)?;
    let input: Rotate = if bytes.is_empty() {
        Rotate::default()
    } else {
        parse_json(&bytes)?
    };
    let now = Utc::now();
    let grace = i64::try_from(input.grace_seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .filter(|g| *g <= chrono::Duration::days(30))
        .ok_or_else(|| ApiError::bad_request("'grace_seconds' may be at most 30 days."))?;
    let secret = generate_api_key();
    execute(
        &state,
        id,
        &actor,
        KeyCommand::RotateKey {
            key_hash: hash_api_key(secret.expose_secret()),
            prefix: display_prefix(secret.expose_secret()),
            grace_until: (input.grace_seconds > 0).then_some(now + grace),
            actor: actor.clone(),
            at: now,
        },
    )
    .await?;
    let entry = sync_key(&state, id).await?;
    let mut view = key_view(&entry);
    view["key"] = Value::String(secret.expose_secret().to_string());
    Ok(Json(view))
}

#[utoipa::path(
    delete,
    path = "/admin/api/keys/{id}",
    tag = "keys",
    summary = "Revoke a key",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The revoked key.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    let entry = revoke(&state, &actor, id).await?;
    Ok(Json(key_view(&entry)))
}

#[utoipa::path(
    post,
    path = "/admin/api/keys/{id}/revoke",
    tag = "keys",
    summary = "Revoke a key (the same as `DELETE /admin/api/keys/{id}`)",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The revoked key.", body = crate::openapi::schemas::ApiKey))
)]
pub async fn revoke_key_post(
    state: State<AppState>,
    admin: Admin,
    id: Path<String>,
) -> Result<Json<Value>, ApiError> {
    revoke_key(state, admin, id).await
}

type EventRow = (i64, String, Value, Value);

/// `GET /admin/api/keys/{id}/events`: the key's whole history, in order.
#[utoipa::path(
    get,
    path = "/admin/api/keys/{id}/events",
    tag = "keys",
    summary = "The key's history",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "Its events, in order.", body = crate::openapi::admin::KeyEventList))
)]
pub async fn key_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "key")?;
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT sequence, event_type, payload::jsonb, metadata::jsonb FROM events
         WHERE aggregate_type = 'key' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&state.stores.pool)
    .await
    .map_err(ApiError::internal)?;
    if rows.is_empty() {
        return Err(not_found());
    }
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(sequence, event_type, payload, meta)| {
            let body = payload.get(&event_type).cloned().unwrap_or(Value::Null);
            json!({
                "sequence": sequence,
                "type": event_type,
                "at": body.get("at"),
                "actor": meta.get(META_ACTOR).or_else(|| body.get("actor")),
                "data": body,
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// What the key may still spend and how fast, over every level: the least
/// `remaining_usd` and `remaining_tokens` of the levels with a budget (the
/// level with the least left is `limited_by`: dollars decide when any level
/// has a spend budget, else tokens), and the lowest RPM and TPM.
fn effective_limits(view: &mut Value, levels: &[Value]) {
    let least = |field: &str| {
        levels
            .iter()
            .filter_map(|l| Some((l["budget"][field].as_f64()?, l["level"].clone())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    let usd = least("remaining_usd");
    let tokens = least("remaining_tokens");
    view["remaining_usd"] = json!(usd.as_ref().map(|u| u.0));
    view["remaining_tokens"] = json!(tokens.as_ref().map(|t| t.0 as i64));
    view["limited_by"] = usd.or(tokens).map_or(Value::Null, |(_, level)| level);
    let lowest = |field: &str| {
        levels
            .iter()
            .filter_map(|l| l["limits"][field].as_u64())
            .min()
    };
    view["rpm"] = json!(lowest("rpm"));
    view["tpm"] = json!(lowest("tpm"));
}

/// `GET /v1/key`: the caller's own key, limits and current period's budget.
#[utoipa::path(
    get,
    path = "/v1/key",
    tag = "caller",
    summary = "The caller's own key, limits and budget",
    responses((status = 200, description = "The key.", body = crate::openapi::schemas::OwnKey))
)]
pub async fn own_key(
    State(state): State<AppState>,
    Caller(key): Caller,
) -> Result<Json<Value>, ApiError> {
    let lineage = crate::admission::lineage(&state, &key)?;
    let mut view = key_view(&key);
    let budget = budget_view(&state, &key).await?;
    let own = &key.state.settings.limits;
    let has_budget = |l: &KeyLimits| l.budget_micros.is_some() || l.budget_tokens.is_some();
    let mut levels = vec![json!({
        "level": "key",
        "id": key.id,
        "name": key.state.settings.name,
        "limits": limits_view(own),
        "budget": has_budget(own).then(|| budget.clone()),
    })];
    for level in lineage.levels() {
        let limits = &level.policy.limits;
        let budget = match has_budget(limits) {
            true => Some(
                crate::teams::level_budget(&state, Owner::Level(level.level), level.policy).await?,
            ),
            false => None,
        };
        levels.push(json!({
            "level": level.level.kind(),
            "id": level.level.id(),
            "name": level.name,
            "limits": limits_view(limits),
            "budget": budget,
        }));
    }
    if let (Value::Object(v), Value::Object(b)) = (&mut view, budget) {
        v.extend(b);
    }
    effective_limits(&mut view, &levels);
    view["levels"] = Value::Array(levels);
    view["project_id"] = json!(lineage.project_id());
    view["project_name"] = json!(lineage.project.as_ref().map(|p| p.state.name.clone()));
    view["team_id"] = json!(lineage.team_id());
    view["team_name"] = json!(lineage.team.as_ref().map(|t| t.state.name.clone()));
    if key.state.settings.limits.max_concurrency.is_some() {
        let now_ms = Utc::now().timestamp_millis();
        let in_flight = state
            .limiter
            .in_flight(key.id)
            .await
            .map_err(|e| ApiError::Unavailable(format!("concurrency state: {e}")))?;
        view["in_flight"] = in_flight
            .requests
            .values()
            .filter(|lapses| **lapses > now_ms)
            .count()
            .into();
    }
    // The secret job webhooks are signed with (HMAC-SHA256 of the body, in
    // `x-aigw-signature`), shown to the key's own holder only.
    if let Ok(secret) = state.sealer.webhook_secret(key.id, &key.state.key_hash) {
        view["webhook_secret"] =
            Value::String(secrecy::ExposeSecret::expose_secret(&secret).to_string());
    }
    Ok(Json(view))
}
