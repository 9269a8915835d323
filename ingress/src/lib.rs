//! The ingress role: aigw's HTTP API. It authenticates callers, validates
//! requests, queues them on JetStream for the dispatchers and relays the
//! answers; it also serves the admin API, stats, health and metrics.

pub mod admin;
pub mod admission;
pub mod alerts;
pub mod attribution;
pub mod auth;
pub mod billing;
pub mod body_deadline;
pub mod chat;
pub mod classes;
pub mod config_file;
pub mod cors;
pub mod cost;
pub mod dialects;
pub mod error;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod lost_answer;
pub mod multipart;
pub mod oidc;
pub mod openapi;
pub mod ops;
pub mod presets;
pub mod quarantine;
pub mod rejections;
pub mod relay;
pub mod roles;
pub mod routing;
pub mod server;
pub mod sessions;
pub mod sso_config;
pub mod teams;
pub mod ui;
pub mod usage;
pub mod users;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_events::Names;
use aigw_runtime::crypto::Sealer;
use aigw_runtime::health::{BreakerConfig, Health};
use aigw_runtime::limits::{Limiter, SpendLog};
use aigw_runtime::{
    CommonArgs, Registry, RuntimeError, Stores, config, db, nats, telemetry, traces,
};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Clone, Args)]
pub struct IngressArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "AIGW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Bootstrap owner's bearer token for /admin/api: at least 32 random
    /// characters (placeholders are refused at start). Admin users' own
    /// tokens work whether it is set or not; with neither, the admin API
    /// is disabled.
    #[arg(long, env = "AIGW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Turn the bootstrap token off (`AIGW_ADMIN_TOKEN` is then refused):
    /// only admin users' tokens work. Refused at start unless an active
    /// owner user exists.
    #[arg(long, env = "AIGW_ADMIN_TOKEN_DISABLED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub admin_token_disabled: bool,

    /// Origins allowed to call `/v1`, `/stats` and the public routes from
    /// a browser: `*` (any, the default) or a comma-separated list of
    /// origins (`https://app.example.com`); empty: same-origin only.
    #[arg(long, env = "AIGW_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,

    /// Origins allowed to call `/admin/api` from a browser: a
    /// comma-separated list (or `*`); empty (the default): same-origin only.
    #[arg(long, env = "AIGW_ADMIN_CORS_ORIGINS", default_value = "")]
    pub admin_cors_origins: String,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "AIGW_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long a caller waits for an answer (queueing, provider and stream
    /// silences included) before getting 504.
    #[arg(long, env = "AIGW_REQUEST_TIMEOUT", default_value = "330s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How long queueing a request is tried again while its stream has no
    /// leader (a NATS node lost, a leader being elected) before the caller
    /// gets 503. Each try carries the request's message id, so the request
    /// is queued at most once.
    #[arg(long, env = "AIGW_PUBLISH_RETRY", default_value = "15s", value_parser = humantime::parse_duration)]
    pub publish_retry: Duration,

    /// Admit from leases: slices of a key's rate limits and budgets this
    /// replica takes from the shared limits bucket in the background and
    /// admits from in memory (no NATS round trip per request). Limits still
    /// hold across replicas; near a limit (fewer than 32 requests' worth
    /// left) every admission is decided on the shared state. `false`: every
    /// admission is a compare-and-set on the shared state.
    #[arg(long, env = "AIGW_LIMIT_LEASES", default_value_t = true, action = clap::ArgAction::Set)]
    pub limit_leases: bool,

    /// Bytes of a streamed answer that may wait for a slow client; a client
    /// further behind gets an error event (`slow_reader`) and the stream
    /// ends.
    #[arg(long, env = "AIGW_SSE_BUFFER_BYTES", default_value_t = 1024 * 1024)]
    pub sse_buffer_bytes: usize,

    /// Jobs a key may have queued or running at once (429 beyond); 0: no
    /// limit.
    #[arg(long, env = "AIGW_MAX_QUEUED_JOBS_PER_KEY", default_value_t = 10_000)]
    pub max_queued_jobs_per_key: u64,

    /// Timeouts and the connection cap of the HTTP server.
    #[command(flatten)]
    pub server: server::ServerArgs,

    /// An aigw.toml applied before serving (as `aigw config apply` would,
    /// with the actor `config:<path>`); an invalid file stops the start.
    /// Replicas starting at once apply it one after the other, so only the
    /// first changes anything.
    #[arg(long = "config", env = "AIGW_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// With `--config`: also remove the providers and aliases, and revoke
    /// the keys, that the file does not declare.
    #[arg(long = "config-prune", env = "AIGW_CONFIG_PRUNE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub config_prune: bool,

    /// PostgreSQL URL of a read replica (one host or a host list, as
    /// `AIGW_DATABASE_URL`) that the read-heavy routes read from: `/stats`,
    /// the admin stats, billing, request log, usage and unpriced views.
    /// Writes, and every other read, stay on `AIGW_DATABASE_URL`. Unset:
    /// everything on `AIGW_DATABASE_URL`.
    #[arg(long, env = "AIGW_DATABASE_READ_URL")]
    pub database_read_url: Option<String>,

    /// Single sign-on (OpenID Connect) and admin UI sessions.
    #[command(flatten)]
    pub sso: sso_config::SsoArgs,
}

impl IngressArgs {
    /// The defaults, with whatever the `AIGW_*` variables say: for commands
    /// that use the ingress's state without serving (`aigw config`).
    pub fn from_env() -> Result<Self, clap::Error> {
        use clap::FromArgMatches;
        let matches =
            Self::augment_args(clap::Command::new("aigw")).try_get_matches_from(["aigw"])?;
        Self::from_arg_matches(&matches)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{0}")]
    Config(#[from] config_file::ConfigError),
}

/// What every request handler shares, behind one `Arc`: cloning it is one
/// reference count, whatever it holds. (The handles inside are not cheap to
/// clone: a JetStream key-value store or object store copies its stream's
/// whole description. Axum clones the state into every middleware and
/// handler a request passes, so an unshared state cost each request
/// hundreds of such copies.)
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// The handles in [`AppState`].
pub struct Handles {
    pub names: Names,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub stores: Stores,
    /// Where the read-heavy routes read (`AIGW_DATABASE_READ_URL`'s pool,
    /// else the primary's); it may lag the primary by its replication delay.
    pub read_pool: PgPool,
    pub registry: Arc<Registry>,
    pub limiter: Limiter,
    pub health: Health,
    pub sealer: Sealer,
    /// For single sign-on's calls to the identity provider (discovery,
    /// keys, token exchange). Providers are only ever called by dispatchers.
    pub http: reqwest::Client,
    pub admin_token: Option<SecretString>,
    /// The bootstrap token is off (`AIGW_ADMIN_TOKEN_DISABLED`).
    pub admin_token_disabled: bool,
    /// Who may call from a browser on another origin.
    pub cors: Arc<cors::CorsConfig>,
    /// Single sign-on, if configured.
    pub oidc: Option<Arc<oidc::Oidc>>,
    /// How admin UI sessions behave.
    pub sessions: Arc<sessions::SessionConfig>,
    /// Job webhooks may go to private addresses.
    pub webhook_allow_private: bool,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// How long queueing is tried again through a stream's leader election.
    pub publish_retry: Duration,
    /// How long a request body may take to arrive (408 after).
    pub body_timeout: Duration,
    /// Bytes of a streamed answer that may wait for a slow client.
    pub sse_buffer_bytes: usize,
    /// Jobs a key may have queued or running (`None`: no limit).
    pub max_queued_jobs_per_key: Option<u64>,
    pub metrics: PrometheusHandle,
    /// Uploaded audio on its way to a dispatcher.
    pub media: async_nats::jetstream::object_store::ObjectStore,
    /// Request bodies too large for one NATS message, on their way to a
    /// dispatcher (`aigw_runtime::bodies`).
    pub bodies: async_nats::jetstream::object_store::ObjectStore,
}

/// The id of one HTTP request, also the id of the chat request it queues.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every header aigw sets on an answer, so that a browser on another origin
/// may read it (CORS `access-control-expose-headers`).
pub(crate) const EXPOSED_HEADERS: [&str; 15] = [
    "x-request-id",
    "x-aigw-provider",
    "x-aigw-attempts",
    cost::COST_USD,
    cost::COST_FLAGGED,
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "idempotent-replayed",
    "x-aigw-original-request-id",
    "retry-after",
    "location",
];

/// Gives every request a fresh UUID v7, logs it, and returns it as
/// `x-request-id`. Its span is the request's ingress span: traced, it
/// continues the caller's `traceparent` and names its trace in the logs.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = Uuid::now_v7();
    request.extensions_mut().insert(RequestId(id));
    let method = request.method().clone();
    let path = request.uri().path();
    let span = if traces::enabled() {
        let span = tracing::info_span!(
            "http",
            request_id = %id,
            %method,
            %path,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
            otel.name = %method,
        );
        traces::continue_from_http(&span, request.headers());
        traces::attr(&span, "aigw.request_id", id.to_string());
        traces::attr(&span, "http.request.method", method.to_string());
        traces::attr(&span, "url.path", path.to_string());
        span
    } else {
        tracing::info_span!("http", request_id = %id, %method, %path)
    };
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    traces::attr(&span, "http.response.status_code", i64::from(status));
    if response.status().is_server_error() {
        traces::error(&span, status.to_string());
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}

/// Counts requests by route template (never by raw path: ids would explode
/// the label set) and status.
async fn http_metrics(path: MatchedPath, request: Request, next: Next) -> Response {
    let started = Instant::now();
    if traces::enabled() {
        let span = tracing::Span::current();
        traces::rename(&span, format!("{} {}", request.method(), path.as_str()));
        traces::attr(&span, "http.route", path.as_str().to_string());
    }
    let response = next.run(request).await;
    let path = path.as_str().to_string();
    let status = response.status().as_u16().to_string();
    metrics::counter!("aigw_http_requests_total", "path" => path.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("aigw_http_request_duration_seconds", "path" => path)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "Unknown path.".into(),
        code: "unknown_url",
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(_: Box<dyn std::any::Any + Send>) -> Response {
    ApiError::Internal("handler panicked".into()).into_response()
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let keyed = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(chat::embeddings))
        .route("/v1/rerank", post(chat::rerank))
        .route("/v2/rerank", post(chat::rerank_cohere_v2))
        .route("/v1/moderations", post(chat::moderations))
        .route("/v1/images/generations", post(chat::images))
        .route("/v1/audio/speech", post(chat::speech))
        .route(
            "/v1/audio/transcriptions",
            post(chat::transcriptions).layer(DefaultBodyLimit::max(validate::MAX_AUDIO_BYTES)),
        )
        .route("/v1/responses", post(dialects::responses::responses))
        .route(
            "/v1/responses/{id}",
            get(dialects::stored_responses::get_response)
                .delete(dialects::stored_responses::delete_response),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(dialects::stored_responses::input_items),
        )
        .route("/v1/models", get(ops::models))
        .route("/v1/key", get(keys::own_key))
        .route("/v1/jobs", post(jobs::submit).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel_job_post))
        .route("/stats", get(ops::stats))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    // Anthropic's Messages API: the same key check, every error in
    // Anthropic's shape (the outer layer sees the key check's too).
    let anthropic = Router::new()
        .route("/v1/messages", post(dialects::anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(dialects::anthropic::count_tokens),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .route_layer(middleware::from_fn(dialects::anthropic::anthropic_errors));
    // Gemini's API: a `?key=` leaves the URI first, then the same key
    // check; every error in Gemini's shape.
    let gemini = Router::new()
        .route("/v1beta/models", get(dialects::gemini::list_models))
        .route(
            "/v1beta/models/{*name}",
            get(dialects::gemini::get_model).post(dialects::gemini::post_model),
        )
        // google-genai 3 calls the `v1` version of the same methods.
        .route("/v1/models/{*name}", post(dialects::gemini::post_model_v1))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .route_layer(middleware::from_fn(dialects::gemini::query_key))
        .route_layer(middleware::from_fn(dialects::gemini::gemini_errors));
    let admin = Router::new()
        .route(
            "/admin/api/providers",
            post(admin::create_provider).get(admin::list_providers),
        )
        .route(
            "/admin/api/providers/{id}",
            get(admin::get_provider)
                .patch(admin::update_provider)
                .delete(admin::delete_provider),
        )
        .route("/admin/api/unpriced", get(ops::unpriced))
        .route(
            "/admin/api/providers/{id}/health",
            get(routing::provider_health_one),
        )
        .route("/admin/api/health", get(routing::health_summary))
        .route("/admin/api/providers/{id}/test", post(admin::test_provider))
        .route(
            "/admin/api/aliases",
            post(routing::create_alias).get(routing::list_aliases),
        )
        .route(
            "/admin/api/aliases/{name}",
            get(routing::get_alias)
                .patch(routing::update_alias)
                .delete(routing::delete_alias),
        )
        .route("/admin/api/stats", get(billing::stats))
        .route("/admin/api/billing", get(billing::billing))
        .route("/admin/api/requests", get(billing::requests))
        .route("/admin/api/audit", post(billing::run_audit))
        .route("/admin/api/alerts", get(alerts::list))
        .route("/admin/api/quarantine", get(quarantine::list))
        .route("/admin/api/presets", get(presets::list_presets))
        .route(
            "/admin/api/keys",
            post(keys::create_key).get(keys::list_keys),
        )
        .route(
            "/admin/api/keys/{id}",
            get(keys::get_key)
                .patch(keys::update_key)
                .delete(keys::revoke_key),
        )
        .route("/admin/api/keys/{id}/topup", post(keys::top_up))
        .route("/admin/api/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/api/keys/{id}/revoke", post(keys::revoke_key_post))
        .route("/admin/api/keys/{id}/events", get(keys::key_events))
        .route(
            "/admin/api/teams",
            post(teams::create_team).get(teams::list_teams),
        )
        .route(
            "/admin/api/teams/{id}",
            get(teams::get_team)
                .patch(teams::update_team)
                .delete(teams::delete_team),
        )
        .route(
            "/admin/api/projects",
            post(teams::create_project).get(teams::list_projects),
        )
        .route(
            "/admin/api/projects/{id}",
            get(teams::get_project)
                .patch(teams::update_project)
                .delete(teams::delete_project),
        )
        .route("/admin/api/jobs", get(jobs::admin_list))
        .route(
            "/admin/api/jobs/{id}",
            get(jobs::admin_get).delete(jobs::admin_cancel),
        )
        .route("/admin/api/usage", get(usage::usage))
        .route("/admin/api/usage/requests", get(usage::requests))
        .route("/admin/api/usage/requests/{id}", get(usage::request_detail))
        .route("/admin/api/me", get(users::me))
        .route("/admin/api/sign-ins", get(sessions::sign_ins))
        .route(
            "/admin/api/users",
            post(users::create_user).get(users::list_users),
        )
        .route(
            "/admin/api/users/{id}",
            get(users::get_user)
                .patch(users::update_user)
                .delete(users::disable_user),
        )
        .route("/admin/api/users/{id}/roles", put(users::set_roles))
        .route(
            "/admin/api/users/{id}/tokens",
            post(users::create_token).get(users::list_tokens),
        )
        .route(
            "/admin/api/users/{id}/tokens/{token_id}",
            delete(users::revoke_token),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let public = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/admin/auth/config", get(oidc::auth_config))
        .route("/admin/auth/oidc/login", get(oidc::login))
        .route("/admin/auth/oidc/callback", get(oidc::callback))
        .route("/admin/auth/logout", post(sessions::logout))
        .merge(ui::routes());
    let cors = state.cors.clone();
    Router::new()
        .merge(keyed)
        .merge(anthropic)
        .merge(gemini)
        .merge(admin)
        .merge(public)
        .route_layer(middleware::from_fn(http_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.body_timeout,
            body_deadline::body_deadline,
        ))
        .layer(middleware::from_fn(rejections::rejections_as_json))
        .layer(middleware::from_fn(request_id))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(cors, cors::cors))
        .with_state(state)
}

/// Refuses placeholder or short secrets (`AIGW_ADMIN_TOKEN`,
/// `AIGW_MASTER_KEY`) before anything starts; returns the sealer.
pub fn check_secrets(common: &CommonArgs, args: &IngressArgs) -> Result<Sealer, RuntimeError> {
    if let Some(token) = &args.admin_token {
        config::check_secret("AIGW_ADMIN_TOKEN", token)?;
    }
    common.sealer()
}

/// Origins besides a request's own host that may use the session cookie:
/// the redirect URL's and the listed admin CORS origins (not `*`).
fn session_origins(args: &IngressArgs, oidc: Option<&oidc::Oidc>) -> Vec<String> {
    let redirect = oidc
        .and_then(|o| reqwest::Url::parse(&o.settings.redirect_url).ok())
        .map(|u| u.origin().ascii_serialization());
    args.admin_cors_origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "*")
        .map(str::to_string)
        .chain(redirect)
        .collect()
}

/// Connects to NATS and PostgreSQL, prepares them, and builds the state.
pub async fn prepare(common: &CommonArgs, args: &IngressArgs) -> Result<AppState, IngressError> {
    prepare_state(common, args, true).await
}

/// The state for a command that changes configuration without serving
/// (`aigw config`): the request and job streams are left as the running
/// roles set them up (their limits are theirs to apply).
pub async fn prepare_admin(
    common: &CommonArgs,
    args: &IngressArgs,
) -> Result<AppState, IngressError> {
    prepare_state(common, args, false).await
}

async fn prepare_state(
    common: &CommonArgs,
    args: &IngressArgs,
    streams: bool,
) -> Result<AppState, IngressError> {
    let names = common.names()?;
    let sealer = check_secrets(common, args)?;
    let cors = cors::CorsConfig::parse(&args.cors_origins, &args.admin_cors_origins)?;
    let oidc = args
        .sso
        .oidc(sealer.is_configured())?
        .map(|s| Arc::new(oidc::Oidc::new(s)));
    let sessions = sessions::SessionConfig {
        secure: args.sso.session_cookie_secure,
        idle: args.sso.session_idle_timeout,
        max_age: args.sso.session_max_age,
        origins: session_origins(args, oidc.as_deref()),
    };
    let pool = db::prepare(&common.database_url, common.db_max_connections).await?;
    if streams && args.admin_token_disabled && !aigw_runtime::users::owner_exists(&pool).await? {
        return Err(RuntimeError::Config(
            "AIGW_ADMIN_TOKEN_DISABLED is set but no active owner user exists: create one (and their token) with the bootstrap token first".into(),
        )
        .into());
    }
    // A replica is read-only: no database to create, no schema to migrate.
    let read_pool = match &args.database_read_url {
        Some(url) => db::connect(url, common.db_max_connections)
            .await
            .map_err(|e| RuntimeError::Config(format!("AIGW_DATABASE_READ_URL: {e}")))?,
        None => pool.clone(),
    };
    let (client, js) = nats::connect(&common.nats_url, "aigw-ingress").await?;
    let replicas = common.nats_replicas;
    if streams {
        nats::ensure_streams(&js, &names, &common.streams, replicas).await?;
        nats::ensure_job_stream(&js, &names, &common.streams, replicas).await?;
    }
    let registry = Registry::load(pool.clone()).await?;
    let limiter = Limiter::open(&js, &names, replicas)
        .await?
        .with_spend_log(SpendLog::new(pool.clone()));
    let limiter = if args.limit_leases {
        limiter.with_leases()
    } else {
        limiter
    };
    let health = Health::open(&js, &names, BreakerConfig::default(), replicas).await?;
    let media = nats::ensure_media_store(&js, &names.media_bucket(), replicas).await?;
    let bodies = nats::ensure_body_store(&js, &names.bodies_bucket(), replicas).await?;
    Ok(AppState::new(Handles {
        media,
        bodies,
        names,
        client,
        js,
        stores: Stores::new(pool),
        read_pool,
        registry,
        limiter,
        health,
        sealer,
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| RuntimeError::Config(format!("HTTP client: {e}")))?,
        admin_token: args.admin_token.clone(),
        admin_token_disabled: args.admin_token_disabled,
        cors: Arc::new(cors),
        oidc,
        sessions: Arc::new(sessions),
        webhook_allow_private: common.allow_private_egress(),
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        publish_retry: args.publish_retry,
        body_timeout: args.server.body_timeout,
        sse_buffer_bytes: args.sse_buffer_bytes,
        max_queued_jobs_per_key: (args.max_queued_jobs_per_key > 0)
            .then_some(args.max_queued_jobs_per_key),
        metrics: telemetry::metrics(),
    }))
}

/// Serves the API on `listener` until `shutdown` fires.
pub async fn run(
    common: CommonArgs,
    args: IngressArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let state = prepare(&common, &args).await?;
    if let Some(path) = &args.config {
        let options = config_file::Options {
            prune: args.config_prune,
            actor: config_file::actor(path),
        };
        let applied = config_file::apply_file(&state, path, &options).await?;
        tracing::info!(file = %path.display(), changes = applied.plan.changes.len(), "configuration applied");
    }
    let follower = state
        .registry
        .follow(state.client.clone(), &state.names, Duration::from_secs(10))
        .await?;
    // Counters of rare events start at 0, so the first one is an increase.
    server::register_metrics();
    metrics::counter!(relay::SLOW_READERS).increment(0);
    metrics::counter!(admission::CONCURRENCY_REFUSED).increment(0);
    metrics::counter!(lost_answer::LOST).increment(0);
    let app = router(state.clone());
    tracing::info!(addr = %listener.local_addr()?, "ingress listening");
    server::serve(listener, app, &args.server, shutdown, common.shutdown_grace).await;
    follower.abort();
    let _ = state.client.flush().await;
    Ok(())
}
