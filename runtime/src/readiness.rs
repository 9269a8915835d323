//! Readiness of a role that serves no HTTP API of its own (dispatcher,
//! projector), as its probe listener reports it.
//!
//! Invariant: a role is ready only once it has said so ([`Readiness::started`],
//! after connecting and putting its streams, consumers and schema in place),
//! and then only while what it named answers: NATS connected, PostgreSQL
//! answering `SELECT 1`. Before that it is `starting`, never ready.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::PgPool;

/// A role's readiness: cheap to clone, set once by the role.
#[derive(Clone, Default)]
pub struct Readiness(Arc<OnceLock<Started>>);

struct Started {
    pool: PgPool,
    nats: Option<async_nats::Client>,
}

/// What a readiness check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// The role has not finished starting.
    Starting,
    Ready,
    /// Started, but NATS or PostgreSQL does not answer now.
    Unavailable {
        nats: bool,
        database: bool,
    },
}

impl ReadyState {
    pub fn is_ready(self) -> bool {
        self == Self::Ready
    }
}

/// How long the database may take to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    /// Marks the role started; from now on it is ready while `pool` (and
    /// `nats`, if any) answer. Later calls change nothing.
    pub fn started(&self, pool: PgPool, nats: Option<async_nats::Client>) {
        let _ = self.0.set(Started { pool, nats });
    }

    pub async fn check(&self) -> ReadyState {
        let Some(started) = self.0.get() else {
            return ReadyState::Starting;
        };
        let nats = started
            .nats
            .as_ref()
            .is_none_or(|c| c.connection_state() == async_nats::connection::State::Connected);
        let database = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query("SELECT 1").execute(&started.pool),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if nats && database {
            ReadyState::Ready
        } else {
            ReadyState::Unavailable { nats, database }
        }
    }
}
