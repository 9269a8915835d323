//! The deployments an Azure preset is configured with: what `build_spec`
//! makes of `deployments`, `deployment` and `model` (the mapping itself, and
//! how it is read, is `aigw_events::deployments`).

use aigw_events::deployments::Deployments;
use aigw_events::provider::ProviderKind;

use super::spec::given;
use super::{Preset, PresetError, PresetInput};

/// The deployments an Azure preset is given: `deployments`, plus one
/// `deployment` (with its `model`, if said); at least one. Other presets
/// take none. Names and models are checked by the admin API (the model-name
/// rule), like every provider's model ids.
pub(super) fn from_input(
    input: &PresetInput,
    preset: &Preset,
    kind: ProviderKind,
) -> Result<Deployments, PresetError> {
    let unexpected = |field: &str| PresetError::Unexpected {
        preset: preset.id.clone(),
        field: field.into(),
    };
    let model = given(&input.model);
    if kind != ProviderKind::Azure {
        return match (&input.deployments, model) {
            (Some(_), _) => Err(unexpected("deployments")),
            (None, Some(_)) => Err(unexpected("model")),
            (None, None) => Ok(Deployments::new()),
        };
    }
    if input.models.is_some() {
        return Err(PresetError::Invalid {
            field: "models".into(),
            problem: "an Azure provider serves its deployments: give 'deployments' (deployment name to model) instead".into(),
        });
    }
    let mut all = Deployments::new();
    for (name, model) in input.deployments.iter().flatten() {
        let model = model.as_deref().map(str::trim).filter(|m| !m.is_empty());
        all.insert(name.trim().to_string(), model.map(str::to_string));
    }
    match (input.field("deployment"), model) {
        (Some(name), model) => {
            let model = model.map(str::to_string);
            if all.get(name).is_some_and(|m| *m != model) {
                return Err(PresetError::Invalid {
                    field: "deployment".into(),
                    problem: format!("{name:?} is also in 'deployments', with another model"),
                });
            }
            all.insert(name.to_string(), model);
        }
        (None, Some(_)) => {
            return Err(PresetError::Missing {
                preset: preset.id.clone(),
                field: "deployment".into(),
            });
        }
        (None, None) => {}
    }
    if all.keys().any(String::is_empty) {
        return Err(PresetError::Invalid {
            field: "deployments".into(),
            problem: "a deployment name is empty".into(),
        });
    }
    if all.is_empty() {
        return Err(PresetError::Missing {
            preset: preset.id.clone(),
            field: "deployment".into(),
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use aigw_events::provider::{Price, ProviderSpec};
    use secrecy::SecretString;
    use uuid::Uuid;

    use super::super::{build_spec, model_limits};
    use super::*;
    use crate::crypto::Sealer;

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

    fn azure(extra: serde_json::Value) -> Result<ProviderSpec, PresetError> {
        let mut body = serde_json::json!({
            "preset": "azure",
            "api_key": "az-key",
            "base_url": "https://res.openai.azure.com",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        build_spec(&serde_json::from_value(body).unwrap(), &sealer(), ID)
    }

    #[test]
    fn azure_deployments_serve_their_models_at_the_catalog_price() {
        let spec = azure(serde_json::json!({
            "deployments": {"my-gpt4o-mini": "gpt-4o-mini", "prod-5": "gpt-5.4", "raw": null},
            "prices": {"gpt-4o-mini": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}},
        }))
        .unwrap();
        assert_eq!(spec.models, ["my-gpt4o-mini", "prod-5", "raw"]);
        assert_eq!(spec.served_model("prod-5"), Some("gpt-5.4"));
        assert_eq!(spec.served_model("raw"), None);
        assert_eq!(spec.setting("deployment"), None);
        assert_eq!(spec.setting("api_version"), Some("2024-10-21"));
        // The catalog's gpt-5.4 price, keyed by the deployment that serves it.
        assert_eq!(
            spec.price("prod-5"),
            Some(&Price {
                cached_input_micros_per_mtok: Some(250_000),
                ..Price::tokens(2_500_000, 15_000_000)
            })
        );
        // A model the catalog does not price, priced by the admin.
        assert_eq!(
            spec.price("my-gpt4o-mini"),
            Some(&Price::tokens(150_000, 600_000))
        );
        assert_eq!(spec.price("raw"), None);
        assert_eq!(spec.prices.len(), 2);
        assert_eq!(
            model_limits(Some("azure"), "gpt-5.4").max_output,
            Some(128_000)
        );
    }

    #[test]
    fn one_azure_deployment_without_its_model_is_unpriced() {
        let spec = azure(serde_json::json!({"deployment": "gpt-5.4"})).unwrap();
        assert_eq!(spec.models, ["gpt-5.4"]);
        assert_eq!(
            spec.deployments,
            Deployments::from([("gpt-5.4".into(), None)])
        );
        assert_eq!(
            spec.price("gpt-5.4"),
            None,
            "named like a model, not said to be one"
        );
        let spec = azure(serde_json::json!({"deployment": "d", "model": "gpt-5.4-mini"})).unwrap();
        assert_eq!(spec.served_model("d"), Some("gpt-5.4-mini"));
        assert_eq!(spec.price("d").unwrap().input_micros_per_mtok, 750_000);
        let spec = azure(serde_json::json!({
            "deployment": "d",
            "deployments": {"e": "gpt-5.4"},
            "prices": {"d": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }))
        .unwrap();
        assert_eq!(spec.models, ["d", "e"]);
        assert_eq!(spec.price("d"), Some(&Price::tokens(1_000_000, 2_000_000)));
    }

    #[test]
    fn azure_needs_a_deployment_and_takes_no_model_list() {
        for (extra, field) in [
            (serde_json::json!({}), "deployment"),
            (serde_json::json!({"deployments": {}}), "deployment"),
            (serde_json::json!({"model": "gpt-5.4"}), "deployment"),
            (
                serde_json::json!({"deployment": "d", "models": ["gpt-5.4"]}),
                "models",
            ),
            (
                serde_json::json!({"deployments": {"": "gpt-5.4"}}),
                "deployments",
            ),
            (
                serde_json::json!({"deployment": "d", "model": "a", "deployments": {"d": "b"}}),
                "deployment",
            ),
        ] {
            match azure(extra.clone()) {
                Err(
                    PresetError::Missing { field: f, .. } | PresetError::Invalid { field: f, .. },
                ) => {
                    assert_eq!(f, field, "{extra}")
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let mut i = input("deepseek");
        i.deployments = Some(Deployments::from([("d".into(), None)]));
        assert!(matches!(
            build_spec(&i, &sealer(), ID),
            Err(PresetError::Unexpected { field, .. }) if field == "deployments"
        ));
        let mut i = input("deepseek");
        i.model = Some("m".into());
        assert!(matches!(
            build_spec(&i, &sealer(), ID),
            Err(PresetError::Unexpected { field, .. }) if field == "model"
        ));
    }
}
