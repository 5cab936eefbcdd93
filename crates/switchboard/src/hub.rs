//! The thin driver around the sans-IO signaling core: one `SignalCore`
//! behind a std `Mutex` (nothing awaits under it), a map from connection to
//! its outbound queue, and one timer task.
//!
//! Every entry point locks, hands the input to the core, drains its outputs
//! into the connections' bounded queues and re-arms the timer. A queue that
//! is full means a slow reader: that connection alone is closed with 1013
//! and its session enters the grace period, so nothing is lost and nobody
//! else waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use switchboard_signal::cluster::{Command, Push};
use switchboard_signal::{
    AdminError, AdminId, AdminReply, AdminRequest, ClassicArg, ClassicEvent, ConnId, Counters,
    Disconnect, ErrorCode, Event, Face, IceServer, Identity, MediaOutput, OutFrame, Output,
    SignalCore, Stats,
};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

/// How a `resumed` frame's body starts (the core writes it so).
const RESUMED: &[u8] = b"{\"type\":\"resumed\"";

/// Close code for a reader too slow to keep up (RFC 6455 "try again later").
pub const CLOSE_SLOW_READER: u16 = 1013;

/// Where the hub delivers a connection's output. Implemented by the native
/// WebSocket writer and by the Socket.IO face.
pub trait ConnSink: Send + Sync {
    /// Queues a native frame; `Err` when the queue is full.
    fn send_frame(&self, frame: OutFrame) -> Result<(), QueueFull>;
    /// Queues a frame replayed by a resume. The burst is bounded by the
    /// replay buffer itself and must not count as a slow reader.
    fn send_replayed(&self, frame: OutFrame) -> Result<(), QueueFull> {
        self.send_frame(frame)
    }
    /// Queues a classic event; `Err` when the queue is full.
    fn send_classic(&self, event: ClassicEvent) -> Result<(), QueueFull>;
    /// Closes the connection with a WebSocket close code.
    fn close(&self, code: u16, reason: &'static str);
    /// Answers the oldest unanswered acknowledgement of a classic event
    /// (only a clustered core answers later than `Hub::classic` returns).
    fn classic_reply(&self, _payload: Value) {}
    /// The local IP of the connection (the address the client reached),
    /// for the SFU's candidate when `media.public_ip` is not set.
    fn local_ip(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// Where a clustered core's commands go: the backplane client, in order.
/// Called under the hub's lock: it must only queue.
pub trait BackplaneOut: Send + Sync {
    /// Queues a command for the store.
    fn send(&self, cmd: Command);
}

/// The connection's outbound queue is full.
#[derive(Debug, Clone, Copy)]
pub struct QueueFull;

struct State {
    core: SignalCore,
    conns: HashMap<ConnId, Arc<dyn ConnSink>>,
    /// The deadline the timer task sleeps towards.
    armed: Option<Instant>,
    /// Admin requests waiting for the core's answer (in a cluster, for the
    /// store's push), by number.
    admin_waiting: HashMap<u64, oneshot::Sender<Result<AdminReply, AdminError>>>,
    next_admin: u64,
}

/// Shared by every connection task.
pub struct Hub {
    state: Mutex<State>,
    backplane: Option<Arc<dyn BackplaneOut>>,
    next_conn: AtomicU64,
    timer: Notify,
    /// Lifecycle events go here too, under the lock (so in the core's
    /// order); it only queues.
    webhooks: std::sync::OnceLock<crate::webhooks::Webhooks>,
    /// The SFU's driver, when the media socket is on. Handing over only
    /// queues, so it is done under the lock, in the core's order.
    media: std::sync::OnceLock<crate::media::MediaLink>,
}

impl Hub {
    /// Wraps a fresh core.
    pub fn new(core: SignalCore) -> Arc<Self> {
        Self::with_backplane(core, None)
    }

    /// Wraps a core; a clustered one hands its commands to `backplane`.
    pub fn with_backplane(core: SignalCore, backplane: Option<Arc<dyn BackplaneOut>>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                core,
                conns: HashMap::new(),
                armed: None,
                admin_waiting: HashMap::new(),
                next_admin: 0,
            }),
            backplane,
            next_conn: AtomicU64::new(1),
            timer: Notify::new(),
            webhooks: std::sync::OnceLock::new(),
            media: std::sync::OnceLock::new(),
        })
    }

    /// Hands every lifecycle event from now on to `hooks` too (once).
    pub fn set_webhooks(&self, hooks: crate::webhooks::Webhooks) {
        let _ = self.webhooks.set(hooks);
    }

    /// Hands SFU rooms' media outputs to `link` from now on (once). In a
    /// cluster, the node may then make SFU rooms (it is their media node).
    pub fn set_media(&self, link: crate::media::MediaLink) {
        if self.media.set(link).is_ok() {
            self.lock().core.set_media_relay(true);
        }
    }

    /// The SFU's `data` for `peer` in `room`, as a `media` frame. `false`
    /// when the peer is no longer in that room.
    pub fn send_media(&self, room: &str, peer: &str, data: &RawValue) -> bool {
        let (sent, logs) = {
            let mut st = self.lock();
            let sent = st.core.send_media(Instant::now(), room, peer, data);
            (sent, self.drain(&mut st))
        };
        logs.write();
        sent
    }

    /// An `error` frame to `peer` about its media in `room`.
    pub fn media_error(&self, room: &str, peer: &str, code: ErrorCode, message: &str) -> bool {
        let (sent, logs) = {
            let mut st = self.lock();
            let sent = st
                .core
                .media_error(Instant::now(), room, peer, code, message);
            (sent, self.drain(&mut st))
        };
        logs.write();
        sent
    }

    /// New limits for the core, from the next request on (a reload).
    pub fn reconfigure(&self, config: switchboard_signal::Config) {
        self.lock().core.reconfigure(config);
    }

    /// A push from the cluster's store.
    pub fn push(&self, push: Push) {
        let logs = {
            let mut st = self.lock();
            st.core.handle_push(Instant::now(), push);
            self.drain(&mut st)
        };
        logs.write();
    }

    /// The store's answer to the oldest unanswered `Persist` or `Resumed`.
    pub fn persisted(&self, ok: bool) {
        let logs = {
            let mut st = self.lock();
            st.core.persisted(ok);
            self.drain(&mut st)
        };
        logs.write();
    }

    /// The backplane came back (or up for the first time): the core resyncs.
    pub fn backplane_up(&self) {
        let logs = {
            let mut st = self.lock();
            st.core.backplane_up(Instant::now());
            self.drain(&mut st)
        };
        logs.write();
    }

    /// The backplane is out of reach.
    pub fn backplane_down(&self) {
        let logs = {
            let mut st = self.lock();
            st.core.backplane_down(Instant::now());
            self.drain(&mut st)
        };
        logs.write();
    }

    /// A fresh connection number.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock is a bug, but the state is still the best we
        // have: keep serving rather than poisoning every connection.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection and starts a session on it.
    pub fn connect(
        &self,
        conn: ConnId,
        sink: Arc<dyn ConnSink>,
        identity: Identity,
        face: Face,
        ice: impl FnOnce(&str) -> Vec<IceServer>,
    ) {
        let logs = {
            let mut st = self.lock();
            st.conns.insert(conn, sink);
            st.core.connect(Instant::now(), conn, identity, face, ice);
            self.drain(&mut st)
        };
        logs.write();
    }

    /// Registers a new connection that resumes a session.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        &self,
        conn: ConnId,
        sink: Arc<dyn ConnSink>,
        session: &str,
        token: &str,
        last_seq: u64,
        identity: Identity,
        ice: impl FnOnce(&str) -> Vec<IceServer>,
    ) -> bool {
        let (ok, logs) = {
            let mut st = self.lock();
            st.conns.insert(conn, sink);
            let ok = st.core.resume(
                Instant::now(),
                conn,
                session,
                token,
                last_seq,
                identity,
                ice,
            );
            (ok, self.drain_replaying(&mut st, Some(conn)))
        };
        logs.write();
        ok
    }

    /// A text frame from a native connection, read at `now` (the caller
    /// has the time already: one clock read per frame is enough).
    pub fn text(&self, now: Instant, conn: ConnId, text: &str) {
        let logs = {
            let mut st = self.lock();
            st.core.handle_text(now, conn, text);
            self.drain(&mut st)
        };
        logs.write();
    }

    /// A binary frame from a native connection.
    pub fn binary(&self, conn: ConnId) {
        let logs = {
            let mut st = self.lock();
            st.core.handle_binary(Instant::now(), conn);
            self.drain(&mut st)
        };
        logs.write();
    }

    /// A classic (Socket.IO) event; returns the acknowledgement payload.
    pub fn classic<A: ClassicArg>(
        &self,
        conn: ConnId,
        event: &str,
        args: &[A],
        ack: bool,
    ) -> Option<Value> {
        let (reply, logs) = {
            let mut st = self.lock();
            let mut reply = st
                .core
                .handle_classic(Instant::now(), conn, event, args, ack);
            let logs = self.drain(&mut st);
            // The core counted every recipient it handed a `message` to;
            // those whose queue refused it do not have it.
            if logs.refused_messages > 0
                && let Some(n) = reply
                    .as_mut()
                    .and_then(|r| r.get_mut("delivered"))
                    .filter(|n| n.is_u64())
            {
                let count = n.as_u64().unwrap_or(0);
                *n = Value::from(count.saturating_sub(logs.refused_messages));
            }
            (reply, logs)
        };
        logs.write();
        reply
    }

    /// The connection ended. Returns whether the hub still knew it (a
    /// connection is let go once, whoever notices first).
    pub fn disconnect(&self, conn: ConnId, how: Disconnect) -> bool {
        let logs = {
            let mut st = self.lock();
            if st.conns.remove(&conn).is_none() {
                return false;
            }
            st.core.disconnect(Instant::now(), conn, how);
            self.drain(&mut st)
        };
        logs.write();
        true
    }

    /// An admin request (PROTOCOL.md §8): a node alone answers at once; a
    /// clustered core asks the store, so the answer may take a round trip.
    /// `Unavailable` when it has not come within `wait` (the store is slow
    /// or unreachable): the request is forgotten, its late answer dropped.
    pub async fn admin(
        &self,
        request: AdminRequest,
        wait: Duration,
    ) -> Result<AdminReply, AdminError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.lock();
            st.next_admin += 1;
            let id = st.next_admin;
            st.admin_waiting.insert(id, tx);
            st.core.admin(Instant::now(), AdminId(id), request);
            let logs = self.drain(&mut st);
            drop(st);
            logs.write();
            id
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            _ => {
                self.lock().admin_waiting.remove(&id);
                Err(AdminError::Unavailable)
            }
        }
    }

    /// Gauges and counters for `/metrics`.
    pub fn stats(&self) -> (Stats, Counters) {
        let st = self.lock();
        (st.core.stats(), st.core.counters())
    }

    /// Moves the core's output into the queues, closing slow readers, until
    /// the core has nothing more to say; then re-arms the timer. Returns
    /// what to log, for the caller to write once the lock is released.
    fn drain(&self, st: &mut State) -> Logs {
        self.drain_replaying(st, None)
    }

    /// `drain`, with the frames for `replaying` (a connection that just
    /// resumed) queued as a replay burst.
    fn drain_replaying(&self, st: &mut State, replaying: Option<ConnId>) -> Logs {
        let mut logs = Logs::default();
        let mut slow = Vec::new();
        // A resume that the cluster's store answered comes out of a push's
        // drain: its `resumed` marks the replay burst that follows.
        let mut replaying = replaying;
        loop {
            while let Some(out) = st.core.poll_output() {
                let (conn, queued) = match out {
                    Output::Frame { conn, frame } => {
                        if frame.seq.is_none() && frame.body.starts_with(RESUMED) {
                            replaying = Some(conn);
                        }
                        let sink = st.conns.get(&conn);
                        let queued = if replaying == Some(conn) {
                            sink.map(|s| s.send_replayed(frame))
                        } else {
                            sink.map(|s| s.send_frame(frame))
                        };
                        (conn, queued)
                    }
                    Output::Classic { conn, event } => {
                        let message = event.event == "message";
                        let queued = st.conns.get(&conn).map(|s| s.send_classic(event));
                        if message && !matches!(queued, Some(Ok(()))) {
                            // Before the next poll: a held ack counts it out.
                            st.core.classic_refused();
                            logs.refused_messages += 1;
                        }
                        (conn, queued)
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(sink) = st.conns.remove(&conn) {
                            sink.close(code, reason);
                        }
                        continue;
                    }
                    Output::Backplane(cmd) => {
                        if let Some(bp) = &self.backplane {
                            bp.send(cmd);
                        }
                        continue;
                    }
                    Output::ClassicReply { conn, payload } => {
                        if let Some(sink) = st.conns.get(&conn) {
                            sink.classic_reply(payload);
                        }
                        continue;
                    }
                    Output::Media(media) => {
                        self.hand_to_sfu(st, media);
                        continue;
                    }
                };
                if let Some(Err(QueueFull)) = queued {
                    // Detach at once: a later frame of this same drain must
                    // not be queued behind the one just refused, or the
                    // client would see a gap that replay cannot fill.
                    if let Some(sink) = st.conns.remove(&conn) {
                        metrics::counter!("switchboard_slow_reader_closes_total").increment(1);
                        sink.close(CLOSE_SLOW_READER, "slow reader");
                        slow.push(conn);
                        logs.slow.push(conn);
                    }
                }
            }
            if slow.is_empty() {
                break;
            }
            for conn in slow.drain(..) {
                st.core.disconnect(Instant::now(), conn, Disconnect::Abrupt);
            }
        }
        while let Some(answer) = st.core.poll_admin() {
            if let Some(tx) = st.admin_waiting.remove(&answer.id.0) {
                // The asker may have timed out: its answer has nowhere to go.
                let _ = tx.send(answer.result);
            }
        }
        while let Some(event) = st.core.poll_event() {
            if let Some(hooks) = self.webhooks.get() {
                hooks.observe(&event);
            }
            logs.events.push(event);
        }
        let next = st.core.poll_timeout();
        if next != st.armed {
            let earlier = match (next, st.armed) {
                (Some(n), Some(a)) => n < a,
                (Some(_), None) => true,
                _ => false,
            };
            st.armed = next;
            if earlier {
                self.timer.notify_one();
            }
        }
        logs
    }

    /// Queues an SFU room's output for the media driver, never waiting: a
    /// `media` request it cannot take now gets `unavailable` (the client
    /// may send it again), a join or leave always goes through.
    fn hand_to_sfu(&self, st: &mut State, media: MediaOutput) {
        let Some(link) = self.media.get() else {
            // Rooms are SFU rooms only when a client asked; nothing here
            // relays their media.
            if let MediaOutput::Joined { room, peer, .. } | MediaOutput::Signal { room, peer, .. } =
                &media
            {
                st.core.media_error(
                    Instant::now(),
                    room,
                    peer,
                    ErrorCode::Unavailable,
                    "this server relays no media (media.listen is off)",
                );
            }
            return;
        };
        match media {
            MediaOutput::Joined { room, peer, conn } => {
                // A peer of another node (this is its room's media node)
                // has no connection here.
                let reached = conn
                    .and_then(|conn| st.conns.get(&conn))
                    .and_then(|sink| sink.local_ip());
                link.joined(room, peer, reached);
            }
            MediaOutput::Left { room, peer } => link.left(room, peer),
            MediaOutput::Signal { room, peer, data } => {
                let refused = link.signal(room.clone(), peer.clone(), data).is_err();
                if refused {
                    st.core.media_error(
                        Instant::now(),
                        &room,
                        &peer,
                        ErrorCode::Unavailable,
                        "the media relay is busy; send it again",
                    );
                }
            }
        }
    }

    /// Runs the core's timers until `shutdown`.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let deadline = self.lock().armed;
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.timer.notified() => continue,
                () = sleep => {
                    let logs = {
                        let mut st = self.lock();
                        st.core.handle_timeout(Instant::now());
                        // Force a fresh arm even if the core returns the same instant.
                        st.armed = None;
                        self.drain(&mut st)
                    };
                    logs.write();
                }
            }
        }
    }

    /// A graceful stop of a cluster node: its SFU rooms move to other
    /// nodes now (see `SignalCore::media_away`).
    pub fn media_away(&self) {
        let logs = {
            let mut st = self.lock();
            st.core.media_away();
            self.drain(&mut st)
        };
        logs.write();
    }

    /// Closes every connection with `code` (shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        let st = self.lock();
        for sink in st.conns.values() {
            sink.close(code, reason);
        }
    }
}

/// What a drain has to log. Written after the hub's lock is released, so
/// that a slow log sink never holds up every connection. Both lists stay
/// unallocated in the common case (a relayed message logs nothing).
#[derive(Default)]
struct Logs {
    events: Vec<Event>,
    slow: Vec<ConnId>,
    /// Classic `message` events that no queue took in this drain.
    refused_messages: u64,
}

impl Logs {
    fn write(self) {
        for conn in self.slow {
            tracing::info!(conn = conn.0, "closed a slow reader (1013)");
        }
        for event in &self.events {
            log_event(event);
        }
    }
}

/// Lifecycle events are rare (never one per relayed message): info level.
fn log_event(event: &Event) {
    match event {
        Event::SessionStarted {
            conn,
            peer,
            user,
            face,
            ..
        } => {
            tracing::info!(conn = conn.0, %peer, user = user.as_deref().unwrap_or(""), ?face, "session started");
        }
        Event::Suspended { conn, peer, .. } => {
            if conn.0 == u64::MAX {
                // A session adopted from a dead node: it had no connection here.
                tracing::info!(%peer, "adopted from a dead node; grace period");
            } else {
                tracing::info!(conn = conn.0, %peer, "connection dropped; grace period");
            }
        }
        Event::SessionResumed {
            conn,
            peer,
            replayed,
            ..
        } => {
            tracing::info!(conn = conn.0, %peer, replayed, "session resumed");
        }
        Event::ResumeFailed { conn, reason } => {
            tracing::info!(conn = conn.0, %reason, "resume failed")
        }
        Event::Joined { peer, room, peers } => tracing::info!(%peer, %room, peers, "joined"),
        Event::RoomFull { peer, room } => tracing::info!(%peer, %room, "room full"),
        Event::Left {
            peer,
            room,
            peers,
            reason,
        } => tracing::info!(%peer, %room, peers, %reason, "left"),
        Event::SessionEnded { peer, reason, .. } => tracing::info!(%peer, %reason, "session ended"),
        Event::CallStarted {
            call,
            caller,
            callee,
            rung,
        } => {
            tracing::info!(%call, %caller, %callee, rung, "call ringing");
        }
        Event::CallAccepted { call, room } => tracing::info!(%call, %room, "call accepted"),
        Event::CallEnded { call, reason } => tracing::info!(%call, ?reason, "call ended"),
        other => tracing::debug!(?other, "signaling event"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicUsize;

    use switchboard_signal::Config;
    use tracing::span;

    use super::*;

    /// Accepts every frame.
    struct Sink;

    impl ConnSink for Sink {
        fn send_frame(&self, _frame: OutFrame) -> Result<(), QueueFull> {
            Ok(())
        }
        fn send_classic(&self, _event: ClassicEvent) -> Result<(), QueueFull> {
            Ok(())
        }
        fn close(&self, _code: u16, _reason: &'static str) {}
    }

    /// A log sink that notes whether the hub's lock is held while it writes.
    #[derive(Default)]
    struct Probe {
        hub: OnceLock<Arc<Hub>>,
        events: AtomicUsize,
        under_lock: AtomicUsize,
    }

    struct ProbeRef(Arc<Probe>);

    impl tracing::Subscriber for ProbeRef {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            if let Some(hub) = self.0.hub.get() {
                self.0.events.fetch_add(1, Ordering::Relaxed);
                if hub.state.try_lock().is_err() {
                    self.0.under_lock.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[test]
    fn lifecycle_logs_are_written_after_the_lock_is_released() {
        let probe = Arc::new(Probe::default());
        let hub = Hub::new(SignalCore::new(Config::default(), [3; 32]));
        let _ = probe.hub.set(hub.clone());
        tracing::subscriber::with_default(ProbeRef(probe.clone()), || {
            let conn = hub.next_conn_id();
            hub.connect(
                conn,
                Arc::new(Sink),
                Identity::default(),
                Face::Native,
                |_| Vec::new(),
            );
            hub.text(Instant::now(), conn, r#"{"type":"join","room":"r"}"#);
            hub.disconnect(conn, Disconnect::Clean);
        });
        assert!(probe.events.load(Ordering::Relaxed) >= 3);
        assert_eq!(probe.under_lock.load(Ordering::Relaxed), 0);
    }
}
