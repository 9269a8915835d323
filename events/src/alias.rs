//! The alias aggregate: a model name an admin defines (e.g. `fast`) that
//! routes to a list of provider + model targets with a strategy.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// How the dispatcher orders the targets of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In the order given.
    #[default]
    Priority,
    /// Random, in proportion to the targets' weights.
    Weighted,
    /// Cheapest first, for the request's estimated tokens.
    Cost,
    /// Fastest first, by a moving average of recent calls.
    Latency,
    /// Balances cost and latency among healthy targets.
    Auto,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::Weighted => "weighted",
            Strategy::Cost => "cost",
            Strategy::Latency => "latency",
            Strategy::Auto => "auto",
        }
    }
}

fn one() -> u32 {
    1
}

/// One place an alias sends requests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasTarget {
    /// Provider id or name.
    pub provider: String,
    pub model: String,
    #[serde(default = "one")]
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasSpec {
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
    pub targets: Vec<AliasTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AliasCommand {
    DefineAlias {
        spec: AliasSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    UpdateAlias {
        spec: AliasSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    RemoveAlias {
        actor: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AliasEvent {
    AliasDefined {
        spec: AliasSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    AliasUpdated {
        spec: AliasSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    AliasRemoved {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AliasEvent {
    fn event_type(&self) -> String {
        match self {
            AliasEvent::AliasDefined { .. } => "AliasDefined",
            AliasEvent::AliasUpdated { .. } => "AliasUpdated",
            AliasEvent::AliasRemoved { .. } => "AliasRemoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AliasError {
    #[error("the alias already exists")]
    AlreadyDefined,
    #[error("no such alias")]
    NotFound,
}

/// Current state of one alias (its aggregate id is its name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AliasAggregate {
    pub spec: Option<AliasSpec>,
    pub removed: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl AliasAggregate {
    pub fn live(&self) -> bool {
        self.spec.is_some() && !self.removed
    }
}

impl Aggregate for AliasAggregate {
    const TYPE: &'static str = "alias";
    type Command = AliasCommand;
    type Event = AliasEvent;
    type Error = AliasError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            AliasCommand::DefineAlias { spec, actor, at } => {
                if self.live() {
                    return Err(AliasError::AlreadyDefined);
                }
                AliasEvent::AliasDefined { spec, actor, at }
            }
            AliasCommand::UpdateAlias { spec, actor, at } => {
                if !self.live() {
                    return Err(AliasError::NotFound);
                }
                AliasEvent::AliasUpdated { spec, actor, at }
            }
            AliasCommand::RemoveAlias { actor, at } => {
                if !self.live() {
                    return Err(AliasError::NotFound);
                }
                AliasEvent::AliasRemoved { actor, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AliasEvent::AliasDefined { spec, at, .. }
            | AliasEvent::AliasUpdated { spec, at, .. } => {
                self.spec = Some(spec);
                self.removed = false;
                self.updated_at = Some(at);
            }
            AliasEvent::AliasRemoved { at, .. } => {
                self.removed = true;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn spec() -> AliasSpec {
        AliasSpec {
            name: "fast".into(),
            strategy: Strategy::Latency,
            targets: vec![AliasTarget {
                provider: "p".into(),
                model: "m".into(),
                weight: 1,
            }],
        }
    }

    #[test]
    fn an_alias_can_be_redefined_after_removal_only() {
        let at = Utc::now();
        let defined = AliasEvent::AliasDefined {
            spec: spec(),
            actor: "a".into(),
            at,
        };
        TestFramework::<AliasAggregate>::with(())
            .given(vec![defined.clone()])
            .when(AliasCommand::DefineAlias {
                spec: spec(),
                actor: "a".into(),
                at,
            })
            .then_expect_error(AliasError::AlreadyDefined);
        TestFramework::<AliasAggregate>::with(())
            .given(vec![
                defined,
                AliasEvent::AliasRemoved {
                    actor: "a".into(),
                    at,
                },
            ])
            .when(AliasCommand::DefineAlias {
                spec: spec(),
                actor: "a".into(),
                at,
            })
            .then_expect_events(vec![AliasEvent::AliasDefined {
                spec: spec(),
                actor: "a".into(),
                at,
            }]);
        let parsed: AliasTarget = serde_json::from_str(r#"{"provider":"p","model":"m"}"#).unwrap();
        assert_eq!(parsed.weight, 1);
    }
}
