//! NATS: connect, check the server, and create the streams (with their
//! size limits: a full stream refuses new messages), buckets and object
//! stores aigw needs (each creation idempotent across replicas).

use std::time::Duration;

use aigw_events::Names;
use async_nats::jetstream::{self, stream};
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

/// Connects, then refuses servers older than [`MIN_SERVER`] or without JetStream.
pub async fn connect(url: &str, name: &str) -> Result<(async_nats::Client, jetstream::Context)> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url)
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

/// Creates (or finds) the request stream. Idempotent across replicas.
pub async fn ensure_streams(
    js: &jetstream::Context,
    names: &Names,
    limits: &StreamLimits,
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
            ..Default::default()
        },
    )
    .await
}

/// Creates the stream, or finds it and brings its size limits and discard
/// policy to `config`'s (a deployment from before the limits, or with other
/// ones); nothing else of an existing stream is changed.
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream> {
    let name = config.name.clone();
    let failed = |e: &dyn std::fmt::Display| RuntimeError::Nats(format!("stream {name}: {e}"));
    let stream = match js.get_or_create_stream(config.clone()).await {
        Ok(s) => s,
        // Another replica created it between our look and our create.
        Err(e) => js.get_stream(&name).await.map_err(|_| failed(&e))?,
    };
    let current = &stream.cached_info().config;
    if current.max_messages == config.max_messages
        && current.max_bytes == config.max_bytes
        && current.discard == config.discard
    {
        return Ok(stream);
    }
    let mut updated = current.clone();
    updated.max_messages = config.max_messages;
    updated.max_bytes = config.max_bytes;
    updated.discard = config.discard;
    js.update_stream(&updated).await.map_err(|e| {
        RuntimeError::Nats(format!(
            "stream {name}: applying max_msgs {} and max_bytes {}: {e}",
            config.max_messages, config.max_bytes
        ))
    })?;
    tracing::info!(
        stream = %name,
        max_msgs = config.max_messages,
        max_bytes = config.max_bytes,
        "stream limits updated"
    );
    js.get_stream(&name).await.map_err(|e| failed(&e))
}

/// Whether JetStream refused a publish because the stream is full (its
/// message or byte limit, with `DiscardPolicy::New`).
pub fn is_stream_full(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED)
}

/// Finds or creates a key-value bucket; safe when replicas race to create it.
pub async fn ensure_kv(js: &jetstream::Context, bucket: &str) -> Result<jetstream::kv::Store> {
    if let Ok(kv) = js.get_key_value(bucket).await {
        return Ok(kv);
    }
    let created = js
        .create_key_value(jetstream::kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(kv) => Ok(kv),
        // Another replica created it a moment ago.
        Err(e) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| RuntimeError::Nats(format!("creating bucket {bucket}: {e}"))),
    }
}

/// Finds or creates the object store of uploaded media; objects expire
/// after an hour (a request never lives that long).
pub async fn ensure_media_store(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<jetstream::object_store::ObjectStore> {
    ensure_object_store(js, bucket, Duration::from_secs(3600)).await
}

/// Finds or creates the object store of request bodies too large for one
/// message (see `bodies`). Objects live as long as a queued job's message
/// ([`JOBS_MAX_AGE`]): a job can wait that long, a synchronous request's
/// body is deleted as soon as it is recorded.
pub async fn ensure_body_store(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<jetstream::object_store::ObjectStore> {
    ensure_object_store(js, bucket, JOBS_MAX_AGE).await
}

async fn ensure_object_store(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> Result<jetstream::object_store::ObjectStore> {
    if let Ok(store) = js.get_object_store(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_object_store(jetstream::object_store::Config {
            bucket: bucket.to_string(),
            max_age,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        Err(e) => js
            .get_object_store(bucket)
            .await
            .map_err(|_| RuntimeError::Nats(format!("creating object store {bucket}: {e}"))),
    }
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
}
