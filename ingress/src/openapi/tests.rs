//! The document's invariants: 3.1, every API route documented and nothing
//! more, errors and credentials on every operation.

use std::collections::BTreeSet;

use serde_json::Value;

fn document() -> Value {
    super::document().unwrap()
}

/// The paths `crate::router` serves (read from its source, so a route
/// added without an operation fails here).
fn routed_paths() -> BTreeSet<String> {
    let source = include_str!("../lib.rs");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .filter(|p| {
            p.starts_with("/v1/")
                || p.starts_with("/v1beta/")
                || p.starts_with("/v2/")
                || p.starts_with("/admin/api/")
                || ["/stats", "/health", "/ready"].contains(p)
        })
        // A catch-all segment is documented as a plain parameter.
        .map(|p| p.replace("{*", "{"))
        .collect()
}

#[test]
fn is_openapi_3_1() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
}

#[test]
fn documents_every_route_and_nothing_else() {
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed = routed_paths();
    assert!(routed.len() > 30, "{routed:?}");
    assert_eq!(documented, routed);
}

#[test]
fn every_operation_has_the_error_shape_and_its_credential() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let error = if path.starts_with(super::ANTHROPIC_PATHS) {
                "#/components/responses/AnthropicError"
            } else if super::is_gemini_path(path) {
                "#/components/responses/GeminiError"
            } else {
                "#/components/responses/Error"
            };
            assert_eq!(op["responses"]["default"]["$ref"], error, "{method} {path}");
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let expected: &[&str] = if path.starts_with("/admin/api/") {
                &["admin_token"]
            } else if super::is_gemini_path(path) {
                &["api_key", "x_api_key", "x_goog_api_key", "query_key"]
            } else if path.starts_with("/v1/") || path == "/stats" {
                &["api_key", "x_api_key"]
            } else {
                &[]
            };
            assert_eq!(schemes, expected, "{method} {path}");
        }
    }
    let error = &doc["components"]["schemas"]["ErrorObject"];
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["message", "type", "param", "code"])
    );
}

#[test]
fn new_key_lists_the_fields_of_key_input() {
    let doc = document();
    let fields = |name: &str| -> BTreeSet<String> {
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}"))
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(fields("NewKey"), fields("KeyInput"));
    assert_eq!(
        doc["components"]["schemas"]["NewKey"]["required"],
        serde_json::json!(["name"])
    );
    assert_eq!(
        doc["components"]["schemas"]["KeyInput"]["additionalProperties"],
        false
    );
}

#[test]
fn preset_categories_are_the_catalog_s() {
    let doc = document();
    let category = doc["paths"]["/admin/api/presets"]["get"]["parameters"][0].clone();
    assert_eq!(category["name"], "category");
    let pattern = category["schema"]["pattern"].as_str().unwrap().to_string();
    let expected = format!("^({})$", aigw_runtime::catalog::CATEGORIES.join("|"));
    assert_eq!(pattern, expected);
}

#[test]
fn links_name_existing_operations() {
    let doc = document();
    let ids: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|i| i.as_object().unwrap().len())
            .sum::<usize>(),
        "operation ids are unique"
    );
    let mut links = 0;
    for (path, status, _, targets) in super::LINKS {
        let response = &doc["paths"][path]["post"]["responses"][status];
        for target in *targets {
            assert!(ids.contains(target), "{target}");
            assert_eq!(response["links"][target]["operationId"], *target, "{path}");
            links += 1;
        }
    }
    assert!(links > 10);
}
