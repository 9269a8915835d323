//! The preset catalog: one entry per known provider, shipped as data
//! (`runtime/catalog/presets.toml`), validated on first use, and turned into a
//! `ProviderSpec` from little more than an API key.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use aigw_events::deployments::{Deployments, deployment_prices};
use aigw_events::pricing::PriceUsd;
use aigw_events::provider::{Price, ProviderKind, ProviderSpec};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{Binding, CredentialField, Sealer};

mod deployments;
mod freshness;

pub use freshness::{StalePrices, stale_prices};

const CATALOG_TOML: &str = include_str!("../catalog/presets.toml");

pub const CATEGORIES: &[&str] = &["top", "china", "open", "specialised", "emerging"];
pub const WIRES: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "azure",
    "bedrock",
    "cohere",
    "stability",
    "elevenlabs",
    "assemblyai",
    "replicate",
    "runway",
    "media",
    "none",
];
pub const AUTHS: &[&str] = &[
    "bearer",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "sigv4-or-bearer",
    "xi-api-key",
    "raw-key",
    "none",
];
pub const FEATURES: &[&str] = &[
    "chat",
    "vision",
    "tools",
    "embeddings",
    "image",
    "audio",
    "video",
];
/// Fields a preset may name as required or optional (besides `api_key`).
pub const FIELDS: &[&str] = &[
    "base_url",
    "deployment",
    "api_version",
    "region",
    "account_id",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub preset: Vec<Preset>,
}

/// One provider of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub id: String,
    pub name_en: String,
    pub name_zh: String,
    pub description_en: String,
    pub description_zh: String,
    pub category: String,
    pub wire: String,
    /// May hold `{account_id}`, `{region}` or `{resource}` placeholders.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Regional variants (`cn`, `intl`, `eu`, ...), chosen with `variant`.
    #[serde(default)]
    pub base_urls: BTreeMap<String, String>,
    pub auth: String,
    /// Fields that must be given when configuring this preset.
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub optional: Vec<String>,
    /// Values used for optional settings left out.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    pub features: Vec<String>,
    pub docs: String,
    #[serde(default = "yes")]
    pub configurable: bool,
    /// Why a preset cannot be configured.
    #[serde(default)]
    pub reason: Option<String>,
    pub models: Vec<PresetModel>,
    /// Where the catalog's prices of this preset come from (an https URL);
    /// required when any model is priced.
    #[serde(default)]
    pub price_source: Option<String>,
    /// The day those prices were last checked against the source
    /// (`YYYY-MM-DD`); `aigw prices check` lists presets older than an age.
    #[serde(default)]
    pub prices_as_of: Option<chrono::NaiveDate>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetModel {
    pub id: String,
    /// Context window in tokens, where the source states it.
    #[serde(default)]
    pub context: Option<u64>,
    /// Most output tokens one request may produce (`max_tokens` and its
    /// kin, reasoning included), where the source states it.
    #[serde(default)]
    pub max_output: Option<u64>,
    /// USD per 1M input tokens (absent when unknown: the model is unpriced).
    #[serde(default)]
    pub input: Option<f64>,
    /// USD per 1M output tokens (absent when unknown: the model is unpriced).
    #[serde(default)]
    pub output: Option<f64>,
    /// USD per 1M prompt tokens read from the provider's cache, where the
    /// provider publishes it (absent: billed at `input`, flagged).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// USD per 1M prompt tokens written to the cache for 5 minutes.
    #[serde(default)]
    pub cache_write_5m: Option<f64>,
    /// USD per 1M prompt tokens written to the cache for an hour.
    #[serde(default)]
    pub cache_write_1h: Option<f64>,
    /// USD per 1M reasoning tokens, where billed apart from `output`.
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// USD per generated image (image models).
    #[serde(default)]
    pub image: Option<f64>,
    /// USD per 1M characters of speech (text-to-speech models).
    #[serde(default)]
    pub per_mchar: Option<f64>,
    /// USD per hour of transcribed audio (speech-to-text models).
    #[serde(default)]
    pub per_hour: Option<f64>,
}

impl PresetModel {
    /// The model's price, if the catalog knows one: tokens (input and
    /// output together) and/or a media rate. `None` when a given amount is
    /// negative or no price is given.
    pub fn price(&self) -> Option<Price> {
        let media = [self.image, self.per_mchar, self.per_hour];
        let (input, output) = match (self.input, self.output) {
            (Some(i), Some(o)) => (i, o),
            (None, None) if media.iter().any(Option::is_some) => (0.0, 0.0),
            _ => return None,
        };
        PriceUsd {
            input_usd_per_mtok: input,
            output_usd_per_mtok: output,
            cached_input_usd_per_mtok: self.cached_input,
            cache_write_5m_usd_per_mtok: self.cache_write_5m,
            cache_write_1h_usd_per_mtok: self.cache_write_1h,
            reasoning_usd_per_mtok: self.reasoning,
            per_image_usd: self.image,
            per_mchar_usd: self.per_mchar,
            per_hour_usd: self.per_hour,
        }
        .to_price()
        .ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the preset catalog is not valid TOML: {0}")]
    Parse(String),
    #[error("preset {id:?}: {problem}")]
    Invalid { id: String, problem: String },
}

/// Why a provider could not be built from a preset (shown to the admin).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    #[error("unknown preset {0:?}; GET /admin/api/presets lists them")]
    Unknown(String),
    #[error("preset {id:?} cannot be configured: {reason}")]
    NotConfigurable { id: String, reason: String },
    #[error("preset {preset:?} requires '{field}'")]
    Missing { preset: String, field: String },
    #[error("preset {preset:?} does not take '{field}'")]
    Unexpected { preset: String, field: String },
    #[error("preset {preset:?} has no variant {variant:?} (known: {known})")]
    UnknownVariant {
        preset: String,
        variant: String,
        known: String,
    },
    #[error("'{field}' is invalid: {problem}")]
    Invalid { field: String, problem: String },
    #[error("the credential could not be sealed: {0}")]
    Seal(String),
}

impl Catalog {
    /// Parses and validates catalog text.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog =
            toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    pub fn get(&self, id: &str) -> Option<&Preset> {
        self.preset.iter().find(|p| p.id == id)
    }

    fn validate(&self) -> Result<(), CatalogError> {
        let mut seen = HashSet::new();
        for p in &self.preset {
            let bad = |problem: String| CatalogError::Invalid {
                id: p.id.clone(),
                problem,
            };
            if p.id.is_empty()
                || !p
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(bad("id must be lowercase letters, digits and '-'".into()));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(bad("duplicate id".into()));
            }
            for (what, text) in [
                ("name_en", &p.name_en),
                ("name_zh", &p.name_zh),
                ("description_en", &p.description_en),
                ("description_zh", &p.description_zh),
            ] {
                if text.trim().is_empty() {
                    return Err(bad(format!("{what} is empty")));
                }
            }
            if !CATEGORIES.contains(&p.category.as_str()) {
                return Err(bad(format!("unknown category {:?}", p.category)));
            }
            if !WIRES.contains(&p.wire.as_str()) {
                return Err(bad(format!("unknown wire format {:?}", p.wire)));
            }
            if !AUTHS.contains(&p.auth.as_str()) {
                return Err(bad(format!("unknown auth scheme {:?}", p.auth)));
            }
            for f in &p.features {
                if !FEATURES.contains(&f.as_str()) {
                    return Err(bad(format!("unknown feature {f:?}")));
                }
            }
            for f in p
                .required
                .iter()
                .chain(&p.optional)
                .chain(p.defaults.keys())
            {
                if !FIELDS.contains(&f.as_str()) {
                    return Err(bad(format!("unknown field {f:?}")));
                }
            }
            if !p.docs.starts_with("https://") {
                return Err(bad("docs must be an https:// URL".into()));
            }
            for url in p.base_url.iter().chain(p.base_urls.values()) {
                if !url.starts_with("https://") {
                    return Err(bad(format!("base URL {url:?} is not https://")));
                }
            }
            if p.configurable {
                if p.kind().is_none() {
                    return Err(bad(format!(
                        "wire format {:?} cannot be configured; set configurable = false",
                        p.wire
                    )));
                }
                if p.base_url.is_none() {
                    return Err(bad("a configurable preset needs base_url".into()));
                }
                if !p
                    .features
                    .iter()
                    .any(|f| ["chat", "embeddings", "image", "audio"].contains(&f.as_str()))
                {
                    return Err(bad(
                        "a configurable preset must serve chat, embeddings, images or audio".into(),
                    ));
                }
                if p.models.is_empty() {
                    return Err(bad("a configurable preset needs at least one model".into()));
                }
            } else if p.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(bad("configurable = false needs a reason".into()));
            }
            let mut model_ids = HashSet::new();
            let mut any_price = false;
            for m in &p.models {
                if m.id.trim().is_empty() || !model_ids.insert(m.id.as_str()) {
                    return Err(bad(format!("model id {:?} is empty or repeated", m.id)));
                }
                let priced = [m.input, m.output, m.image, m.per_mchar, m.per_hour]
                    .iter()
                    .any(Option::is_some);
                any_price |= priced;
                let classed = [
                    m.cached_input,
                    m.cache_write_5m,
                    m.cache_write_1h,
                    m.reasoning,
                ]
                .iter()
                .any(Option::is_some);
                if classed && (m.input.is_none() || m.output.is_none()) {
                    return Err(bad(format!(
                        "model {:?} has token class prices without input and output prices",
                        m.id
                    )));
                }
                match (m.input, m.output) {
                    _ if priced && m.price().is_none() => {
                        return Err(bad(format!("model {:?} has a negative price", m.id)));
                    }
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(bad(format!(
                            "model {:?} needs both input and output prices, or neither",
                            m.id
                        )));
                    }
                    _ => {}
                }
                if m.context == Some(0) || m.max_output == Some(0) {
                    return Err(bad(format!("model {:?} has context or max_output 0", m.id)));
                }
                if let (Some(context), Some(max_output)) = (m.context, m.max_output)
                    && max_output > context
                {
                    return Err(bad(format!(
                        "model {:?} has max_output above its context",
                        m.id
                    )));
                }
            }
            freshness::check_price_source(p, any_price).map_err(bad)?;
        }
        Ok(())
    }
}

/// The catalog shipped with aigw, parsed and validated once.
pub fn catalog() -> Result<&'static Catalog, CatalogError> {
    static CATALOG: OnceLock<Result<Catalog, CatalogError>> = OnceLock::new();
    CATALOG
        .get_or_init(|| Catalog::parse(CATALOG_TOML))
        .as_ref()
        .map_err(Clone::clone)
}

/// What the catalog says of a model's token limits, looked up by the
/// preset a provider was made from (nothing for custom providers, or for
/// models the catalog does not list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogLimits {
    pub context: Option<u64>,
    pub max_output: Option<u64>,
}

/// The catalog's limits of `model` as served by a provider made from `preset`.
pub fn model_limits(preset: Option<&str>, model: &str) -> CatalogLimits {
    let found = preset
        .and_then(|id| catalog().ok()?.get(id))
        .and_then(|p| p.models.iter().find(|m| m.id == model));
    found.map_or_else(CatalogLimits::default, |m| CatalogLimits {
        context: m.context,
        max_output: m.max_output,
    })
}

/// The catalog's price of `model` as served by a provider made from
/// `preset` (`None` for custom providers, unlisted or unpriced models).
pub fn model_price(preset: Option<&str>, model: &str) -> Option<Price> {
    preset
        .and_then(|id| catalog().ok()?.get(id))
        .and_then(|p| p.models.iter().find(|m| m.id == model))
        .and_then(PresetModel::price)
}

impl Preset {
    /// The provider kind this preset is called with, if it can be called.
    pub fn kind(&self) -> Option<ProviderKind> {
        match self.wire.as_str() {
            "openai" => Some(ProviderKind::OpenaiCompatible),
            "anthropic" => Some(ProviderKind::Anthropic),
            "gemini" => Some(ProviderKind::Gemini),
            "azure" => Some(ProviderKind::Azure),
            "bedrock" => Some(ProviderKind::Bedrock),
            "cohere" => Some(ProviderKind::Cohere),
            "stability" => Some(ProviderKind::Stability),
            "elevenlabs" => Some(ProviderKind::Elevenlabs),
            "assemblyai" => Some(ProviderKind::Assemblyai),
            "replicate" => Some(ProviderKind::Replicate),
            "runway" => Some(ProviderKind::Runway),
            _ => None,
        }
    }

    /// Fields besides `api_key` this preset needs, in the catalog's order.
    pub fn required_fields(&self) -> &[String] {
        &self.required
    }
}

/// What an admin gives to configure a preset: only `api_key` (and the
/// preset's required fields) are needed; the rest overrides the catalog.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetInput {
    pub preset: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces the host root (scheme, host, port) of the preset's URL; a URL
    /// with a path replaces the whole base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// A regional variant of the base URL (`cn`, `intl`, ...).
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Price overrides: model id to USD per 1M tokens.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceInput>,
    /// Azure: one deployment (with `model`, the model it serves), or
    /// several as `deployments`.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Azure: the model `deployment` serves (its price and limits are the
    /// catalog's for that model); without it the deployment is served under
    /// its own name, unpriced.
    #[serde(default)]
    pub model: Option<String>,
    /// Azure: each deployment and the model it serves (`null`: not said).
    #[serde(default)]
    pub deployments: Option<Deployments>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<String>,
    /// The session token of temporary AWS credentials (with both AWS keys).
    #[serde(default)]
    pub aws_session_token: Option<String>,
}

/// A model's prices as admins write them (see [`PriceUsd`]).
pub type PriceInput = PriceUsd;

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl PresetInput {
    fn field(&self, name: &str) -> Option<&str> {
        match name {
            "base_url" => given(&self.base_url),
            "deployment" => given(&self.deployment),
            "api_version" => given(&self.api_version),
            "region" => given(&self.region),
            "account_id" => given(&self.account_id),
            "aws_access_key_id" => given(&self.aws_access_key_id),
            "aws_secret_access_key" => given(&self.aws_secret_access_key),
            "aws_session_token" => given(&self.aws_session_token),
            _ => None,
        }
    }
}

/// Splits `scheme://host[:port]` from the path of an http(s) URL.
fn split_root(url: &str) -> Option<(&str, &str)> {
    let rest_at = url.find("://")? + 3;
    let path_at = url[rest_at..].find('/').map_or(url.len(), |i| rest_at + i);
    Some((&url[..path_at], &url[path_at..]))
}

/// Checks a plain setting (region, AWS access key id, ...): letters, digits,
/// `-`, `_`, `.` and `:`, at most 256 bytes.
pub fn valid_setting(field: &str, value: &str) -> Result<(), PresetError> {
    let ok = value.len() <= 256
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(PresetError::Invalid {
            field: field.into(),
            problem: "use letters, digits, '-', '_', '.' or ':' only".into(),
        })
    }
}

/// Checks an AWS session token: it goes into a header, so printable ASCII.
pub fn valid_session_token(token: &str) -> Result<(), PresetError> {
    if !token.is_empty() && token.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(PresetError::Invalid {
            field: "aws_session_token".into(),
            problem: "must be printable ASCII without spaces".into(),
        })
    }
}

/// Builds provider `id` as a preset describes it. Every secret is sealed
/// here, bound to that provider.
pub fn build_spec(
    input: &PresetInput,
    sealer: &Sealer,
    provider_id: Uuid,
) -> Result<ProviderSpec, PresetError> {
    let catalog = catalog().map_err(|e| PresetError::Invalid {
        field: "preset".into(),
        problem: e.to_string(),
    })?;
    let id = input.preset.trim();
    let preset = catalog
        .get(id)
        .ok_or_else(|| PresetError::Unknown(id.to_string()))?;
    let (kind, template) = match (preset.configurable, preset.kind(), &preset.base_url) {
        (true, Some(kind), Some(url)) => (kind, url.clone()),
        _ => {
            return Err(PresetError::NotConfigurable {
                id: preset.id.clone(),
                reason: preset
                    .reason
                    .clone()
                    .unwrap_or_else(|| "not supported".into()),
            });
        }
    };
    let missing = |field: &str| PresetError::Missing {
        preset: preset.id.clone(),
        field: field.into(),
    };
    for field in &preset.required {
        if input.field(field).is_none() {
            return Err(missing(field));
        }
    }
    // Fields the preset does not know are refused rather than silently ignored.
    for field in FIELDS {
        let known = *field == "base_url"
            || preset.required.iter().any(|f| f == field)
            || preset.optional.iter().any(|f| f == field);
        if !known && input.field(field).is_some() {
            return Err(PresetError::Unexpected {
                preset: preset.id.clone(),
                field: (*field).into(),
            });
        }
    }

    let mut settings = BTreeMap::new();
    for (k, v) in &preset.defaults {
        settings.insert(k.clone(), v.clone());
    }
    for field in ["api_version", "region", "account_id"] {
        if let Some(v) = input.field(field) {
            valid_setting(field, v)?;
            settings.insert(field.to_string(), v.to_string());
        }
    }

    // The secret: an API key, or for Bedrock SigV4 the secret access key
    // (the access key id is not secret and is kept as a setting) and, for
    // temporary credentials, the session token (sealed too).
    let api_key = given(&input.api_key);
    let session_token = input.field("aws_session_token");
    let secret = if kind == ProviderKind::Bedrock {
        match (
            api_key,
            input.field("aws_access_key_id"),
            input.field("aws_secret_access_key"),
        ) {
            (_, Some(id), Some(secret)) => {
                valid_setting("aws_access_key_id", id)?;
                if let Some(token) = session_token {
                    valid_session_token(token)?;
                }
                settings.insert("auth".into(), "sigv4".into());
                settings.insert("aws_access_key_id".into(), id.to_string());
                Some(secret)
            }
            (Some(_), None, None) if session_token.is_some() => {
                return Err(missing("aws_access_key_id"));
            }
            (Some(key), None, None) => {
                settings.insert("auth".into(), "bearer".into());
                Some(key)
            }
            (_, Some(_), None) => return Err(missing("aws_secret_access_key")),
            (_, None, Some(_)) => return Err(missing("aws_access_key_id")),
            (None, None, None) => return Err(missing("api_key")),
        }
    } else {
        Some(api_key.ok_or_else(|| missing("api_key"))?)
    };
    let seal = |field, s: &str| {
        sealer
            .seal(s, &Binding::new(provider_id, field))
            .map_err(|e| PresetError::Seal(e.to_string()))
    };
    let sealed_credential = secret
        .map(|s| seal(CredentialField::ApiKey, s))
        .transpose()?;
    let sealed_session_token = session_token
        .map(|s| seal(CredentialField::SessionToken, s))
        .transpose()?;

    // Base URL: the variant or default, placeholders filled, then the host
    // root (or everything) replaced by an override.
    let mut base = match given(&input.variant) {
        None => template,
        Some(v) => preset
            .base_urls
            .get(v)
            .cloned()
            .ok_or_else(|| PresetError::UnknownVariant {
                preset: preset.id.clone(),
                variant: v.to_string(),
                known: preset
                    .base_urls
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    for field in ["account_id", "region"] {
        if let Some(v) = settings.get(field) {
            base = base.replace(&format!("{{{field}}}"), v);
        }
    }
    if let Some(over) = input.field("base_url") {
        let over = over.trim_end_matches('/');
        let (root, path) = split_root(over).ok_or_else(|| PresetError::Invalid {
            field: "base_url".into(),
            problem: "must be an absolute http:// or https:// URL".into(),
        })?;
        if !(root.starts_with("http://") || root.starts_with("https://")) {
            return Err(PresetError::Invalid {
                field: "base_url".into(),
                problem: "must be an absolute http:// or https:// URL".into(),
            });
        }
        base = if path.is_empty() {
            let preset_path = split_root(&base).map(|(_, p)| p.to_string());
            format!("{root}{}", preset_path.unwrap_or_default())
        } else {
            over.to_string()
        };
    }
    if base.contains('{') {
        return Err(missing("base_url"));
    }
    let base_url = base.trim_end_matches('/').to_string();

    let deployments = deployments::from_input(input, preset, kind)?;
    let models: Vec<String> = match &input.models {
        _ if kind == ProviderKind::Azure => deployments.keys().cloned().collect(),
        Some(list) => list
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect(),
        None => preset.models.iter().map(|m| m.id.clone()).collect(),
    };
    if models.is_empty() {
        return Err(PresetError::Invalid {
            field: "models".into(),
            problem: "must list at least one model id".into(),
        });
    }
    let mut given_prices = BTreeMap::new();
    for (model, p) in &input.prices {
        let bad = || PresetError::Invalid {
            field: "prices".into(),
            problem: format!("the prices of {model:?} must be non-negative USD amounts"),
        };
        given_prices.insert(model.clone(), p.to_price().map_err(|_| bad())?);
    }
    let prices = if kind == ProviderKind::Azure {
        deployment_prices(&deployments, &given_prices, None, |m| {
            model_price(Some(&preset.id), m)
        })
    } else {
        let mut prices: BTreeMap<String, Price> = preset
            .models
            .iter()
            // Validated when the catalog was loaded.
            .filter_map(|m| Some((m.id.clone(), m.price()?)))
            .collect();
        prices.extend(given_prices);
        prices.retain(|m, _| models.contains(m));
        prices
    };

    let name = given(&input.name).unwrap_or(&preset.id).to_string();
    Ok(ProviderSpec {
        name,
        kind,
        base_url,
        models,
        sealed_credential,
        sealed_session_token,
        preset: Some(preset.id.clone()),
        settings,
        prices,
        deployments,
        ..ProviderSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};

    const ID: Uuid = Uuid::from_u128(42);

    fn sealer() -> Sealer {
        Sealer::new(Some(&SecretString::from("k".repeat(32))))
    }

    fn input(preset: &str) -> PresetInput {
        PresetInput {
            preset: preset.into(),
            api_key: Some("sk-test".into()),
            ..Default::default()
        }
    }

    #[test]
    fn shipped_catalog_is_valid_and_complete() {
        let c = catalog().unwrap();
        assert_eq!(c.preset.len(), 29);
        for cat in CATEGORIES {
            assert!(c.preset.iter().any(|p| p.category == *cat), "{cat}");
        }
        let mj = c.get("midjourney").unwrap();
        assert!(!mj.configurable);
        assert_eq!(mj.wire, "none");
    }

    #[test]
    fn catalog_prices_carry_their_classes_source_and_date() {
        let c = catalog().unwrap();
        let sonnet = model_price(Some("anthropic"), "claude-sonnet-5").unwrap();
        assert_eq!(sonnet.cached_input_micros_per_mtok, Some(300_000));
        assert_eq!(sonnet.cache_write_5m_micros_per_mtok, Some(3_750_000));
        assert_eq!(sonnet.cache_write_1h_micros_per_mtok, Some(6_000_000));
        let flash = model_price(Some("deepseek"), "deepseek-v4-flash").unwrap();
        assert_eq!(flash.cached_input_micros_per_mtok, Some(2_800));
        let mini = model_price(Some("openai"), "gpt-5.4-mini").unwrap();
        assert_eq!(mini.cached_input_micros_per_mtok, Some(75_000));
        let openai = c.get("openai").unwrap();
        assert!(
            openai
                .price_source
                .as_deref()
                .unwrap()
                .starts_with("https://")
        );
        // A preset with prices must say where they come from and when.
        let text = CATALOG_TOML.replacen("prices_as_of = \"2026-08-02\"\n", "", 1);
        assert!(matches!(
            Catalog::parse(&text),
            Err(CatalogError::Invalid { id, .. }) if id == "openai"
        ));
        let text = CATALOG_TOML.replacen(
            "price_source = \"https://openai.com/api/pricing/\"",
            "price_source = \"http://openai.com/api/pricing/\"",
            1,
        );
        assert!(Catalog::parse(&text).is_err());
        // Class prices need the token prices they fall back to.
        let text = CATALOG_TOML.replacen(
            "input = 0.14, output = 0.28, cached_input",
            "cached_input",
            1,
        );
        assert!(Catalog::parse(&text).is_err());
    }

    #[test]
    fn validation_names_the_entry() {
        let text = CATALOG_TOML.replacen("category = \"china\"", "category = \"moon\"", 1);
        match Catalog::parse(&text) {
            Err(CatalogError::Invalid { id, .. }) => assert_eq!(id, "baidu"),
            other => panic!("{other:?}"),
        }
        let text = CATALOG_TOML.replacen("input = 0.14", "input = -0.14", 1);
        assert!(matches!(
            Catalog::parse(&text),
            Err(CatalogError::Invalid { id, .. }) if id == "deepseek"
        ));
        let text = CATALOG_TOML.replacen("id = \"gemini\"", "id = \"openai\"", 1);
        assert!(matches!(
            Catalog::parse(&text),
            Err(CatalogError::Invalid { id, .. }) if id == "openai"
        ));
        let text = CATALOG_TOML.replacen("docs =", "doc =", 1);
        assert!(matches!(Catalog::parse(&text), Err(CatalogError::Parse(_))));
    }

    #[test]
    fn api_key_is_enough_for_deepseek() {
        let s = sealer();
        let spec = build_spec(&input("deepseek"), &s, ID).unwrap();
        assert_eq!(spec.name, "deepseek");
        assert_eq!(spec.kind, ProviderKind::OpenaiCompatible);
        assert_eq!(spec.base_url, "https://api.deepseek.com");
        assert!(spec.models.contains(&"deepseek-v4-flash".to_string()));
        assert_eq!(
            spec.prices["deepseek-v4-flash"].input_micros_per_mtok,
            140_000
        );
        let sealed = spec.sealed_credential.unwrap();
        assert!(!sealed.contains("sk-test"));
        assert_eq!(
            s.open(&sealed, &Binding::new(ID, CredentialField::ApiKey))
                .unwrap()
                .expose_secret(),
            "sk-test"
        );
    }

    #[test]
    fn base_url_override_replaces_the_host_root() {
        let mut i = input("cloudflare");
        i.account_id = Some("acc1".into());
        i.base_url = Some("http://127.0.0.1:9999/".into());
        let spec = build_spec(&i, &sealer(), ID).unwrap();
        assert_eq!(
            spec.base_url,
            "http://127.0.0.1:9999/client/v4/accounts/acc1/ai/v1"
        );
        let mut i = input("openai");
        i.base_url = Some("https://proxy.example/openai/v1".into());
        let spec = build_spec(&i, &sealer(), ID).unwrap();
        assert_eq!(spec.base_url, "https://proxy.example/openai/v1");
        let mut i = input("qwen");
        i.variant = Some("intl".into());
        let spec = build_spec(&i, &sealer(), ID).unwrap();
        assert!(spec.base_url.starts_with("https://dashscope-intl."));
    }

    #[test]
    fn bedrock_session_token_is_sealed_and_needs_the_aws_keys() {
        let s = sealer();
        let mut i = input("bedrock");
        i.region = Some("eu-central-1".into());
        i.aws_session_token = Some("IQoJb3JpZ2luX2VjEXAMPLE/token+=".into());
        assert!(matches!(
            build_spec(&i, &s, ID),
            Err(PresetError::Missing { field, .. }) if field == "aws_access_key_id"
        ));
        i.api_key = None;
        i.aws_access_key_id = Some("ASIAEXAMPLE".into());
        i.aws_secret_access_key = Some("secret".into());
        let spec = build_spec(&i, &s, ID).unwrap();
        assert_eq!(spec.settings["auth"], "sigv4");
        let sealed = spec.sealed_session_token.clone().unwrap();
        assert_eq!(
            s.open(&sealed, &Binding::new(ID, CredentialField::SessionToken))
                .unwrap()
                .expose_secret(),
            "IQoJb3JpZ2luX2VjEXAMPLE/token+="
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("IQoJb3JpZ2lu"), "{json}");
        assert!(!spec.settings.values().any(|v| v.contains("IQoJ")));
        i.aws_session_token = Some("two words".into());
        assert!(matches!(
            build_spec(&i, &s, ID),
            Err(PresetError::Invalid { field, .. }) if field == "aws_session_token"
        ));
        let mut i = input("deepseek");
        i.aws_session_token = Some("t".into());
        assert!(matches!(
            build_spec(&i, &s, ID),
            Err(PresetError::Unexpected { field, .. }) if field == "aws_session_token"
        ));
    }

    #[test]
    fn required_fields_are_enforced() {
        let s = sealer();
        assert_eq!(
            build_spec(&input("cloudflare"), &s, ID),
            Err(PresetError::Missing {
                preset: "cloudflare".into(),
                field: "account_id".into()
            })
        );
        assert!(matches!(
            build_spec(&input("azure"), &s, ID),
            Err(PresetError::Missing { field, .. }) if field == "base_url"
        ));
        let mut i = input("bedrock");
        i.region = Some("us-east-1".into());
        i.api_key = None;
        i.aws_access_key_id = Some("AKID".into());
        assert!(matches!(
            build_spec(&i, &s, ID),
            Err(PresetError::Missing { field, .. }) if field == "aws_secret_access_key"
        ));
        i.aws_secret_access_key = Some("secret".into());
        let spec = build_spec(&i, &s, ID).unwrap();
        assert_eq!(spec.settings["auth"], "sigv4");
        assert_eq!(
            spec.base_url,
            "https://bedrock-runtime.us-east-1.amazonaws.com"
        );
        assert!(!serde_json::to_string(&spec).unwrap().contains("secret"));
        let mut i = input("deepseek");
        i.region = Some("x".into());
        assert!(matches!(
            build_spec(&i, &s, ID),
            Err(PresetError::Unexpected { .. })
        ));
        let mut i = input("deepseek");
        i.api_key = None;
        assert!(matches!(
            build_spec(&i, &s, ID),
            Err(PresetError::Missing { .. })
        ));
    }

    #[test]
    fn overrides_replace_models_prices_and_name() {
        let input: PresetInput = serde_json::from_value(serde_json::json!({
            "preset": "groq",
            "api_key": "gsk_x",
            "name": "groq-eu",
            "models": ["llama-3.1-8b-instant", "my-model"],
            "prices": {"my-model": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.25}},
        }))
        .unwrap();
        let spec = build_spec(&input, &sealer(), ID).unwrap();
        assert_eq!(spec.name, "groq-eu");
        assert_eq!(spec.models, ["llama-3.1-8b-instant", "my-model"]);
        assert_eq!(spec.prices["my-model"].output_micros_per_mtok, 1_250_000);
        assert_eq!(
            spec.prices["llama-3.1-8b-instant"].input_micros_per_mtok,
            50_000
        );
        assert_eq!(spec.prices.len(), 2);
        let bad: Result<PresetInput, _> = serde_json::from_value(serde_json::json!({
            "preset": "groq", "api_key": "k", "colour": "red",
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn midjourney_and_unknown_are_refused() {
        let s = sealer();
        assert!(matches!(
            build_spec(&input("midjourney"), &s, ID),
            Err(PresetError::NotConfigurable { .. })
        ));
        assert!(matches!(
            build_spec(&input("nope"), &s, ID),
            Err(PresetError::Unknown(_))
        ));
    }
}
