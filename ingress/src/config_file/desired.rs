//! From what a file declares to the state it asks for: each provider's spec,
//! each alias, each key's settings, built and checked by the very functions
//! the admin API uses (`preset_spec`, `custom_spec`, `check_alias`,
//! `KeyInput::apply`), so the file and the API accept the same things.
//!
//! Invariants:
//! - every environment reference is resolved here, and every problem of
//!   every entry is collected, before anything runs: a file is taken
//!   whole or not at all;
//! - an entry matches the running provider, alias or key of the same name;
//! - a credential whose stored ciphertext opens to the value the
//!   environment gives keeps its ciphertext, so an unchanged secret is no
//!   change (sealing again would give new bytes every time).

use std::collections::BTreeMap;
use std::sync::Arc;

use aigw_events::key::KeySettings;
use aigw_events::provider::ProviderSpec;
use aigw_events::{AliasSpec, KeyStatus};
use aigw_runtime::catalog::{self, PresetInput};
use aigw_runtime::crypto::{Binding, CredentialField};
use aigw_runtime::{KeyEntry, ProviderEntry};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::schema::{Declared, EnvRef, KeyDecl, Problem, ProviderDecl};
use crate::AppState;
use crate::admin::{NewProvider, check_concurrency, custom_spec, seal_all};
use crate::error::ApiError;
use crate::keys::KeyInput;
use crate::presets::preset_spec;
use crate::routing::check_alias;

/// Reads an environment variable (a seam for tests).
pub type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// A provider as the file wants it.
#[derive(Debug, Clone)]
pub struct DesiredProvider {
    pub id: Uuid,
    pub current: Option<Arc<ProviderEntry>>,
    pub spec: ProviderSpec,
}

/// A key as the file wants it.
#[derive(Debug, Clone)]
pub struct DesiredKey {
    pub current: Option<Arc<KeyEntry>>,
    pub settings: KeySettings,
}

/// The whole state a file asks for.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub providers: Vec<DesiredProvider>,
    pub aliases: Vec<AliasSpec>,
    pub keys: Vec<DesiredKey>,
}

/// The running keys that are not revoked, by name.
pub fn live_keys(state: &AppState) -> BTreeMap<String, Vec<Arc<KeyEntry>>> {
    let mut by_name: BTreeMap<String, Vec<Arc<KeyEntry>>> = BTreeMap::new();
    for key in state.registry.keys() {
        if key.status() != KeyStatus::Revoked {
            by_name
                .entry(key.state.settings.name.clone())
                .or_default()
                .push(key);
        }
    }
    by_name
}

/// Builds and checks everything `declared` asks for against the running
/// state; `prune`: what the file does not declare is to go.
pub fn build(
    state: &AppState,
    declared: &Declared,
    env: Env<'_>,
    prune: bool,
) -> Result<Desired, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut desired = Desired::default();
    for decl in &declared.providers {
        if let Some(p) = provider(state, decl, env, &mut problems) {
            desired.providers.push(p);
        }
    }
    let declared_provider = |p: &str| declared.providers.iter().any(|d| d.name == p);
    for decl in &declared.aliases {
        let spec = AliasSpec {
            name: decl.name.clone(),
            strategy: decl.strategy.unwrap_or_default(),
            targets: decl.targets.clone(),
        };
        // A target is a provider the file declares, or a running one the
        // file keeps (by id or name).
        let exists = |p: &str| {
            declared_provider(p)
                || state
                    .registry
                    .provider(p)
                    .is_some_and(|running| !prune || declared_provider(&running.spec.name))
        };
        match check_alias(&spec, exists) {
            Ok(()) => desired.aliases.push(spec),
            Err(e) => problems.push(entry_problem(
                "aliases",
                &decl.name,
                decl.line,
                &decl.lines,
                &e,
            )),
        }
    }
    let live = live_keys(state);
    for decl in &declared.keys {
        match key(decl, &live) {
            Ok(k) => desired.keys.push(k),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(desired)
    } else {
        problems.sort_by_key(|p| p.line);
        Err(problems)
    }
}

/// A problem an admin API check found in an entry, at the line of the
/// field it names when it names one.
fn entry_problem(
    section: &str,
    name: &str,
    line: usize,
    lines: &BTreeMap<String, usize>,
    error: &ApiError,
) -> Problem {
    let message = error.to_string();
    let param = match error {
        ApiError::BadRequest { param, .. } => *param,
        _ => None,
    };
    let field = param
        .filter(|p| lines.contains_key(*p))
        .map(str::to_string)
        .or_else(|| {
            lines
                .keys()
                .find(|f| message.contains(&format!("'{f}'")))
                .cloned()
        });
    let key = super::schema::toml_key(name);
    match field {
        Some(f) => Problem {
            line: lines[&f],
            path: format!("{section}.{key}.{f}"),
            message,
        },
        None => Problem {
            line,
            path: format!("{section}.{key}"),
            message,
        },
    }
}

/// The value of an environment reference, or a problem at its line.
fn resolve(r: &EnvRef, env: Env<'_>, problems: &mut Vec<Problem>) -> Option<String> {
    match env(&r.var).filter(|v| !v.trim().is_empty()) {
        Some(v) => Some(v),
        None => {
            problems.push(Problem {
                line: r.line,
                path: r.path.clone(),
                message: format!("the environment variable {} is not set (or empty)", r.var),
            });
            None
        }
    }
}

fn provider(
    state: &AppState,
    decl: &ProviderDecl,
    env: Env<'_>,
    problems: &mut Vec<Problem>,
) -> Option<DesiredProvider> {
    let before = problems.len();
    let mut one = |r: &Option<EnvRef>| r.as_ref().and_then(|r| resolve(r, env, problems));
    let api_key = one(&decl.api_key);
    let aws_secret = one(&decl.aws_secret_access_key);
    let session_token = one(&decl.aws_session_token);
    let extra: Vec<String> = decl
        .api_keys
        .iter()
        .filter_map(|r| resolve(r, env, problems))
        .collect();
    if problems.len() > before {
        return None;
    }
    let current = state
        .registry
        .providers()
        .into_iter()
        .find(|p| p.spec.name == decl.name);
    let id = current.as_ref().map_or_else(Uuid::now_v7, |c| c.id);
    let fail = |e: ApiError| entry_problem("providers", &decl.name, decl.line, &decl.lines, &e);
    let built = match &decl.preset {
        Some(preset) => preset_provider(
            state,
            id,
            decl,
            preset,
            api_key.clone(),
            &aws_secret,
            &session_token,
            &extra,
        ),
        None => custom_provider(state, id, decl, api_key.clone(), &extra),
    };
    let mut spec = match built {
        Ok(spec) => spec,
        Err(e) => {
            problems.push(fail(e));
            return None;
        }
    };
    if let Some(current) = &current {
        keep_unchanged_secrets(
            state,
            current,
            &mut spec,
            aws_secret.or(api_key),
            &extra,
            session_token,
        );
    }
    Some(DesiredProvider { id, current, spec })
}

#[allow(clippy::too_many_arguments)]
fn preset_provider(
    state: &AppState,
    id: Uuid,
    decl: &ProviderDecl,
    preset: &str,
    api_key: Option<String>,
    aws_secret: &Option<String>,
    session_token: &Option<String>,
    extra: &[String],
) -> Result<ProviderSpec, ApiError> {
    let input = PresetInput {
        preset: preset.to_string(),
        api_key,
        name: Some(decl.name.clone()),
        base_url: decl.base_url.clone(),
        variant: decl.variant.clone(),
        models: decl.models.clone(),
        prices: decl
            .prices
            .iter()
            .map(|(m, p)| (m.clone(), catalog_price(p)))
            .collect(),
        deployment: None,
        model: None,
        deployments: decl.deployments.as_ref().map(|d| {
            d.iter()
                .map(|(name, model)| {
                    (
                        name.clone(),
                        Some(model.clone()).filter(|m| !m.trim().is_empty()),
                    )
                })
                .collect()
        }),
        api_version: decl.api_version.clone(),
        region: decl.region.clone(),
        account_id: decl.account_id.clone(),
        aws_access_key_id: decl.aws_access_key_id.clone(),
        aws_secret_access_key: aws_secret.clone(),
        aws_session_token: session_token.clone(),
    };
    let mut spec = preset_spec(state, id, &input)?;
    spec.extra_credentials = seal_all(state, id, extra)?;
    spec.max_concurrency = check_concurrency(decl.max_concurrency)?;
    spec.disabled = !decl.enabled.unwrap_or(true);
    Ok(spec)
}

fn custom_provider(
    state: &AppState,
    id: Uuid,
    decl: &ProviderDecl,
    api_key: Option<String>,
    extra: &[String],
) -> Result<ProviderSpec, ApiError> {
    let preset_only = [
        ("variant", decl.variant.is_some()),
        ("deployments", decl.deployments.is_some()),
        ("api_version", decl.api_version.is_some()),
        ("region", decl.region.is_some()),
        ("account_id", decl.account_id.is_some()),
        ("aws_access_key_id", decl.aws_access_key_id.is_some()),
        (
            "aws_secret_access_key",
            decl.aws_secret_access_key.is_some(),
        ),
        ("aws_session_token", decl.aws_session_token.is_some()),
    ];
    if let Some((field, _)) = preset_only.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad_request(format!(
            "'{field}' applies only to a provider made from a 'preset'."
        )));
    }
    let Some(base_url) = &decl.base_url else {
        return Err(ApiError::bad_request(
            "A provider needs a 'preset' (GET /admin/api/presets lists them) or a 'base_url' and 'models'.",
        ));
    };
    let new = NewProvider {
        name: decl.name.clone(),
        base_url: base_url.clone(),
        api_key,
        api_keys: extra.to_vec(),
        models: decl.models.clone().unwrap_or_default(),
        prices: decl.prices.clone(),
        max_concurrency: decl.max_concurrency,
        enabled: decl.enabled,
    };
    custom_spec(state, id, &new)
}

fn catalog_price(p: &crate::admin::PriceInput) -> catalog::PriceInput {
    *p
}

/// Whether `sealed` (of provider `id`, field `field`) opens to `plain`.
fn opens_to(state: &AppState, id: Uuid, field: CredentialField, sealed: &str, plain: &str) -> bool {
    state
        .sealer
        .open(sealed, &Binding::new(id, field))
        .is_ok_and(|s| s.expose_secret() == plain)
}

/// Puts the running ciphertexts back where the secrets did not change.
fn keep_unchanged_secrets(
    state: &AppState,
    current: &ProviderEntry,
    spec: &mut ProviderSpec,
    main: Option<String>,
    extra: &[String],
    session_token: Option<String>,
) {
    let id = current.id;
    let now = &current.spec;
    if let (Some(sealed), Some(plain)) = (&now.sealed_credential, &main)
        && opens_to(state, id, CredentialField::ApiKey, sealed, plain.trim())
    {
        spec.sealed_credential = Some(sealed.clone());
    }
    if let (Some(sealed), Some(plain)) = (&now.sealed_session_token, &session_token)
        && opens_to(
            state,
            id,
            CredentialField::SessionToken,
            sealed,
            plain.trim(),
        )
    {
        spec.sealed_session_token = Some(sealed.clone());
    }
    let plain: Vec<&str> = extra
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    let same = now.extra_credentials.len() == plain.len()
        && now
            .extra_credentials
            .iter()
            .zip(&plain)
            .enumerate()
            .all(|(n, (sealed, p))| opens_to(state, id, CredentialField::Extra(n), sealed, p));
    if same {
        spec.extra_credentials = now.extra_credentials.clone();
    }
}

fn key(decl: &KeyDecl, live: &BTreeMap<String, Vec<Arc<KeyEntry>>>) -> Result<DesiredKey, Problem> {
    let input = KeyInput {
        name: Some(decl.name.clone()),
        owner: Some(decl.owner.clone()),
        rpm: Some(decl.rpm),
        tpm: Some(decl.tpm),
        budget_usd: Some(decl.budget_usd),
        budget_tokens: Some(decl.budget_tokens),
        budget_period: decl.budget_period,
        max_concurrency: Some(decl.max_concurrency),
        alert_thresholds: None,
        allowed_models: Some(decl.allowed_models.clone()),
        allowed_providers: Some(decl.allowed_providers.clone()),
        expires_at: Some(decl.expires_at),
        project_id: None,
    };
    let settings = input
        .apply(KeySettings::default())
        .map_err(|e| entry_problem("keys", &decl.name, decl.line, &decl.lines, &e))?;
    let current = match live.get(&settings.name).map(Vec::as_slice) {
        None | Some([]) => None,
        Some([one]) => Some(one.clone()),
        Some(several) => {
            return Err(Problem {
                line: decl.line,
                path: format!("keys.{}", super::schema::toml_key(&decl.name)),
                message: format!(
                    "{} running keys are named {:?} ({}): rename or revoke all but one through the admin API first",
                    several.len(),
                    settings.name,
                    several
                        .iter()
                        .map(|k| k.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            });
        }
    };
    // What the file cannot say (the key's project, its alert thresholds)
    // stays as the admin API set it: applying the file never undoes it.
    let mut settings = settings;
    if let Some(now) = &current {
        settings.project_id = now.state.settings.project_id;
        settings
            .limits
            .alert_thresholds
            .clone_from(&now.state.settings.limits.alert_thresholds);
    }
    Ok(DesiredKey { current, settings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_lands_on_the_field_it_names() {
        let lines = BTreeMap::from([("base_url".to_string(), 7), ("models".to_string(), 8)]);
        let p = entry_problem(
            "providers",
            "local",
            6,
            &lines,
            &ApiError::bad_request("'models' must list 1 to 1024 model ids."),
        );
        assert_eq!((p.line, p.path.as_str()), (8, "providers.local.models"));
        let p = entry_problem(
            "providers",
            "my local",
            6,
            &lines,
            &ApiError::bad_request("no field"),
        );
        assert_eq!((p.line, p.path.as_str()), (6, "providers.\"my local\""));
    }
}
