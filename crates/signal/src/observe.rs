//! What the shell logs and exports: lifecycle events (rare: sessions, rooms,
//! calls; never one per relayed message) and monotonic counters.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use switchboard_signal_proto::{CallEndReason, ErrorCode};

use crate::{ConnId, Face};

/// Events kept for a shell that does not drain them; beyond this the oldest
/// go, so memory stays bounded whatever the shell does.
pub const EVENT_QUEUE_CAP: usize = 10_000;

/// Something that happened to a session, a room or a call, for logs and
/// metrics. Drained with [`SignalCore::poll_event`](crate::SignalCore::poll_event).
/// Ids are the ones on the wire (`peer`, `session`, `call`); `room` is the
/// room's name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new session: a connect, or the fresh session after a failed resume.
    SessionStarted {
        /// Its connection.
        conn: ConnId,
        /// Session id (the one a resume names).
        session: String,
        /// Peer id.
        peer: String,
        /// User id from the identity, if any.
        user: Option<String>,
        /// Wire face.
        face: Face,
    },
    /// A native connection dropped abruptly: the session waits for a
    /// resume until `until`, then ends with [`EndReason::GraceExpired`].
    Suspended {
        /// The connection that dropped.
        conn: ConnId,
        /// Peer id.
        peer: String,
        /// End of the grace period.
        until: Instant,
    },
    /// A resume succeeded on `conn`.
    SessionResumed {
        /// The new connection.
        conn: ConnId,
        /// Session id.
        session: String,
        /// Peer id.
        peer: String,
        /// Frames replayed after `resumed`.
        replayed: usize,
    },
    /// A resume was refused (`resume_failed`); a `SessionStarted` for a
    /// fresh session on the same `conn` follows.
    ResumeFailed {
        /// The connection that asked.
        conn: ConnId,
        /// Why.
        reason: ResumeFailReason,
    },
    /// A peer entered a room (by request, or an accepted call's room).
    Joined {
        /// Peer id.
        peer: String,
        /// Room name.
        room: String,
        /// Peers in the room now, this one included.
        peers: usize,
    },
    /// A join was refused because the room is at `rooms.max_peers`.
    RoomFull {
        /// Peer id.
        peer: String,
        /// Room name.
        room: String,
    },
    /// A peer left a room.
    Left {
        /// Peer id.
        peer: String,
        /// Room name.
        room: String,
        /// Peers still in the room (0: the room is gone).
        peers: usize,
        /// Why.
        reason: LeaveReason,
    },
    /// A session is over for good. Its `Left` events come just before.
    SessionEnded {
        /// Session id.
        session: String,
        /// Peer id.
        peer: String,
        /// Why.
        reason: EndReason,
    },
    /// A call started ringing.
    CallStarted {
        /// Call id.
        call: String,
        /// The caller's peer id.
        caller: String,
        /// The callee's user id.
        callee: String,
        /// Connections of the callee that got `incoming_call`.
        rung: usize,
    },
    /// A callee accepted: the call is now the private room `room`.
    CallAccepted {
        /// Call id.
        call: String,
        /// The call room's name.
        room: String,
    },
    /// A ringing call ended unanswered.
    CallEnded {
        /// Call id.
        call: String,
        /// `Declined`, `Cancelled`, `NoAnswer` or `Gone`.
        reason: CallEndReason,
    },
}

/// Why a peer left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It sent `leave`.
    Requested,
    /// Its session ended; see [`EndReason`].
    SessionEnded(EndReason),
    /// An operator kicked it (the admin API, PROTOCOL.md §8).
    Kicked,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// A clean close (1000/1001), a classic disconnect, or the shell reusing
    /// the connection number.
    Closed,
    /// Disconnected abruptly and not resumed within `resume_grace`.
    GraceExpired,
    /// Its owner resumed with the right token, but the frames it lacked were
    /// gone: the session is replaced by a fresh one.
    StartedOver,
    /// In its grace period, its replay buffer could not take one more frame
    /// without evicting one it was promised (PROTOCOL.md §1).
    ReplayFull,
    /// In its grace period, it was the oldest of too many for its user or
    /// source IP (`max_suspended_per_user`, `max_suspended_per_ip`).
    TooManySuspended,
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResumeFailReason {
    /// No such session, a wrong token, or a classic session.
    Unknown,
    /// The right owner, but the frames after `last_seq` are no longer kept.
    FramesLost,
}

impl LeaveReason {
    /// A short label for logs and metrics, e.g. `"grace_expired"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Requested => "leave",
            LeaveReason::Kicked => "kicked",
            LeaveReason::SessionEnded(end) => end.as_str(),
        }
    }
}

impl EndReason {
    /// A short label for logs and metrics, e.g. `"closed"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::GraceExpired => "grace_expired",
            EndReason::StartedOver => "started_over",
            EndReason::ReplayFull => "replay_full",
            EndReason::TooManySuspended => "too_many_suspended",
        }
    }
}

impl ResumeFailReason {
    /// A short label for logs and metrics, e.g. `"frames_lost"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeFailReason::Unknown => "unknown",
            ResumeFailReason::FramesLost => "frames_lost",
        }
    }
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ResumeFailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Totals since the core was made; every field only grows. Read with
/// [`SignalCore::counters`](crate::SignalCore::counters) and export as
/// Prometheus counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Inputs handled on a live session: native text and binary frames and
    /// classic events, refused ones included.
    pub requests: u64,
    /// Room messages accepted (`message` requests that were relayed).
    pub messages: u64,
    /// Copies of room messages queued for recipients.
    pub deliveries: u64,
    /// Frames and classic events queued for connections, of every kind
    /// (replies, fan-out, replays, `welcome`).
    pub frames: u64,
    /// Sessions created (connects, and fresh sessions after failed resumes).
    pub sessions_started: u64,
    /// Sessions ended for good.
    pub sessions_ended: u64,
    /// Successful resumes.
    pub resumes: u64,
    /// Refused resumes (also counted in `errors(ResumeFailed)`).
    pub resumes_failed: u64,
    /// Joins that entered a room (calls' rooms included).
    pub joins: u64,
    /// Joins refused because the room was full.
    pub rooms_full: u64,
    /// Calls that started ringing.
    pub calls: u64,
    /// `media` requests handed to the media relay (SFU rooms, §7).
    pub media_signals: u64,
    /// `media` frames the relay sent to peers ([`SignalCore::send_media`](crate::SignalCore::send_media)).
    pub media_frames: u64,
    /// Events dropped because the queue held [`EVENT_QUEUE_CAP`] undrained.
    pub events_dropped: u64,
    pub(crate) errors: [u64; ErrorCode::ALL.len()],
}

impl Counters {
    /// Error frames (native) and `error` events (classic) sent with `code`.
    /// `rate_limited` is `errors(ErrorCode::RateLimited)`.
    #[must_use]
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors[code.index()]
    }

    /// Every error code with its count, zeros included, in
    /// [`ErrorCode::ALL`] order.
    pub fn errors_by_code(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL.iter().map(|&code| (code, self.errors(code)))
    }

    pub(crate) fn error(&mut self, code: ErrorCode) {
        self.errors[code.index()] += 1;
    }
}

/// The bounded event queue.
#[derive(Debug, Default)]
pub(crate) struct Events {
    queue: VecDeque<Event>,
    pub(crate) dropped: u64,
}

impl Events {
    pub(crate) fn push(&mut self, event: Event) {
        if self.queue.len() >= EVENT_QUEUE_CAP {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(event);
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_keeps_the_newest() {
        let mut q = Events::default();
        let ev = |n: usize| Event::RoomFull {
            peer: n.to_string(),
            room: String::new(),
        };
        for n in 0..EVENT_QUEUE_CAP + 3 {
            q.push(ev(n));
        }
        assert_eq!(q.dropped, 3);
        assert_eq!(q.pop(), Some(ev(3)));
        let mut rest = 1;
        while q.pop().is_some() {
            rest += 1;
        }
        assert_eq!(rest, EVENT_QUEUE_CAP);
    }

    #[test]
    fn labels() {
        assert_eq!(
            LeaveReason::SessionEnded(EndReason::GraceExpired).to_string(),
            "grace_expired"
        );
        assert_eq!(LeaveReason::Requested.as_str(), "leave");
        let mut c = Counters::default();
        c.error(ErrorCode::RateLimited);
        assert_eq!(c.errors(ErrorCode::RateLimited), 1);
        assert_eq!(c.errors_by_code().map(|(_, n)| n).sum::<u64>(), 1);
    }
}
