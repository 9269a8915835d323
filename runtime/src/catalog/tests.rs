//! The catalog's own checks and building providers from presets.

use super::*;
use crate::crypto::{Binding, CredentialField, Sealer};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

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
