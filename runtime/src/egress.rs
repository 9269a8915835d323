//! Requests to URLs that did not come from an admin: job webhooks (the
//! caller's) and output files of async media tasks (the provider's, e.g.
//! Replicate and Runway images fetched for `b64_json`). Neither a caller nor
//! an upstream may make aigw call the services next to it (cloud metadata
//! endpoints, internal admin APIs, the database).
//!
//! Invariants, for every request made through [`Egress`]: public addresses
//! only (literal hosts checked before the call, names when they are
//! resolved, right before connecting), unless the operator allows private
//! ones (`AIGW_EGRESS_ALLOW_PRIVATE`); no redirect followed; no proxy (it
//! would connect on aigw's behalf, unchecked); downloads bounded in size and
//! time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Whether `ip` is a public unicast address. Refused: loopback, private,
/// link-local, shared (carrier-grade NAT), "this network", unspecified,
/// multicast, broadcast, documentation, benchmarking and reserved IPv4
/// ranges; IPv6 loopback, unspecified, multicast, unique-local, link-local,
/// site-local and documentation ranges; and IPv4 addresses carried in IPv6
/// (mapped, compatible, NAT64) are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 192 && b == 0 && c == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) addresses.
    if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) || s[..6] == [0; 6] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return !ip.is_loopback() && !ip.is_unspecified() && is_public_v4(v4);
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2001 && s[1] == 0x0db8))
}

/// Why a URL host is refused before any lookup, if it is: an IP address
/// that is not public, or `localhost` (and its subdomains). Names are
/// checked again when they are resolved, right before connecting.
pub fn refused_host(host: &str) -> Option<String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return (!is_public(ip)).then(|| format!("{ip} is not a public address"));
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| format!("{host} is a local name"))
}

/// Why a URL may not be called (unless private addresses are allowed): it
/// does not parse, is not http(s), or its host is a literal address that is
/// not public or a local name. Literal addresses never reach the resolver,
/// so this is checked before every call.
pub fn refused_url(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(_) => Some("not a valid URL".into()),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("{} is not http or https", u.scheme()))
        }
        Ok(u) => u.host_str().and_then(refused_host),
    }
}

/// A refused or failed egress request.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("not a valid http or https URL")]
    InvalidUrl,
    #[error("refused: {0} (AIGW_EGRESS_ALLOW_PRIVATE is off)")]
    Refused(String),
    #[error("{0}")]
    Transport(reqwest::Error),
    /// A 3xx is one too: redirects are not followed.
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

impl From<reqwest::Error> for EgressError {
    fn from(e: reqwest::Error) -> Self {
        if refused_by_resolver(&e) {
            EgressError::Refused("the host resolves to no public address".into())
        } else {
            EgressError::Transport(e)
        }
    }
}

/// Whether a failed request was refused by the public-only resolver (a name
/// that resolves to private addresses only).
pub fn refused_by_resolver(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<NoPublicAddress>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// How long a webhook delivery waits after failed attempt `attempt` (1, 2,
/// ...): `base` doubled each time, at most 10 minutes. Job webhooks and
/// budget alerts retry on this one schedule.
pub fn webhook_backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(Duration::from_secs(600))
}

/// A failed request in words, without the URL (it may carry credentials).
pub fn transport_error(e: &reqwest::Error) -> String {
    // The public-only resolver's refusal says why, without the addresses.
    if refused_by_resolver(e) {
        return EgressError::Refused("the host resolves to no public address".into()).to_string();
    }
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

/// The HTTP client of every request to a URL that did not come from an
/// admin. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Egress {
    client: reqwest::Client,
    allow_private: bool,
}

impl Egress {
    /// `allow_private` lets requests reach private addresses (webhooks
    /// inside the operator's network, tests' local mocks).
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aigw/", env!("CARGO_PKG_VERSION")));
        let client = if allow_private {
            builder.build()?
        } else {
            builder
                .no_proxy()
                .dns_resolver(Arc::new(PublicOnly))
                .build()?
        };
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// A request to `url`, unless it is refused: not http(s), or (unless
    /// private addresses are allowed) a literal host that is not public.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, EgressError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| EgressError::InvalidUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::InvalidUrl);
        }
        if !self.allow_private
            && let Some(why) = parsed.host_str().and_then(refused_host)
        {
            return Err(EgressError::Refused(why));
        }
        Ok(self.client.request(method, parsed))
    }

    /// GETs `url` (no credential: it is not the provider's API) within
    /// `timeout`, reading at most `max_bytes` of a 2xx answer.
    pub async fn fetch(
        &self,
        url: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Bytes, EgressError> {
        let read = async {
            let mut response = self.request(reqwest::Method::GET, url)?.send().await?;
            if !response.status().is_success() {
                return Err(EgressError::Status(response.status().as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|l| l > max_bytes as u64)
            {
                return Err(EgressError::TooLarge(max_bytes));
            }
            let mut out = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if out.len() + chunk.len() > max_bytes {
                    return Err(EgressError::TooLarge(max_bytes));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(out))
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => result,
            Err(_) => Err(EgressError::Timeout(timeout)),
        }
    }
}

/// Resolves names to their public addresses only.
struct PublicOnly;

/// The public-only resolver's refusal.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no public address")]
struct NoPublicAddress(String);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            if let Some(why) = refused_host(&host) {
                return Err(why.into());
            }
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(NoPublicAddress(host)) as Box<_>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(ip: &str) -> bool {
        is_public(ip.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::10.0.0.1",
        ] {
            assert!(!public(ip), "{ip} passed as public");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(public(ip), "{ip} refused");
        }
    }

    #[test]
    fn literal_and_local_hosts_are_refused_before_any_lookup() {
        assert!(refused_host("127.0.0.1").is_some());
        assert!(refused_host("[::1]").is_some());
        assert!(refused_host("LOCALHOST").is_some());
        assert!(refused_host("api.localhost.").is_some());
        assert!(refused_host("example.com").is_none());
        assert!(refused_host("8.8.8.8").is_none());
        assert!(refused_host("[2606:4700:4700::1111]").is_none());
    }

    /// A local listener that counts the connections it accepts.
    async fn counting_listener() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        (format!("http://{addr}"), accepted)
    }

    #[tokio::test]
    async fn private_addresses_are_never_connected_to() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let egress = Egress::new(false).unwrap();
        let (base, accepted) = counting_listener().await;
        let port = base.rsplit(':').next().unwrap();
        for url in [
            format!("{base}/out.png"),
            format!("http://localhost:{port}/out.png"),
            format!("http://[::ffff:127.0.0.1]:{port}/out.png"),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ] {
            let err = egress
                .fetch(&url, 1024, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(err, EgressError::Refused(_)), "{url}: {err:?}");
            assert!(
                egress.request(reqwest::Method::POST, &url).is_err(),
                "{url}"
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        for url in ["file:///etc/passwd", "not a url"] {
            for egress in [&egress, &Egress::new(true).unwrap()] {
                let err = egress.request(reqwest::Method::GET, url).unwrap_err();
                assert!(matches!(err, EgressError::InvalidUrl), "{url}: {err:?}");
            }
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_downloads_are_bounded() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = MockServer::start().await;
        Mock::given(path("/moved"))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("location", format!("{}/target", server.uri())),
            )
            .mount(&server)
            .await;
        Mock::given(path("/target"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![1u8; 10]))
            .expect(0)
            .named("redirect target")
            .mount(&server)
            .await;
        Mock::given(path("/big"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![7u8; 4096]))
            .mount(&server)
            .await;
        Mock::given(path("/small"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![7u8; 100]))
            .mount(&server)
            .await;
        // Private addresses allowed (the mock is local); redirects still not.
        let egress = Egress::new(true).unwrap();
        let limit = Duration::from_secs(10);
        let err = egress
            .fetch(&format!("{}/moved", server.uri()), 1024, limit)
            .await
            .unwrap_err();
        assert!(matches!(err, EgressError::Status(302)), "{err:?}");
        let err = egress
            .fetch(&format!("{}/big", server.uri()), 1024, limit)
            .await
            .unwrap_err();
        assert!(matches!(err, EgressError::TooLarge(1024)), "{err:?}");
        let small = egress
            .fetch(&format!("{}/small", server.uri()), 1024, limit)
            .await
            .unwrap();
        assert_eq!(small.len(), 100);
        // A public-only client does not follow a redirect to a private
        // address either (it refuses the first hop already).
        let err = Egress::new(false)
            .unwrap()
            .fetch(&format!("{}/moved", server.uri()), 1024, limit)
            .await
            .unwrap_err();
        assert!(matches!(err, EgressError::Refused(_)), "{err:?}");
    }
}
