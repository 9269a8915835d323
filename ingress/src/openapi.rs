//! The OpenAPI 3.1 document of the HTTP API, served without authentication
//! at `GET /openapi.json`.
//!
//! It is generated from the code: each handler carries its
//! `#[utoipa::path]` next to it, the admin's input types derive their
//! schemas, and [`schemas`] and [`admin`] describe the JSON the handlers
//! build by hand. Invariants, checked by the tests below:
//! - every route `crate::router` serves under `/v1`, `/v1beta`, `/stats`
//!   and `/admin/api` is an operation of the document, and nothing else is;
//! - every operation answers its errors as OpenAI's error JSON (the
//!   `default` response, [`schemas::ErrorBody`]), except Anthropic's
//!   Messages routes, which answer Anthropic's
//!   ([`schemas::AnthropicErrorBody`]), and Gemini's `/v1beta` routes,
//!   and `POST /v1/models/{model}:...`, which answer Gemini's
//!   ([`schemas::GeminiErrorBody`]);
//! - callers' operations take the API key (`Authorization: Bearer` or
//!   `x-api-key`; on `/v1beta` also `x-goog-api-key` or `?key=`), admin
//!   operations the admin token, `/health` and `/ready` nothing.

pub mod admin;
pub mod schemas;

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, SecurityRequirement};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::{
    admin as admin_api, alerts, billing, chat, dialects, jobs, keys, ops, presets, quarantine,
    routing, teams, usage, users,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aigw",
        description = "An OpenAI-compatible AI gateway: the callers' API (`/v1`, `/stats`) \
            and the admin API (`/admin/api`). Every error is OpenAI's error JSON \
            (`{\"error\":{\"message\",\"type\",\"param\",\"code\"}}`) and every response \
            carries an `x-request-id`.",
        license(name = "Apache-2.0 OR MIT"),
    ),
    paths(
        chat::chat_completions,
        dialects::responses::responses,
        dialects::stored_responses::get_response,
        dialects::stored_responses::delete_response,
        dialects::stored_responses::input_items,
        dialects::anthropic::messages,
        dialects::anthropic::count_tokens,
        dialects::gemini::post_model,
        dialects::gemini::post_model_v1,
        dialects::gemini::list_models,
        dialects::gemini::get_model,
        chat::embeddings,
        chat::rerank,
        chat::rerank_cohere_v2,
        chat::moderations,
        chat::images,
        chat::speech,
        chat::transcriptions,
        ops::models,
        keys::own_key,
        jobs::submit,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        jobs::cancel_job_post,
        ops::stats,
        presets::list_presets,
        admin_api::create_provider,
        admin_api::list_providers,
        admin_api::get_provider,
        admin_api::update_provider,
        admin_api::delete_provider,
        admin_api::test_provider,
        routing::provider_health_one,
        routing::health_summary,
        ops::unpriced,
        routing::create_alias,
        routing::list_aliases,
        routing::get_alias,
        routing::update_alias,
        routing::delete_alias,
        keys::create_key,
        keys::list_keys,
        keys::get_key,
        keys::update_key,
        keys::revoke_key,
        keys::revoke_key_post,
        keys::top_up,
        keys::rotate,
        keys::key_events,
        teams::list_teams,
        teams::create_team,
        teams::get_team,
        teams::update_team,
        teams::delete_team,
        teams::list_projects,
        teams::create_project,
        teams::get_project,
        teams::update_project,
        teams::delete_project,
        jobs::admin_list,
        jobs::admin_get,
        jobs::admin_cancel,
        usage::usage,
        usage::requests,
        usage::request_detail,
        billing::stats,
        billing::billing,
        billing::requests,
        billing::run_audit,
        alerts::list,
        quarantine::list,
        users::me,
        crate::sessions::sign_ins,
        users::list_users,
        users::create_user,
        users::get_user,
        users::update_user,
        users::disable_user,
        users::set_roles,
        users::list_tokens,
        users::create_token,
        users::revoke_token,
        ops::health,
        ops::ready,
    ),
    components(schemas(
        schemas::ErrorBody,
        schemas::AnthropicErrorBody,
        schemas::GeminiErrorBody
    )),
    modifiers(&Conventions),
    tags(
        (name = "inference", description = "OpenAI-compatible calls, queued to the dispatchers."),
        (name = "anthropic", description = "Anthropic's Messages API, through the same admission and dispatchers; errors in Anthropic's shape."),
        (name = "gemini", description = "Gemini's generateContent API, through the same admission and dispatchers; errors in Gemini's shape."),
        (name = "jobs", description = "Requests of any dialect run in the background."),
        (name = "caller", description = "The caller's own key and usage."),
        (name = "providers", description = "Admin: providers, presets and their health."),
        (name = "aliases", description = "Admin: model aliases and their routing."),
        (name = "keys", description = "Admin: virtual API keys."),
        (name = "teams", description = "Admin: teams and their projects, whose limits and scopes apply to their keys."),
        (name = "users", description = "Admin: admin users, their roles and personal tokens; who is calling."),
        (name = "reports", description = "Admin: usage, billing, the request log, audits."),
        (name = "operations", description = "Liveness and readiness, without authentication."),
    )
)]
pub struct ApiDoc;

/// Security schemes, the shared error response, and which operations take
/// which credential.
struct Conventions;

const ERROR_RESPONSE: &str = "Error";
/// The error response of the Anthropic Messages routes.
const ANTHROPIC_ERROR_RESPONSE: &str = "AnthropicError";
/// The routes whose errors are Anthropic's.
pub const ANTHROPIC_PATHS: &str = "/v1/messages";
/// The error response of the Gemini routes.
const GEMINI_ERROR_RESPONSE: &str = "GeminiError";
/// Whether `path` is one of Gemini's routes (their errors are Gemini's).
pub fn is_gemini_path(path: &str) -> bool {
    path.starts_with("/v1beta/") || path == "/v1/models/{name}"
}

/// Links for stateful testing and clients: what a creating call's answer
/// leads to. (creating path, its status, the id field, the operations the
/// field is the path parameter of.)
const LINKS: &[(&str, &str, &str, &[&str])] = &[
    (
        "/admin/api/keys",
        "201",
        "id",
        &[
            "get_key",
            "update_key",
            "top_up",
            "rotate",
            "key_events",
            "revoke_key",
        ],
    ),
    (
        "/admin/api/providers",
        "201",
        "id",
        &[
            "get_provider",
            "update_provider",
            "provider_health_one",
            "delete_provider",
        ],
    ),
    (
        "/admin/api/aliases",
        "201",
        "name",
        &["get_alias", "update_alias", "delete_alias"],
    ),
    (
        "/v1/jobs",
        "202",
        "id",
        &["get_job", "admin_get", "cancel_job", "admin_cancel"],
    ),
];

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme("api_key", bearer("An aigw API key (`aig_...`)."));
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The same API key, in the `x-api-key` header.",
            ))),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("The admin token (`AIGW_ADMIN_TOKEN`)."),
        );
        components.responses.insert(
            ERROR_RESPONSE.to_string(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("An error, as OpenAI's error JSON.")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            ),
        );
        components.responses.insert(
            ANTHROPIC_ERROR_RESPONSE.to_string(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("An error, as Anthropic's error JSON.")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("AnthropicErrorBody")))
                            .build(),
                    )
                    .build(),
            ),
        );
        components.responses.insert(
            GEMINI_ERROR_RESPONSE.to_string(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("An error, as Gemini's error JSON.")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("GeminiErrorBody")))
                            .build(),
                    )
                    .build(),
            ),
        );
        components.add_security_scheme(
            "x_goog_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-goog-api-key",
                "The same API key, in Gemini's `x-goog-api-key` header.",
            ))),
        );
        components.add_security_scheme(
            "query_key",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "key",
                "The same API key, as Gemini's `?key=` (never logged).",
            ))),
        );
        let no_scopes: [&str; 0] = [];
        for (path, item) in doc.paths.paths.iter_mut() {
            let security = if path.starts_with("/admin/api/") {
                Some(vec![SecurityRequirement::new("admin_token", no_scopes)])
            } else if is_gemini_path(path) {
                Some(vec![
                    SecurityRequirement::new("api_key", no_scopes),
                    SecurityRequirement::new("x_api_key", no_scopes),
                    SecurityRequirement::new("x_goog_api_key", no_scopes),
                    SecurityRequirement::new("query_key", no_scopes),
                ])
            } else if path.starts_with("/v1/") || path == "/stats" {
                Some(vec![
                    SecurityRequirement::new("api_key", no_scopes),
                    SecurityRequirement::new("x_api_key", no_scopes),
                ])
            } else {
                None
            };
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            let error = if path.starts_with(ANTHROPIC_PATHS) {
                ANTHROPIC_ERROR_RESPONSE
            } else if is_gemini_path(path) {
                GEMINI_ERROR_RESPONSE
            } else {
                ERROR_RESPONSE
            };
            for operation in operations.into_iter().flatten() {
                conventions(operation, security.clone(), error);
            }
        }
    }
}

fn conventions(operation: &mut Operation, security: Option<Vec<SecurityRequirement>>, error: &str) {
    if security.is_some() {
        operation.security = security;
    }
    operation
        .responses
        .responses
        .entry("default".to_string())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(error)));
}

/// Adds [`LINKS`] to the serialized document. (Not through utoipa's
/// `Link`: 5.5 writes its `operationId` as `operation_id`, which no tool
/// reads.)
fn add_links(doc: &mut Value) {
    for (path, status, field, targets) in LINKS {
        let response = &mut doc["paths"][*path]["post"]["responses"][*status];
        if !response.is_object() {
            continue;
        }
        let links: serde_json::Map<String, Value> = targets
            .iter()
            .map(|target| {
                let link = json!({
                    "operationId": target,
                    "parameters": { *field: format!("$response.body#/{field}") },
                });
                (target.to_string(), link)
            })
            .collect();
        response["links"] = Value::Object(links);
    }
}

/// The whole document, as served.
pub fn document() -> Result<Value, serde_json::Error> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    add_links(&mut doc);
    Ok(doc)
}

static DOCUMENT: LazyLock<Result<Vec<u8>, String>> = LazyLock::new(|| {
    document()
        .and_then(|doc| serde_json::to_vec(&doc))
        .map_err(|e| e.to_string())
});

/// `GET /openapi.json`: the document, built once.
pub async fn openapi_json() -> Response {
    match &*DOCUMENT {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes.clone(),
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests;
