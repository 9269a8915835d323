//! Schemas of the admin API (`/admin/api`) for the OpenAPI document.
//!
//! The admin's own input types (`KeyInput`, `NewProvider`,
//! `ProviderPatch`, `PriceInput`, `AliasInput`, `TopUp`, `Rotate`) derive
//! their schemas where they are defined; this module describes what has no
//! Rust type of its own in the ingress: the views the handlers build as
//! JSON, and inputs whose types live in crates that stay free of HTTP
//! concerns (a preset's input, an alias's targets). Never built, only
//! described; `tests/api/openapi.rs` checks the answers against them.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

use crate::admin::PriceInput;
use crate::openapi::schemas::BudgetPeriod;

/// `POST /admin/api/keys`: like `KeyInput` (the `PATCH` body), but `name`
/// is required. A unit test keeps both listing the same fields.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1-128 bytes, no control characters.
    #[schema(example = "my-app", min_length = 1, max_length = 128)]
    pub name: String,
    #[schema(max_length = 128)]
    pub owner: Option<String>,
    /// Requests per minute.
    #[schema(minimum = 1)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[schema(minimum = 1)]
    pub tpm: Option<u64>,
    #[schema(minimum = 0)]
    pub budget_usd: Option<f64>,
    #[schema(minimum = 0)]
    pub budget_tokens: Option<i64>,
    pub budget_period: Option<BudgetPeriod>,
    /// Synchronous requests in flight at once.
    #[schema(minimum = 1)]
    pub max_concurrency: Option<u32>,
    /// Percentages of `budget_usd` whose crossing is an alert (1 to 100,
    /// at most 10; default 50, 80, 100).
    #[schema(max_items = 10)]
    pub alert_thresholds: Option<Vec<u8>>,
    #[schema(max_items = 256)]
    pub allowed_models: Option<Vec<String>>,
    #[schema(max_items = 256)]
    pub allowed_providers: Option<Vec<String>>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// The project the key belongs to.
    #[schema(format = Uuid)]
    pub project_id: Option<String>,
}

/// `POST /admin/api/providers` with `preset`: a catalog preset and its key
/// (plus the fields the preset requires, see `GET /admin/api/presets`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetProvider {
    #[schema(example = "deepseek")]
    pub preset: String,
    pub api_key: Option<String>,
    pub name: Option<String>,
    /// A bare host replaces the preset's host; a URL with a path replaces
    /// the whole base URL.
    pub base_url: Option<String>,
    /// A regional variant (`cn`, `intl`, ...).
    pub variant: Option<String>,
    pub models: Option<Vec<String>>,
    pub prices: Option<BTreeMap<String, PriceInput>>,
    /// Azure: one deployment (with `model`), or several as `deployments`.
    pub deployment: Option<String>,
    pub model: Option<String>,
    /// Azure: deployment name to the model it serves (`null`: not said).
    pub deployments: Option<BTreeMap<String, Option<String>>>,
    pub api_version: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
}

/// A model's prices as the admin API shows them.
#[derive(ToSchema)]
pub struct PriceView {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub cached_input_usd_per_mtok: Option<f64>,
    pub reasoning_usd_per_mtok: Option<f64>,
    pub per_image_usd: Option<f64>,
    pub per_mchar_usd: Option<f64>,
    pub per_hour_usd: Option<f64>,
}

/// A configured provider: never its credentials, only whether it has some.
#[derive(ToSchema)]
pub struct Provider {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "provider")]
    pub object: String,
    pub name: String,
    /// The wire format (`openai`, `anthropic`, `gemini`, `azure`, ...).
    pub kind: String,
    pub base_url: String,
    pub models: Vec<String>,
    /// Azure: deployment name to the model it serves.
    pub deployments: Option<BTreeMap<String, Option<String>>>,
    pub has_credential: bool,
    pub has_session_token: bool,
    /// How many API keys it uses in turn.
    pub credentials: u32,
    pub max_concurrency: Option<u32>,
    pub enabled: bool,
    pub prices: BTreeMap<String, PriceView>,
    pub preset: Option<String>,
    pub settings: Value,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(ToSchema)]
pub struct ProviderList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Provider>,
}

/// The answer to a delete.
#[derive(ToSchema)]
pub struct Deleted {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

/// `POST /admin/api/providers/{id}/test` when the provider answered.
#[derive(ToSchema)]
pub struct ProviderTest {
    pub ok: bool,
    pub provider: String,
    pub model: String,
    /// `chat`, or the account read a media-only provider got.
    pub check: String,
    pub latency_ms: u64,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Strategy {
    Priority,
    Weighted,
    Cost,
    Latency,
    Auto,
}

/// One place an alias sends requests to.
#[derive(ToSchema)]
pub struct AliasTarget {
    /// Provider id or name.
    pub provider: String,
    #[schema(max_length = 256)]
    pub model: String,
    #[schema(minimum = 1)]
    pub weight: Option<u32>,
}

#[derive(ToSchema)]
pub struct Alias {
    #[schema(example = "alias")]
    pub object: String,
    pub name: String,
    pub strategy: Strategy,
    pub targets: Vec<AliasTarget>,
}

#[derive(ToSchema)]
pub struct AliasList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Alias>,
}

/// A team: its limits and scopes apply to every key of its projects.
#[derive(ToSchema)]
pub struct Team {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "team")]
    pub object: String,
    pub name: String,
    pub limits: crate::openapi::schemas::KeyLimits,
    pub scopes: crate::openapi::schemas::KeyScopes,
    /// How many live projects it has.
    pub projects: u64,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// The current period's budget (`GET` of one team).
    pub budget: Option<crate::openapi::schemas::Budget>,
}

#[derive(ToSchema)]
pub struct TeamList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Team>,
}

/// A project, in exactly one team; keys belong to at most one project.
#[derive(ToSchema)]
pub struct Project {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "project")]
    pub object: String,
    pub name: String,
    #[schema(format = Uuid)]
    pub team_id: String,
    pub team_name: Option<String>,
    pub limits: crate::openapi::schemas::KeyLimits,
    pub scopes: crate::openapi::schemas::KeyScopes,
    /// How many unrevoked keys belong to it.
    pub keys: u64,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// The current period's budget (`GET` of one project).
    pub budget: Option<crate::openapi::schemas::Budget>,
}

#[derive(ToSchema)]
pub struct ProjectList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Project>,
}

#[derive(ToSchema)]
pub struct KeyList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<crate::openapi::schemas::ApiKey>,
}

/// One change of a key, with its time and actor.
#[derive(ToSchema)]
pub struct KeyEvent {
    pub sequence: i64,
    pub r#type: String,
    pub at: Value,
    pub actor: Value,
    pub data: Value,
}

#[derive(ToSchema)]
pub struct KeyEventList {
    pub object: String,
    pub data: Vec<KeyEvent>,
}

/// A list of report rows (presets, health, usage, billing, quarantine):
/// `data` holds objects whose fields the README describes.
#[derive(ToSchema)]
pub struct ObjectList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<BTreeMap<String, Value>>,
}

/// A report (usage, billing, admin stats, a request's events, an audit):
/// an object whose fields the README describes.
#[derive(ToSchema)]
pub struct Report {
    pub object: Option<String>,
}
