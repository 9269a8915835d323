//! Settings shared by every role (flags and `AIGW_*` environment variables).

use aigw_events::Names;
use clap::Args;
use secrecy::SecretString;

use crate::RuntimeError;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// NATS server URL (JetStream enabled, server 2.10 or newer).
    #[arg(long, env = "AIGW_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// PostgreSQL URL; the database is created if missing.
    #[arg(
        long,
        env = "AIGW_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/aigw"
    )]
    pub database_url: String,

    /// Prefix of every NATS stream, consumer and subject aigw uses.
    #[arg(long, env = "AIGW_NAMESPACE", default_value = "aigw")]
    pub namespace: String,

    /// Largest number of PostgreSQL connections this process opens.
    #[arg(long, env = "AIGW_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Secret that encrypts provider credentials at rest (any long random string).
    #[arg(long, env = "AIGW_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<SecretString>,

    /// Let job webhooks go to private, loopback and link-local addresses
    /// (refused by default, so callers cannot reach the services next to
    /// aigw). Turn on for webhooks inside your own network.
    #[arg(long, env = "AIGW_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// Size limits of the requests and jobs streams.
    #[command(flatten)]
    pub streams: crate::nats::StreamLimits,
}

impl CommonArgs {
    pub fn names(&self) -> Result<Names, RuntimeError> {
        Names::new(&self.namespace).map_err(|e| RuntimeError::Config(e.to_string()))
    }
}
