//! The request body timeout: a body must arrive in full within
//! `AIGW_BODY_TIMEOUT` of its request's headers.
//!
//! The body is wrapped so that reading it fails once the deadline has
//! passed; whatever the handler made of that failure, the caller gets 408
//! (OpenAI's error JSON, code `request_timeout`), and an HTTP/1 connection
//! is closed (the rest of its body was never read). The deadline is a total
//! one, not a silence between reads, so a body sent a byte at a time cannot
//! hold a connection for longer either.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::ApiError;

/// The error a body past its deadline reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within its timeout")]
pub struct BodyTimedOut;

/// A request body that fails once its deadline has passed.
struct Deadline {
    body: Body,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.expired.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Middleware: gives the request body `limit` to arrive, else 408.
pub async fn body_deadline(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let version = request.version();
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Deadline {
            body,
            deadline: Box::pin(tokio::time::sleep(limit)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    let mut response = ApiError::BodyTimeout.into_response();
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app(limit: Duration) -> Router {
        // Like every handler: a body that fails to read is a 400.
        Router::new()
            .route(
                "/",
                post(
                    |body: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                        match body {
                            Ok(b) => (StatusCode::OK, b).into_response(),
                            Err(r) => (StatusCode::BAD_REQUEST, r.body_text()).into_response(),
                        }
                    },
                ),
            )
            .layer(axum::middleware::from_fn_with_state(limit, body_deadline))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_a_408() {
        let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let mut tx = tx;
        tx.try_send(Ok(Bytes::from_static(b"{\"model\":"))).unwrap();
        // The sender stays open: the rest of the body never comes.
        let request = Request::post("/").body(Body::from_stream(rx)).unwrap();
        let response = app(Duration::from_secs(5)).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "request_timeout");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_time_passes_untouched() {
        let request = Request::post("/").body(Body::from("hello")).unwrap();
        let response = app(Duration::from_secs(5)).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&body[..], b"hello");
    }
}
