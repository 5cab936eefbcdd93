//! SFU rooms (PROTOCOL.md §7): what the media relay hears from the core
//! and what it says back to a peer through it.

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_signal_proto::{ErrorCode, MediaKind};

use crate::cluster::MediaMsg;
use crate::presence::{no_session, not_in_room};
use crate::rooms::RoomId;
use crate::session::Sid;
use crate::{ConnId, Face, Refusal, SignalCore, wire};

/// What the core tells the media relay ([`crate::Output::Media`]). Only
/// native peers of SFU rooms cause these (in a cluster, on the room's
/// media node, for the peers of every node): a Socket.IO peer
/// cannot send `media`, so it has no media session; a call's room is a mesh
/// room.
#[derive(Debug, Clone)]
pub enum MediaOutput {
    /// A peer entered an SFU room (right after its `joined`). `conn` is the
    /// signaling connection it joined on, for the address the client
    /// reached (the host candidate's address when `media.public_ip` is
    /// not set); `None` for a peer that signals through another node of a
    /// cluster (this node is its room's media node). A resume onto another
    /// connection sends nothing new: the media session runs on UDP, apart
    /// from signaling.
    Joined {
        /// Room name.
        room: String,
        /// Peer id.
        peer: String,
        /// The connection of the join, when it is this node's.
        conn: Option<ConnId>,
    },
    /// The peer is out of the room for good: `leave`, a kick or a closed
    /// room, or its session ended (clean close, grace expiry, replay full,
    /// too many suspended sessions, a resume that started over). A session
    /// in its resume grace is still in the room: no `Left` until it ends.
    Left {
        /// Room name.
        room: String,
        /// Peer id.
        peer: String,
    },
    /// A valid `media` request: `data` is a JSON object with `kind`
    /// `offer` or `answer` (and a string `sdp`) or `candidate` (and an
    /// object `candidate`), as the client wrote it.
    Signal {
        /// Room name.
        room: String,
        /// Peer id of the sender.
        peer: String,
        /// The request's `data`.
        data: Box<RawValue>,
    },
}

/// `data` compares by its text (`RawValue` has no `PartialEq`).
impl PartialEq for MediaOutput {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                MediaOutput::Joined { room, peer, conn },
                MediaOutput::Joined {
                    room: r,
                    peer: p,
                    conn: c,
                },
            ) => room == r && peer == p && conn == c,
            (MediaOutput::Left { room, peer }, MediaOutput::Left { room: r, peer: p }) => {
                room == r && peer == p
            }
            (
                MediaOutput::Signal { room, peer, data },
                MediaOutput::Signal {
                    room: r,
                    peer: p,
                    data: d,
                },
            ) => room == r && peer == p && data.get() == d.get(),
            _ => false,
        }
    }
}

/// The shapes of §1 that a `media` request's `data` may take; anything
/// else in the object is the relay's to ignore.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    // Raw: only their JSON type is checked here, and an SDP is not copied
    // to do it.
    #[serde(default, borrow, deserialize_with = "wire::raw_some")]
    sdp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "wire::raw_some")]
    candidate: Option<&'a RawValue>,
}

fn bad(message: &'static str) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, message)
}

/// Checks `data` against the shapes the relay takes (PROTOCOL.md §7).
fn check_signal(data: &RawValue) -> Result<(), Refusal> {
    // A struct would also read from an array.
    if !data.get().starts_with('{') {
        return Err(bad("media `data` must be an object"));
    }
    let shape: Shape<'_> = serde_json::from_str(data.get())
        .map_err(|_| bad("media `data` must have a string `kind`, and no field twice"))?;
    let is = |v: Option<&RawValue>, first: char| v.is_some_and(|v| v.get().starts_with(first));
    match &*shape.kind {
        "offer" | "answer" if is(shape.sdp, '"') => Ok(()),
        "offer" | "answer" => Err(bad("a media offer or answer needs a string `sdp`")),
        "candidate" if is(shape.candidate, '{') => Ok(()),
        "candidate" => Err(bad("a media candidate needs an object `candidate`")),
        _ => Err(bad("media `kind` must be offer, answer or candidate")),
    }
}

impl SignalCore {
    /// Tells the relay of a native peer that just entered an SFU room (its
    /// `joined` is queued): nothing for a mesh room or a Socket.IO peer.
    pub(crate) fn media_joined(&mut self, rid: RoomId, sid: Sid) {
        let Some(room) = self.rooms.get(rid) else {
            return;
        };
        if room.media != MediaKind::Sfu {
            return;
        }
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let (Face::Native, Some(conn)) = (s.face, s.conn) else {
            return;
        };
        let out = MediaOutput::Joined {
            room: room.name.to_string(),
            peer: s.peer.to_string(),
            conn: Some(conn),
        };
        self.rooms.add_media_peer(rid, sid);
        // A join has nothing to refuse: a lost media node said so itself.
        let _ = self.media_out(out);
    }

    /// A `media` request (the rate limit was spent with the frame). No
    /// reply on success: the relay answers with a `media` frame.
    pub(crate) fn media_request(
        &mut self,
        sid: Sid,
        name: &str,
        data: &RawValue,
    ) -> Result<(), Refusal> {
        let s = self.sessions.get(&sid).ok_or_else(no_session)?;
        let rid = self
            .rooms
            .find(name)
            .filter(|&rid| s.is_in(rid))
            .ok_or_else(not_in_room)?;
        if !self.rooms.is_media_peer(rid, sid) {
            return Err(bad("media outside an SFU room"));
        }
        check_signal(data)?;
        let out = MediaOutput::Signal {
            room: name.to_owned(),
            peer: s.peer.to_string(),
            data: data.to_owned(),
        };
        self.media_out(out)?;
        self.counters.media_signals += 1;
        Ok(())
    }

    /// The session of `peer` when the relay knows it in `room`.
    fn media_peer(&self, room: &str, peer: &str) -> Option<Sid> {
        let rid = self.rooms.find(room)?;
        let sid = *self.by_peer.get(peer)?;
        self.rooms.is_media_peer(rid, sid).then_some(sid)
    }

    /// A sequenced frame to a media peer; whether its session has it (one
    /// in its grace period with a full replay buffer does not, and ends).
    fn media_frame(&mut self, sid: Sid, body: Bytes) -> bool {
        let kept = self
            .sessions
            .get_mut(&sid)
            .is_some_and(|s| self.outbox.frame(sid, s, body));
        self.settle();
        kept
    }

    /// Sends `{"type":"media","room":room,"data":data}` to `peer`, with
    /// `seq` and kept for replay like any frame, so that it survives a
    /// resume. Returns false, sending nothing, when `peer` is not (or no
    /// longer) a media peer of the SFU room `room`: the relay drops it.
    /// Drain [`SignalCore::poll_output`] after it.
    /// In a cluster, a peer that signals through another node gets it
    /// through that node.
    pub fn send_media(&mut self, now: Instant, room: &str, peer: &str, data: &RawValue) -> bool {
        self.flush_ack();
        if self.media_peer(room, peer).is_some() {
            return self.send_media_here(now, room, peer, data);
        }
        self.media_to_remote(room, peer, MediaMsg::Reply(data.get().into()))
    }

    /// [`SignalCore::send_media`] to a peer of this node.
    pub(crate) fn send_media_here(
        &mut self,
        _now: Instant,
        room: &str,
        peer: &str,
        data: &RawValue,
    ) -> bool {
        let Some(sid) = self.media_peer(room, peer) else {
            return false;
        };
        self.counters.media_frames += 1;
        self.media_frame(sid, wire::media(room, data.get()))
    }

    /// Sends an `error` frame with `code`, `message` and `"room":room` to
    /// `peer` (sequenced and kept for replay), for what the media relay
    /// refused or lost: `bad_request` for SDP it cannot take, `internal`
    /// or `unavailable` when the peer's media failed. Returns false when
    /// `peer` is not a media peer of `room`. Drain
    /// [`SignalCore::poll_output`] after it.
    pub fn media_error(
        &mut self,
        _now: Instant,
        room: &str,
        peer: &str,
        code: ErrorCode,
        message: &str,
    ) -> bool {
        self.flush_ack();
        if self.media_peer(room, peer).is_some() {
            return self.media_error_here(room, peer, code, message);
        }
        let what = MediaMsg::Error {
            code,
            message: message.into(),
        };
        self.media_to_remote(room, peer, what)
    }

    /// [`SignalCore::media_error`] to a peer of this node.
    pub(crate) fn media_error_here(
        &mut self,
        room: &str,
        peer: &str,
        code: ErrorCode,
        message: &str,
    ) -> bool {
        let Some(sid) = self.media_peer(room, peer) else {
            return false;
        };
        self.counters.error(code);
        self.media_frame(sid, wire::room_error(code, message, room))
    }
}
