//! `TestEnv`: a private aigw (database, namespace, roles) per test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aigw_dispatcher::DispatcherArgs;
use aigw_ingress::IngressArgs;
use aigw_projector::ProjectorArgs;
use aigw_runtime::CommonArgs;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Long and random-looking enough for aigw's rule on secrets (no
/// placeholder, at least 32 characters).
pub const ADMIN_TOKEN: &str = "aigw-test-admin-token-0f3a9c27d1e84b6a";
pub const MASTER_KEY: &str = "aigw-test-master-key-5c1e7b9a2d4f4e08a6b3";

/// The nats-server shared by every test of this binary (each test uses its
/// own namespace). A watchdog shell kills it when the test process exits.
struct Nats {
    url: String,
    _child: Child,
}

static NATS: OnceLock<Nats> = OnceLock::new();

pub fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("AIGW_TEST_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    panic!(
        "no nats-server 2.10+ found: run scripts/test (it installs one into .tools/), \
         or set AIGW_TEST_NATS_SERVER"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nats() -> &'static Nats {
    NATS.get_or_init(|| start_nats(None))
}

/// Starts a nats-server (with NATS's default `max_payload`, 1 MiB, unless
/// given), stopped when the test process exits.
fn start_nats(max_payload: Option<usize>) -> Nats {
    let bin = nats_server_binary();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("aigw-test-nats-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = match max_payload {
        Some(m) => {
            let file = dir.join("nats.conf");
            std::fs::write(&file, format!("max_payload: {m}\n")).unwrap();
            format!("-c '{}'", file.display())
        }
        None => String::new(),
    };
    let script = format!(
        "'{bin}' {config} -a 127.0.0.1 -p {port} -js -sd '{dir}' >'{dir}/log' 2>&1 & child=$!\n\
             while kill -0 {parent} 2>/dev/null; do sleep 0.5; done\n\
             kill $child; sleep 0.5; rm -rf '{dir}'",
        bin = bin.display(),
        dir = dir.display(),
        parent = std::process::id(),
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nats {
        url: format!("nats://127.0.0.1:{port}"),
        _child: child,
    }
}

pub fn init_process() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var("TEST_LOG").is_ok() {
            aigw_runtime::telemetry::init_tracing("text");
        }
    });
}

/// Which roles a test runs in-process, and their settings.
#[derive(Clone)]
pub struct Options {
    pub dispatcher: bool,
    pub projector: bool,
    pub max_body_bytes: usize,
    pub upstream_timeout: Duration,
    pub ack_wait: Duration,
    pub request_timeout: Duration,
    pub admin_token: Option<&'static str>,
    /// `AIGW_ADMIN_TOKEN_DISABLED`.
    pub admin_token_disabled: bool,
    /// `AIGW_CORS_ORIGINS` and `AIGW_ADMIN_CORS_ORIGINS`.
    pub cors_origins: String,
    pub admin_cors_origins: String,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub retries_per_target: u32,
    pub max_attempts: usize,
    pub routing_strategy: aigw_events::Strategy,
    pub health_probe_interval: Option<Duration>,
    pub job_concurrency: usize,
    pub webhook_attempts: u32,
    pub webhook_backoff: Duration,
    /// Egress to caller- and provider-supplied URLs may reach private
    /// addresses: the tests' webhook receivers and file hosts listen on
    /// 127.0.0.1.
    pub allow_private_egress: bool,
    /// Run against a NATS server of this test's own with this
    /// `max_payload` (the shared one keeps NATS's default, 1 MiB).
    pub nats_max_payload: Option<usize>,
    /// Run against these NATS servers (`AIGW_NATS_URL`: a seed list, e.g.
    /// of a `NatsCluster`) rather than the shared one.
    pub nats_url: Option<String>,
    /// `AIGW_NATS_REPLICAS` of every role.
    pub nats_replicas: usize,
    /// The host list of `AIGW_DATABASE_URL` (e.g. `127.0.0.1:5999,127.0.0.1:5432`,
    /// with `target_session_attrs=read-write`) rather than the local server.
    pub database_hosts: Option<String>,
    /// `AIGW_DATABASE_READ_URL` of the ingress.
    pub database_read_url: Option<String>,
    pub server: aigw_ingress::server::ServerArgs,
    pub sse_buffer_bytes: usize,
    pub max_queued_jobs_per_key: u64,
    pub streams: aigw_runtime::nats::StreamLimits,
    /// Budget alert delivery of the in-process projector.
    pub alerts: aigw_projector::alerts::AlertArgs,
    /// Single sign-on and sessions of the ingress; `{base}` in the
    /// redirect URL is replaced by the ingress's own base URL.
    pub sso: aigw_ingress::sso_config::SsoArgs,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dispatcher: true,
            projector: true,
            max_body_bytes: 256 * 1024,
            upstream_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            admin_token: Some(ADMIN_TOKEN),
            admin_token_disabled: false,
            cors_origins: "*".into(),
            admin_cors_origins: String::new(),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(30),
            retries_per_target: 1,
            max_attempts: 6,
            routing_strategy: aigw_events::Strategy::Priority,
            health_probe_interval: None,
            job_concurrency: 4,
            webhook_attempts: 4,
            webhook_backoff: Duration::from_millis(100),
            allow_private_egress: true,
            nats_max_payload: None,
            nats_url: None,
            nats_replicas: 1,
            database_hosts: None,
            database_read_url: None,
            server: Default::default(),
            sse_buffer_bytes: 1024 * 1024,
            max_queued_jobs_per_key: 10_000,
            // JetStream reserves a stream's byte limit of its storage, and
            // every test's streams stay on the shared server: none here.
            streams: aigw_runtime::nats::StreamLimits {
                requests_max_bytes: 0,
                jobs_max_bytes: 0,
                ..Default::default()
            },
            alerts: Default::default(),
            sso: Default::default(),
        }
    }
}

pub struct TestEnv {
    pub base: String,
    pub http: reqwest::Client,
    pub common: CommonArgs,
    pub options: Options,
    pub pool: PgPool,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    children: Vec<Child>,
    /// This test's own NATS server, if it has one.
    _nats: Option<Nats>,
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        init_process();
        let own_nats = options.nats_max_payload.map(|m| start_nats(Some(m)));
        let nats_url = match (&options.nats_url, &own_nats) {
            (Some(url), _) => url.clone(),
            (None, Some(own)) => own.url.clone(),
            (None, None) => nats().url.clone(),
        };
        let run = std::env::var("AIGW_TEST_RUN").unwrap_or_else(|_| "local".into());
        let unique = Uuid::now_v7().simple().to_string();
        let db_name = format!("aigw_t_{run}_{unique}");
        let common = CommonArgs {
            nats_url,
            nats_replicas: options.nats_replicas,
            shutdown_grace: Duration::from_secs(25),
            database_url: match &options.database_hosts {
                Some(hosts) => {
                    format!("postgres://postgres@{hosts}/{db_name}?target_session_attrs=read-write")
                }
                None => format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            },
            namespace: format!("t{}", &unique[unique.len() - 16..]),
            db_max_connections: 8,
            master_key: Some(SecretString::from(MASTER_KEY)),
            master_key_previous: None,
            egress_allow_private: Some(options.allow_private_egress),
            webhook_allow_private: None,
            streams: options.streams.clone(),
        };
        let pool = aigw_runtime::db::prepare(&common.database_url, 4)
            .await
            .unwrap();
        let mut env = Self {
            base: String::new(),
            http: reqwest::Client::new(),
            common,
            options: options.clone(),
            pool,
            shutdown: CancellationToken::new(),
            tasks: vec![],
            children: vec![],
            _nats: own_nats,
        };
        env.base = env.start_ingress().await;
        if options.dispatcher {
            env.start_dispatcher();
        }
        if options.projector {
            env.start_projector();
        }
        env.wait_ready(&env.base.clone()).await;
        env
    }

    pub fn ingress_args(&self) -> IngressArgs {
        IngressArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: self.options.admin_token.map(SecretString::from),
            admin_token_disabled: self.options.admin_token_disabled,
            cors_origins: self.options.cors_origins.clone(),
            admin_cors_origins: self.options.admin_cors_origins.clone(),
            max_body_bytes: self.options.max_body_bytes,
            request_timeout: self.options.request_timeout,
            publish_retry: Duration::from_secs(15),
            limit_leases: true,
            sse_buffer_bytes: self.options.sse_buffer_bytes,
            max_queued_jobs_per_key: self.options.max_queued_jobs_per_key,
            server: self.options.server.clone(),
            config: None,
            config_prune: false,
            database_read_url: self.options.database_read_url.clone(),
            sso: self.options.sso.clone(),
        }
    }

    pub fn dispatcher_args(&self) -> DispatcherArgs {
        DispatcherArgs {
            concurrency: 64,
            ack_wait: self.options.ack_wait,
            max_deliver: 5,
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: self.options.upstream_timeout,
            upstream_idle_timeout: self.options.upstream_timeout,
            routing_strategy: self.options.routing_strategy,
            routing_seed: Some(7),
            retries_per_target: self.options.retries_per_target,
            max_attempts: self.options.max_attempts,
            max_backoff: Duration::from_secs(5),
            request_deadline: Duration::from_secs(60),
            breaker_threshold: self.options.breaker_threshold,
            breaker_cooldown: self.options.breaker_cooldown,
            health_probe_interval: self.options.health_probe_interval,
            job_concurrency: self.options.job_concurrency,
            webhook_attempts: self.options.webhook_attempts,
            webhook_backoff: self.options.webhook_backoff,
            webhook_timeout: Duration::from_secs(2),
        }
    }

    /// Starts one more ingress replica; returns its base URL.
    pub async fn start_ingress(&mut self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (common, mut args, stop) = (
            self.common.clone(),
            self.ingress_args(),
            self.shutdown.clone(),
        );
        if let Some(url) = &mut args.sso.oidc_redirect_url {
            *url = url.replace("{base}", &base);
        }
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = aigw_ingress::run(common, args, listener, stop).await {
                panic!("ingress failed: {e}");
            }
        }));
        self.wait_ready(&base).await;
        base
    }

    /// Starts one more dispatcher in this process.
    pub fn start_dispatcher(&mut self) -> CancellationToken {
        let stop = self.shutdown.child_token();
        let (common, args, token) = (self.common.clone(), self.dispatcher_args(), stop.clone());
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = aigw_dispatcher::run(common, args, token).await {
                panic!("dispatcher failed: {e}");
            }
        }));
        stop
    }

    pub fn start_projector(&mut self) {
        let (common, stop) = (self.common.clone(), self.shutdown.clone());
        let args = ProjectorArgs {
            poll: Duration::from_millis(50),
            batch: 500,
            alerts: self.options.alerts.clone(),
        };
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = aigw_projector::run(common, args, stop).await {
                panic!("projector failed: {e}");
            }
        }));
    }

    /// An `aigw <role>` process of this test's deployment (its NATS,
    /// database, namespace, master key and stream limits), logging warnings
    /// only and tracing nothing unless the caller adds settings.
    pub fn role_process(&self, role: &str) -> Command {
        let streams = &self.common.streams;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
        cmd.arg(role)
            .env("AIGW_NATS_URL", &self.common.nats_url)
            .env("AIGW_DATABASE_URL", &self.common.database_url)
            .env("AIGW_NAMESPACE", &self.common.namespace)
            .env("AIGW_NATS_REPLICAS", self.common.nats_replicas.to_string())
            .env("AIGW_SHUTDOWN_GRACE", humantime(self.common.shutdown_grace))
            .env("AIGW_MASTER_KEY", MASTER_KEY)
            .env(
                "AIGW_REQUESTS_MAX_MSGS",
                streams.requests_max_msgs.to_string(),
            )
            .env(
                "AIGW_REQUESTS_MAX_BYTES",
                streams.requests_max_bytes.to_string(),
            )
            .env("AIGW_JOBS_MAX_MSGS", streams.jobs_max_msgs.to_string())
            .env("AIGW_JOBS_MAX_BYTES", streams.jobs_max_bytes.to_string())
            // AIGW_TEST_CHILD_LOG raises it when a test must be debugged.
            .env(
                "AIGW_LOG",
                std::env::var("AIGW_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for var in [
            "AIGW_OTLP_ENDPOINT",
            "AIGW_TRACE_CONTENT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Starts a dispatcher as a separate `aigw` process (so it can be killed).
    pub fn spawn_dispatcher_process(&mut self) -> usize {
        let command = self.dispatcher_process();
        self.spawn_child(command)
    }

    /// The command of a dispatcher process with this test's settings.
    pub fn dispatcher_process(&self) -> Command {
        let args = self.dispatcher_args();
        let mut cmd = self.role_process("dispatcher");
        cmd.env("AIGW_ACK_WAIT", humantime(args.ack_wait))
            .env("AIGW_UPSTREAM_TIMEOUT", humantime(args.upstream_timeout))
            .env("AIGW_BREAKER_THRESHOLD", args.breaker_threshold.to_string())
            .env("AIGW_BREAKER_COOLDOWN", humantime(args.breaker_cooldown))
            .env(
                "AIGW_RETRIES_PER_TARGET",
                args.retries_per_target.to_string(),
            )
            .env("AIGW_JOB_CONCURRENCY", args.job_concurrency.to_string())
            .env("AIGW_WEBHOOK_BACKOFF", humantime(args.webhook_backoff));
        cmd
    }

    /// Starts `command` as a child of this test (killed when it ends).
    pub fn spawn_child(&mut self, mut command: Command) -> usize {
        self.children.push(command.spawn().unwrap());
        self.children.len() - 1
    }

    /// SIGKILLs a process started by `spawn_child`.
    pub fn kill_process(&mut self, index: usize) {
        let child = &mut self.children[index];
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM to a process started by `spawn_child`.
    pub fn terminate_process(&self, index: usize) {
        let status = Command::new("kill")
            .args(["-TERM", &self.children[index].id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for a process started by `spawn_child` to exit.
    pub async fn wait_exit(&mut self, index: usize, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.children[index].try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self, base: &str) {
        let url = format!("{base}/ready");
        wait_until(Duration::from_secs(20), || async {
            self.http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Configures an OpenAI-compatible provider; returns its id.
    pub async fn add_provider(&self, name: &str, base_url: &str, models: &[&str]) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/admin/api/providers")
            .json(&json!({
                "name": name,
                "base_url": base_url,
                "api_key": "sk-upstream-secret",
                "models": models,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// Issues an API key; returns (id, secret).
    pub async fn add_key(&self, name: &str) -> (String, String) {
        let response = self
            .admin(reqwest::Method::POST, "/admin/api/keys")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        )
    }

    pub async fn chat(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Stored events of one request, in order: (event_type, payload).
    pub async fn request_events(&self, request_id: &str) -> Vec<(String, Value)> {
        sqlx::query_as(
            "SELECT event_type, payload::jsonb FROM events
             WHERE aggregate_type = 'request' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until the request's outcome is stored, and returns its events.
    pub async fn wait_recorded(&self, request_id: &str) -> Vec<(String, Value)> {
        wait_until(Duration::from_secs(30), || async {
            let events = self.request_events(request_id).await;
            events
                .iter()
                .any(|(t, _)| t == "RequestCompleted" || t == "RequestFailed")
        })
        .await;
        self.request_events(request_id).await
    }

    pub async fn stats(&self, key: &str) -> Value {
        self.http
            .get(self.url("/stats"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A realistic OpenAI chat.completion body.
pub fn completion(model: &str, content: &str, prompt: u64, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens
        }
    })
}

pub fn user(content: &str) -> Value {
    json!([{ "role": "user", "content": content }])
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
        })
        .collect()
}
