//! The sans-IO signaling core of switchboard: rooms, sessions, replay
//! buffers and direct calls (PROTOCOL.md §1–§3).
//!
//! No sockets, no clock, no threads: `now` is always an argument, and
//! randomness (ids, resume tokens) comes from a ChaCha20 CSPRNG seeded by the
//! caller. The shell moves bytes; the core decides.
//!
//! # How the shell drives it
//!
//! Hand every input to a `handle_*` method (or `connect`, `resume`,
//! `disconnect`), then drain [`SignalCore::poll_output`] until `None`, then
//! [`SignalCore::poll_event`] until `None` (lifecycle events for logs and
//! metrics: sessions, joins, leaves, calls; never one per relayed message),
//! then re-arm one timer at [`SignalCore::poll_timeout`] and call
//! [`SignalCore::handle_timeout`] when it fires. [`SignalCore::counters`]
//! and [`SignalCore::stats`] can be read at any time, e.g. on a `/metrics`
//! scrape:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchboard_signal::{Config, ConnId, Event, Face, Identity, Output, SignalCore};
//!
//! let mut core = SignalCore::new(Config::default(), [7; 32]);
//! let t0 = Instant::now(); // the shell reads its clock; tests use a virtual one
//! let alice = ConnId(1);
//! core.connect(t0, alice, Identity::default(), Face::Native, |_peer| Vec::new());
//! core.handle_text(t0, alice, r#"{"type":"join","room":"lobby","id":1}"#);
//!
//! let mut wire = Vec::new();
//! while let Some(out) = core.poll_output() {
//!     match out {
//!         Output::Frame { conn, frame } => {
//!             wire.clear();
//!             frame.write_to(&mut wire); // `{"seq":N,` spliced in per recipient
//!             // send `wire` as one text frame on `conn`'s bounded queue
//!             # let _ = (conn, &wire);
//!         }
//!         Output::Classic { conn, event } => {
//!             // socket.emit(event.event, event.args) on `conn`
//!             # let _ = (conn, event);
//!         }
//!         Output::Close { conn, code, reason } => {
//!             // close `conn` with `code` and `reason`
//!             # let _ = (conn, code, reason);
//!         }
//!         // Only from a clustered core (`SignalCore::clustered`).
//!         Output::Backplane(_) | Output::ClassicReply { .. } => {}
//!         // SFU rooms only: for the media relay (see `MediaOutput`).
//!         Output::Media(_) => {}
//!     }
//! }
//! while let Some(event) = core.poll_event() {
//!     match event {
//!         Event::Joined { peer, room, .. } => {
//!             // tracing::info!(%peer, %room, "joined")
//!             # let _ = (peer, room);
//!         }
//!         _ => {} // the enum is non-exhaustive: more may come
//!     }
//! }
//! assert_eq!(core.stats().rooms, 1);
//! assert_eq!(core.counters().requests, 1);
//!
//! // The socket dropped without a close frame: the grace period starts.
//! core.disconnect(t0, alice, switchboard_signal::Disconnect::Abrupt);
//! let deadline = core.poll_timeout().expect("grace timer");
//! assert_eq!(deadline, t0 + Duration::from_secs(20));
//! core.handle_timeout(deadline); // unresumed: the session ends, `bye` to the room
//! assert_eq!(core.stats().sessions, 0);
//! ```
//!
//! The admin API (PROTOCOL.md §8: room views, kick, close-room) is one more
//! input, [`SignalCore::admin`], whose answers come out of
//! [`SignalCore::poll_admin`]: see [`admin`].
//!
//! # Choices where PROTOCOL.md is silent
//!
//! - **`resume_failed`** is sent *without* `seq` (like `welcome`): it belongs
//!   to no session. Exactly
//!   `{"type":"error","code":"resume_failed","message":"..."}`, then the new
//!   session's `welcome`, whose frames count from `seq` 1. When the token was
//!   right but the frames are no longer kept (or `last_seq` is ahead of what
//!   was sent), the old session ends at once (`bye` to its rooms; a socket
//!   still bound to it is closed with 4001): its owner is starting over. A
//!   wrong token or unknown session leaves any session untouched.
//! - **Replay** keeps the last `replay_frames` sequenced frames of a native
//!   session, connected or not (frames in flight when a socket dies are
//!   replayed too), and no more than `replay_bytes` of their bodies (1 MiB
//!   by default; the newest frame is always kept). Without the byte bound
//!   a flood of large messages would pin `replay_frames` ×
//!   `max_message_bytes` per recipient. The bodies are copied in (see
//!   `ReplayBuffer` for why). That eviction happens only while the session
//!   is connected: a session in its grace period takes a frame only if it
//!   fits without evicting one; otherwise it ends at once
//!   ([`EndReason::ReplayFull`]: `bye` now, the frame not counted in
//!   `delivered`, a `to` message for it answered `no_such_peer`).
//! - **`ping` with `last_seq`** forgets the frames with `seq <= last_seq`
//!   and gives the buffer's memory back when it is mostly empty; a
//!   `last_seq` beyond the last frame sent is a `bad_request` that forgets
//!   nothing. A later resume from before `last_seq` gets `resume_failed`.
//! - **Join amplification**: a `meta` (of `join` or `call`) longer than
//!   `max_meta_bytes` gets `too_large`; a join that would make the room's
//!   `joined` list longer than `max_room_meta_bytes` gets `full`.
//! - **Ringing calls**: a caller with `max_ringing_per_caller` calls
//!   ringing gets `rate_limited` for the next one.
//! - **Sessions in grace** per user id and per source IP are capped
//!   (`max_suspended_per_user`, `max_suspended_per_ip`): one more ends the
//!   oldest of them at once ([`EndReason::TooManySuspended`]).
//! - **`max_rooms_per_session`**: a join beyond it gets `forbidden`
//!   ("room limit reached (N rooms per session)"); a call's room does not
//!   count against it, nor against `rooms.max_peers` or the token's `rooms`.
//! - **Call rooms** are named `call-` + 22 URL-safe characters (128 random
//!   bits); only the caller's and the accepting sessions may join one, anyone
//!   else gets `forbidden`. In a call room the caller's `meta` is the call's.
//! - **Decline**: the caller gets `declined`; the callee's other rung
//!   connections get `call_ended` with reason `declined`. `decline` and
//!   `cancel` send nothing back to the requester on success.
//! - **Anonymous callers** (no user id) may call; `incoming_call.from` is then
//!   `null`. Calling oneself rings one's other connections only.
//! - **Rate limit**: one token per text frame or classic event, refused frames
//!   included; `rate_per_sec = 0` turns it off. Over it, the request is
//!   dropped and answered by `rate_limited` (with `reply_to` when the frame had
//!   an `id` within its first 256 bytes, found by a scan, not a parse: a
//!   refused frame is never parsed). Then `too_large`, on the byte length,
//!   unparsed.
//! - **Classic face**: size is measured on the serialized `data` of a
//!   `message` (the core serializes it anyway for native recipients). Errors
//!   are an `error` event `{code, message}`. Ack payloads: `message` →
//!   `{"delivered":N}`; a refused `message` → `{"code","message","delivered":0}`;
//!   `join`/`leave` → `{"ok":true}`, `{"full":true}` or the error object.
//!   Unknown events get an `error` event `bad_request`.
//! - `meta` must be a JSON object (or `null`/absent, shown as `{}`).
//! - **SFU rooms** (§7): a room's kind is decided by the join that makes
//!   it (its `media`, else [`Config::default_media`]); a call's room is a
//!   mesh room. The media relay hears of native peers only, through
//!   [`Output::Media`] (see [`MediaOutput`] for when); a `media` request
//!   gets no reply on success, and [`SignalCore::send_media`] /
//!   [`SignalCore::media_error`] send sequenced frames kept for replay.
//!   docs/protocol-notes.md has the rest.
//!
//! [`Config::default`] holds the protocol defaults: `max_peers` 0 (no
//! limit), `max_rooms_per_session` 16, `max_message_bytes` 65536,
//! `rate_per_sec` 50, `rate_burst` 200, `resume_grace` 20 s,
//! `replay_frames` 1024, `ring_timeout` 30 s, `max_meta_bytes` 4096,
//! `max_room_meta_bytes` 256 KiB, `max_ringing_per_caller` 4,
//! `max_suspended_per_user` 8, `max_suspended_per_ip` 128.
//!
//! # One node of a cluster
//!
//! [`SignalCore::clustered`] makes a core that shares rooms, calls and
//! sessions with other nodes through a store ([`cluster`], PROTOCOL.md §6).
//! The shell then also hands every [`Output::Backplane`] command to the
//! backplane in order, feeds the store's pushes to
//! [`SignalCore::handle_push`], answers every `Persist` and `Resumed` with
//! [`SignalCore::persisted`], and says when the backplane comes and goes
//! ([`SignalCore::backplane_up`], [`SignalCore::backplane_down`]). The node
//! stays the authority for its own connections and asks the store only
//! what needs the others; a core made with [`SignalCore::new`] never takes
//! those paths, so a node alone runs as it always did.
//!
//! What changes for a client in a cluster, where PROTOCOL.md is silent:
//! - A frame reaches a native connection only once the store has it (one
//!   store round trip later), so that a resume on any node finds every
//!   frame the client may lack, and `seq` never forks between nodes.
//! - `ack`s and classic acknowledgements wait for the store's count of
//!   every node's recipients; classic acknowledgements then come as
//!   [`Output::ClassicReply`], in the order of the events.
//! - A resume that only the store can decide while it is out of reach is
//!   closed with 1013 (try again) rather than answered `resume_failed`.
//! - While the store is out of reach, an `ack` counts the recipients on
//!   this node whose connection took the frame.
//! - Admin views and kicks go through the store, which knows every node's
//!   rooms: their answers come after a store round trip, and a kick of a
//!   peer on another node reaches it through that node.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
mod calls;
mod classic;
pub mod cluster;
mod cluster_calls;
mod cluster_media;
mod cluster_sessions;
mod clustered;
mod idmap;
mod media;
mod native;
mod observe;
mod outbox;
mod presence;
mod rooms;
mod session;
mod wire;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use switchboard_signal_proto::RequestId;
pub use switchboard_signal_proto::{CallEndReason, ErrorCode, IceServer, MediaKind};

pub use crate::admin::{
    AdminAnswer, AdminError, AdminId, AdminReply, AdminRequest, Media, PeerView, RoomDetail,
    RoomSummary,
};
pub use crate::classic::{ClassicArg, ClassicArgs};
pub use crate::media::MediaOutput;
pub use crate::observe::{
    Counters, EVENT_QUEUE_CAP, EndReason, Event, LeaveReason, ResumeFailReason,
};

pub use crate::clustered::ClusterConfig;

use crate::calls::Calls;
use crate::idmap::IdMap;
use crate::observe::Events;
use crate::outbox::Outbox;
use crate::rooms::Rooms;
use crate::session::{ReplayBuffer, Session, Sid, TokenBucket};

/// A transport connection, numbered by the shell. A session outlives its
/// connections: a resume binds the same session to a new `ConnId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Who a connection is, as the shell established it before the upgrade
/// (JWT claims when auth is on, `?user=` when it is off).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// User id: the token's `sub`, or `?user=`. Used by direct calls.
    pub user: Option<String>,
    /// Display name (`name` claim).
    pub name: Option<String>,
    /// Rooms the token may join; `None` means any.
    pub rooms: Option<Vec<String>>,
    /// The connection's source address, for the per-IP cap on sessions in
    /// their grace period (`max_suspended_per_ip`). `None`: not counted.
    pub source_ip: Option<IpAddr>,
}

/// Which wire face a session speaks. Both share one room registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// PROTOCOL.md §1: JSON frames with `seq`, replay and resume.
    Native,
    /// PROTOCOL.md §2: classic socket.io events; no seq, no resume: a
    /// disconnect is final at once.
    Classic,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Close code 1000/1001 (or a classic disconnect): `bye` at once.
    Clean,
    /// Anything else: the grace period starts, frames are kept.
    Abrupt,
}

/// Limits and timers of the core; the shell fills it from its config.
#[derive(Debug, Clone)]
pub struct Config {
    /// `rooms.max_peers`; 0 = no limit.
    pub max_peers: usize,
    /// `limits.max_rooms_per_session`; 0 = no limit. A join beyond it gets
    /// `forbidden`.
    pub max_rooms_per_session: usize,
    /// `limits.max_message_bytes`: a larger text frame gets `too_large`.
    pub max_message_bytes: usize,
    /// `limits.rate_per_sec`: token-bucket refill per second, per session;
    /// 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// `limits.rate_burst`: token-bucket capacity.
    pub rate_burst: u32,
    /// `session.resume_grace_secs`.
    pub resume_grace: Duration,
    /// `session.replay_frames`: frames kept per native session for resume.
    pub replay_frames: usize,
    /// `session.replay_bytes`: bytes of frame bodies kept per native
    /// session for resume (the newest frame is always kept).
    pub replay_bytes: usize,
    /// `calls.ring_timeout_secs`.
    pub ring_timeout: Duration,
    /// `limits.max_meta_bytes`: a `join` or `call` whose `meta` is longer
    /// (as JSON text) gets `too_large`.
    pub max_meta_bytes: usize,
    /// `limits.max_room_meta_bytes`: what a room's `joined` may list, in
    /// bytes (each member costs its meta's length plus
    /// [`MEMBER_ENTRY_BYTES`]); a join beyond it gets `full`. 0 = no limit.
    pub max_room_meta_bytes: usize,
    /// `calls.max_ringing_per_caller`: calls one session may have ringing
    /// at once; the next `call` gets `rate_limited`. 0 = no limit.
    pub max_ringing_per_caller: usize,
    /// `session.max_suspended_per_user`: sessions of one user id in their
    /// grace period at once; beyond it the oldest ends. 0 = no limit.
    pub max_suspended_per_user: usize,
    /// `session.max_suspended_per_ip`: the same per source IP.
    pub max_suspended_per_ip: usize,
    /// `rooms.media`: the kind of a room made by a join that does not say
    /// (PROTOCOL.md §7). A clustered core refuses joins that would make an
    /// SFU room (SFU rooms need a single node for now).
    pub default_media: MediaKind,
}

/// What one member adds to `joined` besides its meta: the peer id and the
/// punctuation around it, rounded up.
pub const MEMBER_ENTRY_BYTES: usize = 32;

impl Default for Config {
    /// The protocol defaults (PROTOCOL.md), and the shell's for the limits
    /// the protocol leaves open: no room cap, 16 rooms per session, 64 KiB
    /// frames, 50 requests/s with bursts of 200, 20 s grace, 1024 replay
    /// frames of at most 1 MiB in all, 30 s ring timeout.
    fn default() -> Self {
        Config {
            max_peers: 0,
            max_rooms_per_session: 16,
            max_message_bytes: 65536,
            rate_per_sec: 50,
            rate_burst: 200,
            resume_grace: Duration::from_secs(20),
            replay_frames: 1024,
            replay_bytes: 1 << 20,
            ring_timeout: Duration::from_secs(30),
            max_meta_bytes: 4096,
            max_room_meta_bytes: 256 << 10,
            max_ringing_per_caller: 4,
            max_suspended_per_user: 8,
            max_suspended_per_ip: 128,
            default_media: MediaKind::Mesh,
        }
    }
}

/// A server frame ready to send. The JSON body is serialized once and
/// shared (`Bytes`) among all recipients of a fan-out; `seq` differs per
/// recipient and is spliced in when the frame is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    /// `None` for `welcome` and `resumed`.
    pub seq: Option<u64>,
    /// A JSON object, starting with `{`, without `seq`.
    pub body: Bytes,
}

impl OutFrame {
    /// Writes the frame's text, `{"seq":N,` + the body after its `{`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self.seq {
            Some(seq) if self.body.len() > 1 => {
                // Writing into a Vec cannot fail.
                let _ = write!(out, "{{\"seq\":{seq}");
                if self.body.len() > 2 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.body[1..]);
            }
            _ => out.extend_from_slice(&self.body),
        }
    }
}

/// A classic (socket.io, §2) event: its name and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicEvent {
    /// `joined`, `otherjoin`, `full`, `message`, `bye`, `leaved`, `error`.
    pub event: &'static str,
    /// The event's arguments, e.g. `[room, id]` or `[room, data]`, as JSON
    /// text (`data` exactly as its sender wrote it).
    pub args: ClassicArgs,
}

/// What the core asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame on a native connection.
    Frame {
        /// Where to.
        conn: ConnId,
        /// What.
        frame: OutFrame,
    },
    /// Emit an event on a classic connection.
    Classic {
        /// Where to.
        conn: ConnId,
        /// What.
        event: ClassicEvent,
    },
    /// Close a connection (e.g. an old socket taken over by a resume).
    Close {
        /// Which.
        conn: ConnId,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// A command for the cluster's store (only from a
    /// [`SignalCore::clustered`] core): hand it to the backplane in order.
    Backplane(cluster::Command),
    /// The acknowledgement payload of a classic event that
    /// [`SignalCore::handle_classic`] could not answer at once (a clustered
    /// core waits for the store). They come in the order of the events, per
    /// connection: answer the oldest unanswered acknowledgement of `conn`.
    ClassicReply {
        /// Which connection.
        conn: ConnId,
        /// The payload, as `handle_classic` would have returned it.
        payload: Value,
    },
    /// For the media relay (SFU rooms only, PROTOCOL.md §7): a native peer
    /// entered or left an SFU room, or sent a `media` request. Hand them
    /// to the SFU in order; its answers go back with
    /// [`SignalCore::send_media`] and [`SignalCore::media_error`].
    Media(MediaOutput),
}

/// The signaling state machine: sessions, rooms, replay buffers, calls.
#[derive(Debug)]
pub struct SignalCore {
    config: Config,
    rng: ChaCha20Rng,
    sessions: IdMap<Sid, Session>,
    by_conn: IdMap<ConnId, Sid>,
    by_session_id: HashMap<Arc<str>, Sid>,
    by_peer: HashMap<Arc<str>, Sid>,
    /// Native sessions per user id, for direct calls.
    by_user: HashMap<Arc<str>, Vec<Sid>>,
    /// Sessions in their grace period per user id and per source IP, oldest
    /// first, for the caps on them (only kept when the cap is on).
    suspended_by_user: HashMap<Arc<str>, Vec<Sid>>,
    suspended_by_ip: HashMap<IpAddr, Vec<Sid>>,
    rooms: Rooms,
    calls: Calls,
    timers: BTreeSet<(Instant, Timer)>,
    outbox: Outbox,
    events: Events,
    counters: Counters,
    next_sid: u64,
    /// Answers that are sent often and never change, serialized once.
    rate_limited: Bytes,
    too_large: Bytes,
    /// A native sender's `ack` that waits for its Socket.IO recipients.
    pending_ack: Option<PendingAck>,
    /// Set when the core is one node of a cluster (see [`cluster`]).
    cluster: Option<Box<clustered::Clustered>>,
    /// Admin answers not polled yet.
    admin_out: admin::AdminQueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Grace(Sid),
    Ring(u64),
    /// A clustered core's heartbeat to the store.
    Heartbeat,
    /// A call rung on this node by another node's caller: forgotten if the
    /// caller's node never says how it ended.
    RemoteRing(u64),
}

/// The `ack` of a native `message` with Socket.IO recipients: the shell
/// queues their events only as it drains, and may find a queue full.
#[derive(Debug)]
pub(crate) struct PendingAck {
    pub(crate) sid: Sid,
    pub(crate) id: RequestId,
    pub(crate) delivered: u64,
    pub(crate) refused: u64,
}

/// A request refused with a protocol error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: Cow<'static, str>,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

pub(crate) const TAKEN_OVER: u16 = 4001;
/// "Try again later": a resume the store must decide while it is out of
/// reach.
pub(crate) const BACKPLANE_DOWN: u16 = 1013;

/// Why a resume was refused.
#[derive(Debug, Clone, Copy)]
enum ResumeFailure {
    /// Unknown session or wrong token: the session, if any, is untouched.
    Unknown,
    /// The right owner, but the frames it lacks are no longer kept.
    Gap(Sid),
}

impl SignalCore {
    /// A core with no sessions. `seed` feeds the CSPRNG for ids and tokens;
    /// the shell passes OS randomness, tests a constant.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let rate_limited =
            wire::error(ErrorCode::RateLimited, "too many requests; slow down", None);
        let too_large = wire::error(
            ErrorCode::TooLarge,
            &format!("frame over {} bytes", config.max_message_bytes),
            None,
        );
        SignalCore {
            outbox: Outbox::new(config.replay_frames, config.replay_bytes),
            config,
            rng: ChaCha20Rng::from_seed(seed),
            sessions: IdMap::default(),
            by_conn: IdMap::default(),
            by_session_id: HashMap::new(),
            by_peer: HashMap::new(),
            by_user: HashMap::new(),
            suspended_by_user: HashMap::new(),
            suspended_by_ip: HashMap::new(),
            rooms: Rooms::default(),
            calls: Calls::default(),
            timers: BTreeSet::new(),
            events: Events::default(),
            counters: Counters::default(),
            next_sid: 0,
            rate_limited,
            too_large,
            pending_ack: None,
            cluster: None,
            admin_out: admin::AdminQueue::new(),
        }
    }

    /// Limits and timers for what comes next (a configuration reload):
    /// joins, messages, calls and grace periods from now on are checked
    /// against `config`; what is under way (a call ringing, a session in
    /// its grace period) keeps the deadline it has. `replay_frames` and
    /// `replay_bytes` are not changed: live sessions' replay buffers, and
    /// the shell's queues, were sized from them.
    pub fn reconfigure(&mut self, mut config: Config) {
        config.replay_frames = self.config.replay_frames;
        config.replay_bytes = self.config.replay_bytes;
        self.too_large = wire::error(
            ErrorCode::TooLarge,
            &format!("frame over {} bytes", config.max_message_bytes),
            None,
        );
        self.config = config;
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A core that is one node of a cluster: rooms, calls and sessions are
    /// shared through a store it talks to with [`Output::Backplane`] and
    /// [`SignalCore::handle_push`]. It starts cut off: call
    /// [`SignalCore::backplane_up`] once the backplane is reachable.
    pub fn clustered(config: Config, seed: [u8; 32], cluster: ClusterConfig) -> Self {
        let mut core = SignalCore::new(config, seed);
        core.cluster = Some(Box::new(clustered::Clustered::new(cluster)));
        core
    }

    /// A new connection with a fresh session. Native: queues `welcome`
    /// (with `ice_servers(peer_id)`). Classic: queues nothing.
    pub fn connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        identity: Identity,
        face: Face,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) {
        // A reused connection number means the old connection is gone.
        self.flush_ack();
        if self.by_conn.contains_key(&conn) {
            self.disconnect(now, conn, Disconnect::Clean);
        }
        let sid = self.new_session(now, conn, identity, face);
        if face == Face::Native {
            self.welcome(sid, conn, ice_servers);
        }
        self.settle();
    }

    /// A new native connection asking to resume `session`. On success:
    /// `resumed`, then every kept frame with `seq > last_seq`, in order; a
    /// live old connection gets `Output::Close` (takeover). On failure:
    /// `error resume_failed`, then a fresh session's `welcome` (using
    /// `identity` and `ice_servers`). Returns whether it resumed.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: &str,
        resume_token: &str,
        last_seq: u64,
        identity: Identity,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) -> bool {
        self.flush_ack();
        if self.by_conn.contains_key(&conn) {
            self.disconnect(now, conn, Disconnect::Clean);
        }
        let resumed = self.resume_or_start_over(
            now,
            conn,
            session,
            resume_token,
            last_seq,
            identity,
            ice_servers,
        );
        self.settle();
        resumed
    }

    #[allow(clippy::too_many_arguments)]
    fn resume_or_start_over(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: &str,
        resume_token: &str,
        last_seq: u64,
        identity: Identity,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) -> bool {
        if self.cluster_down() && !self.by_session_id.contains_key(session) {
            // Only the store knows this session, and it is out of reach:
            // the client tries again (maybe on another node) rather than
            // lose its session to a `resume_failed`.
            self.outbox
                .close(conn, BACKPLANE_DOWN, "cluster backplane unreachable");
            return false;
        }
        if self.cluster_takes(session, last_seq) {
            // Another node's session: the store decides, the answer comes
            // as a push. The fresh session a failure would start needs its
            // ICE servers now, while the shell's closure is at hand.
            let peer = self.fresh_peer_id();
            let ice = ice_servers(&peer);
            self.cluster_take(conn, session, resume_token, last_seq, identity, peer, ice);
            return false;
        }
        let rooms = identity.rooms.as_deref();
        match self.try_resume(
            conn,
            session,
            resume_token,
            last_seq,
            identity.source_ip,
            rooms,
        ) {
            Ok(()) => true,
            Err(failure) => {
                let reason = match failure {
                    ResumeFailure::Unknown => ResumeFailReason::Unknown,
                    ResumeFailure::Gap(sid) => {
                        // The owner proved itself and starts over: its old
                        // presence goes now rather than at grace expiry.
                        if let Some(old) = self.sessions.get(&sid).and_then(|s| s.conn) {
                            self.outbox.close(old, TAKEN_OVER, "taken over");
                        }
                        self.end_session(sid, EndReason::StartedOver);
                        ResumeFailReason::FramesLost
                    }
                };
                let peer = self.fresh_peer_id();
                let ice = ice_servers(&peer);
                self.start_over(now, conn, reason, identity, peer, &ice);
                false
            }
        }
    }

    /// `resume_failed`, then a fresh session's `welcome` on `conn`.
    pub(crate) fn start_over(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: ResumeFailReason,
        identity: Identity,
        peer: Arc<str>,
        ice: &[IceServer],
    ) {
        let why = match reason {
            ResumeFailReason::FramesLost => {
                "the frames after last_seq are no longer kept; join again"
            }
            _ => "no such session, or a wrong resume token; join again",
        };
        self.counters.resumes_failed += 1;
        self.counters.error(ErrorCode::ResumeFailed);
        self.events.push(Event::ResumeFailed { conn, reason });
        let body = wire::error(ErrorCode::ResumeFailed, why, None);
        self.outbox.unsequenced(conn, body);
        let sid = self.new_session_as(now, conn, identity, Face::Native, peer);
        if let Some(s) = self.sessions.get(&sid) {
            let body = wire::welcome(&s.id, &s.resume_token, &s.peer, ice);
            self.outbox.unsequenced(conn, body);
        }
    }

    pub(crate) fn try_resume(
        &mut self,
        conn: ConnId,
        session: &str,
        token: &str,
        last_seq: u64,
        source_ip: Option<IpAddr>,
        allowed_rooms: Option<&[String]>,
    ) -> Result<(), ResumeFailure> {
        let sid = *self
            .by_session_id
            .get(session)
            .ok_or(ResumeFailure::Unknown)?;
        let s = self.sessions.get(&sid).ok_or(ResumeFailure::Unknown)?;
        if s.face != Face::Native || !s.token_matches(token) {
            return Err(ResumeFailure::Unknown);
        }
        self.resumes_here(sid, last_seq);
        let s = self.sessions.get_mut(&sid).ok_or(ResumeFailure::Unknown)?;
        if s.replay.after(last_seq, s.seq).is_none() {
            return Err(ResumeFailure::Gap(sid));
        }
        if let Some(old) = s.conn.take() {
            self.by_conn.remove(&old);
            self.outbox.close(old, TAKEN_OVER, "taken over");
        }
        if let Some(t) = s.grace_until.take() {
            self.timers.remove(&(t, Timer::Grace(sid)));
        }
        if self.cluster.is_some() {
            // A session adopted from a dead node came without its token's
            // rooms: the resuming connection's token says them again.
            s.allowed_rooms = allowed_rooms.map(|r| r.iter().map(|x| x.as_str().into()).collect());
        }
        let (user, old_ip) = (s.user.clone(), s.ip);
        s.ip = source_ip;
        s.conn = Some(conn);
        self.by_conn.insert(conn, sid);
        self.outbox.unsequenced(conn, wire::resumed(&s.id, &s.peer));
        let mut replayed = 0;
        if let Some(frames) = s.replay.after(last_seq, s.seq) {
            for (seq, body) in frames {
                self.outbox.replayed(conn, seq, body);
                replayed += 1;
            }
        }
        self.counters.resumes += 1;
        self.events.push(Event::SessionResumed {
            conn,
            session: s.id.to_string(),
            peer: s.peer.to_string(),
            replayed,
        });
        self.forget_suspended(sid, user.as_deref(), old_ip);
        Ok(())
    }

    /// A text frame from a native connection (size, JSON, rate limit and
    /// every request of §1 and §3 are checked here).
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        self.flush_ack();
        if let Some(&sid) = self.by_conn.get(&conn) {
            self.counters.requests += 1;
            self.native_text(now, sid, text);
            self.settle();
        }
    }

    /// A binary frame from a native connection: `bad_request`.
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId) {
        self.flush_ack();
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        self.counters.requests += 1;
        let body = if s
            .bucket
            .take(now, self.config.rate_per_sec, self.config.rate_burst)
        {
            self.counters.error(ErrorCode::BadRequest);
            wire::error(
                ErrorCode::BadRequest,
                "binary frames are not part of the protocol; send JSON text",
                None,
            )
        } else {
            self.counters.error(ErrorCode::RateLimited);
            self.rate_limited.clone()
        };
        self.outbox.frame(sid, s, body);
        self.settle();
    }

    /// A classic event (`join`, `message`, `leave`) with its arguments.
    /// `ack` is true when the client asked for an acknowledgement; the
    /// return value is then the ack's payload (`{"delivered":N}` or an error).
    /// A clustered core returns `None` and answers every acknowledgement
    /// later, in order, with [`Output::ClassicReply`].
    pub fn handle_classic<A: ClassicArg>(
        &mut self,
        now: Instant,
        conn: ConnId,
        event: &str,
        args: &[A],
        ack: bool,
    ) -> Option<Value> {
        self.flush_ack();
        let sid = *self.by_conn.get(&conn)?;
        self.counters.requests += 1;
        let payload = self.classic_event(now, sid, event, args, ack);
        self.settle();
        if ack && self.cluster.is_none() {
            Some(payload)
        } else {
            None
        }
    }

    /// The connection ended.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId, how: Disconnect) {
        self.flush_ack();
        let Some(sid) = self.by_conn.remove(&conn) else {
            self.take_abandoned(conn);
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.conn = None;
        if how == Disconnect::Clean || s.face == Face::Classic {
            self.end_session(sid, EndReason::Closed);
            self.settle();
            return;
        }
        let until = now + self.config.resume_grace;
        s.grace_until = Some(until);
        self.timers.insert((until, Timer::Grace(sid)));
        self.events.push(Event::Suspended {
            conn,
            peer: s.peer.to_string(),
            until,
        });
        self.note_suspended(sid);
        self.settle();
    }

    /// Counts a session that just entered its grace period against the caps
    /// per user and per source IP; over a cap, the oldest in grace ends now,
    /// so that a reconnect storm cannot pin memory (replay buffers) for the
    /// whole grace period.
    fn note_suspended(&mut self, sid: Sid) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let mut over = Vec::new();
        let cap = self.config.max_suspended_per_user;
        if cap != 0
            && let Some(u) = &s.user
        {
            let list = self.suspended_by_user.entry(u.clone()).or_default();
            list.push(sid);
            if list.len() > cap {
                over.extend(list.drain(..list.len() - cap));
            }
        }
        let cap = self.config.max_suspended_per_ip;
        if cap != 0
            && let Some(ip) = s.ip
        {
            let list = self.suspended_by_ip.entry(ip).or_default();
            list.push(sid);
            if list.len() > cap {
                over.extend(list.drain(..list.len() - cap));
            }
        }
        for old in over {
            self.end_session(old, EndReason::TooManySuspended);
        }
    }

    /// The session left its grace period (resumed or ended).
    fn forget_suspended(&mut self, sid: Sid, user: Option<&str>, ip: Option<IpAddr>) {
        if let Some(u) = user
            && let Some(list) = self.suspended_by_user.get_mut(u)
        {
            list.retain(|&x| x != sid);
            if list.is_empty() {
                self.suspended_by_user.remove(u);
            }
        }
        if let Some(ip) = ip
            && let Some(list) = self.suspended_by_ip.get_mut(&ip)
        {
            list.retain(|&x| x != sid);
            if list.is_empty() {
                self.suspended_by_ip.remove(&ip);
            }
        }
    }

    /// Ends the sessions in grace whose replay could not take a frame
    /// during the request just handled: their room hears `bye` now, and a
    /// late resume gets `resume_failed`. Ending one sends `bye`s, which may
    /// overflow others, hence the loop.
    fn settle(&mut self) {
        while let Some(sid) = self.outbox.overflowed.pop() {
            self.end_session(sid, EndReason::ReplayFull);
        }
    }

    /// Runs every timer due at `now` (grace expiry, ring timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_ack();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Grace(sid) => {
                    let expired = self
                        .sessions
                        .get(&sid)
                        .is_some_and(|s| s.conn.is_none() && s.grace_until == Some(at));
                    if expired {
                        self.end_session(sid, EndReason::GraceExpired);
                    }
                }
                Timer::Ring(key) => self.ring_timeout(key),
                Timer::Heartbeat => self.heartbeat(now),
                Timer::RemoteRing(key) => self.remote_ring_expired(key),
            }
        }
        self.settle();
    }

    /// The next thing to do; call until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(out) = self.outbox.pop() {
            return Some(out);
        }
        // Everything before it is out, Socket.IO recipients included: the
        // shell has said which of those it could not queue.
        self.flush_ack();
        self.outbox.pop()
    }

    /// The shell could not queue an [`Output::Classic`] `message` event it
    /// just polled (its connection's queue is full, or it is gone). A native
    /// sender's `ack` is held until such events are drained, and counts only
    /// the ones that were queued (PROTOCOL.md §1, "An ack is a promise").
    /// Call it before polling the next output.
    pub fn classic_refused(&mut self) {
        if self.held_refused() {
            return;
        }
        self.counters.deliveries = self.counters.deliveries.saturating_sub(1);
        if let Some(p) = &mut self.pending_ack {
            p.refused += 1;
        }
    }

    /// Sends the held `ack`, if any.
    fn flush_ack(&mut self) {
        self.flush_held();
        if let Some(p) = self.pending_ack.take() {
            let delivered = p.delivered.saturating_sub(p.refused);
            self.send(p.sid, wire::ack(delivered, &p.id));
        }
    }

    /// The next lifecycle event (sessions, rooms, calls; never one per
    /// relayed message), for logs and metrics. Drain until `None` after
    /// every `handle_*`, like [`SignalCore::poll_output`]. Undrained events
    /// beyond [`EVENT_QUEUE_CAP`] are dropped oldest first (counted in
    /// [`Counters::events_dropped`]).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Totals since the core was made, for `/metrics` counters: requests,
    /// messages, deliveries, errors by code, resumes and more.
    #[must_use]
    pub fn counters(&self) -> Counters {
        Counters {
            frames: self.outbox.queued,
            events_dropped: self.events.dropped,
            ..self.counters
        }
    }

    /// When `handle_timeout` must next be called; call after every
    /// `handle_*` and re-arm the timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Numbers for `/metrics`: live sessions, rooms.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len(),
            connected: self.by_conn.len(),
            rooms: self.rooms.len(),
            sfu_rooms: self.rooms.sfu_len(),
            ringing_calls: self.calls.len(),
        }
    }

    fn random_id(&mut self, bytes: usize) -> String {
        let mut buf = [0u8; 32];
        let buf = &mut buf[..bytes.min(32)];
        self.rng.fill_bytes(buf);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    }

    fn new_session(&mut self, now: Instant, conn: ConnId, identity: Identity, face: Face) -> Sid {
        let peer = self.fresh_peer_id();
        self.new_session_as(now, conn, identity, face, peer)
    }

    /// A peer id no live session has (nor, in a cluster, very likely any
    /// other node's: 64 random bits).
    fn fresh_peer_id(&mut self) -> Arc<str> {
        loop {
            let peer = self.random_id(8);
            if !self.by_peer.contains_key(peer.as_str()) {
                break peer.into();
            }
        }
    }

    fn new_session_as(
        &mut self,
        now: Instant,
        conn: ConnId,
        identity: Identity,
        face: Face,
        peer: Arc<str>,
    ) -> Sid {
        self.next_sid += 1;
        let sid = Sid(self.next_sid);
        let id: Arc<str> = loop {
            let id = self.random_id(12);
            if !self.by_session_id.contains_key(id.as_str()) {
                break id.into();
            }
        };
        let resume_token: Arc<str> = self.random_id(32).into();
        self.counters.sessions_started += 1;
        self.events.push(Event::SessionStarted {
            conn,
            session: id.to_string(),
            peer: peer.to_string(),
            user: identity.user.clone(),
            face,
        });
        let user: Option<Arc<str>> = identity.user.map(Into::into);
        let ip = identity.source_ip;
        if face == Face::Native
            && let Some(u) = &user
        {
            match self.by_user.get_mut(u) {
                Some(list) => list.push(sid),
                None => {
                    self.by_user.insert(u.clone(), vec![sid]);
                }
            }
        }
        self.by_conn.insert(conn, sid);
        self.by_session_id.insert(id.clone(), sid);
        self.by_peer.insert(peer.clone(), sid);
        let allowed_rooms = identity
            .rooms
            .map(|rooms| rooms.into_iter().map(String::into_boxed_str).collect());
        self.sessions.insert(
            sid,
            Session {
                id,
                resume_token,
                peer,
                face,
                conn: Some(conn),
                user,
                ip,
                allowed_rooms,
                seq: 0,
                epoch: 0,
                store_base: false,
                replay: ReplayBuffer::default(),
                grace_until: None,
                bucket: TokenBucket::full(now, self.config.rate_burst),
                rooms: Vec::new(),
                calls: Vec::new(),
            },
        );
        self.registered(sid);
        sid
    }

    fn welcome(
        &mut self,
        sid: Sid,
        conn: ConnId,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let ice = ice_servers(&s.peer);
        let body = wire::welcome(&s.id, &s.resume_token, &s.peer, &ice);
        self.outbox.unsequenced(conn, body);
    }

    /// Takes the session out of every index (connection, ids, user, grace
    /// timer and caps); its rooms and calls are the caller's to settle.
    pub(crate) fn detach(&mut self, sid: Sid) -> Option<Session> {
        let s = self.sessions.remove(&sid)?;
        if let Some(conn) = s.conn
            && self.by_conn.get(&conn) == Some(&sid)
        {
            self.by_conn.remove(&conn);
        }
        if let Some(t) = s.grace_until {
            self.timers.remove(&(t, Timer::Grace(sid)));
            self.forget_suspended(sid, s.user.as_deref(), s.ip);
        }
        self.by_session_id.remove(&s.id);
        self.by_peer.remove(&s.peer);
        if let Some(u) = &s.user
            && let Some(list) = self.by_user.get_mut(u)
        {
            list.retain(|&x| x != sid);
            if list.is_empty() {
                self.by_user.remove(u);
            }
        }
        Some(s)
    }

    /// The session is over for good: `bye` in its rooms, `gone` to the other
    /// side of its ringing calls, and every trace removed.
    fn end_session(&mut self, sid: Sid, reason: EndReason) {
        let Some(s) = self.detach(sid) else {
            return;
        };
        for &key in &s.calls {
            self.call_party_gone(key, sid);
        }
        for &rid in &s.rooms {
            self.depart(rid, sid, &s.peer, LeaveReason::SessionEnded(reason));
        }
        // In a cluster the store takes the seats with the session, telling
        // the other nodes' members.
        self.cluster_session_ended(sid, &s.id);
        self.counters.sessions_ended += 1;
        self.events.push(Event::SessionEnded {
            session: s.id.to_string(),
            peer: s.peer.to_string(),
            reason,
        });
    }
}

/// Gauges read by the shell for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions, connected or in their grace period.
    pub sessions: usize,
    /// Sessions with a live connection.
    pub connected: usize,
    /// Rooms with at least one peer.
    pub rooms: usize,
    /// Of those, SFU rooms (PROTOCOL.md §7).
    pub sfu_rooms: usize,
    /// Calls ringing.
    pub ringing_calls: usize,
}
