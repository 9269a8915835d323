//! The preset catalog: one entry per known provider, shipped as data
//! (`runtime/catalog/presets.toml`), validated on first use, and turned into a
//! `ProviderSpec` from little more than an API key (`spec.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use aigw_events::pricing::PriceUsd;
use aigw_events::provider::{Price, ProviderKind};
use serde::{Deserialize, Serialize};

mod deployments;
mod freshness;
mod spec;

pub use freshness::{StalePrices, stale_prices};
pub use spec::{PresetInput, PriceInput, build_spec, valid_session_token, valid_setting};

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
    "rerank",
    "moderation",
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
    /// USD per 1,000 search units (rerank models billed per search).
    #[serde(default)]
    pub per_ksearch: Option<f64>,
}

impl PresetModel {
    /// The model's price, if the catalog knows one: tokens (input and
    /// output together) and/or a media rate. `None` when a given amount is
    /// negative or no price is given.
    pub fn price(&self) -> Option<Price> {
        let media = [self.image, self.per_mchar, self.per_hour, self.per_ksearch];
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
            per_ksearch_usd: self.per_ksearch,
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
                let priced = [
                    m.input,
                    m.output,
                    m.image,
                    m.per_mchar,
                    m.per_hour,
                    m.per_ksearch,
                ]
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

#[cfg(test)]
mod tests;
