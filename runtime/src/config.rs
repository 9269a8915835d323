//! Settings shared by every role (flags and `AIGW_*` environment variables),
//! and the rule every configured secret must pass.
//!
//! Invariant: no role that uses `AIGW_MASTER_KEY` or `AIGW_ADMIN_TOKEN`
//! starts with a known placeholder or a short value in either; the error
//! names the variable and never shows the value.

use aigw_events::Names;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use crate::RuntimeError;
use crate::crypto::Sealer;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// NATS server URL (JetStream enabled, server 2.10 or newer), or a
    /// comma-separated list of seed servers of one cluster
    /// (`nats://n1:4222,nats://n2:4222,nats://n3:4222`); the client
    /// reconnects across them.
    #[arg(long, env = "AIGW_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Replicas of every stream, consumer, key-value bucket and object store
    /// aigw creates (1 to 5; at most the number of JetStream servers). An
    /// existing deployment with another count is updated in place at start.
    #[arg(long, env = "AIGW_NATS_REPLICAS", default_value = "1", value_parser = crate::nats::parse_replicas)]
    pub nats_replicas: usize,

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

    /// Secret that encrypts provider credentials at rest: a random string of
    /// at least 32 characters (e.g. `openssl rand -hex 32`); placeholders are
    /// refused at start.
    #[arg(long, env = "AIGW_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<SecretString>,

    /// The master key before a rotation: credentials sealed under it still
    /// open (and `aigw providers reseal` seals them under the current one).
    /// Drop it once the reseal is done.
    #[arg(long, env = "AIGW_MASTER_KEY_PREVIOUS", hide_env_values = true)]
    pub master_key_previous: Option<SecretString>,

    /// Let requests to URLs that callers or providers supply (job webhooks,
    /// provider output files fetched for `b64_json`) go to private, loopback
    /// and link-local addresses. Off by default, so neither can make aigw
    /// call the services next to it.
    #[arg(long, env = "AIGW_EGRESS_ALLOW_PRIVATE", action = clap::ArgAction::Set)]
    pub egress_allow_private: Option<bool>,

    /// Former name of `AIGW_EGRESS_ALLOW_PRIVATE`, still accepted (the new
    /// name wins when both are set).
    #[arg(long, env = "AIGW_WEBHOOK_ALLOW_PRIVATE", hide = true, action = clap::ArgAction::Set)]
    pub webhook_allow_private: Option<bool>,

    /// How long a stopping role (SIGTERM) may take to finish what it has in
    /// hand: the ingress its in-flight requests, the dispatcher the requests
    /// and jobs it runs (the rest are handed back to another replica). Keep
    /// it below the orchestrator's kill timeout (Kubernetes'
    /// `terminationGracePeriodSeconds`).
    #[arg(long, env = "AIGW_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,

    /// Size limits of the requests and jobs streams.
    #[command(flatten)]
    pub streams: crate::nats::StreamLimits,
}

impl CommonArgs {
    pub fn names(&self) -> Result<Names, RuntimeError> {
        Names::new(&self.namespace).map_err(|e| RuntimeError::Config(e.to_string()))
    }

    /// Whether egress to caller- or provider-supplied URLs may reach
    /// private addresses.
    pub fn allow_private_egress(&self) -> bool {
        self.egress_allow_private
            .or(self.webhook_allow_private)
            .unwrap_or(false)
    }

    /// The sealer of provider credentials, after checking the master key.
    /// The previous key is not checked: rotating away from a weak key is
    /// exactly what it is for.
    pub fn sealer(&self) -> Result<Sealer, RuntimeError> {
        // Set but empty (as compose passes it outside a rotation): unset.
        let previous = self
            .master_key_previous
            .as_ref()
            .filter(|k| !k.expose_secret().trim().is_empty());
        if let Some(key) = &self.master_key {
            check_secret("AIGW_MASTER_KEY", key)?;
        } else if previous.is_some() {
            return Err(RuntimeError::Config(
                "AIGW_MASTER_KEY_PREVIOUS is set without AIGW_MASTER_KEY".into(),
            ));
        }
        Ok(Sealer::with_previous(self.master_key.as_ref(), previous))
    }
}

/// Fewest characters a secret may have.
pub const MIN_SECRET_CHARS: usize = 32;
/// Fewest distinct characters a secret may have (refuses `aaaa...`).
const MIN_DISTINCT_CHARS: usize = 8;
/// Words of placeholders, compared on the lowercased letters and digits of
/// a value: the defaults and examples aigw ever shipped, and the usual
/// "put your secret here" markers.
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "changethis",
    "changeit",
    "replaceme",
    "placeholder",
    "example",
    "randomstring",
    "yoursecret",
    "yourtoken",
    "yourkey",
    "chooseanadmintoken",
    "xxxxxxxx",
];

/// Why a secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    #[error(
        "{var} is too short: use at least {MIN_SECRET_CHARS} random characters (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { var: &'static str },
    #[error(
        "{var} is a placeholder value: set it to your own random string of at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"
    )]
    Placeholder { var: &'static str },
    #[error("{var} repeats too few characters to be random: use `openssl rand -hex 32` or similar")]
    NotRandom { var: &'static str },
}

impl From<WeakSecret> for RuntimeError {
    fn from(e: WeakSecret) -> Self {
        let rotate = match &e {
            WeakSecret::TooShort {
                var: "AIGW_MASTER_KEY",
            }
            | WeakSecret::Placeholder {
                var: "AIGW_MASTER_KEY",
            }
            | WeakSecret::NotRandom {
                var: "AIGW_MASTER_KEY",
            } => {
                ". Credentials already sealed under it: set the new key, move this one to \
                 AIGW_MASTER_KEY_PREVIOUS and run `aigw providers reseal`"
            }
            _ => "",
        };
        RuntimeError::Config(format!("{e}{rotate}"))
    }
}

/// Checks a configured secret (`var` names it in the error, the value never
/// appears): at least [`MIN_SECRET_CHARS`] characters, no placeholder, not
/// one character repeated.
pub fn check_secret(var: &'static str, value: &SecretString) -> Result<(), WeakSecret> {
    let value = value.expose_secret().trim();
    let normalised: String = value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if PLACEHOLDER_WORDS.iter().any(|w| normalised.contains(w)) {
        return Err(WeakSecret::Placeholder { var });
    }
    if value.chars().count() < MIN_SECRET_CHARS {
        return Err(WeakSecret::TooShort { var });
    }
    let mut distinct: Vec<char> = value.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Err(WeakSecret::NotRandom { var });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str) -> Result<(), WeakSecret> {
        check_secret("AIGW_MASTER_KEY", &SecretString::from(value))
    }

    #[test]
    fn placeholders_short_and_repeated_values_are_refused() {
        let var = "AIGW_MASTER_KEY";
        for placeholder in [
            // What compose.yaml and the README shipped.
            "change-me-to-a-long-random-string",
            "change-me-admin-token",
            "choose-an-admin-token",
            "a-long-random-string-that-encrypts-provider-keys",
            "CHANGEME",
            "please_change_me_0123456789abcdefghijkl",
            "your-secret-here-0123456789abcdefghijkl",
            "replace-me-with-something-long-and-random",
            "https://example.com/0123456789abcdefghijklmnopq",
        ] {
            assert_eq!(
                check(placeholder),
                Err(WeakSecret::Placeholder { var }),
                "{placeholder}"
            );
        }
        for short in [
            "",
            "k",
            "master one",
            "test-master-key",
            &"0123456789".repeat(3),
        ] {
            assert_eq!(check(short), Err(WeakSecret::TooShort { var }), "{short}");
        }
        for repeated in ["k".repeat(32), "ab".repeat(40), "0123".repeat(10)] {
            assert_eq!(
                check(&repeated),
                Err(WeakSecret::NotRandom { var }),
                "{repeated}"
            );
        }
        for good in [
            "3f9c2a7d1e84b6a05c1e7b9a2d4f4e08",
            "aigw-test-master-key-5c1e7b9a2d4f4e08a6b3",
            "Zx8nQ2vL7pR4tY1wK9mB3cF6hJ0sD5gA",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        // The message names the variable, never the value.
        let text = check("change-me-to-a-long-random-string")
            .unwrap_err()
            .to_string();
        assert!(text.contains("AIGW_MASTER_KEY") && !text.contains("change-me"));
    }

    fn args(current: Option<&str>, previous: Option<&str>) -> CommonArgs {
        CommonArgs {
            nats_url: String::new(),
            nats_replicas: 1,
            shutdown_grace: std::time::Duration::from_secs(25),
            database_url: String::new(),
            namespace: "aigw".into(),
            db_max_connections: 1,
            master_key: current.map(SecretString::from),
            master_key_previous: previous.map(SecretString::from),
            egress_allow_private: None,
            webhook_allow_private: None,
            streams: crate::nats::StreamLimits::default(),
        }
    }

    #[test]
    fn the_sealer_needs_a_good_master_key_but_takes_any_previous_one() {
        let good = "3f9c2a7d1e84b6a05c1e7b9a2d4f4e08";
        assert!(args(None, None).sealer().is_ok_and(|s| !s.is_configured()));
        assert!(args(Some(good), None).sealer().is_ok());
        // Rotating away from the shipped placeholder must be possible.
        assert!(
            args(Some(good), Some("change-me-to-a-long-random-string"))
                .sealer()
                .is_ok()
        );
        assert!(matches!(
            args(Some("change-me-to-a-long-random-string"), None).sealer(),
            Err(RuntimeError::Config(m)) if m.contains("AIGW_MASTER_KEY_PREVIOUS")
        ));
        assert!(args(None, Some(good)).sealer().is_err());
        assert!(args(None, Some("")).sealer().is_ok());
    }

    #[test]
    fn the_old_egress_setting_name_is_still_accepted() {
        let mut a = args(None, None);
        assert!(!a.allow_private_egress());
        a.webhook_allow_private = Some(true);
        assert!(a.allow_private_egress());
        a.egress_allow_private = Some(false);
        assert!(!a.allow_private_egress());
    }
}
