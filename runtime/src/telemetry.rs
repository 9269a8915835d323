//! Logs (tracing), traces (OpenTelemetry, see `traces`) and metrics
//! (Prometheus), set up once per process.
//!
//! Invariants:
//! - The log filter (`AIGW_LOG`) applies to the logs only; the traces layer
//!   has its own filter, so quieter logs never drop spans. Logs of a traced
//!   request carry its `trace_id` (a field of its spans).
//! - The serving roles ([`init`]) never write a log line on a request's
//!   path: lines go through a bounded queue to a writer thread, which
//!   writes them in batches (one `write` per batch, not per line). No line
//!   is dropped: when the queue is full the logging task waits for room.
//!   [`Telemetry::shutdown`] (or dropping it, on a panic) writes out what is
//!   still queued.
//! - One-shot commands ([`init_tracing`]) write each line directly, so a
//!   command that exits at once loses nothing.

use std::io::{BufWriter, Write};
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::traces::{self, TraceSettings, TracesError, TracesGuard};

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Log lines queued for the writer thread before a logging task waits.
const LOG_QUEUE_LINES: usize = 65_536;
/// The writer thread's buffer: lines queued together go out in one write.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// The process's Prometheus registry, installing it on first use.
pub fn metrics() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours
            // simply renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

fn log_filter() -> EnvFilter {
    std::env::var("AIGW_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

fn log_layer<W>(format: &str, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if format == "json" {
        layer.json().with_filter(log_filter()).boxed()
    } else {
        layer.with_filter(log_filter()).boxed()
    }
}

/// Structured logs to stderr, each line written at once: `json` or `text`,
/// filtered by `AIGW_LOG` (or `RUST_LOG`), `info` by default. No traces.
/// For one-shot commands and tests.
pub fn init_tracing(format: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format, std::io::stderr))
        .try_init();
}

/// What a serving role's logging and tracing need at shutdown.
pub struct Telemetry {
    traces: TracesGuard,
    logs: WorkerGuard,
}

impl Telemetry {
    /// Flushes the batched spans, then writes out the queued log lines.
    pub async fn shutdown(self) {
        self.traces.shutdown().await;
        drop(self.logs);
    }
}

/// Stderr through a buffer that the writer thread flushes whenever it has
/// emptied the queue.
fn buffered_stderr() -> impl Write + Send + 'static {
    BufWriter::with_capacity(LOG_BUFFER_BYTES, std::io::stderr())
}

/// Logs for a serving role, as [`init_tracing`] but written off the
/// request path (see the module's invariants), plus OTLP traces when
/// `settings` (or the standard `OTEL_EXPORTER_OTLP_*` variables) name an
/// endpoint.
pub fn init(format: &str, settings: &TraceSettings) -> Result<Telemetry, TracesError> {
    let (traces, traces_guard) = traces::layer::<Registry>(settings)?;
    let (writer, logs) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("aigw-log")
        .finish(buffered_stderr());
    let mut layers = vec![log_layer(format, writer)];
    layers.extend(traces);
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(Telemetry {
        traces: traces_guard,
        logs,
    })
}
