//! `aigw doctor`: checks, in one screen, what aigw needs to run (NATS 2.10
//! or newer with JetStream, PostgreSQL with this binary's schema, the master
//! key and the admin token under the secret rule, the stored provider
//! credentials opening with the master key) and says how to fix what is
//! wrong.
//!
//! Invariants: it changes nothing (no database, schema or stream is
//! created); it never prints a secret (URLs are redacted, a secret's check
//! names its variable, never its value); every check is bounded in time, so
//! an unreachable server is a failed check, never a hang.

use std::fmt::Write as _;
use std::time::Duration;

use aigw_runtime::config::{self, MIN_SECRET_CHARS};
use aigw_runtime::crypto::{Binding, Sealer, sealed_fields};
use aigw_runtime::nats::{self, MIN_SERVER, ServerUnfit};
use aigw_runtime::{CommonArgs, Registry, db};
use secrecy::SecretString;
use sqlx::ConnectOptions as _;
use sqlx::Connection as _;

/// Longest wait for one server to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Oldest PostgreSQL aigw supports (`server_version_num`).
const MIN_POSTGRES: i32 = 130_000;
const PG_FIX: &str =
    "start PostgreSQL 13+, or set AIGW_DATABASE_URL (user, password, host, port, database)";

/// One line of the report.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
}

#[derive(Debug)]
pub enum Verdict {
    Ok(String),
    /// What is wrong, and how to fix it.
    Problem {
        what: String,
        fix: Option<String>,
    },
    /// Not checked, because an earlier check failed.
    Skipped(String),
}

impl Check {
    fn ok(name: &'static str, what: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Ok(what.into()),
        }
    }

    fn problem(name: &'static str, what: impl Into<String>, fix: Option<&str>) -> Self {
        Self {
            name,
            verdict: Verdict::Problem {
                what: what.into(),
                fix: fix.map(str::to_string),
            },
        }
    }

    fn skipped(name: &'static str, why: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Skipped(why.into()),
        }
    }
}

/// Every check, in the order shown.
#[derive(Debug)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Problem { .. }))
            .count()
    }

    /// The screen: one line per check (a problem's fix on the next), then
    /// the verdict.
    pub fn render(&self, version: &str) -> String {
        let mut out = format!("aigw doctor: aigw {version}\n");
        for check in &self.checks {
            let (mark, text, fix) = match &check.verdict {
                Verdict::Ok(text) => ("ok", text.as_str(), None),
                Verdict::Problem { what, fix } => ("FAIL", what.as_str(), fix.as_deref()),
                Verdict::Skipped(why) => ("skip", why.as_str(), None),
            };
            let _ = writeln!(out, "  {mark:<5} {:<14}{text}", check.name);
            if let Some(fix) = fix {
                let _ = writeln!(out, "  {:<5} {:<14}fix: {fix}", "", "");
            }
        }
        let _ = match self.problems() {
            0 => writeln!(out, "No problems found."),
            1 => writeln!(out, "1 problem found."),
            n => writeln!(out, "{n} problems found."),
        };
        out
    }
}

/// Runs every check against the configured NATS, PostgreSQL and secrets.
pub async fn diagnose(common: &CommonArgs, admin_token: Option<&SecretString>) -> Report {
    let mut checks = nats_checks(&common.nats_url).await;
    let (mut database, pool) = database_checks(&common.database_url).await;
    checks.append(&mut database);
    let sealer = common.sealer();
    checks.push(match (&sealer, &common.master_key) {
        (Err(e), _) => Check::problem("Master key", e.to_string(), None),
        (Ok(_), None) => Check::problem(
            "Master key",
            "AIGW_MASTER_KEY is not set: providers with an API key cannot be added or used",
            Some("set AIGW_MASTER_KEY to a random string (`openssl rand -hex 32`) and keep it: it decrypts the stored credentials"),
        ),
        (Ok(_), Some(_)) => Check::ok(
            "Master key",
            format!("AIGW_MASTER_KEY is set ({MIN_SECRET_CHARS}+ random characters)"),
        ),
    });
    // Without the bootstrap token, an owner user's personal token is the way in.
    let owner = match &pool {
        Some(pool) => aigw_runtime::users::owner_exists(pool)
            .await
            .unwrap_or(false),
        None => false,
    };
    checks.push(match admin_token {
        None if owner => Check::ok(
            "Admin token",
            "AIGW_ADMIN_TOKEN is not set: admin users sign in with their personal tokens",
        ),
        None => Check::problem(
            "Admin token",
            "AIGW_ADMIN_TOKEN is not set and no owner user exists: the admin API and UI are disabled (403)",
            Some("set AIGW_ADMIN_TOKEN to a random string (`openssl rand -hex 32`)"),
        ),
        Some(token) => match config::check_secret("AIGW_ADMIN_TOKEN", token) {
            Ok(()) => Check::ok(
                "Admin token",
                format!("AIGW_ADMIN_TOKEN is set ({MIN_SECRET_CHARS}+ random characters)"),
            ),
            Err(e) => Check::problem("Admin token", e.to_string(), None),
        },
    });
    checks.push(match (pool, sealer) {
        (None, _) => Check::skipped("Credentials", "not checked (no current schema)"),
        (Some(pool), Ok(sealer)) if sealer.is_configured() => {
            credentials_check(pool, &sealer).await
        }
        (Some(_), _) => Check::skipped("Credentials", "not checked (no usable master key)"),
    });
    Report { checks }
}

/// Reachable, version, JetStream.
async fn nats_checks(url: &str) -> Vec<Check> {
    let seeds = match nats::seeds(url) {
        Ok(seeds) => seeds,
        Err(e) => {
            return vec![
                Check::problem(
                    "NATS",
                    e.to_string(),
                    Some(
                        "set AIGW_NATS_URL to nats://host:port, or a comma-separated list of them",
                    ),
                ),
                Check::skipped("NATS version", "not checked (no connection)"),
                Check::skipped("JetStream", "not checked (no connection)"),
            ];
        }
    };
    let shown = nats::describe(&seeds);
    let connect = async_nats::ConnectOptions::new()
        .name("aigw-doctor")
        .connection_timeout(TIMEOUT)
        .connect(seeds);
    let unreachable = |e: String| {
        vec![
            Check::problem(
                "NATS",
                format!("cannot connect to {shown}: {e}"),
                Some(
                    "start nats-server 2.10+ with JetStream (`nats-server -js -sd <dir>`; scripts/run starts one), or point AIGW_NATS_URL at yours",
                ),
            ),
            Check::skipped("NATS version", "not checked (no connection)"),
            Check::skipped("JetStream", "not checked (no connection)"),
        ]
    };
    let client = match tokio::time::timeout(TIMEOUT * 2, connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return unreachable(e.to_string()),
        Err(_) => return unreachable(format!("no answer within {}s", (TIMEOUT * 2).as_secs())),
    };
    let version = client.server_info().version;
    let needed = format!("{}.{} or newer needed", MIN_SERVER.0, MIN_SERVER.1);
    let reachable = Check::ok("NATS", format!("{shown} is reachable"));
    let checked = tokio::time::timeout(TIMEOUT, nats::check_server(&client)).await;
    let checks = match checked {
        Ok(Ok(_)) => vec![
            reachable,
            Check::ok("NATS version", format!("{version} ({needed})")),
            Check::ok("JetStream", "enabled"),
        ],
        Ok(Err(ServerUnfit::TooOld { version })) => vec![
            reachable,
            Check::problem(
                "NATS version",
                format!("{version} is too old ({needed})"),
                Some("upgrade nats-server (scripts/run installs a current one into .tools/)"),
            ),
            Check::skipped("JetStream", "not checked (server too old)"),
        ],
        Ok(Err(ServerUnfit::NoJetStream { detail })) => vec![
            reachable,
            Check::ok("NATS version", format!("{version} ({needed})")),
            Check::problem(
                "JetStream",
                format!("not enabled: {detail}"),
                Some("start nats-server with -js and a store directory (-sd <dir>)"),
            ),
        ],
        Err(_) => vec![
            reachable,
            Check::ok("NATS version", format!("{version} ({needed})")),
            Check::problem(
                "JetStream",
                format!("no answer within {}s", TIMEOUT.as_secs()),
                Some("start nats-server with -js and a store directory (-sd <dir>)"),
            ),
        ],
    };
    drop(client);
    checks
}

/// Reachable and recent enough, and the schema; the pool when the schema
/// is current (for the credentials' check).
async fn database_checks(url: &str) -> (Vec<Check>, Option<sqlx::PgPool>) {
    let shown = db::redact(url);
    let unreachable = |what: String, fix: &str| {
        let checks = vec![
            Check::problem("PostgreSQL", what, Some(fix)),
            Check::skipped("Schema", "not checked (no connection)"),
        ];
        (checks, None)
    };
    // One connection first: it fails with the real cause (a pool only
    // says it timed out).
    let list = match aigw_runtime::pg_hosts::parse(url) {
        Ok(list) => list,
        Err(e) => return unreachable(e.to_string(), "fix AIGW_DATABASE_URL"),
    };
    // A host list: the host aigw would use.
    let host = match aigw_runtime::pg_hosts::pick(&list.hosts, list.attrs).await {
        Ok(i) => list.hosts[i].clone(),
        Err(e) => return unreachable(format!("{shown}: {e}"), PG_FIX),
    };
    let first = tokio::time::timeout(TIMEOUT * 2, async {
        let mut conn = host.connect().await?;
        let version: (i32, String) = sqlx::query_as(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
        )
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(version)
    })
    .await;
    let (version_num, version) = match first {
        Ok(Ok(version)) => version,
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("3D000") => {
            return unreachable(
                format!("{shown}: the database does not exist"),
                "run `aigw migrate` (starting aigw also creates it)",
            );
        }
        Ok(Err(e)) => {
            return unreachable(format!("cannot connect to {shown}: {e}"), PG_FIX);
        }
        Err(_) => {
            let secs = (TIMEOUT * 2).as_secs();
            return unreachable(
                format!("cannot connect to {shown}: no answer within {secs}s"),
                PG_FIX,
            );
        }
    };
    let pool = match db::connect(url, 1).await {
        Ok(pool) => pool,
        Err(e) => return unreachable(format!("cannot connect to {shown}: {e}"), PG_FIX),
    };
    let mut checks = vec![if version_num < MIN_POSTGRES {
        Check::problem(
            "PostgreSQL",
            format!("{shown} is PostgreSQL {version}: aigw needs 13 or newer"),
            Some("upgrade PostgreSQL"),
        )
    } else {
        Check::ok(
            "PostgreSQL",
            format!("{shown} is reachable (server {version})"),
        )
    }];
    let schema = match db::schema_status(&pool).await {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check::problem(
                "Schema",
                format!("cannot read it: {e}"),
                None,
            ));
            return (checks, None);
        }
    };
    let list = |v: &[i64]| {
        v.iter()
            .map(|n| format!("{n:04}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let schema_ok = schema.is_current();
    checks.push(if schema_ok {
        Check::ok("Schema", "up to date")
    } else if !schema.modified.is_empty() || !schema.failed.is_empty() {
        Check::problem(
            "Schema",
            format!(
                "migrations changed since they were applied ({}) or left unfinished ({}): aigw refuses to start",
                list(&schema.modified),
                list(&schema.failed)
            ),
            Some("run the aigw release that applied them, or restore its migrations/ files"),
        )
    } else if !schema.unknown.is_empty() {
        Check::problem(
            "Schema",
            format!(
                "migrations {} come from a newer aigw: this one refuses to start",
                list(&schema.unknown)
            ),
            Some("run the newer aigw"),
        )
    } else {
        Check::problem(
            "Schema",
            format!("migrations {} are not applied yet", list(&schema.pending)),
            Some("run `aigw migrate` (starting aigw also applies them)"),
        )
    });
    (checks, schema_ok.then_some(pool))
}

/// Whether every stored provider credential opens with the master key (or
/// the previous one, during a rotation).
async fn credentials_check(pool: sqlx::PgPool, sealer: &Sealer) -> Check {
    let registry = match Registry::load(pool).await {
        Ok(r) => r,
        Err(e) => {
            return Check::problem("Credentials", format!("cannot read providers: {e}"), None);
        }
    };
    let (mut current, mut previous, mut failed) = (0, 0, Vec::new());
    for provider in registry.providers() {
        for (field, sealed) in sealed_fields(&provider.spec) {
            match sealer.open_checked(sealed, &Binding::new(provider.id, field)) {
                Ok(opened) if opened.current => current += 1,
                Ok(_) => previous += 1,
                Err(_) => failed.push(provider.spec.name.clone()),
            }
        }
    }
    failed.dedup();
    if !failed.is_empty() {
        return Check::problem(
            "Credentials",
            format!(
                "the credentials of {} do not open with AIGW_MASTER_KEY: it is not the key they were sealed under",
                failed.join(", ")
            ),
            Some(
                "set AIGW_MASTER_KEY to the key they were sealed under (to change keys, see \"Secrets and rotating the master key\" in README.md)",
            ),
        );
    }
    if previous > 0 {
        return Check::ok(
            "Credentials",
            format!(
                "{current} open with AIGW_MASTER_KEY, {previous} with AIGW_MASTER_KEY_PREVIOUS (run `aigw providers reseal` to finish the rotation)"
            ),
        );
    }
    Check::ok(
        "Credentials",
        format!("{current} stored credential(s) open with AIGW_MASTER_KEY"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_counted_and_shown_with_its_fix() {
        let report = Report {
            checks: vec![
                Check::ok("NATS", "reachable"),
                Check::problem("Schema", "0008 not applied", Some("run `aigw migrate`")),
                Check::skipped("Credentials", "not checked"),
            ],
        };
        assert_eq!(report.problems(), 1);
        let screen = report.render("0.1.0 (commit abc)");
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines[0], "aigw doctor: aigw 0.1.0 (commit abc)");
        assert!(lines[1].starts_with("  ok    NATS"));
        assert!(lines[2].starts_with("  FAIL  Schema") && lines[2].ends_with("0008 not applied"));
        assert!(lines[3].trim_start().starts_with("fix: run `aigw migrate`"));
        assert!(lines[4].starts_with("  skip  Credentials"));
        assert_eq!(lines[5], "1 problem found.");
    }
}
