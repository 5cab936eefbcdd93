//! The native signaling face: `GET /ws`, JSON over WebSocket
//! (PROTOCOL.md §1). Moves frames between the socket and the hub; all the
//! protocol lives in the core.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use switchboard_signal::{ClassicEvent, ConnId, Disconnect, Face, OutFrame};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::hub::{ConnSink, QueueFull};
use crate::ice::MintFor;
use crate::read_ahead::ReadAhead;
use crate::state::{ConnLimits, Signaling};

/// A native connection's WebSocket, on its upgraded HTTP/1.1 stream.
type WebSocket = WebSocketStream<ReadAhead<TokioIo<hyper::upgrade::Upgraded>>>;

/// The query string of `/ws`.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    user: Option<String>,
    resume: Option<String>,
    resume_token: Option<String>,
    last_seq: Option<u64>,
}

/// `GET /ws`: checks the upgrade, origin and token, then upgrades.
///
/// The upgrade is done here rather than with axum's `WebSocketUpgrade` so
/// that the socket under tungstenite is ours: [`ReadAhead`] reads bursts in
/// one syscall without pinning a large buffer on idle connections.
pub async fn handler(
    State(app): State<Signaling>,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<WsQuery>,
    mut req: Request,
) -> Response {
    let local_ip = req
        .extensions()
        .get::<crate::serve::LocalAddr>()
        .map(|l| l.0.ip());
    let accept = match accept_key(&req) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    // One snapshot for the whole request: a reload in between cannot mix
    // two configurations' checks.
    let auth = app.auth.current();
    if let Err(e) = auth.check_origin(origin) {
        tracing::info!(%remote, "refused: {e}");
        return (StatusCode::FORBIDDEN, e.to_string()).into_response();
    }
    let identity = match auth.identify(q.token.as_deref(), q.user.as_deref()) {
        // The core caps sessions in grace per source IP.
        Ok(id) => switchboard_signal::Identity {
            source_ip: Some(remote.ip()),
            ..id
        },
        Err(e) => {
            tracing::info!(%remote, "refused: {e}");
            return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
    };
    if app.life.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: this node takes no new sessions",
        )
            .into_response();
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "connection cannot be upgraded",
        )
            .into_response();
    };
    let Ok(permit) = app.connections.clone().try_acquire_owned() else {
        metrics::counter!("switchboard_connections_refused_total").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let limits = app.limits.get();
    let max_frame = limits.transport_max_frame;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
        // tungstenite's own buffer stays small (idle connections keep it);
        // ReadAhead takes bursts. Writes gather until the writer flushes a
        // whole batch at once.
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024);
    // One pointer into the task: what an async block captures stays in the
    // task for the connection's whole life, and idle connections are what
    // we have most of.
    let pending = Box::new(Pending {
        host: crate::ice::request_host(req.headers()),
        app,
        remote,
        local_ip,
        identity,
        verified: auth.enabled(),
        limits,
        query: q,
        permit,
    });
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(remote = %pending.remote, "upgrade failed: {e}");
                return;
            }
        };
        let io = ReadAhead::new(TokioIo::new(upgraded));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        Conn::open(pending, socket).serve().await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Why a request to `/ws` is not a WebSocket upgrade we can take.
#[derive(Debug, Clone, Copy)]
enum NotAnUpgrade {
    /// Not HTTP/1.1 with `Connection: upgrade` and `Upgrade: websocket`.
    Plain,
    /// `Sec-WebSocket-Version` other than 13.
    Version,
    /// `Sec-WebSocket-Key` missing or unusable.
    Key,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        match self {
            Self::Plain => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "this is a WebSocket endpoint: HTTP/1.1 upgrade required",
            )
                .into_response(),
            Self::Version => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "unsupported WebSocket version",
            )
                .into_response(),
            Self::Key => {
                (StatusCode::BAD_REQUEST, "bad or missing Sec-WebSocket-Key").into_response()
            }
        }
    }
}

/// RFC 6455 §4.2.1: an HTTP/1.1 GET with `Connection: upgrade`,
/// `Upgrade: websocket`, version 13 and a key; answers the
/// `Sec-WebSocket-Accept` value.
fn accept_key(req: &Request) -> Result<HeaderValue, NotAnUpgrade> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.version() != Version::HTTP_11
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return Err(NotAnUpgrade::Plain);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(NotAnUpgrade::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(NotAnUpgrade::Key)?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| NotAnUpgrade::Key)
}

/// What the upgrade carries from the HTTP request to the connection.
struct Pending {
    app: Signaling,
    remote: std::net::SocketAddr,
    /// The address the client reached (the SFU's candidate, PROTOCOL.md §7).
    local_ip: Option<std::net::IpAddr>,
    identity: switchboard_signal::Identity,
    /// The identity came from a token (auth was on for this request).
    verified: bool,
    /// The limits in force when the request came, kept for the
    /// connection's life.
    limits: ConnLimits,
    host: String,
    query: WsQuery,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Per-connection state shared between the hub (which queues) and the
/// connection task (which sends).
struct NativeSink {
    /// Frames waiting for the socket. A plain deque: it allocates only when
    /// used, which keeps idle connections small.
    queue: Mutex<Queue>,
    /// `session.outbound_queue_frames`.
    cap: usize,
    /// Half of `session.replay_bytes`: with `cap`, what keeps every queued
    /// frame in the session's replay buffer when a slow reader is closed.
    cap_bytes: usize,
    /// Signalled when the queue goes from empty to non-empty, and when the
    /// server closes the connection.
    ready: Notify,
    /// Set when the server closes the connection (takeover, slow reader,
    /// shutdown), with the code to send.
    close: OnceLock<(u16, &'static str)>,
    /// The address the client reached.
    local_ip: Option<std::net::IpAddr>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<OutFrame>,
    /// Bytes of the queued frames' bodies.
    bytes: usize,
    /// Room granted to a resume's replay burst, on top of `cap` and
    /// `cap_bytes`, until the queue next runs empty.
    replay_allowance: usize,
    replay_allowance_bytes: usize,
}

impl NativeSink {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closing(&self) -> bool {
        self.close.get().is_some()
    }

    /// A quarter of the queue is taken: time to write rather than read
    /// more, or a client that pipelines requests with large answers (joins
    /// of big rooms) would be closed as a slow reader for our batching.
    fn filling(&self) -> bool {
        let q = self.queue();
        q.frames.len() * 4 >= self.cap || q.bytes * 4 >= self.cap_bytes
    }

    fn pop(&self) -> Option<OutFrame> {
        let mut q = self.queue();
        let frame = q.frames.pop_front();
        if let Some(f) = &frame {
            q.bytes -= f.body.len();
        }
        if q.frames.is_empty() {
            q.replay_allowance = 0;
            q.replay_allowance_bytes = 0;
            // Give back the memory of a burst once it is written.
            if q.frames.capacity() > 64 {
                q.frames.shrink_to(8);
            }
        }
        frame
    }

    fn push(&self, frame: OutFrame, replayed: bool) -> Result<(), QueueFull> {
        let mut q = self.queue();
        let len = frame.body.len();
        if replayed {
            q.replay_allowance += 1;
            q.replay_allowance_bytes += len;
        } else if q.frames.len() >= self.cap + q.replay_allowance
            // One frame always fits an empty queue, however large.
            || (!q.frames.is_empty()
                && q.bytes + len > self.cap_bytes + q.replay_allowance_bytes)
        {
            return Err(QueueFull);
        }
        let was_empty = q.frames.is_empty();
        q.bytes += len;
        q.frames.push_back(frame);
        drop(q);
        // The task drains until the queue is empty before it waits, so only
        // the first frame of a batch needs to wake it.
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }
}

impl ConnSink for NativeSink {
    fn send_frame(&self, frame: OutFrame) -> Result<(), QueueFull> {
        self.push(frame, false)
    }

    fn send_replayed(&self, frame: OutFrame) -> Result<(), QueueFull> {
        self.push(frame, true)
    }

    fn send_classic(&self, _event: ClassicEvent) -> Result<(), QueueFull> {
        // A native session never receives classic events; nothing to do.
        Ok(())
    }

    fn close(&self, code: u16, reason: &'static str) {
        let _ = self.close.set((code, reason));
        self.ready.notify_one();
    }

    fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.local_ip
    }
}

/// One connection, in one allocation, so that its task's future holds a
/// pointer and the small state of `run`.
struct Conn {
    app: Signaling,
    socket: WebSocket,
    sink: Arc<NativeSink>,
    id: ConnId,
    remote: std::net::SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Conn {
    /// Registers the connection with the hub and starts or resumes its
    /// session.
    fn open(pending: Box<Pending>, socket: WebSocket) -> Box<Self> {
        let Pending {
            app,
            remote,
            local_ip,
            identity,
            verified,
            limits,
            host,
            query: q,
            permit,
        } = *pending;
        let id = app.hub.next_conn_id();
        let sink = Arc::new(NativeSink {
            queue: Mutex::new(Queue::default()),
            cap: limits.outbound_queue_frames.max(1),
            cap_bytes: limits.outbound_queue_bytes,
            ready: Notify::new(),
            close: OnceLock::new(),
            local_ip,
        });
        // No span held for the connection's life: a span costs memory per
        // idle connection, and the conn number ties the lines together.
        let user = identity.user.clone();
        // Only a verified `sub` names the TURN user; `?user=` proves nothing.
        let sub = verified.then_some(user.as_deref()).flatten();
        let ice = |peer: &str| {
            app.ice
                .grant(
                    MintFor {
                        source: remote.ip(),
                        user: sub,
                        peer: Some(peer),
                    },
                    &host,
                )
                .servers
        };
        match (&q.resume, &q.resume_token) {
            (Some(session), Some(token)) => {
                let last_seq = q.last_seq.unwrap_or(0);
                // How it went is logged by the hub ("session resumed" or
                // "resume failed"), also when the cluster's store answers
                // later.
                app.hub
                    .resume(id, sink.clone(), session, token, last_seq, identity, ice);
                tracing::info!(conn = id.0, %remote, "connected (resume)");
            }
            _ => {
                app.hub
                    .connect(id, sink.clone(), identity, Face::Native, ice);
                let user = user.as_deref().unwrap_or("");
                tracing::info!(conn = id.0, %remote, user, "connected");
            }
        }
        // Shutdown closes the connections the hub knows; one registered just
        // after that sweep sees the cancelled token here instead.
        if app.life.shutdown.is_cancelled() {
            sink.close(app.life.stop_code, "server shutting down");
        }
        metrics::counter!("switchboard_ws_connections_total").increment(1);
        metrics::gauge!("switchboard_ws_connections").increment(1.0);
        let tracked = app.life.tasks.token();
        Box::new(Self {
            app,
            socket,
            sink,
            id,
            remote,
            _permit: permit,
            _tracked: tracked,
        })
    }

    async fn serve(mut self: Box<Self>) {
        let this = &mut *self;
        let how = run(&this.app, this.id, &mut this.socket, &this.sink).await;
        match how {
            Some(how) => {
                this.app.hub.disconnect(this.id, how);
            }
            None => {
                // The server ended it (takeover, slow reader, shutdown): the
                // hub has already accounted for the session. Say goodbye,
                // bounded. Boxed: only a closing connection pays for it.
                let close = this
                    .sink
                    .close
                    .get()
                    .copied()
                    .unwrap_or((1001, "server shutting down"));
                let goodbye = Box::pin(tokio::time::timeout(
                    Duration::from_secs(2),
                    say_goodbye(&mut this.socket, &this.sink, close),
                ));
                let _ = goodbye.await;
            }
        }
        // Sends the answer to a client's close frame, if one is pending.
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_secs(2),
            this.socket.flush(),
        ))
        .await;
        metrics::gauge!("switchboard_ws_connections").decrement(1.0);
        tracing::info!(conn = this.id.0, remote = %this.remote, clean = how == Some(Disconnect::Clean), "disconnected");
    }
}

/// What the connection's one timer was waiting for.
struct Heartbeat {
    /// When the client was last heard from.
    last_seen: Instant,
    /// When the next server ping is due.
    next_ping: Instant,
    interval: Duration,
    timeout: Duration,
}

impl Heartbeat {
    fn silence_deadline(&self) -> Instant {
        self.last_seen + self.timeout
    }

    fn next_wake(&self) -> Instant {
        self.next_ping.min(self.silence_deadline())
    }
}

/// The connection's one task: writes what the hub queued, reads requests,
/// pings, and notices silence. Returns how the client left, or `None` when
/// the server ended the connection.
async fn run<S>(
    app: &Signaling,
    conn: ConnId,
    ws: &mut WebSocketStream<S>,
    sink: &NativeSink,
) -> Option<Disconnect>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let now = Instant::now();
    let limits = app.limits.get();
    let mut hb = Heartbeat {
        last_seen: now,
        next_ping: now + limits.heartbeat_interval,
        interval: limits.heartbeat_interval,
        timeout: limits.heartbeat_timeout,
    };
    // One timer for pings and silence, re-armed only when it fires: arming
    // a timer per frame would cost more than the frame.
    let timer = tokio::time::sleep_until(hb.next_wake());
    tokio::pin!(timer);
    loop {
        if sink.closing() {
            return None;
        }
        // Queued frames go out before the next read, so neither direction
        // can starve the other. A peer that stops reading blocks only here,
        // until its queue overflows and the hub ends it.
        let mut ping_deferred = false;
        {
            let write = write_queued(ws, sink);
            tokio::pin!(write);
            loop {
                tokio::select! {
                    r = &mut write => {
                        if r.is_err() {
                            return Some(Disconnect::Abrupt);
                        }
                        break;
                    }
                    () = sink.ready.notified() => {
                        if sink.closing() {
                            return None;
                        }
                    }
                    // A peer that stops taking data (half-open) must not
                    // stay "connected" until the kernel gives up on it. The
                    // ping waits until the writer is done.
                    () = &mut timer => {
                        if Instant::now() >= hb.silence_deadline() {
                            tracing::info!(conn = conn.0, "heartbeat timeout while writing");
                            return Some(Disconnect::Abrupt);
                        }
                        timer.as_mut().reset(hb.silence_deadline());
                        ping_deferred = true;
                    }
                }
            }
        }
        if ping_deferred {
            timer.as_mut().reset(hb.next_wake());
        }
        let next = tokio::select! {
            biased;
            next = ws.next() => next,
            () = sink.ready.notified() => continue,
            () = &mut timer => {
                let now = Instant::now();
                if now >= hb.silence_deadline() {
                    tracing::info!(conn = conn.0, "heartbeat timeout");
                    return Some(Disconnect::Abrupt);
                }
                if now >= hb.next_ping {
                    let ping = ws.send(Message::Ping(Default::default()));
                    tokio::pin!(ping);
                    // A peer that stopped reading leaves the ping unsent
                    // for ever: it gets until the silence deadline, like
                    // any other write.
                    timer.as_mut().reset(hb.silence_deadline());
                    loop {
                        tokio::select! {
                            r = &mut ping => {
                                if r.is_err() {
                                    return Some(Disconnect::Abrupt);
                                }
                                break;
                            }
                            () = sink.ready.notified() => {
                                if sink.closing() {
                                    return None;
                                }
                            }
                            () = &mut timer => {
                                tracing::info!(conn = conn.0, "heartbeat timeout while pinging");
                                return Some(Disconnect::Abrupt);
                            }
                        }
                    }
                    hb.next_ping = now + hb.interval;
                }
                timer.as_mut().reset(hb.next_wake());
                continue;
            }
        };
        // Frames the read-ahead buffer already holds are handled before the
        // answers go out, so that a burst of requests is answered in one
        // write: with TCP_NODELAY every flush is a segment, and flushing per
        // request doubled the CPU per message of a saturated sender.
        let mut next = next;
        for handled in 1..=READ_BATCH {
            let now = Instant::now();
            hb.last_seen = now;
            match next {
                None => return Some(Disconnect::Abrupt),
                Some(Err(e)) => {
                    tracing::debug!(conn = conn.0, "read error: {e}");
                    return Some(Disconnect::Abrupt);
                }
                Some(Ok(Message::Text(text))) => app.hub.text(now.into_std(), conn, text.as_str()),
                Some(Ok(Message::Binary(_))) => app.hub.binary(conn),
                // Raw frames only appear when writing; pings are answered by tungstenite.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    return Some(match frame.map(|f| u16::from(f.code)) {
                        Some(1000 | 1001) => Disconnect::Clean,
                        _ => Disconnect::Abrupt,
                    });
                }
            }
            if handled == READ_BATCH || sink.filling() {
                break;
            }
            // Only what is ready now: never wait here with answers queued.
            match ws.next().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
    }
}

/// Requests handled from one read burst before their answers are written.
const READ_BATCH: usize = 32;

/// Writes every queued frame, flushing once per batch: fewer syscalls
/// under load, the same latency when idle.
async fn write_queued<S>(
    ws: &mut WebSocketStream<S>,
    sink: &NativeSink,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    const BATCH: usize = 256;
    loop {
        let mut n = 0;
        while n < BATCH {
            let Some(frame) = sink.pop() else { break };
            ws.feed(text_message(&frame)).await?;
            n += 1;
        }
        if n > 0 {
            ws.flush().await?;
        }
        if n < BATCH {
            return Ok(());
        }
    }
}

/// A server-side close: a polite one (shutdown) first sends what is
/// already queued; then the close frame.
async fn say_goodbye(ws: &mut WebSocket, sink: &NativeSink, (code, reason): (u16, &'static str)) {
    if code == 1000 || code == 1001 {
        while let Some(frame) = sink.pop() {
            if ws.feed(text_message(&frame)).await.is_err() {
                return;
            }
        }
    }
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = ws.send(close).await;
}

fn text_message(frame: &OutFrame) -> Message {
    let mut buf = Vec::with_capacity(frame.body.len() + 24);
    frame.write_to(&mut buf);
    // The core only emits JSON it serialized itself, so this is valid UTF-8.
    Message::Text(String::from_utf8(buf).unwrap_or_default().into())
}

#[cfg(test)]
mod sink_tests {
    use super::*;

    fn sink(cap: usize, cap_bytes: usize) -> NativeSink {
        NativeSink {
            queue: Mutex::new(Queue::default()),
            cap,
            cap_bytes,
            ready: Notify::new(),
            close: OnceLock::new(),
            local_ip: None,
        }
    }

    fn frame(len: usize) -> OutFrame {
        OutFrame {
            seq: Some(1),
            body: vec![b' '; len].into(),
        }
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_as_well_as_frames() {
        let s = sink(10, 100);
        assert!(s.push(frame(40), false).is_ok());
        assert!(s.push(frame(40), false).is_ok());
        assert!(s.push(frame(40), false).is_err(), "120 bytes > 100");
        assert!(s.pop().is_some());
        assert!(s.push(frame(60), false).is_ok(), "100 bytes fit");
        while s.pop().is_some() {}
        // One frame always fits an empty queue, however large.
        assert!(s.push(frame(500), false).is_ok());
        assert!(s.push(frame(1), false).is_err());
        while s.pop().is_some() {}
        // A resume's burst is allowed on top, until the queue runs empty.
        for _ in 0..5 {
            assert!(s.push(frame(100), true).is_ok());
        }
        assert!(s.push(frame(90), false).is_ok());
        assert!(s.push(frame(20), false).is_err());
        while s.pop().is_some() {}
        assert!(s.push(frame(100), false).is_ok());
        assert!(s.push(frame(1), false).is_err(), "the allowance is gone");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(interval: Duration, timeout: Duration) -> Signaling {
        let cfg = crate::config::Config::default();
        let core = switchboard_signal::SignalCore::new(crate::process::core_config(&cfg), [7; 32]);
        let mut turn = cfg.turn.clone();
        crate::ice::ensure_rest_secret(&mut turn);
        Signaling {
            hub: crate::hub::Hub::new(core),
            auth: Arc::new(crate::auth::Authenticator::new(&cfg.auth).expect("open")),
            ice: Arc::new(
                crate::ice::IceServers::new(&turn, crate::ice::LocalTurn::default())
                    .expect("a secret"),
            ),
            connections: Arc::new(tokio::sync::Semaphore::new(1)),
            limits: crate::state::LiveLimits::new(crate::state::ConnLimits {
                outbound_queue_frames: 8,
                outbound_queue_bytes: 1 << 16,
                transport_max_frame: 1 << 20,
                socketio_connect_timeout: Duration::from_secs(5),
                socketio_pending_per_ip: 16,
                heartbeat_interval: interval,
                heartbeat_timeout: timeout,
            }),
            life: crate::state::Lifecycle::new(1001),
        }
    }

    /// A peer that stops reading: its ping cannot be written (a one-byte
    /// pipe nobody drains), and the connection must still end at the
    /// silence deadline instead of waiting on the write for ever.
    #[tokio::test]
    async fn a_ping_to_a_peer_that_stopped_reading_is_bounded() {
        let app = app(Duration::from_millis(50), Duration::from_millis(300));
        let (server_io, _client_io) = tokio::io::duplex(1);
        let mut ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let sink = NativeSink {
            queue: Mutex::new(Queue::default()),
            cap: 8,
            cap_bytes: 1 << 16,
            ready: Notify::new(),
            close: OnceLock::new(),
            local_ip: None,
        };
        let how =
            tokio::time::timeout(Duration::from_secs(5), run(&app, ConnId(1), &mut ws, &sink))
                .await
                .expect("the stalled ping held the connection task");
        assert_eq!(how, Some(Disconnect::Abrupt));
    }
}
