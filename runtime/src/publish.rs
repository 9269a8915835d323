//! Publishing a message to a JetStream stream through a leader election.
//!
//! When the NATS node leading a stream is lost, the stream has no leader
//! for a few seconds: a publish then finds no responder ("no stream found
//! for given subject"), the cluster answers "temporarily unavailable", or
//! the ack never comes. Callers would see a 503 for something that heals by
//! itself, so such a publish is tried again until it is acknowledged or
//! until a bound (`AIGW_PUBLISH_RETRY` for the ingress).
//!
//! Invariants:
//! - Every try carries the same `Nats-Msg-Id`, so JetStream stores the
//!   message at most once even when a try whose ack was lost had in fact
//!   stored it (the duplicate window, two minutes by default, is far longer
//!   than any sane bound).
//! - Only errors that mean "no leader right now" or "the ack was lost" are
//!   tried again. A full stream, a message too large, or any other refusal
//!   is returned at once.
//! - No publish waits longer than its bound, so no caller hangs on it.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use tokio::time::Instant;

/// The first pause between tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whether `e` may heal by itself within seconds (a stream between leaders,
/// a lost ack, a connection moving to another server).
pub fn is_transient(e: &PublishError) -> bool {
    match e.kind() {
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe => true,
        PublishErrorKind::Other => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE),
        _ => false,
    }
}

/// Publishes `payload` to `subject` and waits for the stream's ack, trying
/// again on transient errors until `retry_for` has passed. `headers` must
/// carry a `Nats-Msg-Id` for the retries to be safe.
pub async fn publish_acked(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    retry_for: Duration,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    let give_up = Instant::now() + retry_for;
    let mut pause = FIRST_PAUSE;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let result = async {
            js.publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await?
                .await
        }
        .await;
        match result {
            Ok(ack) => {
                if tries > 1 {
                    tracing::info!(tries, "published after a transient failure");
                }
                return Ok(ack);
            }
            Err(e) if is_transient(&e) && Instant::now() + pause < give_up => {
                tracing::debug!(error = %e, tries, "publish failed; trying again");
                metrics::counter!("aigw_publish_retries_total").increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_leaderless_ones() {
        assert!(is_transient(&PublishError::new(
            PublishErrorKind::StreamNotFound
        )));
        assert!(is_transient(&PublishError::new(PublishErrorKind::TimedOut)));
        assert!(is_transient(&PublishError::new(
            PublishErrorKind::BrokenPipe
        )));
        assert!(!is_transient(&PublishError::new(
            PublishErrorKind::MaxPayloadExceeded
        )));
        assert!(!is_transient(&PublishError::new(
            PublishErrorKind::WrongLastSequence
        )));
        assert!(!is_transient(&PublishError::new(PublishErrorKind::Other)));
    }
}
