//! The request aggregate: one per accepted call, written once by a dispatcher.
//!
//! A dispatcher records a request's whole story (accepted, each attempt, the
//! outcome) in a single command, so the history of a request is committed in
//! one transaction. A second recording of the same request, after a JetStream
//! redelivery, is refused: that is what makes billing exactly-once.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What one request consumed: tokens by class, and for media endpoints the
/// units they are billed by.
///
/// The token classes follow OpenAI's convention, whatever the provider's:
/// `prompt_tokens` is every input token, and `cached_tokens`,
/// `cache_write_5m_tokens` and `cache_write_1h_tokens` are parts of it (the
/// rest is uncached input); `completion_tokens` is every output token, and
/// `reasoning_tokens` is a part of it. Each adapter maps its provider's
/// fields to this (Anthropic's `input_tokens` excludes its cache reads and
/// writes, so they are added to make `prompt_tokens`), so every token is
/// counted once and billed once, at its class's rate
/// ([`crate::pricing::Price::cost`]). Usage whose parts exceed their whole
/// is not [plausible](Usage::is_plausible).
///
/// Class and media counts are left out of stored events when zero, so
/// events without them read and write exactly as before (and replay to the
/// same views and costs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache for 5 minutes (all of
    /// a provider's cache writes when it does not tell their lifetime).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_5m_tokens: u64,
    /// Prompt tokens written to the provider's cache for an hour.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
    /// Completion tokens spent reasoning (OpenAI
    /// `completion_tokens_details.reasoning_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Images generated (`/v1/images/generations`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub images: u64,
    /// Characters turned into speech (`/v1/audio/speech`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub characters: u64,
    /// Seconds of audio transcribed (`/v1/audio/transcriptions`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_seconds: u64,
    /// Search units of a rerank (`/v1/rerank`): Cohere bills one per query
    /// over up to 100 documents (or document chunks).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub searches: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// The largest count a provider can plausibly report for one request
    /// (a trillion tokens, images, characters or seconds). Usage above it is
    /// treated as unreadable, so sums and costs of plausible usage never
    /// come near the integer limits.
    pub const MAX_COUNT: u64 = 1_000_000_000_000;

    /// Tokens only (what token budgets and TPM count).
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Prompt tokens read from or written to the provider's cache.
    pub fn cache_tokens(&self) -> u64 {
        self.cached_tokens
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
    }

    /// Prompt tokens of no cache class (billed at the input rate).
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_sub(self.cache_tokens())
    }

    /// Whether every count is at most [`Usage::MAX_COUNT`] and no class
    /// exceeds the total it is a part of.
    pub fn is_plausible(&self) -> bool {
        let counts = [
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.reasoning_tokens,
            self.images,
            self.characters,
            self.audio_seconds,
            self.searches,
        ];
        counts.iter().all(|&n| n <= Self::MAX_COUNT)
            && self.cache_tokens() <= self.prompt_tokens
            && self.reasoning_tokens <= self.completion_tokens
    }

    /// The token counts in OpenAI's `usage` shape: the totals,
    /// `prompt_tokens_details.cached_tokens` and
    /// `completion_tokens_details.reasoning_tokens` as OpenAI has them, and
    /// cache writes as `prompt_tokens_details.cache_write_tokens` (as
    /// OpenAI's 2026 SDK names them) split by lifetime in aigw's extension
    /// fields `cache_write_5m_tokens` and `cache_write_1h_tokens`.
    pub fn to_openai(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total(),
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_5m_tokens.saturating_add(self.cache_write_1h_tokens),
                "cache_write_5m_tokens": self.cache_write_5m_tokens,
                "cache_write_1h_tokens": self.cache_write_1h_tokens,
            },
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }

    /// Whether nothing billable was consumed.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
            && self.images == 0
            && self.characters == 0
            && self.audio_seconds == 0
            && self.searches == 0
    }
}

/// Who a request is for, as its caller says: an end user (OpenAI's `user`,
/// or the `x-aigw-user` header) and up to [`Attribution::MAX_TAGS`] tags.
///
/// Validated at the ingress before anything is queued (see
/// `ingress/src/attribution.rs`): the user is at most 256 bytes of plain
/// text, each tag 1 to 64 characters of `[A-Za-z0-9._:/-]`, tags
/// deduplicated. Left out of stored events when empty, so events written
/// before attribution read and write exactly as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Attribution {
    /// Most tags one request may carry.
    pub const MAX_TAGS: usize = 8;
    /// Longest tag, in characters.
    pub const MAX_TAG_LEN: usize = 64;

    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.tags.is_empty()
    }
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Could not connect, or the connection broke.
    Connect,
    /// No answer within the deadline.
    Timeout,
    /// The upstream said 429.
    RateLimited,
    /// The upstream failed (5xx, or an unreadable answer).
    Upstream,
    /// The upstream refused the request as the caller's fault (4xx).
    Client,
    /// The stream broke after it had started.
    StreamBroken,
    /// The caller went away before the answer was complete.
    Cancelled,
}

impl ErrorClass {
    /// Whether another try (here or elsewhere) could succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Connect
                | ErrorClass::Timeout
                | ErrorClass::RateLimited
                | ErrorClass::Upstream
        )
    }
}

/// One call to one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider_id: Uuid,
    pub provider: String,
    pub model: String,
    /// HTTP status from the upstream, if it answered at all.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<ErrorClass>,
    pub started_at: DateTime<Utc>,
}

/// A routing decision: the strategy, the order it produced, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub strategy: String,
    /// Candidate targets in the order tried (`provider/model`).
    pub order: Vec<String>,
    pub reason: String,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Completed {
        provider_id: Uuid,
        provider: String,
        model: String,
        usage: Usage,
        /// True when the provider never reported usage (a cut stream, a caller
        /// that left) and the counts are aigw's estimate.
        usage_estimated: bool,
        /// Cost with the price in force; `None` when the model has no price.
        cost_micros: Option<i64>,
        /// Some tokens were of a class the price has no rate for, billed at
        /// the fallback rate ([`crate::pricing::Cost::fallback`]).
        price_fallback: bool,
        latency_ms: u64,
        at: DateTime<Utc>,
    },
    Failed {
        /// HTTP status returned to the caller.
        status: u16,
        error_type: String,
        message: String,
        /// Tokens the provider may still bill for (a stream broken mid-way).
        usage: Usage,
        usage_estimated: bool,
        cost_micros: Option<i64>,
        price_fallback: bool,
        latency_ms: u64,
        at: DateTime<Utc>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestCommand {
    /// Record a request's whole story at once.
    RecordRequest {
        key_id: Uuid,
        /// The key's project and team as of the request (absent: none, or
        /// written before teams existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team_id: Option<Uuid>,
        model: String,
        stream: bool,
        accepted_at: DateTime<Utc>,
        route: Option<Route>,
        attempts: Vec<Attempt>,
        outcome: Outcome,
        /// The caller's user and tags, copied into the outcome event.
        attribution: Attribution,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestEvent {
    RequestAccepted {
        key_id: Uuid,
        model: String,
        stream: bool,
        at: DateTime<Utc>,
        /// How the dispatcher chose where to send it.
        #[serde(default)]
        route: Option<Route>,
    },
    AttemptRecorded(Attempt),
    RequestCompleted {
        key_id: Uuid,
        /// The key's project and team as of the request (absent: none, or
        /// written before teams existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team_id: Option<Uuid>,
        provider_id: Uuid,
        provider: String,
        model: String,
        usage: Usage,
        usage_estimated: bool,
        /// Cost with the price in force; `None` when the model has no price
        /// (and in events written before prices existed).
        #[serde(default)]
        cost_micros: Option<i64>,
        /// Some tokens were billed at a fallback rate (their class has no
        /// price); absent (false) in events written before classes existed.
        #[serde(default, skip_serializing_if = "is_false")]
        price_fallback: bool,
        /// The caller's user and tags; absent (empty) in events written
        /// before attribution existed.
        #[serde(default, skip_serializing_if = "Attribution::is_empty")]
        attribution: Attribution,
        latency_ms: u64,
        at: DateTime<Utc>,
    },
    RequestFailed {
        key_id: Uuid,
        /// The key's project and team as of the request (absent: none, or
        /// written before teams existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team_id: Option<Uuid>,
        model: String,
        status: u16,
        error_type: String,
        message: String,
        #[serde(default)]
        usage: Usage,
        #[serde(default)]
        usage_estimated: bool,
        #[serde(default)]
        cost_micros: Option<i64>,
        #[serde(default, skip_serializing_if = "is_false")]
        price_fallback: bool,
        /// The caller's user and tags; absent (empty) in events written
        /// before attribution existed.
        #[serde(default, skip_serializing_if = "Attribution::is_empty")]
        attribution: Attribution,
        latency_ms: u64,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for RequestEvent {
    fn event_type(&self) -> String {
        match self {
            RequestEvent::RequestAccepted { .. } => "RequestAccepted",
            RequestEvent::AttemptRecorded(_) => "AttemptRecorded",
            RequestEvent::RequestCompleted { .. } => "RequestCompleted",
            RequestEvent::RequestFailed { .. } => "RequestFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request is already recorded")]
    AlreadyRecorded,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestAggregate {
    pub recorded: bool,
    pub attempts: usize,
    pub finished: bool,
}

impl Aggregate for RequestAggregate {
    const TYPE: &'static str = "request";
    type Command = RequestCommand;
    type Event = RequestEvent;
    type Error = RequestError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let RequestCommand::RecordRequest {
            key_id,
            project_id,
            team_id,
            model,
            stream,
            accepted_at,
            route,
            attempts,
            outcome,
            attribution,
        } = command;
        if self.recorded {
            return Err(RequestError::AlreadyRecorded);
        }
        let accepted = RequestEvent::RequestAccepted {
            key_id,
            model: model.clone(),
            stream,
            at: accepted_at,
            route,
        };
        sink.write(accepted, self).await;
        for attempt in attempts {
            sink.write(RequestEvent::AttemptRecorded(attempt), self)
                .await;
        }
        let end = match outcome {
            Outcome::Completed {
                provider_id,
                provider,
                model,
                usage,
                usage_estimated,
                cost_micros,
                price_fallback,
                latency_ms,
                at,
            } => RequestEvent::RequestCompleted {
                key_id,
                project_id,
                team_id,
                provider_id,
                provider,
                model,
                usage,
                usage_estimated,
                cost_micros,
                price_fallback,
                attribution,
                latency_ms,
                at,
            },
            Outcome::Failed {
                status,
                error_type,
                message,
                usage,
                usage_estimated,
                cost_micros,
                price_fallback,
                latency_ms,
                at,
            } => RequestEvent::RequestFailed {
                key_id,
                project_id,
                team_id,
                model,
                status,
                error_type,
                message,
                usage,
                usage_estimated,
                cost_micros,
                price_fallback,
                attribution,
                latency_ms,
                at,
            },
        };
        sink.write(end, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RequestEvent::RequestAccepted { .. } => self.recorded = true,
            RequestEvent::AttemptRecorded(_) => self.attempts += 1,
            RequestEvent::RequestCompleted { .. } | RequestEvent::RequestFailed { .. } => {
                self.finished = true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn record() -> RequestCommand {
        let at = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc();
        RequestCommand::RecordRequest {
            key_id: Uuid::nil(),
            project_id: None,
            team_id: None,
            model: "m".into(),
            stream: false,
            accepted_at: at,
            route: None,
            attempts: vec![],
            outcome: Outcome::Completed {
                provider_id: Uuid::nil(),
                provider: "p".into(),
                model: "m".into(),
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                    ..Default::default()
                },
                usage_estimated: false,
                cost_micros: Some(9),
                price_fallback: false,
                latency_ms: 5,
                at,
            },
            attribution: Attribution {
                user: Some("u-1".into()),
                tags: vec!["team:a".into()],
            },
        }
    }

    #[test]
    fn a_request_is_recorded_once() {
        let events = TestFramework::<RequestAggregate>::with(())
            .given_no_previous_events()
            .when(record())
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 2);
        TestFramework::<RequestAggregate>::with(())
            .given(events)
            .when(record())
            .then_expect_error(RequestError::AlreadyRecorded);
    }

    #[test]
    fn token_classes_are_parts_of_their_totals() {
        let u = Usage {
            prompt_tokens: 100,
            completion_tokens: 50,
            cached_tokens: 60,
            cache_write_5m_tokens: 30,
            cache_write_1h_tokens: 10,
            reasoning_tokens: 50,
            ..Default::default()
        };
        assert!(u.is_plausible());
        assert_eq!(u.uncached_prompt_tokens(), 0);
        assert_eq!(u.total(), 150);
        // A provider reporting more cached than prompt tokens (or more
        // reasoning than completion) is not believed: its usage is estimated.
        let too_many_cached = Usage {
            cache_write_1h_tokens: 11,
            ..u
        };
        assert!(!too_many_cached.is_plausible());
        let too_much_reasoning = Usage {
            reasoning_tokens: 51,
            ..u
        };
        assert!(!too_much_reasoning.is_plausible());
        // Serialized without the classes when they are 0, as before them.
        let plain = Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"prompt_tokens":1,"completion_tokens":2}"#
        );
    }

    #[test]
    fn attribution_travels_in_the_outcome_and_is_left_out_when_empty() {
        let events = TestFramework::<RequestAggregate>::with(())
            .given_no_previous_events()
            .when(record())
            .inspect_result()
            .unwrap();
        let RequestEvent::RequestCompleted { attribution, .. } = &events[1] else {
            panic!("{events:?}");
        };
        assert_eq!(attribution.user.as_deref(), Some("u-1"));
        assert_eq!(attribution.tags, ["team:a"]);
        // An outcome without attribution writes no field, and reads back.
        let mut plain = events[1].clone();
        if let RequestEvent::RequestCompleted { attribution, .. } = &mut plain {
            *attribution = Attribution::default();
        }
        let json = serde_json::to_value(&plain).unwrap();
        assert!(
            json["RequestCompleted"].get("attribution").is_none(),
            "{json}"
        );
        assert_eq!(serde_json::from_value::<RequestEvent>(json).unwrap(), plain);
    }

    #[test]
    fn retryable_classes() {
        assert!(ErrorClass::Timeout.is_retryable());
        assert!(ErrorClass::RateLimited.is_retryable());
        assert!(!ErrorClass::Client.is_retryable());
        assert!(!ErrorClass::StreamBroken.is_retryable());
    }
}
