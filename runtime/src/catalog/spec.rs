//! A provider built from a preset: what an admin gives (`PresetInput`:
//! the key, the preset's required fields, overrides) and how it becomes a
//! `ProviderSpec` ([`build_spec`]).
//!
//! Invariants: every secret is sealed here, bound to the provider and field
//! it belongs to, and never kept in the clear; every setting that reaches a
//! URL or a header is checked first ([`valid_setting`],
//! [`valid_session_token`]).

use std::collections::BTreeMap;

use aigw_events::deployments::{Deployments, deployment_prices};
use aigw_events::pricing::PriceUsd;
use aigw_events::provider::{Price, ProviderKind, ProviderSpec};
use serde::Deserialize;
use uuid::Uuid;

use super::{FIELDS, PresetError, catalog, deployments, model_price};
use crate::crypto::{Binding, CredentialField, Sealer};

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

pub(super) fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl PresetInput {
    pub(super) fn field(&self, name: &str) -> Option<&str> {
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
