//! A streamed answer relayed as SSE: reply frames from NATS to the caller.
//!
//! A task drains the reply subscription as fast as NATS delivers, into a
//! buffer bounded in bytes (`AIGW_SSE_BUFFER_BYTES`); the response body
//! reads that buffer at the caller's pace. A caller that falls further behind
//! than the buffer gets everything buffered, then an SSE error event
//! (`slow_reader`), and the stream ends; the dispatcher is told to stop at
//! once. A chunk too large for one NATS message arrives as `part` frames
//! and is joined into one SSE event: its parts are never cut off, and the
//! buffer stretches to the largest such chunk of the stream. So no frame is ever dropped silently: every frame is also checked
//! for its delivery and order, and a gap ends the stream with an error event
//! as well. Whatever way the stream ends other than its `end` or `error`
//! frame (the caller gone, a gap, silence, a slow reader), the dispatcher is
//! told to stop working on it.
//!
//! The chunk with the stream's usage carries its cost in a frame header
//! when the caller asked for usage; it is shown in the caller's dialect
//! (`cost::Dialect::usage_event`: OpenAI's `usage.cost_usd`). Every event,
//! error events included, is written in the caller's dialect
//! (`dialects::Dialect`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aigw_events::wire;
use aigw_runtime::limits::Slot;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::chat::{header_of, parts_of, routing_headers};
use crate::cost::{self, Dialect};

/// Streams cut off because their client read too slowly.
pub(crate) const SLOW_READERS: &str = "aigw_sse_slow_readers_total";

/// Tells the dispatchers to stop working on a request whose caller left,
/// unless the answer finished first.
struct CancelOnDrop {
    client: async_nats::Client,
    subject: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let subject = std::mem::take(&mut self.subject);
        rt.spawn(async move {
            let _ = client.publish(subject, Bytes::new()).await;
            let _ = client.flush().await;
        });
    }
}

/// What the drain task hands the body: a frame, or why no more will come.
enum Item {
    Frame(async_nats::Message),
    End(Ending),
}

/// Why the drain task stopped before the answer's last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The caller fell further behind than the buffer.
    SlowReader,
    /// The reply subscription closed.
    Lost,
    /// No frame for the idle timeout.
    Silent,
}

impl Ending {
    fn event(self, buffer_bytes: usize, dialect: Dialect) -> Bytes {
        let sse_error = |message: &str, code: &str| dialect.sse_failure(message, code);
        match self {
            Ending::SlowReader => sse_error(
                &format!(
                    "The stream was read too slowly: more than {buffer_bytes} bytes of it waited for the client, so it was cut off."
                ),
                "slow_reader",
            ),
            Ending::Lost => sse_error("the answer stream was lost", "stream_lost"),
            Ending::Silent => sse_error("the provider stopped answering", "timeout"),
        }
    }
}

/// What one buffered frame counts for: its payload and headers.
fn frame_bytes(msg: &async_nats::Message) -> usize {
    msg.length.max(msg.payload.len())
}

/// The answer's last frame: `end`, or an `error` not followed by `part`s
/// (a split error ends with its last part, which is not told apart here:
/// the body stops reading once it has joined it).
fn is_last(msg: &async_nats::Message) -> bool {
    match header_of(msg, wire::FRAME).as_deref() {
        Some(wire::FRAME_END) => true,
        Some(wire::FRAME_ERROR) => parts_of(msg) == 1,
        _ => false,
    }
}

/// Drains `replies` into `frames` until the body is dropped, the
/// subscription ends or falls silent, or more than `limit` bytes would wait
/// for the caller. The last frame of an answer is always let through (it is
/// tiny), so a caller that keeps up to the last moment gets a whole answer.
/// The dispatcher is told to stop unless the body saw the answer finish.
async fn drain(
    mut replies: async_nats::Subscriber,
    frames: mpsc::UnboundedSender<Item>,
    buffered: Arc<AtomicUsize>,
    limit: usize,
    idle: Duration,
    finished: Arc<AtomicBool>,
    mut cancel: CancelOnDrop,
) {
    // A chunk split into parts is one frame to the caller: it may exceed the
    // buffer on its own, so the buffer grows to the largest such chunk of
    // this stream (`whole`), and its parts are never cut in the middle.
    let (mut whole, mut parts_left, mut joining) = (0usize, 0usize, 0usize);
    loop {
        let next = tokio::select! {
            // The body is gone: finished, or the caller left.
            () = frames.closed() => {
                cancel.armed = !finished.load(Ordering::Acquire);
                return;
            }
            next = tokio::time::timeout(idle, replies.next()) => next,
        };
        let msg = match next {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                let _ = frames.send(Item::End(Ending::Lost));
                return;
            }
            Err(_) => {
                let _ = frames.send(Item::End(Ending::Silent));
                return;
            }
        };
        let (size, last) = (frame_bytes(&msg), is_last(&msg));
        let waiting = buffered.load(Ordering::Acquire);
        // (A frame larger than the buffer still goes to a client that has
        // read everything before it.)
        let part = parts_left > 0;
        if part {
            parts_left -= 1;
            joining = joining.saturating_add(size);
            if parts_left == 0 {
                whole = whole.max(joining);
            }
        } else if parts_of(&msg) > 1 {
            parts_left = parts_of(&msg) - 1;
            joining = size;
        }
        if !last && !part && waiting > 0 && waiting + size > limit.max(whole.saturating_add(size)) {
            metrics::counter!(SLOW_READERS).increment(1);
            tracing::info!(limit, "stream cut off: the client reads too slowly");
            let _ = frames.send(Item::End(Ending::SlowReader));
            return;
        }
        buffered.fetch_add(size, Ordering::AcqRel);
        if last {
            // Nothing follows: wait for the body to read it (or go).
            let _ = frames.send(Item::Frame(msg));
            frames.closed().await;
            cancel.armed = !finished.load(Ordering::Acquire);
            return;
        }
        if frames.send(Item::Frame(msg)).is_err() {
            cancel.armed = !finished.load(Ordering::Acquire);
            return;
        }
    }
}

/// The body side: frames from the buffer, checked and turned into SSE.
struct Relay {
    frames: mpsc::UnboundedReceiver<Item>,
    buffered: Arc<AtomicUsize>,
    buffer_bytes: usize,
    delivery: Option<String>,
    next_seq: u64,
    done: bool,
    /// Set once the answer's `end` or `error` frame was relayed.
    finished: Arc<AtomicBool>,
    /// How the caller's dialect shows the cost of the usage chunk.
    dialect: Dialect,
    /// The key's concurrency slot, freed once the answer is relayed or the
    /// caller leaves.
    _slot: Option<Slot>,
}

impl Relay {
    /// The whole payload of `first`, joined with the `part` frames that
    /// follow it in order; else the error event that ends the stream.
    async fn join(&mut self, first: &async_nats::Message) -> Result<Bytes, Bytes> {
        let dialect = self.dialect;
        let lost = || dialect.sse_failure("parts of the answer were lost", "stream_lost");
        let parts = parts_of(first);
        if parts == 1 {
            return Ok(first.payload.clone());
        }
        let mut whole = Vec::with_capacity(first.payload.len().saturating_mul(parts.min(64)));
        whole.extend_from_slice(&first.payload);
        for _ in 1..parts {
            let part = match self.frames.recv().await {
                Some(Item::Frame(part)) => part,
                Some(Item::End(ending)) => {
                    return Err(ending.event(self.buffer_bytes, self.dialect));
                }
                None => return Err(lost()),
            };
            self.buffered
                .fetch_sub(frame_bytes(&part), Ordering::AcqRel);
            let in_order = header_of(&part, wire::FRAME).as_deref() == Some(wire::FRAME_PART)
                && header_of(&part, wire::DELIVERY) == self.delivery
                && header_of(&part, wire::SEQ).and_then(|s| s.parse::<u64>().ok())
                    == Some(self.next_seq);
            if !in_order {
                return Err(lost());
            }
            self.next_seq += 1;
            whole.extend_from_slice(&part.payload);
        }
        Ok(Bytes::from(whole))
    }

    /// The next piece of the SSE body, or `None` once it is finished.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let msg = match self.frames.recv().await {
                Some(Item::Frame(msg)) => {
                    self.buffered.fetch_sub(frame_bytes(&msg), Ordering::AcqRel);
                    msg
                }
                Some(Item::End(ending)) => {
                    self.done = true;
                    return Some(ending.event(self.buffer_bytes, self.dialect));
                }
                None => {
                    self.done = true;
                    return Some(
                        self.dialect
                            .sse_failure("the answer stream was lost", "stream_lost"),
                    );
                }
            };
            if header_of(&msg, wire::DELIVERY) != self.delivery {
                // A redelivery started over elsewhere: the caller already has
                // part of the first answer, so the stream cannot be resumed.
                self.done = true;
                return Some(self.dialect.sse_failure(
                    "the request was interrupted mid-stream",
                    "stream_interrupted",
                ));
            }
            let seq = header_of(&msg, wire::SEQ).and_then(|s| s.parse::<u64>().ok());
            if seq != Some(self.next_seq) {
                self.done = true;
                return Some(
                    self.dialect
                        .sse_failure("parts of the answer were lost", "stream_lost"),
                );
            }
            self.next_seq += 1;
            match header_of(&msg, wire::FRAME).as_deref() {
                Some(kind @ (wire::FRAME_CHUNK | wire::FRAME_ERROR)) => {
                    // A payload too large for one frame comes with `part` frames.
                    let payload = match self.join(&msg).await {
                        Ok(payload) => payload,
                        Err(event) => {
                            self.done = true;
                            return Some(event);
                        }
                    };
                    if kind == wire::FRAME_ERROR {
                        self.done = true;
                        self.finished.store(true, Ordering::Release);
                        let status = header_of(&msg, wire::STATUS)
                            .and_then(|s| s.parse::<u16>().ok())
                            .and_then(|s| StatusCode::from_u16(s).ok());
                        return Some(self.dialect.sse_error_frame(&payload, status));
                    }
                    let payload = match cost::of_frame(&msg) {
                        Some(cost) => self.dialect.usage_event(payload, cost),
                        None => payload,
                    };
                    return Some(self.dialect.sse_chunk(&payload));
                }
                Some(wire::FRAME_END) => {
                    self.done = true;
                    self.finished.store(true, Ordering::Release);
                    return Some(self.dialect.sse_end());
                }
                _ => continue,
            }
        }
    }
}

/// The SSE response of request `id`, whose `start` frame came first; the
/// rest of the answer comes from `replies`. `slot` (the key's concurrency
/// slot) is held until the answer has been relayed or the caller leaves.
pub fn sse_response(
    state: &AppState,
    id: Uuid,
    start: &async_nats::Message,
    replies: async_nats::Subscriber,
    slot: Option<Slot>,
    dialect: Dialect,
) -> Response {
    let start_seq = header_of(start, wire::SEQ)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel();
    let buffered = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let drained = drain(
        replies,
        tx,
        buffered.clone(),
        state.sse_buffer_bytes,
        state.request_timeout,
        finished.clone(),
        CancelOnDrop {
            client: state.client.clone(),
            subject: state.names.cancel_subject(&id.to_string()),
            armed: true,
        },
    );
    tokio::spawn(drained.instrument(tracing::Span::current()));
    let relay = Relay {
        frames: rx,
        buffered,
        buffer_bytes: state.sse_buffer_bytes,
        delivery: header_of(start, wire::DELIVERY),
        next_seq: start_seq + 1,
        done: false,
        finished,
        dialect,
        _slot: slot,
    };
    let body = futures::stream::unfold(relay, |mut relay| async move {
        relay
            .next()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), relay))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    routing_headers(&mut response, start);
    response
}
