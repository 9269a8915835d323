//! Schemas of the callers' API (`/v1`, `/stats`) for the OpenAPI document.
//!
//! The handlers read and write JSON as `serde_json::Value` (unknown fields
//! pass through to providers untouched), so these types exist only to
//! describe the wire: they are never built. Each says what aigw checks or
//! always sends; everything else stays open (`additionalProperties`), as
//! providers add fields of their own. Keep them true to the handlers: the
//! schemathesis run in `tests/api/openapi.rs` checks every answer against
//! them.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// OpenAI's error JSON: every error aigw answers has this shape.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(ToSchema)]
pub struct ErrorObject {
    /// What went wrong, for a person to read.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`, ...
    pub r#type: String,
    /// The offending field, when one is to blame.
    #[schema(required = true)]
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `invalid_api_key`, ...).
    #[schema(required = true)]
    pub code: Option<String>,
}

/// One chat message; the content is a string or OpenAI's content parts.
#[derive(ToSchema)]
pub struct ChatMessage {
    #[schema(example = "user")]
    pub role: MessageRole,
    /// A string, content parts, or `null` (an assistant's tool calls).
    #[schema(example = "Hello!")]
    pub content: Value,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MessageRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// `stream_options` of a streamed chat.
#[derive(ToSchema)]
pub struct StreamOptions {
    /// Ask for a final chunk with the usage (and aigw's `cost_usd`).
    pub include_usage: Option<bool>,
}

/// OpenAI's chat completion request. Fields not listed here (tools,
/// response_format, seed, ...) are passed to the provider untouched.
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    /// A model id a provider serves, `provider/model`, or an alias.
    #[schema(example = "gpt-4o-mini", max_length = 256)]
    pub model: String,
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    /// Relay the answer as server-sent events.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u64>,
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u64>,
    #[schema(minimum = 1, maximum = 128)]
    pub n: Option<u32>,
    /// Pins a provider (id or name); not forwarded.
    pub provider: Option<String>,
}

/// Token counts of an answer; `cost_usd` is aigw's own (streams only).
#[derive(ToSchema)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    /// USD this request cost (in a stream's usage chunk; absent when the
    /// model has no price).
    pub cost_usd: Option<f64>,
}

#[derive(ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    #[schema(value_type = Object)]
    pub message: Value,
    pub finish_reason: Option<String>,
}

/// OpenAI's chat completion, as the provider answered it.
#[derive(ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    #[schema(example = "chat.completion")]
    pub object: String,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Option<Usage>,
}

/// OpenAI's embeddings request.
#[derive(ToSchema)]
pub struct EmbeddingsRequest {
    #[schema(example = "text-embedding-3-small")]
    pub model: String,
    /// A string, an array of strings, or token arrays.
    #[schema(example = "The food was delicious.")]
    pub input: Value,
    #[schema(example = "float")]
    pub encoding_format: Option<String>,
    #[schema(minimum = 1)]
    pub dimensions: Option<u32>,
}

#[derive(ToSchema)]
pub struct Embedding {
    pub index: u32,
    /// Floats, or a base64 string with `encoding_format: "base64"`.
    pub embedding: Value,
}

#[derive(ToSchema)]
pub struct EmbeddingsResponse {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: Option<Usage>,
}

/// A rerank request: Cohere's, Jina's and SiliconFlow's shape (Voyage's
/// `top_k` is taken for `top_n`).
#[derive(ToSchema)]
pub struct RerankRequest {
    #[schema(example = "rerank-v3.5")]
    pub model: String,
    #[schema(example = "What is the capital of France?", max_length = 32768)]
    pub query: String,
    /// 1 to 10,000 strings, or objects with a `text`.
    #[schema(min_items = 1, max_items = 10000)]
    pub documents: Vec<Value>,
    /// How many results to return (all by default).
    #[schema(minimum = 1, maximum = 10000)]
    pub top_n: Option<u32>,
    /// Whether each result carries its document's text.
    pub return_documents: Option<bool>,
    /// Cohere: the longest a document may be before it is split.
    #[schema(minimum = 1)]
    pub max_tokens_per_doc: Option<u32>,
}

#[derive(ToSchema)]
pub struct RerankResult {
    /// The document's position in the request's `documents`.
    pub index: u32,
    pub relevance_score: f64,
    /// `{"text": ...}`, with `return_documents: true`.
    #[schema(value_type = Option<Object>)]
    pub document: Option<Value>,
}

/// The documents' scores, most relevant first.
#[derive(ToSchema)]
pub struct RerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<RerankResult>,
    /// `total_tokens` the provider reported, where it bills tokens.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
    /// `billed_units.search_units`, where the provider bills searches.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
}

/// OpenAI's moderation request.
#[derive(ToSchema)]
pub struct ModerationRequest {
    /// Defaults to `omni-moderation-latest`.
    #[schema(example = "omni-moderation-latest")]
    pub model: Option<String>,
    /// A string, an array of strings, or an array of `text` and
    /// `image_url` parts (at most 2,048 items).
    #[schema(example = "I want to hurt them.")]
    pub input: Value,
}

/// OpenAI's moderation, as the provider answered it.
#[derive(ToSchema)]
pub struct ModerationResponse {
    pub id: String,
    pub model: String,
    /// One per input: `flagged`, `categories`, `category_scores`.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// OpenAI's image generation request.
#[derive(ToSchema)]
pub struct ImagesRequest {
    #[schema(example = "gpt-image-1")]
    pub model: String,
    #[schema(example = "A lighthouse at dawn", max_length = 32000)]
    pub prompt: String,
    #[schema(minimum = 1, maximum = 10)]
    pub n: Option<u32>,
    /// `WxH`, e.g. `1024x1024`.
    #[schema(example = "1024x1024")]
    pub size: Option<String>,
    pub response_format: Option<ImageFormat>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ImageFormat {
    B64Json,
    Url,
}

/// One image: `b64_json` or `url`.
#[derive(ToSchema)]
pub struct Image {
    pub b64_json: Option<String>,
    pub url: Option<String>,
    pub revised_prompt: Option<String>,
}

#[derive(ToSchema)]
pub struct ImagesResponse {
    pub created: i64,
    pub data: Vec<Image>,
}

/// OpenAI's text-to-speech request.
#[derive(ToSchema)]
pub struct SpeechRequest {
    #[schema(example = "tts-1")]
    pub model: String,
    #[schema(max_length = 4096, example = "Hello there.")]
    pub input: String,
    #[schema(example = "alloy", max_length = 64)]
    pub voice: String,
    #[schema(example = "mp3")]
    pub response_format: Option<SpeechFormat>,
    #[schema(minimum = 0.25, maximum = 4.0)]
    pub speed: Option<f64>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SpeechFormat {
    Mp3,
    Opus,
    Aac,
    Flac,
    Wav,
    Pcm,
}

/// OpenAI's transcription request, as `multipart/form-data`.
#[derive(ToSchema)]
pub struct TranscriptionRequest {
    /// The audio file, at most 25 MB.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
    #[schema(example = "whisper-1")]
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: Option<f64>,
    /// `json` (the default) or `text`.
    pub response_format: Option<String>,
}

#[derive(ToSchema)]
pub struct Transcription {
    pub text: String,
}

#[derive(ToSchema)]
pub struct Model {
    pub id: String,
    #[schema(example = "model")]
    pub object: String,
    pub created: i64,
    /// The provider serving it (`aigw` for an alias).
    pub owned_by: String,
}

#[derive(ToSchema)]
pub struct ModelList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Model>,
}

/// A chat completion body (not streamed) plus the job's own fields; or,
/// instead of the chat fields, an envelope: `url` names the route whose
/// dialect `body` speaks (`/v1/chat/completions`, `/v1/messages`,
/// `/v1beta/models/{model}:generateContent`), and the result is in that
/// dialect.
#[derive(ToSchema)]
pub struct JobRequest {
    /// Required without `url`.
    #[schema(example = "gpt-4o-mini", max_length = 256)]
    pub model: Option<String>,
    /// Required without `url`.
    #[schema(min_items = 1)]
    pub messages: Option<Vec<ChatMessage>>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u64>,
    /// The route whose dialect `body` speaks (then no chat fields here).
    #[schema(example = "/v1/messages", max_length = 512)]
    pub url: Option<String>,
    /// With `url`: the request, as that route takes it (not streamed).
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// Where the finished job is POSTed (public http or https URL).
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
    /// Up to 16 string pairs, kept with the job.
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A background job, as `/v1/jobs`, the admin's job endpoints and webhooks
/// show it.
#[derive(ToSchema)]
pub struct Job {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "job")]
    pub object: String,
    pub status: JobStatus,
    pub model: String,
    /// Unix seconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: u32,
    pub metadata: BTreeMap<String, String>,
    pub webhook_url: Option<String>,
    /// The webhook's delivery state.
    pub webhook: Value,
    pub provider: Option<String>,
    /// The full chat completion, once succeeded.
    pub result: Value,
    /// OpenAI's error object, once failed.
    pub error: Value,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// The submitting key (admin views only).
    #[schema(format = Uuid)]
    pub key_id: Option<String>,
}

#[derive(ToSchema)]
pub struct JobList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<Job>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// A key's limits (`null`: no limit).
#[derive(ToSchema)]
pub struct KeyLimits {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<i64>,
    pub budget_period: BudgetPeriod,
    pub max_concurrency: Option<u32>,
    /// Budget alert thresholds, in percent.
    pub alert_thresholds: Vec<u8>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Daily,
    Monthly,
    Total,
}

#[derive(ToSchema)]
pub struct KeyScopes {
    pub allowed_models: Vec<String>,
    pub allowed_providers: Vec<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
    Unissued,
}

/// An API key as the admin API shows it (never its secret, but for `key`
/// right after creation or rotation).
#[derive(ToSchema)]
pub struct ApiKey {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "api_key")]
    pub object: String,
    pub name: String,
    pub owner: Option<String>,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub status: KeyStatus,
    pub limits: KeyLimits,
    pub scopes: KeyScopes,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// The project the key belongs to, if any.
    #[schema(format = Uuid)]
    pub project_id: Option<String>,
    /// The secret: only in the answers to create and rotate.
    pub key: Option<String>,
    /// The current period's budget (one key, top-up).
    pub budget: Option<Budget>,
}

/// The current budget period: budget, spent, held by running requests,
/// remaining (`null`: no budget).
#[derive(ToSchema)]
pub struct Budget {
    pub period: String,
    pub budget_usd: Option<f64>,
    pub spent_usd: f64,
    pub held_usd: f64,
    pub remaining_usd: Option<f64>,
    pub budget_tokens: Option<i64>,
    pub spent_tokens: i64,
    pub held_tokens: i64,
    pub remaining_tokens: Option<i64>,
    pub spent_micros: i64,
}

/// `GET /v1/key`: the caller's own key with its budget flattened in.
#[derive(ToSchema)]
pub struct OwnKey {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub status: KeyStatus,
    pub limits: KeyLimits,
    pub scopes: KeyScopes,
    pub period: String,
    pub budget_usd: Option<f64>,
    pub spent_usd: f64,
    pub held_usd: f64,
    pub remaining_usd: Option<f64>,
    /// Requests of the key running now (with `max_concurrency` only).
    pub in_flight: Option<u64>,
    /// Signs this key's job webhooks (`x-aigw-signature`).
    pub webhook_secret: Option<String>,
    #[schema(format = Uuid)]
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    #[schema(format = Uuid)]
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    /// The level whose budget leaves the least (`remaining_usd`,
    /// `remaining_tokens` are that level's); absent without any budget.
    pub limited_by: Option<LimitLevel>,
    /// Every level's budget and rate limits (key, project, team).
    pub levels: Vec<LevelLimits>,
    /// The lowest requests per minute of every level.
    pub rpm: Option<u32>,
    /// The lowest tokens per minute of every level.
    pub tpm: Option<u64>,
    /// The least tokens any level's budget has left.
    pub remaining_tokens: Option<i64>,
}

/// A level of limits.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitLevel {
    Key,
    Project,
    Team,
}

/// One level's limits as `GET /v1/key` shows them.
#[derive(ToSchema)]
pub struct LevelLimits {
    pub level: LimitLevel,
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub limits: KeyLimits,
    pub budget: Option<Budget>,
}

/// Usage totals of one day and model, or of a whole report.
#[derive(ToSchema)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    pub cost_micros: i64,
}

/// `GET /stats`: the caller's usage by day and model, with totals.
#[derive(ToSchema)]
pub struct Stats {
    #[schema(example = "stats")]
    pub object: String,
    #[schema(format = Uuid)]
    pub key_id: String,
    pub totals: UsageTotals,
    pub data: Vec<UsageTotals>,
}

/// Gemini's error JSON: every error of the `/v1beta` routes.
#[derive(ToSchema)]
pub struct GeminiErrorBody {
    pub error: GeminiErrorObject,
}

#[derive(ToSchema)]
pub struct GeminiErrorObject {
    /// The HTTP status.
    pub code: u16,
    pub message: String,
    /// Google's status name: `INVALID_ARGUMENT`, `UNAUTHENTICATED`,
    /// `PERMISSION_DENIED`, `NOT_FOUND`, `RESOURCE_EXHAUSTED`,
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, ...
    pub status: String,
}

/// Anthropic's error JSON: every error of the Messages routes.
#[derive(ToSchema)]
pub struct AnthropicErrorBody {
    /// Always `error`.
    pub r#type: String,
    pub error: AnthropicErrorObject,
}

#[derive(ToSchema)]
pub struct AnthropicErrorObject {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `request_too_large`, `rate_limit_error`,
    /// `timeout_error`, `api_error`, `overloaded_error`.
    pub r#type: String,
    pub message: String,
}

/// One message of a Messages request.
#[derive(ToSchema)]
pub struct AnthropicMessage {
    #[schema(example = "user")]
    pub role: AnthropicRole,
    /// A string or Anthropic's content blocks (text, image, tool_use,
    /// tool_result, thinking, ...).
    #[schema(example = "Hello!")]
    pub content: Value,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum AnthropicRole {
    User,
    Assistant,
}

/// Anthropic's Messages request. Fields not listed here (tools,
/// tool_choice, thinking, stop_sequences, metadata, ...) go verbatim to
/// Anthropic-native providers and are translated (or, when advisory,
/// dropped) for the others; see the README.
#[derive(ToSchema)]
pub struct MessagesRequest {
    /// A model id a provider serves, `provider/model`, or an alias.
    #[schema(example = "claude-sonnet-5", max_length = 256)]
    pub model: String,
    /// Required by the Messages API (optional for `count_tokens`).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u64>,
    #[schema(min_items = 1)]
    pub messages: Vec<AnthropicMessage>,
    /// A string or text blocks.
    pub system: Option<Value>,
    /// Relay the answer as Anthropic's server-sent events.
    pub stream: Option<bool>,
}

/// Anthropic's `message` answer.
#[derive(ToSchema)]
pub struct Message {
    pub id: String,
    /// Always `message`.
    pub r#type: String,
    pub role: String,
    pub model: String,
    /// Content blocks: text, thinking, tool_use, ...
    pub content: Vec<Value>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, ...
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    /// `input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    /// `cache_creation_input_tokens`.
    pub usage: Value,
}

/// `count_tokens`' answer.
#[derive(ToSchema)]
pub struct TokenCount {
    pub input_tokens: u64,
}

/// OpenAI's Responses request. Fields not listed here (tools, tool_choice,
/// reasoning, text.format, max_output_tokens, ...) are translated for
/// OpenAI-compatible providers, or, when advisory, dropped; see the README.
#[derive(ToSchema)]
pub struct ResponsesRequest {
    /// A model id a provider serves, `provider/model`, or an alias.
    #[schema(example = "gpt-5", max_length = 256)]
    pub model: String,
    /// A string (one user message) or input items: messages,
    /// `function_call`, `function_call_output`, ...
    #[schema(example = "Hello!")]
    pub input: Value,
    /// The system prompt.
    pub instructions: Option<String>,
    /// Relay the answer as the Responses server-sent events.
    pub stream: Option<bool>,
}

/// OpenAI's `response` answer.
#[derive(ToSchema)]
pub struct ResponseObject {
    /// `resp_...`.
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// `completed`, or `incomplete` (see `incomplete_details`).
    pub status: String,
    pub model: String,
    /// Output items: `reasoning`, `message`, `function_call`, ...
    pub output: Vec<Value>,
    /// `input_tokens`, `output_tokens`, `total_tokens` and their details.
    pub usage: Value,
}

/// A deleted stored response.
#[derive(ToSchema)]
pub struct ResponseDeleted {
    /// `resp_...`.
    pub id: String,
    /// Always `response.deleted`.
    #[schema(example = "response.deleted")]
    pub object: String,
    pub deleted: bool,
}

/// A page of a stored response's input items.
#[derive(ToSchema)]
pub struct InputItemList {
    #[schema(example = "list")]
    pub object: String,
    /// Input items (`message`, `function_call`, `function_call_output`, ...).
    pub data: Vec<Value>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}
