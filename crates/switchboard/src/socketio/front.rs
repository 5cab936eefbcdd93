//! What every `/socket.io/` request passes before socketioxide sees it.
//!
//! An Engine.IO session exists from its handshake on, before the client
//! sends Socket.IO CONNECT, and so before the token and the connection cap
//! are checked: a client that opens sessions and never connects would cost
//! memory and sockets for free. So a handshake is refused here when the
//! server is shutting down, or when its source address already has
//! `limits.socketio_pending_per_ip` sessions that have not connected. (The
//! origin is checked at CONNECT, where the client can be told why in a
//! `connect_error`.) Sessions that never connect are closed after
//! `limits.socketio_connect_timeout_secs` (socketioxide's connect timeout),
//! which frees their place.
//!
//! The place is a [`Ticket`] in the handshake's request extensions, which
//! Engine.IO keeps for the whole life of the session (`req_parts`): the
//! ticket is released at CONNECT, or when the session is dropped. The same
//! tickets count the live Engine.IO sessions, so that shutdown can wait for
//! their transports to close after their DISCONNECT.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, OriginalUri};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::TryFutureExt as _;
use futures_util::future::{Either, MapOk, Ready, ready};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where socketioxide listens (its default).
pub(super) const PATH: &str = "/socket.io";

/// Counts of not-yet-connected sessions per source address, and of live
/// sessions.
pub(crate) struct Gatekeeper {
    pending: Mutex<HashMap<IpAddr, usize>>,
    pending_per_ip: usize,
    live: AtomicUsize,
    idle: Notify,
    shutdown: CancellationToken,
    draining: CancellationToken,
}

impl Gatekeeper {
    pub(super) fn new(
        pending_per_ip: usize,
        shutdown: CancellationToken,
        draining: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Gatekeeper {
            pending: Mutex::new(HashMap::new()),
            pending_per_ip,
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown,
            draining,
        })
    }

    /// A place for a new session from `ip`, unless it has too many waiting.
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Ticket> {
        if let Some(ip) = ip {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let n = pending.entry(ip).or_insert(0);
            if *n >= self.pending_per_ip {
                return None;
            }
            *n += 1;
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        Some(Ticket(Arc::new(TicketInner {
            keeper: self.clone(),
            ip,
            pending: AtomicBool::new(true),
        })))
    }

    fn release_pending(&self, ip: IpAddr) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&ip);
            }
        }
    }

    /// Engine.IO sessions alive (connected or not).
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Resolves once no Engine.IO session is left.
    pub(super) async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A session's place, kept in its handshake's request extensions.
#[derive(Clone)]
pub(super) struct Ticket(Arc<TicketInner>);

struct TicketInner {
    keeper: Arc<Gatekeeper>,
    ip: Option<IpAddr>,
    pending: AtomicBool,
}

impl Ticket {
    /// The session connected: it no longer counts as waiting.
    pub(super) fn connected(&self) {
        if self.0.pending.swap(false, Ordering::AcqRel)
            && let Some(ip) = self.0.ip
        {
            self.0.keeper.release_pending(ip);
        }
    }
}

impl Drop for TicketInner {
    fn drop(&mut self) {
        if *self.pending.get_mut()
            && let Some(ip) = self.ip
        {
            self.keeper.release_pending(ip);
        }
        if self.keeper.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.keeper.idle.notify_waiters();
        }
    }
}

/// The service in front of socketioxide (see the module docs); it also
/// copies the request head (see [`own_head`]).
#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    keeper: Arc<Gatekeeper>,
}

impl<S> Front<S> {
    pub(super) fn new(inner: S, keeper: Arc<Gatekeeper>) -> Self {
        Front { inner, keeper }
    }
}

/// Why a handshake was refused.
#[derive(Debug, thiserror::Error)]
enum HandshakeRefused {
    #[error("too many Socket.IO sessions from this address waiting to connect")]
    TooManyPending,
    #[error("shutting down")]
    ShuttingDown,
    #[error("draining: this node takes no new sessions")]
    Draining,
}

impl HandshakeRefused {
    fn into_response(self) -> Response {
        let status = match self {
            HandshakeRefused::TooManyPending => StatusCode::TOO_MANY_REQUESTS,
            HandshakeRefused::ShuttingDown | HandshakeRefused::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

type IntoResp<R> = fn(R) -> Response;
type FrontFuture<F, R, E> = Either<MapOk<F, IntoResp<R>>, Ready<Result<Response, E>>>;

impl<S, B> tower::Service<Request<B>> for Front<S>
where
    S: tower::Service<Request<B>>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    type Future = FrontFuture<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if req.uri().path().starts_with(PATH) {
            own_head(&mut req);
            if is_handshake(req.uri())
                && let Err(refused) = self.handshake(&mut req)
            {
                tracing::debug!("socket.io handshake refused: {refused}");
                return Either::Right(ready(Ok(refused.into_response())));
            }
        }
        let into: IntoResp<S::Response> = IntoResponse::into_response;
        Either::Left(self.inner.call(req).map_ok(into))
    }
}

impl<S> Front<S> {
    fn handshake<B>(&self, req: &mut Request<B>) -> Result<(), HandshakeRefused> {
        if self.keeper.shutdown.is_cancelled() {
            return Err(HandshakeRefused::ShuttingDown);
        }
        if self.keeper.draining.is_cancelled() {
            return Err(HandshakeRefused::Draining);
        }
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical());
        let ticket = self
            .keeper
            .admit(ip)
            .ok_or(HandshakeRefused::TooManyPending)?;
        req.extensions_mut().insert(ticket);
        Ok(())
    }
}

/// A request without `sid` opens a new Engine.IO session.
fn is_handshake(uri: &Uri) -> bool {
    !uri.query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.starts_with("sid="))
}

/// Gives a Socket.IO request's URI and header values their own small
/// allocations before socketioxide sees it.
///
/// hyper parses them as slices of the connection's read buffer (8 KiB or
/// more), and Engine.IO keeps the request head for the whole life of the
/// session (`Socket::req_parts`): without the copy every idle connection
/// pins that buffer (16 KiB of heap, half of an idle connection's memory).
pub(super) fn own_head<B>(req: &mut Request<B>) {
    if let Ok(uri) = Uri::try_from(req.uri().to_string()) {
        // axum's router put a clone of the URI in the extensions, which the
        // request head keeps too.
        if req.extensions().get::<OriginalUri>().is_some() {
            req.extensions_mut().insert(OriginalUri(uri.clone()));
        }
        *req.uri_mut() = uri;
    }
    let headers = req.headers();
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // `from_bytes` copies; a name or value that came through hyper is
        // valid, so nothing is dropped in practice.
        let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes()) else {
            continue;
        };
        let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    *req.headers_mut() = owned;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_copied_intact() {
        let mut req = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header(axum::http::header::ORIGIN, "https://app.example")
            .header("x-custom", "a")
            .header("x-custom", "b")
            .body(())
            .expect("request");
        own_head(&mut req);
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(
            req.headers()[axum::http::header::ORIGIN],
            "https://app.example"
        );
        let custom: Vec<_> = req.headers().get_all("x-custom").iter().collect();
        assert_eq!(custom, ["a", "b"]);
    }

    #[test]
    fn handshakes_are_told_from_session_requests() {
        let uri = |s: &str| Uri::try_from(s).expect("uri");
        assert!(is_handshake(&uri("/socket.io/?EIO=4&transport=polling")));
        assert!(!is_handshake(&uri(
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        )));
        assert!(!is_handshake(&uri("/socket.io/?sid=abc&EIO=4")));
    }

    #[test]
    fn pending_places_are_capped_per_address_and_given_back() {
        let keeper = Gatekeeper::new(2, CancellationToken::new(), CancellationToken::new());
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let a = keeper.admit(Some(ip)).expect("first");
        let b = keeper.admit(Some(ip)).expect("second");
        assert!(keeper.admit(Some(ip)).is_none());
        let c = keeper.admit(Some(other)).expect("another address");
        a.connected();
        let d = keeper
            .admit(Some(ip))
            .expect("a connected one frees its place");
        assert_eq!(keeper.live(), 4);
        drop(b);
        let e = keeper
            .admit(Some(ip))
            .expect("a dropped one frees its place");
        // Connected sessions still count as live, not as pending.
        drop((c, d, e));
        assert_eq!(keeper.live(), 1);
        drop(a);
        assert_eq!(keeper.live(), 0);
        assert!(
            keeper
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
    }
}
