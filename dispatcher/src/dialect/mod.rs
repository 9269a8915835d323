//! Answers in the caller's dialect (the dispatcher side of the dialect
//! seam; requests are translated in `aigw_runtime::dialect`).
//!
//! Invariants:
//! - A request in a dialect that its target speaks natively goes there
//!   verbatim (only the model renamed, aigw's credential in place of the
//!   caller's) and its answer, JSON or SSE, comes back verbatim; aigw only
//!   reads the usage from it.
//! - Otherwise the adapter gets the OpenAI chat translation, and its
//!   OpenAI answer, read once into the typed internal answer
//!   (`crate::chat::answer`), is rendered back in the caller's dialect
//!   here, with the usage aigw billed (token classes included).
//! - A new dialect is one module here and one arm in each function below.

pub mod anthropic_native;
pub mod anthropic_out;
pub mod gemini_native;
pub mod gemini_out;
pub mod responses_native;
pub mod responses_out;

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_events::wire::{Dialect, DispatchRequest};
use aigw_runtime::Target;
use aigw_runtime::dialect::{anthropic_in, gemini_in, responses_in};
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::attempt::AttemptResult;
use crate::reply::Replier;
use crate::upstream::UpstreamError;

pub use crate::answer::NativeAnswer;

/// Puts a request's body in the internal shape: a body in another dialect
/// (read from `raw_body` when it came as the caller's bytes) is kept as
/// `native_body` and `body` becomes its OpenAI chat translation. The ingress checked the body already (with this same
/// translation), so a failure here means a body aigw never accepted: it is
/// left as it is, and the upstream judges it.
pub fn prepare(request: &mut DispatchRequest) {
    // A body that came as the caller's bytes is read from them (they stay,
    // for a same-dialect upstream).
    if request.body.is_null()
        && let Some(raw) = &request.raw_body
    {
        match raw.to_value() {
            Ok(body) => request.body = body,
            Err(e) => {
                tracing::warn!(request_id = %request.request_id, error = %e, "a queued body is not JSON");
            }
        }
    }
    let translated = match request.dialect {
        Dialect::OpenaiChat => return,
        Dialect::AnthropicMessages { .. }
            if request.native_body.is_some() || request.body.is_null() =>
        {
            return;
        }
        Dialect::GeminiGenerate | Dialect::OpenaiResponses
            if request.native_body.is_some() || request.body.is_null() =>
        {
            return;
        }
        Dialect::AnthropicMessages { .. } => {
            anthropic_in::to_chat(&request.body).map(|t| (t.body, t.native_only))
        }
        Dialect::GeminiGenerate => {
            gemini_in::to_chat(&request.body, &request.model, request.stream)
                .map(|t| (t.body, t.native_only))
        }
        Dialect::OpenaiResponses => {
            responses_in::to_chat(&request.body).map(|t| (t.body, t.native_only))
        }
    };
    match translated {
        Ok((body, native_only)) => {
            request.native_body = Some(std::mem::replace(&mut request.body, body));
            request.native_only = native_only;
        }
        Err(e) => {
            tracing::warn!(request_id = %request.request_id, dialect = request.dialect.label(), error = %e, "a queued body does not translate");
        }
    }
}

/// Why `provider` cannot take `request`, if it cannot: a field of the
/// caller's body that only a provider speaking the caller's dialect can
/// honour. The ingress refuses such a request unless every target of its
/// model speaks it; this catches a route changed since.
pub fn untranslatable(request: &DispatchRequest, provider: &ProviderSpec) -> Option<String> {
    let field = request.native_only.as_ref()?;
    (!native_to(request, provider)).then(|| {
        format!("'{field}' has no equivalent at this provider: send it to a model served natively")
    })
}

/// Whether `provider` takes `request` in its own dialect, verbatim.
pub fn native_to(request: &DispatchRequest, provider: &ProviderSpec) -> bool {
    request.native_body.is_some() && provider.speaks(&request.dialect)
}

/// A native call's answer before its dialect reads it: the event stream,
/// or the whole body as sent, with its status and its JSON.
pub(crate) enum Sent {
    Stream(NativeAnswer),
    Whole {
        status: u16,
        body: bytes::Bytes,
        parsed: Value,
    },
}

/// Sends a prepared native call; failures are classified like any
/// upstream error, and a whole answer that is not JSON is unreadable.
pub(crate) async fn send(
    call: reqwest::RequestBuilder,
    name: &str,
    stream: bool,
) -> Result<Sent, UpstreamError> {
    use futures::StreamExt;
    let response = crate::upstream::send(call, name).await?;
    if stream {
        return Ok(Sent::Stream(NativeAnswer::Stream(
            crate::upstream::sse::provider_events(response, name.to_string()).boxed(),
        )));
    }
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| crate::upstream::transport_error(&e, name))?;
    let parsed = serde_json::from_slice(&body)
        .map_err(|_| crate::upstream::invalid_response(name, status))?;
    Ok(Sent::Whole {
        status,
        body,
        parsed,
    })
}

/// One SSE event as the caller gets it: its `event:` line (when named),
/// a `data:` line per line of `data`, and the blank line, each ended by
/// `eol` (`\n`, or Gemini's `\r\n`).
pub(crate) fn sse_frame(name: &str, data: &str, eol: &[u8]) -> bytes::Bytes {
    let mut frame = Vec::with_capacity(data.len() + name.len() + 16);
    if !name.is_empty() {
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(name.as_bytes());
        frame.extend_from_slice(eol);
    }
    for line in data.split('\n') {
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(line.as_bytes());
        frame.extend_from_slice(eol);
    }
    frame.extend_from_slice(eol);
    bytes::Bytes::from(frame)
}

/// What a relayed native stream bills: the usage it reported, else an
/// estimate (flagged) from the request's prompt and the text relayed.
pub(crate) fn stream_billed(
    request: &DispatchRequest,
    target: &Target,
    usage: Option<Usage>,
    text_tokens: u64,
) -> crate::record::Billed {
    use crate::record::Billed;
    match usage.filter(Usage::is_plausible) {
        Some(u) => Billed::priced(target, u, false),
        None => Billed::priced(
            target,
            Usage {
                prompt_tokens: aigw_runtime::estimate::prompt_tokens(&request.body),
                completion_tokens: text_tokens,
                ..Default::default()
            },
            true,
        ),
    }
}

/// Calls `provider` in the request's own dialect (see [`native_to`]);
/// `cap` is the output cap a budget hold assumed, if any.
pub async fn call(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    request: &DispatchRequest,
    model: &str,
    cap: Option<u64>,
) -> Result<NativeAnswer, UpstreamError> {
    match request.dialect {
        Dialect::AnthropicMessages { .. } => {
            anthropic_native::call(http, provider, api_key, request, model).await
        }
        Dialect::GeminiGenerate => {
            gemini_native::call(http, provider, api_key, request, model, cap).await
        }
        Dialect::OpenaiResponses => {
            responses_native::call(http, provider, api_key, request, model, cap).await
        }
        Dialect::OpenaiChat => Err(crate::upstream::unsupported(
            &provider.name,
            "no native dialect",
        )),
    }
}

/// Relays a native stream to the caller, verbatim.
pub(crate) async fn relay(
    request: &DispatchRequest,
    target: &Target,
    events: BoxStream<'static, Result<(String, String), UpstreamError>>,
    replier: &Replier,
    cancel: &CancellationToken,
) -> AttemptResult {
    match request.dialect {
        Dialect::GeminiGenerate => {
            gemini_native::relay(request, target, events, replier, cancel).await
        }
        Dialect::OpenaiResponses => {
            responses_native::relay(request, target, events, replier, cancel).await
        }
        Dialect::AnthropicMessages { .. } | Dialect::OpenaiChat => {
            anthropic_native::relay(request, target, events, replier, cancel).await
        }
    }
}

/// A whole OpenAI `chat.completion` in the caller's dialect, with `id`,
/// the caller's model and the usage aigw billed; `None` for OpenAI chat
/// (the body goes as it is).
pub fn render_full(
    request: &DispatchRequest,
    completion: &Value,
    id: &str,
    usage: &Usage,
) -> Option<Value> {
    if request.dialect == Dialect::OpenaiChat {
        return None;
    }
    let completion = &crate::chat::answer::Completion::read(completion);
    match request.dialect {
        Dialect::OpenaiChat => None,
        Dialect::AnthropicMessages { .. } => Some(anthropic_out::message(
            completion,
            id,
            &request.model,
            usage,
        )),
        Dialect::GeminiGenerate => {
            Some(gemini_out::response(completion, id, &request.model, usage))
        }
        Dialect::OpenaiResponses => Some(responses_out::response(
            completion,
            id,
            &responses_out::Echo::new(&request.model, request.native_body.as_ref()),
            usage,
        )),
    }
}

/// Renders a stream's OpenAI chunks in the caller's dialect.
#[derive(Debug)]
pub enum StreamRenderer {
    Anthropic(anthropic_out::StreamRenderer),
    Gemini(gemini_out::StreamRenderer),
    Responses(Box<responses_out::StreamRenderer>),
}

impl StreamRenderer {
    /// The renderer for `request`'s dialect; `None` for OpenAI chat.
    pub fn of(request: &DispatchRequest, id: String) -> Option<Self> {
        match request.dialect {
            Dialect::OpenaiChat => None,
            Dialect::AnthropicMessages { .. } => Some(Self::Anthropic(
                anthropic_out::StreamRenderer::new(id, request.model.clone()),
            )),
            Dialect::GeminiGenerate => Some(Self::Gemini(gemini_out::StreamRenderer::new(
                id,
                request.model.clone(),
            ))),
            Dialect::OpenaiResponses => Some(Self::Responses(Box::new(
                responses_out::StreamRenderer::new(
                    id,
                    responses_out::Echo::new(&request.model, request.native_body.as_ref()),
                ),
            ))),
        }
    }

    /// Renders one chunk's events into `out`.
    pub fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        let chunk = &crate::chat::answer::Chunk::read(chunk);
        match self {
            Self::Anthropic(r) => r.chunk(chunk, out),
            Self::Gemini(r) => r.chunk(chunk, out),
            Self::Responses(r) => r.chunk(chunk, out),
        }
    }

    /// The whole `response` object a finished Responses stream ended with.
    pub fn final_response(&self) -> Option<Value> {
        match self {
            Self::Responses(r) => r.final_response.clone(),
            Self::Anthropic(_) | Self::Gemini(_) => None,
        }
    }

    /// Renders the stream's closing events, with the billed usage.
    pub fn finish(&mut self, usage: &Usage, out: &mut Vec<u8>) {
        match self {
            Self::Anthropic(r) => r.finish(usage, out),
            Self::Gemini(r) => r.finish(usage, out),
            Self::Responses(r) => r.finish(usage, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_name_the_event_and_split_data_lines() {
        assert_eq!(
            sse_frame("ping", "{\"type\":\"ping\"}", b"\n"),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(sse_frame("", "a\nb", b"\r\n"), "data: a\r\ndata: b\r\n\r\n");
    }
}
