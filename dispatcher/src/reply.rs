//! Frames sent back to the waiting ingress on the request's reply subject.
//!
//! Every frame stays within the NATS server's `max_payload`: a `response`,
//! `error` or `chunk` payload larger than [`wire::part_bytes`] of it is
//! sent as that frame (with [`wire::PARTS`]) followed by `part` frames,
//! numbered on in the same sequence, which the ingress joins.
//!
//! A successful answer carries its cost ([`wire::COST`]): on its `response`
//! frame, or on the `chunk` with the stream's usage. The cost is the one the
//! request's outcome records (`record::Billed`), never computed here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aigw_events::wire::{self, AnswerCost};
use async_nats::HeaderMap;
use bytes::Bytes;

/// A header value without control characters (a NATS header line must not
/// break): provider names are checked when configured, but names stored
/// before that check, and upstream-supplied values, pass through here too.
fn header_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().any(char::is_control) {
        value.replace(|c: char| c.is_control(), " ").into()
    } else {
        value.into()
    }
}

/// Publishes one request's answer, frame by frame, in order; or, for a job
/// (nobody waits on a subject), keeps the final answer for the job's record.
pub struct Replier {
    client: async_nats::Client,
    subject: String,
    delivery: String,
    seq: AtomicU64,
    capture: Option<Mutex<Option<Captured>>>,
    /// The Responses API object the caller was answered with (plain or at
    /// the end of its stream), kept for a stored response.
    rendered: Mutex<Option<serde_json::Value>>,
}

/// A complete answer kept by a capturing replier.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    pub status: u16,
    pub body: Bytes,
    /// The provider that served it (successful answers only).
    pub provider: Option<String>,
}

impl Replier {
    pub fn new(client: async_nats::Client, subject: String, delivery: u64) -> Self {
        Self {
            client,
            subject,
            delivery: delivery.to_string(),
            seq: AtomicU64::new(0),
            capture: None,
            rendered: Mutex::new(None),
        }
    }

    /// A replier that publishes nothing and keeps the final answer.
    pub fn capturing(client: async_nats::Client) -> Self {
        Self {
            capture: Some(Mutex::new(None)),
            ..Self::new(client, String::new(), 0)
        }
    }

    /// The answer kept by a capturing replier.
    pub fn captured(&self) -> Option<Captured> {
        self.capture
            .as_ref()
            .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Keeps the `response` object the caller was answered with (the last
    /// one kept wins: only a successful attempt renders one).
    pub fn keep_rendered(&self, response: serde_json::Value) {
        *self.rendered.lock().unwrap_or_else(|e| e.into_inner()) = Some(response);
    }

    /// The kept `response` object, if any.
    pub fn take_rendered(&self) -> Option<serde_json::Value> {
        self.rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Keeps the answer instead of sending it; true when capturing.
    fn keep(&self, status: u16, body: &Bytes, provider: Option<&str>) -> bool {
        let Some(capture) = &self.capture else {
            return false;
        };
        *capture.lock().unwrap_or_else(|e| e.into_inner()) = Some(Captured {
            status,
            body: body.clone(),
            provider: provider.map(str::to_string),
        });
        true
    }

    fn headers(&self, kind: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(wire::FRAME, kind);
        h.insert(wire::DELIVERY, self.delivery.as_str());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        h.insert(wire::SEQ, seq.to_string().as_str());
        h
    }

    async fn send(&self, headers: HeaderMap, payload: Bytes) {
        if self.capture.is_some() {
            return;
        }
        // Nobody may be listening any more (the caller left); that is fine.
        if let Err(e) = self
            .client
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
        {
            tracing::debug!(error = %e, "reply frame not sent");
        }
    }

    /// Sends a frame whose payload may be larger than one message: the
    /// first piece under `headers`, the rest as `part` frames.
    async fn send_whole(&self, mut headers: HeaderMap, payload: Bytes) {
        let size = wire::part_bytes(self.client.max_payload());
        let parts = payload.len().div_ceil(size).max(1);
        if parts == 1 {
            self.send(headers, payload).await;
            return;
        }
        headers.insert(wire::PARTS, parts.to_string().as_str());
        self.send(headers, payload.slice(..size)).await;
        for i in 1..parts {
            let end = ((i + 1) * size).min(payload.len());
            let h = self.headers(wire::FRAME_PART);
            self.send(h, payload.slice(i * size..end)).await;
        }
    }

    /// A whole answer and what it cost; `content_type` `None` is JSON.
    pub async fn response(
        &self,
        status: u16,
        provider: &str,
        attempts: usize,
        content_type: Option<&str>,
        body: Bytes,
        cost: AnswerCost,
    ) {
        if self.keep(status, &body, Some(provider)) {
            return;
        }
        let mut h = self.headers(wire::FRAME_RESPONSE);
        h.insert(wire::STATUS, status.to_string().as_str());
        h.insert(wire::PROVIDER, header_safe(provider).as_ref());
        h.insert(wire::ATTEMPTS, attempts.to_string().as_str());
        h.insert(wire::COST, cost.header_value().as_str());
        if let Some(ct) = content_type {
            h.insert(wire::CONTENT_TYPE, header_safe(ct).as_ref());
        }
        self.send_whole(h, body).await;
        let _ = self.client.flush().await;
    }

    pub async fn error(
        &self,
        status: u16,
        body: Bytes,
        retry_after: Option<&str>,
        attempts: usize,
    ) {
        if self.keep(status, &body, None) {
            return;
        }
        let mut h = self.headers(wire::FRAME_ERROR);
        h.insert(wire::STATUS, status.to_string().as_str());
        h.insert(wire::ATTEMPTS, attempts.to_string().as_str());
        if let Some(r) = retry_after {
            h.insert(wire::RETRY_AFTER, header_safe(r).as_ref());
        }
        self.send_whole(h, body).await;
    }

    pub async fn start(&self, provider: &str, attempts: usize) {
        let mut h = self.headers(wire::FRAME_START);
        h.insert(wire::PROVIDER, header_safe(provider).as_ref());
        h.insert(wire::ATTEMPTS, attempts.to_string().as_str());
        self.send(h, Bytes::new()).await;
    }

    /// One SSE payload; `cost` on the chunk that carries the stream's usage.
    pub async fn chunk(&self, data: Bytes, cost: Option<AnswerCost>) {
        let mut h = self.headers(wire::FRAME_CHUNK);
        if let Some(cost) = cost {
            h.insert(wire::COST, cost.header_value().as_str());
        }
        self.send_whole(h, data).await;
    }

    pub async fn end(&self) {
        let h = self.headers(wire::FRAME_END);
        self.send(h, Bytes::new()).await;
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::header_safe;

    #[test]
    fn header_values_never_carry_line_breaks() {
        assert_eq!(header_safe("upstream-a"), "upstream-a");
        assert_eq!(header_safe("a\r\nX-Evil: 1"), "a  X-Evil: 1");
    }
}
