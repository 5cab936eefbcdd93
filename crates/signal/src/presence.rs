//! Being in rooms: join, leave, departure and room messages, shared by both
//! faces. Replies to the requester are the face's business; fan-out to the
//! other peers happens here.

use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_signal_proto::{ErrorCode, MediaKind, RequestId};

use crate::clustered::Reply;
use crate::media::MediaOutput;
use crate::outbox::{Data, Fanout, RoomEvent};
use crate::rooms::{Refused, RoomId};
use crate::session::Sid;
use crate::{Event, Face, LeaveReason, Refusal, SignalCore, wire};

/// Whom a message was queued for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Recipients that have it: what `delivered` counts.
    pub(crate) count: u64,
    /// Of those, Socket.IO ones: the shell may yet find their queue full.
    pub(crate) classic: u64,
}

/// How a join went when it was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    Joined(RoomId),
    Full,
    /// A clustered core asked the store; the answer finishes it.
    Pending,
}

/// Whether a join is an ordinary one (all limits apply) or a call's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    Request,
    Call,
}

pub(crate) fn check_room_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > 128 {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "a room name is 1 to 128 bytes",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "a room name has no control characters",
        ));
    }
    Ok(())
}

/// `limits.max_meta_bytes`, on the meta's JSON text.
pub(crate) fn check_meta(meta: Option<&RawValue>, max: usize) -> Result<(), Refusal> {
    match meta {
        Some(m) if m.get().len() > max => Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("meta over {max} bytes"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn no_session() -> Refusal {
    Refusal::new(ErrorCode::Internal, "session vanished")
}

pub(crate) fn not_in_room() -> Refusal {
    Refusal::new(ErrorCode::NotInRoom, "you are not in this room")
}

impl SignalCore {
    /// `media` is the kind asked for, used if this join makes the room
    /// (else `rooms.media`); a call's room is always a mesh room.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        &mut self,
        now: Instant,
        sid: Sid,
        name: &str,
        meta: Option<&RawValue>,
        media: Option<MediaKind>,
        kind: JoinKind,
        reply: Reply,
    ) -> Result<JoinOutcome, Refusal> {
        let s = self.sessions.get(&sid).ok_or_else(no_session)?;
        let checked = kind == JoinKind::Request;
        if checked {
            check_room_name(name)?;
        }
        if self.rooms.find(name).is_some_and(|rid| s.is_in(rid)) {
            return Err(Refusal::new(
                ErrorCode::AlreadyJoined,
                "you are already in this room",
            ));
        }
        if checked && !s.may_join(name) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "your token does not grant this room",
            ));
        }
        let max_rooms = self.config.max_rooms_per_session;
        if checked && max_rooms != 0 && s.rooms.len() >= max_rooms {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("room limit reached ({max_rooms} rooms per session)"),
            ));
        }
        check_meta(meta, self.config.max_meta_bytes)?;
        let media = if checked {
            media.unwrap_or(self.config.default_media)
        } else {
            MediaKind::Mesh
        };
        if self.cluster.is_some() {
            // The store decides the room's kind and media node.
            self.cluster_join_kind(sid, name, meta, kind, None, media, reply)?;
            return Ok(JoinOutcome::Pending);
        }
        // A call's room holds two: no cap applies.
        let (max_peers, max_listed) = if checked {
            (self.config.max_peers, self.config.max_room_meta_bytes)
        } else {
            (0, 0)
        };
        let rid = match self.rooms.join(
            name,
            sid,
            meta.map(RawValue::to_owned),
            max_peers,
            max_listed,
            media,
            now,
        ) {
            Ok(rid) => rid,
            Err(Refused::Full) => {
                self.counters.rooms_full += 1;
                self.events.push(Event::RoomFull {
                    peer: s.peer.to_string(),
                    room: name.to_owned(),
                });
                return Ok(JoinOutcome::Full);
            }
            Err(Refused::Private) => {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "this is a private call room",
                ));
            }
        };
        let s = self.sessions.get_mut(&sid).ok_or_else(no_session)?;
        s.rooms.push(rid);
        let peer = s.peer.clone();
        if let Some(room) = self.rooms.get(rid) {
            self.counters.joins += 1;
            self.events.push(Event::Joined {
                peer: peer.to_string(),
                room: name.to_owned(),
                peers: room.members.len(),
            });
            let mut f = Fanout::new(RoomEvent::OtherJoined {
                room: &room.name,
                peer: &peer,
                meta,
            });
            for m in &room.members {
                if m.sid != sid
                    && let Some(other) = self.sessions.get_mut(&m.sid)
                {
                    self.outbox.deliver(m.sid, other, &mut f);
                }
            }
        }
        Ok(JoinOutcome::Joined(rid))
    }

    /// `joined` for `sid`: the other members in join order.
    pub(crate) fn joined_body(&self, rid: RoomId, sid: Sid, reply_to: Option<&RequestId>) -> Bytes {
        let me = self.sessions.get(&sid).map_or("", |s| &*s.peer);
        let room = self.rooms.get(rid);
        let peers = room
            .into_iter()
            .flat_map(|r| r.members.iter())
            .filter(|m| m.sid != sid)
            .filter_map(|m| {
                let s = self.sessions.get(&m.sid)?;
                Some((&*s.peer, m.meta.as_deref()))
            });
        let media = room.map_or(MediaKind::Mesh, |r| r.media);
        wire::Body::new("joined")
            .str("room", self.rooms.name(rid))
            .str("peer", me)
            .peers("peers", peers)
            .str("media", media.as_str())
            .reply_to(reply_to)
            .finish()
    }

    pub(crate) fn leave(&mut self, sid: Sid, name: &str) -> Result<(), Refusal> {
        let s = self.sessions.get_mut(&sid).ok_or_else(no_session)?;
        let rid = self
            .rooms
            .find(name)
            .filter(|&rid| s.is_in(rid))
            .ok_or_else(not_in_room)?;
        s.rooms.retain(|&r| r != rid);
        let peer = s.peer.clone();
        self.cluster_left(sid, name);
        self.depart(rid, sid, &peer, LeaveReason::Requested);
        Ok(())
    }

    /// Takes `sid` out of the room and tells the others, and the media
    /// relay when it knew the peer there.
    pub(crate) fn depart(&mut self, rid: RoomId, sid: Sid, peer: &str, reason: LeaveReason) {
        // Read before the leave: the last one out takes the room with it.
        let name = self.rooms.name(rid).to_owned();
        let media_peer = self.rooms.take_media_peer(rid, sid);
        if !self.rooms.leave(rid, sid) {
            return;
        }
        if media_peer {
            // A leave has nothing to refuse.
            let _ = self.media_out(MediaOutput::Left {
                room: name.clone(),
                peer: peer.to_owned(),
            });
        }
        let room = self.rooms.get(rid);
        self.events.push(Event::Left {
            peer: peer.to_owned(),
            room: name,
            peers: room.map_or(0, |r| r.members.len()),
            reason,
        });
        let Some(room) = room else {
            return;
        };
        let mut f = Fanout::new(RoomEvent::Bye {
            room: &room.name,
            peer,
        });
        for m in &room.members {
            if let Some(other) = self.sessions.get_mut(&m.sid) {
                self.outbox.deliver(m.sid, other, &mut f);
            }
        }
    }

    /// Fans `data` out to `to` or to every other peer; returns how many
    /// recipients it was queued for.
    pub(crate) fn message(
        &mut self,
        sid: Sid,
        name: &str,
        to: Option<&str>,
        data: Data<'_>,
    ) -> Result<Delivery, Refusal> {
        let s = self.sessions.get(&sid).ok_or_else(no_session)?;
        let rid = self
            .rooms
            .find(name)
            .filter(|&rid| s.is_in(rid))
            .ok_or_else(not_in_room)?;
        let mut f = Fanout::message(name, &s.peer, data);
        if let Some(to) = to {
            let target = self
                .by_peer
                .get(to)
                .copied()
                .filter(|t| self.sessions.get(t).is_some_and(|t| t.is_in(rid)));
            let no_such_peer = || Refusal::new(ErrorCode::NoSuchPeer, "no such peer in this room");
            let target = target.ok_or_else(no_such_peer)?;
            // A peer in its grace period whose replay is full ends now
            // rather than lose the frame: for the sender it is gone.
            let kept = self
                .sessions
                .get_mut(&target)
                .is_some_and(|t| self.outbox.deliver(target, t, &mut f));
            if !kept {
                return Err(no_such_peer());
            }
            let classic = self
                .sessions
                .get(&target)
                .is_some_and(|t| t.face == Face::Classic);
            self.counters.messages += 1;
            self.counters.deliveries += 1;
            return Ok(Delivery {
                count: 1,
                classic: u64::from(classic),
            });
        }
        self.counters.messages += 1;
        let Some(room) = self.rooms.get(rid) else {
            return Ok(Delivery::default());
        };
        let mut delivered = 0;
        let mut classic = 0;
        for m in &room.members {
            // Counted only when the recipient has it (PROTOCOL.md §1, "An
            // ack is a promise").
            if m.sid != sid
                && let Some(other) = self.sessions.get_mut(&m.sid)
                && self.outbox.deliver(m.sid, other, &mut f)
            {
                delivered += 1;
                classic += u64::from(other.face == Face::Classic);
            }
        }
        self.counters.deliveries += delivered;
        Ok(Delivery {
            count: delivered,
            classic,
        })
    }
}
