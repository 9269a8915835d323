//! The provider aggregate: an upstream that aigw can call, and its settings.
//!
//! The credential is stored only encrypted (AES-256-GCM under the master key);
//! events, views and logs never see it in clear.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

pub use crate::pricing::{Price, usd_to_micros};

/// Wire format an upstream speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any server speaking OpenAI's chat completions API.
    #[default]
    OpenaiCompatible,
    /// Anthropic Messages API (`/v1/messages`).
    Anthropic,
    /// Google Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
    /// Azure OpenAI: deployment URLs, `api-key` header, `api-version`.
    Azure,
    /// Amazon Bedrock Converse / ConverseStream (SigV4 or a Bedrock API key).
    Bedrock,
    /// Cohere v2 chat.
    Cohere,
    /// Stability AI v2beta image generation (multipart).
    Stability,
    /// ElevenLabs text-to-speech.
    Elevenlabs,
    /// AssemblyAI async transcription (upload, submit, poll).
    Assemblyai,
    /// Replicate predictions of image models (create, poll, cancel).
    Replicate,
    /// Runway text-to-image tasks (start, poll, cancel).
    Runway,
}

/// What each kind serves, as the ingress reads it. Each kind's own
/// declaration is beside its code in the dispatcher
/// (`dispatcher/src/providers/`); a unit test there checks that the two
/// agree for every kind, endpoint and dialect.
impl ProviderKind {
    /// Whether aigw can call this kind of provider for `endpoint`.
    pub fn serves(self, endpoint: crate::wire::Endpoint) -> bool {
        use crate::wire::Endpoint as E;
        match self {
            ProviderKind::OpenaiCompatible => true,
            ProviderKind::Gemini => matches!(endpoint, E::Chat | E::Embeddings),
            ProviderKind::Cohere => matches!(endpoint, E::Chat | E::Embeddings | E::Rerank),
            ProviderKind::Anthropic | ProviderKind::Azure | ProviderKind::Bedrock => {
                endpoint == E::Chat
            }
            ProviderKind::Stability | ProviderKind::Replicate | ProviderKind::Runway => {
                endpoint == E::Images
            }
            ProviderKind::Elevenlabs => endpoint == E::Speech,
            ProviderKind::Assemblyai => endpoint == E::Transcriptions,
        }
    }

    /// Whether this kind of provider takes requests in `dialect` natively
    /// (aigw then relays the caller's body and the answer verbatim rather
    /// than translating them through OpenAI chat).
    pub fn speaks(self, dialect: &crate::wire::Dialect) -> bool {
        use crate::wire::Dialect as D;
        match dialect {
            D::OpenaiChat => false,
            D::AnthropicMessages { .. } => self == ProviderKind::Anthropic,
            D::GeminiGenerate => self == ProviderKind::Gemini,
            // Only OpenAI itself (a preset of the OpenAI-compatible kind:
            // see `ProviderSpec::speaks`).
            D::OpenaiResponses => false,
        }
    }

    /// The most images one request may ask of this kind of provider (`n`),
    /// where it has a limit of its own (below the API's 10).
    pub fn max_images(self) -> Option<u64> {
        matches!(self, ProviderKind::Replicate | ProviderKind::Runway).then_some(4)
    }

    /// Whether aigw can call this kind of provider for this request: its
    /// endpoint, and for images the number it asks for.
    pub fn serves_body(self, endpoint: crate::wire::Endpoint, body: &serde_json::Value) -> bool {
        if !self.serves(endpoint) {
            return false;
        }
        let n = body
            .get("n")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        endpoint != crate::wire::Endpoint::Images || self.max_images().is_none_or(|max| n <= max)
    }
}

/// Everything needed to call a provider, as configured by an admin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSpec {
    pub name: String,
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL up to the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Model ids this provider serves (for Azure: its deployment names,
    /// see `deployments`).
    pub models: Vec<String>,
    /// The API key, sealed with the master key (`None` for upstreams without auth).
    #[serde(default)]
    pub sealed_credential: Option<String>,
    /// Prices by model id (for Azure: by deployment); a model without one is
    /// served but flagged unpriced.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Azure only: each deployment and the model it serves (`None`: not
    /// said). Empty in providers stored before it existed: see
    /// [`crate::deployments`] for how those are read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: crate::deployments::Deployments,
    /// Catalog preset this provider was made from (`None` for a custom one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Non-secret settings a wire format needs: `deployment`, `api_version`,
    /// `region`, `account_id`, `aws_access_key_id`, `auth` (`sigv4`/`bearer`).
    /// Secrets never go here: they are `sealed_credential`,
    /// `extra_credentials` and `sealed_session_token`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// More API keys for the same provider (sealed), used in turn with the
    /// main one, each with its own health.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_credentials: Vec<String>,
    /// Bedrock SigV4 only: the session token of temporary AWS credentials
    /// (sealed), sent as `X-Amz-Security-Token` and signed with the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_session_token: Option<String>,
    /// Most calls in flight to this provider per dispatcher (`None`: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// A disabled provider stays configured but gets no traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl ProviderSpec {
    /// Whether this provider takes requests in `dialect` natively: what its
    /// kind speaks, and OpenAI's Responses API for OpenAI itself (the
    /// `openai` preset; other OpenAI-compatible servers get the chat
    /// translation).
    pub fn speaks(&self, dialect: &crate::wire::Dialect) -> bool {
        self.kind.speaks(dialect)
            || (*dialect == crate::wire::Dialect::OpenaiResponses
                && self.kind == ProviderKind::OpenaiCompatible
                && self.preset.as_deref() == Some("openai"))
    }

    /// Every sealed credential: the main one first, then the extra ones.
    pub fn credentials(&self) -> Vec<&str> {
        self.sealed_credential
            .iter()
            .chain(self.extra_credentials.iter())
            .map(String::as_str)
            .collect()
    }

    /// The sealed secrets, apart from the rest of the settings.
    pub fn sealed(&self) -> SealedCredentials {
        SealedCredentials {
            credential: self.sealed_credential.clone(),
            extra: self.extra_credentials.clone(),
            session_token: self.sealed_session_token.clone(),
        }
    }

    /// The price of `model`, an id this provider is called with (for Azure a
    /// deployment). An Azure provider stored before `deployments` existed
    /// has none: its prices were the preset's models', not its deployment's.
    pub fn price(&self, model: &str) -> Option<&Price> {
        if self.by_deployment() && self.deployments.is_empty() {
            return None;
        }
        self.prices.get(model)
    }

    /// A setting, if present and not blank.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// Every sealed secret of a provider (see [`ProviderSpec`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredentials {
    pub credential: Option<String>,
    pub extra: Vec<String>,
    pub session_token: Option<String>,
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
    /// The same secrets sealed anew (under a new master key): replaces the
    /// sealed credentials only if they are still `from`, so a change made
    /// meanwhile is never overwritten. Recorded as `ProviderUpdated`.
    ResealCredentials {
        from: SealedCredentials,
        to: SealedCredentials,
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
    #[error("the provider's credentials changed meanwhile")]
    CredentialsChanged,
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
            ProviderCommand::ResealCredentials {
                from,
                to,
                actor,
                at,
            } => {
                let spec = match &self.spec {
                    Some(spec) if !self.removed => spec,
                    _ => return Err(ProviderError::NotFound),
                };
                if spec.sealed() != from {
                    return Err(ProviderError::CredentialsChanged);
                }
                let spec = ProviderSpec {
                    sealed_credential: to.credential,
                    extra_credentials: to.extra,
                    sealed_session_token: to.session_token,
                    ..spec.clone()
                };
                ProviderEvent::ProviderUpdated { spec, actor, at }
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
            ..ProviderSpec::default()
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

    #[test]
    fn resealing_replaces_only_the_credentials_it_was_given() {
        let at = Utc::now();
        let sealed = ProviderSpec {
            sealed_credential: Some("old-a".into()),
            extra_credentials: vec!["old-b".into()],
            sealed_session_token: Some("old-t".into()),
            ..spec()
        };
        let resealed = SealedCredentials {
            credential: Some("new-a".into()),
            extra: vec!["new-b".into()],
            session_token: Some("new-t".into()),
        };
        let configured = ProviderEvent::ProviderConfigured {
            spec: sealed.clone(),
            actor: "admin".into(),
            at,
        };
        TestFramework::<ProviderAggregate>::with(())
            .given(vec![configured.clone()])
            .when(ProviderCommand::ResealCredentials {
                from: sealed.sealed(),
                to: resealed.clone(),
                actor: "reseal".into(),
                at,
            })
            .then_expect_events(vec![ProviderEvent::ProviderUpdated {
                spec: ProviderSpec {
                    sealed_credential: Some("new-a".into()),
                    extra_credentials: vec!["new-b".into()],
                    sealed_session_token: Some("new-t".into()),
                    ..sealed.clone()
                },
                actor: "reseal".into(),
                at,
            }]);
        // An admin changed the key in between: nothing is overwritten.
        let changed = ProviderSpec {
            sealed_credential: Some("admin-new".into()),
            ..sealed.clone()
        };
        TestFramework::<ProviderAggregate>::with(())
            .given(vec![
                configured,
                ProviderEvent::ProviderUpdated {
                    spec: changed,
                    actor: "admin".into(),
                    at,
                },
            ])
            .when(ProviderCommand::ResealCredentials {
                from: sealed.sealed(),
                to: resealed,
                actor: "reseal".into(),
                at,
            })
            .then_expect_error(ProviderError::CredentialsChanged);
    }
}
