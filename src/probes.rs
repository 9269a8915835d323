//! The probe listener of the roles without an HTTP API (dispatcher,
//! projector, and those two inside `aigw all`): `/health`, `/ready` and
//! `/metrics` on `AIGW_PROBE_LISTEN`, for Kubernetes probes and Prometheus.
//!
//! Invariants: it serves nothing else and needs no authentication. It opens
//! before the role starts and closes after the role has stopped (drained
//! included), so liveness (`/health`, always 200) holds through a slow start
//! and a graceful stop. `/ready` is 503 `starting` until every role it
//! watches has said it started (connected, streams, consumers and schema in
//! place), then 200 while their NATS and PostgreSQL answer.

use std::net::SocketAddr;

use aigw_runtime::readiness::{Readiness, ReadyState};
use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Address of this role's `/health`, `/ready` and `/metrics` (e.g.
    /// `0.0.0.0:9090`); unset: none. For the dispatcher and the projector
    /// (the ingress serves them on `AIGW_LISTEN`).
    #[arg(long, env = "AIGW_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,
}

/// A running probe listener (or none).
pub struct Probes {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Probes {
    /// Binds `args.probe_listen` (failing at once if it cannot) and serves
    /// the probes of `roles` until [`Probes::stop`].
    pub async fn start(args: &ProbeArgs, roles: Vec<Readiness>) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let Some(addr) = args.probe_listen else {
            return Ok(Self { stop, task: None });
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (AIGW_PROBE_LISTEN)"))?;
        let metrics = aigw_runtime::telemetry::metrics();
        let app = Router::new()
            .route(
                "/health",
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .route("/ready", get(move || ready(roles.clone())))
            .route(
                "/metrics",
                get(move || async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }),
            );
        tracing::info!(%addr, "probes listening");
        let until = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
            {
                tracing::warn!(error = %e, "probe listener failed");
            }
        });
        Ok(Self {
            stop,
            task: Some(task),
        })
    }

    /// Closes the listener.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

async fn ready(roles: Vec<Readiness>) -> Response {
    let mut worst = ReadyState::Ready;
    for role in &roles {
        match role.check().await {
            ReadyState::Ready => {}
            ReadyState::Starting => {
                worst = ReadyState::Starting;
                break;
            }
            down @ ReadyState::Unavailable { .. } => worst = down,
        }
    }
    let body = match worst {
        ReadyState::Ready => json!({"status": "ready"}),
        ReadyState::Starting => json!({"status": "starting"}),
        ReadyState::Unavailable { nats, database } => json!({
            "status": "unavailable",
            "nats": if nats { "ok" } else { "down" },
            "database": if database { "ok" } else { "down" },
        }),
    };
    let status = if worst.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
