//! The plumbing every aigw role shares: configuration, connections to NATS and
//! PostgreSQL, the schema and streams, the event stores, the registry of keys
//! and providers, secrets handling (and resealing them under a new master
//! key), egress to URLs no admin chose, and telemetry (logs, traces, metrics).

pub mod audit;
pub mod bodies;
pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dialect;
pub mod egress;
pub mod estimate;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod nats;
pub mod outcome;
pub mod pg_hosts;
pub mod publish;
pub mod readiness;
pub mod registry;
pub mod reseal;
pub mod sessions;
pub mod store;
pub mod teams;
pub mod telemetry;
pub mod traces;
pub mod users;
pub mod views;
pub mod worst_case;

pub use config::CommonArgs;
pub use registry::{KeyEntry, ProviderEntry, Registry, Target};
pub use store::Stores;

/// Errors setting up or talking to the shared infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Config(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A database read that is not a plain query error of ours.
    #[error("database: {0}")]
    DatabaseRead(String),
    /// No host of a database URL's list fits its `target_session_attrs`.
    #[error("database: {0}")]
    NoDatabaseHost(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
