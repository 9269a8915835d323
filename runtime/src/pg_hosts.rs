//! libpq-style multi-host PostgreSQL URLs
//! (`postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write`), which
//! sqlx (one host per connection) does not take: parsing them, picking the
//! first host whose session fits `target_session_attrs`, and following a
//! failover by picking again.
//!
//! Invariants: a host list has 1 to [`MAX_HOSTS`] hosts, each with a port in
//! 1..=65535; anything else is refused with the URL redacted. Hosts are tried
//! in the order given, as libpq does. With a host list or a
//! `target_session_attrs` other than `any`, every new pooled connection is
//! checked against the attributes ([`fits`]), and a watcher re-picks within
//! about a second when the current host stops fitting (gone, or demoted to a
//! standby); connections opened before a switch are then never handed out.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::db::redact;
use crate::{Result, RuntimeError};

/// Most hosts a URL may list.
pub const MAX_HOSTS: usize = 16;
/// How long one host may take to accept a connection while picking.
const PICK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the watcher checks that the current host still fits.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// libpq's `target_session_attrs`: which server a session must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    Any,
    /// `transaction_read_only` off (a primary, not a read-only one).
    ReadWrite,
    /// `transaction_read_only` on.
    ReadOnly,
    /// Not in recovery.
    Primary,
    /// In recovery.
    Standby,
    /// A standby if one answers, else any.
    PreferStandby,
}

impl SessionAttrs {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a session with these settings fits (`prefer-standby` as its
    /// first, strict pass).
    fn accepts(self, read_only: bool, in_recovery: bool) -> bool {
        match self {
            Self::Any => true,
            Self::ReadWrite => !read_only,
            Self::ReadOnly => read_only,
            Self::Primary => !in_recovery,
            Self::Standby | Self::PreferStandby => in_recovery,
        }
    }
}

/// A parsed database URL: one set of connect options per host, in order.
#[derive(Debug, Clone)]
pub struct HostList {
    pub hosts: Vec<PgConnectOptions>,
    pub attrs: SessionAttrs,
}

impl HostList {
    /// Whether this URL needs more than sqlx's own handling (several hosts,
    /// or sessions to check).
    pub fn needs_picking(&self) -> bool {
        self.hosts.len() > 1 || self.attrs != SessionAttrs::Any
    }
}

/// Why a database URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{url}: not a postgres:// or postgresql:// URL")]
    Scheme { url: String },
    #[error("{url}: an empty host in the host list")]
    EmptyHost { url: String },
    #[error("{url}: more than {MAX_HOSTS} hosts")]
    TooManyHosts { url: String },
    #[error("{url}: port {port:?} is not a number from 1 to 65535")]
    Port { url: String, port: String },
    #[error("{url}: host {host:?} is not a host name or address")]
    Host { url: String, host: String },
    #[error(
        "{url}: target_session_attrs={value:?} is not one of any, read-write, read-only, primary, standby, prefer-standby"
    )]
    Attrs { url: String, value: String },
    #[error("{url}: {detail}")]
    Options { url: String, detail: String },
}

impl From<UrlError> for RuntimeError {
    fn from(e: UrlError) -> Self {
        RuntimeError::Config(e.to_string())
    }
}

/// Parses `url`, a PostgreSQL URL with one host or a comma-separated list.
pub fn parse(url: &str) -> std::result::Result<HostList, UrlError> {
    let shown = || redact(url);
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
        .ok_or_else(|| UrlError::Scheme { url: shown() })?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_list) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut attrs = SessionAttrs::Any;
    let mut kept = vec![];
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                attrs = SessionAttrs::parse(value).ok_or_else(|| UrlError::Attrs {
                    url: shown(),
                    value: value.chars().take(40).collect(),
                })?;
            }
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let hosts: Vec<&str> = host_list.split(',').collect();
    if hosts.len() > MAX_HOSTS {
        return Err(UrlError::TooManyHosts { url: shown() });
    }
    let single = hosts.len() == 1;
    let mut options = Vec::with_capacity(hosts.len());
    for entry in hosts {
        // No host at all (`postgres:///db?host=/run/postgresql`): sqlx's own
        // default (the `host` parameter, else a local socket).
        let (host, port) = if single && entry.is_empty() {
            ("", None)
        } else {
            split_host(entry, &shown)?
        };
        let mut one = format!("{scheme}://");
        if let Some(user) = userinfo {
            one.push_str(user);
            one.push('@');
        }
        one.push_str(host);
        if let Some(port) = port {
            one.push_str(&format!(":{port}"));
        }
        one.push_str(path);
        if !kept.is_empty() {
            one.push('?');
            one.push_str(&kept.join("&"));
        }
        let parsed = PgConnectOptions::from_str(&one).map_err(|e| UrlError::Options {
            url: shown(),
            detail: e.to_string(),
        })?;
        options.push(parsed);
    }
    Ok(HostList {
        hosts: options,
        attrs,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host<'a>(
    entry: &'a str,
    shown: &dyn Fn() -> String,
) -> std::result::Result<(&'a str, Option<u16>), UrlError> {
    if entry.is_empty() {
        return Err(UrlError::EmptyHost { url: shown() });
    }
    let (host, port) = if entry.starts_with('[') {
        match entry.split_once(']') {
            Some((v6, "")) => (&entry[..v6.len() + 1], None),
            Some((v6, rest)) => match rest.strip_prefix(':') {
                Some(port) => (&entry[..v6.len() + 1], Some(port)),
                None => {
                    return Err(UrlError::Host {
                        url: shown(),
                        host: entry.to_string(),
                    });
                }
            },
            None => {
                return Err(UrlError::Host {
                    url: shown(),
                    host: entry.to_string(),
                });
            }
        }
    } else {
        match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let bad_host = host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@,".contains(c));
    if bad_host {
        return Err(UrlError::Host {
            url: shown(),
            host: host.chars().take(100).collect(),
        });
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => {
                return Err(UrlError::Port {
                    url: shown(),
                    port: p.chars().take(20).collect(),
                });
            }
        },
    };
    Ok((host, port))
}

/// What a server says about a session on it.
async fn session(conn: &mut PgConnection) -> std::result::Result<(bool, bool), sqlx::Error> {
    let (read_only, in_recovery): (String, bool) =
        sqlx::query_as("SELECT current_setting('transaction_read_only'), pg_is_in_recovery()")
            .fetch_one(conn)
            .await?;
    Ok((read_only == "on", in_recovery))
}

/// Whether `conn` fits `attrs` (`prefer-standby` accepts any).
pub async fn fits(
    conn: &mut PgConnection,
    attrs: SessionAttrs,
) -> std::result::Result<bool, sqlx::Error> {
    if matches!(attrs, SessionAttrs::Any | SessionAttrs::PreferStandby) {
        return Ok(true);
    }
    let (read_only, in_recovery) = session(conn).await?;
    Ok(attrs.accepts(read_only, in_recovery))
}

/// How a host answered while picking.
enum Probe {
    Fits,
    /// Reachable, but its session does not fit.
    Unfit,
    Unreachable(String),
}

async fn probe(options: &PgConnectOptions, attrs: SessionAttrs) -> Probe {
    let connected = tokio::time::timeout(PICK_TIMEOUT, options.connect()).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Probe::Unreachable(e.to_string()),
        Err(_) => return Probe::Unreachable(format!("no answer within {PICK_TIMEOUT:?}")),
    };
    let checked = tokio::time::timeout(PICK_TIMEOUT, session(&mut conn)).await;
    let _ = conn.close().await;
    match checked {
        Ok(Ok((read_only, in_recovery))) if attrs.accepts(read_only, in_recovery) => Probe::Fits,
        Ok(Ok(_)) => Probe::Unfit,
        Ok(Err(e)) => Probe::Unreachable(e.to_string()),
        Err(_) => Probe::Unreachable(format!("no answer within {PICK_TIMEOUT:?}")),
    }
}

/// The index of the first of `hosts` that fits `attrs`, trying them in order.
pub async fn pick(hosts: &[PgConnectOptions], attrs: SessionAttrs) -> Result<usize> {
    if hosts.len() == 1 && attrs == SessionAttrs::Any {
        return Ok(0);
    }
    let mut tried = vec![];
    let mut reachable = None;
    for (i, options) in hosts.iter().enumerate() {
        let name = format!("{}:{}", options.get_host(), options.get_port());
        match probe(options, attrs).await {
            Probe::Fits => return Ok(i),
            Probe::Unfit => {
                reachable.get_or_insert(i);
                tried.push(format!("{name} is not {}", attrs.as_str()));
            }
            Probe::Unreachable(e) => tried.push(format!("{name}: {e}")),
        }
    }
    match (attrs, reachable) {
        (SessionAttrs::PreferStandby, Some(i)) => Ok(i),
        _ => Err(RuntimeError::NoDatabaseHost(format!(
            "no host is {} ({})",
            attrs.as_str(),
            tried.join("; ")
        ))),
    }
}

/// A pool on the first host of `list` that fits, kept on a fitting host
/// across failovers (see the module's invariants).
pub async fn connect(list: HostList, mut pool_options: PgPoolOptions) -> Result<PgPool> {
    let current = pick(&list.hosts, list.attrs).await?;
    let attrs = list.attrs;
    // Connections opened before the last switch are closed, not handed out:
    // `switched` is when, in nanoseconds after `base` (0: never).
    let base = Instant::now();
    let switched = Arc::new(AtomicU64::new(0));
    if list.needs_picking() {
        pool_options = pool_options
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if fits(conn, attrs).await? {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Configuration(
                            format!("the server is not {}", attrs.as_str()).into(),
                        ))
                    }
                })
            })
            .before_acquire({
                let switched = switched.clone();
                move |_, meta| {
                    let at = switched.load(Ordering::Relaxed);
                    let fresh = at == 0
                        || meta.age.as_nanos()
                            <= base.elapsed().as_nanos().saturating_sub(u128::from(at));
                    Box::pin(async move { Ok(fresh) })
                }
            });
    }
    let pool = pool_options
        .connect_with(list.hosts[current].clone())
        .await?;
    if list.needs_picking() {
        tokio::spawn(watch(pool.clone(), list, current, base, switched));
    }
    Ok(pool)
}

/// Checks the current host every [`WATCH_EVERY`]; when it no longer fits,
/// picks again and points the pool at the new host.
async fn watch(
    pool: PgPool,
    list: HostList,
    mut current: usize,
    base: Instant,
    switched: Arc<AtomicU64>,
) {
    let mut conn: Option<PgConnection> = None;
    while !pool.is_closed() {
        tokio::time::sleep(WATCH_EVERY).await;
        let ok = match conn.as_mut() {
            Some(c) => tokio::time::timeout(PICK_TIMEOUT, fits(c, list.attrs))
                .await
                .is_ok_and(|r| r.is_ok_and(|f| f)),
            None => matches!(probe(&list.hosts[current], list.attrs).await, Probe::Fits),
        };
        if ok {
            if conn.is_none() {
                conn = tokio::time::timeout(PICK_TIMEOUT, list.hosts[current].connect())
                    .await
                    .ok()
                    .and_then(|r| r.ok());
            }
            continue;
        }
        conn = None;
        match pick(&list.hosts, list.attrs).await {
            Ok(i) if i == current => {}
            Ok(i) => {
                let host = &list.hosts[i];
                tracing::warn!(
                    host = %host.get_host(),
                    port = host.get_port(),
                    "database host changed: following the failover"
                );
                pool.set_connect_options(host.clone());
                let now = u64::try_from(base.elapsed().as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1);
                switched.store(now, Ordering::Relaxed);
                current = i;
            }
            Err(e) => tracing::warn!(error = %e, "no database host fits; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &HostList) -> Vec<(String, u16)> {
        list.hosts
            .iter()
            .map(|o| (o.get_host().to_string(), o.get_port()))
            .collect()
    }

    #[test]
    fn parses_a_host_list_with_ports_and_attributes() {
        let list =
            parse("postgres://u:p%40ss@h1:5432,h2:5433,[::1]:6000,h4/db?sslmode=disable&target_session_attrs=read-write")
                .unwrap();
        assert_eq!(list.attrs, SessionAttrs::ReadWrite);
        assert_eq!(
            hosts(&list),
            vec![
                ("h1".into(), 5432),
                ("h2".into(), 5433),
                (list.hosts[2].get_host().to_string(), 6000),
                ("h4".into(), 5432)
            ]
        );
        for o in &list.hosts {
            assert_eq!(o.get_database(), Some("db"));
            assert_eq!(o.get_username(), "u");
        }
        assert!(list.hosts[2].get_host().contains("::1"));
        assert!(list.needs_picking());
    }

    #[test]
    fn a_url_without_a_host_keeps_its_host_parameter() {
        let list = parse("postgres:///db?host=/run/postgresql&target_session_attrs=any").unwrap();
        assert_eq!(list.hosts.len(), 1);
        assert_eq!(
            list.hosts[0].get_socket().map(|p| p.display().to_string()),
            Some("/run/postgresql".into())
        );
        assert!(parse("postgres://u@,h2/db").is_err());
    }

    #[test]
    fn one_host_without_attributes_needs_no_picking() {
        let list = parse("postgresql://u@h/db").unwrap();
        assert_eq!(hosts(&list), vec![("h".into(), 5432)]);
        assert!(!list.needs_picking());
        assert!(
            parse("postgres://u@h/db?target_session_attrs=any")
                .map(|l| !l.needs_picking())
                .unwrap()
        );
    }

    #[test]
    fn refuses_bad_lists_without_showing_the_password() {
        let cases = [
            "mysql://u:secret@h/db",
            "postgres://u:secret@h1,,h2/db",
            "postgres://u:secret@h1:0/db",
            "postgres://u:secret@h1:65536/db",
            "postgres://u:secret@h1:+5/db",
            "postgres://u:secret@h1:/db",
            "postgres://u:secret@[::1/db",
            "postgres://u:secret@[::1]x/db",
            "postgres://u:secret@h 1/db",
            "postgres://u:secret@h1/db?target_session_attrs=leader",
        ];
        for url in cases {
            let e = parse(url).unwrap_err();
            assert!(!e.to_string().contains("secret"), "{url}: {e}");
        }
        let many = (0..=MAX_HOSTS)
            .map(|i| format!("h{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(matches!(
            parse(&format!("postgres://u@{many}/db")),
            Err(UrlError::TooManyHosts { .. })
        ));
        assert!(matches!(
            parse("postgres://u@h:99999/db"),
            Err(UrlError::Port { .. })
        ));
    }

    #[test]
    fn session_attributes_accept_the_right_servers() {
        use SessionAttrs::*;
        // (read_only, in_recovery): a primary, a read-only primary, a standby.
        let servers = [(false, false), (true, false), (true, true)];
        let accepted = |a: SessionAttrs| servers.map(|(ro, rec)| a.accepts(ro, rec));
        assert_eq!(accepted(Any), [true, true, true]);
        assert_eq!(accepted(ReadWrite), [true, false, false]);
        assert_eq!(accepted(ReadOnly), [false, true, true]);
        assert_eq!(accepted(Primary), [true, true, false]);
        assert_eq!(accepted(Standby), [false, false, true]);
    }
}
