//! The dispatcher's part of a request's trace: the dispatch span (the
//! consumer end of the JetStream hop, child of the ingress's publish span
//! through the message's `traceparent`), one client span per upstream
//! attempt, and the span of the event commit, with the OpenTelemetry GenAI
//! attributes (`gen_ai.*`) and aigw's own (`aigw.*`).
//!
//! Invariants: with tracing off (`aigw_runtime::traces::enabled`), spans
//! keep their former shape and nothing here parses or serializes a body.
//! Prompt and completion text go on spans only through
//! `traces::content` (off unless `AIGW_TRACE_CONTENT=true`). A key appears
//! by its id, never by its secret, and credentials never.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_events::wire::DispatchRequest;
use aigw_runtime::Target;
use aigw_runtime::traces;
use async_nats::jetstream::Message;
use serde::Deserialize;
use serde_json::Value;
use tracing::Span;

use crate::attempt::AttemptResult;
use crate::record::Billed;

/// The span of one delivery of a request (or job) message, continuing the
/// trace its publisher put in the message's headers.
pub(crate) fn delivery(name: &'static str, msg: &Message) -> Span {
    if !traces::enabled() {
        return match name {
            "job" => tracing::info_span!("job"),
            _ => tracing::info_span!("dispatch"),
        };
    }
    let span = match name {
        "job" => tracing::info_span!(
            "job",
            otel.kind = "consumer",
            otel.name = %format!("process {}", traces::subject_template(&msg.subject)),
            trace_id = tracing::field::Empty,
        ),
        _ => tracing::info_span!(
            "dispatch",
            otel.kind = "consumer",
            otel.name = %format!("process {}", traces::subject_template(&msg.subject)),
            trace_id = tracing::field::Empty,
        ),
    };
    traces::continue_from_nats(&span, msg.headers.as_ref());
    traces::attr(&span, "messaging.system", "nats");
    traces::attr(&span, "messaging.operation.type", "process");
    traces::attr(&span, "messaging.destination.name", msg.subject.to_string());
    if let Ok(info) = msg.info() {
        traces::attr(&span, "messaging.nats.delivery_count", info.delivered);
    }
    span
}

/// What the dispatch span knows once the request is read.
pub(crate) fn request(span: &Span, request: &DispatchRequest) {
    if !traces::enabled() {
        return;
    }
    traces::attr(span, "aigw.request_id", request.request_id.to_string());
    traces::attr(span, "aigw.key_id", request.key_id.to_string());
    traces::attr(
        span,
        "gen_ai.operation.name",
        request.endpoint.gen_ai_operation(),
    );
    traces::attr(span, "gen_ai.request.model", request.model.clone());
}

/// The dispatch span's outcome: who served it, what it used and cost.
pub(crate) fn outcome(span: &Span, outcome: &aigw_events::Outcome, attempts: usize) {
    if !traces::enabled() {
        return;
    }
    traces::attr(span, "aigw.attempts", attempts as i64);
    match outcome {
        aigw_events::Outcome::Completed {
            provider,
            model,
            usage,
            cost_micros,
            ..
        } => {
            traces::attr(span, "aigw.provider", provider.clone());
            traces::attr(span, "aigw.model", model.clone());
            usage_and_cost(span, usage, *cost_micros);
        }
        aigw_events::Outcome::Failed {
            status,
            error_type,
            usage,
            cost_micros,
            ..
        } => {
            usage_and_cost(span, usage, *cost_micros);
            traces::attr(span, "aigw.status", i64::from(*status));
            traces::error(span, error_type.clone());
        }
    }
}

fn usage_and_cost(span: &Span, usage: &Usage, cost_micros: Option<i64>) {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    traces::attr(
        span,
        "gen_ai.usage.input_tokens",
        count(usage.prompt_tokens),
    );
    traces::attr(
        span,
        "gen_ai.usage.output_tokens",
        count(usage.completion_tokens),
    );
    if let Some(micros) = cost_micros {
        // A display value: the recorded cost stays integer micro-dollars.
        traces::attr(span, "aigw.cost_usd", micros as f64 / 1_000_000.0);
    }
}

/// The GenAI `gen_ai.system` of a provider: its preset for
/// OpenAI-compatible ones (`deepseek`, `mistral`, ...), else its kind.
pub(crate) fn gen_ai_system(spec: &ProviderSpec) -> String {
    crate::providers::of(spec.kind).gen_ai_system(spec)
}

/// The client span of one upstream attempt (`{operation} {model}`).
pub(crate) fn attempt(request: &DispatchRequest, target: &Target, attempt_no: usize) -> Span {
    if !traces::enabled() {
        return Span::none();
    }
    let operation = request.endpoint.gen_ai_operation();
    let span = tracing::info_span!(
        "upstream",
        otel.kind = "client",
        otel.name = %format!("{operation} {}", target.model),
    );
    let spec = &target.provider.spec;
    traces::attr(&span, "gen_ai.system", gen_ai_system(spec));
    traces::attr(&span, "gen_ai.operation.name", operation);
    traces::attr(&span, "gen_ai.request.model", target.model.clone());
    traces::attr(&span, "aigw.provider", spec.name.clone());
    traces::attr(&span, "aigw.provider_id", target.provider.id.to_string());
    traces::attr(&span, "aigw.attempt", attempt_no as i64);
    traces::attr(&span, "aigw.key_id", request.key_id.to_string());
    if let Some(host) = reqwest::Url::parse(&spec.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        traces::attr(&span, "server.address", host);
    }
    if let Some(v) = request.body.get("temperature").and_then(Value::as_f64) {
        traces::attr(&span, "gen_ai.request.temperature", v);
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = request.body.get(field).and_then(Value::as_i64) {
            traces::attr(&span, "gen_ai.request.max_tokens", v);
        }
    }
    if traces::content_enabled() {
        let input = ["messages", "input", "prompt"]
            .iter()
            .find_map(|f| request.body.get(*f));
        if let Some(text) = input
            .and_then(|v| serde_json::to_string(v).ok())
            .and_then(|t| traces::content(&t))
        {
            traces::attr(&span, "gen_ai.input.messages", text);
        }
    }
    span
}

/// What the attempt span learns from its result.
pub(crate) fn attempt_result(span: &Span, result: &AttemptResult) {
    if !traces::enabled() {
        return;
    }
    let billed: &Billed = match result {
        AttemptResult::Done { billed, status } => {
            traces::attr(span, "http.response.status_code", i64::from(*status));
            billed
        }
        AttemptResult::Failed { error, billed, .. } => {
            if let Some(status) = error.upstream_status {
                traces::attr(span, "http.response.status_code", i64::from(status));
            }
            traces::error(span, format!("{:?}", error.class()).to_lowercase());
            billed
        }
    };
    usage_and_cost(span, &billed.usage, billed.cost_micros);
    if billed.estimated {
        traces::attr(span, "aigw.usage_estimated", true);
    }
}

/// The response fields of an OpenAI answer the attempt span names.
#[derive(Deserialize)]
struct ResponseMeta {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChoiceMeta>,
}

#[derive(Deserialize)]
struct ChoiceMeta {
    finish_reason: Option<String>,
    message: Option<Value>,
}

/// The response model, id, finish reasons (and, with content tracing, the
/// output messages) of a whole OpenAI answer, on the current attempt span.
pub(crate) fn full_answer(body: &[u8]) {
    if !traces::enabled() {
        return;
    }
    let span = Span::current();
    let Ok(meta) = serde_json::from_slice::<ResponseMeta>(body) else {
        return;
    };
    if let Some(model) = meta.model {
        traces::attr(&span, "gen_ai.response.model", model);
    }
    if let Some(id) = meta.id {
        traces::attr(&span, "gen_ai.response.id", id);
    }
    let reasons: Vec<String> = meta
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.clone())
        .collect();
    if !reasons.is_empty() {
        traces::strings(&span, "gen_ai.response.finish_reasons", reasons);
    }
    if traces::content_enabled() {
        let messages: Vec<&Value> = meta
            .choices
            .iter()
            .filter_map(|c| c.message.as_ref())
            .collect();
        if let Some(text) = serde_json::to_string(&messages)
            .ok()
            .and_then(|t| traces::content(&t))
        {
            traces::attr(&span, "gen_ai.output.messages", text);
        }
    }
}

/// A streamed answer as the attempt span sees it: the response model and
/// id of its chunks, and (with content tracing) the text they carry,
/// bounded.
#[derive(Default)]
pub(crate) struct StreamSeen {
    model: Option<String>,
    id: Option<String>,
    finish: Option<String>,
    text: Option<String>,
}

impl StreamSeen {
    pub(crate) fn new() -> Self {
        Self {
            text: traces::content_enabled().then(String::new),
            ..Self::default()
        }
    }

    /// Notes one chunk (only when tracing).
    pub(crate) fn chunk(&mut self, chunk: &Value) {
        if !traces::enabled() {
            return;
        }
        if self.model.is_none() {
            self.model = chunk
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if self.id.is_none() {
            self.id = chunk.get("id").and_then(Value::as_str).map(str::to_string);
        }
        let choice = chunk.pointer("/choices/0");
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.finish = Some(reason.to_string());
        }
        if let Some(text) = &mut self.text
            && text.len() <= traces::MAX_CONTENT_BYTES
            && let Some(delta) = choice
                .and_then(|c| c.pointer("/delta/content"))
                .and_then(Value::as_str)
        {
            text.push_str(delta);
        }
    }

    /// Puts what was seen on the current (attempt) span.
    pub(crate) fn finish(self) {
        if !traces::enabled() {
            return;
        }
        let span = Span::current();
        if let Some(model) = self.model {
            traces::attr(&span, "gen_ai.response.model", model);
        }
        if let Some(id) = self.id {
            traces::attr(&span, "gen_ai.response.id", id);
        }
        if let Some(reason) = self.finish {
            traces::strings(&span, "gen_ai.response.finish_reasons", vec![reason]);
        }
        if let Some(text) = self.text.and_then(|t| {
            let message = serde_json::json!([{"role": "assistant", "content": t}]);
            traces::content(&message.to_string())
        }) {
            traces::attr(&span, "gen_ai.output.messages", text);
        }
    }
}

/// The span of the event commit (the request's story, in one statement).
pub(crate) fn commit(request_id: &str) -> Span {
    if !traces::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "commit",
        otel.kind = "client",
        otel.name = "commit request events",
    );
    traces::attr(&span, "db.system.name", "postgresql");
    traces::attr(&span, "db.operation.name", "INSERT");
    traces::attr(&span, "db.collection.name", "events");
    traces::attr(&span, "aigw.request_id", request_id.to_string());
    span
}
