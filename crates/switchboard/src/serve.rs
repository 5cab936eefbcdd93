//! The HTTP listeners' accept loops: admission (a cap on connections and
//! one per source address, checked before any byte is parsed), the TLS
//! handshake deadline, and hyper with a timer so that its header-read
//! timeout runs, plus an idle watchdog for stalled transfers.
//!
//! HTTP/1.1 only: browsers speak it to a server without an `h2` ALPN (ours
//! offers none; the one TLS port of `one_port.rs` confirms `http/1.1` at
//! most) and never use cleartext HTTP/2, and HTTP/2's many streams per
//! connection would need limits of their own.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// The timeouts and caps of the HTTP listeners, from `[http]` and `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// `http.header_timeout_secs`: a request's head must arrive within
    /// this; hyper also runs it while a kept-alive connection waits for its
    /// next request.
    pub header_timeout: Duration,
    /// `http.idle_timeout_secs`: a connection hyper still serves that moves
    /// no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// `http.tls_handshake_timeout_secs`.
    pub tls_handshake_timeout: Duration,
    /// `limits.max_http_connections`, 0 = no cap.
    pub max_connections: usize,
    /// `limits.max_connections_per_ip`, 0 = no cap.
    pub max_per_ip: u32,
    /// `http.tcp_nodelay`.
    pub nodelay: bool,
}

impl HttpLimits {
    /// From the configuration; zero durations are raised to the smallest
    /// useful value rather than meaning "off".
    pub fn from_config(cfg: &Config) -> Self {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Self {
            header_timeout: secs(cfg.http.header_timeout_secs),
            idle_timeout: secs(cfg.http.idle_timeout_secs),
            tls_handshake_timeout: secs(cfg.http.tls_handshake_timeout_secs),
            max_connections: cfg.limits.max_http_connections,
            max_per_ip: u32::try_from(cfg.limits.max_connections_per_ip).unwrap_or(u32::MAX),
            nodelay: cfg.http.tcp_nodelay,
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `limits.max_http_connections` are open.
    #[error("too many connections")]
    Total,
    /// `limits.max_connections_per_ip` are open from this source.
    #[error("too many connections from this address")]
    PerSource,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerSource => "per_ip",
        }
    }
}

/// Whose connections count together: an IPv4 address, or an IPv6 /64,
/// since one subscriber usually holds a whole /64 and could otherwise
/// take any number of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(a) => Self::V4(a.into()),
            IpAddr::V6(a) => Self::V6((u128::from(a) >> 64) as u64),
        }
    }
}

/// Counts open connections, in all and per source, for every HTTP
/// listener together.
pub struct Admission {
    total: Arc<Semaphore>,
    per_source: Mutex<HashMap<Source, u32>>,
    max_per_source: u32,
}

impl Admission {
    /// Caps of `limits`; 0 means no cap.
    pub fn new(limits: &HttpLimits) -> Arc<Self> {
        let total = match limits.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n.min(Semaphore::MAX_PERMITS),
        };
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total)),
            per_source: Mutex::new(HashMap::new()),
            max_per_source: limits.max_per_ip,
        })
    }

    /// A slot for a connection from `ip`, held until its socket closes.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        let source = if self.max_per_source == 0 {
            None
        } else {
            let source = Source::of(ip);
            let mut map = self.sources();
            let n = map.entry(source).or_insert(0);
            if *n >= self.max_per_source {
                return Err(Refused::PerSource);
            }
            *n += 1;
            Some(source)
        };
        Ok(Slot {
            admission: self.clone(),
            source,
            _permit: permit,
        })
    }

    /// Connections open from `ip`'s source (for tests and metrics).
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.sources().get(&Source::of(ip)).copied().unwrap_or(0)
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<Source, u32>> {
        self.per_source.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One admitted connection; gives its slot back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    source: Option<Source>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(source) = self.source else { return };
        let mut map = self.admission.sources();
        if let Some(n) = map.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&source);
            }
        }
    }
}

/// A socket that holds its admission slot for as long as it lives (an
/// upgraded WebSocket keeps it too, so it still counts) and counts the
/// reads and writes that moved bytes, for the idle watchdog.
pub(crate) struct Tracked<T> {
    inner: T,
    pub(crate) activity: Arc<AtomicU32>,
    slot: Option<Slot>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(inner: T, slot: Slot) -> Self {
        Self {
            inner,
            activity: Arc::new(AtomicU32::new(0)),
            slot: Some(slot),
        }
    }

    /// Gives the HTTP slot back early: the one TLS port hands a TURN
    /// connection over to the TURN service, whose own caps count it then.
    pub(crate) fn release_slot(&mut self) {
        self.slot = None;
    }

    fn bump(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.bump();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.bump();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.bump();
        }
        r
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

/// The local address of a request's connection (the address its client
/// reached), beside axum's `ConnectInfo` (the client's).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// What every connection of one listener shares.
#[derive(Clone)]
pub struct Listener {
    /// The application.
    pub router: Router,
    /// Caps, shared by the plain and the TLS listener.
    pub admission: Arc<Admission>,
    /// Timeouts.
    pub limits: HttpLimits,
    /// Connection tasks, so that shutdown waits for them.
    pub tasks: TaskTracker,
    /// Stops accepting, and asks open connections to finish.
    pub stop: CancellationToken,
}

impl Listener {
    /// Serves plain HTTP on `listener` until `stop`.
    pub async fn serve_plain(self, listener: TcpListener) {
        while let Some((stream, remote)) = self.accept(&listener).await {
            match self.admission.admit(remote.ip()) {
                Ok(slot) => {
                    let local = stream.local_addr().ok();
                    let io = Tracked::new(stream, slot);
                    let activity = io.activity.clone();
                    self.tasks
                        .spawn(self.clone().serve_connection(io, activity, remote, local));
                }
                Err(why) => {
                    refused(why, remote);
                    // Best effort and never blocking: the socket is new, its
                    // send buffer empty.
                    let _ = stream.try_write(refusal_response(why));
                }
            }
        }
    }

    /// Serves HTTPS on `listener` until `stop`.
    pub async fn serve_tls(self, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
        let acceptor = TlsAcceptor::from(tls);
        while let Some((stream, remote)) = self.accept(&listener).await {
            let slot = match self.admission.admit(remote.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    refused(why, remote);
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let this = self.clone();
            let local = stream.local_addr().ok();
            self.tasks.spawn(async move {
                let io = Tracked::new(stream, slot);
                let activity = io.activity.clone();
                let handshake = tokio::time::timeout(
                    this.limits.tls_handshake_timeout,
                    acceptor.accept(io),
                );
                let tls = tokio::select! {
                    r = handshake => match r {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            metrics::counter!("switchboard_http_timeouts_total", "phase" => "tls_handshake").increment(1);
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    },
                    () = this.stop.cancelled() => return,
                };
                this.serve_connection(tls, activity, remote, local).await;
            });
        }
    }

    /// The next connection, or `None` once stopped. Errors of one
    /// connection are skipped; running out of descriptors backs off
    /// briefly instead of spinning.
    pub(crate) async fn accept(&self, listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let r = tokio::select! {
                r = listener.accept() => r,
                () = self.stop.cancelled() => return None,
            };
            match r {
                Ok(pair) => {
                    // Signaling frames are small and latency-bound: without
                    // this, Nagle holds a frame back until the client's
                    // delayed ACK (40 ms on Linux, up to 200 ms elsewhere),
                    // which the soak run saw as a 36 ms delivery p99.
                    if self.limits.nodelay {
                        let _ = pair.0.set_nodelay(true);
                    }
                    return Some(pair);
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    tracing::warn!("accept: {e}; retrying in 100 ms");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = self.stop.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// One HTTP/1.1 connection, with upgrades, until it closes, upgrades,
    /// stalls or the server stops.
    pub(crate) async fn serve_connection<I>(
        self,
        io: I,
        activity: Arc<AtomicU32>,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            if let Some(local) = local {
                req.extensions_mut().insert(LocalAddr(local));
            }
            tower::Service::call(&mut router.clone(), req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        // Half the idle time per check, two quiet checks in a row: closed
        // after between 1 and 1.5 times the idle timeout without a byte.
        let period = self.limits.idle_timeout / 2;
        let mut seen = activity.load(Ordering::Relaxed);
        let mut quiet = 0;
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        if e.is_timeout() {
                            metrics::counter!("switchboard_http_timeouts_total", "phase" => "header").increment(1);
                        }
                        tracing::debug!(%remote, "http connection: {e}");
                    }
                    return;
                }
                () = tokio::time::sleep(period) => {
                    let now = activity.load(Ordering::Relaxed);
                    if now == seen {
                        quiet += 1;
                        if quiet >= 2 {
                            metrics::counter!("switchboard_http_timeouts_total", "phase" => "idle").increment(1);
                            tracing::debug!(%remote, "http connection idle: closed");
                            return;
                        }
                    } else {
                        seen = now;
                        quiet = 0;
                    }
                }
                () = self.stop.cancelled(), if !stopping => {
                    // Finishes the request in flight, then closes.
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

pub(crate) fn refused(why: Refused, remote: SocketAddr) {
    metrics::counter!("switchboard_http_connections_refused_total", "reason" => why.label())
        .increment(1);
    tracing::debug!(%remote, "connection refused at accept: {why}");
}

fn refusal_response(why: Refused) -> &'static [u8] {
    match why {
        Refused::Total => {
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n"
        }
        Refused::PerSource => {
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 39\r\n\r\ntoo many connections from this address\n"
        }
    }
}

/// Errors that concern one incoming connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: u32) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(1),
            max_connections: total,
            max_per_ip: per_ip,
            nodelay: true,
        }
    }

    #[test]
    fn caps_in_all_and_per_source() {
        let a = Admission::new(&limits(3, 2));
        let ip1: IpAddr = "192.0.2.1".parse().expect("ip");
        let ip2: IpAddr = "192.0.2.2".parse().expect("ip");
        let s1 = a.admit(ip1).expect("first");
        let _s2 = a.admit(ip1).expect("second");
        assert_eq!(a.admit(ip1).err(), Some(Refused::PerSource));
        let _s3 = a.admit(ip2).expect("another source");
        assert_eq!(a.admit(ip2).err(), Some(Refused::Total));
        drop(s1);
        assert_eq!(a.open_from(ip1), 1);
        let _s4 = a.admit(ip1).expect("a slot came back");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_v4_is_v4() {
        let a = Admission::new(&limits(0, 1));
        let _s = a.admit("2001:db8::1".parse().expect("ip")).expect("first");
        assert_eq!(
            a.admit("2001:db8::ffff:1".parse().expect("ip")).err(),
            Some(Refused::PerSource)
        );
        assert!(a.admit("2001:db8:0:1::1".parse().expect("ip")).is_ok());
        let _v4 = a.admit("192.0.2.9".parse().expect("ip")).expect("v4");
        assert_eq!(
            a.admit("::ffff:192.0.2.9".parse().expect("ip")).err(),
            Some(Refused::PerSource)
        );
    }
}
