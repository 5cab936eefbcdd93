//! Delivery: "send this to that session". Numbers native frames, keeps them
//! for replay, and queues outputs for the shell. This is the other seam for a
//! backplane: a remote recipient would be published instead of queued.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::classic::ClassicArgs;
use crate::session::{Session, Sid};
use crate::{ClassicEvent, ConnId, Face, OutFrame, Output, wire};

/// Payload of a room message: the sender's JSON text, relayed verbatim to
/// both faces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Data<'a> {
    pub(crate) raw: &'a str,
}

/// A room event, rendered lazily at most once per face and fan-out.
#[derive(Debug)]
pub(crate) enum RoomEvent<'a> {
    OtherJoined {
        room: &'a str,
        peer: &'a str,
        meta: Option<&'a RawValue>,
    },
    Bye {
        room: &'a str,
        peer: &'a str,
    },
    /// Built by [`Fanout::message`], which renders the native body at once.
    Message {
        room: &'a str,
        data: Data<'a>,
    },
}

#[derive(Debug)]
pub(crate) struct Fanout<'a> {
    event: RoomEvent<'a>,
    native: Option<Bytes>,
    classic: Option<ClassicEvent>,
}

impl<'a> Fanout<'a> {
    pub(crate) fn new(event: RoomEvent<'a>) -> Self {
        Fanout {
            event,
            native: None,
            classic: None,
        }
    }

    /// A room message; `from` is needed only by the native body, so that is
    /// rendered now and `from` is not kept.
    pub(crate) fn message(room: &'a str, from: &str, data: Data<'a>) -> Self {
        Fanout {
            event: RoomEvent::Message { room, data },
            native: Some(wire::message(room, from, data.raw)),
            classic: None,
        }
    }

    fn native(&mut self) -> Bytes {
        if let Some(b) = &self.native {
            return b.clone();
        }
        let body = match &self.event {
            RoomEvent::OtherJoined { room, peer, meta } => wire::other_joined(room, peer, *meta),
            RoomEvent::Bye { room, peer } => wire::bye(room, peer),
            // Always pre-rendered by `Fanout::message`.
            RoomEvent::Message { .. } => Bytes::new(),
        };
        self.native = Some(body.clone());
        body
    }

    fn classic(&mut self) -> &ClassicEvent {
        let event = &self.event;
        self.classic.get_or_insert_with(|| match event {
            RoomEvent::OtherJoined { room, peer, .. } => ClassicEvent {
                event: "otherjoin",
                args: ClassicArgs::strs(room, peer),
            },
            RoomEvent::Bye { room, peer } => ClassicEvent {
                event: "bye",
                args: ClassicArgs::strs(room, peer),
            },
            RoomEvent::Message { room, data, .. } => ClassicEvent {
                event: "message",
                args: ClassicArgs::message(room, data.raw),
            },
        })
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<Output>,
    replay_frames: usize,
    replay_bytes: usize,
    /// Frames and classic events queued so far, for `Counters::frames`.
    pub(crate) queued: u64,
    /// Sessions in their grace period whose replay could not take a frame:
    /// they end as soon as the request at hand is done (`SignalCore::settle`).
    pub(crate) overflowed: Vec<Sid>,
}

impl Outbox {
    pub(crate) fn new(replay_frames: usize, replay_bytes: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            replay_frames,
            replay_bytes,
            queued: 0,
            overflowed: Vec::new(),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    /// A sequenced frame for a native session: numbered, kept for replay,
    /// and sent now when the session has a connection. Returns whether the
    /// session has it: a session in its grace period whose replay is full
    /// does not (nothing it was promised is evicted); it is marked to end
    /// at once instead.
    pub(crate) fn frame(&mut self, sid: Sid, s: &mut Session, body: Bytes) -> bool {
        if s.face != Face::Native {
            return false;
        }
        if s.conn.is_none()
            && (self.overflowed.contains(&sid)
                || !s
                    .replay
                    .fits(body.len(), self.replay_frames, self.replay_bytes))
        {
            if !self.overflowed.contains(&sid) {
                self.overflowed.push(sid);
            }
            return false;
        }
        s.seq += 1;
        s.replay.push(&body, self.replay_frames, self.replay_bytes);
        if let Some(conn) = s.conn {
            self.queued += 1;
            self.queue.push_back(Output::Frame {
                conn,
                frame: OutFrame {
                    seq: Some(s.seq),
                    body,
                },
            });
        }
        true
    }

    /// `welcome`, `resumed`, `resume_failed`: outside any session's numbering.
    pub(crate) fn unsequenced(&mut self, conn: ConnId, body: Bytes) {
        self.queued += 1;
        self.queue.push_back(Output::Frame {
            conn,
            frame: OutFrame { seq: None, body },
        });
    }

    pub(crate) fn replayed(&mut self, conn: ConnId, seq: u64, body: Bytes) {
        self.queued += 1;
        self.queue.push_back(Output::Frame {
            conn,
            frame: OutFrame {
                seq: Some(seq),
                body,
            },
        });
    }

    pub(crate) fn classic(&mut self, s: &Session, event: ClassicEvent) -> bool {
        let Some(conn) = s.conn else {
            return false;
        };
        self.queued += 1;
        self.queue.push_back(Output::Classic { conn, event });
        true
    }

    pub(crate) fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        self.queue.push_back(Output::Close { conn, code, reason });
    }

    /// One recipient of a room event, whatever its face; whether it has it.
    pub(crate) fn deliver(&mut self, sid: Sid, s: &mut Session, f: &mut Fanout<'_>) -> bool {
        match s.face {
            Face::Native => {
                let body = f.native();
                self.frame(sid, s, body)
            }
            Face::Classic => {
                // The arguments are shared: this copies a pointer.
                let event = f.classic().clone();
                self.classic(s, event)
            }
        }
    }
}
