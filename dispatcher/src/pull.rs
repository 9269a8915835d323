//! Pulling requests and jobs from their consumers, and handing them back on
//! shutdown.
//!
//! Invariants:
//! - Messages come in batches whose pull request expires after
//!   [`PULL_EXPIRES`]. Once shutdown fires no new pull request is made, and
//!   every message the last one still brings is nak'ed at once, so another
//!   replica takes it now rather than after the ack wait. No pull request
//!   outlives the process, so none delivers to a replica that is gone.
//! - What this replica runs may finish within the shutdown grace
//!   (`AIGW_SHUTDOWN_GRACE`); whatever still runs then is stopped and its
//!   message nak'ed. Its redelivery finds an outcome already recorded and
//!   only acks, or runs the request again elsewhere (as after a crash, but
//!   without waiting for the ack wait).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::{Shared, jobs, process, spans};

/// How long one pull request waits for messages. It bounds how long a
/// stopping dispatcher still receives (and hands back) messages.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Most messages one pull request asks for.
const MAX_BATCH: usize = 256;

/// The deliveries this replica is working on, each stoppable at the end of
/// the shutdown grace.
#[derive(Clone, Default)]
pub struct Running {
    tracker: TaskTracker,
    hand_back: CancellationToken,
}

impl Running {
    /// Runs `work` on `msg`; if it is still running when the grace ends, it
    /// is dropped and `msg` nak'ed.
    fn spawn<F>(&self, msg: &Message, work: F, span: tracing::Span)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let held = msg.clone();
        let hand_back = self.hand_back.clone();
        // A request's work is a future of about 11 KB: boxed once here, the
        // wrappers below (and the task itself) move a pointer, not a copy.
        let work = Box::pin(work);
        self.tracker.spawn(
            async move {
                tokio::select! {
                    () = work => {}
                    () = hand_back.cancelled() => {
                        tracing::info!("still running at the end of the shutdown grace; handing it back");
                        nak(&held).await;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Waits up to `grace` for what runs to finish, then hands back the rest.
    pub async fn finish(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tracker.len(),
                "shutdown grace over; handing back what still runs"
            );
            self.hand_back.cancel();
            // Only the naks remain, each one round trip.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
    }
}

async fn nak(msg: &Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        tracing::warn!(error = %e, "handing a message back failed; it returns after the ack wait");
    }
}

/// Opens one pull request for up to `count` messages, or `None` (after a
/// pause) when JetStream refuses it.
async fn pull(
    consumer: &PullConsumer,
    count: usize,
    what: &str,
    shutdown: &CancellationToken,
) -> Option<async_nats::jetstream::consumer::pull::Batch> {
    match consumer
        .batch()
        .max_messages(count.clamp(1, MAX_BATCH))
        .expires(PULL_EXPIRES)
        .messages()
        .await
    {
        Ok(batch) => Some(batch),
        Err(e) => {
            tracing::warn!(error = %e, "pulling {what} failed; retrying");
            pause(shutdown).await;
            None
        }
    }
}

/// The pause after a failed pull (JetStream electing a leader, a lost
/// connection): no busy loop, and no delay to a shutdown.
async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Pulls synchronous requests while a permit is free, until `shutdown`.
pub async fn requests(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    permits: Arc<Semaphore>,
    running: Running,
    shutdown: CancellationToken,
) {
    let mut handed_back = 0usize;
    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let want = permits.available_permits() + 1;
        let Some(mut batch) = pull(&consumer, want, "requests", &shutdown).await else {
            continue;
        };
        let mut first = Some(first);
        while let Some(next) = batch.next().await {
            let msg = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling requests failed; retrying");
                    pause(&shutdown).await;
                    break;
                }
            };
            if shutdown.is_cancelled() {
                nak(&msg).await;
                handed_back += 1;
                continue;
            }
            let permit = match first.take() {
                Some(p) => p,
                None => match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let work = {
                let (shared, msg) = (shared.clone(), msg.clone());
                async move {
                    process::handle(shared, msg).await;
                    drop(permit);
                }
            };
            running.spawn(&msg, work, spans::delivery("dispatch", &msg));
        }
    }
    if handed_back > 0 {
        tracing::info!(
            messages = handed_back,
            "handed back requests pulled while stopping"
        );
    }
}

/// Pulls and runs jobs, below synchronous requests: at most
/// `job_permits` at once, and none taken while more than half of the
/// synchronous capacity is busy.
pub async fn jobs(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    job_permits: Arc<Semaphore>,
    sync_permits: Arc<Semaphore>,
    sync_capacity: usize,
    running: Running,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let permit: OwnedSemaphorePermit = tokio::select! {
            p = job_permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = shutdown.cancelled() => return,
        };
        while sync_permits.available_permits() < sync_capacity / 2 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let Some(mut batch) = pull(&consumer, 1, "jobs", &shutdown).await else {
            continue;
        };
        let mut permit = Some(permit);
        while let Some(next) = batch.next().await {
            let msg = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling jobs failed; retrying");
                    pause(&shutdown).await;
                    break;
                }
            };
            let Some(permit) = permit.take().filter(|_| !shutdown.is_cancelled()) else {
                nak(&msg).await;
                continue;
            };
            let work = {
                let (shared, msg) = (shared.clone(), msg.clone());
                async move { jobs::handle(shared, msg, permit).await }
            };
            running.spawn(&msg, work, spans::delivery("job", &msg));
        }
    }
}
