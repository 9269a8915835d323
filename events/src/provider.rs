//! The provider aggregate: an upstream that aigw can call, and its settings.
//!
//! The credential is stored only encrypted (AES-256-GCM under the master key);
//! events, views and logs never see it in clear.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Wire format an upstream speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any server speaking OpenAI's chat completions API.
    #[default]
    OpenaiCompatible,
}

/// Everything needed to call a provider, as configured by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSpec {
    pub name: String,
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL up to the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Model ids this provider serves.
    pub models: Vec<String>,
    /// The API key, sealed with the master key (`None` for upstreams without auth).
    #[serde(default)]
    pub sealed_credential: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderCommand {
    ConfigureProvider {
        spec: ProviderSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    UpdateProvider {
        spec: ProviderSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    RemoveProvider {
        actor: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderEvent {
    ProviderConfigured {
        spec: ProviderSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    ProviderUpdated {
        spec: ProviderSpec,
        actor: String,
        at: DateTime<Utc>,
    },
    ProviderRemoved {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ProviderEvent {
    fn event_type(&self) -> String {
        match self {
            ProviderEvent::ProviderConfigured { .. } => "ProviderConfigured",
            ProviderEvent::ProviderUpdated { .. } => "ProviderUpdated",
            ProviderEvent::ProviderRemoved { .. } => "ProviderRemoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("the provider already exists")]
    AlreadyConfigured,
    #[error("no such provider")]
    NotFound,
}

/// Current state of one provider, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderAggregate {
    pub spec: Option<ProviderSpec>,
    pub removed: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl ProviderAggregate {
    fn live(&self) -> bool {
        self.spec.is_some() && !self.removed
    }
}

impl Aggregate for ProviderAggregate {
    const TYPE: &'static str = "provider";
    type Command = ProviderCommand;
    type Event = ProviderEvent;
    type Error = ProviderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ProviderCommand::ConfigureProvider { spec, actor, at } => {
                if self.spec.is_some() {
                    return Err(ProviderError::AlreadyConfigured);
                }
                ProviderEvent::ProviderConfigured { spec, actor, at }
            }
            ProviderCommand::UpdateProvider { spec, actor, at } => {
                if !self.live() {
                    return Err(ProviderError::NotFound);
                }
                ProviderEvent::ProviderUpdated { spec, actor, at }
            }
            ProviderCommand::RemoveProvider { actor, at } => {
                if !self.live() {
                    return Err(ProviderError::NotFound);
                }
                ProviderEvent::ProviderRemoved { actor, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProviderEvent::ProviderConfigured { spec, at, .. } => {
                self.spec = Some(spec);
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            ProviderEvent::ProviderUpdated { spec, at, .. } => {
                self.spec = Some(spec);
                self.updated_at = Some(at);
            }
            ProviderEvent::ProviderRemoved { at, .. } => {
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

    fn spec() -> ProviderSpec {
        ProviderSpec {
            name: "local".into(),
            kind: ProviderKind::OpenaiCompatible,
            base_url: "http://127.0.0.1:9/v1".into(),
            models: vec!["m".into()],
            sealed_credential: None,
        }
    }

    #[test]
    fn configure_twice_fails() {
        let at = Utc::now();
        TestFramework::<ProviderAggregate>::with(())
            .given(vec![ProviderEvent::ProviderConfigured {
                spec: spec(),
                actor: "admin".into(),
                at,
            }])
            .when(ProviderCommand::ConfigureProvider {
                spec: spec(),
                actor: "admin".into(),
                at,
            })
            .then_expect_error(ProviderError::AlreadyConfigured);
    }

    #[test]
    fn removed_provider_cannot_be_removed_again() {
        let at = Utc::now();
        TestFramework::<ProviderAggregate>::with(())
            .given(vec![
                ProviderEvent::ProviderConfigured {
                    spec: spec(),
                    actor: "admin".into(),
                    at,
                },
                ProviderEvent::ProviderRemoved {
                    actor: "admin".into(),
                    at,
                },
            ])
            .when(ProviderCommand::RemoveProvider {
                actor: "admin".into(),
                at,
            })
            .then_expect_error(ProviderError::NotFound);
    }
}
