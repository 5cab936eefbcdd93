//! The native signaling face: `GET /ws`, JSON over WebSocket
//! (PROTOCOL.md §1). Moves frames between the socket and the hub; all the
//! protocol lives in the core.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use switchboard_signal::{ClassicEvent, ConnId, Disconnect, Face, OutFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::hub::{ConnSink, QueueFull};

/// The query string of `/ws`.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    user: Option<String>,
    resume: Option<String>,
    resume_token: Option<String>,
    last_seq: Option<u64>,
}

/// `GET /ws`: checks origin and token, then upgrades.
pub async fn handler(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Err(e) = app.auth.check_origin(origin) {
        tracing::info!(%remote, "refused: {e}");
        return (StatusCode::FORBIDDEN, e.to_string()).into_response();
    }
    let identity = match app.auth.identify(q.token.as_deref(), q.user.as_deref()) {
        Ok(id) => id,
        Err(e) => {
            tracing::info!(%remote, "refused: {e}");
            return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
    };
    let Ok(permit) = app.connections.clone().try_acquire_owned() else {
        metrics::counter!("switchboard_connections_refused_total").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let host = crate::app::request_host(&headers);
    let max_frame = app.limits.transport_max_frame;
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        // Small read buffers keep idle connections cheap; writes gather in
        // the buffer until the writer flushes a whole batch at once.
        .read_buffer_size(4096)
        .write_buffer_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            serve(app, socket, remote, identity, host, q).await;
        })
}

/// Per-connection state shared between the hub (which queues) and the
/// writer task (which sends).
struct NativeSink {
    tx: mpsc::Sender<OutFrame>,
    /// Set when the server closes the connection, with the code to send.
    close: OnceLock<(u16, &'static str)>,
    /// Cancelled when the connection must end, by the server or at shutdown
    /// (it is a child of the shutdown token).
    ended: CancellationToken,
}

impl ConnSink for NativeSink {
    fn send_frame(&self, frame: OutFrame) -> Result<(), QueueFull> {
        self.tx.try_send(frame).map_err(|_| QueueFull)
    }

    fn send_classic(&self, _event: ClassicEvent) -> Result<(), QueueFull> {
        // A native session never receives classic events; nothing to do.
        Ok(())
    }

    fn close(&self, code: u16, reason: &'static str) {
        let _ = self.close.set((code, reason));
        self.ended.cancel();
    }
}

async fn serve(
    app: AppState,
    socket: WebSocket,
    remote: std::net::SocketAddr,
    identity: switchboard_signal::Identity,
    host: String,
    q: WsQuery,
) {
    let conn = app.hub.next_conn_id();
    let (tx, rx) = mpsc::channel(app.limits.outbound_queue_frames.max(1));
    let sink = Arc::new(NativeSink {
        tx,
        close: OnceLock::new(),
        ended: app.shutdown.child_token(),
    });
    let span = tracing::info_span!("ws", conn = conn.0, %remote);
    let _enter = span.enter();
    let user = identity.user.clone();
    let ice = |peer: &str| app.ice_servers(peer, &host);
    match (&q.resume, &q.resume_token) {
        (Some(session), Some(token)) => {
            let ok = app.hub.resume(
                conn,
                sink.clone(),
                session,
                token,
                q.last_seq.unwrap_or(0),
                identity,
                ice,
            );
            tracing::info!(resumed = ok, "connected (resume)");
        }
        _ => {
            app.hub
                .connect(conn, sink.clone(), identity, Face::Native, ice);
            tracing::info!(user = user.as_deref().unwrap_or(""), "connected");
        }
    }
    drop(_enter);
    metrics::counter!("switchboard_ws_connections_total").increment(1);
    metrics::gauge!("switchboard_ws_connections").increment(1.0);

    let (ws_tx, ws_rx) = socket.split();
    let writer = tokio::spawn(write_loop(ws_tx, rx, sink.clone(), app.heartbeat_interval));
    let how = read_loop(&app, conn, ws_rx, app.heartbeat_timeout, &sink).await;
    app.hub.disconnect(conn, how);
    sink.ended.cancel();
    // Let the writer send its close frame, but never wait on a dead peer.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    metrics::gauge!("switchboard_ws_connections").decrement(1.0);
    tracing::info!(parent: &span, clean = how == Disconnect::Clean, "disconnected");
}

async fn read_loop(
    app: &AppState,
    conn: ConnId,
    mut rx: futures_util::stream::SplitStream<WebSocket>,
    heartbeat_timeout: Duration,
    sink: &NativeSink,
) -> Disconnect {
    // One timer for the connection's life, re-armed only when it fires:
    // arming a timer per frame would cost more than the frame.
    let mut last_seen = tokio::time::Instant::now();
    let silence = tokio::time::sleep_until(last_seen + heartbeat_timeout);
    tokio::pin!(silence);
    loop {
        let next = tokio::select! {
            r = rx.next() => r,
            () = &mut silence => {
                let deadline = last_seen + heartbeat_timeout;
                if deadline > tokio::time::Instant::now() {
                    silence.as_mut().reset(deadline);
                    continue;
                }
                tracing::info!("heartbeat timeout");
                return Disconnect::Abrupt;
            }
            () = sink.ended.cancelled() => {
                // Closed by the server (takeover, slow reader, shutdown): the
                // hub has already accounted for the session.
                return Disconnect::Abrupt;
            }
        };
        last_seen = tokio::time::Instant::now();
        let msg = match next {
            None => return Disconnect::Abrupt,
            Some(Err(e)) => {
                tracing::debug!("read error: {e}");
                return Disconnect::Abrupt;
            }
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(text) => app.hub.text(conn, text.as_str()),
            Message::Binary(_) => app.hub.binary(conn),
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| f.code);
                return match code {
                    Some(1000 | 1001) => Disconnect::Clean,
                    _ => Disconnect::Abrupt,
                };
            }
        }
    }
}

async fn write_loop(
    mut tx: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<OutFrame>,
    sink: Arc<NativeSink>,
    heartbeat_interval: Duration,
) {
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat_interval,
        heartbeat_interval,
    );
    loop {
        tokio::select! {
            biased;
            () = sink.ended.cancelled() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if feed(&mut tx, &frame).await.is_err() {
                    return;
                }
                // Write everything already queued in one flush: fewer
                // syscalls under load, same latency when idle.
                let mut n = 1;
                while n < 256 {
                    let Ok(frame) = rx.try_recv() else { break };
                    if feed(&mut tx, &frame).await.is_err() {
                        return;
                    }
                    n += 1;
                }
                if tx.flush().await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
    // A server-side close: a polite one (shutdown) sends what is already
    // queued first; then the close frame.
    let close = sink.close.get().copied().or_else(|| {
        sink.ended
            .is_cancelled()
            .then_some((1001, "server shutting down"))
    });
    if let Some((code, reason)) = close {
        if code == 1000 || code == 1001 {
            while let Ok(frame) = rx.try_recv() {
                if feed(&mut tx, &frame).await.is_err() {
                    return;
                }
            }
        }
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
    }
    let _ = tx.close().await;
}

async fn feed(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    frame: &OutFrame,
) -> Result<(), axum::Error> {
    let mut buf = Vec::with_capacity(frame.body.len() + 24);
    frame.write_to(&mut buf);
    // The core only emits JSON it serialized itself, so this is valid UTF-8.
    let text = String::from_utf8(buf).unwrap_or_default();
    tx.feed(Message::Text(text.into())).await
}
