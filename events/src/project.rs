//! The project aggregate: created (in exactly one team, for good),
//! reconfigured (limits, scopes), renamed, deleted. Keys belong to at most
//! one project (`KeySettings::project_id`).
//!
//! Every event carries the admin identity that made it; the life rules are
//! the team's (see `team::check_live`). Whether the team exists, and
//! whether a project still has keys, is the admin API's check.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::team::{Policy, UnitError, UnitStatus, check_live};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectCommand {
    CreateProject {
        name: String,
        team_id: Uuid,
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    ReconfigureProject {
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    RenameProject {
        name: String,
        actor: String,
        at: DateTime<Utc>,
    },
    DeleteProject {
        actor: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectEvent {
    ProjectCreated {
        name: String,
        team_id: Uuid,
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    ProjectReconfigured {
        policy: Policy,
        actor: String,
        at: DateTime<Utc>,
    },
    ProjectRenamed {
        name: String,
        actor: String,
        at: DateTime<Utc>,
    },
    ProjectDeleted {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ProjectEvent {
    fn event_type(&self) -> String {
        match self {
            ProjectEvent::ProjectCreated { .. } => "ProjectCreated",
            ProjectEvent::ProjectReconfigured { .. } => "ProjectReconfigured",
            ProjectEvent::ProjectRenamed { .. } => "ProjectRenamed",
            ProjectEvent::ProjectDeleted { .. } => "ProjectDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

/// Current state of one project, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectAggregate {
    pub status: UnitStatus,
    pub name: String,
    pub team_id: Uuid,
    pub policy: Policy,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Aggregate for ProjectAggregate {
    const TYPE: &'static str = "project";
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = UnitError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let creating = matches!(command, ProjectCommand::CreateProject { .. });
        let deleting = matches!(command, ProjectCommand::DeleteProject { .. });
        if !check_live(self.status, creating, deleting)? {
            return Ok(());
        }
        let event = match command {
            ProjectCommand::CreateProject {
                name,
                team_id,
                policy,
                actor,
                at,
            } => ProjectEvent::ProjectCreated {
                name,
                team_id,
                policy,
                actor,
                at,
            },
            ProjectCommand::ReconfigureProject { policy, .. } if policy == self.policy => {
                return Ok(());
            }
            ProjectCommand::ReconfigureProject { policy, actor, at } => {
                ProjectEvent::ProjectReconfigured { policy, actor, at }
            }
            ProjectCommand::RenameProject { name, .. } if name == self.name => return Ok(()),
            ProjectCommand::RenameProject { name, actor, at } => {
                ProjectEvent::ProjectRenamed { name, actor, at }
            }
            ProjectCommand::DeleteProject { actor, at } => {
                ProjectEvent::ProjectDeleted { actor, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProjectEvent::ProjectCreated {
                name,
                team_id,
                policy,
                at,
                ..
            } => {
                self.status = UnitStatus::Active;
                self.name = name;
                self.team_id = team_id;
                self.policy = policy;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            ProjectEvent::ProjectReconfigured { policy, at, .. } => {
                self.policy = policy;
                self.updated_at = Some(at);
            }
            ProjectEvent::ProjectRenamed { name, at, .. } => {
                self.name = name;
                self.updated_at = Some(at);
            }
            ProjectEvent::ProjectDeleted { at, .. } => {
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

    #[test]
    fn a_project_keeps_its_team_and_records_changes() {
        let team_id = Uuid::now_v7();
        let created = ProjectEvent::ProjectCreated {
            name: "search".into(),
            team_id,
            policy: Policy::default(),
            actor: "admin".into(),
            at: at(),
        };
        let mut p = ProjectAggregate::default();
        p.apply(created.clone());
        assert_eq!((p.team_id, p.status), (team_id, UnitStatus::Active));
        TestFramework::<ProjectAggregate>::with(())
            .given(vec![created.clone()])
            .when(ProjectCommand::RenameProject {
                name: "find".into(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_events(vec![ProjectEvent::ProjectRenamed {
                name: "find".into(),
                actor: "admin".into(),
                at: at(),
            }]);
        TestFramework::<ProjectAggregate>::with(())
            .given(vec![
                created,
                ProjectEvent::ProjectDeleted {
                    actor: "admin".into(),
                    at: at(),
                },
            ])
            .when(ProjectCommand::ReconfigureProject {
                policy: Policy::default(),
                actor: "admin".into(),
                at: at(),
            })
            .then_expect_error(UnitError::Deleted);
    }
}
