//! `aigw`: one binary for every role (ingress, dispatcher, projector, or all
//! three) plus `migrate`. `main` only parses configuration, sets up logging
//! and signals, and hands over to the role libraries.

use aigw_dispatcher::DispatcherArgs;
use aigw_ingress::IngressArgs;
use aigw_projector::ProjectorArgs;
use aigw_runtime::{CommonArgs, db, nats, telemetry};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "aigw",
    version,
    about = "An OpenAI-compatible AI gateway: one endpoint in front of many providers"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "AIGW_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (OpenAI-compatible endpoints and the admin API).
    Ingress {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        ingress: IngressArgs,
    },
    /// Take queued requests from JetStream and call the providers.
    Dispatcher {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        dispatcher: DispatcherArgs,
    },
    /// Follow the event history and maintain the read views.
    Projector {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        projector: ProjectorArgs,
    },
    /// Run ingress, dispatcher and projector in one process.
    All {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        ingress: IngressArgs,
        #[command(flatten)]
        dispatcher: DispatcherArgs,
        #[command(flatten)]
        projector: ProjectorArgs,
    },
    /// Create the database, schema and streams, then exit.
    Migrate {
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

async fn bind(ingress: &IngressArgs) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(ingress.listen)
        .await
        .with_context(|| format!("cannot listen on {}", ingress.listen))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing(match cli.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    });
    // reqwest is built without a default TLS provider; pick ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::metrics();
    let shutdown = shutdown_signal();
    match cli.command {
        Command::Ingress { common, ingress } => {
            let listener = bind(&ingress).await?;
            aigw_ingress::run(common, ingress, listener, shutdown)
                .await
                .context("ingress")?;
        }
        Command::Dispatcher { common, dispatcher } => {
            aigw_dispatcher::run(common, dispatcher, shutdown)
                .await
                .context("dispatcher")?;
        }
        Command::Projector { common, projector } => {
            aigw_projector::run(common, projector, shutdown)
                .await
                .context("projector")?;
        }
        Command::All {
            common,
            ingress,
            dispatcher,
            projector,
        } => {
            let listener = bind(&ingress).await?;
            // Prepare once up front so the roles do not race to create things.
            db::prepare(&common.database_url, 2)
                .await
                .context("preparing the database")?;
            let stop = shutdown.clone();
            let result = tokio::try_join!(
                async {
                    aigw_ingress::run(common.clone(), ingress, listener, shutdown.clone())
                        .await
                        .context("ingress")
                },
                async {
                    aigw_dispatcher::run(common.clone(), dispatcher, shutdown.clone())
                        .await
                        .context("dispatcher")
                },
                async {
                    aigw_projector::run(common.clone(), projector, shutdown.clone())
                        .await
                        .context("projector")
                },
            );
            stop.cancel();
            result?;
        }
        Command::Migrate { common } => {
            let names = common.names()?;
            db::prepare(&common.database_url, 2)
                .await
                .with_context(|| format!("database {}", db::redact(&common.database_url)))?;
            let (_client, js) = nats::connect(&common.nats_url, "aigw-migrate").await?;
            nats::ensure_streams(&js, &names).await?;
            tracing::info!("database, schema and streams are ready");
        }
    }
    Ok(())
}
