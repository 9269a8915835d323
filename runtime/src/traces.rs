//! OpenTelemetry traces: the OTLP exporter, the W3C trace context carried
//! across HTTP and NATS, and the helpers that put attributes on spans.
//!
//! Invariants:
//! - Tracing is on only when an OTLP endpoint is configured
//!   (`AIGW_OTLP_ENDPOINT`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Off, no exporter, no OTel layer
//!   and no extra work: every helper here is then a no-op, and
//!   [`enabled`] lets callers skip computing attributes at all.
//! - Spans go to OTel only from aigw's own crates (targets `aigw*`) at
//!   `info` or finer, whatever `AIGW_LOG` filters out of the logs.
//! - Prompt and completion text reach a span only through [`content`],
//!   which is `None` unless `AIGW_TRACE_CONTENT=true`, and is then bounded
//!   to [`MAX_CONTENT_BYTES`]. Secrets (API keys, credentials, tokens) are
//!   never given to these helpers; the key's id is.
//! - [`TracesGuard::shutdown`] flushes the spans still batched; the roles
//!   call it on graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Largest prompt or completion text put on a span (longer text is cut at
/// a character boundary and marked).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);
static CONTENT: AtomicBool = AtomicBool::new(false);

/// Where and what to export.
#[derive(Debug, Clone, Default)]
pub struct TraceSettings {
    /// OTLP/HTTP base URL (`/v1/traces` is appended); `None` falls back to
    /// the standard `OTEL_EXPORTER_OTLP_*` variables.
    pub endpoint: Option<String>,
    /// Put prompt and completion text on spans.
    pub content: bool,
    /// The role this process runs (`ingress`, `dispatcher`, `projector`,
    /// `all`), as the resource attribute `aigw.role`.
    pub role: &'static str,
}

impl TraceSettings {
    /// Whether any endpoint is configured, here or in the environment.
    pub fn exporting(&self) -> bool {
        self.endpoint.is_some()
            || [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
    }
}

/// Errors building the exporter.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct TracesError(String);

/// Keeps the tracer provider so its batch can be flushed on shutdown.
#[derive(Default)]
pub struct TracesGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracesGuard {
    /// Flushes the batched spans and stops the exporter (waits at most a
    /// few seconds for an unreachable collector).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The exporter blocks its own thread; wait for it off the runtime.
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}

/// The OTel layer for `settings`, or `None` (and tracing off) when no
/// endpoint is configured.
#[allow(clippy::type_complexity)]
pub fn layer<S>(
    settings: &TraceSettings,
) -> Result<(Option<Box<dyn Layer<S> + Send + Sync>>, TracesGuard), TracesError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !settings.exporting() {
        return Ok((None, TracesGuard::default()));
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(base) = &settings.endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter.build().map_err(|e| TracesError(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("aigw");
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("aigw.role", settings.role),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("aigw");
    ENABLED.store(true, Ordering::Relaxed);
    CONTENT.store(settings.content, Ordering::Relaxed);
    let ours = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("aigw") && *meta.level() <= tracing::Level::INFO
    });
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(ours)
        .boxed();
    Ok((
        Some(layer),
        TracesGuard {
            provider: Some(provider),
        },
    ))
}

/// Whether spans are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `text` as a span attribute when content tracing is on
/// (`AIGW_TRACE_CONTENT=true`), bounded to [`MAX_CONTENT_BYTES`].
pub fn content(text: &str) -> Option<String> {
    if !enabled() || !CONTENT.load(Ordering::Relaxed) {
        return None;
    }
    if text.len() <= MAX_CONTENT_BYTES {
        return Some(text.to_string());
    }
    let mut end = MAX_CONTENT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}…[truncated]", &text[..end]))
}

/// Whether content tracing is on (so callers can skip serializing text).
pub fn content_enabled() -> bool {
    enabled() && CONTENT.load(Ordering::Relaxed)
}

/// Sets an attribute on `span`'s OTel span (not a log field).
pub fn attr(span: &tracing::Span, key: &'static str, value: impl Into<Value>) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// A NATS subject as a span name may use it: a trailing id (a job's
/// subject ends with the job id) becomes `{id}`, so names stay few.
pub fn subject_template(subject: &str) -> String {
    match subject.rsplit_once('.') {
        Some((head, last)) if uuid::Uuid::parse_str(last).is_ok() => format!("{head}.{{id}}"),
        _ => subject.to_string(),
    }
}

/// Renames `span`'s OTel span (e.g. once the route is known).
pub fn rename(span: &tracing::Span, name: String) {
    if enabled() {
        span.context().span().update_name(name);
    }
}

/// Sets a string-array attribute on `span`'s OTel span.
pub fn strings(span: &tracing::Span, key: &'static str, values: Vec<String>) {
    if enabled() {
        let values = values.into_iter().map(Into::into).collect();
        span.set_attribute(key, Value::Array(opentelemetry::Array::String(values)));
    }
}

/// Marks `span` as failed, with `error.type`.
pub fn error(span: &tracing::Span, error_type: impl Into<Value>) {
    if enabled() {
        span.set_attribute("error.type", error_type);
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// Makes `span` (not yet entered) a child of the W3C `traceparent` among
/// `headers`, when there is a valid one, and records its trace id in the
/// span's `trace_id` field (for the logs).
pub fn continue_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HttpHeaders(headers));
    adopt(span, cx);
}

/// The same for a NATS message's headers (the JetStream hop).
pub fn continue_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    if !enabled() {
        return;
    }
    let cx = match headers {
        Some(h) => TraceContextPropagator::new().extract(&NatsHeaders(h)),
        None => opentelemetry::Context::new(),
    };
    adopt(span, cx);
}

fn adopt(span: &tracing::Span, cx: opentelemetry::Context) {
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// Writes `span`'s context into a NATS message's headers (`traceparent`).
pub fn inject_nats(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    if !enabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut NatsHeadersMut(headers));
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct NatsHeaders<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct NatsHeadersMut<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if carried(key, &value) {
            self.0.insert(key, value.as_str());
        }
    }
}

/// Most bytes of a caller's `tracestate` carried on to the dispatcher (the
/// W3C minimum every hop must pass on): the rest of a 32-member list could
/// take the room a request message keeps for its headers
/// (`bodies::MESSAGE_HEADROOM`).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Whether a trace context header goes into a NATS message.
fn carried(key: &str, value: &str) -> bool {
    key != "tracestate" || value.len() <= MAX_TRACESTATE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_tracestate_stays_behind() {
        assert!(carried("traceparent", &"0".repeat(55)));
        assert!(carried("tracestate", &"a=b,".repeat(128)[..511]));
        assert!(!carried("tracestate", &"k=v,".repeat(32 * 64)));
    }

    #[test]
    fn subject_names_drop_ids() {
        assert_eq!(subject_template("ns.requests.chat"), "ns.requests.chat");
        assert_eq!(
            subject_template("ns.jobs.0190a0e4-8f1e-7c2a-9d3b-5e6f7a8b9c0d"),
            "ns.jobs.{id}"
        );
    }

    #[test]
    fn content_is_off_unless_enabled_and_bounded_when_on() {
        assert_eq!(content("hello"), None);
        ENABLED.store(true, Ordering::Relaxed);
        CONTENT.store(true, Ordering::Relaxed);
        assert_eq!(content("hello").as_deref(), Some("hello"));
        let long = "é".repeat(MAX_CONTENT_BYTES);
        let cut = content(&long).unwrap_or_default();
        assert!(cut.len() <= MAX_CONTENT_BYTES + "…[truncated]".len());
        assert!(cut.ends_with("…[truncated]"));
        ENABLED.store(false, Ordering::Relaxed);
        CONTENT.store(false, Ordering::Relaxed);
    }
}
