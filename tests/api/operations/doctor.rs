//! `aigw doctor` against a healthy deployment (exit 0) and broken ones
//! (exit 1, each problem named with its fix, no secret printed).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::{ADMIN_TOKEN, MASTER_KEY, Options, TestEnv, free_port, nats_server_binary};

struct Doctor {
    ok: bool,
    /// The screen (stdout).
    out: String,
    /// Logs (stderr): none unless asked for.
    err: String,
}

impl Doctor {
    /// The line of check `name`.
    fn line(&self, name: &str) -> &str {
        self.out
            .lines()
            .find(|l| l.get(8..).is_some_and(|rest| rest.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", self.out))
    }

    fn status(&self, name: &str) -> &str {
        self.line(name).split_whitespace().next().unwrap()
    }
}

/// Runs `aigw doctor` with exactly these settings.
async fn doctor(vars: &[(&str, &str)]) -> Doctor {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.arg("doctor").stdin(Stdio::null());
    for var in [
        "AIGW_LOG",
        "RUST_LOG",
        "AIGW_NATS_URL",
        "AIGW_DATABASE_URL",
        "AIGW_NAMESPACE",
        "AIGW_MASTER_KEY",
        "AIGW_MASTER_KEY_PREVIOUS",
        "AIGW_ADMIN_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "doctor took too long"
    );
    Doctor {
        ok: out.status.success(),
        out: String::from_utf8(out.stdout).unwrap(),
        err: String::from_utf8(out.stderr).unwrap(),
    }
}

fn settings(env: &TestEnv) -> Vec<(&str, &str)> {
    vec![
        ("AIGW_NATS_URL", env.common.nats_url.as_str()),
        ("AIGW_DATABASE_URL", env.common.database_url.as_str()),
        ("AIGW_NAMESPACE", env.common.namespace.as_str()),
        ("AIGW_MASTER_KEY", MASTER_KEY),
        ("AIGW_ADMIN_TOKEN", ADMIN_TOKEN),
    ]
}

fn with<'a>(
    mut vars: Vec<(&'a str, &'a str)>,
    var: &'a str,
    value: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vars.retain(|(k, _)| *k != var);
    vars.push((var, value));
    vars
}

fn assert_no_secret(d: &Doctor, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !d.out.contains(s) && !d.err.contains(s),
            "a secret is printed:\n{}{}",
            d.out,
            d.err
        );
    }
}

#[tokio::test]
async fn doctor_passes_a_healthy_deployment() {
    let env = TestEnv::start().await;
    env.add_provider("stored", "http://127.0.0.1:9/v1", &["m"])
        .await;
    let d = doctor(&settings(&env)).await;
    assert!(d.ok, "{}", d.out);
    for check in [
        "NATS ",
        "NATS version",
        "JetStream",
        "PostgreSQL",
        "Schema",
        "Master key",
        "Admin token",
        "Credentials",
    ] {
        assert_eq!(d.status(check), "ok", "{}", d.out);
    }
    assert!(d.line("NATS version").contains("2.1"), "{}", d.out);
    assert!(d.line("Credentials").contains("1 stored"), "{}", d.out);
    assert!(d.out.contains("No problems found."), "{}", d.out);
    assert_eq!(d.err, "", "one screen, no logs");
    assert_no_secret(&d, &[MASTER_KEY, ADMIN_TOKEN]);

    // Without the bootstrap token: a problem until an owner user exists.
    let vars: Vec<_> = settings(&env)
        .into_iter()
        .filter(|(k, _)| *k != "AIGW_ADMIN_TOKEN")
        .collect();
    assert_eq!(doctor(&vars).await.status("Admin token"), "FAIL");
    let owner = env
        .admin(reqwest::Method::POST, "/admin/api/users")
        .json(&serde_json::json!({"name": "Ada", "email": "ada@example.com", "roles": [{"role": "owner"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(owner.status(), 201);
    let d = doctor(&vars).await;
    assert!(d.ok, "{}", d.out);
    assert!(
        d.line("Admin token").contains("personal tokens"),
        "{}",
        d.out
    );
}

#[tokio::test]
async fn doctor_names_each_problem_and_its_fix_and_prints_no_secret() {
    let env = TestEnv::start().await;
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let short_key = "short-master-key-4f9a";
    let placeholder_token = "change-me-to-a-long-random-admin-token";
    let vars = with(settings(&env), "AIGW_NATS_URL", &nowhere);
    let vars = with(vars, "AIGW_MASTER_KEY", short_key);
    let vars = with(vars, "AIGW_ADMIN_TOKEN", placeholder_token);
    let d = doctor(&vars).await;
    assert!(!d.ok, "{}", d.out);
    assert_eq!(d.status("NATS "), "FAIL", "{}", d.out);
    // Named by host and port (a URL's credentials are never shown).
    assert!(
        d.line("NATS ")
            .contains(nowhere.trim_start_matches("nats://")),
        "{}",
        d.out
    );
    assert_eq!(d.status("NATS version"), "skip");
    assert_eq!(d.status("Master key"), "FAIL");
    assert!(
        d.line("Master key")
            .contains("AIGW_MASTER_KEY is too short")
    );
    assert_eq!(d.status("Admin token"), "FAIL");
    assert!(
        d.line("Admin token")
            .contains("AIGW_ADMIN_TOKEN is a placeholder")
    );
    // What still works is said to work.
    assert_eq!(d.status("PostgreSQL"), "ok");
    assert!(d.out.contains("fix: start nats-server"), "{}", d.out);
    assert!(d.out.contains("3 problems found."), "{}", d.out);
    assert_no_secret(&d, &[short_key, placeholder_token, "change-me"]);

    // Unset secrets are problems too.
    let vars: Vec<_> = settings(&env)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AIGW_MASTER_KEY") && *k != "AIGW_ADMIN_TOKEN")
        .collect();
    let d = doctor(&vars).await;
    assert!(!d.ok);
    assert!(
        d.line("Master key").contains("AIGW_MASTER_KEY is not set"),
        "{}",
        d.out
    );
    assert!(
        d.line("Admin token")
            .contains("AIGW_ADMIN_TOKEN is not set"),
        "{}",
        d.out
    );
    assert_eq!(d.status("Credentials"), "skip");
}

#[tokio::test]
async fn doctor_finds_credentials_sealed_under_another_master_key() {
    let env = TestEnv::start().await;
    env.add_provider("sealed-elsewhere", "http://127.0.0.1:9/v1", &["m"])
        .await;
    let other = "aigw-other-master-key-7d3e1b90c4a25f68e1d0";
    let d = doctor(&with(settings(&env), "AIGW_MASTER_KEY", other)).await;
    assert!(!d.ok, "{}", d.out);
    assert_eq!(d.status("Master key"), "ok");
    assert_eq!(d.status("Credentials"), "FAIL", "{}", d.out);
    assert!(
        d.line("Credentials").contains("sealed-elsewhere"),
        "{}",
        d.out
    );
    assert_no_secret(&d, &[other, MASTER_KEY]);
    // During a rotation, with the old key as the previous one: fine.
    let vars = with(settings(&env), "AIGW_MASTER_KEY", other);
    let d = doctor(&with(vars, "AIGW_MASTER_KEY_PREVIOUS", MASTER_KEY)).await;
    assert!(d.ok, "{}", d.out);
    assert!(
        d.line("Credentials").contains("aigw providers reseal"),
        "{}",
        d.out
    );
}

#[tokio::test]
async fn doctor_finds_a_server_without_jetstream_and_a_database_not_migrated() {
    let env = TestEnv::start().await;
    // A NATS server without -js, stopped with the test.
    let port = free_port();
    let mut plain = Command::new(nats_server_binary())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A database that exists but was never migrated.
    let run = std::env::var("AIGW_TEST_RUN").unwrap_or_else(|_| "local".into());
    let empty = format!("aigw_t_{run}_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE \"{empty}\""))
        .execute(&env.pool)
        .await
        .unwrap();
    let nats_url = format!("nats://127.0.0.1:{port}");
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{empty}");
    let vars = with(settings(&env), "AIGW_NATS_URL", &nats_url);
    let d = doctor(&with(vars, "AIGW_DATABASE_URL", &db_url)).await;
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(!d.ok, "{}", d.out);
    assert_eq!(d.status("NATS "), "ok", "{}", d.out);
    assert_eq!(d.status("NATS version"), "ok");
    assert_eq!(d.status("JetStream"), "FAIL");
    assert!(
        d.out.contains("fix: start nats-server with -js"),
        "{}",
        d.out
    );
    assert_eq!(d.status("PostgreSQL"), "ok");
    assert_eq!(d.status("Schema"), "FAIL");
    assert!(d.line("Schema").contains("0001"), "{}", d.out);
    assert!(d.out.contains("fix: run `aigw migrate`"), "{}", d.out);
    // It changed nothing: still no schema.
    let d = doctor(&with(settings(&env), "AIGW_DATABASE_URL", &db_url)).await;
    assert_eq!(d.status("Schema"), "FAIL", "{}", d.out);
}

#[tokio::test]
async fn doctor_finds_a_schema_aigw_would_refuse() {
    let env = TestEnv::start().await;
    // A migration changed since it was applied.
    let original: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let set_checksum = |sum: Vec<u8>| {
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
            .bind(sum)
            .execute(&env.pool)
    };
    set_checksum(vec![0]).await.unwrap();
    let d = doctor(&settings(&env)).await;
    assert!(!d.ok);
    assert_eq!(d.status("Schema"), "FAIL", "{}", d.out);
    assert!(
        d.line("Schema")
            .contains("changed since they were applied (0001)"),
        "{}",
        d.out
    );
    // One applied by a newer aigw.
    set_checksum(original).await.unwrap();
    assert!(doctor(&settings(&env)).await.ok);
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let d = doctor(&settings(&env)).await;
    assert!(!d.ok);
    assert!(
        d.line("Schema")
            .contains("migrations 9999 come from a newer aigw"),
        "{}",
        d.out
    );
}

#[tokio::test]
async fn doctor_checks_the_host_aigw_would_use_of_a_host_list() {
    let dead = free_port();
    let env = TestEnv::with(Options {
        database_hosts: Some(format!("127.0.0.1:{dead},127.0.0.1:5432")),
        ..Options::default()
    })
    .await;
    let d = doctor(&settings(&env)).await;
    assert!(d.ok, "{}", d.out);
    assert_eq!(d.status("PostgreSQL"), "ok", "{}", d.out);
    assert_eq!(d.status("Schema"), "ok", "{}", d.out);

    let url = env
        .common
        .database_url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", free_port()));
    let d = doctor(&with(settings(&env), "AIGW_DATABASE_URL", &url)).await;
    assert!(!d.ok);
    assert_eq!(d.status("PostgreSQL"), "FAIL", "{}", d.out);
    assert!(
        d.line("PostgreSQL").contains("no host is read-write"),
        "{}",
        d.out
    );
}
