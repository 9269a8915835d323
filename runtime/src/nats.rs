//! NATS: connect, check the server, and create the streams, buckets and
//! object stores aigw needs (each creation idempotent across replicas).

use std::time::Duration;

use aigw_events::Names;
use async_nats::jetstream::{self, stream};

use crate::{Result, RuntimeError};

/// The oldest NATS server aigw works with (key-value and consumer APIs).
pub const MIN_SERVER: (u32, u32) = (2, 10);

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
    let version = client.server_info().version;
    if !version_at_least(&version, MIN_SERVER) {
        return Err(RuntimeError::Nats(format!(
            "NATS server at {url} is {version}; aigw needs {}.{} or newer",
            MIN_SERVER.0, MIN_SERVER.1
        )));
    }
    let js = jetstream::new(client.clone());
    js.query_account().await.map_err(|e| {
        RuntimeError::Nats(format!(
            "JetStream is not available on {url} (start nats-server with -js): {e}"
        ))
    })?;
    Ok((client, js))
}

/// Creates (or finds) the request stream. Idempotent across replicas.
pub async fn ensure_streams(js: &jetstream::Context, names: &Names) -> Result<stream::Stream> {
    let config = stream::Config {
        name: names.requests_stream(),
        subjects: vec![names.requests_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: Duration::from_secs(24 * 3600),
        ..Default::default()
    };
    match js.get_or_create_stream(config).await {
        Ok(s) => Ok(s),
        // Another replica created it between our look and our create.
        Err(e) => js.get_stream(names.requests_stream()).await.map_err(|_| {
            RuntimeError::Nats(format!("creating stream {}: {e}", names.requests_stream()))
        }),
    }
}

/// How long a job's message (and its stored body) may wait in the queue.
pub const JOBS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Creates (or finds) the jobs stream. At most one message per job subject
/// is kept (a second publish for a job still queued is refused), so a job
/// republished by the sweeper can never run twice at once.
pub async fn ensure_job_stream(js: &jetstream::Context, names: &Names) -> Result<stream::Stream> {
    let config = stream::Config {
        name: names.jobs_stream(),
        subjects: vec![names.jobs_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: JOBS_MAX_AGE,
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        ..Default::default()
    };
    match js.get_or_create_stream(config).await {
        Ok(s) => Ok(s),
        Err(e) => js.get_stream(names.jobs_stream()).await.map_err(|_| {
            RuntimeError::Nats(format!("creating stream {}: {e}", names.jobs_stream()))
        }),
    }
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
