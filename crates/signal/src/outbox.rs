//! Delivery: "send this to that session". Numbers native frames, keeps them
//! for replay, and queues outputs for the shell. This is the other seam for a
//! backplane: a remote recipient would be published instead of queued.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::classic::ClassicArgs;
use crate::cluster::Command;
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
    /// A clustered core that reaches its store: every sequenced frame is
    /// written there first, and what goes to native connections waits in
    /// the gate until the store has it.
    gate: Option<Gate>,
}

/// The `keep` of an [`Command::Append`]: the store's list is cut to the
/// node's replay only on every eighth frame that evicted some, so that a
/// full replay costs Redis an `LTRIM` per eight frames, not per frame. In
/// between it holds at most seven frames' evictions more than the replay:
/// each evicts about its own size, so the store keeps at most the replay
/// bounds plus seven times two of the largest messages.
fn append_keep(seq: u64, evicted: usize, kept: usize) -> Option<u32> {
    (evicted > 0 && seq.is_multiple_of(8)).then(|| u32::try_from(kept).unwrap_or(u32::MAX))
}

/// Frames and closes for native connections, in order, each waiting until
/// the store has applied every `Persist` emitted before it (its own one
/// included). A client then never holds a `seq` the store does not: a
/// resume on any node, even after this one dies, finds every frame the
/// client may lack, and numbering never forks. A frame whose own `Persist`
/// the store refused (its session was taken by another node meanwhile) is
/// dropped: it is that node's to send.
#[derive(Debug, Default)]
struct Gate {
    /// `(ticket, own, output)`: released once `done >= ticket`; `own` when
    /// the ticket is the frame's own `Persist`.
    waiting: VecDeque<(u64, bool, Output)>,
    /// `Persist` commands emitted, and answered.
    sent: u64,
    done: u64,
    /// The session of each `Persist` not answered yet, oldest first.
    owners: VecDeque<Sid>,
    /// Tickets the store refused, not yet passed.
    refused: Vec<u64>,
}

impl Outbox {
    pub(crate) fn new(replay_frames: usize, replay_bytes: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            replay_frames,
            replay_bytes,
            queued: 0,
            overflowed: Vec::new(),
            gate: None,
        }
    }

    /// Turns writing to the store on (the backplane is up) or off (it is
    /// down: what waits goes out now, unwritten; the node serves alone).
    pub(crate) fn set_persist(&mut self, on: bool) {
        if on {
            self.gate.get_or_insert_with(Gate::default);
            return;
        }
        if let Some(gate) = self.gate.take() {
            self.queue
                .extend(gate.waiting.into_iter().map(|(_, _, o)| o));
        }
    }

    /// The store answered the oldest unanswered `Persist` (or `Resumed`).
    /// Returns its session when refused: the session is another node's
    /// now, and the caller purges its connection before [`Outbox::release`]
    /// lets out what waited for this answer.
    pub(crate) fn persisted(&mut self, ok: bool) -> Option<Sid> {
        let gate = self.gate.as_mut()?;
        if gate.done >= gate.sent {
            return None;
        }
        gate.done += 1;
        let owner = gate.owners.pop_front();
        if ok {
            return None;
        }
        gate.refused.push(gate.done);
        owner
    }

    /// Lets out, in order, what no unanswered command holds back.
    pub(crate) fn release(&mut self) {
        let Some(gate) = &mut self.gate else {
            return;
        };
        while gate
            .waiting
            .front()
            .is_some_and(|(t, _, _)| *t <= gate.done)
        {
            let Some((ticket, own, out)) = gate.waiting.pop_front() else {
                break;
            };
            if !(own && gate.refused.contains(&ticket)) {
                self.queue.push_back(out);
            }
        }
        let done = gate.done;
        gate.refused
            .retain(|&t| t > done || gate.waiting.iter().any(|w| w.0 == t));
    }

    /// Forgets what waits for `conn` and closes it now: its session moved
    /// to another node, and frames this node could not write to the store
    /// must not reach the client (that node numbers its own).
    pub(crate) fn purge(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        if let Some(gate) = &mut self.gate {
            gate.waiting.retain(|(_, _, out)| {
                !matches!(out, Output::Frame { conn: c, .. } | Output::Close { conn: c, .. } if *c == conn)
            });
        }
        self.queue.push_back(Output::Close { conn, code, reason });
    }

    /// An output for a native connection: through the gate when there is one.
    fn out(&mut self, out: Output) {
        match &mut self.gate {
            Some(gate) if gate.done < gate.sent => {
                let ticket = gate.sent;
                gate.waiting.push_back((ticket, false, out));
            }
            _ => self.queue.push_back(out),
        }
    }

    pub(crate) fn push(&mut self, out: Output) {
        self.queue.push_back(out);
    }

    pub(crate) fn backplane(&mut self, cmd: Command) {
        self.queue.push_back(Output::Backplane(cmd));
    }

    /// A command about `sid` whose answer, like a `Persist`'s, what is
    /// queued after it for native connections waits for.
    pub(crate) fn gated_command(&mut self, sid: Sid, cmd: Command) {
        if let Some(gate) = &mut self.gate {
            gate.sent += 1;
            gate.owners.push_back(sid);
        }
        self.queue.push_back(Output::Backplane(cmd));
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
        let evicted = s.replay.push(&body, self.replay_frames, self.replay_bytes);
        let Some(gate) = &mut self.gate else {
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
            return true;
        };
        gate.sent += 1;
        gate.owners.push_back(sid);
        let sent = s.conn.is_some();
        let cmd = if self.replay_frames == 0 || (sent && s.store_base) {
            // The store checks this one: it keeps only `seq`, or clears
            // the session's `base` (a connection has frames again).
            s.store_base &= !sent;
            Command::Persist {
                session: s.id.clone(),
                epoch: s.epoch,
                seq: s.seq,
                body: body.clone(),
                sent,
            }
        } else {
            Command::Append {
                session: s.id.clone(),
                epoch: s.epoch,
                seq: s.seq,
                body: body.clone(),
                keep: append_keep(s.seq, evicted, s.replay.len()),
            }
        };
        self.queue.push_back(Output::Backplane(cmd));
        if let Some(conn) = s.conn {
            self.queued += 1;
            let frame = OutFrame {
                seq: Some(s.seq),
                body,
            };
            gate.waiting
                .push_back((gate.sent, true, Output::Frame { conn, frame }));
        }
        true
    }

    /// `welcome`, `resumed`, `resume_failed`: outside any session's numbering.
    pub(crate) fn unsequenced(&mut self, conn: ConnId, body: Bytes) {
        self.queued += 1;
        self.out(Output::Frame {
            conn,
            frame: OutFrame { seq: None, body },
        });
    }

    pub(crate) fn replayed(&mut self, conn: ConnId, seq: u64, body: Bytes) {
        self.queued += 1;
        self.out(Output::Frame {
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
        self.out(Output::Close { conn, code, reason });
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
