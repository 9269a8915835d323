//! Logs (tracing), traces (OpenTelemetry, see `traces`) and metrics
//! (Prometheus), set up once per process.
//!
//! Invariants: the log filter (`AIGW_LOG`) applies to the logs only; the
//! traces layer has its own filter, so quieter logs never drop spans. Logs
//! of a traced request carry its `trace_id` (a field of its spans).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::traces::{self, TraceSettings, TracesError, TracesGuard};

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

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

fn log_layer(format: &str) -> Box<dyn Layer<Registry> + Send + Sync> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        layer.json().with_filter(log_filter()).boxed()
    } else {
        layer.with_filter(log_filter()).boxed()
    }
}

/// Structured logs to stderr: `json` or `text`, filtered by `AIGW_LOG`
/// (or `RUST_LOG`), `info` by default. No traces.
pub fn init_tracing(format: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format))
        .try_init();
}

/// Logs as [`init_tracing`], plus OTLP traces when `settings` (or the
/// standard `OTEL_EXPORTER_OTLP_*` variables) name an endpoint. The guard
/// flushes the traces on shutdown.
pub fn init(format: &str, settings: &TraceSettings) -> Result<TracesGuard, TracesError> {
    let (traces, guard) = traces::layer::<Registry>(settings)?;
    let mut layers = vec![log_layer(format)];
    layers.extend(traces);
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(guard)
}
