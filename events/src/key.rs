//! The API key aggregate: issued once, revoked at most once.
//!
//! Only the SHA-256 hash of a key's secret is ever stored; the secret itself
//! is shown to the admin once, in the response that issues it.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyCommand {
    /// Issue a new key. `key_hash` is the hex SHA-256 of the secret.
    IssueKey {
        name: String,
        key_hash: String,
        /// The first characters of the secret, to help people tell keys apart.
        prefix: String,
        actor: String,
        at: DateTime<Utc>,
    },
    /// Revoke the key; later calls with it get 401.
    RevokeKey { actor: String, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyEvent {
    KeyIssued {
        name: String,
        key_hash: String,
        prefix: String,
        actor: String,
        at: DateTime<Utc>,
    },
    KeyRevoked {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for KeyEvent {
    fn event_type(&self) -> String {
        match self {
            KeyEvent::KeyIssued { .. } => "KeyIssued",
            KeyEvent::KeyRevoked { .. } => "KeyRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key already exists")]
    AlreadyIssued,
    #[error("no such key")]
    NotFound,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Unissued,
    Active,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Unissued => "unissued",
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
        }
    }
}

/// Current state of one key, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyAggregate {
    pub status: KeyStatus,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Aggregate for KeyAggregate {
    const TYPE: &'static str = "key";
    type Command = KeyCommand;
    type Event = KeyEvent;
    type Error = KeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            KeyCommand::IssueKey {
                name,
                key_hash,
                prefix,
                actor,
                at,
            } => {
                if self.status != KeyStatus::Unissued {
                    return Err(KeyError::AlreadyIssued);
                }
                let event = KeyEvent::KeyIssued {
                    name,
                    key_hash,
                    prefix,
                    actor,
                    at,
                };
                sink.write(event, self).await;
            }
            KeyCommand::RevokeKey { actor, at } => match self.status {
                KeyStatus::Unissued => return Err(KeyError::NotFound),
                // Revoking twice changes nothing and records nothing.
                KeyStatus::Revoked => {}
                KeyStatus::Active => sink.write(KeyEvent::KeyRevoked { actor, at }, self).await,
            },
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            KeyEvent::KeyIssued {
                name,
                key_hash,
                prefix,
                at,
                ..
            } => {
                self.status = KeyStatus::Active;
                self.name = name;
                self.key_hash = key_hash;
                self.prefix = prefix;
                self.created_at = Some(at);
            }
            KeyEvent::KeyRevoked { at, .. } => {
                self.status = KeyStatus::Revoked;
                self.revoked_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn issued() -> KeyEvent {
        KeyEvent::KeyIssued {
            name: "ci".into(),
            key_hash: "ab".into(),
            prefix: "aig_x".into(),
            actor: "admin".into(),
            at: at(),
        }
    }

    #[test]
    fn issue_then_revoke() {
        TestFramework::<KeyAggregate>::with(())
            .given(vec![issued()])
            .when(KeyCommand::RevokeKey {
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![KeyEvent::KeyRevoked {
                actor: "admin".into(),
                at: at(),
            }]);
    }

    #[test]
    fn revoking_twice_records_nothing() {
        TestFramework::<KeyAggregate>::with(())
            .given(vec![
                issued(),
                KeyEvent::KeyRevoked {
                    actor: "admin".into(),
                    at: at(),
                },
            ])
            .when(KeyCommand::RevokeKey {
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn revoking_an_unknown_key_fails() {
        TestFramework::<KeyAggregate>::with(())
            .given_no_previous_events()
            .when(KeyCommand::RevokeKey {
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_error(KeyError::NotFound);
    }
}
