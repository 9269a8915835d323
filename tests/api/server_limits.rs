//! The ingress's HTTP server against slow, idle and too many connections:
//! header, body and idle timeouts and the connection cap, driven with raw
//! TCP (an HTTP client library would not stall on purpose).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use aigw_ingress::server::ServerArgs;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::harness::{Options, TestEnv};

/// An ingress replica of `env` with these server settings, served on its own
/// port; stops when the guard drops. Ready once `/health` answers (checked
/// on connections that close, so none is left holding a slot).
async fn ingress_with(env: &TestEnv, server: ServerArgs) -> (SocketAddr, DropGuard) {
    let mut args = env.ingress_args();
    args.server = server;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (common, token) = (env.common.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(e) = aigw_ingress::run(common, args, listener, token).await {
            panic!("ingress failed: {e}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(2), async {
            let mut tcp = TcpStream::connect(addr).await.ok()?;
            tcp.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = String::new();
            tcp.read_to_string(&mut out).await.ok()?;
            Some(out)
        })
        .await;
        if answer
            .ok()
            .flatten()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "ingress did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (addr, stop.drop_guard())
}

fn quiet_env() -> Options {
    Options {
        dispatcher: false,
        projector: false,
        ..Options::default()
    }
}

/// Reads until the peer closes the connection (or resets it); `None` if it
/// is still open after `limit`.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| out)
}

/// Reads one HTTP/1.1 response with a `Content-Length` (the connection stays
/// open); `None` if none arrives within `limit`.
async fn read_response(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    tokio::time::timeout(limit, async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    return Some(text);
                }
            }
        }
    })
    .await
    .ok()
    .flatten()
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test]
async fn a_client_stalling_before_or_inside_its_headers_is_disconnected() {
    let env = TestEnv::with(quiet_env()).await;
    let (addr, _stop) = ingress_with(
        &env,
        ServerArgs {
            header_timeout: Duration::from_secs(1),
            ..ServerArgs::default()
        },
    )
    .await;

    // Half a request head, then nothing.
    let started = Instant::now();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthoriz")
        .await
        .unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // A whole request, then half of the next one on the same connection.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(HEALTH).await.unwrap();
    let first = read_response(&mut second, Duration::from_secs(10)).await;
    assert!(first.unwrap().starts_with("HTTP/1.1 200"));
    second.write_all(b"GET /health HTT").await.unwrap();

    for (name, tcp) in [
        ("half a head", &mut half),
        ("silent", &mut silent),
        ("half the second head", &mut second),
    ] {
        let answer = read_until_closed(tcp, Duration::from_secs(15)).await;
        assert!(answer.is_some(), "{name}: still open after 15 s");
        let text = String::from_utf8_lossy(&answer.unwrap()).to_string();
        assert!(!text.contains("200 OK"), "{name}: {text}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let env = TestEnv::with(quiet_env()).await;
    let (_, key) = env.add_key("slow-uploader").await;
    let (addr, _stop) = ingress_with(
        &env,
        ServerArgs {
            body_timeout: Duration::from_secs(1),
            ..ServerArgs::default()
        },
    )
    .await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );

    // Part of the body, then nothing; and the body a byte every 200 ms,
    // which never stays silent for long but never ends in time either.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(br#"{"model":"m","#).await.unwrap();
    let mut drip = TcpStream::connect(addr).await.unwrap();
    drip.write_all(head.as_bytes()).await.unwrap();
    let (mut drip_read, mut drip_write) = drip.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..200 {
            if drip_write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let started = Instant::now();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(15))
        .await
        .expect("the connection was not closed");
    check_408(&String::from_utf8_lossy(&answer));
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), drip_read.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the dripping body was never cut off");
    check_408(&String::from_utf8_lossy(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    dripping.abort();
}

fn check_408(text: &str) {
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    // The body may be chunked; the JSON object sits between its braces.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let error: Value = serde_json::from_str(json).unwrap();
    assert_eq!(error["error"]["code"], "request_timeout");
    assert_eq!(error["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let env = TestEnv::with(quiet_env()).await;
    let (addr, _stop) = ingress_with(
        &env,
        ServerArgs {
            idle_timeout: Duration::from_secs(1),
            ..ServerArgs::default()
        },
    )
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(HEALTH).await.unwrap();
    let answer = read_response(&mut tcp, Duration::from_secs(10)).await;
    assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    let rest = read_until_closed(&mut tcp, Duration::from_secs(15)).await;
    assert_eq!(rest, Some(vec![]), "an idle connection stayed open");
    assert!(idle_since.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let env = TestEnv::with(quiet_env()).await;
    let (addr, _stop) = ingress_with(
        &env,
        ServerArgs {
            max_connections: NonZeroUsize::new(2).unwrap(),
            ..ServerArgs::default()
        },
    )
    .await;
    // Two keep-alive connections, each proven accepted by an answer.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(HEALTH).await.unwrap();
        let answer = read_response(&mut tcp, Duration::from_secs(10)).await;
        assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    // The third connects (the kernel's backlog) but is not served...
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    let early = read_response(&mut third, Duration::from_millis(1500)).await;
    assert!(early.is_none(), "served beyond the cap: {early:?}");
    // ...until one of the two closes.
    drop(held.pop());
    let answer = read_response(&mut third, Duration::from_secs(10)).await;
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
        "{answer:?}"
    );
}
