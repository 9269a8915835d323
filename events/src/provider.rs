//! The provider aggregate: an upstream that aigw can call, and its settings.
//!
//! The credential is stored only encrypted (AES-256-GCM under the master key);
//! events, views and logs never see it in clear.

use std::collections::BTreeMap;

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

impl ProviderKind {
    /// Whether aigw can call this kind of provider for `endpoint`.
    pub fn serves(self, endpoint: crate::wire::Endpoint) -> bool {
        use crate::wire::Endpoint as E;
        match self {
            ProviderKind::OpenaiCompatible => true,
            ProviderKind::Gemini | ProviderKind::Cohere => {
                matches!(endpoint, E::Chat | E::Embeddings)
            }
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

/// Prices of one model, in micro-dollars per million tokens (so 0.15 USD per
/// 1M tokens is 150_000), plus the per-unit prices of media models.
/// Integers, so costs add up exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_micros_per_mtok: i64,
    pub output_micros_per_mtok: i64,
    /// Rate for prompt tokens served from the provider's cache, if it bills them apart.
    #[serde(default)]
    pub cached_input_micros_per_mtok: Option<i64>,
    /// Rate for reasoning tokens, if the provider bills them apart from output.
    #[serde(default)]
    pub reasoning_micros_per_mtok: Option<i64>,
    /// Micro-dollars per generated image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_micros: Option<i64>,
    /// Micro-dollars per million characters of speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character_micros_per_m: Option<i64>,
    /// Micro-dollars per hour of transcribed audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_micros_per_hour: Option<i64>,
}

impl Price {
    /// A token price without the optional rates.
    pub fn tokens(input_micros_per_mtok: i64, output_micros_per_mtok: i64) -> Self {
        Self {
            input_micros_per_mtok,
            output_micros_per_mtok,
            cached_input_micros_per_mtok: None,
            reasoning_micros_per_mtok: None,
            image_micros: None,
            character_micros_per_m: None,
            audio_micros_per_hour: None,
        }
    }

    /// Cost of `usage` in micro-dollars, rounded up to the next micro-dollar.
    pub fn cost_micros(&self, usage: &crate::Usage) -> i64 {
        let rate = |r: Option<i64>| i128::from(r.unwrap_or(0));
        // In millionths of a micro-dollar.
        let pico = i128::from(usage.prompt_tokens) * i128::from(self.input_micros_per_mtok)
            + i128::from(usage.completion_tokens) * i128::from(self.output_micros_per_mtok)
            + i128::from(usage.images) * rate(self.image_micros) * 1_000_000
            + i128::from(usage.characters) * rate(self.character_micros_per_m)
            + (i128::from(usage.audio_seconds) * rate(self.audio_micros_per_hour) * 1_000_000
                + 3599)
                / 3600;
        let micros = (pico + 999_999) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }
}

/// Converts a USD amount (as admins write it) to micro-dollars.
pub fn usd_to_micros(usd: f64) -> Option<i64> {
    (0.0..9.0e12)
        .contains(&usd)
        .then(|| (usd * 1_000_000.0).round() as i64)
}

/// Everything needed to call a provider, as configured by an admin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Prices by model id; a model without one is served but flagged unpriced.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
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

    pub fn price(&self, model: &str) -> Option<&Price> {
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

    #[test]
    fn costs_are_exact_micro_dollars_rounded_up() {
        let price = Price::tokens(150_000, 600_000);
        let usage = |p, c| crate::Usage {
            prompt_tokens: p,
            completion_tokens: c,
            ..Default::default()
        };
        assert_eq!(price.cost_micros(&usage(1_000_000, 0)), 150_000);
        assert_eq!(price.cost_micros(&usage(1_000, 1_000)), 750);
        // 0.15 micro-dollars is billed as one.
        assert_eq!(price.cost_micros(&usage(1, 0)), 1);
        assert_eq!(price.cost_micros(&usage(0, 0)), 0);
        assert_eq!(usd_to_micros(0.05), Some(50_000));
        assert_eq!(usd_to_micros(-1.0), None);
        assert_eq!(usd_to_micros(f64::NAN), None);
    }

    #[test]
    fn media_units_are_billed_by_their_own_rates() {
        let price = Price {
            image_micros: Some(40_000),
            character_micros_per_m: Some(100_000_000),
            audio_micros_per_hour: Some(150_000),
            ..Price::tokens(1_000_000, 0)
        };
        let usage = |images, characters, audio_seconds| crate::Usage {
            images,
            characters,
            audio_seconds,
            ..Default::default()
        };
        // Two images at $0.04.
        assert_eq!(price.cost_micros(&usage(2, 0, 0)), 80_000);
        // 1,000 characters at $100 per million.
        assert_eq!(price.cost_micros(&usage(0, 1_000, 0)), 100_000);
        // 60 s at $0.15 per hour = 2,500 micro-dollars.
        assert_eq!(price.cost_micros(&usage(0, 0, 60)), 2_500);
        // A model without a media rate bills its media units as nothing.
        assert_eq!(Price::tokens(1, 1).cost_micros(&usage(3, 3, 3)), 0);
    }

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
