//! The dispatcher role: consumes accepted requests from JetStream, calls the
//! providers, streams the answer back to the waiting ingress and records each
//! request's events exactly once.

pub mod adapter;
pub mod answer;
pub mod attempt;
pub mod candidates;
pub mod chat;
pub mod convert;
pub mod dialect;
pub mod embeddings;
pub mod jobs;
pub mod media;
pub mod probe;
pub mod process;
pub mod provider_test;
pub mod providers;
pub mod pull;
pub mod record;
pub mod relay;
pub mod reply;
pub mod rerank;
pub mod routing;
pub mod spans;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::routing::Router;
use aigw_events::Strategy;
use aigw_runtime::crypto::Sealer;
use aigw_runtime::egress::Egress;
use aigw_runtime::health::{BreakerConfig, Health};
use aigw_runtime::limits::{Limiter, SpendLog};
use aigw_runtime::readiness::Readiness;
use aigw_runtime::{CommonArgs, Registry, RuntimeError, Stores, db, nats};
use async_nats::jetstream::consumer::{self, AckPolicy};
use clap::Args;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, Args)]
pub struct DispatcherArgs {
    /// Requests this process works on at once.
    #[arg(long, env = "AIGW_DISPATCH_CONCURRENCY", default_value_t = 512)]
    pub concurrency: usize,

    /// How long a request may go without a sign of life before JetStream
    /// hands it to another dispatcher (e.g. "10s"). Shared by every replica.
    /// It bounds how long a request waits after its dispatcher died, or
    /// after its delivery was lost with a NATS server; dispatchers signal
    /// progress every third of it.
    #[arg(long, env = "AIGW_ACK_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    /// Deliveries of one request before it is failed instead of retried.
    #[arg(long, env = "AIGW_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: u64,

    /// Limit on connecting to a provider.
    #[arg(long, env = "AIGW_UPSTREAM_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Limit on a whole provider call, streamed answers included.
    #[arg(long, env = "AIGW_UPSTREAM_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Longest silence allowed while reading a provider's answer.
    #[arg(long, env = "AIGW_UPSTREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// Default routing strategy (aliases may choose their own): priority,
    /// weighted, cost, latency or auto.
    #[arg(long, env = "AIGW_ROUTING_STRATEGY", default_value = "priority", value_parser = parse_strategy)]
    pub routing_strategy: Strategy,

    /// Seed for weighted choices (reproducible routing, for tests and benchmarks).
    #[arg(long, env = "AIGW_ROUTING_SEED")]
    pub routing_seed: Option<u64>,

    /// Retries on the same target (after a connection error, timeout, 429 or
    /// 5xx) before moving to the next one.
    #[arg(long, env = "AIGW_RETRIES_PER_TARGET", default_value_t = 1)]
    pub retries_per_target: u32,

    /// Most upstream attempts for one request, all targets together.
    #[arg(long, env = "AIGW_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: usize,

    /// Longest wait before a retry on the same target (a longer Retry-After
    /// moves on to the next target instead).
    #[arg(long, env = "AIGW_MAX_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// Deadline of a request over all its attempts.
    #[arg(long, env = "AIGW_REQUEST_DEADLINE", default_value = "300s", value_parser = humantime::parse_duration)]
    pub request_deadline: Duration,

    /// Consecutive failures of a provider and model that open its circuit.
    #[arg(long, env = "AIGW_BREAKER_THRESHOLD", default_value_t = 3)]
    pub breaker_threshold: u32,

    /// How long an open circuit refuses calls before a probe is let through.
    #[arg(long, env = "AIGW_BREAKER_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub breaker_cooldown: Duration,

    /// Jobs (`POST /v1/jobs`) this process runs at once, apart from the
    /// synchronous requests (which never wait behind jobs).
    #[arg(long, env = "AIGW_JOB_CONCURRENCY", default_value_t = 16)]
    pub job_concurrency: usize,

    /// Attempts to deliver a finished job to its webhook.
    #[arg(long, env = "AIGW_WEBHOOK_ATTEMPTS", default_value_t = 6)]
    pub webhook_attempts: u32,

    /// Wait before the second webhook attempt, doubled after each failure.
    #[arg(long, env = "AIGW_WEBHOOK_BACKOFF", default_value = "2s", value_parser = humantime::parse_duration)]
    pub webhook_backoff: Duration,

    /// Limit on one webhook delivery.
    #[arg(long, env = "AIGW_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// Probe every OpenAI-compatible provider (`GET /models`) this often;
    /// off when unset.
    #[arg(long, env = "AIGW_HEALTH_PROBE_INTERVAL", value_parser = humantime::parse_duration)]
    pub health_probe_interval: Option<Duration>,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("unknown strategy {s:?}: use priority, weighted, cost, latency or auto")
    })
}

/// Routing limits of this dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct RoutingLimits {
    pub strategy: Strategy,
    pub retries_per_target: u32,
    pub max_attempts: usize,
    pub max_backoff: Duration,
    pub request_deadline: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Cancellation handles of the requests this process is working on.
#[derive(Default)]
pub struct Inflight(Mutex<HashMap<Uuid, CancellationToken>>);

impl Inflight {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, CancellationToken>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn insert(&self, id: Uuid, token: CancellationToken) {
        self.map().insert(id, token);
    }
    pub fn remove(&self, id: &Uuid) {
        self.map().remove(id);
    }
    pub fn cancel(&self, id: &Uuid) {
        if let Some(t) = self.map().get(id) {
            t.cancel();
        }
    }
}

/// What every request handler of this process shares.
pub struct Shared {
    pub client: async_nats::Client,
    pub stores: Stores,
    pub registry: Arc<Registry>,
    pub limiter: Limiter,
    pub health: Health,
    pub router: Router,
    pub limits: RoutingLimits,
    pub sealer: Sealer,
    pub http: reqwest::Client,
    /// The HTTP client for URLs that did not come from an admin (job
    /// webhooks, providers' output files): no redirects, and public
    /// addresses only unless `AIGW_EGRESS_ALLOW_PRIVATE`.
    pub egress: Egress,
    pub inflight: Inflight,
    pub ack_wait: Duration,
    pub max_deliver: u64,
    pub webhooks: jobs::WebhookConfig,
    /// Uploaded audio of transcription requests, by request id.
    pub media: async_nats::jetstream::object_store::ObjectStore,
    /// Request bodies too large for their messages (`aigw_runtime::bodies`).
    pub bodies: async_nats::jetstream::object_store::ObjectStore,
}

/// The HTTP client for provider calls, with every timeout set.
pub fn http_client(args: &DispatcherArgs) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(args.upstream_connect_timeout)
        .timeout(args.upstream_timeout)
        .read_timeout(args.upstream_idle_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("aigw/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Runs a dispatcher until `shutdown` fires, then finishes the requests in hand.
pub async fn run(
    common: CommonArgs,
    args: DispatcherArgs,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    run_ready(common, args, shutdown, Readiness::default()).await
}

/// [`run`], marking `readiness` started once the streams, consumers and
/// buckets are in place and pulling begins.
pub async fn run_ready(
    common: CommonArgs,
    args: DispatcherArgs,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> Result<(), DispatcherError> {
    let names = common.names()?;
    let sealer = common.sealer()?;
    let pool = db::prepare(&common.database_url, common.db_max_connections).await?;
    let (client, js) = nats::connect(&common.nats_url, "aigw-dispatcher").await?;
    let replicas = common.nats_replicas;
    let stream = nats::ensure_streams(&js, &names, &common.streams, replicas).await?;
    let registry = Registry::load(pool.clone()).await?;
    let follower = registry
        .follow(client.clone(), &names, Duration::from_secs(10))
        .await?;

    let consumer_name = names.dispatcher_consumer();
    let consumer = nats::ensure_consumer(
        &stream,
        consumer::pull::Config {
            durable_name: Some(consumer_name.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: args.ack_wait,
            max_deliver: args.max_deliver as i64 + 1,
            max_ack_pending: (args.concurrency * 4) as i64,
            filter_subject: names.requests_subjects(),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;

    let job_stream = nats::ensure_job_stream(&js, &names, &common.streams, replicas).await?;
    let job_consumer_name = names.jobs_consumer();
    let job_consumer = nats::ensure_consumer(
        &job_stream,
        consumer::pull::Config {
            durable_name: Some(job_consumer_name.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: args.ack_wait,
            // Runs are counted by the job's own events (see `jobs`).
            max_deliver: -1,
            // Finished jobs stay unacked while their webhooks retry.
            max_ack_pending: (args.job_concurrency.max(1) * 16) as i64,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;

    // Settlements and token corrections only delay acks: let them gather
    // into fewer writes.
    let limiter = Limiter::open(&js, &names, replicas)
        .await?
        .with_linger(Duration::from_millis(5))
        .with_spend_log(SpendLog::new(pool.clone()));
    let health = Health::open(
        &js,
        &names,
        BreakerConfig {
            threshold: args.breaker_threshold.max(1),
            cooldown: args.breaker_cooldown,
            probe_timeout: args.upstream_timeout.min(Duration::from_secs(60)),
        },
        replicas,
    )
    .await?;
    let health_follower = health.follow().await?;
    let media = nats::ensure_media_store(&js, &names.media_bucket(), replicas).await?;
    let bodies = nats::ensure_body_store(&js, &names.bodies_bucket(), replicas).await?;
    let shared = Arc::new(Shared {
        media,
        bodies,
        client: client.clone(),
        stores: Stores::new(pool),
        registry,
        limiter,
        health,
        router: Router::new(args.routing_seed),
        limits: RoutingLimits {
            strategy: args.routing_strategy,
            retries_per_target: args.retries_per_target,
            max_attempts: args.max_attempts.max(1),
            max_backoff: args.max_backoff,
            request_deadline: args.request_deadline,
        },
        sealer,
        http: http_client(&args)?,
        egress: Egress::new(common.allow_private_egress())?,
        inflight: Inflight::default(),
        ack_wait: args.ack_wait,
        max_deliver: args.max_deliver,
        webhooks: jobs::WebhookConfig {
            attempts: args.webhook_attempts.max(1),
            backoff: args.webhook_backoff,
            timeout: args.webhook_timeout,
        },
    });

    let cancels = follow_cancellations(shared.clone(), &names).await?;
    let provider_tests = provider_test::serve(shared.clone(), &names).await?;
    let prober = args
        .health_probe_interval
        .map(|every| probe::spawn(shared.clone(), every));
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let job_permits = Arc::new(Semaphore::new(args.job_concurrency.max(1)));
    let running = pull::Running::default();
    let job_runner = tokio::spawn(pull::jobs(
        shared.clone(),
        job_consumer,
        job_permits,
        permits.clone(),
        args.concurrency.max(1),
        running.clone(),
        shutdown.clone(),
    ));
    readiness.started(shared.stores.pool.clone(), Some(client.clone()));
    tracing::info!(consumer = %consumer_name, jobs = %job_consumer_name, "dispatcher ready");
    pull::requests(shared, consumer, permits, running.clone(), shutdown).await;

    // Pulling has stopped (what the last pull brought is handed back);
    // finish what is in hand within the grace, hand back the rest.
    let _ = job_runner.await;
    running.finish(common.shutdown_grace).await;
    cancels.abort();
    provider_tests.abort();
    follower.abort();
    health_follower.abort();
    if let Some(p) = prober {
        p.abort();
    }
    let _ = client.flush().await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

async fn follow_cancellations(
    shared: Arc<Shared>,
    names: &aigw_events::Names,
) -> Result<tokio::task::JoinHandle<()>, DispatcherError> {
    let mut sub = shared
        .client
        .subscribe(names.cancel_wildcard())
        .await
        .map_err(|e| DispatcherError::Nats(e.to_string()))?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let id = msg
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| Uuid::parse_str(s).ok());
            if let Some(id) = id {
                shared.inflight.cancel(&id);
            }
        }
    }))
}
