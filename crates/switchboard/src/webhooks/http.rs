//! One POST to one receiver, over a connection opened for it to an address
//! checked first (the SSRF guard).
//!
//! The client resolves the host, refuses loopback, private, link-local,
//! unique-local and unspecified addresses unless `webhooks.allow_private`
//! is set, and connects to an address it checked (so a DNS answer that
//! changes in between cannot slip through). Redirects are never followed: a
//! 3xx is a failed attempt like any other non-2xx, so a URL that redirects
//! to an internal address reaches nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{Payload, SIGNATURE_HEADER};

/// A webhook URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("{url:?} is not a URL: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Not `http` or `https`.
    #[error("{url:?}: only http:// and https:// URLs are allowed")]
    Scheme {
        /// The URL as given.
        url: String,
    },
    /// No host.
    #[error("{url:?} has no host")]
    NoHost {
        /// The URL as given.
        url: String,
    },
    /// `user:password@` in the URL: it would be sent nowhere, and logged.
    #[error("{url:?}: credentials in the URL are not supported; use webhooks.secret")]
    Credentials {
        /// The URL as given.
        url: String,
    },
}

/// A receiver's URL, checked.
#[derive(Debug, Clone)]
pub struct Endpoint {
    tls: bool,
    /// Without brackets for IPv6.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    path_and_query: String,
}

impl Endpoint {
    /// Parses and checks a `webhooks.urls` entry: `http` or `https`, a
    /// host, no credentials. Whether its address may be reached is decided
    /// at each connection, since DNS answers change.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| UrlError::Invalid {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(UrlError::Scheme {
                    url: url.to_owned(),
                });
            }
        };
        let authority = uri.authority().ok_or_else(|| UrlError::NoHost {
            url: url.to_owned(),
        })?;
        if authority.as_str().contains('@') {
            return Err(UrlError::Credentials {
                url: url.to_owned(),
            });
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(UrlError::NoHost {
                url: url.to_owned(),
            });
        }
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// The host when it is an IP address literal.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Scheme, host and port, for logs (the path may hold a token).
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority
        )
    }
}

/// Whether `ip` is an address on the public internet: not loopback,
/// private (RFC 1918), shared (RFC 6598), link-local, unique-local,
/// unspecified, multicast, broadcast, documentation or reserved. IPv4
/// addresses inside IPv6 (mapped, NAT64) are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", unspecified
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared, carrier-grade NAT
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        let [_, _, _, _, _, _, hi, lo] = s;
        return is_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0; 6] // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

/// Why an attempt failed. Every kind is retried (a receiver may come back,
/// DNS may change).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    #[error(
        "{host} resolves only to addresses that are not public ({ip}); set webhooks.allow_private to allow them"
    )]
    Refused { host: String, ip: IpAddr },
    #[error("resolving {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}: redirects are not followed (to {1:?})")]
    Redirect(u16, String),
    #[error("answered {0}")]
    Status(u16),
}

impl AttemptError {
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, AttemptError::Refused { .. })
    }
}

/// Shared by every delivery task; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Client {
    timeout: Duration,
    allow_private: bool,
    tls: TlsConnector,
}

impl Client {
    /// TLS trusts the system's root certificates.
    pub(crate) fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "webhooks: a system root certificate could not be read");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!("webhooks: no system root certificate found: https URLs will fail");
        }
        Self::with_roots(timeout, allow_private, roots)
    }

    /// A client that trusts no certificate: for when there is no URL.
    pub(crate) fn without_roots(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        Self::with_roots(timeout, allow_private, rustls::RootCertStore::empty())
    }

    fn with_roots(
        timeout: Duration,
        allow_private: bool,
        roots: rustls::RootCertStore,
    ) -> anyhow::Result<Self> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            timeout,
            allow_private,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// One attempt, all of it (DNS, connect, TLS, request, status) within
    /// `webhooks.timeout_secs`. `Ok` means a 2xx.
    pub(crate) async fn post(&self, to: &Endpoint, p: &Payload) -> Result<u16, AttemptError> {
        match tokio::time::timeout(self.timeout, self.attempt(to, p)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Timeout(self.timeout)),
        }
    }

    async fn attempt(&self, to: &Endpoint, p: &Payload) -> Result<u16, AttemptError> {
        let tcp = self.connect(to).await?;
        if to.tls {
            let name = ServerName::try_from(to.host.clone()).map_err(|e| {
                AttemptError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(AttemptError::Tls)?;
            exchange(tls, to, p).await
        } else {
            exchange(tcp, to, p).await
        }
    }

    /// Connects to the first address that is allowed and answers.
    async fn connect(&self, to: &Endpoint) -> Result<TcpStream, AttemptError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((to.host.as_str(), to.port))
            .await
            .map_err(|e| AttemptError::Resolve {
                host: to.host.clone(),
                reason: e.to_string(),
            })?
            .collect();
        let mut refused = None;
        let mut last = None;
        for addr in addrs {
            if !self.allow_private && !is_public(addr.ip()) {
                refused.get_or_insert(addr.ip());
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        match (last, refused) {
            (Some(e), _) => Err(AttemptError::Connect(e)),
            (None, Some(ip)) => Err(AttemptError::Refused {
                host: to.host.clone(),
                ip,
            }),
            (None, None) => Err(AttemptError::Resolve {
                host: to.host.clone(),
                reason: "no address".to_owned(),
            }),
        }
    }
}

/// Sends the request over `io` and reads the status; the connection is
/// not reused (events are rare, and a fresh one never meets a stale peer).
async fn exchange<S>(io: S, to: &Endpoint, p: &Payload) -> Result<u16, AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let request = Request::post(to.path_and_query.as_str())
        .header(HOST, to.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("switchboard/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .header(SIGNATURE_HEADER, p.signature.as_str())
        .body(p.body.clone())
        .unwrap_or_else(|e| unreachable!("a checked URL and fixed headers make a request: {e}"));
    let send = sender.send_request(request);
    tokio::pin!(send);
    let response = tokio::select! {
        r = &mut send => r?,
        // The connection may finish first (`Connection: close`): the answer,
        // if there was one, is already waiting.
        r = conn => {
            r?;
            send.await?
        }
    };
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else if status.is_redirection() {
        let to = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        Err(AttemptError::Redirect(status.as_u16(), to))
    } else {
        Err(AttemptError::Status(status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().expect("an address"))
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!public(ip), "{ip} must not count as public");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked() {
        let e = Endpoint::parse("https://hooks.example.com/in?k=1").expect("valid");
        assert!(e.tls);
        assert_eq!(e.port, 443);
        assert_eq!(e.path_and_query, "/in?k=1");
        assert_eq!(e.origin(), "https://hooks.example.com");
        let e = Endpoint::parse("http://[::1]:8080").expect("valid");
        assert_eq!(e.host, "::1");
        assert_eq!(e.literal_ip(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(e.path_and_query, "/");
        assert_eq!(e.authority, "[::1]:8080");
        assert!(matches!(
            Endpoint::parse("ftp://example.com/"),
            Err(UrlError::Scheme { .. })
        ));
        assert!(matches!(
            Endpoint::parse("example.com/hook"),
            Err(UrlError::Scheme { .. } | UrlError::Invalid { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://user:pw@example.com/"),
            Err(UrlError::Credentials { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http:// bad"),
            Err(UrlError::Invalid { .. })
        ));
    }
}
