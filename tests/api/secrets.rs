//! Secrets: provider credentials sealed at rest and bound to their provider
//! and field, master-key rotation (`aigw providers reseal`), placeholder
//! secrets refused at start, and upstream authentication failures never
//! relayed (their message may echo the credential).

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aigw_events::{ProviderCommand, ProviderSpec};
use aigw_runtime::crypto::{Binding, CredentialField, Sealer};
use aigw_runtime::registry::{self, KIND_PROVIDERS};
use aigw_runtime::{Stores, store};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{MASTER_KEY, Options, TestEnv, completion, user, wait_until};

const NEW_MASTER_KEY: &str = "aigw-rotated-master-key-9e2b71c4d5a8f3061b7d";
/// The v1 ciphertext (written by aigw before v2: no binding, a bare SHA-256
/// key) of `sk-legacy-upstream-secret` under [`MASTER_KEY`].
const LEGACY_SEALED: &str =
    "/CBEPLU2JOiLPL8dOXvVyThiSYvinJd53OVy3bZlgY4EI5aXHVIA352byWkiMoDo1fmpUUc=";

/// Runs the `aigw` binary against the test's database and NATS namespace.
async fn run_aigw(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.args(args)
        .env("AIGW_NATS_URL", &env.common.nats_url)
        .env("AIGW_DATABASE_URL", &env.common.database_url)
        .env("AIGW_NAMESPACE", &env.common.namespace)
        .env("AIGW_LOG", "warn")
        .env_remove("AIGW_MASTER_KEY")
        .env_remove("AIGW_MASTER_KEY_PREVIOUS")
        .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn reseal(env: &TestEnv, current: &str, previous: Option<&str>) -> (bool, String, String) {
    let mut vars = vec![("AIGW_MASTER_KEY", current)];
    if let Some(p) = previous {
        vars.push(("AIGW_MASTER_KEY_PREVIOUS", p));
    }
    let out = run_aigw(env, &["providers", "reseal"], &vars).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn provider_spec(env: &TestEnv, id: Uuid) -> ProviderSpec {
    let spec: Value = sqlx::query_scalar("SELECT spec FROM providers WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    serde_json::from_value(spec).unwrap()
}

async fn event_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// `ProviderUpdated` events recorded by the reseal, by actor and metadata.
async fn reseal_events(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'provider'
           AND payload::jsonb -> 'ProviderUpdated' ->> 'actor' = 'reseal'
           AND metadata::jsonb ->> 'actor' = 'reseal'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

/// Writes a provider as an older aigw (or a tamperer) would have, and tells
/// the replicas.
async fn write_provider(env: &TestEnv, id: Uuid, command: ProviderCommand) {
    let stores = Stores::new(env.pool.clone());
    stores
        .providers
        .execute_with_metadata(&id.to_string(), command, HashMap::new())
        .await
        .unwrap();
    registry::refresh_provider(&env.pool, id).await.unwrap();
    let client = async_nats::connect(&env.common.nats_url).await.unwrap();
    registry::announce(&client, &env.common.names().unwrap(), KIND_PROVIDERS, id).await;
}

async fn serves(env: &TestEnv, key: &str, model: &str) -> bool {
    let models: Value = env
        .http
        .get(env.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    models["data"]
        .as_array()
        .is_some_and(|d| d.iter().any(|m| m["id"] == model))
}

/// The whole rotation: credentials sealed under the old key (v2 from the
/// admin API, v1 from an older aigw) are resealed under the new one as
/// `ProviderUpdated` events with the actor `reseal`; a second run records
/// nothing; a dispatcher with only the new key then serves every provider;
/// and a ciphertext copied to another provider opens neither for the
/// dispatcher nor for the reseal.
#[tokio::test]
async fn rotating_the_master_key_reseals_every_credential_once() {
    let env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    for secret in [
        "sk-main-credential",
        "sk-extra-credential",
        "sk-legacy-upstream-secret",
    ] {
        Mock::given(method("POST"))
            .and(header("authorization", format!("Bearer {secret}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 3, 2)))
            .mount(&mock)
            .await;
    }
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401))
        .expect(0)
        .named("a request with a wrong credential")
        .mount(&mock)
        .await;

    // One provider from the admin API (v2 ciphertexts)...
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/providers")
        .json(&json!({
            "name": "current",
            "base_url": format!("{}/v1", mock.uri()),
            "api_key": "sk-main-credential",
            "api_keys": ["", "sk-extra-credential"],
            "models": ["m"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let current_id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let before = provider_spec(&env, current_id).await;
    assert!(
        before
            .sealed_credential
            .as_deref()
            .unwrap()
            .starts_with("v2:")
    );
    assert_eq!(before.extra_credentials.len(), 1);
    // ...and one configured by aigw before v2 (a v1 ciphertext).
    let legacy_id = Uuid::now_v7();
    let legacy_spec = ProviderSpec {
        name: "legacy".into(),
        base_url: format!("{}/v1", mock.uri()),
        models: vec!["legacy-m".into()],
        sealed_credential: Some(LEGACY_SEALED.into()),
        ..ProviderSpec::default()
    };
    write_provider(
        &env,
        legacy_id,
        ProviderCommand::ConfigureProvider {
            spec: legacy_spec.clone(),
            actor: "admin".into(),
            at: Utc::now(),
        },
    )
    .await;

    // The rotation: new key, old one as previous.
    let (ok, stdout, stderr) = reseal(&env, NEW_MASTER_KEY, Some(MASTER_KEY)).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 providers: 2 resealed, 0 already current, 0 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("provider current ({current_id}): resealed 2"))
            && stderr.contains(&format!("provider legacy ({legacy_id}): resealed 1")),
        "{stderr}"
    );
    assert_eq!(reseal_events(&env).await, 2);
    // Every credential opens with the new key alone, bound where it belongs.
    let new_only = Sealer::new(Some(&SecretString::from(NEW_MASTER_KEY)));
    let current = provider_spec(&env, current_id).await;
    let legacy = provider_spec(&env, legacy_id).await;
    for (id, sealed, field, secret) in [
        (
            current_id,
            current.sealed_credential.clone().unwrap(),
            CredentialField::ApiKey,
            "sk-main-credential",
        ),
        (
            current_id,
            current.extra_credentials[0].clone(),
            CredentialField::Extra(0),
            "sk-extra-credential",
        ),
        (
            legacy_id,
            legacy.sealed_credential.clone().unwrap(),
            CredentialField::ApiKey,
            "sk-legacy-upstream-secret",
        ),
    ] {
        assert!(sealed.starts_with("v2:"), "{sealed}");
        let opened = new_only.open(&sealed, &Binding::new(id, field)).unwrap();
        assert_eq!(opened.expose_secret(), secret);
    }
    // Nothing else about the providers changed.
    assert_eq!(
        ProviderSpec {
            sealed_credential: None,
            extra_credentials: vec![],
            ..current.clone()
        },
        ProviderSpec {
            sealed_credential: None,
            extra_credentials: vec![],
            ..before
        }
    );

    // Idempotent: a second run (with or without the previous key) records
    // nothing.
    let events = event_count(&env).await;
    for previous in [Some(MASTER_KEY), None] {
        let (ok, stdout, stderr) = reseal(&env, NEW_MASTER_KEY, previous).await;
        assert!(ok, "{stdout}\n{stderr}");
        assert!(
            stdout.contains("2 providers: 0 resealed, 2 already current, 0 failed"),
            "{stdout}"
        );
    }
    assert_eq!(event_count(&env).await, events);
    assert_eq!(provider_spec(&env, current_id).await, current);

    // A dispatcher with only the new key serves both providers.
    let mut common = env.common.clone();
    common.master_key = Some(SecretString::from(NEW_MASTER_KEY));
    common.master_key_previous = None;
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(aigw_dispatcher::run(
        common,
        env.dispatcher_args(),
        stop.clone(),
    ));
    let (_, key) = env.add_key("rotated").await;
    wait_until(Duration::from_secs(20), || serves(&env, &key, "legacy-m")).await;
    for model in ["m", "m", "m", "legacy-m"] {
        let r = env
            .chat(&key, json!({"model": model, "messages": user("hi")}))
            .await;
        assert_eq!(r.status(), 200, "{model}: {}", r.text().await.unwrap());
    }
    let used: Vec<String> = mock
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    assert!(used.contains(&"Bearer sk-legacy-upstream-secret".to_string()));

    // The current provider's ciphertext copied into the legacy provider:
    // it opens only where it was sealed.
    write_provider(
        &env,
        legacy_id,
        ProviderCommand::UpdateProvider {
            spec: ProviderSpec {
                sealed_credential: current.sealed_credential.clone(),
                ..legacy_spec
            },
            actor: "tamperer".into(),
            at: Utc::now(),
        },
    )
    .await;
    // Were the binding not checked, the copy would open as the other
    // provider's key (which the mock accepts) and this would never hold.
    wait_until(Duration::from_secs(20), || async {
        let r = env
            .chat(&key, json!({"model": "legacy-m", "messages": user("hi")}))
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        status == 502 && body["error"]["code"] == "provider_credential_unavailable"
    })
    .await;
    let (ok, stdout, stderr) = reseal(&env, NEW_MASTER_KEY, None).await;
    assert!(!ok, "a credential that does not open fails the reseal");
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(
        stderr.contains(&format!("provider legacy ({legacy_id}): FAILED: api_key:")),
        "{stderr}"
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), dispatcher).await;
    let loaded = store::load::<aigw_events::ProviderAggregate>(&env.pool, &legacy_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.0.spec.unwrap().sealed_credential,
        current.sealed_credential,
        "a failed reseal leaves the provider as it was"
    );
}

/// An upstream 401/403 message can echo the provider credential: neither
/// the caller's answer, nor the stored events, nor the request log, nor the
/// admin's health view or "test connection" ever carries it, for
/// OpenAI-compatible providers and native adapters alike.
#[tokio::test]
async fn upstream_authentication_failures_never_relay_the_message() {
    const OPENAI_KEY: &str = "sk-proj-Zx8nQ2vL7pR4tY1wK9mB3cF6hJ0sD5gA";
    const ANTHROPIC_KEY: &str = "sk-ant-api03-Qm4Vt7Xw2Zp9Lr6Ks3Jd8Hf1";
    let env = TestEnv::start().await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": format!("Incorrect API key provided: {OPENAI_KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})))
        .mount(&openai)
        .await;
    let anthropic = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"type": "error",
            "error": {"type": "authentication_error", "message": format!("invalid x-api-key {ANTHROPIC_KEY}")}})))
        .mount(&anthropic)
        .await;
    let mut ids = vec![];
    for body in [
        json!({"name": "openai-like", "base_url": format!("{}/v1", openai.uri()),
            "api_key": OPENAI_KEY, "models": ["gpt-x"]}),
        json!({"preset": "anthropic", "api_key": ANTHROPIC_KEY,
            "base_url": anthropic.uri(), "models": ["claude-x"]}),
    ] {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let leaks = |text: &str| {
        text.contains(OPENAI_KEY)
            || text.contains(ANTHROPIC_KEY)
            || text.contains("Incorrect API key")
            || text.contains("invalid x-api-key")
    };
    let (_, key) = env.add_key("auth").await;
    for (model, stream) in [("gpt-x", false), ("gpt-x", true), ("claude-x", false)] {
        let r = env
            .chat(
                &key,
                json!({"model": model, "messages": user("hi"), "stream": stream}),
            )
            .await;
        assert_eq!(r.status(), 502, "{model}");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        assert!(!leaks(&text), "{model}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["type"], "upstream_auth_error", "{body}");
        assert_eq!(body["error"]["code"], "upstream_auth_error", "{body}");
        let events = env.wait_recorded(&id).await;
        let stored = serde_json::to_string(&events).unwrap();
        assert!(!leaks(&stored), "{stored}");
        assert!(stored.contains("upstream_auth_error"), "{stored}");
        let row = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT to_jsonb(t)::text FROM request_log t WHERE id = $1::uuid AND status IS NOT NULL",
            )
            .bind(&id)
            .fetch_optional(&env.pool)
            .await
            .unwrap()
        };
        wait_until(Duration::from_secs(30), || async { row().await.is_some() }).await;
        let row = row().await.unwrap();
        assert!(!leaks(&row) && row.contains("upstream_auth_error"), "{row}");
    }
    let all: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, ' ') FROM events")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(!leaks(&all));
    let health = env
        .admin(reqwest::Method::GET, "/admin/api/health")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!leaks(&health), "{health}");
    for id in ids {
        let r = env
            .admin(
                reqwest::Method::POST,
                &format!("/admin/api/providers/{id}/test"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        let text = r.text().await.unwrap();
        assert!(
            !leaks(&text) && text.contains("upstream_auth_error"),
            "{text}"
        );
    }
}

/// Known placeholders (what compose.yaml and the README shipped) and short
/// secrets stop every role that uses them before it connects to anything,
/// with a message that names the variable and not the value.
#[tokio::test]
async fn placeholder_and_short_secrets_are_refused_at_start() {
    let good = "3f9c2a7d1e84b6a05c1e7b9a2d4f4e08";
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "ingress",
            "AIGW_ADMIN_TOKEN",
            "change-me-admin-token",
            "placeholder",
        ),
        ("ingress", "AIGW_ADMIN_TOKEN", "s3cr3t-token", "too short"),
        (
            "ingress",
            "AIGW_MASTER_KEY",
            "change-me-to-a-long-random-string",
            "placeholder",
        ),
        (
            "dispatcher",
            "AIGW_MASTER_KEY",
            "a-long-random-string-that-encrypts-provider-keys",
            "placeholder",
        ),
        (
            "all",
            "AIGW_ADMIN_TOKEN",
            "choose-an-admin-token",
            "placeholder",
        ),
    ];
    for (role, var, value, why) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
        cmd.arg(role)
            .env("AIGW_LISTEN", "127.0.0.1:0")
            // Nothing listens there: a role that got past the check would
            // fail on connecting instead, with another message.
            .env("AIGW_DATABASE_URL", "postgres://postgres@127.0.0.1:9/aigw")
            .env("AIGW_NATS_URL", "nats://127.0.0.1:9")
            .env("AIGW_ADMIN_TOKEN", good)
            .env("AIGW_MASTER_KEY", good)
            .env(var, value)
            .env("AIGW_LOG", "warn")
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} {var}");
        assert!(
            stderr.contains(var) && stderr.contains(why) && !stderr.contains(value),
            "{role} {var}={value}: {stderr}"
        );
    }
}
