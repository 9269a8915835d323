//! Serving the HTTP API: accepting connections, with a cap on how many are
//! open and timeouts for slow or idle ones (slowloris and its cousins).
//!
//! - **Connection cap.** Beyond `max_connections` open connections the
//!   listener stops accepting until one closes. Extra callers wait in the
//!   kernel's accept backlog rather than being refused: a burst is delayed,
//!   not failed, and the OS refuses connections only once its backlog is
//!   full. The timeouts below make sure held slots come back.
//! - **Header timeout.** A connection must send its first request's headers
//!   within `header_timeout` of being accepted, or it is dropped. For later
//!   requests of an HTTP/1 keep-alive connection hyper applies the same
//!   limit, counted from when it starts waiting for the next request.
//! - **Body timeout.** A request body must arrive in full within
//!   `body_timeout` of its headers: 408 (see `body_deadline`).
//! - **Idle timeout.** A connection with no request in flight for
//!   `idle_timeout` is closed gracefully (HTTP/2: GOAWAY). HTTP/2
//!   connections are also pinged, and closed when the peer stops answering.
//!
//! Shutdown stops accepting, lets every connection finish the requests it
//! has in flight (closing it gracefully), and returns once all are closed,
//! or once the shutdown grace is over (the connections still open are then
//! dropped; their requests still end as events, recorded by the
//! dispatcher).

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use clap::Args;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How the ingress's HTTP server protects itself from slow, idle or too
/// many connections.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServerArgs {
    /// Longest wait for a request's headers (from the connection's accept,
    /// or from the end of its previous request); the connection is closed
    /// after it.
    #[arg(long, env = "AIGW_HEADER_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub header_timeout: Duration,

    /// Longest wait for a whole request body, from its headers: 408 after it.
    #[arg(long, env = "AIGW_BODY_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub body_timeout: Duration,

    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "AIGW_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,

    /// Most connections open at once; beyond it new connections wait to be
    /// accepted until one closes.
    #[arg(long, env = "AIGW_MAX_CONNECTIONS", default_value = "4096")]
    pub max_connections: NonZeroUsize,
}

impl Default for ServerArgs {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What one connection is doing, watched by its watchdog.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    /// Requests started on the connection so far.
    started: u64,
    /// Requests whose response has not been sent in full (or dropped).
    in_flight: usize,
}

/// Counts a request in flight until dropped (with its response body).
struct Ongoing(Arc<watch::Sender<Activity>>);

impl Ongoing {
    fn start(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.started += 1;
            a.in_flight += 1;
        });
        Self(activity.clone())
    }
}

impl Drop for Ongoing {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_flight -= 1);
    }
}

/// Connections closed by their watchdog, by `reason` ([`Verdict::label`]).
const CONNECTIONS_CLOSED: &str = "aigw_http_connections_closed_total";

/// Starts the counter of closed connections at 0 for every reason, so the
/// first close is an increase.
pub(crate) fn register_metrics() {
    for verdict in [Verdict::Stalled, Verdict::Idle] {
        metrics::counter!(CONNECTIONS_CLOSED, "reason" => verdict.label()).increment(0);
    }
}

/// Why a connection's watchdog wants it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No request headers within the header timeout of the accept.
    Stalled,
    /// No request in flight for the idle timeout.
    Idle,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Stalled => "header_timeout",
            Verdict::Idle => "idle_timeout",
        }
    }
}

/// Resolves when the connection should be closed.
async fn watchdog(
    mut activity: watch::Receiver<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
) -> Verdict {
    // A `Ref` holds the channel's lock: read what is needed and let go.
    let first = async { activity.wait_for(|a| a.started > 0).await.map(|_| ()) };
    match tokio::time::timeout(header_timeout, first).await {
        Err(_) => return Verdict::Stalled,
        Ok(Err(_)) => return std::future::pending().await,
        Ok(Ok(())) => {}
    }
    loop {
        let idle = activity
            .wait_for(|a| a.in_flight == 0)
            .await
            .map(|a| a.started);
        let Ok(seen) = idle else {
            return std::future::pending().await;
        };
        let next = async { activity.wait_for(|a| a.started > seen).await.map(|_| ()) };
        match tokio::time::timeout(idle_timeout, next).await {
            Err(_) => return Verdict::Idle,
            Ok(Err(_)) => return std::future::pending().await,
            Ok(Ok(())) => {}
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then waits for every
/// connection to finish (see the module doc).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    args: &ServerArgs,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(args.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let slots = Arc::new(Semaphore::new(args.max_connections.get()));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY each relayed SSE chunk can wait ~40 ms for the
        // client's delayed ACK (measured in bench/: stream p99 51 ms -> 7 ms).
        let (tcp, peer) = tcp;
        let _ = tcp.set_nodelay(true);
        let connection = serve_connection(
            builder.clone(),
            tcp,
            peer,
            app.clone(),
            args.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            metrics::gauge!("aigw_http_connections").increment(1.0);
            connection.await;
            metrics::gauge!("aigw_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace over; closing the connections still open"
        );
    }
}

/// Accept errors: a connection that failed before it was accepted is
/// skipped; anything else (out of file descriptors) is logged and waited
/// out, as hyper and axum do.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection until it ends, its watchdog closes it, or the
/// server shuts down.
async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    args: ServerArgs,
    shutdown: CancellationToken,
) {
    let (activity, watched) = watch::channel(Activity::default());
    let activity = Arc::new(activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = Ongoing::start(&activity);
        let app = app.clone();
        async move {
            let mut request = request.map(Body::new);
            // The peer, for what records a client's address (sign-ins).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = app
                .oneshot(request)
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            // The request stays in flight until its body is sent or dropped.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    let watchdog = watchdog(watched, args.header_timeout, args.idle_timeout);
    tokio::pin!(watchdog);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            verdict = &mut watchdog, if !closing => {
                metrics::counter!(CONNECTIONS_CLOSED, "reason" => verdict.label())
                    .increment(1);
                match verdict {
                    // Mid-headers there is nothing to finish: drop it.
                    Verdict::Stalled => return,
                    Verdict::Idle => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn defaults_match_the_flags() {
        let parsed = Cli::try_parse_from(["aigw"]).unwrap();
        assert_eq!(parsed.server, ServerArgs::default());
        assert!(Cli::try_parse_from(["aigw", "--header-timeout", "0s"]).is_err());
        assert!(Cli::try_parse_from(["aigw", "--max-connections", "0"]).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_closes_stalled_and_idle_connections() {
        let (activity, watched) = watch::channel(Activity::default());
        let activity = Arc::new(activity);
        let secs = Duration::from_secs;
        // No request at all: stalled after the header timeout.
        let verdict = watchdog(watched.clone(), secs(5), secs(60)).await;
        assert_eq!(verdict, Verdict::Stalled);

        // A request in flight keeps the connection open however long it runs.
        let dog = tokio::spawn(watchdog(watched, secs(5), secs(60)));
        let request = Ongoing::start(&activity);
        tokio::time::sleep(secs(600)).await;
        assert!(!dog.is_finished());
        drop(request);
        // Another request within the idle timeout restarts the wait.
        tokio::time::sleep(secs(59)).await;
        drop(Ongoing::start(&activity));
        tokio::time::sleep(secs(59)).await;
        assert!(!dog.is_finished());
        tokio::time::sleep(secs(2)).await;
        assert_eq!(dog.await.unwrap(), Verdict::Idle);
    }
}
