//! Messages between the ingress and the dispatchers.
//!
//! The ingress publishes a [`DispatchRequest`] to JetStream and listens on its
//! `reply_to` subject; the dispatcher answers with frames on that subject,
//! each a core-NATS message whose [`FRAME`] header names its kind.
//!
//! Nothing here may exceed the NATS server's `max_payload` (1 MiB by
//! default), while bodies go up to `AIGW_MAX_BODY_BYTES` (10 MiB) both ways:
//! a request whose message would be too large carries a [`BodyObject`]
//! instead of its body (the body waits in the bodies object store), and any
//! answer frame (`response`, `error`, `chunk`) too large for one message is
//! followed by `part` frames ([`PARTS`], [`part_bytes`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A request accepted by the ingress, waiting for a dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchRequest {
    pub request_id: Uuid,
    pub key_id: Uuid,
    /// Where the answer's frames go; nobody may be listening any more.
    pub reply_to: String,
    pub accepted_at: DateTime<Utc>,
    /// The caller's body, minus aigw's own fields (`provider`); `null` while
    /// it waits in the bodies object store (see `body_object`).
    #[serde(default)]
    pub body: serde_json::Value,
    pub model: String,
    pub stream: bool,
    /// Whether the caller asked for the usage chunk of a stream.
    pub include_usage: bool,
    /// Provider pinned by the caller (id or name).
    pub provider: Option<String>,
    /// After this the caller has given up: a dispatcher that only now gets
    /// the request records it as expired instead of calling a provider.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// The budget hold taken at admission, settled by the dispatcher.
    #[serde(default)]
    pub reservation: Option<Reservation>,
    /// Tokens taken from the key's TPM bucket at admission (corrected to the
    /// actual usage afterwards).
    #[serde(default)]
    pub rate_tokens: Option<u64>,
    /// Which OpenAI endpoint the body is for.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// The key's scopes at admission: every target the dispatcher chooses
    /// (routing, failover) must be allowed by them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<crate::key::KeyScopes>,
    /// Set when the body was too large for the message: it is the JSON
    /// object stored under this name, which the dispatcher loads into
    /// `body` and deletes once the request is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_object: Option<BodyObject>,
    /// The key's project and team as of admission: the request's usage is
    /// recorded against them, and their TPM buckets corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<Uuid>,
    /// The levels above the key whose TPM bucket admission took
    /// `rate_tokens` from (corrected to the actual usage afterwards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_levels: Vec<Level>,
    /// Whether `rate_tokens` came from the key's own TPM bucket too
    /// (absent, in older messages: yes).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub rate_on_key: bool,
    /// The caller's user and tags, validated at the ingress; recorded with
    /// the request's outcome.
    #[serde(default, skip_serializing_if = "crate::Attribution::is_empty")]
    pub attribution: crate::Attribution,
    /// The API dialect the caller spoke: `body` is in it, and the answer
    /// goes back in it. Absent (older messages): OpenAI chat.
    #[serde(default, skip_serializing_if = "Dialect::is_openai_chat")]
    pub dialect: Dialect,
    /// The caller's body byte for byte, for a body in a dialect other than
    /// OpenAI chat that arrived whole at its route: `body` is then null on
    /// the wire, and the dispatcher reads it from this. A same-dialect
    /// upstream gets these bytes, only the model's replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<crate::raw_body::RawBody>,
    /// Dispatcher-side only, never on the wire: the caller's body as it
    /// arrived, when `body` was translated from another dialect into
    /// OpenAI chat (what every adapter takes). A same-dialect upstream gets
    /// this one, verbatim apart from the model.
    #[serde(skip)]
    pub native_body: Option<serde_json::Value>,
    /// Dispatcher-side only, like `native_body`: the first field of the
    /// caller's body that its translation cannot express (only a target
    /// speaking `dialect` natively may take this request).
    #[serde(skip)]
    pub native_only: Option<String>,
}

/// The API dialects a request can arrive in (the ingress dialect seam).
/// A new dialect is one more variant here, one ingress module and one
/// dispatcher module that renders answers in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dialect {
    /// OpenAI's `/v1/chat/completions` (and the other OpenAI endpoints).
    #[default]
    OpenaiChat,
    /// Anthropic's `/v1/messages`.
    AnthropicMessages {
        /// The caller's `anthropic-version` header, forwarded to
        /// Anthropic-native upstreams.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// The caller's `anthropic-beta` header, forwarded likewise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beta: Option<String>,
    },
    /// Gemini's `generateContent` / `streamGenerateContent`
    /// (`/v1beta/models/{model}:...`). The body has no model: it is
    /// `DispatchRequest::model`, from the path.
    GeminiGenerate,
    /// OpenAI's Responses API (`/v1/responses`).
    OpenaiResponses,
}

impl Dialect {
    /// Whether this is the default dialect (left out of messages).
    pub fn is_openai_chat(&self) -> bool {
        matches!(self, Dialect::OpenaiChat)
    }

    /// A short label for logs, spans and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Dialect::OpenaiChat => "openai_chat",
            Dialect::AnthropicMessages { .. } => "anthropic_messages",
            Dialect::GeminiGenerate => "gemini_generate",
            Dialect::OpenaiResponses => "openai_responses",
        }
    }
}

/// A request body stored in the bodies object store instead of its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyObject {
    /// The object's name in the bucket (the request id).
    pub name: String,
    /// The stored JSON's length in bytes.
    pub bytes: u64,
    /// Whether it is the caller's body byte for byte (`raw_body`), not
    /// `body`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

/// The endpoints aigw relays (OpenAI's, and the rerank endpoint OpenAI has
/// not but Cohere, Jina, SiliconFlow and Voyage share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    #[default]
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/images/generations`.
    Images,
    /// `/v1/audio/speech`.
    Speech,
    /// `/v1/audio/transcriptions`.
    Transcriptions,
    /// `/v1/rerank` (Cohere, Jina, SiliconFlow and Voyage style).
    Rerank,
    /// `/v1/moderations`.
    Moderations,
}

impl Endpoint {
    /// The OpenAI path, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Images => "/v1/images/generations",
            Endpoint::Speech => "/v1/audio/speech",
            Endpoint::Transcriptions => "/v1/audio/transcriptions",
            Endpoint::Rerank => "/v1/rerank",
            Endpoint::Moderations => "/v1/moderations",
        }
    }

    /// The OpenTelemetry GenAI `gen_ai.operation.name` of a call.
    pub fn gen_ai_operation(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Images | Endpoint::Speech | Endpoint::Transcriptions => "generate_content",
            // Not among GenAI's well-known values, which allow others.
            Endpoint::Rerank => "rerank",
            Endpoint::Moderations => "moderation",
        }
    }
}

/// A budget hold: where it is and how much it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Budget period id (see `BudgetPeriod::period_id`).
    pub period: String,
    pub micros: i64,
    pub tokens: i64,
    /// The ingress replica's admission lease the hold was taken from, if any
    /// (the hold then reaches the shared budget entry asynchronously, and
    /// settling needs to know where to look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRef>,
    /// Whether the hold above is on the key's own budget (false when only
    /// its project or team has a budget; absent, in older messages, true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub on_key: bool,
    /// The same hold (`micros`, `tokens`) on the budgets of the key's
    /// project and team: taken all or nothing at admission, settled at
    /// each level once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelHold>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A level of limits above a key: its project or its team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "level", content = "id", rename_all = "snake_case")]
pub enum Level {
    Project(Uuid),
    Team(Uuid),
}

impl Level {
    /// `project` or `team`.
    pub fn kind(self) -> &'static str {
        match self {
            Level::Project(_) => "project",
            Level::Team(_) => "team",
        }
    }

    pub fn id(self) -> Uuid {
        match self {
            Level::Project(id) | Level::Team(id) => id,
        }
    }
}

/// A request's hold on the budget of one level above its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelHold {
    pub level: Level,
    /// The level's budget period id.
    pub period: String,
    /// The ingress replica's lease of that level's budget the hold came
    /// from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRef>,
}

/// A hold taken from an admission lease: the lease and the hold's number in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    pub id: Uuid,
    pub seq: u64,
}

/// Header naming a frame's kind: one of the `FRAME_*` values.
pub const FRAME: &str = "Aigw-Frame";
/// Header with the JetStream delivery count that produced the frame.
pub const DELIVERY: &str = "Aigw-Delivery";
/// Header with a frame's position in the answer (0, 1, 2, ...).
pub const SEQ: &str = "Aigw-Seq";
/// Header with the HTTP status of a `response` or `error` frame.
pub const STATUS: &str = "Aigw-Status";
/// Header naming the provider that served the request.
pub const PROVIDER: &str = "Aigw-Provider";
/// Header with the number of upstream attempts made.
pub const ATTEMPTS: &str = "Aigw-Attempts";
/// Header with the value of an upstream's `Retry-After`.
pub const RETRY_AFTER: &str = "Aigw-Retry-After";
/// Header with a `response` frame's body type (absent: `application/json`).
pub const CONTENT_TYPE: &str = "Aigw-Content-Type";
/// Header with what the answer cost ([`AnswerCost::header_value`]): on a
/// successful `response` frame, and on a stream's `chunk` that carries the
/// usage the caller asked for. The dispatcher prices the usage once, when
/// it is known, and this is that cost, the one the request's outcome event
/// records; the ingress shows it in the caller's dialect and never prices
/// anything itself.
pub const COST: &str = "Aigw-Cost";
/// Header with the number of frames a `response`, `error` or `chunk`
/// payload is split into (absent: one); the `part` frames that follow, with
/// the next sequence numbers, carry the rest in order.
pub const PARTS: &str = "Aigw-Parts";
/// Largest payload piece in one frame: well under NATS's default 1 MB
/// payload, so images and audio of any size get through.
pub const PART_BYTES: usize = 512 * 1024;
/// Room left in a frame for its headers.
pub const FRAME_HEADROOM: usize = 4 * 1024;
/// The smallest piece a payload is split into, however small the server's
/// `max_payload` claims to be.
pub const MIN_PART_BYTES: usize = 1024;

/// The payload piece size for a connection whose server accepts messages of
/// up to `max_payload` bytes: [`PART_BYTES`], or less on a server with a
/// smaller limit.
pub fn part_bytes(max_payload: usize) -> usize {
    max_payload
        .saturating_sub(FRAME_HEADROOM)
        .clamp(MIN_PART_BYTES, PART_BYTES)
}

/// A complete non-streamed answer; the payload is the body.
pub const FRAME_RESPONSE: &str = "response";
/// An error answer; the payload is OpenAI's error JSON.
pub const FRAME_ERROR: &str = "error";
/// A further piece of a `response`, `error` or `chunk` payload (see [`PARTS`]).
pub const FRAME_PART: &str = "part";
/// A stream has begun (the upstream accepted it).
pub const FRAME_START: &str = "start";
/// One SSE data payload (a chat.completion.chunk JSON).
pub const FRAME_CHUNK: &str = "chunk";
/// The stream finished cleanly.
pub const FRAME_END: &str = "end";

/// What an answer cost, as its request's events record it (`cost_micros`
/// of `RequestCompleted`/`RequestFailed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerCost {
    /// Priced: this many micro-dollars (never negative).
    Micros(i64),
    /// The model has no price (or the cost did not fit): usage is recorded
    /// and flagged, never billed as $0 silently.
    Unpriced,
}

impl AnswerCost {
    /// The value of [`COST`] for an unpriced answer.
    const UNPRICED: &'static str = "unpriced";

    /// From an outcome's `cost_micros` (`None`: unpriced).
    pub fn of(cost_micros: Option<i64>) -> Self {
        match cost_micros {
            Some(m) if m >= 0 => AnswerCost::Micros(m),
            _ => AnswerCost::Unpriced,
        }
    }

    /// The cost in micro-dollars, `None` when unpriced.
    pub fn micros(self) -> Option<i64> {
        match self {
            AnswerCost::Micros(m) => Some(m),
            AnswerCost::Unpriced => None,
        }
    }

    /// The [`COST`] header's value.
    pub fn header_value(self) -> String {
        match self {
            AnswerCost::Micros(m) => m.to_string(),
            AnswerCost::Unpriced => Self::UNPRICED.to_string(),
        }
    }

    /// Reads a [`COST`] header's value; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        if value == Self::UNPRICED {
            return Some(AnswerCost::Unpriced);
        }
        // Digits only: no sign, no spaces.
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.parse::<i64>().ok().map(AnswerCost::Micros)
    }
}

/// OpenAI's error JSON: `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, error_type: &str, code: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": null,
            "code": code,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_costs_travel_in_a_header_and_back() {
        for cost in [
            AnswerCost::Micros(0),
            AnswerCost::Micros(210),
            AnswerCost::Micros(i64::MAX),
            AnswerCost::Unpriced,
        ] {
            assert_eq!(AnswerCost::parse(&cost.header_value()), Some(cost));
        }
        assert_eq!(AnswerCost::of(Some(18)), AnswerCost::Micros(18));
        assert_eq!(AnswerCost::of(None), AnswerCost::Unpriced);
        // Never a negative amount (aigw never prices one).
        assert_eq!(AnswerCost::of(Some(-1)), AnswerCost::Unpriced);
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.5",
            "9223372036854775808",
            "UNPRICED",
        ] {
            assert_eq!(AnswerCost::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dialects_travel_and_default_to_openai_chat() {
        let old = serde_json::json!({
            "request_id": Uuid::nil(), "key_id": Uuid::nil(), "reply_to": "r",
            "accepted_at": "2026-01-01T00:00:00Z", "body": {}, "model": "m",
            "stream": false, "include_usage": false, "provider": null,
        });
        let request: DispatchRequest = serde_json::from_value(old).unwrap();
        assert_eq!(request.dialect, Dialect::OpenaiChat);
        let encoded = serde_json::to_value(&request).unwrap();
        assert!(encoded.get("dialect").is_none());
        let mut anthropic = request.clone();
        anthropic.dialect = Dialect::AnthropicMessages {
            version: None,
            beta: Some("context-1m-2025-08-07".into()),
        };
        anthropic.native_body = Some(serde_json::json!({"secret": "never sent"}));
        anthropic.native_only = Some("top_k".into());
        let encoded = serde_json::to_value(&anthropic).unwrap();
        assert_eq!(
            encoded["dialect"],
            serde_json::json!({"kind": "anthropic_messages", "beta": "context-1m-2025-08-07"})
        );
        assert!(encoded.get("native_body").is_none());
        let back: DispatchRequest = serde_json::from_value(encoded).unwrap();
        assert_eq!(back.dialect, anthropic.dialect);
        assert_eq!(back.native_body, None);
        assert_eq!(back.native_only, None);
        let mut gemini = request.clone();
        gemini.dialect = Dialect::GeminiGenerate;
        let encoded = serde_json::to_value(&gemini).unwrap();
        assert_eq!(
            encoded["dialect"],
            serde_json::json!({"kind": "gemini_generate"})
        );
        let back: DispatchRequest = serde_json::from_value(encoded).unwrap();
        assert_eq!(back.dialect, Dialect::GeminiGenerate);
    }

    #[test]
    fn parts_fit_the_server() {
        assert_eq!(part_bytes(1024 * 1024), PART_BYTES);
        assert_eq!(part_bytes(64 * 1024 * 1024), PART_BYTES);
        assert_eq!(part_bytes(256 * 1024), 256 * 1024 - FRAME_HEADROOM);
        assert_eq!(part_bytes(0), MIN_PART_BYTES);
    }
}
