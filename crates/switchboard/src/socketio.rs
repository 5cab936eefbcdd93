//! The Socket.IO compatibility face (PROTOCOL.md §2): Socket.IO v5 over
//! Engine.IO v4 at `/socket.io/`, long-polling and WebSocket, served by
//! socketioxide on the same listeners as everything else.
//!
//! socketioxide does the transport (handshake, polling, upgrade, heartbeats,
//! packet codec, acknowledgement ids); the rooms are *not* socketioxide's:
//! every event goes to the signaling core through the [`Hub`], which is the
//! one room registry for both faces. So a Socket.IO peer and a native peer
//! in the same room see each other, with the same peer ids.
//!
//! Three things are done by hand rather than with socketioxide's async
//! closures, and each for the same reason, ordering:
//!
//! - [`Admit`] is the namespace's connect handler. socketioxide runs an
//!   async connect handler on a task of its own after it has answered the
//!   client's CONNECT, and drops events that arrive before a handler is
//!   set: a client that emits `join` on `connect` would race it. `Admit`
//!   starts the session and sets the handlers in the middleware, before
//!   the answer.
//! - [`ClassicEvents`] handles every event. socketioxide spawns one task
//!   per event for async handlers, and two tasks of one socket may run on
//!   two worker threads in either order: an ICE candidate could overtake
//!   the offer it belongs to. `ClassicEvents::call` hands the event to the
//!   core synchronously, on the socket's receive path, in arrival order.
//! - [`Departure`] tells the core at once, before the socket is dropped.
//!
//! And one for memory: [`Front`] copies the request head off hyper's read
//! buffer, which Engine.IO would otherwise pin for every session
//! (docs/benchmarks-socketio.md has the figures). `Front` also refuses
//! handshakes early: a bad origin, or too many sessions from one address
//! that have not sent CONNECT (see `front.rs`).
//!
//! Admission (origin, token, connection cap) happens in the connect
//! middleware, so a refused client gets a `connect_error` with the reason
//! and never joins the namespace.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{
    ConnectHandler, DisconnectHandler, FromMessageParts, MessageHandler, Value,
};
use socketioxide::layer::SocketIoLayer;
use socketioxide::service::SocketIoService;
use socketioxide::socket::{DisconnectReason, Sid, Socket};
use socketioxide::{ParserConfig, SendError, SocketError, SocketIo};
use switchboard_signal::{ClassicEvent, ConnId, Disconnect, Face, Identity, OutFrame};
use tokio::sync::OwnedSemaphorePermit;

use crate::hub::{ConnSink, Hub, QueueFull};
use crate::state::{Lifecycle, Signaling};

mod front;

pub use front::Front;
use front::{Gatekeeper, PATH, Ticket};

/// How long a server-side close keeps retrying while the socket's queue is
/// full (a slow reader): 50 × 100 ms. After that the Engine.IO heartbeat
/// ends the transport; the core has already let the session go.
const CLOSE_RETRIES: u32 = 50;
const CLOSE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long after admission a socket must be connected: socketioxide
/// answers CONNECT within the same call that admitted it, so this is only
/// a bound for the case where that answer failed.
const CONNECT_CHECK: Duration = Duration::from_secs(10);

/// Lets go of the sessions of sockets whose CONNECT answer never went out
/// (see [`Admit::start`]): one task for the server, not one per socket.
async fn sweep_unconfirmed(
    hub: Arc<Hub>,
    unconfirmed: Arc<Unconfirmed>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(CONNECT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let stale: Vec<ConnId> = {
            let mut map = unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
            let mut stale = Vec::new();
            map.retain(|_, p| {
                if now.duration_since(p.admitted) < CONNECT_CHECK {
                    return true;
                }
                if !p.socket.connected() {
                    stale.push(p.conn);
                }
                false
            });
            stale
        };
        for conn in stale {
            // `disconnect` acts once, whoever notices first.
            if hub.disconnect(conn, Disconnect::Abrupt) {
                metrics::gauge!("switchboard_socketio_connections").decrement(1.0);
                tracing::info!(conn = conn.0, "socket.io CONNECT never completed");
            }
        }
    }
}

/// The Socket.IO layer: it answers `/socket.io/` and passes every other
/// request through. [`service`] puts it around the router.
fn layer(app: &Signaling, keeper: Arc<Gatekeeper>) -> SocketIoLayer {
    // Engine.IO's client gives up after pingInterval + pingTimeout without a
    // ping; match the native face's heartbeat interval and timeout.
    // Socket.IO's engine is configured once: a reload does not change
    // these (docs/operations.md, Reload).
    let limits = app.limits.get();
    let ping_timeout = limits
        .heartbeat_timeout
        .saturating_sub(limits.heartbeat_interval)
        .max(Duration::from_secs(1));
    let max_frame = limits.transport_max_frame;
    let (layer, io) = SocketIo::builder()
        .req_path(PATH)
        .ping_interval(limits.heartbeat_interval)
        .ping_timeout(ping_timeout)
        .max_buffer_size(limits.outbound_queue_frames.max(1))
        // The core answers `too_large` over `limits.max_message_bytes`; this
        // is only the transport's own bound on a frame or a polling body, as
        // on `/ws`.
        .max_payload(u64::try_from(max_frame).unwrap_or(u64::MAX))
        .ws_max_message_size(max_frame)
        .ws_max_frame_size(max_frame)
        // Each WebSocket read zero-fills this much: 1 KiB holds a few
        // signaling messages and is the largest single share of an idle
        // connection we control (larger frames grow the buffer as needed).
        .ws_read_buffer_size(1024)
        // Until CONNECT a session has passed no check but the origin and
        // the per-address cap of `Front`: it gets a few seconds.
        .connect_timeout(limits.socketio_connect_timeout)
        // The classic events are JSON. socketioxide would buffer up to
        // 10,000 attachments and 10 MB per packet, even before CONNECT; one
        // small attachment is still read, so that a client that sent one by
        // mistake gets `bad_request` (see `event_args`), and a packet
        // announcing more, or a larger one, closes the connection.
        .with_parser(
            ParserConfig::common()
                .max_incoming_binaries(1)
                .max_incoming_binary_buf_size(MAX_ATTACHMENT_BYTES)
                .packet_completion_timeout(Duration::from_secs(1)),
        )
        .build_layer();
    let unconfirmed = Arc::new(Unconfirmed::default());
    tokio::spawn(sweep_unconfirmed(
        app.hub.clone(),
        unconfirmed.clone(),
        app.life.shutdown.clone(),
    ));
    app.life
        .tasks
        .spawn(drain_on_shutdown(io.clone(), keeper, app.life.clone()));
    io.ns(
        "/",
        Admit {
            app: app.clone(),
            unconfirmed,
        },
    );
    layer
}

/// At shutdown the hub closes every connection, which for a Socket.IO
/// client is a DISCONNECT packet queued behind what it has still to
/// receive; the client then closes its transport. This waits for that
/// (a tracked task, so the process waits too), then cuts whatever is left
/// and lets the HTTP listeners stop: a polling client fetches its
/// DISCONNECT with a request, which a stopped listener would refuse.
async fn drain_on_shutdown(io: SocketIo, keeper: Arc<Gatekeeper>, life: Lifecycle) {
    let _stop_http = life.socketio_drained.clone().drop_guard();
    life.shutdown.cancelled().await;
    if tokio::time::timeout(SHUTDOWN_DRAIN, keeper.drained())
        .await
        .is_err()
    {
        tracing::info!(
            left = keeper.live(),
            "socket.io sessions still open after DISCONNECT; closing them"
        );
    }
    // Bounded too: a transport that cannot flush is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(1), io.close()).await;
}

/// The most binary data one packet may carry (it is refused anyway).
const MAX_ATTACHMENT_BYTES: usize = 1024;

/// How long shutdown waits for Socket.IO clients to close their transport
/// after their DISCONNECT (the process' own bound, `http.shutdown_timeout_secs`,
/// still applies).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

/// The router behind the Socket.IO layer: `/socket.io/` is answered by
/// socketioxide, everything else by `routes`. One layer around the whole
/// router (`Router::layer` would wrap each route apart, each wrap a separate
/// Engine.IO with its own sessions).
pub fn service(app: &Signaling, routes: axum::Router) -> Front<SocketIoService<axum::Router>> {
    let keeper = Gatekeeper::new(
        app.limits.get().socketio_pending_per_ip.max(1),
        app.life.shutdown.clone(),
        app.life.draining.clone(),
    );
    Front::new(
        tower::Layer::layer(&layer(app, keeper.clone()), routes),
        keeper,
    )
}

/// What the connect middleware established.
struct Admission {
    identity: Identity,
    permit: OwnedSemaphorePermit,
}

/// The `auth` object of the Socket.IO CONNECT packet.
#[derive(Debug, Default, Deserialize)]
struct AuthPayload {
    #[serde(default)]
    token: Option<String>,
}

/// `?token=` on the handshake URL, for clients that put it there.
#[derive(Debug, Default, Deserialize)]
struct HandshakeQuery {
    #[serde(default)]
    token: Option<String>,
}

/// Why a Socket.IO connection was refused; the client sees the text as
/// `connect_error`'s `message`, prefixed with a stable code word.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("forbidden: {0}")]
    Origin(crate::auth::AuthError),
    #[error("unauthorized: {0}")]
    Token(crate::auth::AuthError),
    #[error("unavailable: too many connections")]
    Capacity,
}

type MiddlewareResult = Result<(), Box<dyn std::fmt::Display + Send>>;
type MiddlewareFuture<'a> = Pin<Box<dyn Future<Output = MiddlewareResult> + Send + 'a>>;

/// Marker for socketioxide's handler traits (their type parameter tells
/// handler kinds apart; ours are plain structs).
enum ClassicFace {}

/// The namespace `/`: admits a connection, then starts its core session.
#[derive(Clone)]
struct Admit {
    app: Signaling,
    unconfirmed: Arc<Unconfirmed>,
}

/// Sockets admitted by the middleware whose CONNECT answer has not been
/// confirmed yet, with when they were admitted.
type Unconfirmed = std::sync::Mutex<HashMap<Sid, Pending>>;

/// An admitted socket whose CONNECT answer is not confirmed yet.
struct Pending {
    conn: ConnId,
    admitted: tokio::time::Instant,
    socket: SocketRef,
    events: ClassicEvents,
}

impl Admit {
    fn admit(&self, s: &Socket<LocalAdapter>, auth: Option<&Value>) -> Result<Admission, Refused> {
        let parts = s.req_parts();
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        // One snapshot of the rules for the whole admission (reload).
        let rules = self.app.auth.current();
        rules.check_origin(origin).map_err(Refused::Origin)?;
        let from_auth = auth
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str::<AuthPayload>(text).ok())
            .and_then(|a| a.token);
        let token = from_auth.or_else(|| {
            axum::extract::Query::<HandshakeQuery>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|q| q.0.token)
        });
        let identity = rules
            .identify(token.as_deref(), None)
            .map_err(Refused::Token)?;
        let permit = self
            .app
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Capacity)?;
        Ok(Admission { identity, permit })
    }
}

impl ConnectHandler<LocalAdapter, ClassicFace> for Admit {
    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<LocalAdapter>>,
        auth: &'a Option<Value>,
    ) -> MiddlewareFuture<'a> {
        let result = match self.admit(&s, auth.as_ref()) {
            Ok(admission) => {
                self.start(SocketRef::from(s), admission);
                Ok(())
            }
            Err(e) => {
                if matches!(e, Refused::Capacity) {
                    metrics::counter!("switchboard_connections_refused_total").increment(1);
                }
                tracing::info!(sid = %s.id, "socket.io connection refused: {e}");
                Err(Box::new(e) as Box<dyn std::fmt::Display + Send>)
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn call(&self, s: Arc<Socket<LocalAdapter>>, _auth: Option<Value>) {
        // socketioxide calls this once the CONNECT answer is queued and the
        // socket marked connected: events that came before can run now.
        let pending = self
            .unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&s.id);
        if let Some(p) = pending {
            p.events.open(&s);
        }
        tracing::info!(
            sid = %s.id,
            transport = ?s.transport_type(),
            "socket.io connected"
        );
    }
}

impl Admit {
    /// Starts the core session and sets the socket's handlers. This runs in
    /// the middleware, before socketioxide answers the client's CONNECT:
    /// a client emits `join` the moment it is connected, and socketioxide
    /// drops an event that arrives before its handler is set. (The connect
    /// handler proper runs after the answer, on its own task.)
    ///
    /// The socket is not in the namespace yet, so nothing can close it
    /// before `on_disconnect` is set. The one way to lose it is socketioxide
    /// failing to queue the CONNECT answer on a transport that died within
    /// this call: it then drops the socket without a disconnect event. Such
    /// a socket stays in `unconfirmed` (the connect handler proper takes the
    /// others out) and [`sweep_unconfirmed`] lets its session go.
    fn start(&self, socket: SocketRef, admission: Admission) {
        let hub = self.app.hub.clone();
        let conn = hub.next_conn_id();
        if let Some(ticket) = socket.req_parts().extensions.get::<Ticket>() {
            ticket.connected();
        }
        let events = ClassicEvents {
            hub: hub.clone(),
            conn,
            gate: Arc::new(std::sync::Mutex::new(Gate::Closed(Vec::new()))),
            acks: Acks::default(),
        };
        socket.on_fallback(events.clone());
        socket.on_disconnect(Departure {
            hub: hub.clone(),
            conn,
        });
        let (check, sid) = (socket.clone(), socket.id);
        let sink = Arc::new(SioSink {
            socket,
            tasks: self.app.life.tasks.clone(),
            acks: events.acks.clone(),
            _permit: admission.permit,
        });
        hub.connect(conn, sink, admission.identity, Face::Classic, |_| {
            Vec::new()
        });
        metrics::counter!("switchboard_socketio_connections_total").increment(1);
        metrics::gauge!("switchboard_socketio_connections").increment(1.0);
        self.unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                sid,
                Pending {
                    conn,
                    admitted: tokio::time::Instant::now(),
                    socket: check,
                    events,
                },
            );
    }
}

/// Every event of one socket, in arrival order, into the core.
#[derive(Clone)]
struct ClassicEvents {
    hub: Arc<Hub>,
    conn: ConnId,
    gate: Arc<std::sync::Mutex<Gate>>,
    /// Acknowledgements a clustered core answers later, oldest first.
    acks: Acks,
}

/// The acknowledgements of a connection not answered yet, shared by its
/// event handler (which queues them) and its sink (which answers them).
type Acks = Arc<std::sync::Mutex<std::collections::VecDeque<AckSender>>>;

/// socketioxide queues its CONNECT answer and only then marks the socket
/// connected, on its own task; until then every emit to the socket fails.
/// A client that emits `join` on `connect` can have its event handled in
/// that window, and its `joined` would be lost. So events wait behind this
/// gate until the connect handler proper opens it, and run then, in order.
enum Gate {
    /// Not connected yet: the events that came, at most [`EARLY_EVENTS`].
    Closed(Vec<(Value, Option<i64>)>),
    Open,
}

/// A client has no reason to send more than its first emit or two before
/// its CONNECT is answered; past this, early events are dropped.
const EARLY_EVENTS: usize = 16;

impl ClassicEvents {
    /// Runs the events that arrived before the socket was connected, then
    /// lets the others through. Under the gate's lock, so that an event
    /// coming meanwhile waits its turn.
    fn open(&self, s: &Arc<Socket<LocalAdapter>>) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Gate::Closed(early) = std::mem::replace(&mut *gate, Gate::Open) {
            for (v, ack_id) in early {
                self.handle(s, v, ack_id);
            }
        }
    }

    fn handle(&self, s: &Arc<Socket<LocalAdapter>>, mut v: Value, ack_id: Option<i64>) {
        let ack = ack_id.map(|_| {
            let Ok(ack) = AckSender::from_message_parts(s, &mut v, &ack_id);
            ack
        });
        let (event, args) = match event_args(&v) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Answered like the core answers a bad request: an `error`
                // event, and the same object as the ack when one is asked.
                tracing::debug!(conn = self.conn.0, "unreadable socket.io event: {e}");
                let refusal = json!({"code": "bad_request", "message": e.to_string()});
                let _ = s.emit("error", &refusal);
                if let Some(ack) = ack {
                    let _ = ack.send(&refusal);
                }
                return;
            }
        };
        metrics::counter!("switchboard_socketio_events_in_total").increment(1);
        if let Some(ack) = ack {
            // Queued first: a clustered core may answer within the call.
            lock(&self.acks).push_back(ack);
        }
        let reply = self.hub.classic(self.conn, &event, &args, ack_id.is_some());
        if let Some(reply) = reply
            && let Some(ack) = lock(&self.acks).pop_back()
        {
            let _ = ack.send(&reply);
        }
    }
}

impl MessageHandler<LocalAdapter, ClassicFace> for ClassicEvents {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, v: Value, ack_id: Option<i64>) {
        {
            let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            if let Gate::Closed(early) = &mut *gate {
                if early.len() < EARLY_EVENTS {
                    early.push((v, ack_id));
                } else {
                    tracing::debug!(conn = self.conn.0, "socket.io event before CONNECT dropped");
                }
                return;
            }
        }
        self.handle(&s, v, ack_id);
    }
}

/// The arguments of an event packet, the event name first, each the raw
/// JSON text cut out of the packet (no value is built: `data` goes on to
/// the peers as the sender wrote it). The classic events carry JSON only:
/// a packet with binary attachments is refused.
fn event_args(v: &Value) -> Result<(Cow<'_, str>, Vec<&RawValue>), EventError> {
    let text = match v {
        Value::Str(text, None) => text,
        Value::Str(text, Some(bins)) if bins.is_empty() => text,
        _ => return Err(EventError::Binary),
    };
    let mut args: Vec<&RawValue> = serde_json::from_str(text).map_err(EventError::Json)?;
    let first = match args.first() {
        Some(first) if first.get().starts_with('"') => *first,
        _ => return Err(EventError::NoName),
    };
    let name: Cow<'_, str> = serde_json::from_str(first.get()).map_err(EventError::Json)?;
    args.remove(0);
    Ok((name, args))
}

/// An event packet the core cannot be given.
#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("binary data is not part of the protocol; send JSON")]
    Binary,
    #[error("the event is not a JSON array: {0}")]
    Json(serde_json::Error),
    #[error("the event has no name")]
    NoName,
}

/// The socket is gone: the core announces `bye` at once (the classic face
/// has no resume).
struct Departure {
    hub: Arc<Hub>,
    conn: ConnId,
}

impl DisconnectHandler<LocalAdapter, ClassicFace> for Departure {
    fn call_with_defer(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        reason: DisconnectReason,
        defer: fn(Arc<Socket<LocalAdapter>>),
    ) {
        // A classic session has no resume: the core ends it on any
        // disconnect, so the reason only matters for the log line.
        // socketioxide takes the handler out before calling it: this runs
        // once per socket.
        if self.hub.disconnect(self.conn, Disconnect::Clean) {
            metrics::gauge!("switchboard_socketio_connections").decrement(1.0);
        }
        tracing::info!(conn = self.conn.0, sid = %s.id, %reason, "socket.io disconnected");
        defer(s);
    }
}

/// A poisoned lock still holds the best state there is.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the hub puts a Socket.IO connection's output. Emitting only queues
/// (socketioxide's bounded per-socket channel, `session.outbound_queue_frames`
/// long), so it is safe under the hub's lock.
struct SioSink {
    socket: SocketRef,
    /// Closing is a task of its own: tracked, so that shutdown waits for it.
    tasks: tokio_util::task::TaskTracker,
    acks: Acks,
    /// Held for the connection's life: `limits.max_connections` counts both faces.
    _permit: OwnedSemaphorePermit,
}

impl ConnSink for SioSink {
    fn send_frame(&self, _frame: OutFrame) -> Result<(), QueueFull> {
        // A classic session never receives native frames.
        Ok(())
    }

    fn send_classic(&self, event: ClassicEvent) -> Result<(), QueueFull> {
        // `ClassicArgs` serializes as a tuple: one Socket.IO argument each.
        match self.socket.emit(event.event, &event.args) {
            Ok(()) => {
                metrics::counter!("switchboard_socketio_events_out_total").increment(1);
                Ok(())
            }
            // Full: a slow reader. Closed: already gone, and the hub should
            // forget it now rather than at the disconnect handler.
            Err(SendError::Socket(_)) => Err(QueueFull),
            Err(SendError::Serialize(e)) => {
                tracing::warn!("socket.io event not serializable: {e}");
                Ok(())
            }
        }
    }

    fn classic_reply(&self, payload: serde_json::Value) {
        if let Some(ack) = lock(&self.acks).pop_front() {
            let _ = ack.send(&payload);
        }
    }

    fn close(&self, code: u16, reason: &'static str) {
        tracing::debug!(sid = %self.socket.id, code, reason, "closing socket.io connection");
        // Called under the hub's lock, and disconnecting runs `Departure`,
        // which takes that lock: do it on a task.
        let socket = self.socket.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.tasks.spawn(async move {
            for _ in 0..CLOSE_RETRIES {
                match socket.clone().disconnect() {
                    Err(SocketError::InternalChannelFull) => {
                        tokio::time::sleep(CLOSE_RETRY_PAUSE).await;
                    }
                    _ => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_args_keep_every_argument_as_its_text() {
        let v = Value::Str(
            r#"["mess\u0061ge", "r",{"sdp":"x","kind":1.0e0}]"#.into(),
            None,
        );
        let (name, args) = event_args(&v).expect("parses");
        assert_eq!(name, "message");
        let texts: Vec<&str> = args.iter().map(|a| a.get()).collect();
        assert_eq!(texts, [r#""r""#, r#"{"sdp":"x","kind":1.0e0}"#]);
    }

    #[test]
    fn event_args_refuse_what_is_not_an_event() {
        assert!(matches!(
            event_args(&Value::Bytes(bytes::Bytes::from_static(b"x"))),
            Err(EventError::Binary)
        ));
        let attached = std::collections::VecDeque::from([bytes::Bytes::from_static(b"x")]);
        assert!(matches!(
            event_args(&Value::Str(
                r#"["message","r",{"_placeholder":true,"num":0}]"#.into(),
                Some(attached)
            )),
            Err(EventError::Binary)
        ));
        assert!(matches!(
            event_args(&Value::Str("[1,2]".into(), None)),
            Err(EventError::NoName)
        ));
        assert!(matches!(
            event_args(&Value::Str("{".into(), None)),
            Err(EventError::Json(_))
        ));
    }
}
