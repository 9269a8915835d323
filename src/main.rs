//! `aigw`: one binary for every role (ingress, dispatcher, projector, or all
//! three) plus `migrate`, `audit`, `doctor`, `config`, `prices check` and `providers reseal`. `main` only parses configuration, sets up logging
//! and signals, and hands over to the role libraries.

mod doctor;
mod prices;
mod probes;

use aigw_dispatcher::DispatcherArgs;
use aigw_ingress::IngressArgs;
use aigw_ingress::config_file;
use std::io::Write;
use std::path::PathBuf;

use aigw_projector::{ProjectorArgs, audit, rebuild};
use aigw_runtime::readiness::Readiness;
use aigw_runtime::reseal::{self, Resealed};
use aigw_runtime::traces::TraceSettings;
use aigw_runtime::views::quarantine;
use aigw_runtime::{CommonArgs, Stores, db, nats, telemetry};
use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use probes::{ProbeArgs, Probes};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// mimalloc instead of the system allocator: aigw allocates many small,
/// short-lived buffers per request (bodies, JSON values, headers), where
/// glibc's malloc spent about a fifth of every role's instructions
/// (`bench/instructions.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `aigw --version`: the package version and the git commit it was built
/// from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AIGW_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "aigw",
    version = VERSION,
    about = "An OpenAI-compatible AI gateway: one endpoint in front of many providers"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "AIGW_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,

    /// OTLP/HTTP endpoint (base URL; `/v1/traces` is appended) the serving
    /// roles export their spans to. Unset: the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT, else no traces.
    #[arg(long, env = "AIGW_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,

    /// Put prompt and completion text on spans (off: never).
    #[arg(long, env = "AIGW_TRACE_CONTENT", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    trace_content: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Follow the event history and maintain the read views.
    Projector {
        #[command(subcommand)]
        action: Option<ProjectorAction>,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        projector: ProjectorArgs,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Recompute every key's cost from the event history and compare it with
    /// the billing view; exits with 1 when they differ, with 2 when they agree
    /// except for quarantined events (listed).
    Audit {
        #[command(flatten)]
        common: CommonArgs,
        /// First day audited (YYYY-MM-DD); the audit covers whole billing months.
        #[arg(long)]
        from: NaiveDate,
        /// Last day audited (YYYY-MM-DD).
        #[arg(long)]
        to: NaiveDate,
        /// Audit only this key (its id).
        #[arg(long)]
        key: Option<Uuid>,
        /// Output format of the report on stdout.
        #[arg(long, default_value = "table")]
        format: AuditFormat,
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
        /// Probes of the dispatcher and projector inside (ready once both
        /// started); the ingress's are on `AIGW_LISTEN` as always.
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Create the database, schema and streams, then exit.
    Migrate {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Check, in one screen, what aigw needs: NATS (2.10+, JetStream),
    /// PostgreSQL and its schema, the master key and admin token, and the
    /// stored credentials; says how to fix what is wrong. Changes nothing,
    /// prints no secret. Exits with 1 when something is wrong.
    Doctor {
        #[command(flatten)]
        common: CommonArgs,
        /// The admin token to check (as `aigw ingress` or `aigw all` would
        /// get it).
        #[arg(long, env = "AIGW_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<SecretString>,
    },
    /// Configuration as code: plan, apply or export an aigw.toml declaring
    /// providers, aliases and keys (see the README's "Configuration as
    /// code").
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Maintain the configured providers.
    Providers {
        #[command(subcommand)]
        action: ProvidersAction,
    },
    /// Look after the catalog's prices.
    Prices {
        #[command(subcommand)]
        action: PricesAction,
    },
}

#[derive(Debug, Subcommand)]
enum PricesAction {
    /// List the catalog models whose prices were last checked against their
    /// source longer ago than `--older-than`, with that source. Exits with 1
    /// when any are, 0 when none.
    Check {
        /// The most a price's as-of date may lie in the past (e.g. `90d`).
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
enum ProvidersAction {
    /// Seal every provider credential again under AIGW_MASTER_KEY (opening
    /// it with AIGW_MASTER_KEY_PREVIOUS where needed), as provider events
    /// with the actor `reseal`; credentials already sealed under the current
    /// key are left alone, so running it twice changes nothing the second
    /// time. Exits with 1 when a credential could not be opened.
    Reseal {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Show what `apply` would change (create, update, remove), secrets
    /// never shown; changes nothing. Exits with 1 when the file is invalid,
    /// listing every problem with its line.
    Plan {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        file: ConfigFileArgs,
    },
    /// Apply the file: each change is the admin API's command, recorded
    /// with the actor `config:<file>`; applying it again changes nothing.
    /// An invalid file changes nothing. Keys the file creates get no
    /// secret anyone saw: `POST /admin/api/keys/{id}/rotate` gives one.
    Apply {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        file: ConfigFileArgs,
    },
    /// Write the running state as an aigw.toml (credentials as `${ENV}`
    /// references, keys without secrets); applying it changes nothing.
    Export {
        #[command(flatten)]
        common: CommonArgs,
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ConfigFileArgs {
    /// The aigw.toml.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Also remove the providers and aliases, and revoke the keys, that the
    /// file does not declare.
    #[arg(long, env = "AIGW_CONFIG_PRUNE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    prune: bool,
}

#[derive(Debug, Subcommand)]
enum ProjectorAction {
    /// Rebuild every view from the start of history into fresh tables and
    /// swap them in (readers keep working), then exit.
    Rebuild,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuditFormat {
    Table,
    Json,
    Csv,
}

/// Writes CLI output on stdout.
fn output(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Progress of long replays on stderr, every `every` events.
fn progress(what: &'static str, every: u64) -> impl FnMut(u64) {
    let started = std::time::Instant::now();
    let mut next = every;
    move |n| {
        if n >= next {
            let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!("{what}: {n} events read ({rate:.0}/s)");
            next = (n / every + 1) * every;
        }
    }
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

/// `aigw providers reseal`: progress per provider on stderr, a summary on
/// stdout.
async fn reseal(common: &CommonArgs) -> anyhow::Result<()> {
    let names = common.names()?;
    let sealer = common.sealer()?;
    let pool = db::prepare(&common.database_url, 2)
        .await
        .with_context(|| format!("database {}", db::redact(&common.database_url)))?;
    // Only to tell running replicas at once; they reload every 10 s anyway.
    let client = match nats::connect(&common.nats_url, "aigw-reseal").await {
        Ok((client, _)) => Some(client),
        Err(e) => {
            eprintln!("NATS unreachable ({e}): replicas will see the change within 10 s");
            None
        }
    };
    let results = reseal::reseal_all(
        &Stores::new(pool),
        &sealer,
        "reseal",
        client.as_ref().map(|c| (c, &names)),
        |r| {
            let what = match &r.outcome {
                Resealed::Current => "already sealed under the current master key".to_string(),
                Resealed::Resealed(n) => format!("resealed {n} credential(s)"),
                Resealed::Failed(e) => format!("FAILED: {e}"),
            };
            eprintln!("provider {} ({}): {what}", r.name, r.id);
        },
    )
    .await
    .context("resealing provider credentials")?;
    let count = |f: fn(&Resealed) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    let failed = count(|o| matches!(o, Resealed::Failed(_)));
    output(&format!(
        "{} providers: {} resealed, {} already current, {failed} failed\n",
        results.len(),
        count(|o| matches!(o, Resealed::Resealed(_))),
        count(|o| matches!(o, Resealed::Current)),
    ))?;
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// The state `aigw config` works on: an ingress's, without serving.
async fn config_state(common: &CommonArgs) -> anyhow::Result<aigw_ingress::AppState> {
    let args = IngressArgs::from_env().context("reading the AIGW_* settings")?;
    aigw_ingress::prepare_admin(common, &args)
        .await
        .context("connecting to NATS and PostgreSQL")
}

/// `aigw config plan|apply|export`.
async fn config(action: ConfigAction) -> anyhow::Result<()> {
    let invalid = |e: config_file::ConfigError| -> anyhow::Result<()> {
        eprintln!("{e}");
        std::process::exit(1);
    };
    match action {
        ConfigAction::Plan { common, file } => {
            // Read first: an invalid file is said before connecting.
            if let Err(e) = config_file::read(&file.file) {
                return invalid(e);
            }
            let state = config_state(&common).await?;
            match config_file::plan_file(&state, &file.file, file.prune).await {
                Ok(plan) => output(&plan.render(&file.file.display().to_string()))?,
                Err(e) => return invalid(e),
            }
        }
        ConfigAction::Apply { common, file } => {
            if let Err(e) = config_file::read(&file.file) {
                return invalid(e);
            }
            let state = config_state(&common).await?;
            let options = config_file::Options {
                prune: file.prune,
                actor: config_file::actor(&file.file),
            };
            match config_file::apply_file(&state, &file.file, &options).await {
                Ok(applied) => {
                    let mut text = applied.plan.render(&file.file.display().to_string());
                    for key in &applied.issued {
                        text.push_str(&format!(
                            "key {:?} issued as {}; its secret was shown to nobody: POST /admin/api/keys/{}/rotate gives one\n",
                            key.name, key.id, key.id
                        ));
                    }
                    output(&text)?;
                }
                Err(e) => return invalid(e),
            }
        }
        ConfigAction::Export { common, output: to } => {
            let state = config_state(&common).await?;
            let text = match config_file::export_text(&state).await {
                Ok(text) => text,
                Err(e) => return invalid(e),
            };
            match to {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => output(&text)?,
            }
        }
    }
    Ok(())
}

async fn bind(ingress: &IngressArgs) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(ingress.listen)
        .await
        .with_context(|| format!("cannot listen on {}", ingress.listen))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The doctor's screen is its output: its logs only when asked for.
    let quiet = matches!(
        cli.command,
        Command::Doctor { .. } | Command::Config { .. } | Command::Prices { .. }
    ) && std::env::var_os("AIGW_LOG").is_none()
        && std::env::var_os("RUST_LOG").is_none();
    // reqwest (the OTLP exporter's too) is built without a default TLS
    // provider; pick ring once, before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let format = match cli.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    // Only the serving roles trace; one-shot commands only log.
    let role = match &cli.command {
        Command::Ingress { .. } => Some("ingress"),
        Command::Dispatcher { .. } => Some("dispatcher"),
        Command::Projector { action: None, .. } => Some("projector"),
        Command::All { .. } => Some("all"),
        _ => None,
    };
    let telemetry = match role {
        Some(role) => Some(
            telemetry::init(
                format,
                &TraceSettings {
                    endpoint: cli.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
                    content: cli.trace_content,
                    role,
                },
            )
            .context("setting up traces")?,
        ),
        None if quiet => None,
        None => {
            telemetry::init_tracing(format);
            None
        }
    };
    telemetry::metrics();
    let result = serve(cli.command).await;
    // Spans still batched and log lines still queued go out before the
    // process ends.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    result
}

/// Runs `command` to its end.
async fn serve(command: Command) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    match command {
        Command::Ingress { common, ingress } => {
            let listener = bind(&ingress).await?;
            aigw_ingress::run(common, ingress, listener, shutdown)
                .await
                .context("ingress")?;
        }
        Command::Dispatcher {
            common,
            dispatcher,
            probes,
        } => {
            let readiness = Readiness::default();
            let probes = Probes::start(&probes, vec![readiness.clone()]).await?;
            let result = aigw_dispatcher::run_ready(common, dispatcher, shutdown, readiness)
                .await
                .context("dispatcher");
            probes.stop().await;
            result?;
        }
        Command::Projector {
            action: None,
            common,
            projector,
            probes,
        } => {
            let readiness = Readiness::default();
            let probes = Probes::start(&probes, vec![readiness.clone()]).await?;
            let result = aigw_projector::run_ready(common, projector, shutdown, readiness)
                .await
                .context("projector");
            probes.stop().await;
            result?;
        }
        Command::Projector {
            action: Some(ProjectorAction::Rebuild),
            common,
            projector,
            probes: _,
        } => {
            let pool = db::prepare(&common.database_url, 3)
                .await
                .with_context(|| format!("database {}", db::redact(&common.database_url)))?;
            let report = rebuild::rebuild(
                &pool,
                projector.batch.max(1000),
                progress("rebuild", 100_000),
            )
            .await
            .context("rebuilding the views")?;
            eprintln!(
                "rebuilt the views from {} events in {:.1}s ({:.0} events/s), {} quarantined",
                report.events,
                report.elapsed.as_secs_f64(),
                report.events_per_second(),
                report.quarantined,
            );
            if report.quarantined > 0 {
                let (events, total) = quarantine::list(&pool, 20)
                    .await
                    .context("reading the quarantine")?;
                for q in &events {
                    eprintln!(
                        "quarantined {} {} #{} {} ({}): {}",
                        q.aggregate_type,
                        q.aggregate_id,
                        q.sequence,
                        q.event_type,
                        q.reason,
                        q.error
                    );
                }
                if total > events.len() as i64 {
                    eprintln!(
                        "... and {} more (GET /admin/api/quarantine)",
                        total - events.len() as i64
                    );
                }
            }
        }
        Command::Audit {
            common,
            from,
            to,
            key,
            format,
        } => {
            anyhow::ensure!(from <= to, "--from must not be after --to");
            let pool = db::prepare(&common.database_url, 2)
                .await
                .with_context(|| format!("database {}", db::redact(&common.database_url)))?;
            let scope = audit::AuditScope { from, to, key };
            let report = audit::audit(&pool, scope, 10_000, progress("audit", 100_000))
                .await
                .context("auditing")?;
            match format {
                AuditFormat::Table => output(&audit::to_table(&report))?,
                AuditFormat::Csv => {
                    output(&audit::to_csv(&report))?;
                    // The CSV holds differences only; quarantined events go
                    // to stderr so they are never missed.
                    eprint!("{}", audit::quarantine_lines(&report));
                }
                AuditFormat::Json => {
                    output(&format!("{}\n", serde_json::to_string_pretty(&report)?))?
                }
            }
            if !report.differences.is_empty() {
                std::process::exit(1);
            }
            if !report.quarantined.is_empty() {
                std::process::exit(2);
            }
        }
        Command::All {
            common,
            ingress,
            dispatcher,
            projector,
            probes,
        } => {
            aigw_ingress::check_secrets(&common, &ingress)?;
            let listener = bind(&ingress).await?;
            let (dispatcher_ready, projector_ready) = (Readiness::default(), Readiness::default());
            let probes = Probes::start(
                &probes,
                vec![dispatcher_ready.clone(), projector_ready.clone()],
            )
            .await?;
            // Prepare once up front so the roles do not race to create things.
            db::prepare(&common.database_url, 2)
                .await
                .context("preparing the database")?;
            // Each role runs as a task of its own on the worker threads: polled
            // together on the main thread, their loops (accepting connections,
            // pulling messages, projecting) would all share that one thread.
            let stop = shutdown.clone();
            let (c, s) = (common.clone(), shutdown.clone());
            let ingress = tokio::spawn(async move {
                aigw_ingress::run(c, ingress, listener, s)
                    .await
                    .context("ingress")
            });
            let (c, s) = (common.clone(), shutdown.clone());
            let dispatcher = tokio::spawn(async move {
                aigw_dispatcher::run_ready(c, dispatcher, s, dispatcher_ready)
                    .await
                    .context("dispatcher")
            });
            let (c, s) = (common.clone(), shutdown.clone());
            let projector = tokio::spawn(async move {
                aigw_projector::run_ready(c, projector, s, projector_ready)
                    .await
                    .context("projector")
            });
            let joined = |role: &'static str| {
                move |r: Result<anyhow::Result<()>, tokio::task::JoinError>| {
                    r.with_context(|| format!("the {role} task failed"))?
                }
            };
            let result = tokio::try_join!(
                async { joined("ingress")(ingress.await) },
                async { joined("dispatcher")(dispatcher.await) },
                async { joined("projector")(projector.await) },
            );
            stop.cancel();
            probes.stop().await;
            result?;
        }
        Command::Providers {
            action: ProvidersAction::Reseal { common },
        } => reseal(&common).await?,
        Command::Prices {
            action: PricesAction::Check { older_than },
        } => {
            let (report, stale) = prices::check(chrono::Utc::now().date_naive(), older_than)?;
            output(&report)?;
            if stale {
                std::process::exit(1);
            }
        }
        Command::Config { action } => config(action).await?,
        Command::Doctor {
            common,
            admin_token,
        } => {
            let report = doctor::diagnose(&common, admin_token.as_ref()).await;
            output(&report.render(VERSION))?;
            if report.problems() > 0 {
                std::process::exit(1);
            }
        }
        Command::Migrate { common } => {
            let names = common.names()?;
            db::prepare(&common.database_url, 2)
                .await
                .with_context(|| format!("database {}", db::redact(&common.database_url)))?;
            let (_client, js) = nats::connect(&common.nats_url, "aigw-migrate").await?;
            // Everything aigw keeps in JetStream, at AIGW_NATS_REPLICAS
            // replicas (`AIGW_NATS_REPLICAS=3 aigw migrate` scales a
            // deployment up in place).
            let replicas = common.nats_replicas;
            let requests = nats::ensure_streams(&js, &names, &common.streams, replicas).await?;
            let jobs = nats::ensure_job_stream(&js, &names, &common.streams, replicas).await?;
            nats::scale_consumers(&requests, replicas).await?;
            nats::scale_consumers(&jobs, replicas).await?;
            aigw_runtime::limits::Limiter::open(&js, &names, replicas).await?;
            aigw_runtime::health::Health::open(&js, &names, Default::default(), replicas).await?;
            nats::ensure_media_store(&js, &names.media_bucket(), replicas).await?;
            nats::ensure_body_store(&js, &names.bodies_bucket(), replicas).await?;
            tracing::info!(replicas, "database, schema, streams and buckets are ready");
        }
    }
    Ok(())
}
