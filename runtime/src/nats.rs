//! NATS: connect (to one server or a cluster through a list of seeds), check
//! the server, and create the streams (with their size limits: a full stream
//! refuses new messages), buckets and object stores aigw needs (each
//! creation idempotent across replicas).
//!
//! Invariant: every stream, consumer, key-value bucket and object store aigw
//! creates has `AIGW_NATS_REPLICAS` replicas; one found with another count
//! is updated in place at start, and a count the cluster cannot place is an
//! error naming the setting, never a silent downgrade.

use std::time::Duration;

use aigw_events::Names;
use async_nats::ServerAddr;
use async_nats::jetstream::{self, consumer, stream};
use clap::Args;

use crate::{Result, RuntimeError};

/// The oldest NATS server aigw works with (key-value and consumer APIs).
pub const MIN_SERVER: (u32, u32) = (2, 10);

/// Why a NATS server will not do for aigw.
#[derive(Debug, thiserror::Error)]
pub enum ServerUnfit {
    #[error("server {version} is too old: aigw needs {}.{} or newer", MIN_SERVER.0, MIN_SERVER.1)]
    TooOld { version: String },
    #[error("JetStream is not available (start nats-server with -js): {detail}")]
    NoJetStream { detail: String },
}

/// Most seed servers `AIGW_NATS_URL` may list.
pub const MAX_SEEDS: usize = 32;
/// Most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// Why `AIGW_NATS_URL` is not a list of seed servers. The messages name a
/// seed by its position, never by its text (it may carry credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("AIGW_NATS_URL lists no server")]
    Empty,
    #[error("AIGW_NATS_URL lists {count} servers; at most {MAX_SEEDS}")]
    TooMany { count: usize },
    #[error("server {position} of AIGW_NATS_URL is not a NATS URL: {detail}")]
    Invalid { position: usize, detail: String },
}

/// Parses `AIGW_NATS_URL`: one server URL, or several separated by commas
/// (seeds of one cluster; the client reconnects across them and learns the
/// others from the servers).
pub fn seeds(list: &str) -> std::result::Result<Vec<ServerAddr>, SeedError> {
    let parts: Vec<&str> = list.split(',').map(str::trim).collect();
    if parts.iter().all(|p| p.is_empty()) {
        return Err(SeedError::Empty);
    }
    if parts.len() > MAX_SEEDS {
        return Err(SeedError::TooMany { count: parts.len() });
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let invalid = |detail: String| SeedError::Invalid {
                position: i + 1,
                detail,
            };
            if part.is_empty() {
                return Err(invalid("empty".into()));
            }
            let addr: ServerAddr = part.parse().map_err(|e: std::io::Error| {
                // The parse error of a URL never repeats the input.
                invalid(e.to_string())
            })?;
            if addr.host().is_empty() {
                return Err(invalid("no host".into()));
            }
            Ok(addr)
        })
        .collect()
}

/// The seeds as `host:port` (no scheme, user or password), for messages.
pub fn describe(seeds: &[ServerAddr]) -> String {
    seeds
        .iter()
        .map(|s| format!("{}:{}", s.host(), s.port()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `AIGW_NATS_REPLICAS`: 1 to [`MAX_REPLICAS`].
pub fn parse_replicas(value: &str) -> std::result::Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "AIGW_NATS_REPLICAS must be a whole number from 1 to {MAX_REPLICAS}"
        )),
    }
}

/// Connects to the first reachable seed of `url` (see [`seeds`]), then
/// refuses servers older than [`MIN_SERVER`] or without JetStream. The
/// client reconnects for ever, across the seeds and the servers they name.
pub async fn connect(url: &str, name: &str) -> Result<(async_nats::Client, jetstream::Context)> {
    let seeds = seeds(url).map_err(|e| RuntimeError::Config(e.to_string()))?;
    let url = describe(&seeds);
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(seeds)
        .await
        .map_err(|e| RuntimeError::Nats(format!("cannot connect to {url}: {e}")))?;
    // retry_on_initial_connect returns before the handshake; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(RuntimeError::Nats(format!("cannot connect to {url}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let js = check_server(&client)
        .await
        .map_err(|e| RuntimeError::Nats(format!("{url}: {e}")))?;
    Ok((client, js))
}

/// Checks a connected server: [`MIN_SERVER`] or newer, JetStream enabled.
pub async fn check_server(
    client: &async_nats::Client,
) -> std::result::Result<jetstream::Context, ServerUnfit> {
    let version = client.server_info().version;
    if !version_at_least(&version, MIN_SERVER) {
        return Err(ServerUnfit::TooOld { version });
    }
    let js = jetstream::new(client.clone());
    js.query_account()
        .await
        .map_err(|e| ServerUnfit::NoJetStream {
            detail: e.to_string(),
        })?;
    Ok(js)
}

/// Limits of the requests and jobs streams. Both discard new messages when
/// full (`DiscardPolicy::New`): a publish beyond a limit is refused, and the
/// ingress answers 503 `queue_full` (see [`is_stream_full`]). Every role
/// applies them on start, updating an existing stream whose limits differ,
/// so give every role the same values. JetStream reserves a byte limit of
/// its storage when the stream is created or updated (refusing it when the
/// server has less), which 0 (no limit) does not.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StreamLimits {
    /// Most messages in the requests stream (synchronous calls queued or
    /// running); 0: no limit.
    #[arg(long, env = "AIGW_REQUESTS_MAX_MSGS", default_value_t = StreamLimits::DEFAULT.requests_max_msgs)]
    pub requests_max_msgs: u64,
    /// Most bytes in the requests stream; 0: no limit.
    #[arg(long, env = "AIGW_REQUESTS_MAX_BYTES", default_value_t = StreamLimits::DEFAULT.requests_max_bytes)]
    pub requests_max_bytes: u64,
    /// Most messages in the jobs stream (jobs queued or running); 0: no limit.
    #[arg(long, env = "AIGW_JOBS_MAX_MSGS", default_value_t = StreamLimits::DEFAULT.jobs_max_msgs)]
    pub jobs_max_msgs: u64,
    /// Most bytes in the jobs stream; 0: no limit.
    #[arg(long, env = "AIGW_JOBS_MAX_BYTES", default_value_t = StreamLimits::DEFAULT.jobs_max_bytes)]
    pub jobs_max_bytes: u64,
}

impl StreamLimits {
    /// JetStream reserves a stream's byte limit of its storage up front, so
    /// the defaults stay modest (3 GiB in all).
    pub const DEFAULT: StreamLimits = StreamLimits {
        requests_max_msgs: 100_000,
        requests_max_bytes: 1 << 30,
        jobs_max_msgs: 200_000,
        jobs_max_bytes: 2 << 30,
    };
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long a job's message (and its stored body) may wait in the queue.
pub const JOBS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A limit as JetStream spells it: -1 for none.
fn stream_limit(value: u64) -> i64 {
    if value == 0 {
        -1
    } else {
        i64::try_from(value).unwrap_or(i64::MAX)
    }
}

/// Creates (or finds) the request stream, with `replicas` replicas.
/// Idempotent across replicas.
pub async fn ensure_streams(
    js: &jetstream::Context,
    names: &Names,
    limits: &StreamLimits,
    replicas: usize,
) -> Result<stream::Stream> {
    ensure_stream(
        js,
        stream::Config {
            name: names.requests_stream(),
            subjects: vec![names.requests_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            max_messages: stream_limit(limits.requests_max_msgs),
            max_bytes: stream_limit(limits.requests_max_bytes),
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
}

/// Creates (or finds) the jobs stream. At most one message per job subject
/// is kept (a second publish for a job still queued is refused), so a job
/// republished by the sweeper can never run twice at once.
pub async fn ensure_job_stream(
    js: &jetstream::Context,
    names: &Names,
    limits: &StreamLimits,
    replicas: usize,
) -> Result<stream::Stream> {
    ensure_stream(
        js,
        stream::Config {
            name: names.jobs_stream(),
            subjects: vec![names.jobs_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            max_age: JOBS_MAX_AGE,
            max_messages_per_subject: 1,
            max_messages: stream_limit(limits.jobs_max_msgs),
            max_bytes: stream_limit(limits.jobs_max_bytes),
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
}

/// A creation or update JetStream refused: with more than one replica, the
/// usual cause is a cluster too small (or a single server), so say which
/// setting asked for how many and how many servers this client knows of.
fn refused(
    js: &jetstream::Context,
    what: &str,
    replicas: usize,
    e: &dyn std::fmt::Display,
) -> RuntimeError {
    if replicas <= 1 {
        return RuntimeError::Nats(format!("{what}: {e}"));
    }
    let known = js.client().server_info().connect_urls.len().max(1);
    RuntimeError::Nats(format!(
        "{what}: JetStream cannot place AIGW_NATS_REPLICAS={replicas} replicas ({e}); \
         the NATS deployment reports {known} server(s) (a single server, or a cluster \
         with fewer JetStream servers than replicas): lower AIGW_NATS_REPLICAS or add servers"
    ))
}

/// Creates the stream, or finds it and brings its size limits, discard
/// policy and replica count to `config`'s (a deployment from before the
/// limits, with other ones, or scaled up); nothing else of an existing
/// stream is changed.
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream> {
    let name = config.name.clone();
    let replicas = config.num_replicas;
    let failed = |e: &dyn std::fmt::Display| refused(js, &format!("stream {name}"), replicas, e);
    let stream = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(_) => match js.create_stream(config.clone()).await {
            Ok(s) => s,
            // Another replica created it between our look and our create.
            Err(e) => js.get_stream(&name).await.map_err(|_| failed(&e))?,
        },
    };
    let current = &stream.cached_info().config;
    if current.max_messages == config.max_messages
        && current.max_bytes == config.max_bytes
        && current.discard == config.discard
        && current.num_replicas == config.num_replicas
    {
        return placed(js, stream, replicas, &name);
    }
    let mut updated = current.clone();
    updated.max_messages = config.max_messages;
    updated.max_bytes = config.max_bytes;
    updated.discard = config.discard;
    updated.num_replicas = config.num_replicas;
    js.update_stream(&updated).await.map_err(|e| {
        failed(&format!(
            "applying max_msgs {}, max_bytes {} and {} replicas: {e}",
            config.max_messages, config.max_bytes, config.num_replicas
        ))
    })?;
    tracing::info!(
        stream = %name,
        max_msgs = config.max_messages,
        max_bytes = config.max_bytes,
        replicas = config.num_replicas,
        "stream settings updated"
    );
    let stream = js.get_stream(&name).await.map_err(|e| failed(&e))?;
    placed(js, stream, replicas, &name)
}

/// Refuses a stream the server keeps with fewer replicas than asked (a
/// server that lowers the count instead of refusing it).
fn placed(
    js: &jetstream::Context,
    stream: stream::Stream,
    replicas: usize,
    name: &str,
) -> Result<stream::Stream> {
    let kept = stream.cached_info().config.num_replicas.max(1);
    if kept < replicas {
        return Err(refused(
            js,
            &format!("stream {name}"),
            replicas,
            &format!("the server keeps {kept} replica(s)"),
        ));
    }
    Ok(stream)
}

/// Finds or creates a durable pull consumer, and brings an existing one to
/// `config`'s replica count (its other settings stay as they are).
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer> {
    let name = config.durable_name.clone().unwrap_or_default();
    let replicas = config.num_replicas;
    let failed = |e: &dyn std::fmt::Display| RuntimeError::Nats(format!("consumer {name}: {e}"));
    let mut found: consumer::PullConsumer = stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| failed(&e))?;
    let current = found.cached_info().config.clone();
    if current.num_replicas != replicas {
        let mut updated = current;
        updated.num_replicas = replicas;
        // A stream scaled up a moment ago takes a moment to place its new
        // replicas; until then JetStream refuses the consumer's count.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let result: std::result::Result<consumer::Consumer<consumer::Config>, _> =
                stream.update_consumer(updated.clone()).await;
            match result {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(consumer = %name, error = %e, "consumer replicas not applied yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(failed(&format!("applying {replicas} replicas: {e}"))),
            }
        }
        found = stream.get_consumer(&name).await.map_err(|e| failed(&e))?;
        tracing::info!(consumer = %name, replicas, "consumer replicas updated");
    }
    Ok(found)
}

/// Brings every consumer of `stream` to `replicas` replicas (what
/// `aigw migrate` does for the dispatcher's consumers, which it does not
/// create).
pub async fn scale_consumers(stream: &stream::Stream, replicas: usize) -> Result<()> {
    use futures::TryStreamExt;
    let failed = |e: &dyn std::fmt::Display| RuntimeError::Nats(format!("consumers: {e}"));
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;
    for name in names {
        let found: consumer::PullConsumer =
            stream.get_consumer(&name).await.map_err(|e| failed(&e))?;
        use consumer::FromConsumer;
        let config =
            consumer::pull::Config::try_from_consumer_config(found.cached_info().config.clone())
                .map_err(|e| failed(&e))?;
        ensure_consumer(
            stream,
            consumer::pull::Config {
                num_replicas: replicas,
                ..config
            },
        )
        .await?;
    }
    Ok(())
}

/// Whether JetStream refused a publish because the stream is full (its
/// message or byte limit, with `DiscardPolicy::New`).
pub fn is_stream_full(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED)
}

/// Brings the stream behind a bucket or object store (`KV_<bucket>`,
/// `OBJ_<bucket>`) to `replicas` replicas.
async fn ensure_backing_replicas(
    js: &jetstream::Context,
    stream_name: &str,
    replicas: usize,
) -> Result<()> {
    let failed =
        |e: &dyn std::fmt::Display| refused(js, &format!("stream {stream_name}"), replicas, e);
    let mut stream = js.get_stream(stream_name).await.map_err(|e| failed(&e))?;
    let current = stream.info().await.map_err(|e| failed(&e))?.config.clone();
    if current.num_replicas.max(1) != replicas {
        let mut updated = current;
        updated.num_replicas = replicas;
        js.update_stream(&updated).await.map_err(|e| failed(&e))?;
        tracing::info!(stream = %stream_name, replicas, "stream replicas updated");
        let stream = js.get_stream(stream_name).await.map_err(|e| failed(&e))?;
        placed(js, stream, replicas, stream_name)?;
    }
    Ok(())
}

/// Finds or creates a key-value bucket with `replicas` replicas; safe when
/// replicas race to create it.
pub async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<jetstream::kv::Store> {
    let kv = match js.get_key_value(bucket).await {
        Ok(kv) => kv,
        Err(_) => {
            let created = js
                .create_key_value(jetstream::kv::Config {
                    bucket: bucket.to_string(),
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(kv) => kv,
                // Another replica created it a moment ago.
                Err(e) => js
                    .get_key_value(bucket)
                    .await
                    .map_err(|_| refused(js, &format!("creating bucket {bucket}"), replicas, &e))?,
            }
        }
    };
    ensure_backing_replicas(js, &format!("KV_{bucket}"), replicas).await?;
    Ok(kv)
}

/// Finds or creates the object store of uploaded media; objects expire
/// after an hour (a request never lives that long).
pub async fn ensure_media_store(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<jetstream::object_store::ObjectStore> {
    ensure_object_store(js, bucket, Duration::from_secs(3600), replicas).await
}

/// Finds or creates the object store of request bodies too large for one
/// message (see `bodies`). Objects live as long as a queued job's message
/// ([`JOBS_MAX_AGE`]): a job can wait that long, a synchronous request's
/// body is deleted as soon as it is recorded.
pub async fn ensure_body_store(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<jetstream::object_store::ObjectStore> {
    ensure_object_store(js, bucket, JOBS_MAX_AGE, replicas).await
}

async fn ensure_object_store(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<jetstream::object_store::ObjectStore> {
    let store = match js.get_object_store(bucket).await {
        Ok(store) => store,
        Err(_) => {
            let created = js
                .create_object_store(jetstream::object_store::Config {
                    bucket: bucket.to_string(),
                    max_age,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(store) => store,
                Err(e) => js.get_object_store(bucket).await.map_err(|_| {
                    refused(js, &format!("creating object store {bucket}"), replicas, &e)
                })?,
            }
        }
    };
    ensure_backing_replicas(js, &format!("OBJ_{bucket}"), replicas).await?;
    Ok(store)
}

fn version_at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert!(version_at_least("2.10.0", MIN_SERVER));
        assert!(version_at_least("2.15.1", MIN_SERVER));
        assert!(version_at_least("3.0.0-beta", MIN_SERVER));
        assert!(!version_at_least("2.9.10", MIN_SERVER));
        assert!(!version_at_least("garbage", MIN_SERVER));
    }

    #[test]
    fn one_url_or_a_comma_separated_list_of_seeds() {
        let one = seeds("nats://127.0.0.1:4222").unwrap();
        assert_eq!(describe(&one), "127.0.0.1:4222");
        let three = seeds("nats://n1:4222, n2:4223 ,tls://n3").unwrap();
        assert_eq!(describe(&three), "n1:4222,n2:4223,n3:4222");
        assert!(three[2].tls_required());
        assert_eq!(seeds(""), Err(SeedError::Empty));
        assert_eq!(seeds(" , "), Err(SeedError::Empty));
        assert!(matches!(
            seeds("nats://a:1,,nats://b:2"),
            Err(SeedError::Invalid { position: 2, .. })
        ));
        assert!(matches!(
            seeds("nats://a:1,http://b:2"),
            Err(SeedError::Invalid { position: 2, .. })
        ));
        assert!(matches!(
            seeds("nats://a:99999"),
            Err(SeedError::Invalid { position: 1, .. })
        ));
        let many = vec!["nats://a:1"; MAX_SEEDS + 1].join(",");
        assert_eq!(
            seeds(&many),
            Err(SeedError::TooMany {
                count: MAX_SEEDS + 1
            })
        );
        // Credentials reach the client but never a message.
        let secret = seeds("nats://user:s3cret@n1:4222").unwrap();
        assert_eq!(describe(&secret), "n1:4222");
        let e = seeds("nats://user:s3cret@n1:4222,ftp://user:s3cret@n2").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn replicas_are_one_to_five() {
        assert_eq!(parse_replicas("1"), Ok(1));
        assert_eq!(parse_replicas("3"), Ok(3));
        assert_eq!(parse_replicas(" 5 "), Ok(5));
        for bad in [
            "0",
            "6",
            "-1",
            "three",
            "",
            "3.0",
            "99999999999999999999999",
        ] {
            let e = parse_replicas(bad).unwrap_err();
            assert!(e.contains("AIGW_NATS_REPLICAS"), "{bad}: {e}");
        }
    }
}
