//! The admin user aggregate: a named person (or robot) who may use the
//! admin API, the roles they hold, and their personal admin API tokens.
//!
//! Invariants:
//! - a user is created once; a disabled user is frozen (disabling again
//!   records nothing, anything else is refused), and none of their tokens
//!   authenticates any more;
//! - granting a role held already, or revoking one not held, records
//!   nothing;
//! - a token is stored only as the hash of its secret (never the secret);
//!   a user holds at most [`MAX_LIVE_TOKENS`] live (unrevoked, unexpired)
//!   tokens, and revoking a token twice records nothing;
//! - every event carries the acting identity. Whether the last owner may
//!   lose their role is the admin API's check (the aggregate knows only
//!   itself).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most live tokens one user may hold at once.
pub const MAX_LIVE_TOKENS: usize = 20;

/// What an admin user may do. A user may hold several roles; what they may
/// do is the union.
///
/// - `owner`: everything, users and roles included;
/// - `admin`: everything except users and roles;
/// - `team_admin`: one team's projects and keys, and their usage and
///   billing;
/// - `viewer`: reads everything an admin can read (provider settings
///   included, never a secret), changes nothing;
/// - `billing_viewer`: the finance viewer: reads usage, billing, alerts,
///   teams, projects and keys, not providers, aliases, jobs or operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    TeamAdmin { team_id: Uuid },
    Viewer,
    BillingViewer,
}

impl Role {
    /// The role's name, without its team.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::TeamAdmin { .. } => "team_admin",
            Role::Viewer => "viewer",
            Role::BillingViewer => "billing_viewer",
        }
    }
}

/// Where a user is in their life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    #[default]
    Unborn,
    Active,
    Disabled,
}

/// One personal admin API token, as stored (its hash, never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: Uuid,
    pub name: String,
    /// Hex SHA-256 of the secret (as API keys').
    pub token_hash: String,
    /// The start of the secret, to tell tokens apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl AdminToken {
    /// Whether the token authenticates at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminUserCommand {
    CreateUser {
        name: String,
        email: String,
        roles: Vec<Role>,
        actor: String,
        at: DateTime<Utc>,
    },
    UpdateUser {
        name: String,
        email: String,
        actor: String,
        at: DateTime<Utc>,
    },
    GrantRole {
        role: Role,
        actor: String,
        at: DateTime<Utc>,
    },
    RevokeRole {
        role: Role,
        actor: String,
        at: DateTime<Utc>,
    },
    DisableUser {
        actor: String,
        at: DateTime<Utc>,
    },
    IssueToken {
        token_id: Uuid,
        name: String,
        token_hash: String,
        prefix: String,
        expires_at: Option<DateTime<Utc>>,
        actor: String,
        at: DateTime<Utc>,
    },
    RevokeToken {
        token_id: Uuid,
        actor: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminUserEvent {
    UserCreated {
        name: String,
        email: String,
        roles: Vec<Role>,
        actor: String,
        at: DateTime<Utc>,
    },
    UserUpdated {
        name: String,
        email: String,
        actor: String,
        at: DateTime<Utc>,
    },
    RoleGranted {
        role: Role,
        actor: String,
        at: DateTime<Utc>,
    },
    RoleRevoked {
        role: Role,
        actor: String,
        at: DateTime<Utc>,
    },
    UserDisabled {
        actor: String,
        at: DateTime<Utc>,
    },
    TokenIssued {
        token_id: Uuid,
        name: String,
        token_hash: String,
        prefix: String,
        expires_at: Option<DateTime<Utc>>,
        actor: String,
        at: DateTime<Utc>,
    },
    TokenRevoked {
        token_id: Uuid,
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AdminUserEvent {
    fn event_type(&self) -> String {
        match self {
            AdminUserEvent::UserCreated { .. } => "UserCreated",
            AdminUserEvent::UserUpdated { .. } => "UserUpdated",
            AdminUserEvent::RoleGranted { .. } => "RoleGranted",
            AdminUserEvent::RoleRevoked { .. } => "RoleRevoked",
            AdminUserEvent::UserDisabled { .. } => "UserDisabled",
            AdminUserEvent::TokenIssued { .. } => "TokenIssued",
            AdminUserEvent::TokenRevoked { .. } => "TokenRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

/// Why an admin user command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminUserError {
    #[error("the user already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
    #[error("the user is disabled")]
    Disabled,
    #[error("a user holds at most {MAX_LIVE_TOKENS} live tokens: revoke one first")]
    TooManyTokens,
    #[error("no such token")]
    NoSuchToken,
}

/// Current state of one admin user, folded from their events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminUserAggregate {
    pub status: UserStatus,
    pub name: String,
    pub email: String,
    /// Held roles, sorted, without repeats.
    pub roles: Vec<Role>,
    pub tokens: Vec<AdminToken>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl AdminUserAggregate {
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }

    pub fn is_owner(&self) -> bool {
        self.is_active() && self.roles.contains(&Role::Owner)
    }

    pub fn token(&self, id: Uuid) -> Option<&AdminToken> {
        self.tokens.iter().find(|t| t.id == id)
    }

    fn live_tokens(&self, now: DateTime<Utc>) -> usize {
        self.tokens.iter().filter(|t| t.is_live(now)).count()
    }
}

fn sorted(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort();
    roles.dedup();
    roles
}

impl Aggregate for AdminUserAggregate {
    const TYPE: &'static str = "admin_user";
    type Command = AdminUserCommand;
    type Event = AdminUserEvent;
    type Error = AdminUserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use AdminUserCommand as C;
        use AdminUserEvent as E;
        match (self.status, &command) {
            (UserStatus::Unborn, C::CreateUser { .. }) => {}
            (_, C::CreateUser { .. }) => return Err(AdminUserError::AlreadyExists),
            (UserStatus::Unborn, _) => return Err(AdminUserError::NotFound),
            (UserStatus::Disabled, C::DisableUser { .. }) => return Ok(()),
            (UserStatus::Disabled, _) => return Err(AdminUserError::Disabled),
            (UserStatus::Active, _) => {}
        }
        let event = match command {
            C::CreateUser {
                name,
                email,
                roles,
                actor,
                at,
            } => E::UserCreated {
                name,
                email,
                roles: sorted(roles),
                actor,
                at,
            },
            C::UpdateUser { name, email, .. } if name == self.name && email == self.email => {
                return Ok(());
            }
            C::UpdateUser {
                name,
                email,
                actor,
                at,
            } => E::UserUpdated {
                name,
                email,
                actor,
                at,
            },
            C::GrantRole { role, .. } if self.roles.contains(&role) => return Ok(()),
            C::GrantRole { role, actor, at } => E::RoleGranted { role, actor, at },
            C::RevokeRole { role, .. } if !self.roles.contains(&role) => return Ok(()),
            C::RevokeRole { role, actor, at } => E::RoleRevoked { role, actor, at },
            C::DisableUser { actor, at } => E::UserDisabled { actor, at },
            C::IssueToken { at, .. } if self.live_tokens(at) >= MAX_LIVE_TOKENS => {
                return Err(AdminUserError::TooManyTokens);
            }
            C::IssueToken {
                token_id,
                name,
                token_hash,
                prefix,
                expires_at,
                actor,
                at,
            } => E::TokenIssued {
                token_id,
                name,
                token_hash,
                prefix,
                expires_at,
                actor,
                at,
            },
            C::RevokeToken {
                token_id,
                actor,
                at,
            } => match self.token(token_id) {
                None => return Err(AdminUserError::NoSuchToken),
                Some(t) if t.revoked_at.is_some() => return Ok(()),
                Some(_) => E::TokenRevoked {
                    token_id,
                    actor,
                    at,
                },
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use AdminUserEvent as E;
        match event {
            E::UserCreated {
                name,
                email,
                roles,
                at,
                ..
            } => {
                self.status = UserStatus::Active;
                self.name = name;
                self.email = email;
                self.roles = sorted(roles);
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            E::UserUpdated {
                name, email, at, ..
            } => {
                self.name = name;
                self.email = email;
                self.updated_at = Some(at);
            }
            E::RoleGranted { role, at, .. } => {
                self.roles.push(role);
                self.roles = sorted(std::mem::take(&mut self.roles));
                self.updated_at = Some(at);
            }
            E::RoleRevoked { role, at, .. } => {
                self.roles.retain(|r| *r != role);
                self.updated_at = Some(at);
            }
            E::UserDisabled { at, .. } => {
                self.status = UserStatus::Disabled;
                self.disabled_at = Some(at);
                self.updated_at = Some(at);
            }
            E::TokenIssued {
                token_id,
                name,
                token_hash,
                prefix,
                expires_at,
                at,
                ..
            } => {
                self.tokens.push(AdminToken {
                    id: token_id,
                    name,
                    token_hash,
                    prefix,
                    created_at: at,
                    expires_at,
                    revoked_at: None,
                });
                self.updated_at = Some(at);
            }
            E::TokenRevoked { token_id, at, .. } => {
                if let Some(t) = self.tokens.iter_mut().find(|t| t.id == token_id) {
                    t.revoked_at = Some(at);
                }
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn created() -> AdminUserEvent {
        AdminUserEvent::UserCreated {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            roles: vec![Role::Viewer],
            actor: "admin".into(),
            at: at(),
        }
    }

    fn issued(n: u128) -> AdminUserEvent {
        AdminUserEvent::TokenIssued {
            token_id: Uuid::from_u128(n),
            name: format!("t{n}"),
            token_hash: format!("{n:064x}"),
            prefix: "aigwu_abc".into(),
            expires_at: None,
            actor: "admin".into(),
            at: at(),
        }
    }

    fn issue(n: u128) -> AdminUserCommand {
        AdminUserCommand::IssueToken {
            token_id: Uuid::from_u128(n),
            name: format!("t{n}"),
            token_hash: format!("{n:064x}"),
            prefix: "aigwu_abc".into(),
            expires_at: None,
            actor: "admin".into(),
            at: at(),
        }
    }

    #[test]
    fn roles_are_granted_and_revoked_once() {
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created()])
            .when(AdminUserCommand::GrantRole {
                role: Role::Viewer,
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created()])
            .when(AdminUserCommand::RevokeRole {
                role: Role::Owner,
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
        let team = Role::TeamAdmin {
            team_id: Uuid::from_u128(7),
        };
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created()])
            .when(AdminUserCommand::GrantRole {
                role: team,
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![AdminUserEvent::RoleGranted {
                role: team,
                actor: "admin".into(),
                at: at(),
            }]);
    }

    #[test]
    fn live_tokens_are_bounded_and_revoked_ones_free_a_place() {
        let mut full: Vec<_> = std::iter::once(created())
            .chain((0..MAX_LIVE_TOKENS as u128).map(issued))
            .collect();
        TestFramework::<AdminUserAggregate>::with(())
            .given(full.clone())
            .when(issue(999))
            .then_expect_error(AdminUserError::TooManyTokens);
        full.push(AdminUserEvent::TokenRevoked {
            token_id: Uuid::from_u128(0),
            actor: "admin".into(),
            at: at(),
        });
        TestFramework::<AdminUserAggregate>::with(())
            .given(full)
            .when(issue(999))
            .then_expect_events(vec![issued(999)]);
    }

    #[test]
    fn a_disabled_user_is_frozen() {
        let disabled = AdminUserEvent::UserDisabled {
            actor: "admin".into(),
            at: at(),
        };
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created(), disabled.clone()])
            .when(AdminUserCommand::DisableUser {
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created(), disabled])
            .when(issue(1))
            .then_expect_error(AdminUserError::Disabled);
        TestFramework::<AdminUserAggregate>::with(())
            .given_no_previous_events()
            .when(issue(1))
            .then_expect_error(AdminUserError::NotFound);
    }

    #[test]
    fn revoking_an_unknown_token_is_refused_and_twice_records_once() {
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created()])
            .when(AdminUserCommand::RevokeToken {
                token_id: Uuid::from_u128(5),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_error(AdminUserError::NoSuchToken);
        let revoked = AdminUserEvent::TokenRevoked {
            token_id: Uuid::from_u128(1),
            actor: "admin".into(),
            at: at(),
        };
        TestFramework::<AdminUserAggregate>::with(())
            .given(vec![created(), issued(1), revoked])
            .when(AdminUserCommand::RevokeToken {
                token_id: Uuid::from_u128(1),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }
}
