//! The sans-IO signaling core of switchboard.
//!
//! INTERFACE CONTRACT (agreed between the core and the shell; keep these
//! names and signatures, fill in the bodies):
//!
//! ```text
//! let mut core = SignalCore::new(config, seed);
//! // a WebSocket connected:
//! core.connect(now, conn, identity, Face::Native, |peer| ice_servers_for(peer));
//! // a text frame arrived:
//! core.handle_text(now, conn, text);
//! // then, always, drain:
//! while let Some(out) = core.poll_output() { /* write frames, close conns */ }
//! // and re-arm the single timer at core.poll_timeout(); when it fires:
//! core.handle_timeout(now);
//! ```
//!
//! No sockets, no clock, no threads: `now` is always an argument, and
//! randomness (ids, resume tokens) comes from a CSPRNG seeded by the caller.
#![warn(missing_docs, unreachable_pub)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
pub use switchboard_signal_proto::IceServer;

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
    /// `limits.max_rooms_per_session`.
    pub max_rooms_per_session: usize,
    /// `limits.max_message_bytes`: a larger text frame gets `too_large`.
    pub max_message_bytes: usize,
    /// `limits.rate_per_sec`: token-bucket refill per second, per session.
    pub rate_per_sec: u32,
    /// `limits.rate_burst`: token-bucket capacity.
    pub rate_burst: u32,
    /// `session.resume_grace_secs`.
    pub resume_grace: Duration,
    /// `session.replay_frames`.
    pub replay_frames: usize,
    /// `calls.ring_timeout_secs`.
    pub ring_timeout: Duration,
}

impl Default for Config {
    /// The protocol defaults (PROTOCOL.md): no room cap, 64 KiB frames,
    /// 20 s grace, 1024 replay frames, 30 s ring timeout.
    fn default() -> Self {
        Config {
            max_peers: 0,
            max_rooms_per_session: 16,
            max_message_bytes: 65536,
            rate_per_sec: 50,
            rate_burst: 100,
            resume_grace: Duration::from_secs(20),
            replay_frames: 1024,
            ring_timeout: Duration::from_secs(30),
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
                out.extend_from_slice(b"{\"seq\":");
                out.extend_from_slice(seq.to_string().as_bytes());
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
    /// The event's arguments, e.g. `[room, id]` or `[room, data]`.
    pub args: Vec<Value>,
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
}

/// The signaling state machine: sessions, rooms, replay buffers, calls.
#[derive(Debug)]
pub struct SignalCore {
    _private: (),
}

impl SignalCore {
    /// A core with no sessions. `seed` feeds the CSPRNG for ids and tokens;
    /// the shell passes OS randomness, tests a constant.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let _ = (config, seed);
        unimplemented!()
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
        let _ = (now, conn, identity, face, ice_servers);
        unimplemented!()
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
        let _ = (now, conn, session, resume_token, last_seq, identity, ice_servers);
        unimplemented!()
    }

    /// A text frame from a native connection (size, JSON, rate limit and
    /// every request of §1 and §3 are checked here).
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        let _ = (now, conn, text);
        unimplemented!()
    }

    /// A binary frame from a native connection: `bad_request`.
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        unimplemented!()
    }

    /// A classic event (`join`, `message`, `leave`) with its arguments.
    /// `ack` is true when the client asked for an acknowledgement; the
    /// return value is then the ack's payload (`{"delivered":N}` or an error).
    pub fn handle_classic(
        &mut self,
        now: Instant,
        conn: ConnId,
        event: &str,
        args: &[Value],
        ack: bool,
    ) -> Option<Value> {
        let _ = (now, conn, event, args, ack);
        unimplemented!()
    }

    /// The connection ended.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId, how: Disconnect) {
        let _ = (now, conn, how);
        unimplemented!()
    }

    /// Runs every timer due at `now` (grace expiry, ring timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        unimplemented!()
    }

    /// The next thing to do; call until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        unimplemented!()
    }

    /// When `handle_timeout` must next be called; call after every
    /// `handle_*` and re-arm the timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        unimplemented!()
    }

    /// Numbers for `/metrics`: live sessions, rooms.
    #[must_use]
    pub fn stats(&self) -> Stats {
        unimplemented!()
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
    /// Calls ringing.
    pub ringing_calls: usize,
}
