//! The server-sent-events reader every streaming adapter shares:
//! `eventsource-stream` behind a guard for a leading byte-order mark, and
//! a provider's SSE body as `(event, data)` pairs.
//!
//! Invariants: the events read do not depend on how the body is cut into
//! chunks, and no body, however malformed, makes the reader panic; bytes that
//! are not UTF-8 end the stream with an error. An event is read once its
//! closing blank line is complete (LF, CRLF or a lone CR), never before.

use bytes::{Buf, Bytes, BytesMut};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use super::error::{UpstreamError, broken};

/// A UTF-8 byte-order mark, which an event stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The events of an SSE body.
pub fn events<S, E>(body: S) -> impl Stream<Item = Result<Event, EventStreamError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    guarded(body).eventsource()
}

/// A provider's SSE body as `(event name, data)` pairs; a stall or a
/// broken body ends it with a broken-stream error.
pub fn provider_events(
    response: reqwest::Response,
    provider: String,
) -> impl Stream<Item = Result<(String, String), UpstreamError>> + Send + 'static {
    events(response.bytes_stream()).map(move |event| match event {
        Ok(ev) => Ok((ev.event, ev.data)),
        Err(EventStreamError::Transport(t)) if t.is_timeout() => {
            Err(broken(&provider, "the stream stalled"))
        }
        Err(_) => Err(broken(&provider, "the stream broke")),
    })
}

/// `body` as eventsource-stream 0.2.3 reads it right: led by an empty line,
/// without the one byte-order mark it may start with, and with a final lone
/// CR closed.
///
/// - That crate drops a leading U+FEFF by slicing one byte off a three-byte
///   character, which panics. The mark is dropped here (the SSE grammar
///   allows one), and the empty line, which dispatches nothing, keeps the
///   parser from ever seeing a U+FEFF first (a body may start with two).
/// - A lone CR ends a line, but the crate waits for a possible LF after a CR
///   and so never reads a body's last line when it ends with one: the last
///   event would be lost. An LF after that CR completes the line; it starts
///   no new one.
fn guarded<S, E>(body: S) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    struct St<S> {
        body: std::pin::Pin<Box<futures::stream::Fuse<S>>>,
        /// The first bytes, until they show whether the body starts with a
        /// mark; `None` once that is known.
        head: Option<BytesMut>,
        /// The last byte passed on.
        last: Option<u8>,
        over: bool,
    }
    let state = St {
        body: Box::pin(body.fuse()),
        head: Some(BytesMut::new()),
        last: None,
        over: false,
    };
    let lead = futures::stream::iter([Ok(Bytes::from_static(b"\n"))]);
    lead.chain(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.over {
                return None;
            }
            let chunk = match st.body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Some((Err(e), st)),
                None => {
                    st.over = true;
                    // What is held is shorter than a mark: not one.
                    let mut rest = st.head.take().unwrap_or_default();
                    if st.last == Some(b'\r') {
                        rest.extend_from_slice(b"\n");
                    }
                    if rest.is_empty() {
                        return None;
                    }
                    return Some((Ok(rest.freeze()), st));
                }
            };
            let chunk = match st.head.as_mut() {
                None => chunk,
                Some(head) => {
                    head.extend_from_slice(&chunk);
                    if head.len() < BOM.len() && BOM.starts_with(head) {
                        continue;
                    }
                    let mut head = st.head.take().unwrap_or_default();
                    if head.starts_with(BOM) {
                        head.advance(BOM.len());
                    }
                    head.freeze()
                }
            };
            if let Some(&b) = chunk.last() {
                st.last = Some(b);
            }
            return Some((Ok(chunk), st));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `chunks` as (event, data) pairs, or `Err` at the first
    /// error.
    fn read(chunks: Vec<&[u8]>) -> Vec<Result<(String, String), String>> {
        let body = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(c))),
        );
        futures::executor::block_on(
            events(body)
                .map(|e| e.map(|e| (e.event, e.data)).map_err(|e| e.to_string()))
                .collect(),
        )
    }

    fn message(data: &str) -> Result<(String, String), String> {
        Ok(("message".into(), data.into()))
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped_however_it_is_cut() {
        let body = "\u{feff}data: first\n\ndata: second\n\n".as_bytes();
        let expected = vec![message("first"), message("second")];
        assert_eq!(read(vec![body]), expected);
        for cut in 1..=BOM.len() {
            assert_eq!(read(vec![&body[..cut], &body[cut..]]), expected);
            assert_eq!(read(vec![&[], &body[..cut], &[], &body[cut..]]), expected);
        }
    }

    #[test]
    fn only_one_mark_is_dropped_and_nothing_panics_on_more() {
        let body = "\u{feff}\u{feff}data: x\n\n".as_bytes();
        // The second mark belongs to the field name `\u{feff}data`: ignored.
        assert_eq!(read(vec![body]), vec![]);
        assert_eq!(
            read(vec!["data: a\u{feff}\n\n".as_bytes()]),
            vec![message("a\u{feff}")]
        );
    }

    #[test]
    fn a_last_line_ended_by_a_lone_cr_is_read() {
        let body = b"data: a\r\rdata: [DONE]\r\r";
        let expected = vec![message("a"), message("[DONE]")];
        assert_eq!(read(vec![body]), expected);
        assert_eq!(read(vec![&body[..body.len() - 1], b"\r"]), expected);
        // A CR that only ends the data line leaves the event open.
        assert_eq!(read(vec![b"data: a\r\rdata: b\r"]), vec![message("a")]);
        assert_eq!(read(vec![b"data: a\n\ndata: b\n"]), vec![message("a")]);
    }

    #[test]
    fn bodies_shorter_than_a_mark_pass_through() {
        assert_eq!(read(vec![]), vec![]);
        assert_eq!(read(vec![b"\n"]), vec![]);
        // Two bytes of a mark, then the end: not UTF-8, so one error.
        let cut = read(vec![b"\xEF", b"\xBB"]);
        assert!(matches!(cut.as_slice(), [Err(_)]), "{cut:?}");
    }
}
