//! Configuration as code: `aigw config plan|apply|export` (the real binary)
//! and `AIGW_CONFIG` at start, against real NATS and PostgreSQL: the plan
//! shows exactly the changes, applying twice changes nothing, export then
//! apply is a no-op, an invalid file changes nothing and lists every
//! problem with its line, environment references resolve (a missing one is
//! a problem), `--prune` removes what the file no longer declares, and
//! replicas starting together with the same file apply it once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{ADMIN_TOKEN, MASTER_KEY, TestEnv, completion, free_port, user, wait_until};

struct Run {
    ok: bool,
    out: String,
    err: String,
}

/// Runs `aigw config <args>` against `env` with exactly these extra
/// environment variables.
async fn aigw_config(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.arg("config").args(args).stdin(Stdio::null());
    for var in [
        "AIGW_LOG",
        "RUST_LOG",
        "AIGW_ADMIN_TOKEN",
        "AIGW_CONFIG",
        "AIGW_CONFIG_PRUNE",
        "AIGW_MASTER_KEY_PREVIOUS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AIGW_NATS_URL", &env.common.nats_url)
        .env("AIGW_DATABASE_URL", &env.common.database_url)
        .env("AIGW_NAMESPACE", &env.common.namespace)
        .env("AIGW_MASTER_KEY", MASTER_KEY);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        ok: out.status.success(),
        out: String::from_utf8(out.stdout).unwrap(),
        err: String::from_utf8(out.stderr).unwrap(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("aigw-config-test-{}", Uuid::now_v7().simple()))
}

/// Configuration events so far: (aggregate type, event type, actor).
async fn config_events(env: &TestEnv) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT aggregate_type, event_type, COALESCE(metadata->>'actor', '') FROM events
         WHERE aggregate_type IN ('provider', 'alias', 'key') ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn admin_list(env: &TestEnv, what: &str) -> Vec<Value> {
    let body: Value = env
        .admin(reqwest::Method::GET, &format!("/admin/api/{what}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"].as_array().unwrap().clone()
}

fn file_text(upstream: &str, rpm: u32, price: f64, with_alias: bool) -> String {
    let budget = if rpm > 60 { 7.5 } else { 5.0 };
    let mut text = format!(
        r#"# A deployment's configuration.
[providers.deepseek]
preset = "deepseek"
base_url = "{upstream}"
api_key = "${{CFG_DEEPSEEK_KEY}}"

[providers.local]
base_url = "{upstream}/v1"
models = ["llama-3.1-8b"]
max_concurrency = 4
[providers.local.prices."llama-3.1-8b"]
input_usd_per_mtok = {price}
output_usd_per_mtok = 0.2

[keys.app]
owner = "team-a"
rpm = {rpm}
budget_usd = {budget}
budget_period = "monthly"
allowed_models = ["fast", "llama-3.1-8b"]
"#
    );
    if with_alias {
        text.push_str(
            r#"
[aliases.fast]
strategy = "priority"
targets = [
  { provider = "deepseek", model = "deepseek-v4-flash" },
  { provider = "local", model = "llama-3.1-8b" },
]
"#,
        );
    }
    text
}

/// Waits until the running ingress lists `n` of `what`.
async fn seen(env: &TestEnv, what: &str, n: usize) {
    wait_until(Duration::from_secs(10), || async {
        admin_list(env, what).await.len() == n
    })
    .await;
}

/// The plan's lines without the indented details.
fn headlines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.starts_with("    ")).collect()
}

#[tokio::test]
async fn plan_apply_twice_prune_and_the_configured_gateway_serves() {
    let env = TestEnv::start().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header("authorization", "Bearer sk-from-the-environment"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "deepseek-v4-flash",
            "hi",
            5,
            2,
        )))
        .expect(1)
        .mount(&upstream)
        .await;
    let dir = temp_dir();
    let file = write(
        &dir,
        "aigw.toml",
        &file_text(&upstream.uri(), 60, 0.1, true),
    );
    let f = file.to_str().unwrap();
    let secret = [("CFG_DEEPSEEK_KEY", "sk-from-the-environment")];

    // The plan says exactly what will be created, and changes nothing.
    let plan = aigw_config(&env, &["plan", "-f", f], &secret).await;
    assert!(plan.ok, "{}{}", plan.out, plan.err);
    assert_eq!(
        headlines(&plan.out),
        [
            "+ provider deepseek (preset deepseek, 3 model(s))",
            &format!("+ provider local ({}/v1, 1 model(s))", upstream.uri()),
            "+ alias fast (priority, 2 target(s))",
            "+ key \"app\"",
            "4 to create, 0 to update, 0 to remove.",
        ]
    );
    assert!(!plan.out.contains("sk-from"), "{}", plan.out);
    assert!(config_events(&env).await.is_empty());

    // Applied: the admin API's events, with the file as their actor.
    let applied = aigw_config(&env, &["apply", "-f", f], &secret).await;
    assert!(applied.ok, "{}{}", applied.out, applied.err);
    let events = config_events(&env).await;
    let actor = format!("config:{f}");
    let mut kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|(a, e, who)| {
            assert_eq!(who, &actor);
            (a.as_str(), e.as_str())
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("alias", "AliasDefined"),
            ("key", "KeyIssued"),
            ("provider", "ProviderConfigured"),
            ("provider", "ProviderConfigured"),
        ]
    );
    assert!(
        applied.out.contains("key \"app\" issued as"),
        "{}",
        applied.out
    );
    // Running replicas hear of the changes from the CLI's announcements.
    seen(&env, "keys", 1).await;
    seen(&env, "providers", 2).await;
    let keys = admin_list(&env, "keys").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["limits"]["rpm"], 60);
    assert_eq!(keys[0]["limits"]["budget_usd"], 5.0);
    assert_eq!(keys[0]["owner"], "team-a");
    let providers = admin_list(&env, "providers").await;
    let local = providers.iter().find(|p| p["name"] == "local").unwrap();
    assert_eq!(local["max_concurrency"], 4);
    assert_eq!(local["prices"]["llama-3.1-8b"]["input_usd_per_mtok"], 0.1);

    // Twice: nothing to do, no event.
    let again = aigw_config(&env, &["apply", "-f", f], &secret).await;
    assert!(again.ok, "{}{}", again.out, again.err);
    assert!(again.out.starts_with("No changes"), "{}", again.out);
    assert_eq!(config_events(&env).await.len(), 4);

    // The configured gateway serves: the credential came from the
    // environment, the key's secret from a rotation.
    let key_id = keys[0]["id"].as_str().unwrap();
    let rotated: Value = env
        .admin(
            reqwest::Method::POST,
            &format!("/admin/api/keys/{key_id}/rotate"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = env
        .chat(
            rotated["key"].as_str().unwrap(),
            json!({"model": "fast", "messages": user("hello")}),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // A changed file: exactly its changes, the alias left alone unless
    // pruned, and something made through the API too.
    env.add_key("made-by-hand").await;
    let changed = write(
        &dir,
        "aigw.toml",
        &file_text(&upstream.uri(), 120, 0.3, false),
    );
    let plan = aigw_config(&env, &["plan", "-f", f], &secret).await;
    assert!(plan.ok, "{}{}", plan.out, plan.err);
    assert_eq!(
        plan.out.lines().collect::<Vec<_>>(),
        [
            "~ provider local",
            "    prices.llama-3.1-8b.input_usd_per_mtok: 0.1 -> 0.3",
            "~ key \"app\"",
            "    limits.budget_usd: 5.0 -> 7.5",
            "    limits.rpm: 60 -> 120",
            "0 to create, 2 to update, 0 to remove.",
            &format!(
                "Not in {}, left as they are (--prune removes them): alias fast, key \"made-by-hand\".",
                changed.display()
            ),
        ]
    );
    let before = config_events(&env).await.len();
    let pruned = aigw_config(&env, &["apply", "-f", f, "--prune"], &secret).await;
    assert!(pruned.ok, "{}{}", pruned.out, pruned.err);
    assert_eq!(
        headlines(&pruned.out),
        [
            "~ provider local",
            "~ key \"app\"",
            "- alias fast",
            "- key \"made-by-hand\" (revoked)",
            "0 to create, 2 to update, 2 to remove.",
        ]
    );
    assert_eq!(config_events(&env).await.len(), before + 4);
    seen(&env, "aliases", 0).await;
    // The running ingress learns of the revocation within a second.
    wait_until(Duration::from_secs(10), || async {
        admin_list(&env, "keys")
            .await
            .iter()
            .any(|k| k["name"] == "made-by-hand" && k["status"] == "revoked")
    })
    .await;
    let after = aigw_config(&env, &["apply", "-f", f, "--prune"], &secret).await;
    assert!(after.out.starts_with("No changes"), "{}", after.out);
    assert_eq!(config_events(&env).await.len(), before + 4);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn export_then_apply_is_a_no_op_and_secrets_stay_out() {
    let env = TestEnv::start().await;
    for body in [
        json!({"preset": "deepseek", "api_key": "sk-deepseek-secret",
               "prices": {"deepseek-v4-pro": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.0}}}),
        json!({"name": "my-vllm", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-vllm-secret",
               "api_keys": ["sk-vllm-second"], "models": ["qwen-3", "llama-3.1-8b"],
               "prices": {"qwen-3": {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.4,
                                      "cached_input_usd_per_mtok": 0.05}}}),
        json!({"name": "ollama", "base_url": "http://127.0.0.1:11434/v1", "models": ["llama3"]}),
    ] {
        let r = env
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/aliases")
        .json(
            &json!({"name": "cheap", "strategy": "weighted", "targets": [
            {"provider": "my-vllm", "model": "qwen-3", "weight": 3},
            {"provider": "deepseek", "model": "deepseek-v4-flash", "weight": 1}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A key's project and alert thresholds are not in the file: applying
    // the export must keep them, not reset them.
    let team: Value = env
        .admin(reqwest::Method::POST, "/admin/api/teams")
        .json(&json!({"name": "finance"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project: Value = env
        .admin(reqwest::Method::POST, "/admin/api/projects")
        .json(&json!({"name": "invoices", "team_id": team["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = env
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "billing service", "owner": "finance", "rpm": 30, "tpm": 90000,
                      "project_id": project["id"], "alert_thresholds": [25, 75],
                      "budget_usd": 12.345678, "budget_tokens": 1000000, "budget_period": "daily",
                      "max_concurrency": 3, "allowed_models": ["cheap"], "allowed_providers": ["my-vllm"],
                      "expires_at": "2030-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    env.add_key("plain").await;

    let exported = aigw_config(&env, &["export"], &[]).await;
    assert!(exported.ok, "{}{}", exported.out, exported.err);
    let text = exported.out;
    for secret in [
        "sk-deepseek-secret",
        "sk-vllm-secret",
        "sk-vllm-second",
        "aig_",
    ] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    for reference in [
        "api_key = \"${DEEPSEEK_API_KEY}\"",
        "api_key = \"${MY_VLLM_API_KEY}\"",
        "api_keys = [\"${MY_VLLM_API_KEY_2}\"]",
    ] {
        assert!(text.contains(reference), "{reference} not in:\n{text}");
    }
    // The preset is written as the preset plus what differs from it.
    assert!(
        text.contains("[providers.deepseek.prices.deepseek-v4-pro]"),
        "{text}"
    );
    assert!(!text.contains("deepseek-v4-flash]"), "{text}");

    let dir = temp_dir();
    let file = write(&dir, "exported.toml", &text);
    let f = file.to_str().unwrap();
    let secrets = [
        ("DEEPSEEK_API_KEY", "sk-deepseek-secret"),
        ("MY_VLLM_API_KEY", "sk-vllm-secret"),
        ("MY_VLLM_API_KEY_2", "sk-vllm-second"),
    ];
    let events = config_events(&env).await.len();
    let plan = aigw_config(&env, &["plan", "-f", f, "--prune"], &secrets).await;
    assert!(plan.ok, "{}{}", plan.out, plan.err);
    assert_eq!(
        plan.out,
        format!("No changes: the running state matches {f}.\n")
    );
    let applied = aigw_config(&env, &["apply", "-f", f, "--prune"], &secrets).await;
    assert!(applied.ok, "{}{}", applied.out, applied.err);
    assert_eq!(config_events(&env).await.len(), events);
    let keys = admin_list(&env, "keys").await;
    let billing = keys
        .iter()
        .find(|k| k["name"] == "billing service")
        .unwrap();
    assert_eq!(billing["project_id"], project["id"], "{billing}");
    assert_eq!(billing["limits"]["alert_thresholds"], json!([25, 75]));

    // A different secret in the environment is a change, never shown.
    let rotated = [
        ("DEEPSEEK_API_KEY", "sk-deepseek-rotated"),
        ("MY_VLLM_API_KEY", "sk-vllm-secret"),
        ("MY_VLLM_API_KEY_2", "sk-vllm-second"),
    ];
    let plan = aigw_config(&env, &["plan", "-f", f], &rotated).await;
    assert_eq!(
        plan.out.lines().take(2).collect::<Vec<_>>(),
        ["~ provider deepseek", "    credential: changed (not shown)"],
        "{}",
        plan.out
    );
    assert!(!plan.out.contains("sk-"), "{}", plan.out);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_lists_every_problem() {
    let env = TestEnv::start().await;
    let dir = temp_dir();
    // Problems of the file's shape: all listed, each with its line.
    let shape = write(
        &dir,
        "shape.toml",
        r#"[providers.deepseek]
preset = "deepseek"
api_key = "sk-inline-secret-value"

[providers.local]
base_url = "http://127.0.0.1:9/v1"
models = "llama"
colour = "blue"

[keys.app]
rpm = "sixty"

[teams.research]
budget_usd = 10
"#,
    );
    let run = aigw_config(&env, &["apply", "-f", shape.to_str().unwrap()], &[]).await;
    assert!(!run.ok);
    let s = shape.display();
    for expected in [
        format!("{s}:3: providers.deepseek.api_key: secrets are never written in the file"),
        format!("{s}:7: providers.local.models: "),
        format!("{s}:8: providers.local.colour: unknown field"),
        format!("{s}:11: keys.app.rpm: "),
        format!("{s}:13: teams: teams do not exist in aigw yet"),
    ] {
        assert!(
            run.err.contains(&expected),
            "{expected:?} not in:\n{}",
            run.err
        );
    }
    assert!(!run.err.contains("sk-inline"), "{}", run.err);

    // Problems of its content, checked as the admin API checks them,
    // environment references included: all listed, nothing applied, even
    // the entries that were fine.
    let content = write(
        &dir,
        "content.toml",
        r#"[providers.good]
base_url = "http://127.0.0.1:9/v1"
models = ["m"]

[providers.deepseek]
preset = "deepseek"
api_key = "${CFG_TEST_UNSET_VARIABLE}"

[providers.nowhere]
preset = "no-such-preset"
api_key = "${CFG_TEST_SET}"

[aliases.fast]
targets = [{ provider = "missing", model = "m" }]

[keys.app]
rpm = 0
"#,
    );
    let c = content.display();
    let vars = [("CFG_TEST_SET", "sk-set")];
    for command in ["plan", "apply"] {
        let run = aigw_config(&env, &[command, "-f", content.to_str().unwrap()], &vars).await;
        assert!(!run.ok, "{command}");
        for expected in [
            format!(
                "{c}:7: providers.deepseek.api_key: the environment variable CFG_TEST_UNSET_VARIABLE is not set"
            ),
            format!("{c}:10: providers.nowhere"),
            format!("{c}:13: aliases.fast: target provider \"missing\" does not exist"),
            format!("{c}:17: keys.app.rpm: 'rpm' must be positive"),
        ] {
            assert!(
                run.err.contains(&expected),
                "{expected:?} not in:\n{}",
                run.err
            );
        }
        assert!(run.err.contains("nothing was applied"), "{}", run.err);
    }
    assert!(config_events(&env).await.is_empty());
    assert!(admin_list(&env, "providers").await.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// `aigw ingress` processes, killed when dropped.
struct Replicas(Vec<std::process::Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn aigw_config_at_start_applies_once_across_replicas() {
    let env = TestEnv::start().await;
    let dir = temp_dir();
    let file = write(
        &dir,
        "aigw.toml",
        &file_text("http://127.0.0.1:9", 60, 0.1, true),
    );
    let actor = format!("config:{}", file.display());
    // Three replicas start at once with the same file (and the secret it
    // refers to in their environment).
    let mut replicas = Replicas(Vec::new());
    let mut bases = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_aigw"))
            .arg("ingress")
            .env_remove("AIGW_CONFIG_PRUNE")
            .env("AIGW_LISTEN", format!("127.0.0.1:{port}"))
            .env("AIGW_NATS_URL", &env.common.nats_url)
            .env("AIGW_DATABASE_URL", &env.common.database_url)
            .env("AIGW_NAMESPACE", &env.common.namespace)
            .env("AIGW_MASTER_KEY", MASTER_KEY)
            .env("AIGW_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AIGW_REQUESTS_MAX_BYTES", "0")
            .env("AIGW_JOBS_MAX_BYTES", "0")
            .env("AIGW_LOG", "warn")
            .env("AIGW_CONFIG", &file)
            .env("CFG_DEEPSEEK_KEY", "sk-at-start")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        replicas.0.push(child);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        env.wait_ready(base).await;
    }
    let events = config_events(&env).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|(_, _, who)| *who == actor), "{events:?}");
    seen(&env, "providers", 2).await;
    seen(&env, "keys", 1).await;

    // A replica whose file is invalid does not start.
    let bad = write(&dir, "bad.toml", "[providers.x]\napi_key = \"inline\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .arg("ingress")
        .env("AIGW_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("AIGW_NATS_URL", &env.common.nats_url)
        .env("AIGW_DATABASE_URL", &env.common.database_url)
        .env("AIGW_NAMESPACE", &env.common.namespace)
        .env("AIGW_MASTER_KEY", MASTER_KEY)
        .env("AIGW_REQUESTS_MAX_BYTES", "0")
        .env("AIGW_JOBS_MAX_BYTES", "0")
        .env("AIGW_CONFIG", &bad)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:2: providers.x.api_key", bad.display())),
        "{err}"
    );
    assert_eq!(config_events(&env).await.len(), 4);
    drop(replicas);
    let _ = std::fs::remove_dir_all(dir);
}
