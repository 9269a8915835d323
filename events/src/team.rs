//! The team aggregate: created, reconfigured (limits, scopes), renamed,
//! deleted. A team owns projects (see `project`), which own keys.
//!
//! Every event carries the admin identity that made it. A deleted team is
//! frozen: deleting it again records nothing, anything else is refused.
//! Whether a team still has projects is the admin API's check (the
//! aggregate knows only itself).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::key::{KeyLimits, KeyScopes};

/// What an admin sets on a team or a project besides its name: the same
/// limits and scopes a key has. A key's effective limits are its own and
/// every level above it, all enforced; its effective scopes the
/// intersection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub limits: KeyLimits,
    #[serde(default)]
    pub scopes: KeyScopes,
}

impl Policy {
    /// The budgets of the period `at` falls in (a level has no top-ups).
    pub fn budgets_at(&self, at: DateTime<Utc>) -> (String, Option<i64>, Option<i64>) {
        let l = &self.limits;
        (
            l.budget_period.period_id(at),
            l.budget_micros,
            l.budget_tokens,
        )
    }
}

/// Where a team or project is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    #[default]
    Unborn,
    Active,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeamCommand {
    CreateTeam {
        name: String,
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    /// Replace the team's limits and scopes.
    ReconfigureTeam {
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    RenameTeam {
        name: String,
        actor: String,
        at: DateTime<Utc>,
    },
    DeleteTeam {
        actor: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeamEvent {
    TeamCreated {
        name: String,
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    TeamReconfigured {
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    TeamRenamed {
        name: String,
        actor: String,
        at: DateTime<Utc>,
    },
    TeamDeleted {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for TeamEvent {
    fn event_type(&self) -> String {
        match self {
            TeamEvent::TeamCreated { .. } => "TeamCreated",
            TeamEvent::TeamReconfigured { .. } => "TeamReconfigured",
            TeamEvent::TeamRenamed { .. } => "TeamRenamed",
            TeamEvent::TeamDeleted { .. } => "TeamDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

/// Why a team or project command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("it already exists")]
    AlreadyExists,
    #[error("no such team or project")]
    NotFound,
    #[error("it is deleted")]
    Deleted,
}

/// Current state of one team, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamAggregate {
    pub status: UnitStatus,
    pub name: String,
    pub policy: Policy,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The common life of a team and a project: created once, changed while
/// active, deleted once (a repeat deletion records nothing).
pub(crate) fn check_live(
    status: UnitStatus,
    creating: bool,
    deleting: bool,
) -> Result<bool, UnitError> {
    match (status, creating) {
        (UnitStatus::Unborn, true) => Ok(true),
        (_, true) => Err(UnitError::AlreadyExists),
        (UnitStatus::Unborn, false) => Err(UnitError::NotFound),
        (UnitStatus::Deleted, false) if deleting => Ok(false),
        (UnitStatus::Deleted, false) => Err(UnitError::Deleted),
        (UnitStatus::Active, false) => Ok(true),
    }
}

impl Aggregate for TeamAggregate {
    const TYPE: &'static str = "team";
    type Command = TeamCommand;
    type Event = TeamEvent;
    type Error = UnitError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let creating = matches!(command, TeamCommand::CreateTeam { .. });
        let deleting = matches!(command, TeamCommand::DeleteTeam { .. });
        if !check_live(self.status, creating, deleting)? {
            return Ok(());
        }
        let event = match command {
            TeamCommand::CreateTeam {
                name,
                policy,
                actor,
                at,
            } => TeamEvent::TeamCreated {
                name,
                policy,
                actor,
                at,
            },
            // Changing nothing records nothing (`aigw apply` twice).
            TeamCommand::ReconfigureTeam { policy, .. } if policy == self.policy => return Ok(()),
            TeamCommand::ReconfigureTeam { policy, actor, at } => {
                TeamEvent::TeamReconfigured { policy, actor, at }
            }
            TeamCommand::RenameTeam { name, .. } if name == self.name => return Ok(()),
            TeamCommand::RenameTeam { name, actor, at } => {
                TeamEvent::TeamRenamed { name, actor, at }
            }
            TeamCommand::DeleteTeam { actor, at } => TeamEvent::TeamDeleted { actor, at },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TeamEvent::TeamCreated {
                name, policy, at, ..
            } => {
                self.status = UnitStatus::Active;
                self.name = name;
                self.policy = policy;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            TeamEvent::TeamReconfigured { policy, at, .. } => {
                self.policy = policy;
                self.updated_at = Some(at);
            }
            TeamEvent::TeamRenamed { name, at, .. } => {
                self.name = name;
                self.updated_at = Some(at);
            }
            TeamEvent::TeamDeleted { at, .. } => {
                self.status = UnitStatus::Deleted;
                self.deleted_at = Some(at);
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

    fn created() -> TeamEvent {
        TeamEvent::TeamCreated {
            name: "ml".into(),
            policy: Policy::default(),
            actor: "admin".into(),
            at: at(),
        }
    }

    #[test]
    fn a_team_is_created_once_and_changes_are_events() {
        TestFramework::<TeamAggregate>::with(())
            .given(vec![created()])
            .when(TeamCommand::CreateTeam {
                name: "ml".into(),
                policy: Policy::default(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_error(UnitError::AlreadyExists);
        let mut policy = Policy::default();
        policy.limits.rpm = Some(5);
        TestFramework::<TeamAggregate>::with(())
            .given(vec![created()])
            .when(TeamCommand::ReconfigureTeam {
                policy: policy.clone(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![TeamEvent::TeamReconfigured {
                policy,
                actor: "admin".into(),
                at: at(),
            }]);
    }

    #[test]
    fn unchanged_settings_record_nothing() {
        TestFramework::<TeamAggregate>::with(())
            .given(vec![created()])
            .when(TeamCommand::ReconfigureTeam {
                policy: Policy::default(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
        TestFramework::<TeamAggregate>::with(())
            .given(vec![created()])
            .when(TeamCommand::RenameTeam {
                name: "ml".into(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_deleted_team_is_frozen() {
        let deleted = TeamEvent::TeamDeleted {
            actor: "admin".into(),
            at: at(),
        };
        TestFramework::<TeamAggregate>::with(())
            .given(vec![created(), deleted.clone()])
            .when(TeamCommand::DeleteTeam {
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
        TestFramework::<TeamAggregate>::with(())
            .given(vec![created(), deleted])
            .when(TeamCommand::RenameTeam {
                name: "x".into(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_error(UnitError::Deleted);
        TestFramework::<TeamAggregate>::with(())
            .given_no_previous_events()
            .when(TeamCommand::DeleteTeam {
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_error(UnitError::NotFound);
    }
}
