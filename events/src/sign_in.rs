//! The sign-in aggregate: one attempt to sign in to the admin UI (by single
//! sign-on), and, when it succeeded, the session it opened until it ends.
//!
//! Invariants:
//! - an attempt is recorded once, as a success (naming its user and the
//!   session's absolute expiry) or a failure (with a reason code); nothing
//!   follows a failure;
//! - only a successful sign-in can end, and it ends once (ending it again
//!   records nothing): by logout, or because its user was disabled;
//! - no event holds a secret: the session's id is the aggregate id, never
//!   the cookie's value (only its hash is stored, outside the events);
//! - the client's IP and user agent are kept as given, bounded by the
//!   caller (the admin API cuts them).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where the sign-in came from (a browser's IP and user agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignInCommand {
    Succeed {
        user_id: Uuid,
        email: String,
        /// `oidc`.
        method: String,
        expires_at: DateTime<Utc>,
        client: ClientInfo,
        at: DateTime<Utc>,
    },
    Fail {
        /// What the identity provider said the email was, if it got so far.
        email: Option<String>,
        method: String,
        /// A short code (`bad_nonce`, `domain_not_allowed`, ...).
        reason: String,
        client: ClientInfo,
        at: DateTime<Utc>,
    },
    End {
        /// `logout` or `user_disabled`.
        reason: String,
        actor: String,
        client: ClientInfo,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignInEvent {
    SignInSucceeded {
        user_id: Uuid,
        email: String,
        method: String,
        expires_at: DateTime<Utc>,
        client: ClientInfo,
        at: DateTime<Utc>,
    },
    SignInFailed {
        email: Option<String>,
        method: String,
        reason: String,
        client: ClientInfo,
        at: DateTime<Utc>,
    },
    SessionEnded {
        reason: String,
        actor: String,
        client: ClientInfo,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SignInEvent {
    fn event_type(&self) -> String {
        match self {
            SignInEvent::SignInSucceeded { .. } => "SignInSucceeded",
            SignInEvent::SignInFailed { .. } => "SignInFailed",
            SignInEvent::SessionEnded { .. } => "SessionEnded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignInError {
    #[error("this sign-in is already recorded")]
    AlreadyRecorded,
    #[error("no such session")]
    NoSession,
}

/// Where a sign-in is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInStatus {
    #[default]
    Unborn,
    Failed,
    Active,
    Ended,
}

/// One sign-in, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignInAggregate {
    pub status: SignInStatus,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Aggregate for SignInAggregate {
    const TYPE: &'static str = "sign_in";
    type Command = SignInCommand;
    type Event = SignInEvent;
    type Error = SignInError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use SignInCommand as C;
        use SignInEvent as E;
        let event = match (self.status, command) {
            (
                SignInStatus::Unborn,
                C::Succeed {
                    user_id,
                    email,
                    method,
                    expires_at,
                    client,
                    at,
                },
            ) => E::SignInSucceeded {
                user_id,
                email,
                method,
                expires_at,
                client,
                at,
            },
            (
                SignInStatus::Unborn,
                C::Fail {
                    email,
                    method,
                    reason,
                    client,
                    at,
                },
            ) => E::SignInFailed {
                email,
                method,
                reason,
                client,
                at,
            },
            (_, C::Succeed { .. } | C::Fail { .. }) => return Err(SignInError::AlreadyRecorded),
            (SignInStatus::Ended, C::End { .. }) => return Ok(()),
            (
                SignInStatus::Active,
                C::End {
                    reason,
                    actor,
                    client,
                    at,
                },
            ) => E::SessionEnded {
                reason,
                actor,
                client,
                at,
            },
            (SignInStatus::Unborn | SignInStatus::Failed, C::End { .. }) => {
                return Err(SignInError::NoSession);
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SignInEvent::SignInSucceeded {
                user_id, email, at, ..
            } => {
                self.status = SignInStatus::Active;
                self.user_id = Some(user_id);
                self.email = Some(email);
                self.started_at = Some(at);
            }
            SignInEvent::SignInFailed { email, at, .. } => {
                self.status = SignInStatus::Failed;
                self.email = email;
                self.started_at = Some(at);
            }
            SignInEvent::SessionEnded { at, .. } => {
                self.status = SignInStatus::Ended;
                self.ended_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn succeeded(user_id: Uuid) -> SignInEvent {
        SignInEvent::SignInSucceeded {
            user_id,
            email: "ada@example.com".into(),
            method: "oidc".into(),
            expires_at: at(),
            client: ClientInfo::default(),
            at: at(),
        }
    }

    fn end() -> SignInCommand {
        SignInCommand::End {
            reason: "logout".into(),
            actor: "user".into(),
            client: ClientInfo::default(),
            at: at(),
        }
    }

    #[test]
    fn a_session_ends_once() {
        let id = Uuid::now_v7();
        TestFramework::<SignInAggregate>::with(())
            .given(vec![succeeded(id)])
            .when(end())
            .then_expect_events(vec![SignInEvent::SessionEnded {
                reason: "logout".into(),
                actor: "user".into(),
                client: ClientInfo::default(),
                at: at(),
            }]);
        TestFramework::<SignInAggregate>::with(())
            .given(vec![
                succeeded(id),
                SignInEvent::SessionEnded {
                    reason: "logout".into(),
                    actor: "user".into(),
                    client: ClientInfo::default(),
                    at: at(),
                },
            ])
            .when(end())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_failure_has_no_session_and_is_final() {
        let failed = SignInEvent::SignInFailed {
            email: None,
            method: "oidc".into(),
            reason: "bad_nonce".into(),
            client: ClientInfo::default(),
            at: at(),
        };
        TestFramework::<SignInAggregate>::with(())
            .given(vec![failed.clone()])
            .when(end())
            .then_expect_error(SignInError::NoSession);
        TestFramework::<SignInAggregate>::with(())
            .given(vec![failed])
            .when(SignInCommand::Succeed {
                user_id: Uuid::now_v7(),
                email: "a@b".into(),
                method: "oidc".into(),
                expires_at: at(),
                client: ClientInfo::default(),
                at: at(),
            })
            .then_expect_error(SignInError::AlreadyRecorded);
    }
}
