//! PostgreSQL: create the database if missing, connect, migrate the schema,
//! and tell how a database's schema compares with this binary's migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::{Result, RuntimeError, pg_hosts};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in `url` if it does not exist yet, on the
/// first host of its list that fits (see [`pg_hosts`]). Safe to run from
/// several processes at once.
pub async fn ensure_database(url: &str) -> Result<()> {
    let list = pg_hosts::parse(url)?;
    let name = list.hosts[0]
        .get_database()
        .ok_or_else(|| RuntimeError::Config(format!("no database name in {}", redact(url))))?
        .to_string();
    let maintenance: Vec<PgConnectOptions> = list
        .hosts
        .iter()
        .map(|o| o.clone().database("postgres"))
        .collect();
    let host = pg_hosts::pick(&maintenance, list.attrs).await?;
    let mut admin = maintenance[host].connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&create).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another replica won the race: duplicate_database, or the unique
            // index on pg_database.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// A connection pool to the database in `url`: one host, or a libpq-style
/// host list with `target_session_attrs`, followed across failovers
/// ([`pg_hosts`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let list = pg_hosts::parse(url)?;
    let options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10));
    pg_hosts::connect(list, options).await
}

/// Applies every pending migration; concurrent callers wait on an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// How a database's schema compares with the migrations built into this
/// binary, by migration version. All empty: up to date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Built in, not applied yet (`aigw migrate`, or any role's start,
    /// applies them).
    pub pending: Vec<i64>,
    /// Applied, but changed since: every role refuses to start.
    pub modified: Vec<i64>,
    /// Started and never finished.
    pub failed: Vec<i64>,
    /// Applied by a newer aigw than this one.
    pub unknown: Vec<i64>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        *self == Self::default()
    }
}

/// Reads which migrations `pool`'s database has applied, changing nothing.
pub async fn schema_status(pool: &PgPool) -> Result<SchemaStatus> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let applied: Vec<(i64, Vec<u8>, bool)> = if has_table {
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let mut status = SchemaStatus::default();
    for m in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            None => status.pending.push(m.version),
            Some((_, _, false)) => status.failed.push(m.version),
            Some((_, sum, true)) if sum.as_slice() != &*m.checksum => {
                status.modified.push(m.version)
            }
            Some(_) => {}
        }
    }
    status.unknown = applied
        .iter()
        .map(|(v, _, _)| *v)
        .filter(|v| !MIGRATOR.version_exists(*v))
        .collect();
    Ok(status)
}

/// Database, connection and schema, ready to use.
pub async fn prepare(url: &str, max_connections: u32) -> Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url, max_connections).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// `url` with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                if userinfo.contains(':') {
                    format!("{scheme}://{user}:***@{host}")
                } else {
                    format!("{scheme}://{user}@{host}")
                }
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    }
}
