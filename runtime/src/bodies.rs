//! Request bodies too large for one NATS message.
//!
//! A request travels to the dispatchers as one JetStream message, and a NATS
//! server refuses messages above its `max_payload` (1 MiB unless configured),
//! while callers may send bodies up to `AIGW_MAX_BODY_BYTES` (10 MiB by
//! default; vision requests with base64 images are routinely several MB).
//! Rather than require every NATS deployment to raise `max_payload` (NATS
//! advises against large messages, which hold up the connection and every
//! subscriber's buffers), a body that would make its message too large is
//! stored in the object store `<ns>_bodies` (which chunks it, so any
//! `max_payload` works) under the request id, and the message carries a
//! [`BodyObject`] naming it instead of the body.
//!
//! Invariants:
//! - The object is complete before its message is published; a failed
//!   publish deletes it again.
//! - The dispatcher deletes it once the request is recorded (or will never
//!   run); what an ingress that died between storing and publishing leaves
//!   behind expires with the bucket (`nats::JOBS_MAX_AGE`, a week: as long
//!   as a queued job's message, so a job's body lives as long as the job can
//!   wait).
//! - A body that is gone when the dispatcher needs it is a recorded failure
//!   of the request ([`BodyError::Missing`]), never a redelivery loop; only a
//!   store that cannot be reached right now is retried.

use aigw_events::raw_body::RawBody;
use aigw_events::wire::{self, BodyObject, DispatchRequest};
use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata, ObjectStore};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Room left in a request message for its headers (`Nats-Msg-Id`, ...).
pub const MESSAGE_HEADROOM: usize = 16 * 1024;

/// Why a body could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The object is not there (expired or deleted) or is not the JSON that
    /// was stored: trying again cannot help.
    #[error("the request body is gone: {0}")]
    Missing(String),
    /// The store could not be reached, read or written right now.
    #[error("the body store is unavailable: {0}")]
    Unavailable(String),
    #[error("encoding the request: {0}")]
    Encode(#[from] serde_json::Error),
}

impl BodyError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BodyError::Unavailable(_) => true,
            BodyError::Missing(_) | BodyError::Encode(_) => false,
        }
    }
}

/// Whether a message of `len` bytes can be published as is to a server
/// that accepts `max_payload`.
pub fn fits(len: usize, max_payload: usize) -> bool {
    len <= max_payload.saturating_sub(MESSAGE_HEADROOM)
}

/// An object's metadata with chunks that fit in one message of a server
/// accepting `max_payload` (the object store's default chunk, 128 KiB, may
/// not).
pub fn object_meta(name: &str, max_payload: usize) -> ObjectMetadata {
    ObjectMetadata {
        name: name.to_string(),
        chunk_size: Some(wire::part_bytes(max_payload)),
        ..Default::default()
    }
}

/// The message to publish for `request`. When it would not fit in one
/// message, the body is stored in `store` first and replaced in `request`
/// by its [`BodyObject`].
pub async fn message(
    store: &ObjectStore,
    request: &mut DispatchRequest,
    max_payload: usize,
) -> Result<Vec<u8>, BodyError> {
    let whole = serde_json::to_vec(request)?;
    if fits(whole.len(), max_payload) {
        return Ok(whole);
    }
    drop(whole);
    // The caller's own bytes, if the message carries them, else `body`.
    let raw = request.raw_body.take();
    let body = match &raw {
        Some(raw) => raw.get().as_bytes().to_vec(),
        None => serde_json::to_vec(&request.body)?,
    };
    let name = request.request_id.to_string();
    if let Err(e) = store
        .put(object_meta(&name, max_payload), &mut body.as_slice())
        .await
    {
        request.raw_body = raw;
        return Err(BodyError::Unavailable(e.to_string()));
    }
    request.body = Value::Null;
    request.body_object = Some(BodyObject {
        name,
        bytes: body.len() as u64,
        raw: raw.is_some(),
    });
    Ok(serde_json::to_vec(request)?)
}

/// Puts a stored body back into `request.body` (or `raw_body`, when that
/// is what was stored); a request that carried its body needs nothing.
pub async fn load(store: &ObjectStore, request: &mut DispatchRequest) -> Result<(), BodyError> {
    let Some(object) = &request.body_object else {
        return Ok(());
    };
    let mut reader = store
        .get(object.name.as_str())
        .await
        .map_err(|e| match e.kind() {
            GetErrorKind::NotFound | GetErrorKind::InvalidName => BodyError::Missing(e.to_string()),
            GetErrorKind::ConsumerCreate
            | GetErrorKind::BucketLink
            | GetErrorKind::Other
            | GetErrorKind::TimedOut => BodyError::Unavailable(e.to_string()),
        })?;
    let mut bytes = Vec::with_capacity(usize::try_from(object.bytes).unwrap_or(0));
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| BodyError::Unavailable(e.to_string()))?;
    if bytes.len() as u64 != object.bytes {
        return Err(BodyError::Missing(format!(
            "{} bytes stored, {} expected",
            bytes.len(),
            object.bytes
        )));
    }
    let not_json = |e: serde_json::Error| BodyError::Missing(format!("not the JSON stored: {e}"));
    if object.raw {
        request.raw_body = Some(RawBody::from_bytes(&bytes).map_err(not_json)?);
    } else {
        request.body = serde_json::from_slice(&bytes).map_err(not_json)?;
    }
    Ok(())
}

/// Deletes a request's stored body, if it has one. Best effort: an object
/// left behind expires with the bucket.
pub async fn delete(store: &ObjectStore, request: &DispatchRequest) {
    let Some(object) = &request.body_object else {
        return;
    };
    if let Err(e) = store.delete(object.name.as_str()).await {
        tracing::debug!(request_id = %request.request_id, error = %e, "deleting the stored body");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fit_below_the_servers_limit() {
        let mib = 1024 * 1024;
        assert!(fits(1000, mib));
        assert!(fits(mib - MESSAGE_HEADROOM, mib));
        assert!(!fits(mib - MESSAGE_HEADROOM + 1, mib));
        assert!(!fits(2 * mib, mib));
        assert!(!fits(1, 0));
    }
}
