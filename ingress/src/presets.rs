//! `/admin/api/presets` and configuring a provider from a preset: the
//! catalog lists what aigw knows, and a preset plus its API key (and the few
//! fields a preset names) is enough to add a provider.

use aigw_events::provider::ProviderSpec;
use aigw_runtime::catalog::{self, Preset, PresetError, PresetInput};
use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::{parse_json, provider_view};
use crate::error::ApiError;

/// Whether a `POST /admin/api/providers` body asks for a preset.
pub fn names_a_preset(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("preset").is_some())
}

/// Configures a provider from a catalog preset.
pub async fn create_from_preset(
    state: &AppState,
    actor: String,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: PresetInput = parse_json(body)?;
    let id = Uuid::now_v7();
    let spec = preset_spec(state, id, &input)?;
    if state.registry.provider(&spec.name).is_some() {
        return Err(ApiError::Conflict(format!(
            "A provider named {:?} already exists; pass another 'name'.",
            spec.name
        )));
    }
    let entry = crate::admin::configure(state, &actor, id, spec).await?;
    Ok((StatusCode::CREATED, Json(provider_view(&entry))))
}

/// Provider `id` as preset `input` describes it: every field checked, every
/// credential sealed (bound to `id`). Whether the name is taken is the
/// caller's question.
pub fn preset_spec(
    state: &AppState,
    id: Uuid,
    input: &PresetInput,
) -> Result<ProviderSpec, ApiError> {
    let mut spec = catalog::build_spec(input, &state.sealer, id).map_err(preset_error)?;
    spec.name = crate::admin::provider_name(&spec.name)?;
    spec.models = crate::admin::model_ids(&spec.models)?;
    if spec.by_deployment() {
        spec.deployments = crate::admin::deployment_map(&spec.deployments)?;
    }
    Ok(spec)
}

/// A preset problem as a 400 naming the field.
pub fn preset_error(e: PresetError) -> ApiError {
    let (param, code) = match &e {
        PresetError::Unknown(_) => (Some("preset"), "unknown_preset"),
        PresetError::NotConfigurable { .. } => (Some("preset"), "preset_not_configurable"),
        PresetError::Missing { field, .. } => (static_field(field), "missing_field"),
        PresetError::Unexpected { field, .. } => (static_field(field), "unexpected_field"),
        PresetError::UnknownVariant { .. } => (Some("variant"), "unknown_variant"),
        PresetError::Invalid { field, .. } => (static_field(field), "invalid_field"),
        PresetError::Seal(_) => (Some("api_key"), "credential_not_sealed"),
    };
    ApiError::BadRequest {
        message: e.to_string(),
        param,
        code: Some(code),
    }
}

fn static_field(field: &str) -> Option<&'static str> {
    [
        "api_key",
        "models",
        "preset",
        "prices",
        "deployments",
        "model",
    ]
    .iter()
    .chain(catalog::FIELDS)
    .find(|f| **f == field)
    .copied()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresetQuery {
    #[param(pattern = "^(top|china|open|specialised|emerging)$")]
    pub category: Option<String>,
}

/// One catalog entry as the admin API shows it.
pub fn preset_view(p: &Preset) -> Value {
    let mut required = Vec::new();
    if p.configurable && p.wire != "bedrock" {
        required.push("api_key".to_string());
    }
    required.extend(p.required.iter().cloned());
    let mut optional: Vec<String> = Vec::new();
    if p.configurable {
        optional.extend(["name", "base_url", "models", "prices"].map(String::from));
        if !p.base_urls.is_empty() {
            optional.push("variant".into());
        }
        if p.wire == "bedrock" {
            // A Bedrock API key, or both AWS keys.
            optional.push("api_key".into());
        }
        for f in &p.optional {
            if !optional.contains(f) {
                optional.push(f.clone());
            }
        }
        if p.wire == "azure" {
            // Its deployments (or one `deployment` and its `model`) in
            // place of `models`.
            required.push("deployments".into());
            optional.retain(|f| f != "models");
            optional.push("model".into());
        }
        optional.retain(|f| !required.contains(f));
    }
    json!({
        "id": p.id,
        "object": "provider_preset",
        "name": p.name_en,
        "name_zh": p.name_zh,
        "description": p.description_en,
        "description_zh": p.description_zh,
        "category": p.category,
        "wire_format": p.wire,
        "base_url": p.base_url,
        "base_url_variants": p.base_urls,
        "auth": p.auth,
        "required_fields": required,
        "optional_fields": optional,
        "defaults": p.defaults,
        "features": p.features,
        "docs_url": p.docs,
        "configurable": p.configurable,
        "unsupported_reason": p.reason,
        "price_source": p.price_source,
        "prices_as_of": p.prices_as_of,
        "models": p.models.iter().map(|m| json!({
            "id": m.id,
            "context_length": m.context,
            "input_usd_per_mtok": m.input,
            "output_usd_per_mtok": m.output,
            "cached_input_usd_per_mtok": m.cached_input,
            "cache_write_5m_usd_per_mtok": m.cache_write_5m,
            "cache_write_1h_usd_per_mtok": m.cache_write_1h,
            "reasoning_usd_per_mtok": m.reasoning,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /admin/api/presets[?category=]`: the preset catalog.
#[utoipa::path(
    get,
    path = "/admin/api/presets",
    tag = "providers",
    summary = "The built-in provider presets",
    params(PresetQuery),
    responses((status = 200, description = "The presets.", body = crate::openapi::admin::ObjectList))
)]
pub async fn list_presets(
    query: Result<Query<PresetQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let catalog = catalog::catalog().map_err(ApiError::internal)?;
    if let Some(c) = &query.category
        && !catalog::CATEGORIES.contains(&c.as_str())
    {
        return Err(ApiError::BadRequest {
            message: format!(
                "Unknown category {c:?}; use one of {}.",
                catalog::CATEGORIES.join(", ")
            ),
            param: Some("category"),
            code: Some("unknown_category"),
        });
    }
    let data: Vec<Value> = catalog
        .preset
        .iter()
        .filter(|p| query.category.as_ref().is_none_or(|c| *c == p.category))
        .map(preset_view)
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn list(category: Option<&str>) -> Result<Value, ApiError> {
        let q = PresetQuery {
            category: category.map(str::to_string),
        };
        list_presets(Ok(Query(q))).await.map(|Json(v)| v)
    }

    #[tokio::test]
    async fn lists_and_filters_the_catalog() {
        let all = list(None).await.unwrap();
        assert_eq!(all["data"].as_array().unwrap().len(), 29);
        let china = list(Some("china")).await.unwrap();
        let ids: Vec<&str> = china["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "baidu", "qwen", "hunyuan", "doubao", "zhipu", "moonshot", "deepseek", "yi"
            ]
        );
        assert!(matches!(
            list(Some("moon")).await,
            Err(ApiError::BadRequest { .. })
        ));
        let cf = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "cloudflare")
            .unwrap();
        assert_eq!(cf["required_fields"], json!(["api_key", "account_id"]));
        let mj = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "midjourney")
            .unwrap();
        assert_eq!(mj["configurable"], false);
        assert!(
            mj["unsupported_reason"]
                .as_str()
                .unwrap()
                .contains("no official public API")
        );
        let bedrock = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "bedrock")
            .unwrap();
        assert_eq!(bedrock["required_fields"], json!(["region"]));
        let azure = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "azure")
            .unwrap();
        assert_eq!(
            azure["required_fields"],
            json!(["api_key", "base_url", "deployments"])
        );
        let optional = azure["optional_fields"].as_array().unwrap();
        assert!(optional.contains(&json!("deployment")) && optional.contains(&json!("model")));
        assert!(!optional.contains(&json!("models")));
        let anthropic = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "anthropic")
            .unwrap();
        assert!(
            anthropic["price_source"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        assert!(anthropic["prices_as_of"].as_str().unwrap().len() == 10);
        let sonnet = &anthropic["models"][1];
        assert_eq!(sonnet["id"], "claude-sonnet-5");
        assert_eq!(sonnet["cached_input_usd_per_mtok"], 0.3);
        assert_eq!(sonnet["cache_write_5m_usd_per_mtok"], 3.75);
        assert_eq!(sonnet["cache_write_1h_usd_per_mtok"], 6.0);
        // Every preset with prices says where they come from.
        for p in all["data"].as_array().unwrap() {
            let priced = p["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| !m["input_usd_per_mtok"].is_null());
            if priced {
                assert!(p["price_source"].is_string(), "{}", p["id"]);
                assert!(p["prices_as_of"].is_string(), "{}", p["id"]);
            }
        }
    }

    #[test]
    fn preset_errors_name_the_field() {
        let e = preset_error(PresetError::Missing {
            preset: "azure".into(),
            field: "deployment".into(),
        });
        match e {
            ApiError::BadRequest {
                param,
                code,
                message,
            } => {
                assert_eq!(param, Some("deployment"));
                assert_eq!(code, Some("missing_field"));
                assert!(message.contains("deployment"));
            }
            other => panic!("{other:?}"),
        }
    }
}
