//! One TLS port for HTTPS/WSS and TURN over TLS (PROTOCOL.md §8): when
//! `turn.tls_listen` is `http.tls_listen`, one listener accepts, does the
//! TLS handshake and then decides whose connection it is.
//!
//! ALPN decides first, without reading a byte: `stun.turn` or
//! `stun.nat-discovery` (RFC 7443) is TURN, `http/1.1` or `h2` is HTTP.
//! A client that offers none of them is told none (as on the HTTPS
//! listener, which offers no ALPN) and its first decrypted bytes decide: a
//! STUN message is TURN, anything else is served by the HTTP router, which
//! answers garbage with 400. The bytes read to decide are replayed in front
//! of the stream, so neither side loses any.
//!
//! A TURN client's first message on a new connection is always a STUN
//! request (ChannelData needs a channel, which needs an allocation on this
//! very connection), and a STUN message starts with two zero bits where an
//! HTTP request starts with a letter (ChannelData's `01` would collide with
//! ASCII capitals, so it is not looked for). The magic cookie at bytes 4..8
//! confirms it, so that a stray control byte is not mistaken for STUN.
//!
//! Until it is decided the connection holds an HTTP admission slot and is
//! bounded by the HTTPS listener's timeouts: the handshake within
//! `http.tls_handshake_timeout_secs` of accept, the first bytes within
//! `http.header_timeout_secs` after it. A TURN connection then gives its
//! HTTP slot back and counts against TURN's caps.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::Config;
use crate::serve::{Listener, Tracked};
use crate::turn::TlsHandoff;

/// The STUN magic cookie (RFC 8489 §5), bytes 4..8 of every message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Bytes needed to tell STUN: the header up to and with the cookie.
const STUN_PREFIX: usize = 8;
/// The first read after the handshake takes at most this; an HTTP request
/// head is decided by its first byte, a STUN one by its first eight.
const PEEK: usize = 64;

/// ALPN protocol ids of RFC 7443 (TURN and STUN over TLS).
const ALPN_TURN: &[u8] = b"stun.turn";
const ALPN_STUN: &[u8] = b"stun.nat-discovery";
const ALPN_HTTP1: &[u8] = b"http/1.1";
const ALPN_H2: &[u8] = b"h2";

/// The certificate in use, asked for at every handshake so that a reloaded
/// one (SIGHUP) is used by the next connection.
pub type TlsConfigSource = Arc<dyn Fn() -> Arc<ServerConfig> + Send + Sync>;

/// Whether `cfg` asks for one TLS port: the same address, port included,
/// for `http.tls_listen` and `turn.tls_listen` with TURN on. Port 0 means
/// "any free port" for each, so two port-0 addresses stay two listeners.
pub fn shares_port(cfg: &Config) -> bool {
    cfg.turn.enabled
        && cfg.http.tls_listen == cfg.turn.tls_listen
        && cfg.http.tls_listen.port() != 0
}

/// Whom a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// STUN/TURN over TLS.
    Turn,
    /// HTTPS and WSS.
    Http,
}

/// The route the client's ALPN offer asks for, `None` when it offers
/// neither (or nothing): then the first bytes decide. TURN wins a mixed
/// offer, as no HTTP client offers a STUN protocol by accident.
pub fn route_by_alpn<'a>(offered: impl IntoIterator<Item = &'a [u8]>) -> Option<Route> {
    let mut route = None;
    for proto in offered {
        if proto == ALPN_TURN || proto == ALPN_STUN {
            return Some(Route::Turn);
        }
        if proto == ALPN_HTTP1 || proto == ALPN_H2 {
            route = Some(Route::Http);
        }
    }
    route
}

/// The route the first decrypted bytes ask for, `None` while too few
/// have arrived to tell.
pub fn classify(first: &[u8]) -> Option<Route> {
    let &byte = first.first()?;
    if byte & 0xC0 != 0 {
        return Some(Route::Http);
    }
    if first.len() < STUN_PREFIX {
        return None;
    }
    Some(if first[4..STUN_PREFIX] == MAGIC_COOKIE {
        Route::Turn
    } else {
        Route::Http
    })
}

/// Why a connection ended before it was handed over.
#[derive(Debug, thiserror::Error)]
enum Undecided {
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("nothing sent after the handshake in time")]
    Silent,
    #[error("closed before its first bytes told what it is")]
    Closed,
    #[error("reading its first bytes: {0}")]
    Read(io::Error),
}

/// The configs handed to handshakes: the source's, and copies of it that
/// confirm the ALPN protocol the connection is routed by. Remade only when
/// the source gives another config (a reload).
struct AlpnConfigs {
    source: TlsConfigSource,
    cache: Mutex<Option<Variants>>,
}

#[derive(Clone)]
struct Variants {
    /// The source's own config: no ALPN, as on the HTTPS listener.
    plain: Arc<ServerConfig>,
    turn: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl AlpnConfigs {
    fn new(source: TlsConfigSource) -> Self {
        Self {
            source,
            cache: Mutex::new(None),
        }
    }

    fn current(&self) -> Variants {
        let plain = (self.source)();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.as_ref()
            && Arc::ptr_eq(&v.plain, &plain)
        {
            return v.clone();
        }
        let with = |protocols: &[&[u8]]| {
            let mut c = (*plain).clone();
            c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        };
        let v = Variants {
            // Server preference order: the client's offer holds at least one.
            turn: with(&[ALPN_TURN, ALPN_STUN]),
            // Never h2: hyper serves HTTP/1.1 only here (see serve.rs), and
            // every HTTP/2 client offers http/1.1 too.
            http: with(&[ALPN_HTTP1]),
            plain,
        };
        *cache = Some(v.clone());
        v
    }
}

/// The one TLS port: HTTPS/WSS through `http`'s router, caps and timeouts,
/// TURN over TLS through `turn`.
pub struct OnePort {
    http: Listener,
    tls: AlpnConfigs,
    turn: Option<TlsHandoff>,
}

impl OnePort {
    /// `turn` is `None` only when TURN is off, and then every connection
    /// is HTTP's.
    pub fn new(http: Listener, tls: TlsConfigSource, turn: Option<TlsHandoff>) -> Self {
        Self {
            http,
            tls: AlpnConfigs::new(tls),
            turn,
        }
    }

    /// Serves `listener` until the HTTP listener's `stop`.
    pub async fn serve(self, listener: TcpListener) {
        let this = Arc::new(self);
        while let Some((stream, remote)) = this.http.accept(&listener).await {
            let accepted_at = Instant::now();
            let slot = match this.http.admission.admit(remote.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    crate::serve::refused(why, remote);
                    continue;
                }
            };
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let io = Tracked::new(stream, slot);
            let conn = this.clone();
            this.http.tasks.spawn(async move {
                if let Err(e) = conn.connection(io, remote, local, accepted_at).await {
                    match e {
                        Undecided::HandshakeTimeout => {
                            metrics::counter!("switchboard_http_timeouts_total", "phase" => "tls_handshake").increment(1);
                        }
                        Undecided::Silent => {
                            metrics::counter!("switchboard_http_timeouts_total", "phase" => "header").increment(1);
                        }
                        _ => {}
                    }
                    tracing::debug!(%remote, "one TLS port: {e}");
                }
            });
        }
    }

    async fn connection(
        &self,
        io: Tracked<tokio::net::TcpStream>,
        remote: SocketAddr,
        local: SocketAddr,
        accepted_at: Instant,
    ) -> Result<(), Undecided> {
        let activity = io.activity.clone();
        let limits = self.http.limits;
        let handshake = async {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
                .await
                .map_err(Undecided::Handshake)?;
            let hello = start.client_hello();
            let by_alpn = hello.alpn().and_then(route_by_alpn);
            let offers_http1 = hello.alpn().is_some_and(|mut a| a.any(|p| p == ALPN_HTTP1));
            let configs = self.tls.current();
            // Only what the client offered is confirmed: an `h2`-only client
            // gets no ALPN (as on the HTTPS listener), not a refusal.
            let config = match by_alpn {
                Some(Route::Turn) if self.turn.is_some() => configs.turn,
                Some(Route::Http) if offers_http1 => configs.http,
                _ => configs.plain,
            };
            let tls = start
                .into_stream(config)
                .await
                .map_err(Undecided::Handshake)?;
            Ok::<_, Undecided>((tls, by_alpn))
        };
        let handshake_until = accepted_at + limits.tls_handshake_timeout;
        let (mut tls, by_alpn) = tokio::select! {
            r = tokio::time::timeout_at(handshake_until.into(), handshake) => {
                r.map_err(|_| Undecided::HandshakeTimeout)??
            }
            () = self.http.stop.cancelled() => return Ok(()),
        };
        let (route, first) = match by_alpn {
            Some(route) => (route, Vec::new()),
            None => {
                let peek = tokio::time::timeout(limits.header_timeout, first_bytes(&mut tls));
                tokio::select! {
                    r = peek => r.map_err(|_| Undecided::Silent)??,
                    () = self.http.stop.cancelled() => return Ok(()),
                }
            }
        };
        match (route, &self.turn) {
            (Route::Turn, Some(turn)) => {
                tls.get_mut().0.release_slot();
                turn.serve(Replay::new(first, tls), remote, local, accepted_at)
                    .await;
            }
            // TURN off: nobody here speaks STUN, and HTTP answers it 400.
            _ => {
                self.http
                    .clone()
                    .serve_connection(Replay::new(first, tls), activity, remote, Some(local))
                    .await;
            }
        }
        Ok(())
    }
}

/// Reads until [`classify`] decides, and returns what it read.
async fn first_bytes<S: AsyncRead + Unpin>(s: &mut S) -> Result<(Route, Vec<u8>), Undecided> {
    let mut buf = [0u8; PEEK];
    let mut filled = 0;
    // At most PEEK reads: each adds a byte or ends the loop.
    while filled < buf.len() {
        let n = s.read(&mut buf[filled..]).await.map_err(Undecided::Read)?;
        if n == 0 {
            return Err(Undecided::Closed);
        }
        filled += n;
        if let Some(route) = classify(&buf[..filled]) {
            return Ok((route, buf[..filled].to_vec()));
        }
    }
    // Unreachable: eight bytes always decide.
    Ok((Route::Http, buf.to_vec()))
}

/// A stream that first gives back `prefix` (bytes already read from
/// `inner`), then reads `inner`. Writes pass straight through.
pub struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// `prefix` is read first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(dst.remaining());
            dst.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, dst)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Errors of [`check_config`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OnePortConfigError {
    /// The same address for both, and no certificate to serve it with.
    #[error(
        "http.tls_listen and turn.tls_listen are both {0}: one TLS port for HTTPS and TURN needs \
         a certificate (tls.cert and tls.key, or tls.self_signed)"
    )]
    NoCertificate(SocketAddr),
    /// The same port on overlapping addresses, which cannot both bind.
    #[error(
        "http.tls_listen {http} and turn.tls_listen {turn} overlap: to share one TLS port, set \
         both to the same address"
    )]
    Overlap {
        /// `http.tls_listen`.
        http: SocketAddr,
        /// `turn.tls_listen`.
        turn: SocketAddr,
    },
}

/// Refuses a shared TLS port without a certificate, and two TLS addresses
/// on one port that would collide at bind.
pub fn check_config(cfg: &Config) -> Result<(), OnePortConfigError> {
    let (http, turn) = (cfg.http.tls_listen, cfg.turn.tls_listen);
    if !cfg.turn.enabled || http.port() == 0 || http.port() != turn.port() {
        return Ok(());
    }
    if http == turn {
        return if cfg.tls.enabled() {
            Ok(())
        } else {
            Err(OnePortConfigError::NoCertificate(http))
        };
    }
    let wildcard_covers =
        |a: IpAddr, b: IpAddr| a.is_unspecified() && (a.is_ipv4() == b.is_ipv4() || a.is_ipv6());
    if cfg.tls.enabled()
        && (wildcard_covers(http.ip(), turn.ip()) || wildcard_covers(turn.ip(), http.ip()))
    {
        return Err(OnePortConfigError::Overlap { http, turn });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn stun_by_its_zero_bits_and_cookie_anything_else_is_http() {
        let binding = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3];
        assert_eq!(classify(&binding), Some(Route::Turn));
        assert_eq!(classify(&binding[..7]), None, "the cookie is not in yet");
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Route::Http));
        assert_eq!(classify(b"P"), Some(Route::Http));
        // A control byte without the cookie: not STUN.
        assert_eq!(classify(b"\r\nGET / H"), Some(Route::Http));
        assert_eq!(classify(&[0xFF; 8]), Some(Route::Http));
    }

    #[test]
    fn alpn_routes_turn_first_and_unknown_offers_to_the_bytes() {
        let r = |offer: &[&[u8]]| route_by_alpn(offer.iter().copied());
        assert_eq!(r(&[b"stun.turn"]), Some(Route::Turn));
        assert_eq!(r(&[b"h2", b"stun.nat-discovery"]), Some(Route::Turn));
        assert_eq!(r(&[b"h2", b"http/1.1"]), Some(Route::Http));
        assert_eq!(r(&[b"acme-tls/1"]), None);
        assert_eq!(r(&[]), None);
    }

    #[tokio::test]
    async fn replay_gives_the_prefix_then_the_stream_and_writes_through() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut s = Replay::new(b"hello ".to_vec(), server);
        client.write_all(b"world").await.expect("write");
        drop(client.shutdown().await);
        let mut small = [0u8; 4];
        let n = s.read(&mut small).await.expect("read");
        assert_eq!(&small[..n], b"hell");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"o world");
        assert!(s.prefix.is_empty(), "a drained prefix is freed");
    }

    #[test]
    fn one_port_needs_a_certificate_and_overlaps_are_refused() {
        let mut cfg = Config::default();
        check_config(&cfg).expect("the defaults differ");
        let addr: SocketAddr = "0.0.0.0:443".parse().expect("addr");
        cfg.http.tls_listen = addr;
        cfg.turn.tls_listen = addr;
        assert_eq!(
            check_config(&cfg),
            Err(OnePortConfigError::NoCertificate(addr))
        );
        cfg.tls.self_signed = true;
        check_config(&cfg).expect("with a certificate");
        assert!(shares_port(&cfg));
        cfg.turn.tls_listen = "127.0.0.1:443".parse().expect("addr");
        assert!(matches!(
            check_config(&cfg),
            Err(OnePortConfigError::Overlap { .. })
        ));
        cfg.turn.tls_listen = "127.0.0.1:0".parse().expect("addr");
        cfg.http.tls_listen = "127.0.0.1:0".parse().expect("addr");
        check_config(&cfg).expect("port 0 is two free ports");
        assert!(!shares_port(&cfg));
    }
}
