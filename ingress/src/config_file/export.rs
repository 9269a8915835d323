//! The running state written as an `aigw.toml`: every provider, alias and
//! live key, so that applying the export changes nothing.
//!
//! Invariants:
//! - no secret is written: each credential becomes an environment
//!   reference named for its provider (`${DEEPSEEK_API_KEY}`), and keys are
//!   written without theirs;
//! - a preset provider is written as its preset plus what differs from
//!   what the preset alone gives (base URL, models, prices, settings), found
//!   by building the preset the way `apply` will.

use std::collections::BTreeMap;

use aigw_events::key::BudgetPeriod;
use aigw_events::provider::{Price, ProviderKind, ProviderSpec};
use aigw_runtime::catalog::{self, PresetInput};
use aigw_runtime::crypto::Sealer;
use serde::Serialize;
use uuid::Uuid;

use super::ConfigError;
use super::desired::live_keys;
use crate::AppState;

#[derive(Debug, Default, Serialize)]
struct File {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    providers: BTreeMap<String, Provider>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    aliases: BTreeMap<String, Alias>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    keys: BTreeMap<String, Key>,
}

#[derive(Debug, Default, Serialize)]
struct Provider {
    #[serde(skip_serializing_if = "Option::is_none")]
    preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    api_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws_access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws_secret_access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws_session_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    /// Azure: deployment to model (`""`: not said).
    #[serde(skip_serializing_if = "Option::is_none")]
    deployments: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    prices: BTreeMap<String, PriceOut>,
}

#[derive(Debug, Serialize)]
struct PriceOut {
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_input_usd_per_mtok: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_write_5m_usd_per_mtok: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_write_1h_usd_per_mtok: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_usd_per_mtok: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_image_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_mchar_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_hour_usd: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Alias {
    strategy: &'static str,
    targets: Vec<aigw_events::AliasTarget>,
}

#[derive(Debug, Default, Serialize)]
struct Key {
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpm: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpm: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_period: Option<BudgetPeriod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_models: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_providers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

fn price_out(p: &Price) -> PriceOut {
    PriceOut {
        input_usd_per_mtok: usd(p.input_micros_per_mtok),
        output_usd_per_mtok: usd(p.output_micros_per_mtok),
        cached_input_usd_per_mtok: p.cached_input_micros_per_mtok.map(usd),
        cache_write_5m_usd_per_mtok: p.cache_write_5m_micros_per_mtok.map(usd),
        cache_write_1h_usd_per_mtok: p.cache_write_1h_micros_per_mtok.map(usd),
        reasoning_usd_per_mtok: p.reasoning_micros_per_mtok.map(usd),
        per_image_usd: p.image_micros.map(usd),
        per_mchar_usd: p.character_micros_per_m.map(usd),
        per_hour_usd: p.audio_micros_per_hour.map(usd),
    }
}

/// The environment variable a provider's credential is exported as:
/// `DEEPSEEK_API_KEY` for `deepseek`, `MY_VLLM_API_KEY` for `my-vllm`.
pub fn env_name(provider: &str, what: &str) -> String {
    let stem: String = provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let stem = if stem.starts_with(|c: char| c.is_ascii_digit()) {
        format!("P_{stem}")
    } else {
        stem
    };
    format!("{stem}_{what}")
}

fn reference(var: &str) -> String {
    format!("${{{var}}}")
}

/// The running state as a file; also the environment variables it refers to.
pub fn export(state: &AppState) -> Result<(String, Vec<String>), ConfigError> {
    let mut file = File::default();
    let mut vars = Vec::new();
    for p in state.registry.providers() {
        let spec = p.spec.clone().with_deployment_map();
        let out = provider(&spec, &mut vars);
        file.providers.insert(spec.name.clone(), out);
    }
    for a in state.registry.aliases() {
        file.aliases.insert(
            a.name.clone(),
            Alias {
                strategy: a.strategy.as_str(),
                targets: a.targets.clone(),
            },
        );
    }
    for (name, keys) in live_keys(state) {
        let [k] = keys.as_slice() else {
            return Err(ConfigError::Export(format!(
                "{} running keys are named {name:?} ({}): a file names each key once; rename or revoke all but one through the admin API first",
                keys.len(),
                keys.iter()
                    .map(|k| k.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let s = &k.state.settings;
        let l = &s.limits;
        let budgets = l.budget_micros.is_some() || l.budget_tokens.is_some();
        file.keys.insert(
            name,
            Key {
                owner: s.owner.clone(),
                rpm: l.rpm,
                tpm: l.tpm,
                budget_usd: l.budget_micros.map(usd),
                budget_tokens: l.budget_tokens,
                budget_period: (budgets || l.budget_period != BudgetPeriod::Total)
                    .then_some(l.budget_period),
                max_concurrency: l.max_concurrency,
                allowed_models: s.scopes.allowed_models.clone(),
                allowed_providers: s.scopes.allowed_providers.clone(),
                expires_at: s.expires_at.map(|t| t.to_rfc3339()),
            },
        );
    }
    let body = toml::to_string(&file).map_err(|e| ConfigError::Export(e.to_string()))?;
    Ok((body, vars))
}

/// One provider: a preset and what differs from it, or a custom endpoint.
fn provider(spec: &ProviderSpec, vars: &mut Vec<String>) -> Provider {
    let mut secret = |what: &str| {
        let var = env_name(&spec.name, what);
        vars.push(var.clone());
        reference(&var)
    };
    let sigv4 = spec.kind == ProviderKind::Bedrock && spec.setting("auth") == Some("sigv4");
    let mut out = Provider {
        api_key: (spec.sealed_credential.is_some() && !sigv4).then(|| secret("API_KEY")),
        aws_secret_access_key: (spec.sealed_credential.is_some() && sigv4)
            .then(|| secret("AWS_SECRET_ACCESS_KEY")),
        aws_session_token: spec
            .sealed_session_token
            .is_some()
            .then(|| secret("AWS_SESSION_TOKEN")),
        api_keys: (0..spec.extra_credentials.len())
            .map(|n| secret(&format!("API_KEY_{}", n + 2)))
            .collect(),
        max_concurrency: spec.max_concurrency,
        enabled: spec.disabled.then_some(false),
        ..Provider::default()
    };
    let Some(preset) = spec.preset.clone() else {
        out.base_url = Some(spec.base_url.clone());
        out.models = Some(spec.models.clone());
        out.prices = spec
            .prices
            .iter()
            .map(|(m, p)| (m.clone(), price_out(p)))
            .collect();
        return out;
    };
    let defaults = catalog::catalog()
        .ok()
        .and_then(|c| c.get(&preset))
        .map(|p| p.defaults.clone())
        .unwrap_or_default();
    let setting = |field: &str| {
        spec.settings
            .get(field)
            .filter(|v| defaults.get(field) != Some(*v))
            .cloned()
    };
    out.preset = Some(preset.clone());
    out.api_version = setting("api_version");
    out.region = setting("region");
    out.account_id = setting("account_id");
    out.aws_access_key_id = spec.settings.get("aws_access_key_id").cloned();
    if spec.by_deployment() {
        out.deployments = Some(
            spec.deployments
                .iter()
                .map(|(d, m)| (d.clone(), m.clone().unwrap_or_default()))
                .collect(),
        );
    }
    // What the preset alone gives, built as `apply` builds it (placeholder
    // secrets: only the shape matters here).
    let mut input = PresetInput {
        preset,
        api_key: (!sigv4).then(|| "placeholder".to_string()),
        name: Some(spec.name.clone()),
        deployments: out.deployments.as_ref().map(|d| {
            d.iter()
                .map(|(k, v)| (k.clone(), Some(v.clone()).filter(|v| !v.is_empty())))
                .collect()
        }),
        api_version: out.api_version.clone(),
        region: out.region.clone(),
        account_id: out.account_id.clone(),
        aws_access_key_id: out.aws_access_key_id.clone(),
        aws_secret_access_key: sigv4.then(|| "placeholder".to_string()),
        ..PresetInput::default()
    };
    let probe_sealer = Sealer::new(Some(&secrecy::SecretString::from(
        "export-probe-key-not-a-secret-0123456789",
    )));
    let build = |input: &PresetInput| catalog::build_spec(input, &probe_sealer, Uuid::nil()).ok();
    if build(&input).is_some_and(|b| b.base_url != spec.base_url) {
        out.base_url = Some(spec.base_url.clone());
        input.base_url = out.base_url.clone();
    }
    if !spec.by_deployment() && build(&input).is_some_and(|b| b.models != spec.models) {
        out.models = Some(spec.models.clone());
        input.models = out.models.clone();
    }
    if let Some(built) = build(&input) {
        out.prices = spec
            .prices
            .iter()
            .filter(|(m, p)| built.prices.get(*m) != Some(*p))
            .map(|(m, p)| (m.clone(), price_out(p)))
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_follow_the_provider() {
        assert_eq!(env_name("deepseek", "API_KEY"), "DEEPSEEK_API_KEY");
        assert_eq!(env_name("my-vllm.eu", "API_KEY_2"), "MY_VLLM_EU_API_KEY_2");
        assert_eq!(env_name("01ai", "API_KEY"), "P_01AI_API_KEY");
    }
}
